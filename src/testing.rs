//! Internals the crash and integration tests drive directly. Not part of the API: hidden
//! from the documentation and free to change with any release.

pub use crate::state::StateDir;
pub use crate::transaction::recover;
