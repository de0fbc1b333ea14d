//! ota's own folder (`<target>/.ota` by default): what is installed, what went wrong.
//!
//! ```text
//! state.json        the installed release and the files ota owns (the commit point)
//! journal.json      present only while a transaction is open (see `transaction`)
//! stage/<txid>/     downloaded, verified files waiting to be placed
//! backup/<txid>/    files displaced by an open transaction
//! kept/<txid>/      files of the user's that a committed update replaced, at their paths
//!                   in the target; never removed by ota
//! previous/<blob>   while a release is on trial, the files of the release it rolls back to
//!                   that are no longer in the target, named by git blob id (the displaced
//!                   file or link itself); removed once no trial needs them
//! last_error.json   the last failed update or recover (time, phase, kind, message, failures
//!                   in a row, the release it was installing); removed by a successful
//!                   update or recover
//! errors.json       the last `error_history_limit` failures (`[report]`), oldest first:
//!                   a bounded ring written with `last_error.json` (not durably: a history),
//!                   never cleared by a success
//! metrics.json      the counters behind `[report] metrics_file`: requests and bytes since
//!                   the first run, the time of the last success, whether an update waits
//! cache.json        what the last check saw: the channel answer's ETag, the rate-limit quota
//! file-list.json    a static site's file list of the release installed last, as the site
//!                   stored it: the next update reads only the change from it (a cache,
//!                   checked against the signed manifest's digests before use)
//! lock              held (flock) by the process that changes the target
//! ota-state.tag     marks the folder as ota's (see `trust`): written when ota creates it
//! ```
//!
//! ota deletes only names it creates here: the `<file>.tmp` of each JSON file above,
//! transaction folders (named by `transaction::new_txid`) under `stage/` and `backup/`, and
//! files and links named by 40 lowercase hex digits under `previous/`.
//!
//! `state.json` holds both the release and the owned-file manifest, so that replacing it is
//! one atomic rename: the single commit point of an update.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::fs::{self, Fs};
use crate::http::Quota;
use crate::limits;
use crate::manifest::{Manifest, ObjectId};
use crate::source::Validator;

/// Largest `last_error.json` ota reads.
const ERROR_LIMIT: u64 = 1 << 20;

/// Largest `errors.json` ota reads (1000 errors of a few KiB each).
const HISTORY_LIMIT: u64 = 16 << 20;

/// The file that marks a folder as ota's state folder.
pub(crate) const MARKER: &str = "ota-state.tag";

/// The names ota creates directly in the state folder (besides the marker and the
/// `.tmp` files of the JSON ones).
const OWN_FILES: [&str; 8] = [
    "state.json",
    "journal.json",
    "last_error.json",
    "errors.json",
    "metrics.json",
    "cache.json",
    "file-list.json",
    "lock",
];
/// The JSON files written through a `.tmp` file.
const TMP_WRITTEN: [&str; 7] = [
    "state.json",
    "journal.json",
    "last_error.json",
    "errors.json",
    "metrics.json",
    "cache.json",
    "file-list.json",
];

/// Whether ota creates `name` directly in its state folder (so an unmarked folder holding
/// only such names is one an older ota made, and can be adopted).
pub(crate) fn is_own_name(name: &str) -> bool {
    OWN_FILES.contains(&name)
        || matches!(
            name,
            MARKER | "stage" | "backup" | "kept" | "previous" | "downloads"
        )
        || name
            .strip_suffix(".tmp")
            .is_some_and(|base| TMP_WRITTEN.contains(&base))
}

