#![no_main]

use zmq_proxy_fuzz::{Side, curve};

libfuzzer_sys::fuzz_target!(|data: &[u8]| curve(Side::Server, data));
