//! The trial of a release, run: the after-update actions and the health command after an
//! update, `ota confirm`, `ota boot`, `ota rollback`, and the rollback of a release whose
//! trial failed. The verdict itself is `crate::trial`'s, a pure function of what the trial
//! has seen (recorded in `state.json`), the config and the time.
//!
//! A rollback is an update like any other: a plan from the files installed now to the
//! rollback point's manifest, staged (from the target, the kept previous files or the
//! network) and applied by one journaled transaction, whose `state.json` names the restored
//! release and records the failed one as rejected. The failure is written to `state.json`
//! before the rollback starts, so a rollback interrupted by a crash is undone by recovery
//! and then started again by the next command.

use crate::error::{Error, TrialError};
use crate::hooks::{self, HookEnv, HookError, Phase};
use crate::limits;
use crate::plan::Plan;
use crate::state::{Failure, FailureKind, Health, Installed, Rejected, ReleaseId, STATE_FORMAT};
use crate::state::{now_rfc3339, unix_now};
use crate::transaction::{self, Recovery};
use crate::trial::{self as verdicts, Verdict, Waiting};

use super::{Operation, Outcome, Report, TRIAL_LOCK_PATIENCE, UpdateReason, Updater};

/// Slack added to the time the after-update actions and the health command may take, before
/// a trial whose health result is missing counts as interrupted (its health command is run
/// again) rather than under way in another ota process.
const HEALTH_SLACK_SEC: u64 = 60;

/// The trial of one release, as `ota confirm` and `ota boot` leave it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrialReport {
    /// The release on trial.
    pub release: ReleaseId,
    /// Its verdict now: confirmed, or what it still waits for (a failed trial is rolled
    /// back and reported as [`Error::Trial`] instead).
    pub verdict: Verdict,
}

/// What an update does once the lock is released.
pub(super) enum Next {
    /// Nothing: the outcome is final.
    Done(Outcome),
    /// Try the release committed by transaction `txid`: the after-update actions (if
    /// `actions`) and the health command, then record the verdict.
    Try {
        outcome: Outcome,
        txid: String,
        actions: bool,
    },
}

/// What running the commands of a trial gave (`None`: not run).
#[derive(Default)]
struct Tried {
    after_update: Option<Result<(), HookError>>,
    health: Option<Result<(), HookError>>,
}

impl Updater {
    /// Confirms the release on trial (`ota confirm`): the application says it works. In
    /// time, the confirmation is recorded, and the release is confirmed once every other
    /// condition of its trial holds too. After the deadline, the release is rolled back
    /// ([`Error::Trial`]). `Ok(None)`: no release is on trial.
    pub(super) fn confirm_unmetered(&self) -> Result<Option<TrialReport>, Error> {
        if !self.exists(self.dirs.root()) {
            return Ok(None);
        }
        let op = self.begin();
        let lock = self.prepare_with(false, TRIAL_LOCK_PATIENCE)?;
        let result = (|| {
            self.check_folders()?;
            self.recover_locked()?;
            let Some(mut installed) = self.installed_if_any()? else {
                return Ok(None);
            };
            let Some(trial) = installed.trial.as_mut() else {
                return Ok(None);
            };
            // A confirmation counts only while the trial can still succeed: a late one
            // finds it failed.
            let now = unix_now();
            if !matches!(self.verdict(trial, now), Verdict::Failed(_)) {
                trial.confirmed_at.get_or_insert_with(now_rfc3339);
            }
            let release = installed.release.clone();
            let verdict = self.settle_locked(&op, installed, true)?;
            Ok(Some(TrialReport { release, verdict }))
        })();
        let result = self.record(result, false);
        drop(lock);
        self.after_rollback(&result);
        result
    }