/// Paths inside ota's state folder.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The state folder at `root` (absolute).
    pub fn new(root: PathBuf) -> StateDir {
        StateDir { root }
    }

    /// The folder itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `state.json`.
    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }

    /// `journal.json`.
    pub fn journal_file(&self) -> PathBuf {
        self.root.join("journal.json")
    }

    /// `last_error.json`.
    pub fn error_file(&self) -> PathBuf {
        self.root.join("last_error.json")
    }

    /// `errors.json`.
    pub fn errors_file(&self) -> PathBuf {
        self.root.join("errors.json")
    }

    /// `metrics.json`.
    pub fn metrics_file(&self) -> PathBuf {
        self.root.join("metrics.json")
    }

    /// `cache.json`.
    pub fn cache_file(&self) -> PathBuf {
        self.root.join("cache.json")
    }

    /// `file-list.json`.
    pub fn file_list_file(&self) -> PathBuf {
        self.root.join("file-list.json")
    }

    /// `lock`.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("lock")
    }

    /// The temporary files a crash can leave (`state.json.tmp`, …): the only loose files
    /// recovery removes.
    pub(crate) fn temp_files(&self) -> Vec<PathBuf> {
        TMP_WRITTEN
            .iter()
            .map(|name| fs::tmp_path(&self.root.join(name)))
            .collect()
    }

    /// `stage/`.
    pub fn stage_root(&self) -> PathBuf {
        self.root.join("stage")
    }

    /// `backup/`.
    pub fn backup_root(&self) -> PathBuf {
        self.root.join("backup")
    }

    /// `kept/`: files of the user's that committed updates replaced, never removed by ota.
    pub fn kept_root(&self) -> PathBuf {
        self.root.join("kept")
    }

    /// `previous/`: while a release is on trial, the files of its rollback point that are
    /// not in the target any more, each named by its git blob id (see `transaction`).
    pub fn previous_root(&self) -> PathBuf {
        self.root.join("previous")
    }

    /// `downloads/`: the files an update is downloading, each named by its git blob id, kept
    /// across runs so that an interrupted download resumes where it stopped (see `fetch`).
    /// Holds only files the last update to start downloading wanted.
    pub fn downloads_root(&self) -> PathBuf {
        self.root.join("downloads")
    }

    /// `kept/<txid>`: the files that transaction replaced, at their paths in the target.
    pub fn kept(&self, txid: &str) -> PathBuf {
        self.kept_root().join(txid)
    }

    /// `stage/<txid>`.
    pub fn stage(&self, txid: &str) -> PathBuf {
        self.stage_root().join(txid)
    }

    /// `backup/<txid>`.
    pub fn backup(&self, txid: &str) -> PathBuf {
        self.backup_root().join(txid)
    }

    /// Reads `state.json`; `Ok(None)` before the first install.
    pub fn read_installed(&self, fs: &dyn Fs) -> Result<Option<Installed>, StateError> {
        let path = self.state_file();
        read_json(fs, &path, limits::STATE_BYTES)
    }

    /// Replaces `state.json` atomically and durably: the commit point of an update. Refuses
    /// (writing nothing) a state larger than ota reads back; the plan checked that already
    /// (`limits::check_commit`), this is the last line of defence.
    pub fn write_installed(&self, fs: &dyn Fs, installed: &Installed) -> Result<(), StateError> {
        let path = self.state_file();
        let bytes = serde_json::to_vec_pretty(installed).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if bytes.len() as u64 > limits::STATE_BYTES {
            return Err(StateError::TooLarge {
                path,
                bytes: bytes.len() as u64,
            });
        }
        fs::write_atomic(fs, &path, &bytes).map_err(|source| StateError::Io { path, source })
    }

    /// Reads `last_error.json`, if any.
    pub fn read_last_error(&self, fs: &dyn Fs) -> Result<Option<LastError>, StateError> {
        read_json(fs, &self.error_file(), ERROR_LIMIT)
    }

    /// Records a failure in `last_error.json`.
    pub fn write_last_error(&self, fs: &dyn Fs, error: &LastError) -> Result<(), StateError> {
        write_json(fs, &self.error_file(), error)
    }

    /// Reads `cache.json`; a missing or unreadable cache is an empty one (it only saves
    /// requests).
    pub fn read_cache(&self, fs: &dyn Fs) -> Cache {
        match read_json(fs, &self.cache_file(), ERROR_LIMIT) {
            Ok(Some(cache)) => cache,
            Ok(None) => Cache::default(),
            Err(e) => {
                tracing::warn!("ignoring {}: {e}", self.cache_file().display());
                Cache::default()
            }
        }
    }

    /// Replaces `cache.json`.
    /// Not durable: a cache lost to a power cut costs one request, and a stale one is still
    /// right (an `ETag` names the answer it came with).
    pub fn write_cache(&self, fs: &dyn Fs, cache: &Cache) -> Result<(), StateError> {
        write_json_replace(fs, &self.cache_file(), cache)
    }

    /// Reads `errors.json`, oldest first; a missing or unreadable one is empty (it is only
    /// a history: the last error is in `last_error.json`).
    pub fn read_errors(&self, fs: &dyn Fs) -> Vec<LastError> {
        match read_json(fs, &self.errors_file(), HISTORY_LIMIT) {
            Ok(errors) => errors.unwrap_or_default(),
            Err(e) => {
                tracing::warn!("ignoring {}: {e}", self.errors_file().display());
                Vec::new()
            }
        }
    }

    /// Appends `error` to `errors.json`, keeping the last `keep` (0: removes the file).
    /// Not durable, like `cache.json`: a power cut may lose the history (an unreadable one
    /// starts afresh), never the last error, which `last_error.json` keeps durably.
    pub fn push_error(
        &self,
        fs: &dyn Fs,
        error: &LastError,
        keep: usize,
    ) -> Result<(), StateError> {
        let mut errors = self.read_errors(fs);
        errors.push(error.clone());
        let errors = &errors[errors.len().saturating_sub(keep)..];
        if errors.is_empty() {
            return remove_if_present(fs, &self.errors_file());
        }
        write_json_replace(fs, &self.errors_file(), errors)
    }

    /// Reads `metrics.json`; a missing or unreadable one starts the counters again.
    pub fn read_counters(&self, fs: &dyn Fs) -> Counters {
        match read_json(fs, &self.metrics_file(), ERROR_LIMIT) {
            Ok(counters) => counters.unwrap_or_default(),
            Err(e) => {
                tracing::warn!("ignoring {}: {e}", self.metrics_file().display());
                Counters::default()
            }
        }
    }

    /// Replaces `metrics.json` (not durable: a power cut loses at most one run's figures).
    pub fn write_counters(&self, fs: &dyn Fs, counters: &Counters) -> Result<(), StateError> {
        write_json_replace(fs, &self.metrics_file(), counters)
    }

    /// Removes `last_error.json` after a success.
    pub fn clear_last_error(&self, fs: &dyn Fs) -> Result<(), StateError> {
        remove_if_present(fs, &self.error_file())
    }
}

