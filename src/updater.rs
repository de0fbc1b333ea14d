//! The pipeline, run: recover → resolve → manifest → survey + plan → fetch → apply → state.
//!
//! [`Updater`] is what the CLI (and any program embedding ota) calls. Each call is one
//! operation with its own deadline (`update_timeout_sec`) and its own figures. Each command
//! that changes the target takes the lock and runs recovery first.
//!
//! `last_error.json` records the outcome of the commands that change the target: a failed
//! `update` or `recover` writes it, a successful one removes it, both while holding the
//! lock; an update deferred by `[guards]` ([`Error::deferred`]) leaves it as it was.
//! `check`, `status` and `update --dry-run` change nothing, so they neither write nor
//! clear it: a check that succeeds after a failed update leaves that failure on record.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::config::{Channel, Config, SourceConfig};
use crate::error::{Error, FetchError};
use crate::fetch::{self, Fetcher, Progress, ProgressFn};
use crate::fs::{self, FileKind, Fs, RealFs};
use crate::hooks::{self, Phase};
use crate::http::Usage;
use crate::limits;
use crate::manifest::{self, Manifest, ObjectId, Protected, RelPath};
use crate::plan::{self, Action, Plan};
use crate::resources::{self, Resources, Snapshot};
use crate::signal::{Session, Signals, Stage};
use crate::source::{GitHub, Refusal, Source, SourceError, StaticSite};
use crate::state::{
    Cache, Counters, Installed, LastError, Rejected, ReleaseId, RollbackPoint, STATE_FORMAT,
    StateDir, Trial, now_rfc3339, unix_now,
};
use crate::survey;
use crate::transaction::{self, Op, Recovery, Transaction};
use crate::trial::Verdict;
use crate::trust::{self, Access, TrustedDir};

mod report;
mod settle;

use settle::Next;
pub use settle::TrialReport;

/// How to run an update.
#[derive(Clone, Copy, Debug, Default)]
pub struct UpdateOptions {
    /// Reinstall even when up to date, and verify every file's content on disk.
    pub force: bool,
    /// Decide and report the plan, change nothing (not even create the state folder).
    pub dry_run: bool,
}

/// What `ota check` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// The installed release is the channel's current one.
    UpToDate(ReleaseId),
    /// The installed files are not the channel's current release.
    Available {
        /// What is installed, if anything.
        installed: Option<ReleaseId>,
        /// What the channel points at.
        available: ReleaseId,
        /// What differs between the two.
        reason: UpdateReason,
    },
    /// The channel names a release that failed its trial here: `ota update` skips it
    /// (unless forced).
    Rejected {
        /// What is installed, if anything.
        installed: Option<ReleaseId>,
        /// What the channel points at.
        available: ReleaseId,
        /// When and why it was rolled back.
        rejected: Rejected,
    },
}

/// Why an update has something to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpdateReason {
    /// Nothing is installed in the target yet.
    FirstInstall,
    /// The channel names another release.
    NewRelease,
    /// The same release, installed with another `allow`/`ignore` filter.
    FilterChanged,
    /// The same release, installed from another repository.
    SourceChanged,
    /// The same commit, installed following another channel or branch.
    ChannelChanged,
    /// `force`: a reinstall that verifies every file.
    Forced,
    /// Going back to the release a failed trial (or `ota rollback`) returns to.
    Rollback,
}

impl UpdateReason {
    /// A stable machine-readable name: `first_install`, `new_release`, `filter_changed`,
    /// `source_changed`, `channel_changed`, `forced`, `rollback`.
    pub fn name(self) -> &'static str {
        match self {
            UpdateReason::FirstInstall => "first_install",
            UpdateReason::NewRelease => "new_release",
            UpdateReason::FilterChanged => "filter_changed",
            UpdateReason::SourceChanged => "source_changed",
            UpdateReason::ChannelChanged => "channel_changed",
            UpdateReason::Forced => "forced",
            UpdateReason::Rollback => "rollback",
        }
    }
}

impl fmt::Display for UpdateReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UpdateReason::FirstInstall => "nothing is installed yet",
            UpdateReason::NewRelease => "a new release",
            UpdateReason::FilterChanged => "allow/ignore changed since it was installed",
            UpdateReason::SourceChanged => "the source repository changed since it was installed",
            UpdateReason::ChannelChanged => "the channel changed since it was installed",
            UpdateReason::Forced => "forced reinstall",
            UpdateReason::Rollback => "rolling back a release that failed its trial",
        })
    }
}

/// What `ota update` did.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Nothing to do.
    UpToDate(Report),
    /// `--dry-run`: the plan, not applied.
    Planned(Report),
    /// The new release is installed (`Report::trial` says whether it is confirmed).
    Updated(Report),
    /// The channel names a release that failed its trial here before: not downloaded, not
    /// installed (`UpdateOptions::force` installs it all the same).
    Rejected {
        /// What the run saw (`to` is the rejected release).
        report: Report,
        /// When and why it was rolled back.
        rejected: Rejected,
    },
    /// This device is not in the rollout cohort of the release the channel names
    /// (`[schedule] rollout_percent`): nothing was downloaded or changed.
    Deferred {
        /// What the run saw (`to` is the release this device does not take yet).
        report: Report,
        /// Why, in words.
        deferred: crate::schedule::Deferred,
    },
    /// The after-update actions and the health command of the release on trial ran again
    /// (the run after its update was interrupted) and the verdict was recorded; the channel
    /// was not asked this time.
    Retried(Report),
}

impl Outcome {
    /// The report, whatever happened.
    pub fn report(&self) -> &Report {
        match self {
            Outcome::UpToDate(r)
            | Outcome::Planned(r)
            | Outcome::Updated(r)
            | Outcome::Retried(r)
            | Outcome::Rejected { report: r, .. }
            | Outcome::Deferred { report: r, .. } => r,
        }
    }

    fn report_mut(&mut self) -> &mut Report {
        match self {
            Outcome::UpToDate(r)
            | Outcome::Planned(r)
            | Outcome::Updated(r)
            | Outcome::Retried(r)
            | Outcome::Rejected { report: r, .. }
            | Outcome::Deferred { report: r, .. } => r,
        }
    }
}

