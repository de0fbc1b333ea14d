//! The library's error: one variant per pipeline stage, each carrying that stage's error
//! (re-exported here, so that a program can match on any of them).
//!
//! [`Error::phase`] and [`Error::kind`] give the stable names written to `last_error.json`
//! and shown by `ota status`, so a fleet operator can count failures by cause.

use std::io;

pub use crate::config::ConfigError;
pub use crate::fetch::FetchError;
pub use crate::filter::{FilterError, PatternList};
pub use crate::http::{ErrorKind as HttpErrorKind, HttpError};
pub use crate::limits::LimitsError;
pub use crate::manifest::{LinkProblem, ManifestError, PathError, PathProblem};
pub use crate::plan::PlanError;
pub use crate::resources::GuardError;
pub use crate::source::SourceError;
pub use crate::state::StateError;
pub use crate::survey::SurveyError;
pub use crate::transaction::ApplyError;
pub use crate::trial::TrialError;
pub use crate::trust::TrustError;

use HttpErrorKind as HttpKind;

/// Anything that stops an ota command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The target or state folder cannot be used.
    #[error("{0}")]
    Setup(String),
    /// The state folder is not ota's: a link, another user's, writable by others, or
    /// holding files ota did not create.
    #[error(transparent)]
    Untrusted(#[from] TrustError),
    /// No default route, or the API host does not resolve, after the bounded wait.
    #[error("{0}")]
    NoNetwork(String),
    /// Another ota process holds the lock.
    #[error(
        "another ota process is working on this target (lock {0} is held); wait for it to finish"
    )]
    Busy(String),
    /// Finishing or undoing an interrupted update failed.
    #[error("recovering an interrupted update: {0}")]
    Recover(#[source] ApplyError),
    /// The release host could not answer.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The release's file list is unacceptable.
    #[error("the release was rejected, nothing was changed: {0}")]
    Manifest(#[from] ManifestError),
    /// The target could not be inspected.
    #[error(transparent)]
    Survey(#[from] SurveyError),
    /// The update cannot be applied as asked.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The release is larger than ota installs (see `limits`).
    #[error(transparent)]
    Limits(#[from] LimitsError),
    /// A file could not be staged.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// Changing the target failed. It was rolled back, except after
    /// [`ApplyError::RollbackFailed`], whose message says so and what to do.
    #[error("{}", apply_message(.0))]
    Apply(#[source] ApplyError),
    /// The state folder could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The `[before_update]` command failed (the message says which and why): the update
    /// was not applied.
    #[error(
        "the update was not applied and nothing changed (ota tries again at the next `ota \
         update`; fix the command, or what it checks, first): {0}"
    )]
    BeforeUpdate(String),
    /// A release failed its trial (and was rolled back, unless the message says otherwise).
    #[error(transparent)]
    Trial(Box<TrialError>),
    /// The device runs low (`[guards]`): the update was deferred, nothing changed. Not a
    /// failure: see [`Error::deferred`].
    #[error(transparent)]
    Guard(#[from] GuardError),
}

impl From<TrialError> for Error {
    fn from(error: TrialError) -> Error {
        Error::Trial(Box::new(error))
    }
}

impl Error {
    /// The stage that failed: `config`, `setup`, `recover`, `resolve`, `manifest`, `plan`,
    /// `fetch`, `apply`, `state`, `before_update`, `trial`, `guards`.
    pub fn phase(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::Setup(_) | Error::Busy(_) | Error::Untrusted(_) => "setup",
            Error::Recover(_) => "recover",
            Error::Source(_) | Error::NoNetwork(_) => "resolve",
            Error::Manifest(_) => "manifest",
            Error::Survey(_) | Error::Plan(_) | Error::Limits(_) => "plan",
            Error::Fetch(_) => "fetch",
            Error::Apply(_) => "apply",
            Error::State(_) => "state",
            Error::BeforeUpdate(_) => "before_update",
            Error::Trial(_) => "trial",
            Error::Guard(_) => "guards",
        }
    }

    /// Whether the command was deferred rather than failed (a `[guards]` refusal): nothing
    /// changed, it is not recorded in `last_error.json` and does not count toward its
    /// consecutive failures; the CLI exits 75.
    pub fn deferred(&self) -> bool {
        matches!(self, Error::Guard(_))
    }

    /// A stable cause name: `config`, `busy`, `network`, `rate_limited`, `not_found`,
    /// `protocol`, `integrity`, `invalid_release`, `unsafe_path` (a path that would leave the
    /// target through a link, or that changed under ota's feet), `refused_target`, `conflict`,
    /// `disk_full`, `filesystem`, `rollback_failed`, `state`, `untrusted_state`, `limits`,
    /// `hook_failed` (the `[before_update]` command failed), `unhealthy` (a release failed
    /// its trial), `no_rollback_point` (`ota rollback` with
    /// nothing kept to go back to), `low_storage`, `low_memory`, `low_battery` (a `[guards]`
    /// refusal: see [`Error::deferred`]).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Config(e) if e.is_refused_target() => "refused_target",
            Error::Config(_) => "config",
            Error::Setup(_) => "filesystem",
            Error::Busy(_) => "busy",
            Error::NoNetwork(_) => "network",
            Error::Untrusted(TrustError::Io { source, .. }) => io_kind(source),
            Error::Untrusted(_) => "untrusted_state",
            Error::Source(e) => source_kind(e),
            Error::Manifest(ManifestError::UnsafeLink { .. }) => "unsafe_path",
            Error::Manifest(_) => "invalid_release",
            Error::Plan(PlanError::Conflict { .. }) => "conflict",
            Error::Plan(PlanError::NoSpace { .. }) => "disk_full",
            Error::Limits(_) => "limits",
            Error::Survey(e) if crate::fs::is_unsafe(&e.source) => "unsafe_path",
            Error::Survey(e) => io_kind(&e.source),
            Error::Fetch(e) => match e {
                FetchError::Source(s) => source_kind(s),
                FetchError::Integrity { .. } => "integrity",
                FetchError::Interrupted { .. } | FetchError::Stopped => "network",
                FetchError::Manifest(ManifestError::UnsafeLink { .. }) => "unsafe_path",
                FetchError::Manifest(_) => "invalid_release",
                FetchError::Io { source, .. } if crate::fs::is_unsafe(source) => "unsafe_path",
                FetchError::Io { source, .. } => io_kind(source),
            },
            Error::Apply(ApplyError::RollbackFailed { .. }) | Error::Recover(_) => {
                "rollback_failed"
            }
            Error::Apply(e) if e.is_unsafe_path() => "unsafe_path",
            Error::Apply(e) => e.io_error().map_or("filesystem", io_kind),
            Error::State(_) => "state",
            Error::BeforeUpdate(_) => "hook_failed",
            Error::Trial(e) if matches!(**e, TrialError::NoRollbackPoint(_)) => "no_rollback_point",
            Error::Trial(_) => "unhealthy",
            Error::Guard(e) => e.kind(),
        }
    }
}