fn remove_if_present(fs: &dyn Fs, path: &Path) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        path: path.to_owned(),
        source,
    };
    if fs.metadata(path).map_err(io)?.is_some() {
        fs.remove_file(path).map_err(io)?;
    }
    Ok(())
}

fn read_json<T: serde::de::DeserializeOwned>(
    fs: &dyn Fs,
    path: &Path,
    limit: u64,
) -> Result<Option<T>, StateError> {
    let io = |source| StateError::Io {
        path: path.to_owned(),
        source,
    };
    if fs.metadata(path).map_err(io)?.is_none() {
        return Ok(None);
    }
    let bytes = fs::read_small(fs, path, limit).map_err(io)?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StateError::Corrupt {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

/// Like [`write_json`], but not durable (`fs::write_replace`): for files that only save work
/// or keep a history (`cache.json`, `errors.json`, `metrics.json`).
fn write_json_replace<T: Serialize + ?Sized>(
    fs: &dyn Fs,
    path: &Path,
    value: &T,
) -> Result<(), StateError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| StateError::Corrupt {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    fs::write_replace(fs, path, &bytes).map_err(|source| StateError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write_json<T: Serialize>(fs: &dyn Fs, path: &Path, value: &T) -> Result<(), StateError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| StateError::Corrupt {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    fs::write_atomic(fs, path, &bytes).map_err(|source| StateError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The longest `post_update` name accepted from an original manifest.
pub(crate) const MAX_POST_UPDATE: usize = 255;

/// Which release is installed (or wanted): enough to say "up to date" without a download.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseId {
    /// `stable` or `developer`.
    pub channel: String,
    /// The tag (stable) or branch (developer) followed.
    #[serde(rename = "ref")]
    pub ref_name: String,
    /// The commit the files came from.
    pub commit: ObjectId,
    /// The counter of the signed manifest that named this release (static sites, and
    /// GitHub releases when `public_key` is set): a manifest with a lower one is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counter: Option<u64>,
    /// The share of devices the signed manifest offers this release to (0–100); the
    /// config's `rollout_percent` applies when it says nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_percent: Option<u8>,
    /// The `post_update` name of the original updater's `manifest.json`: an after-update
    /// action only when the config's `[after_update] post_update` allow-list maps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_update: Option<String>,
}

impl ReleaseId {
    /// A release named by a git ref alone (no signed or original manifest).
    pub fn new(
        channel: impl Into<String>,
        ref_name: impl Into<String>,
        commit: ObjectId,
    ) -> ReleaseId {
        ReleaseId {
            channel: channel.into(),
            ref_name: ref_name.into(),
            commit,
            counter: None,
            rollout_percent: None,
            post_update: None,
        }
    }

    /// The first 12 hex digits of the commit.
    pub fn short(&self) -> String {
        self.commit.to_hex()[..12].to_owned()
    }
}

/// Contents of `state.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// Format version of this file.
    pub format: u32,
    /// The transaction that wrote it (recovery compares it with an open journal).
    pub txid: String,
    /// The installed release.
    pub release: ReleaseId,
    /// `owner/repo` at the source it came from (a changed source means a full re-plan).
    pub source: String,
    /// Fingerprint of the allow/ignore filter it was installed with.
    pub filter: String,
    /// When it was installed (RFC 3339, UTC).
    pub installed_at: String,
    /// The release installed before it, if any.
    pub previous: Option<ReleaseId>,
    /// The files ota owns: exactly these paths in the target are ota's to change.
    pub files: Manifest,
    /// Set while this release is on trial (see `trial`); `None` once it is confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<Trial>,
    /// Releases that were rolled back, oldest first (the last 10): not
    /// installed again until the channel names another release, or `--force`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<Rejected>,
}

/// A release on trial: what it waits for, and what it rolls back to. What the trial has
/// seen so far is recorded here; `trial::verdict` judges it against the config. Every field
/// added since the first format has a default, so an older `state.json` still reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trial {
    /// When the trial began (RFC 3339, UTC): the commit of the update.
    pub since: String,
    /// The confirmed release to go back to, whose files ota keeps under `previous/` until
    /// the trial ends. `None` after a first install: there is nothing to go back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_to: Option<Box<RollbackPoint>>,
    /// When `ota confirm` must have come by (seconds since the Unix epoch), when the
    /// config asked for a confirmation (`confirm_within_sec`) as the trial began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<u64>,
    /// What the health command said.
    #[serde(default)]
    pub health: Health,
    /// When `ota confirm` came (RFC 3339, UTC), if it came in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_at: Option<String>,
    /// Boots counted by `ota boot` while on trial.
    #[serde(default)]
    pub boots: u32,
    /// Why the trial failed, recorded before the rollback starts: a crash during the
    /// rollback still ends in a rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<Failure>,
    /// When the after-update actions and the health command last started (seconds since
    /// the Unix epoch): until they may have timed out, another ota process is taken to be
    /// running them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tried_at: Option<u64>,
}

impl Trial {
    /// A trial that begins now (`since`, `now` in Unix seconds), rolling back to
    /// `rollback_to`, asked for a confirmation within `confirm_within` if set.
    pub(crate) fn begin(
        since: String,
        now: u64,
        confirm_within: Option<std::time::Duration>,
        rollback_to: Option<Box<RollbackPoint>>,
    ) -> Trial {
        Trial {
            since,
            rollback_to,
            deadline: confirm_within.map(|d| now.saturating_add(d.as_secs())),
            health: Health::Pending,
            confirmed_at: None,
            boots: 0,
            failed: None,
            tried_at: Some(now),
        }
    }
}

/// The health command's result for a release on trial.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Not run yet (or its run was interrupted).
    #[default]
    Pending,
    /// It exited 0.
    Passed,
    /// It failed or timed out.
    Failed,
}

impl Health {
    /// A stable name: `pending`, `passed`, `failed`.
    pub fn name(self) -> &'static str {
        match self {
            Health::Pending => "pending",
            Health::Passed => "passed",
            Health::Failed => "failed",
        }
    }
}

/// Why a trial failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Why, as a stable name.
    pub kind: FailureKind,
    /// Why, in words.
    pub reason: String,
}