    /// Counts a boot of the release on trial (`ota boot`, run once per boot before the
    /// application), then settles its trial: with `[trial] boots = N`, the boot condition
    /// holds at the N-th boot, and one more boot while the trial still waits rolls the
    /// release back ([`Error::Trial`]). Never runs after-update actions (the application
    /// has not started yet). `Ok(None)`: no release is on trial.
    pub(super) fn boot_unmetered(&self) -> Result<Option<TrialReport>, Error> {
        if !self.exists(self.dirs.root()) {
            return Ok(None);
        }
        let op = self.begin();
        let lock = self.prepare_with(false, TRIAL_LOCK_PATIENCE)?;
        let result = (|| {
            self.check_folders()?;
            self.recover_locked()?;
            let Some(mut installed) = self.installed_if_any()? else {
                return Ok(None);
            };
            let Some(trial) = installed.trial.as_mut() else {
                return Ok(None);
            };
            trial.boots = trial.boots.saturating_add(1);
            tracing::info!(
                "boot {} of {} on trial",
                trial.boots,
                verdicts::named(&installed.release)
            );
            let release = installed.release.clone();
            let verdict = self.settle_locked(&op, installed, true)?;
            Ok(Some(TrialReport { release, verdict }))
        })();
        let result = self.record(result, false);
        drop(lock);
        result
    }

    /// Goes back by hand (`ota rollback`) to the release kept while the installed one is on
    /// trial; the installed one is recorded as rejected (`by_hand`). Then runs the
    /// after-update actions for the restored release. With nothing kept (no trial, or a
    /// first install), an error says why and changes nothing.
    pub(super) fn rollback_unmetered(&self) -> Result<Report, Error> {
        if !self.exists(self.dirs.root()) {
            return Err(TrialError::NoRollbackPoint("nothing is installed here yet".into()).into());
        }
        let op = self.begin();
        let lock = self.prepare(false)?;
        let result = (|| {
            self.check_folders()?;
            self.recover_locked()?;
            let nothing = |why: String| Err(TrialError::NoRollbackPoint(why).into());
            let Some(installed) = self.installed_if_any()? else {
                return nothing("nothing is installed here yet".into());
            };
            let name = verdicts::named(&installed.release);
            let Some(trial) = &installed.trial else {
                return nothing(format!(
                    "{name} is confirmed, and ota keeps the previous release only while a new \
                     one is on trial. To go back, publish the older files as a new release, or \
                     pin the older one with `tag` in the config"
                ));
            };
            if trial.rollback_to.is_none() {
                return nothing(format!(
                    "{name} is the first release ota installed here: there is no previous \
                     release to go back to"
                ));
            }
            let failure = Failure {
                kind: FailureKind::ByHand,
                reason: "rolled back by hand (`ota rollback`)".into(),
            };
            Ok((installed, failure))
        })()
        .and_then(|(installed, failure)| self.roll_back(&op, installed, failure));
        let result = self.record(result, true);
        drop(lock);
        if let Ok(report) = &result {
            self.run_after_rollback(&report.to, report.from.as_ref());
        }
        result
    }

    /// Settles the trial of the installed release before an update asks the network
    /// anything: a failed one (or one past its deadline) is rolled back (the error), a
    /// confirmed one recorded. When its health result is missing because the run that
    /// should have recorded it was interrupted, returns the retry of its after-update
    /// actions and health command.
    pub(super) fn settle_before_update(
        &self,
        op: &Operation,
        recovery: &Recovery,
    ) -> Result<Option<Next>, Error> {
        let Some(mut installed) = self.installed_if_any()? else {
            return Ok(None);
        };
        let Some(trial) = installed.trial.as_mut() else {
            return Ok(None);
        };
        let now = unix_now();
        match self.verdict(trial, now) {
            Verdict::Pending(waiting) if waiting.contains(&Waiting::Health) => {
                let started = trial.tried_at.unwrap_or_else(|| verdicts::started(trial));
                if now <= started.saturating_add(self.health_window()) {
                    // Another ota process may be running them right now.
                    return Ok(None);
                }
                trial.tried_at = Some(now);
                self.dirs.write_installed(&*self.fs, &installed)?;
                // The run that should have recorded it was interrupted, maybe before the
                // after-update actions (a restart): run those again too.
                tracing::warn!(
                    "the health command of {} never reported (ota was interrupted after the \
                     update): running the after-update actions and the health command again",
                    verdicts::named(&installed.release)
                );
                let mut report = Report::about(&installed.release, recovery.clone());
                self.finish(op, &mut report);
                Ok(Some(Next::Try {
                    outcome: Outcome::Retried(report),
                    txid: installed.txid,
                    actions: true,
                }))
            }
            Verdict::Pending(_) => Ok(None),
            Verdict::Confirmed | Verdict::Failed(_) => {
                self.settle_locked(op, installed, false)?;
                Ok(None)
            }
        }
    }

