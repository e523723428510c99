//! The engine: TCP and Unix sockets (`ipc://`), the greeting and the NULL and CURVE handshakes over it, key files and
//! allow-lists, heartbeat clocks, the shared counters and memory budget, the
//! per-connection queue and close signal, and the validated per-socket config with
//! the internal tunables every layer above reads.

pub(crate) mod alarm;
pub(crate) mod budget;
pub(crate) mod counters;
pub(crate) mod curve;
pub(crate) mod fd_room;
pub(crate) mod handshake;
pub(crate) mod heartbeat;
pub(crate) mod inbox;
pub(crate) mod ipc;
pub(crate) mod net;
pub(crate) mod resolve;
pub(crate) mod socket_config;
pub(crate) mod stream;
pub(crate) mod tunables;
