//! zmq_proxy(3) as a library: the socket vocabulary shared with the operator, the validated
//! configuration, and the forwarding loop the `zmq-proxy` binary runs.

pub mod socket;
