//! ota keeps a directory on a headless device equal to a release published on GitHub.

pub mod config;
pub mod filter;
