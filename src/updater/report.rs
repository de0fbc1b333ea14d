//! What a fleet owner sees from afar (`[report]`): after every command that checks or
//! changes, its requests and bytes are added to the counters in `metrics.json` and the
//! metrics file is rewritten from the state folder. A failure here only warns: it never
//! fails the command.

use std::sync::PoisonError;
use std::time::UNIX_EPOCH;

use super::{Check, Outcome, Report, TrialReport, UpdateOptions, Updater};
use crate::error::Error;
use crate::metrics::{self, Snapshot};
use crate::state::{Counters, unix_now};
use crate::transaction::Recovery;
use crate::trust::{self, Access};

impl Updater {
    /// Asks the source whether an update is available; changes nothing in the target.
    pub fn check(&self) -> Result<Check, Error> {
        let result = self.check_unmetered();
        let available = (result.as_ref().ok()).map(|c| matches!(c, Check::Available { .. }));
        self.report(result.is_ok(), available);
        result
    }

    /// Brings the target to the channel's current release; see [`UpdateOptions`] and
    /// [`Outcome`]. A release on trial is settled first; a new release committed is then
    /// tried (`[after_update]`, health command) and its verdict recorded (see
    /// [`Updater::confirm`]). A dry run writes nothing, not even the metrics.
    pub fn update(&self, options: UpdateOptions) -> Result<Outcome, Error> {
        if options.dry_run {
            return self.update_unmetered(options);
        }
        let result = self.update_unmetered(options);
        // After an update (or a skipped rejected release) nothing waits to be installed.
        let available = result.as_ref().ok().map(|_| false);
        self.report(result.is_ok(), available);
        result
    }

    /// Finishes or undoes an interrupted update. Without a state folder there is nothing
    /// to recover, and nothing is created.
    pub fn recover(&self) -> Result<Recovery, Error> {
        let result = self.recover_unmetered();
        self.report(result.is_ok(), None);
        result
    }

    /// Confirms the release on trial (`ota confirm`): the application says it works. In
    /// time, the confirmation is recorded, and the release is confirmed once every other
    /// condition of its trial holds too. After the deadline, the release is rolled back
    /// ([`Error::Trial`]). `Ok(None)`: no release is on trial.
    pub fn confirm(&self) -> Result<Option<TrialReport>, Error> {
        let result = self.confirm_unmetered();
        self.report(result.is_ok(), None);
        result
    }

    /// Counts a boot of the release on trial (`ota boot`, run once per boot before the
    /// application), then settles its trial (see `[trial] boots`). `Ok(None)`: no release
    /// is on trial.
    pub fn boot(&self) -> Result<Option<TrialReport>, Error> {
        let result = self.boot_unmetered();
        self.report(result.is_ok(), None);
        result
    }

    /// Goes back by hand (`ota rollback`) to the release kept while the installed one is on
    /// trial; the installed one is recorded as rejected (`by_hand`).
    pub fn rollback(&self) -> Result<Report, Error> {
        let result = self.rollback_unmetered();
        self.report(result.is_ok(), None);
        result
    }

    /// Adds what the source used since the last report to `metrics.json`, and rewrites
    /// `[report] metrics_file`. `available`: what the command learnt about an update.
    fn report(&self, succeeded: bool, available: Option<bool>) {
        let usage = {
            let mut metered = self.metered.lock().unwrap_or_else(PoisonError::into_inner);
            let now = self.source.usage();
            let since = now.since(&metered);
            *metered = now;
            since
        };
        let fs = &*self.fs;
        // Counters live only in a state folder that exists and is ota's; without one, the
        // metrics still show this command.
        let state = matches!(trust::open(self.dirs.root(), Access::Inspect), Ok(Some(_)));
        let mut counters = match state {
            true => self.dirs.read_counters(fs),
            false => Counters::default(),
        };
        // Two ota processes reporting at the same moment may lose one's figures: counters
        // are for watching, not billing.
        counters.requests = (counters.requests)
            .saturating_add(usage.api_requests)
            .saturating_add(usage.file_requests);
        counters.bytes = (counters.bytes)
            .saturating_add(usage.api_bytes)
            .saturating_add(usage.file_bytes);
        if succeeded {
            counters.last_success = Some(unix_now());
        }
        if let Some(available) = available {
            counters.update_available = available;
        }
        if state && let Err(e) = self.dirs.write_counters(fs, &counters) {
            tracing::warn!("could not save the metrics counters: {e}");
        }
        let Some(path) = &self.config.report.metrics_file else {
            return;
        };
        let (installed, cache, last_error) = match state {
            true => (
                self.dirs.read_installed(fs).ok().flatten(),
                self.dirs.read_cache(fs),
                self.dirs.read_last_error(fs).ok().flatten(),
            ),
            false => Default::default(),
        };
        let last_check = (cache.last_check.as_deref())
            .and_then(|time| humantime::parse_rfc3339(time).ok())
            .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
            .map(|since| since.as_secs());
        let text = metrics::render(&Snapshot {
            installed: installed.as_ref(),
            counters: &counters,
            last_check,
            consecutive_failures: last_error.map_or(0, |e| e.consecutive),
            rate_limit_remaining: cache.quota.and_then(|q| q.remaining),
        });
        if let Err(e) = metrics::write(path, &text) {
            tracing::warn!(
                "could not write the metrics file {}: {e}; check that its folder exists and \
                 is writable (`[report] metrics_file`)",
                path.display()
            );
        }
    }
}