/// Why a trial failed, as a stable name (`Rejected::kind` holds the same names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// The health command failed or timed out.
    HealthFailed,
    /// `ota confirm` did not come in time.
    NotConfirmed,
    /// More boots on trial than `[trial] boots` without the trial ending.
    TooManyBoots,
    /// An `[after_update]` command or restart failed.
    AfterUpdateFailed,
    /// `ota rollback`.
    ByHand,
}

impl FailureKind {
    /// `health_failed`, `not_confirmed`, `too_many_boots`, `after_update_failed`, `by_hand`.
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::HealthFailed => "health_failed",
            FailureKind::NotConfirmed => "not_confirmed",
            FailureKind::TooManyBoots => "too_many_boots",
            FailureKind::AfterUpdateFailed => "after_update_failed",
            FailureKind::ByHand => "by_hand",
        }
    }
}

/// The release a trial rolls back to: enough to reinstall it without the network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackPoint {
    /// The release.
    pub release: ReleaseId,
    /// `owner/repo` it came from.
    pub source: String,
    /// Fingerprint of the filter it was installed with.
    pub filter: String,
    /// When it was installed.
    pub installed_at: String,
    /// The release installed before it, if any.
    pub previous: Option<ReleaseId>,
    /// Its files.
    pub files: Manifest,
}

