//! ota keeps a directory on a headless device equal to a release published on GitHub (the
//! latest release, a pinned tag, or a branch tip), and never leaves it broken.
//!
//! # Embedding
//! Load a [`config::Config`], build an [`Updater`], and call [`Updater::check`],
//! [`Updater::update`], [`Updater::recover`] or [`Updater::status`] as often as needed
//! (and [`Updater::confirm`], [`Updater::boot`], [`Updater::rollback`] for a release on
//! trial):
//! each call is one operation with its own deadline (`update_timeout_sec`) and its own
//! figures, so one `Updater` can serve a daemon for its whole life.
//!
//! ```no_run
//! use std::path::Path;
//!
//! use ota::config::Config;
//! use ota::{Check, Outcome, UpdateOptions, Updater};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let config = Config::load(Path::new("/etc/ota.toml"))?;
//!     let updater = Updater::new(config);
//!     match updater.check() {
//!         Ok(Check::UpToDate(release)) => println!("up to date: {}", release.ref_name),
//!         Ok(Check::Available { available, reason, .. }) => {
//!             println!("{} is available ({reason})", available.ref_name);
//!             match updater.update(UpdateOptions::default())? {
//!                 Outcome::Updated(report) => println!(
//!                     "installed {}: {} files downloaded",
//!                     report.to.ref_name, report.downloaded
//!                 ),
//!                 _ => {}
//!             }
//!         }
//!         // `phase` and `kind` are stable names, also written to `last_error.json`.
//!         Ok(Check::Rejected { available, .. }) => {
//!             println!("{} failed its trial here: skipped", available.ref_name)
//!         }
//!         Err(e) => eprintln!("{} [{}/{}]", e, e.phase(), e.kind()),
//!     }
//!     Ok(())
//! }
//! ```
//!
//! A program that needs another filesystem (a simulation, an overlay) or another release
//! host passes its own [`fs::Fs`] or [`source::Source`] to [`Updater::with_parts`].
//!
//! # Module map
//! Data flows one way; each stage is one module:
//!
//! ```text
//! config ─> source ─> manifest ─> survey + plan ─> fetch ─> transaction ─> state
//! ```
//!
//! Public:
//! - [`config`]: the validated configuration (TOML, JSON, or the original updater's JSON).
//! - [`source`]: where releases come from: the [`source::Source`] trait and
//!   [`source::GitHub`].
//! - [`fs`]: the narrow filesystem seam the transaction goes through.
//! - [`signed`]: signed release manifests (minisign): their format, verification, signing.
//! - [`delta`]: binary deltas: the op generator, the original updater's `OTADELTA`
//!   format, and the streaming applier.
//! - [`publish`]: `ota publish` and `ota keygen`, which write a signed static site.
//! - [`error`]: [`Error`] and the error of each stage it wraps.
//!
//! Inside the crate: `filter` (which release paths are installed), `http` (the HTTP
//! client), `limits` (how big a release ota installs), `manifest` (a release's file list, every path validated once), `survey` (what
//! is on disk now), `plan` (the pure decision of what changes), `fetch` (stages new files,
//! verified against their git blob ids), `transaction` (the journaled, crash-safe swap, and
//! recovery), `state` (ota's own folder), `trust` (whether that folder is ota's), `hooks`
//! (the commands ota runs: before and after an update, the health check), `trial` (the
//! pure verdict on a release on trial), `resources` (free memory and the battery, and the
//! `[guards]` that defer an update when they or the free storage run low), `schedule` (when
//! an update may run, and which releases this device takes), `metrics` (the Prometheus
//! textfile), `signal` (what ota tells the device while it runs: systemd's notify socket, a
//! hardware watchdog, a status LED) and `updater` (runs the pipeline, and the trial:
//! after-update actions, health command, confirmation, boots, rollback).

#![warn(unreachable_pub)]

pub mod config;
pub mod delta;
pub mod error;
mod fetch;
mod filter;
pub mod fs;
mod hooks;
mod http;
mod limits;
mod manifest;
mod metrics;
pub mod original;
mod plan;
pub mod publish;
mod resources;
pub mod schedule;
mod signal;
pub mod signed;
pub mod source;
mod state;
mod survey;
mod transaction;
mod trial;
mod trust;
mod updater;

#[doc(hidden)]
pub mod testing;

pub use error::Error;
pub use fetch::Progress;
pub use filter::Filter;
pub use http::{Quota, Usage};
pub use manifest::{Entry, Kind, Manifest, ObjectId, RelPath, Sha256};
pub use plan::{Action, Change, Origin, Plan, Transfer};
pub use resources::{Battery, Resources, Snapshot};
pub use state::{
    Cache, Counters, Failure, FailureKind, Health, Installed, LastError, Rejected, ReleaseId,
    RollbackPoint, Trial,
};
pub use transaction::Recovery;
pub use trial::{Verdict, Waiting};
pub use updater::{
    Check, Outcome, Report, Status, TrialReport, UpdateOptions, UpdateReason, Updater,
};