    /// The transaction id of the installed release, when it is on trial.
    pub(super) fn trial_txid(&self) -> Result<Option<String>, Error> {
        let installed = self.installed_if_any()?;
        Ok(installed.filter(|i| i.trial.is_some()).map(|i| i.txid))
    }

    /// After an update committed (the lock released): runs the after-update actions (if
    /// `actions`) and the health command, takes the lock again and records the verdict.
    pub(super) fn try_release(
        &self,
        op: &Operation,
        mut outcome: Outcome,
        txid: &str,
        actions: bool,
    ) -> Result<Outcome, Error> {
        let report = outcome.report();
        let (release, previous) = (report.to.clone(), report.from.clone());
        let mut tried = Tried::default();
        if actions {
            let env = self.hook_env(&release, previous.as_ref(), Phase::AfterUpdate);
            tried.after_update = Some(hooks::after_update(&self.config.after_update, &env));
        }
        let actions_failed = matches!(tried.after_update, Some(Err(_)));
        if let Some(command) = self.config.trial.health_command.as_deref()
            && !actions_failed
        {
            let env = self.hook_env(&release, previous.as_ref(), Phase::Health);
            tried.health = Some(hooks::run(command, self.config.trial.health_timeout, &env));
        }
        let lock = self.prepare_with(false, TRIAL_LOCK_PATIENCE)?;
        let verdict = (|| {
            self.check_folders()?;
            self.recover_locked()?;
            self.judge(op, txid, tried)
        })();
        let verdict = self.record(verdict, true);
        drop(lock);
        let report = outcome.report_mut();
        report.trial = verdict?;
        self.finish(op, report);
        Ok(outcome)
    }

    /// Records what trying the release of transaction `txid` gave, and settles its trial.
    /// `None` when another ota process replaced that release meanwhile.
    fn judge(&self, op: &Operation, txid: &str, tried: Tried) -> Result<Option<Verdict>, Error> {
        let Some(mut installed) = self.installed_if_any()? else {
            return Ok(None);
        };
        if installed.txid != txid {
            tracing::warn!(
                "another ota process changed the installed release while this one tried it: \
                 {} is installed now",
                verdicts::named(&installed.release)
            );
            return Ok(None);
        }
        let Some(trial) = installed.trial.as_mut() else {
            // Confirmed meanwhile (by `ota confirm`).
            return Ok(Some(Verdict::Confirmed));
        };
        let changed = tried.after_update.is_some() || tried.health.is_some();
        let actions_passed = matches!(tried.after_update, Some(Ok(())));
        if let Some(Err(e)) = tried.after_update {
            trial.failed.get_or_insert(Failure {
                kind: FailureKind::AfterUpdateFailed,
                reason: e.to_string(),
            });
        }
        match tried.health {
            Some(Ok(())) => trial.health = Health::Passed,
            // No health command: the after-update actions' success is the try's result.
            None if actions_passed
                && !self.config.after_update.is_empty()
                && self.config.trial.health_command.is_none() =>
            {
                trial.health = Health::Passed
            }
            Some(Err(e)) => {
                trial.health = Health::Failed;
                trial.failed.get_or_insert(Failure {
                    kind: FailureKind::HealthFailed,
                    reason: e.to_string(),
                });
            }
            None => {}
        }
        self.settle_locked(op, installed, changed).map(Some)
    }

