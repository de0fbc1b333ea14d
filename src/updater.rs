//! The pipeline, run: recover → resolve → manifest → survey → plan → fetch → apply → state.
//!
//! [`Updater`] is what the CLI (and any program embedding ota) calls. Each command that
//! changes the target takes the lock and runs recovery first; every failure is recorded in
//! `last_error.json`, and every success clears it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::{Channel, Config, SourceConfig};
use crate::error::Error;
use crate::fetch::{Fetcher, Progress, ProgressFn};
use crate::fs::{FileKind, Fs, RealFs};
use crate::http::{Quota, Usage};
use crate::manifest::{self, Manifest, RelPath};
use crate::plan::{self, Action, Plan};
use crate::source::Source;
use crate::source::github::GitHub;
use crate::state::{Cache, Installed, LastError, ReleaseId, STATE_FORMAT, StateDir, now_rfc3339};
use crate::survey;
use crate::transaction::{self, Journal, Recovery, Transaction};

/// How to run an update.
#[derive(Clone, Copy, Debug, Default)]
pub struct UpdateOptions {
    /// Reinstall even when up to date, and verify every file's content on disk.
    pub force: bool,
    /// Decide and report the plan, change nothing.
    pub dry_run: bool,
}

/// What `ota check` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// The installed release is the channel's current one.
    UpToDate(ReleaseId),
    /// A different release is available.
    Available {
        /// What is installed, if anything.
        installed: Option<ReleaseId>,
        /// What the channel points at.
        available: ReleaseId,
    },
}

/// What `ota update` did.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Nothing to do.
    UpToDate(Report),
    /// `--dry-run`: the plan, not applied.
    Planned(Report),
    /// The new release is installed.
    Updated(Report),
}

impl Outcome {
    /// The report, whatever happened.
    pub fn report(&self) -> &Report {
        match self {
            Outcome::UpToDate(r) | Outcome::Planned(r) | Outcome::Updated(r) => r,
        }
    }
}

/// Figures of one update run.
#[derive(Clone, Debug)]
pub struct Report {
    /// What was installed before.
    pub from: Option<ReleaseId>,
    /// What the channel points at.
    pub to: ReleaseId,
    /// The plan (empty when up to date).
    pub plan: Plan,
    /// Files downloaded / copied locally.
    pub downloaded: usize,
    /// Files staged from local content.
    pub copied: usize,
    /// Requests and bytes.
    pub usage: Usage,
    /// Wall time.
    pub elapsed: Duration,
    /// Warnings from the release (skipped submodules…) and the plan.
    pub warnings: Vec<String>,
    /// What recovery did first.
    pub recovery: Recovery,
}

/// What `ota status` shows.
#[derive(Clone, Debug)]
pub struct Status {
    /// The target directory.
    pub target: PathBuf,
    /// The installed release and files, if any.
    pub installed: Option<Installed>,
    /// An interrupted update waiting for recovery.
    pub pending: Option<Journal>,
    /// The last failure, if not cleared by a success since.
    pub last_error: Option<LastError>,
    /// What the last check saw (time, rate-limit quota).
    pub cache: Cache,
}

/// Runs ota's commands for one configuration.
pub struct Updater {
    config: Config,
    fs: Box<dyn Fs>,
    source: Box<dyn Source>,
    dirs: StateDir,
    reserved: Vec<RelPath>,
    progress: Option<Box<ProgressFn>>,
}

impl Updater {
    /// An updater for `config` with the real filesystem and the configured source.
    pub fn new(config: Config) -> Updater {
        let source: Box<dyn Source> = match &config.source {
            SourceConfig::Github(github) => {
                Box::new(GitHub::new(github, &config.network).with_limits(&config.limits))
            }
        };
        Updater::with_parts(config, source, Box::new(RealFs))
    }

