//! The `ota` command.
fn main() {}