/// Figures of one update run.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Report {
    /// What was installed before (`None`: a first install).
    pub from: Option<ReleaseId>,
    /// What the channel points at.
    pub to: ReleaseId,
    /// Why there was something to do (`None` when up to date).
    pub reason: Option<UpdateReason>,
    /// The plan (empty when up to date).
    pub plan: Plan,
    /// Files downloaded.
    pub downloaded: usize,
    /// Files staged from local content.
    pub copied: usize,
    /// Requests and bytes of this run.
    pub usage: Usage,
    /// Wall time.
    pub elapsed: Duration,
    /// Warnings from the release (skipped submodules…) and the plan.
    pub warnings: Vec<String>,
    /// What recovery did first.
    pub recovery: Recovery,
    /// Files and links ota did not own at paths the release ships: replaced, and moved to
    /// `<state_dir>/kept/<txid>/<path>` (path in the target, where it was kept).
    pub kept: Vec<(RelPath, PathBuf)>,
    /// The trial of the release installed at the end of the run, if it is on trial (or was
    /// confirmed by this run): `None` without a trial.
    pub trial: Option<Verdict>,
}

/// What `ota status` shows.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Status {
    /// The target directory.
    pub target: PathBuf,
    /// The installed release and files, if any.
    pub installed: Option<Installed>,
    /// The release an interrupted update was installing, waiting for recovery.
    pub pending: Option<ReleaseId>,
    /// The last failure of `update` or `recover`, if not cleared by a success since.
    pub last_error: Option<LastError>,
    /// The last failures (`[report] error_history_limit`), oldest first; kept after a
    /// success.
    pub errors: Vec<LastError>,
    /// The counters of `metrics.json`: requests and bytes since the first run, the last
    /// success, whether the last check found an update.
    pub counters: Counters,
    /// What the last check saw (time, rate-limit quota).
    pub cache: Cache,
    /// Files ota replaced but did not own, kept under `<state_dir>/kept/` (sorted).
    pub kept: Vec<PathBuf>,
    /// The verdict on the installed release's trial now, if it is on trial
    /// (`installed.trial` has what the trial has seen, and its rollback point).
    pub trial: Option<Verdict>,
    /// Bytes of the rollback point's files kept in the state folder's `previous/`.
    pub previous_bytes: u64,
    /// Boots a release on trial must survive (`[trial] boots`; 0: not counted).
    pub boots_needed: u32,
    /// Whether a release on trial waits for the result of its health command and
    /// after-update actions (`[trial] health_command`, `[after_update]`).
    pub health_needed: bool,
    /// Free storage of the target's filesystem, free memory and the battery, now.
    pub resources: Snapshot,
    /// Why `ota update` would be deferred now, and until when (`None`: it may run now).
    pub schedule: Option<crate::schedule::Deferred>,
}

/// Runs ota's commands for one configuration. One `Updater` can run any number of
/// operations, one after the other; called from several threads, its `check` and `update`
/// calls take turns (and every command that changes the target also takes the state
/// folder's lock, against other processes).
pub struct Updater {
    config: Config,
    fs: Box<dyn Fs>,
    source: Box<dyn Source>,
    dirs: StateDir,
    /// ota's own folders inside the target, which no release path may enter.
    reserved: Vec<RelPath>,
    /// The device's own files inside the target (config, token), which a release never writes.
    protected: Vec<Protected>,
    progress: Option<Box<ProgressFn>>,
    /// Where free memory and the battery are read (`[guards]`, `status`).
    resources: Resources,
    /// The source's counters as last added to `metrics.json` (see `report`).
    metered: Mutex<Usage>,
    /// systemd, the watchdog and the status LED, told where each command is.
    signals: Signals,
    /// Held by the operation under way: the source's deadline and counters are one per
    /// updater, so operations from several threads take turns.
    running: Mutex<()>,
    /// The release the operation under way set out to install, once resolved: recorded
    /// with a failure, for safe mode.
    attempted: Mutex<Option<ReleaseId>>,
}

/// One operation under way: its turn, its clock and the source's counters at its start.
struct Operation<'a> {
    /// First, so that the signals end before the turn passes.
    _signals: Session<'a>,
    _turn: MutexGuard<'a, ()>,
    started: Instant,
    usage: Usage,
}

impl Updater {
    /// An updater for `config` with the real filesystem and the configured source.
    pub fn new(config: Config) -> Updater {
        let source: Box<dyn Source> = match &config.source {
            SourceConfig::Github(github) => {
                Box::new(GitHub::new(github, &config.network).with_limits(&config.limits))
            }
            SourceConfig::Static(site) => Box::new(StaticSite::new(site, &config.network)),
        };
        let fs = RealFs::confined(&config.target_dir, &config.state_dir);
        Updater::with_parts(config, source, Box::new(fs))
    }

    /// An updater with a given source and filesystem (simulations, other hosts).
    pub fn with_parts(config: Config, source: Box<dyn Source>, fs: Box<dyn Fs>) -> Updater {
        let dirs = StateDir::new(config.state_dir.clone());
        let signals = Signals::new(&config.device);
        let mut reserved = vec![RelPath::new(".ota", &[]).expect("valid literal")];
        if let Some(rel) = inside(&config.target_dir, &config.state_dir)
            && !reserved.contains(&rel)
        {
            reserved.push(rel);
        }
        let key_files = config.source.trust().key_files.iter();
        let own_files = [
            (config.config_file.as_deref(), "this device's config file"),
            (config.source.token_file(), "this device's token file"),
            (
                config.source.manifest_key_file(),
                "this device's manifest key file",
            ),
        ]
        .into_iter()
        .chain(key_files.map(|f| (Some(f.as_path()), "this device's public key file")));
        let protected = own_files
            .into_iter()
            .filter_map(|(file, what)| {
                let path = inside(&config.target_dir, file?)?;
                let what = what.to_owned();
                Some(Protected { path, what })
            })
            .collect();
        Updater {
            config,
            fs,
            source,
            dirs,
            reserved,
            protected,
            progress: None,
            resources: Resources::system(),
            metered: Mutex::new(Usage::default()),
            signals,
            running: Mutex::new(()),
            attempted: Mutex::new(None),
        }
    }

