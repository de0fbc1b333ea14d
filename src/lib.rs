//! ota keeps a directory on a headless device equal to a release published on GitHub (the
//! latest release, a pinned tag, or a branch tip), and never leaves it broken.
//!
//! # Module map
//! Data flows one way; each stage is one module:
//!
//! ```text
//! config ─> source ─> manifest ─> survey + plan ─> fetch ─> transaction ─> state
//! ```
//!
//! - [`config`]: the validated configuration (TOML, JSON, or the original updater's JSON).
//! - [`filter`]: which release paths are installed (`allow` / `ignore`).
//! - [`source`]: where releases come from ([`source::github`]); [`http`] is its client.
//! - [`manifest`]: a release's file list, every path validated once.
//! - [`survey`]: what is on disk now, at the paths an update touches.
//! - [`plan`]: the pure decision of what changes.
//! - [`fetch`]: stages new files, verified against their git blob ids.
//! - [`transaction`]: the journaled, crash-safe swap, and recovery.
//! - [`fs`]: the narrow filesystem seam the transaction goes through.
//! - [`state`]: ota's own folder: installed release, owned files, last error.
//! - [`updater`]: runs the pipeline; what the CLI calls.

pub mod config;
pub mod error;
pub mod fetch;
pub mod filter;
pub mod fs;
pub mod http;
pub mod manifest;
pub mod plan;
pub mod source;
pub mod state;
pub mod survey;
pub mod transaction;
pub mod updater;

pub use error::Error;
pub use fetch::Progress;
pub use updater::{Check, Outcome, Report, Status, UpdateOptions, Updater};
