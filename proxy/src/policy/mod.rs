//! The policies: binding and connecting each socket, one task per connection, what each socket
//! type does with a message (round robin, fair queue, routing, subscriptions), and the drain.

pub(crate) mod sockets;
pub(crate) mod subscriptions;