    /// Reads free memory and the battery from `resources` instead of `/proc` and `/sys`
    /// (tests: folders standing in for them).
    pub fn with_resources(mut self, resources: Resources) -> Updater {
        self.resources = resources;
        self
    }

    /// Calls `callback` as an update stages its files (see [`Progress`]), from the download
    /// threads, one call at a time; keep it quick. Replaces any earlier callback.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let config = ota::config::Config::load("/etc/ota.toml".as_ref())?;
    /// let mut updater = ota::Updater::new(config);
    /// updater.on_progress(|p| {
    ///     let (files, bytes) = (p.files_done * 100 / p.files_total.max(1), p.bytes_done);
    ///     eprintln!("{files}% of the files, {bytes} of {} bytes", p.bytes_total);
    /// });
    /// updater.update(ota::UpdateOptions::default())?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn on_progress(&mut self, callback: impl Fn(Progress) + Send + Sync + 'static) {
        self.progress = Some(Box::new(callback));
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether `ota update` may start at `now` under `[schedule]`: `None`, or why not and
    /// until when (see [`crate::schedule::decide`]). Reads `last_check` in `cache.json` and
    /// the failures in a row of `last_error.json`; makes no request. Safe mode counts here
    /// only failures that came before a release was known: the delay of a failing release
    /// is applied once the source says it is still the one to install (a new release
    /// ends safe mode).
    pub fn deferred(&self, now: &jiff::ZonedDateTime) -> Option<crate::schedule::Deferred> {
        self.schedule_at(now, false)
    }

    /// [`Updater::deferred`], or with `all_failures` the safe-mode delay of whichever release
    /// failed (what `ota status` shows).
    fn schedule_at(
        &self,
        now: &jiff::ZonedDateTime,
        all_failures: bool,
    ) -> Option<crate::schedule::Deferred> {
        let fs = &*self.fs;
        let last_check = self.dirs.read_cache(fs).last_check;
        let last_error = self.dirs.read_last_error(fs).ok().flatten();
        let last_error = last_error.filter(|e| all_failures || e.release.is_none());
        let history = crate::schedule::History {
            last_check: last_check.as_deref().and_then(unix_seconds),
            failures: last_error.and_then(|e| Some((unix_seconds(&e.time)?, e.consecutive))),
        };
        crate::schedule::decide(&self.config.schedule, now, history)
    }

    /// The safe-mode delay of `release`, if the last failures in a row were its own and the
    /// delay still holds (see [`crate::schedule::safe_mode_wait`]).
    fn safe_mode_for(&self, release: &ReleaseId) -> Option<crate::schedule::Deferred> {
        let last_error = self.dirs.read_last_error(&*self.fs).ok().flatten()?;
        if !last_error
            .release
            .as_ref()
            .is_some_and(|r| same_release(r, release))
        {
            return None;
        }
        let history = crate::schedule::History {
            last_check: None,
            failures: Some((unix_seconds(&last_error.time)?, last_error.consecutive)),
        };
        let config = crate::schedule::only_safe_mode(&self.config.schedule);
        crate::schedule::decide(&config, &jiff::ZonedDateTime::now(), history)
    }

    /// The release being attempted by the operation under way.
    fn attempted(&self) -> MutexGuard<'_, Option<ReleaseId>> {
        self.attempted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Why this device does not take `release` under the release's own `rollout_percent`
    /// (from its signed manifest) or else `[schedule] rollout_percent`, if it does not (see
    /// [`crate::schedule::rollout_bucket`]).
    fn outside_rollout(
        &self,
        release: &ReleaseId,
    ) -> Result<Option<crate::schedule::Deferred>, Error> {
        let schedule = &self.config.schedule;
        // A signed manifest's share overrides the device's own.
        let percent = release.rollout_percent.unwrap_or(schedule.rollout_percent);
        if percent >= 100 {
            return Ok(None);
        }
        let id = crate::schedule::device_id(schedule.device_id.as_deref(), Path::new("/"))
            .map_err(Error::Setup)?;
        let commit = release.commit.to_hex();
        let bucket = crate::schedule::rollout_bucket(&id, &commit);
        if bucket < percent {
            return Ok(None);
        }
        Ok(Some(crate::schedule::Deferred {
            reason: crate::schedule::Reason::Rollout,
            until: None,
            message: format!(
                "this device (rollout bucket {bucket}) is not among the {}% that take {} {} \
                 (`rollout_percent`): it takes it once the percentage is above {bucket}; \
                 `ota update --force` installs it now",
                percent,
                release.ref_name,
                release.short()
            ),
        }))
    }