    /// An updater with a given source and filesystem (tests, simulations).
    pub fn with_parts(config: Config, source: Box<dyn Source>, fs: Box<dyn Fs>) -> Updater {
        let dirs = StateDir::new(config.state_dir.clone());
        let mut reserved = vec![RelPath::new(".ota", &[]).expect("valid literal")];
        if let Ok(inside) = config.state_dir.strip_prefix(&config.target_dir)
            && let Some(rel) = inside.to_str().and_then(|s| RelPath::new(s, &[]).ok())
            && !reserved.contains(&rel)
        {
            reserved.push(rel);
        }
        Updater {
            config,
            fs,
            source,
            dirs,
            reserved,
            progress: None,
        }
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

    /// Requests and bytes used so far by this updater.
    pub fn usage(&self) -> Usage {
        self.source.usage()
    }

    /// The last rate-limit state the source reported.
    pub fn quota(&self) -> Quota {
        self.source.quota()
    }

    /// Asks the source whether an update is available; changes nothing.
    pub fn check(&self) -> Result<Check, Error> {
        self.recorded(|| {
            let installed = self.installed_if_any()?;
            let available = self.resolve(installed.as_ref(), false)?;
            Ok(match installed {
                Some(i) if self.is_current(&i, &available) => Check::UpToDate(available),
                other => Check::Available {
                    installed: other.map(|i| i.release),
                    available,
                },
            })
        })
    }

    /// Brings the target to the channel's current release; see [`UpdateOptions`].
    pub fn update(&self, options: UpdateOptions) -> Result<Outcome, Error> {
        self.recorded(|| {
            let started = Instant::now();
            let _lock = self.prepare()?;
            let recovery = self.recover_locked()?;
            let installed = self.dirs.read_installed(&*self.fs)?;
            let to = self.resolve(installed.as_ref(), options.force)?;
            let from = installed.as_ref().map(|i| i.release.clone());
            let mut report = Report {
                from,
                to,
                plan: Plan::default(),
                downloaded: 0,
                copied: 0,
                usage: Usage::default(),
                elapsed: Duration::ZERO,
                warnings: Vec::new(),
                recovery,
            };
            if let Some(i) = &installed
                && self.is_current(i, &report.to)
                && !options.force
            {
                report.usage = self.source.usage();
                report.elapsed = started.elapsed();
                return Ok(Outcome::UpToDate(report));
            }
            let tree = self.source.tree(&report.to.commit)?;
            let (target, warnings) =
                manifest::from_tree(tree, &self.config.filter, &self.reserved)?;
            report.warnings = warnings;
            let owned = installed
                .as_ref()
                .map(|i| i.files.clone())
                .unwrap_or_default();
            let root = &self.config.target_dir;
            let facts = survey::survey(&*self.fs, root, &owned, &target, options.force)?;
            report.plan = plan::plan(&owned, &target, &facts)?;
            report.warnings.extend(report.plan.warnings.iter().cloned());
            if options.dry_run {
                report.usage = self.source.usage();
                report.elapsed = started.elapsed();
                return Ok(Outcome::Planned(report));
            }
            self.apply(&mut report, target, installed)?;
            report.usage = self.source.usage();
            report.elapsed = started.elapsed();
            Ok(Outcome::Updated(report))
        })
    }

    /// Asks the source what the channel names now: conditionally when `cache.json` holds a
    /// validator for it, and reusing the installed release's commit when its tag is still
    /// current, unless `fresh`. Remembers the new validator, the rate-limit quota and the
    /// time of the check.
    fn resolve(&self, installed: Option<&Installed>, fresh: bool) -> Result<ReleaseId, Error> {
        let fs = &*self.fs;
        let mut cache = self.dirs.read_cache(fs);
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
        if matches!(fs.metadata(self.dirs.root()), Ok(Some(_)))
            && let Err(e) = self.dirs.write_cache(fs, &cache)
        {
            tracing::warn!("could not save {}: {e}", self.dirs.cache_file().display());
        }
        Ok(result?.release)
    }

    /// Fetches into a new transaction and commits it.
    fn apply(
        &self,
        report: &mut Report,
        target: Manifest,
        installed: Option<Installed>,
    ) -> Result<(), Error> {
        let root = &self.config.target_dir;
        let tx = Transaction::begin(&*self.fs, root, &self.dirs).map_err(Error::Apply)?;
        let fetcher = Fetcher {
            source: &*self.source,
            fs: &*self.fs,
            target: root,
            commit: report.to.commit,
            manifest: &target,
            net: &self.config.network,
            progress: self.progress.as_deref(),
        };
        let fetched = match fetcher.fetch(&report.plan, &|slot| tx.stage_path(slot)) {
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
        let new_state = Installed {
            format: STATE_FORMAT,
            txid: String::new(),
            release: report.to.clone(),
            source: self.source.name(),
            filter: self.config.filter.fingerprint(),
            installed_at: now_rfc3339(),
            previous: installed.map(|i| i.release),
            files: target,
        };
        tx.commit(report.plan.ops(), new_state)
            .map_err(Error::Apply)?;
        tracing::info!(
            "installed {} {} ({}): {} added, {} replaced, {} deleted",
            report.to.ref_name,
            short(&report.to),
            report.to.channel,
            report.plan.count(Action::Add),
            report.plan.count(Action::Replace),
            report.plan.count(Action::Delete),
        );
        Ok(())
    }

    /// Finishes or undoes an interrupted update.
    pub fn recover(&self) -> Result<Recovery, Error> {
        self.recorded(|| {
            let _lock = self.prepare()?;
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
                short(r)
            ),
            Recovery::RolledBack(r) => tracing::warn!(
                "rolled back an interrupted update to {} {}: the previous files are restored",
                r.ref_name,
                short(r)
            ),
        }
        Ok(outcome)
    }

    /// What is installed and what went wrong last; changes nothing.
    pub fn status(&self) -> Result<Status, Error> {
        let fs = &*self.fs;
        let exists = fs
            .metadata(self.dirs.root())
            .map_err(|e| Error::Setup(format!("cannot read {}: {e}", self.dirs.root().display())))?
            .is_some();
        if !exists {
            return Ok(Status {
                target: self.config.target_dir.clone(),
                installed: None,
                pending: None,
                last_error: None,
                cache: Cache::default(),
            });
        }
        Ok(Status {
            target: self.config.target_dir.clone(),
            installed: self.dirs.read_installed(fs)?,
            pending: transaction::pending(fs, &self.config.target_dir, &self.dirs)
                .map_err(Error::Recover)?,
            last_error: self.dirs.read_last_error(fs)?,
            cache: self.dirs.read_cache(fs),
        })
    }

    /// Whether `installed` is exactly what the channel now names, installed from this
    /// source with this filter.
    fn is_current(&self, installed: &Installed, available: &ReleaseId) -> bool {
        installed.release == *available
            && installed.source == self.source.name()
            && installed.filter == self.config.filter.fingerprint()
            && self.channel_matches(&installed.release)
    }

    fn channel_matches(&self, release: &ReleaseId) -> bool {
        match &self.config.channel {
            Channel::Stable { .. } => release.channel == "stable",
            Channel::Developer { branch } => {
                release.channel == "developer" && release.ref_name == *branch
            }
        }
    }

    fn installed_if_any(&self) -> Result<Option<Installed>, Error> {
        match self.fs.metadata(&self.dirs.state_file()) {
            Ok(Some(_)) => Ok(self.dirs.read_installed(&*self.fs)?),
            _ => Ok(None),
        }
    }

    /// Creates the target and state folders if needed, checks they share a filesystem,
    /// and takes the lock.
    fn prepare(&self) -> Result<Lock, Error> {
        let target = &self.config.target_dir;
        let state = self.dirs.root();
        for dir in [target.as_path(), state] {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Setup(format!("cannot create {}: {e}", dir.display())))?;
        }
        let meta = |p: &Path| {
            self.fs
                .metadata(p)
                .map_err(|e| Error::Setup(format!("cannot read {}: {e}", p.display())))
        };
        let (Some(t), Some(s)) = (meta(target)?, meta(state)?) else {
            return Err(Error::Setup("the target or state folder vanished".into()));
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
        Lock::take(&self.dirs.lock_file())
    }

    /// Runs `work`, recording a failure in `last_error.json` and clearing it on success.
    fn recorded<T>(&self, work: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        let result = work();
        let fs = &*self.fs;
        let state_exists = matches!(fs.metadata(self.dirs.root()), Ok(Some(_)));
        if !state_exists {
            return result;
        }
        let recorded = match &result {
            Ok(_) => self.dirs.clear_last_error(fs),
            Err(Error::Busy(_)) => Ok(()),
            Err(e) => {
                let time = now_rfc3339();
                let before = self.dirs.read_last_error(fs).ok().flatten();
                self.dirs.write_last_error(
                    fs,
                    &LastError {
                        phase: e.phase().into(),
                        kind: e.kind().into(),
                        message: e.to_string(),
                        consecutive: before
                            .as_ref()
                            .map_or(1, |b| b.consecutive.saturating_add(1)),
                        since: Some(before.and_then(|b| b.since).unwrap_or_else(|| time.clone())),
                        time,
                    },
                )
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

/// How long to wait for the lock before reporting another ota process at work.
const LOCK_PATIENCE: Duration = Duration::from_secs(2);

/// An exclusive `flock` on the state folder's lock file, released on drop.
struct Lock {
    _file: File,
}

impl Lock {
    fn take(path: &Path) -> Result<Lock, Error> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| Error::Setup(format!("cannot open {}: {e}", path.display())))?;
        // A lock can be held for a moment by a process that is not ota at all: a child forked
        // by a program that embeds ota keeps the descriptor until it execs. Wait that out.
        let patience = Instant::now() + LOCK_PATIENCE;
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

/// The first 12 hex digits of a release's commit.
pub fn short(release: &ReleaseId) -> String {
    release.commit.to_hex()[..12].to_owned()
}
