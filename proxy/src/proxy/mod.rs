//! The proxy: the validated configuration, the pumps between the sockets with the capture tee
//! ([`forward::Proxy`]), and the PAUSE/RESUME/TERMINATE state.

pub(crate) mod config;
pub(crate) mod forward;
pub(crate) mod state;