impl RollbackPoint {
    /// What an update from `installed` rolls back to: `installed` itself once confirmed;
    /// while it is still on trial, the release its own trial would roll back to.
    pub(crate) fn of(installed: &Installed) -> Option<Box<RollbackPoint>> {
        match &installed.trial {
            Some(trial) => trial.rollback_to.clone(),
            None => Some(Box::new(RollbackPoint {
                release: installed.release.clone(),
                source: installed.source.clone(),
                filter: installed.filter.clone(),
                installed_at: installed.installed_at.clone(),
                previous: installed.previous.clone(),
                files: installed.files.clone(),
            })),
        }
    }
}

/// A release that was rolled back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// The release.
    pub release: ReleaseId,
    /// When it was rolled back (RFC 3339, UTC).
    pub time: String,
    /// Why, as a stable name: `health_failed`, `not_confirmed`, `too_many_boots`,
    /// `after_update_failed`, `by_hand`.
    pub kind: String,
    /// Why, in words.
    pub reason: String,
}

/// The current `state.json` format.
pub(crate) const STATE_FORMAT: u32 = 1;

/// Contents of `last_error.json`: what a headless device tells whoever looks later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    /// When (RFC 3339, UTC).
    pub time: String,
    /// The stage that failed: `config`, `resolve`, `plan`, `fetch`, `apply`, `recover`…
    pub phase: String,
    /// A stable machine-readable cause: `network`, `integrity`, `disk_full`, …
    pub kind: String,
    /// The full error message (never contains secrets).
    pub message: String,
    /// Failures in a row, this one included (a success resets it by removing the file).
    #[serde(default = "one")]
    pub consecutive: u32,
    /// When the first of those failures happened.
    #[serde(default)]
    pub since: Option<String>,
    /// The release the failed run was installing, when it got that far (safe mode holds
    /// back this release only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseId>,
}

fn one() -> u32 {
    1
}

/// Contents of `metrics.json`: what `[report] metrics_file` counts across runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// HTTP requests sent since the counters began (retries and resumes included).
    pub requests: u64,
    /// Response body bytes received since the counters began.
    pub bytes: u64,
    /// When a command last ended without an error (seconds since the Unix epoch).
    pub last_success: Option<u64>,
    /// Whether the last check (or update) found a release to install.
    pub update_available: bool,
}

/// Contents of `cache.json`: nothing here is needed for correctness.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cache {
    /// The last answer about the channel, for a conditional check.
    pub validator: Option<Validator>,
    /// The rate limit as last reported by the API.
    pub quota: Option<Quota>,
    /// When the source was last asked (RFC 3339, UTC).
    pub last_check: Option<String>,
}

/// The time now as RFC 3339 UTC with seconds.
pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Seconds since the Unix epoch, now.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A failure to read or write ota's state folder.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The filesystem refused.
    #[error("cannot access {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A state that would be larger than ota reads back; nothing was written.
    #[error(
        "the new {} would be {bytes} bytes, more than the {} ota reads back; it was not \
         written. Leave files out of the release with `ignore`",
        path.display(), limits::STATE_BYTES
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        bytes: u64,
    },
    /// A state file that does not parse.
    #[error(
        "{} is damaged ({message}); move it aside and run `ota update --force` to reinstall",
        path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        message: String,
    },
}