    /// Starts an operation, once the one under way (if any) has ended: its own deadline,
    /// counted from now.
    fn begin(&self) -> Operation<'_> {
        // A poisoned lock only means an earlier operation panicked; the turn is still free.
        let turn = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let started = Instant::now();
        *self.attempted() = None;
        self.source
            .start_operation(started + self.config.network.update_timeout);
        Operation {
            _signals: self.signals.begin(),
            _turn: turn,
            started,
            usage: self.source.usage(),
        }
    }

    /// Fills in the figures of the operation that began at `op`.
    fn finish(&self, op: &Operation, report: &mut Report) {
        report.usage = self.source.usage().since(&op.usage);
        report.elapsed = op.started.elapsed();
    }

    /// Asks the source whether an update is available; changes nothing in the target.
    fn check_unmetered(&self) -> Result<Check, Error> {
        let _op = self.begin();
        // A check reads the state and writes the cache: only in a folder that is ota's.
        trust::open(self.dirs.root(), Access::Inspect)?;
        let installed = self.installed_if_any()?;
        let available = self.resolve(installed.as_ref(), false, true)?;
        let rejected = installed
            .as_ref()
            .and_then(|i| rejected_entry(i, &available));
        Ok(
            match (self.reason(installed.as_ref(), &available), rejected) {
                (None, _) => Check::UpToDate(available),
                (Some(_), Some(rejected)) => Check::Rejected {
                    installed: installed.as_ref().map(|i| i.release.clone()),
                    available,
                    rejected: rejected.clone(),
                },
                (Some(reason), None) => Check::Available {
                    installed: installed.map(|i| i.release),
                    available,
                    reason,
                },
            },
        )
    }

    /// Brings the target to the channel's current release; see [`UpdateOptions`].
    ///
    /// A release on trial is settled first, before any request: one that failed (or missed
    /// its deadline) is rolled back, and this returns [`Error::Trial`]. A release the
    /// channel names that was rolled back before is skipped ([`Outcome::Rejected`]) unless
    /// forced. After a new release is committed, the lock is released while the
    /// `[after_update]` actions and the health command run (the application may call
    /// `ota confirm` meanwhile), then the verdict is recorded: confirmed or still pending
    /// ([`Report::trial`]), or failed, rolled back and [`Error::Trial`].
    fn update_unmetered(&self, options: UpdateOptions) -> Result<Outcome, Error> {
        let op = self.begin();
        if options.dry_run {
            return self.dry_run(&op, options);
        }
        let lock = self.prepare(true)?;
        let next = (|| {
            self.check_folders()?;
            let recovery = self.recover_locked()?;
            if let Some(retry) = self.settle_before_update(&op, &recovery)? {
                return Ok(retry);
            }
            let outcome = self.run_update(&op, options, recovery)?;
            let txid = match &outcome {
                Outcome::Updated(_) => self.trial_txid()?,
                _ => None,
            };
            Ok(match txid {
                Some(txid) => Next::Try {
                    outcome,
                    txid,
                    actions: true,
                },
                None => Next::Done(outcome),
            })
        })();
        // A deferred run changes nothing, and must not end safe mode by clearing its record.
        let deferred = matches!(next, Ok(Next::Done(Outcome::Deferred { .. })));
        let next = self.record(next, !deferred);
        drop(lock);
        if next.is_err() {
            self.signals.stage(Stage::Error);
        }
        let result = match next? {
            Next::Done(outcome) => return Ok(outcome),
            Next::Try {
                outcome,
                txid,
                actions,
            } => {
                self.signals.stage(Stage::Trial);
                self.try_release(&op, outcome, &txid, actions)
            }
        };
        if result.is_err() {
            self.signals.stage(Stage::Error);
        }
        self.after_rollback(&result);
        // Last, once the verdict is durable (a run interrupted before it never rebooted).
        if let Ok(Outcome::Updated(report) | Outcome::Retried(report)) = &result {
            self.reboot_if_asked(&report.to);
        }
        result
    }

    /// `update --dry-run`: plans from the target as it is and writes nothing at all: not the
    /// state folder, not the lock file, not `cache.json`, and no recovery (an interrupted
    /// update waiting for it is reported instead).
    fn dry_run(&self, op: &Operation, options: UpdateOptions) -> Result<Outcome, Error> {
        let state = trust::open(self.dirs.root(), Access::Inspect)?;
        let Some(state) = state.filter(|_| self.exists(&self.config.target_dir)) else {
            return self.run_update(op, options, Recovery::Clean);
        };
        // The lock file exists once an update ran; without it no update is under way.
        let _lock = match self.exists(&self.dirs.lock_file()) {
            true => Some(Lock::take(&state, LOCK_PATIENCE)?),
            false => None,
        };
        self.check_folders()?;
        let pending = transaction::pending(&*self.fs, &self.config.target_dir, &self.dirs)
            .map_err(Error::Recover)?;
        if let Some(journal) = pending {
            return Err(Error::Setup(format!(
                "an interrupted update to {} {} waits for recovery, so the target holds a mix \
                 of two releases and a dry run, which changes nothing, cannot plan from it: run \
                 `ota recover` (or `ota update`) first",
                journal.release.ref_name,
                journal.release.short()
            )));
        }
        self.run_update(op, options, Recovery::Clean)
    }

    fn run_update(
        &self,
        op: &Operation,
        options: UpdateOptions,
        recovery: Recovery,
    ) -> Result<Outcome, Error> {
        let installed = self.installed_if_any()?;
        let to = self.resolve(installed.as_ref(), options.force, !options.dry_run)?;
        let reason = match self.reason(installed.as_ref(), &to) {
            None if options.force => Some(UpdateReason::Forced),
            other => other,
        };
        let mut report = Report {
            from: installed.as_ref().map(|i| i.release.clone()),
            to,
            reason,
            plan: Plan::default(),
            downloaded: 0,
            copied: 0,
            usage: Usage::default(),
            elapsed: Duration::ZERO,
            warnings: Vec::new(),
            recovery,
            kept: Vec::new(),
            trial: self.verdict_now(installed.as_ref()),
        };
        if report.reason.is_none() {
            self.finish(op, &mut report);
            return Ok(Outcome::UpToDate(report));
        }
        let rejected = installed
            .as_ref()
            .and_then(|i| rejected_entry(i, &report.to));
        if let Some(rejected) = rejected.filter(|_| !options.force) {
            report.reason = None;
            let rejected = rejected.clone();
            self.finish(op, &mut report);
            return Ok(Outcome::Rejected { report, rejected });
        }
        if !options.dry_run {
            *self.attempted() = Some(report.to.clone());
        }
        // Safe mode holds back the release that kept failing, not a new one.
        if !options.force
            && !options.dry_run
            && let Some(deferred) = self.safe_mode_for(&report.to)
        {
            report.reason = None;
            self.finish(op, &mut report);
            return Ok(Outcome::Deferred { report, deferred });
        }
        // The rollout holds back new releases only: a first install, or the same release
        // after a config change, goes ahead; `--force` takes the release all the same.
        if report.reason == Some(UpdateReason::NewRelease)
            && !options.force
            && let Some(deferred) = self.outside_rollout(&report.to)?
        {
            report.reason = None;
            self.finish(op, &mut report);
            return Ok(Outcome::Deferred { report, deferred });
        }
        // Before any download: a device low on memory or battery defers the update.
        self.resources.check_device(&self.config.guards)?;
        if let Ok(list) = fs::read_small(
            &*self.fs,
            &self.dirs.file_list_file(),
            crate::signed::MAX_MANIFEST_BYTES,
        ) {
            self.source.kept_list(list);
        }
        let tree = self.source.tree(&report.to.commit)?;
        // What one archive of the release would carry: every blob of the tree.
        let archive = self.source.has_archive().then(|| {
            let bytes = (tree.iter().filter_map(|e| e.size)).fold(0u64, u64::saturating_add);
            (bytes, tree.len() as u64)
        });
        let (target, warnings) =
            manifest::from_tree(tree, &self.config.filter, &self.reserved, &self.protected)?;
        limits::check_release(&target, &self.config.target_dir, &self.dirs)?;
        report.warnings = warnings;
        let owned = self.owned(installed.as_ref())?;
        let links;
        (links, report.plan) =
            self.plan_to(&owned, &target, &report.to.commit, options.force, archive)?;
        report.warnings.extend(report.plan.warnings.iter().cloned());
        self.check_storage(&report.plan)?;
        let new_state = Installed {
            format: STATE_FORMAT,
            txid: String::new(),
            release: report.to.clone(),
            source: self.source.name(),
            filter: self.config.filter.fingerprint(),
            installed_at: now_rfc3339(),
            previous: installed.as_ref().map(|i| i.release.clone()),
            files: target,
            trial: self.config.has_trial().then(|| {
                let rollback_to = installed.as_ref().and_then(RollbackPoint::of);
                Trial::begin(now_rfc3339(), unix_now(), None, rollback_to)
            }),
            // A release installed again (`--force`) is no longer rejected.
            rejected: (installed
                .map(|i| i.rejected)
                .unwrap_or_default()
                .into_iter())
            .filter(|r| !same_release(&r.release, &report.to))
            .collect(),
        };
        let rollback_to = new_state
            .trial
            .as_ref()
            .and_then(|t| t.rollback_to.as_deref());
        let ops = report.plan.ops(rollback_to);
        limits::check_commit(&new_state, &ops)?;
        if options.dry_run {
            self.finish(op, &mut report);
            return Ok(Outcome::Planned(report));
        }
        self.apply(&mut report, new_state, ops, &links, true)?;
        self.keep_file_list(&report.to.commit);
        self.finish(op, &mut report);
        report.trial = None;
        Ok(Outcome::Updated(report))
    }

    /// Saves the installed release's file list, if the source keeps one (a cache: a failure
    /// only costs the next update the whole list).
    fn keep_file_list(&self, commit: &ObjectId) {
        let Some(list) = self.source.list_to_keep(commit) else {
            return;
        };
        let path = self.dirs.file_list_file();
        if let Err(e) = fs::write_replace(&*self.fs, &path, &list) {
            tracing::warn!("could not save {}: {e}", path.display());
        }
    }

    /// `[guards] min_free_storage`: free storage beyond what `plan` needs, checked once the
    /// plan is known and before anything is downloaded.
    fn check_storage(&self, plan: &Plan) -> Result<(), Error> {
        if self.config.guards.min_free_storage == 0 {
            return Ok(());
        }
        let root = &self.config.target_dir;
        let space = survey::space_at(&*self.fs, root).map_err(|e| {
            Error::Setup(format!(
                "cannot read the free space of {}: {e}",
                root.display()
            ))
        })?;
        Ok(resources::check_storage(
            &self.config.guards,
            space.available,
            plan.space_needed,
        )?)
    }

    /// Free storage of the target's filesystem (`None`, with a warning, if unreadable), free
    /// memory and the battery.
    fn resources_now(&self) -> Snapshot {
        let root = &self.config.target_dir;
        let free_storage = match survey::space_at(&*self.fs, root) {
            Ok(space) => Some(space.available),
            Err(e) => {
                tracing::warn!("cannot read the free space of {}: {e}", root.display());
                None
            }
        };
        Snapshot {
            free_storage,
            ..self.resources.snapshot()
        }
    }

    /// Plans the change from the `owned` files to `target`, the files of `commit`: returns
    /// the targets of its symlinks (read and checked) and the plan. An update and a
    /// rollback alike. `archive`, when the source can send the release as one archive, is
    /// its bytes and files: the plan then chooses how the downloads travel.
    fn plan_to(
        &self,
        owned: &Manifest,
        target: &Manifest,
        commit: &ObjectId,
        force: bool,
        archive: Option<(u64, u64)>,
    ) -> Result<(BTreeMap<RelPath, String>, Plan), Error> {
        let root = &self.config.target_dir;
        // Every symlink is judged with the targets of all the others, before anything is
        // written (a dry run too: it says whether the release would be refused).
        let store = self.dirs.previous_root();
        let links = fetch::link_targets(&*self.source, &*self.fs, root, &store, commit, target)
            .map_err(|e| match e {
                FetchError::Manifest(e) => Error::Manifest(e),
                e => Error::Fetch(e),
            })?;
        manifest::check_links(&links, &self.reserved)?;
        let facts = survey::survey(&*self.fs, root, &self.dirs, owned, target, force)?;
        let mut plan = plan::plan(owned, target, &facts)?;
        if let Some((bytes, files)) = archive {
            plan.choose_transfer(bytes, files, &facts.downloads);
        }
        Ok((links, plan))
    }

    /// The files ota installed, less the device's own files (config, token): an older ota
    /// may have installed one from a release, and a release no longer writes or deletes it.
    fn owned(&self, installed: Option<&Installed>) -> Result<Manifest, Error> {
        let Some(installed) = installed else {
            return Ok(Manifest::default());
        };
        let mine = |e: &manifest::Entry| self.protected.iter().any(|p| p.touched_by(&e.path));
        if !installed.files.entries().iter().any(mine) {
            return Ok(installed.files.clone());
        }
        let kept = installed.files.entries().iter().filter(|e| !mine(e));
        Ok(Manifest::new(kept.cloned().collect())?)
    }

    /// Asks the source what the channel names now: conditionally when `cache.json` holds a
    /// validator for it, and reusing the installed release's commit when its tag is still
    /// current, unless `fresh`. If `remember`, saves the new validator, the rate-limit quota
    /// and the time of the check (when the state folder exists: a check creates nothing; a
    /// dry run writes nothing).
    fn resolve(
        &self,
        installed: Option<&Installed>,
        fresh: bool,
        remember: bool,
    ) -> Result<ReleaseId, Error> {
        let fs = &*self.fs;
        let state_exists = self.exists(self.dirs.root());
        let mut cache = match state_exists {
            true => self.dirs.read_cache(fs),
            false => Cache::default(),
        };
        let (known, cached) = match fresh {
            true => (None, None),
            false => (installed.map(|i| &i.release), cache.validator.as_ref()),
        };
        let result = self.source.resolve(&self.config.channel, known, cached);
        if let Ok(resolved) = &result {
            cache.validator = resolved.validator.clone();
        }
        let quota = self.source.quota();
        if quota.remaining.is_some() {
            cache.quota = Some(quota);
        }
        cache.last_check = Some(now_rfc3339());
        if remember
            && state_exists
            && let Err(e) = self.dirs.write_cache(fs, &cache)
        {
            tracing::warn!("could not save {}: {e}", self.dirs.cache_file().display());
        }
        let release = result?.release;
        self.check_downgrade(installed, &release)?;
        Ok(release)
    }

    /// Refuses a release whose signed counter is lower than the installed release's on the
    /// same channel (a host rolling the device back), unless `allow_downgrade`. A channel
    /// switch is not a downgrade: channels are published independently.
    fn check_downgrade(
        &self,
        installed: Option<&Installed>,
        offered: &ReleaseId,
    ) -> Result<(), Error> {
        let Some(installed) = installed.map(|i| &i.release) else {
            return Ok(());
        };
        if let (Some(had), Some(got)) = (installed.counter, offered.counter)
            && installed.channel == offered.channel
            && got < had
            && !self.config.source.trust().allow_downgrade
        {
            return Err(Error::Source(SourceError::Refused {
                what: format!(
                    "checking release {} {} of {}",
                    offered.ref_name,
                    offered.short(),
                    self.source.name()
                ),
                refusal: Refusal::Downgrade {
                    installed: had,
                    offered: got,
                },
            }));
        }
        Ok(())
    }

    /// Fetches into a new transaction and commits `ops` and `new_state` (the `state.json` to
    /// be), both checked against the limits; `links` are the release's checked symlink targets.
    /// With `before_update`, the `[before_update]` command runs once everything is staged,
    /// just before the target changes (so the application is stopped for the shortest
    /// time); when it fails, nothing changes.
    fn apply(
        &self,
        report: &mut Report,
        mut new_state: Installed,
        ops: Vec<Op>,
        links: &BTreeMap<RelPath, String>,
        before_update: bool,
    ) -> Result<(), Error> {
        let root = &self.config.target_dir;
        let tx = Transaction::begin(&*self.fs, root, &self.dirs).map_err(Error::Apply)?;
        self.signals.stage(Stage::Downloading);
        // Each file staged is progress: it feeds the watchdogs, then the caller's callback.
        let progress = |p: Progress| {
            self.signals.alive();
            if let Some(callback) = &self.progress {
                callback(p);
            }
        };
        let fetcher = Fetcher {
            source: &*self.source,
            fs: &*self.fs,
            target: root,
            store: &self.dirs.previous_root(),
            downloads: &self.dirs.downloads_root(),
            commit: report.to.commit,
            links,
            net: &self.config.network,
            progress: Some(&progress),
        };
        let mut fetched = match fetcher.fetch(&report.plan, &|slot| tx.stage_path(slot)) {
            Ok(f) => f,
            Err(e) => {
                if let Err(cleanup) = tx.abort() {
                    tracing::warn!("removing the stage after a failed download: {cleanup}");
                }
                return Err(e.into());
            }
        };
        report.downloaded = fetched.downloaded;
        report.copied = fetched.copied;
        self.signals.stage(Stage::Applying);
        if before_update && let Some(command) = &self.config.before_update.command {
            let env = self.hook_env(&report.to, report.from.as_ref(), Phase::BeforeUpdate);
            if let Err(e) = hooks::run(command, self.config.before_update.timeout, &env) {
                if let Err(cleanup) = tx.abort() {
                    tracing::warn!("removing the stage after [before_update] failed: {cleanup}");
                }
                return Err(Error::BeforeUpdate(e.to_string()));
            }
        }
        if let Err(e) = fetched.stage(&*self.fs) {
            if let Err(cleanup) = tx.abort() {
                tracing::warn!("removing the stage after a failed download: {cleanup}");
            }
            return Err(e.into());
        }
        new_state.installed_at = now_rfc3339();
        // The trial begins at the commit (a deadline counts from there, not from the plan).
        if let Some(trial) = new_state.trial.take() {
            let confirm_within = self.config.trial.confirm_within;
            let since = new_state.installed_at.clone();
            new_state.trial = Some(Trial::begin(
                since,
                unix_now(),
                confirm_within,
                trial.rollback_to,
            ));
        }
        report.kept = (report.plan.changes.iter())
            .filter(|c| c.kept)
            .map(|c| (c.path.clone(), tx.kept_path(&c.path)))
            .collect();
        tx.commit(ops, new_state).map_err(Error::Apply)?;
        tracing::info!(
            "installed {} {} ({}): {} added, {} replaced, {} deleted",
            report.to.ref_name,
            report.to.short(),
            report.to.channel,
            report.plan.count(Action::Add),
            report.plan.count(Action::Replace),
            report.plan.count(Action::Delete),
        );
        Ok(())
    }

    /// Finishes or undoes an interrupted update. Without a state folder there is nothing
    /// to recover, and nothing is created.
    fn recover_unmetered(&self) -> Result<Recovery, Error> {
        if !self.exists(self.dirs.root()) {
            return Ok(Recovery::Clean);
        }
        let lock = self.prepare(false)?;
        self.recorded(lock, || {
            self.check_folders()?;
            self.recover_locked()
        })
    }

    fn recover_locked(&self) -> Result<Recovery, Error> {
        let outcome = transaction::recover(&*self.fs, &self.config.target_dir, &self.dirs)
            .map_err(Error::Recover)?;
        match &outcome {
            Recovery::Clean => {}
            Recovery::SweptLeftovers => {
                tracing::info!("removed leftovers of an interrupted download")
            }
            Recovery::Completed(r) => tracing::warn!(
                "finished an interrupted update to {} {}",
                r.ref_name,
                r.short()
            ),
            Recovery::RolledBack(r) => tracing::warn!(
                "rolled back an interrupted update to {} {}: the previous files are restored",
                r.ref_name,
                r.short()
            ),
        }
        Ok(outcome)
    }

    /// What is installed and what went wrong last; changes nothing (and reads nothing in a
    /// state folder that is not ota's: that is the error).
    pub fn status(&self) -> Result<Status, Error> {
        let fs = &*self.fs;
        if trust::open(self.dirs.root(), Access::Inspect)?.is_none() {
            return Ok(Status {
                target: self.config.target_dir.clone(),
                installed: None,
                pending: None,
                last_error: None,
                errors: Vec::new(),
                counters: Counters::default(),
                cache: Cache::default(),
                kept: Vec::new(),
                trial: None,
                previous_bytes: 0,
                boots_needed: self.config.trial.boots,
                health_needed: self.config.trial.health_command.is_some()
                    || !self.config.after_update.is_empty(),
                resources: self.resources_now(),
                schedule: self.schedule_at(&jiff::ZonedDateTime::now(), true),
            });
        }
        let installed = self.dirs.read_installed(fs)?;
        Ok(Status {
            target: self.config.target_dir.clone(),
            trial: self.verdict_now(installed.as_ref()),
            previous_bytes: self.previous_bytes(),
            boots_needed: self.config.trial.boots,
            health_needed: self.config.trial.health_command.is_some()
                || !self.config.after_update.is_empty(),
            schedule: self.schedule_at(&jiff::ZonedDateTime::now(), true),
            installed,
            pending: transaction::pending(fs, &self.config.target_dir, &self.dirs)
                .map_err(Error::Recover)?
                .map(|journal| journal.release),
            last_error: self.dirs.read_last_error(fs)?,
            errors: self.dirs.read_errors(fs),
            counters: self.dirs.read_counters(fs),
            cache: self.dirs.read_cache(fs),
            kept: transaction::kept_files(fs, &self.dirs)
                .map_err(|e| Error::Setup(format!("cannot list the kept files: {e}")))?,
            resources: self.resources_now(),
        })
    }

    /// Why `installed` is not exactly what the channel now names, installed from this
    /// source with this filter; `None` when it is.
    fn reason(&self, installed: Option<&Installed>, available: &ReleaseId) -> Option<UpdateReason> {
        let Some(installed) = installed else {
            return Some(UpdateReason::FirstInstall);
        };
        let release = &installed.release;
        if release.commit != available.commit || release.ref_name != available.ref_name {
            Some(match release.channel == available.channel {
                true => UpdateReason::NewRelease,
                false => UpdateReason::ChannelChanged,
            })
        } else if release.channel != available.channel || !self.channel_matches(release) {
            Some(UpdateReason::ChannelChanged)
        } else if installed.source != self.source.name() {
            Some(UpdateReason::SourceChanged)
        } else if installed.filter != self.config.filter.fingerprint() {
            Some(UpdateReason::FilterChanged)
        } else {
            None
        }
    }

    fn channel_matches(&self, release: &ReleaseId) -> bool {
        match &self.config.channel {
            Channel::Stable { .. } => release.channel == "stable",
            Channel::Named { name } => release.channel == *name,
            Channel::Developer { branch } => {
                release.channel == "developer" && release.ref_name == *branch
            }
        }
    }

    fn installed_if_any(&self) -> Result<Option<Installed>, Error> {
        match self.exists(&self.dirs.state_file()) {
            true => Ok(self.dirs.read_installed(&*self.fs)?),
            false => Ok(None),
        }
    }

    /// Whether anything is at `path` (an unreadable path counts as absent).
    fn exists(&self, path: &Path) -> bool {
        matches!(self.fs.metadata(path), Ok(Some(_)))
    }

    /// Creates the target and state folders if `create` (else the state folder must
    /// exist), checks that the state folder is ota's (see `trust`), and takes the lock.
    /// Nothing is written into a state folder that is not ota's, and so no journal there is
    /// ever run.
    fn prepare(&self, create: bool) -> Result<Lock, Error> {
        self.prepare_with(create, LOCK_PATIENCE)
    }

    /// [`Updater::prepare`], waiting up to `patience` for the lock.
    fn prepare_with(&self, create: bool, patience: Duration) -> Result<Lock, Error> {
        let access = match create {
            true => Access::Create,
            false => Access::Use,
        };
        let target = self.config.target_dir.as_path();
        if let Ok(meta) = std::fs::symlink_metadata(target)
            && !meta.is_dir()
        {
            return Err(Error::Setup(format!(
                "target_dir {} is not a folder: move what is there away, or set target_dir to                  a folder",
                target.display()
            )));
        }
        // The state folder first: a target is created only once it is known to be usable
        // (the default state folder is inside the target, which this creates too).
        let root = self.dirs.root();
        let state = trust::open(root, access)?.ok_or_else(|| {
            Error::Setup(format!(
                "the state folder {} does not exist",
                root.display()
            ))
        })?;
        if create {
            std::fs::create_dir_all(target)
                .map_err(|e| Error::Setup(format!("cannot create {}: {e}", target.display())))?;
        }
        Lock::take(&state, patience)
    }

    /// Checks, under the lock, that the target is a folder on the state folder's filesystem.
    fn check_folders(&self) -> Result<(), Error> {
        let target = &self.config.target_dir;
        let state = self.dirs.root();
        let meta = |p: &Path| {
            self.fs
                .metadata(p)
                .map_err(|e| Error::Setup(format!("cannot read {}: {e}", p.display())))
        };
        let (Some(t), Some(s)) = (meta(target)?, meta(state)?) else {
            return Err(Error::Setup(format!(
                "target_dir {} or state_dir {} does not exist",
                target.display(),
                state.display()
            )));
        };
        if t.kind != FileKind::Dir {
            return Err(Error::Setup(format!(
                "target_dir {} is not a folder",
                target.display()
            )));
        }
        if t.dev != s.dev {
            return Err(Error::Setup(format!(
                "state_dir {} is on a different filesystem than target_dir {}: ota moves files \
                 between them and needs those moves to be atomic. Put state_dir inside the target \
                 (the default, {}/.ota) or elsewhere on the same filesystem",
                state.display(),
                target.display(),
                target.display()
            )));
        }
        if let Some(kind) = crate::fs::non_atomic_rename_fs(target) {
            tracing::warn!(
                "{} is on {kind}, whose renames are not atomic across a power cut: ota cannot \
                 keep the target safe there (see SAFETY.md). Prefer ext4, XFS, btrfs or f2fs",
                target.display()
            );
        }
        Ok(())
    }

    /// Runs `work` holding `lock`, and records its outcome in `last_error.json` before
    /// releasing it: a failure is written, a success removes the file.
    fn recorded<T>(&self, lock: Lock, work: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        let result = self.record(work(), true);
        drop(lock);
        result
    }

    /// Records `result` in `last_error.json` (the caller holds the lock): a failure is
    /// written; a success removes the file if `clear`.
    fn record<T>(&self, result: Result<T, Error>, clear: bool) -> Result<T, Error> {
        let fs = &*self.fs;
        let recorded = match &result {
            Ok(_) if !clear => Ok(()),
            Ok(_) => self.dirs.clear_last_error(fs),
            // Deferred, not failed (`[guards]`): the record of failures stays as it was.
            Err(e) if e.deferred() => Ok(()),
            Err(e) => {
                let time = now_rfc3339();
                let release = self.attempted().clone();
                // A failure of another release than the last one's starts a new count (a
                // new release leaves safe mode).
                let before = self.dirs.read_last_error(fs).ok().flatten().filter(|b| {
                    match (&b.release, &release) {
                        (Some(before), Some(now)) => same_release(before, now),
                        _ => true,
                    }
                });
                let error = LastError {
                    phase: e.phase().into(),
                    kind: e.kind().into(),
                    message: e.to_string(),
                    consecutive: before
                        .as_ref()
                        .map_or(1, |b| b.consecutive.saturating_add(1)),
                    since: Some(before.and_then(|b| b.since).unwrap_or_else(|| time.clone())),
                    time,
                    release,
                };
                let keep = self.config.report.error_history_limit;
                if let Err(e) = self.dirs.push_error(fs, &error, keep) {
                    tracing::warn!(
                        "could not record the error in {}: {e}",
                        self.dirs.errors_file().display()
                    );
                }
                self.dirs.write_last_error(fs, &error)
            }
        };
        if let Err(e) = recorded {
            tracing::warn!(
                "could not record the outcome in {}: {e}",
                self.dirs.error_file().display()
            );
        }
        result
    }
}

