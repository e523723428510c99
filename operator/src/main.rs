//! Placeholder until the operator issue lands.
fn main() {}