fn apply_message(error: &ApplyError) -> String {
    match error {
        ApplyError::RollbackFailed { cause, rollback } => format!(
            "applying the update failed and the old release could NOT be restored: the target \
             may hold a mix of old and new files. The update failed because: {cause}; rolling \
             back failed because: {rollback}. The journal was kept: fix the cause, then run \
             `ota recover` to finish undoing the update"
        ),
        ApplyError::State(e) => format!(
            "applying the update failed at its last step, saving the installed state ({e}); \
             recovery then finished or undid it: `ota status` shows which release is installed"
        ),
        other => format!("applying the update failed and the old release was restored: {other}"),
    }
}

fn source_kind(error: &SourceError) -> &'static str {
    match error {
        SourceError::RepoNotFound { .. }
        | SourceError::NoRelease { .. }
        | SourceError::TagNotFound { .. }
        | SourceError::BranchNotFound { .. } => "not_found",
        SourceError::Protocol { .. } => "protocol",
        SourceError::Refused { refusal, .. } => refusal.kind(),
        SourceError::Http { source, .. } => match source.kind {
            HttpKind::RateLimited { .. } => "rate_limited",
            HttpKind::NotFound => "not_found",
            HttpKind::BadJson(_) | HttpKind::BadBody(_) | HttpKind::TooLarge(_) => "protocol",
            HttpKind::Status { status, .. } if status < 500 && status != 408 && status != 429 => {
                "protocol"
            }
            _ => "network",
        },
    }
}

fn io_kind(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => "disk_full",
        _ => "filesystem",
    }
}