/// Seconds since the Unix epoch of an RFC 3339 time written by ota.
fn unix_seconds(time: &str) -> Option<u64> {
    let time = humantime::parse_rfc3339(time).ok()?;
    let since = time.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(since.as_secs())
}

/// The entry of `installed.rejected` for `release` (same ref and commit), if any.
fn rejected_entry<'a>(installed: &'a Installed, release: &ReleaseId) -> Option<&'a Rejected> {
    (installed.rejected.iter()).find(|r| same_release(&r.release, release))
}

/// Whether two releases are the same ref at the same commit (whatever the channel).
fn same_release(a: &ReleaseId, b: &ReleaseId) -> bool {
    a.ref_name == b.ref_name && a.commit == b.commit
}

/// `path` relative to `root`, when it lies inside it: compared as written (both absolute and
/// normalised) and, where both exist, with their symlinks resolved.
fn inside(root: &Path, path: &Path) -> Option<RelPath> {
    let relative = |root: &Path, path: &Path| {
        let inside = path.strip_prefix(root).ok()?;
        RelPath::new(inside.to_str()?, &[]).ok()
    };
    relative(root, path).or_else(|| {
        let (root, path) = (root.canonicalize().ok()?, path.canonicalize().ok()?);
        relative(&root, &path)
    })
}

