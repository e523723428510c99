//! The wire: ZMTP 3.1 frames, greetings, commands and subscriptions' two forms, PING forms, and
//! CURVE's keys and MESSAGE boxes. Bytes in, bytes out: no I/O and no runtime here.

pub(crate) mod curve;
pub(crate) mod ping;
pub(crate) mod sodium_box;
pub(crate) mod zmtp;
