#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zmq_proxy_fuzz::frames(data));