    /// Judges the trial of `installed` now, and acts on the verdict: confirmed → the trial
    /// ends (`state.json` rewritten); pending → `state.json` rewritten if `changed`; failed →
    /// rolled back (the error). Holds the lock.
    fn settle_locked(
        &self,
        op: &Operation,
        mut installed: Installed,
        changed: bool,
    ) -> Result<Verdict, Error> {
        let Some(trial) = &installed.trial else {
            return Ok(Verdict::Confirmed);
        };
        let verdict = self.verdict(trial, unix_now());
        match &verdict {
            Verdict::Confirmed => {
                installed.trial = None;
                self.dirs.write_installed(&*self.fs, &installed)?;
                self.sweep_previous();
                tracing::info!(
                    "{} passed its trial: confirmed",
                    verdicts::named(&installed.release)
                );
            }
            Verdict::Pending(_) if changed => self.dirs.write_installed(&*self.fs, &installed)?,
            Verdict::Pending(_) => {}
            Verdict::Failed(failure) => {
                let failure = failure.clone();
                let release = installed.release.clone();
                if installed
                    .trial
                    .as_ref()
                    .and_then(|t| t.rollback_to.as_ref())
                    .is_none()
                {
                    // Nothing to go back to: the trial ends, the release stays.
                    installed.trial = None;
                    self.dirs.write_installed(&*self.fs, &installed)?;
                    self.sweep_previous();
                    return Err(TrialError::NothingToRollBackTo { release, failure }.into());
                }
                let report = self.roll_back(op, installed, failure.clone())?;
                return Err(TrialError::RolledBack {
                    release,
                    failure,
                    restored: report.to,
                }
                .into());
            }
        }
        Ok(verdict)
    }

    /// Rolls `installed` back to its trial's rollback point, for `failure`: the failure is
    /// recorded first (durably), then one transaction installs the rollback point's files
    /// and a `state.json` that names it and records `installed` as rejected. Holds the lock.
    fn roll_back(
        &self,
        op: &Operation,
        mut installed: Installed,
        failure: Failure,
    ) -> Result<Report, Error> {
        let release = installed.release.clone();
        let Some(trial) = installed.trial.as_mut() else {
            return Err(TrialError::NoRollbackPoint("no release is on trial".into()).into());
        };
        let Some(point) = trial.rollback_to.clone() else {
            return Err(TrialError::NoRollbackPoint(format!(
                "{} is the first release ota installed here",
                verdicts::named(&release)
            ))
            .into());
        };
        if trial.failed.is_none() {
            trial.failed = Some(failure.clone());
            self.dirs.write_installed(&*self.fs, &installed)?;
        }
        tracing::warn!(
            "{} failed its trial ({}): rolling back to {}. Why: {}",
            verdicts::named(&release),
            failure.kind.name(),
            verdicts::named(&point.release),
            failure.reason,
        );
        let to = point.release.clone();
        let cause = match self.install_rollback_point(op, installed, *point, failure.clone()) {
            Ok(report) => return Ok(report),
            Err(cause) => Box::new(cause),
        };
        Err(TrialError::RollbackFailed {
            release,
            failure,
            to,
            cause,
        }
        .into())
    }

    /// The transaction of a rollback: from the files of `installed` to those of `point`.
    fn install_rollback_point(
        &self,
        op: &Operation,
        installed: Installed,
        point: crate::state::RollbackPoint,
        failure: Failure,
    ) -> Result<Report, Error> {
        let usage_before = self.source.usage();
        let owned = self.owned(Some(&installed))?;
        let target = point.files;
        let (links, plan) = self.plan_to(&owned, &target, &point.release.commit, false, None)?;
        let rejected = Rejected {
            release: installed.release.clone(),
            time: now_rfc3339(),
            kind: failure.kind.name().into(),
            reason: failure.reason,
        };
        let rejected = verdicts::remember(installed.rejected, rejected);
        let mut report = Report::about(&point.release, Recovery::Clean);
        report.from = Some(installed.release);
        report.reason = Some(UpdateReason::Rollback);
        report.plan = plan;
        let new_state = Installed {
            format: STATE_FORMAT,
            txid: String::new(),
            release: point.release,
            source: point.source,
            filter: point.filter,
            installed_at: now_rfc3339(),
            previous: point.previous,
            files: target,
            trial: None,
            rejected,
        };
        // The restored release is not on trial: nothing it displaces is kept.
        let ops = report.plan.ops(None);
        limits::check_commit(&new_state, &ops)?;
        self.apply(&mut report, new_state, ops, &links, false)?;
        self.finish(op, &mut report);
        // The figures of the rollback alone, not of the update that led to it.
        report.usage = self.source.usage().since(&usage_before);
        tracing::warn!(
            "rolled back to {}: {} files downloaded, {} staged from local copies, {} requests",
            verdicts::named(&report.to),
            report.downloaded,
            report.copied,
            report.usage.api_requests + report.usage.file_requests
        );
        Ok(report)
    }