/// How long to wait for the lock before reporting another ota process at work.
const LOCK_PATIENCE: Duration = Duration::from_secs(2);

/// How long the commands of a trial wait for the lock: `ota confirm`, `ota boot`, and an
/// update taking it back after its health command. Another ota may hold it for a whole
/// download meanwhile; giving up would leave the verdict unrecorded.
const TRIAL_LOCK_PATIENCE: Duration = Duration::from_secs(300);

/// An exclusive `flock` on the state folder's lock file, released on drop.
struct Lock {
    _file: File,
}

impl Lock {
    fn take(state: &TrustedDir, patience: Duration) -> Result<Lock, Error> {
        let path = &state.path().join("lock");
        let file = state
            .open_lock()
            .map_err(|e| Error::Setup(format!("cannot open {}: {e}", path.display())))?;
        // A lock can be held for a moment by a process that is not ota at all: a child forked
        // by a program that embeds ota keeps the descriptor until it execs. Wait that out.
        let patience = Instant::now() + patience;
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(Lock { _file: file }),
                Err(rustix::io::Errno::WOULDBLOCK) if Instant::now() < patience => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    return Err(Error::Busy(path.display().to_string()));
                }
                Err(e) => return Err(Error::Setup(format!("cannot lock {}: {e}", path.display()))),
            }
        }
    }
}