    /// After a rollback reported as `result`'s error: the after-update actions for the
    /// restored release (failures only warned: there is nothing older to go back to), then
    /// the reboot if configured.
    pub(super) fn after_rollback<T>(&self, result: &Result<T, Error>) {
        if let Err(Error::Trial(e)) = result
            && let TrialError::RolledBack {
                release, restored, ..
            } = &**e
        {
            self.run_after_rollback(restored, Some(release));
        }
    }

    /// The after-update actions for `restored`, which replaced `failed`, then the reboot.
    fn run_after_rollback(&self, restored: &ReleaseId, failed: Option<&ReleaseId>) {
        let env = self.hook_env(restored, failed, Phase::AfterRollback);
        if let Err(e) = hooks::after_update(&self.config.after_update, &env) {
            tracing::warn!("after rolling back to {}: {e}", verdicts::named(restored));
        }
        self.reboot_if_asked(restored);
    }

    /// `systemctl reboot` when `[after_update] reboot = true`: the very last step, once the
    /// state is durable.
    pub(super) fn reboot_if_asked(&self, release: &ReleaseId) {
        if !self.config.after_update.reboot {
            return;
        }
        let env = self.hook_env(release, None, Phase::AfterUpdate);
        if let Err(e) = hooks::reboot(self.config.after_update.timeout, &env) {
            tracing::warn!(
                "rebooting after installing {}: {e}",
                verdicts::named(release)
            );
        }
    }

    /// The environment of a hook about `release`.
    pub(super) fn hook_env<'a>(
        &'a self,
        release: &'a ReleaseId,
        previous: Option<&'a ReleaseId>,
        phase: Phase,
    ) -> HookEnv<'a> {
        HookEnv {
            target: &self.config.target_dir,
            state_dir: self.dirs.root(),
            release,
            previous,
            phase,
        }
    }

    /// How long after an update its health command may still be running in the ota
    /// process that made it.
    fn health_window(&self) -> u64 {
        let after = &self.config.after_update;
        // The command, a `post_update` command, then one `systemctl restart` for all units.
        let runs = u64::from(after.command.is_some())
            + u64::from(!after.post_update.is_empty())
            + u64::from(!after.restart.is_empty());
        let health = self.config.trial.health_timeout.as_secs();
        (after.timeout.as_secs().saturating_mul(runs))
            .saturating_add(health)
            .saturating_add(HEALTH_SLACK_SEC)
    }

    /// The verdict on `trial` at `now` under this config.
    fn verdict(&self, trial: &crate::state::Trial, now: u64) -> Verdict {
        let actions = !self.config.after_update.is_empty();
        verdicts::verdict(trial, &self.config.trial, actions, now)
    }

    /// The verdict on the trial of `installed` now, if it is on trial.
    pub(super) fn verdict_now(&self, installed: Option<&Installed>) -> Option<Verdict> {
        let trial = installed?.trial.as_ref()?;
        Some(self.verdict(trial, unix_now()))
    }

    /// Removes the kept files no trial needs any more, once `state.json` ended a trial
    /// (a failure only costs space until the next command's recovery sweeps again).
    fn sweep_previous(&self) {
        if let Err(e) = transaction::sweep_previous(&*self.fs, &self.dirs) {
            tracing::warn!("removing the files kept for the trial: {e}");
        }
    }

    /// Bytes kept in the state folder's `previous/` (the rollback point's files).
    pub(super) fn previous_bytes(&self) -> u64 {
        let objects = transaction::previous_objects(&*self.fs, &self.dirs).unwrap_or_default();
        objects.values().map(|meta| meta.len).sum()
    }
}

impl Report {
    /// An empty report about `release`, installed already.
    fn about(release: &ReleaseId, recovery: Recovery) -> Report {
        Report {
            from: Some(release.clone()),
            to: release.clone(),
            reason: None,
            plan: Plan::default(),
            downloaded: 0,
            copied: 0,
            usage: Default::default(),
            elapsed: Default::default(),
            warnings: Vec::new(),
            recovery,
            kept: Vec::new(),
            trial: None,
        }
    }
}
