//! A trial: the pure verdict on a release on trial, from what its trial has seen (a
//! `state::Trial`), what the config asks for (`[trial]`) and the time now.
//!
//! A release is confirmed when every configured condition holds: the health command passed
//! (`health_command`), `ota confirm` came before the deadline (`confirm_within_sec`), and it
//! survived `boots` boots counted by `ota boot`. It fails as soon as one cannot hold any
//! more: the health command failed, the deadline passed without a confirmation, or a boot
//! beyond `boots` came while the trial still waited for something else. A failure recorded
//! in the trial (`Trial::failed`: an after-update action failed, `ota rollback`, or a
//! failure judged before a crash) stands whatever the config says now.
//!
//! Nothing here reads the clock or the disk: the updater records what happened in the
//! trial and asks for the verdict, and tests give `now` explicitly.

use std::time::{Duration, UNIX_EPOCH};

use crate::config::TrialConfig;
use crate::error::Error;
use crate::state::{Failure, FailureKind, Health, Rejected, ReleaseId, Trial};

/// Rejected releases remembered in `state.json` (the oldest are forgotten first).
const MAX_REJECTED: usize = 10;

/// What a trial has come to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every configured condition holds: the release is confirmed.
    Confirmed,
    /// Still waiting for these (never empty).
    Pending(Vec<Waiting>),
    /// The release must be rolled back.
    Failed(Failure),
}

/// What a pending trial waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// The health command's result (it runs after each update; an interrupted run is
    /// run again by the next `ota update`).
    Health,
    /// `ota confirm`, by `deadline` (seconds since the Unix epoch).
    Confirm {
        /// The deadline.
        deadline: u64,
    },
    /// More boots counted by `ota boot`.
    Boots {
        /// Boots counted so far.
        counted: u32,
        /// Boots needed (`[trial] boots`).
        needed: u32,
    },
}

impl Waiting {
    /// A stable name: `health`, `confirm`, `boots`.
    pub fn name(&self) -> &'static str {
        match self {
            Waiting::Health => "health",
            Waiting::Confirm { .. } => "confirm",
            Waiting::Boots { .. } => "boots",
        }
    }
}

impl std::fmt::Display for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Waiting::Health => {
                f.write_str("the result of the after-update actions and the health command")
            }
            Waiting::Confirm { deadline } => {
                write!(f, "`ota confirm` by {}", rfc3339(*deadline))
            }
            Waiting::Boots { counted, needed } => {
                write!(f, "{needed} boots counted by `ota boot` ({counted} so far)")
            }
        }
    }
}

/// A release failed its trial. Each message ends with why (the hook's output may follow on
/// further lines).
#[derive(Debug, thiserror::Error)]
pub enum TrialError {
    /// It was rolled back.
    #[error(
        "{} failed its trial and was rolled back: {} is installed again. {} is recorded as \
         rejected and is not installed again until the channel names another release or \
         `ota update --force` asks for it: fix it and publish a new release. Why ({}): {}",
        named(release), named(restored), release.ref_name, failure.kind.name(), failure.reason
    )]
    RolledBack {
        /// The release that failed.
        release: ReleaseId,
        /// Why.
        failure: Failure,
        /// The release installed again.
        restored: ReleaseId,
    },
    /// It failed, but nothing was kept to go back to (it was the first release installed).
    #[error(
        "{} failed its trial, but it is the first release ota installed here, so there is \
         nothing to roll back to: it stays installed and its trial has ended. Fix it and \
         publish a new release, which the next `ota update` installs. Why ({}): {}",
        named(release), failure.kind.name(), failure.reason
    )]
    NothingToRollBackTo {
        /// The release that failed.
        release: ReleaseId,
        /// Why.
        failure: Failure,
    },
    /// It failed, and rolling back failed too.
    #[error(
        "{} failed its trial ({}), and rolling back to {} failed: {cause}. {} stays \
         installed, recorded as failed: the next `ota update`, `ota boot`, `ota confirm` or \
         `ota rollback` tries the rollback again. Why it failed its trial: {}",
        named(release), failure.kind.name(), named(to), release.ref_name, failure.reason
    )]
    RollbackFailed {
        /// The release that failed.
        release: ReleaseId,
        /// Why.
        failure: Failure,
        /// The release it was to go back to.
        to: ReleaseId,
        /// What stopped the rollback.
        cause: Box<Error>,
    },
    /// `ota rollback` with nothing kept to go back to.
    #[error("there is nothing to roll back to: {0}")]
    NoRollbackPoint(String),
}

/// `v1.0.0 0123456789ab`.
pub(crate) fn named(release: &ReleaseId) -> String {
    format!("{} {}", release.ref_name, release.short())
}

/// The verdict on `trial` under `config` at `now` (seconds since the Unix epoch).
///
/// `actions`: whether `[after_update]` actions run after an update. Their result is awaited
/// like the health command's (one `health` result records both), so that a run interrupted
/// before them is retried rather than confirmed.
pub(crate) fn verdict(trial: &Trial, config: &TrialConfig, actions: bool, now: u64) -> Verdict {
    if let Some(failed) = &trial.failed {
        return Verdict::Failed(failed.clone());
    }
    let mut waiting = Vec::new();
    if config.health_command.is_some() || actions {
        match trial.health {
            Health::Passed => {}
            Health::Pending => waiting.push(Waiting::Health),
            Health::Failed => {
                return Verdict::Failed(Failure {
                    kind: FailureKind::HealthFailed,
                    reason: "the health command failed".into(),
                });
            }
        }
    }
    if let Some(within) = config.confirm_within
        && trial.confirmed_at.is_none()
    {
        let deadline = deadline(trial, within);
        if now > deadline {
            return Verdict::Failed(Failure {
                kind: FailureKind::NotConfirmed,
                reason: format!(
                    "`ota confirm` did not come within {} s of the update (by {})",
                    within.as_secs(),
                    rfc3339(deadline)
                ),
            });
        }
        waiting.push(Waiting::Confirm { deadline });
    }
    let needed = config.boots;
    if needed > 0 && trial.boots < needed {
        waiting.push(Waiting::Boots {
            counted: trial.boots,
            needed,
        });
    }
    if waiting.is_empty() {
        return Verdict::Confirmed;
    }
    if needed > 0 && trial.boots > needed {
        let what: Vec<String> = waiting.iter().map(ToString::to_string).collect();
        return Verdict::Failed(Failure {
            kind: FailureKind::TooManyBoots,
            reason: format!(
                "boot {} on trial, more than the {needed} it had to survive, and it still \
                 waited for {}",
                trial.boots,
                what.join(" and ")
            ),
        });
    }
    Verdict::Pending(waiting)
}

/// The rejected releases once `entry` is added: an older entry for the same release (same
/// ref and commit) is replaced, and only the last [`MAX_REJECTED`] are kept, oldest first.
pub(crate) fn remember(rejected: Vec<Rejected>, entry: Rejected) -> Vec<Rejected> {
    let same = |r: &Rejected| {
        r.release.ref_name == entry.release.ref_name && r.release.commit == entry.release.commit
    };
    let mut kept: Vec<Rejected> = rejected.into_iter().filter(|r| !same(r)).collect();
    kept.push(entry);
    let excess = kept.len().saturating_sub(MAX_REJECTED);
    kept.drain(..excess);
    kept
}

/// The confirmation deadline: the one recorded when the trial began, else (an older
/// state, or a config that asks for a confirmation only now) `confirm_within` after it began.
fn deadline(trial: &Trial, confirm_within: Duration) -> u64 {
    trial
        .deadline
        .unwrap_or_else(|| started(trial).saturating_add(confirm_within.as_secs()))
}

/// When the trial began, in seconds since the Unix epoch (0 if `since` does not parse:
/// then any deadline has passed, which fails safe).
pub(crate) fn started(trial: &Trial) -> u64 {
    humantime::parse_rfc3339(&trial.since)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// Unix seconds as RFC 3339 UTC.
pub(crate) fn rfc3339(unix: u64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs(unix);
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000;

    fn trial() -> Trial {
        Trial::begin(rfc3339(T0), T0, None, None)
    }

    fn config(health: bool, confirm: Option<u64>, boots: u32) -> TrialConfig {
        TrialConfig {
            health_command: health.then(|| "sh health.sh".into()),
            confirm_within: confirm.map(Duration::from_secs),
            boots,
            ..TrialConfig::default()
        }
    }

    fn failed_kind(v: Verdict) -> FailureKind {
        match v {
            Verdict::Failed(f) => f.kind,
            other => panic!("not failed: {other:?}"),
        }
    }

    #[test]
    fn nothing_configured_confirms_at_once() {
        assert_eq!(
            verdict(&trial(), &config(false, None, 0), false, T0),
            Verdict::Confirmed
        );
    }

    /// A run interrupted after the commit, before the after-update actions (a restart) ran,
    /// must not confirm the release: the next run retries them.
    #[test]
    fn after_update_actions_are_awaited_like_the_health_command() {
        let c = config(false, None, 0);
        let mut t = trial();
        assert_eq!(
            verdict(&t, &c, true, T0),
            Verdict::Pending(vec![Waiting::Health])
        );
        t.health = Health::Passed;
        assert_eq!(verdict(&t, &c, true, T0), Verdict::Confirmed);
    }

    #[test]
    fn health_decides_when_it_is_the_only_condition() {
        let c = config(true, None, 0);
        let mut t = trial();
        assert_eq!(
            verdict(&t, &c, false, T0),
            Verdict::Pending(vec![Waiting::Health])
        );
        t.health = Health::Passed;
        assert_eq!(verdict(&t, &c, false, T0 + 10_000), Verdict::Confirmed);
        t.health = Health::Failed;
        assert_eq!(
            failed_kind(verdict(&t, &c, false, T0)),
            FailureKind::HealthFailed
        );
    }

    #[test]
    fn a_confirmation_must_come_by_the_deadline() {
        let c = config(false, Some(60), 0);
        let t = Trial::begin(rfc3339(T0), T0, Some(Duration::from_secs(60)), None);
        let waiting = Verdict::Pending(vec![Waiting::Confirm { deadline: T0 + 60 }]);
        assert_eq!(verdict(&t, &c, false, T0), waiting);
        assert_eq!(
            verdict(&t, &c, false, T0 + 60),
            waiting,
            "the deadline itself is in time"
        );
        let late = verdict(&t, &c, false, T0 + 61);
        assert_eq!(failed_kind(late), FailureKind::NotConfirmed);
        let mut confirmed = t.clone();
        confirmed.confirmed_at = Some(rfc3339(T0 + 30));
        assert_eq!(
            verdict(&confirmed, &c, false, T0 + 1_000),
            Verdict::Confirmed
        );
    }

    #[test]
    fn a_trial_without_a_recorded_deadline_counts_from_its_start() {
        // An older state, or a config that asks for a confirmation only now.
        let c = config(false, Some(60), 0);
        let t = trial();
        assert_eq!(
            verdict(&t, &c, false, T0 + 5),
            Verdict::Pending(vec![Waiting::Confirm { deadline: T0 + 60 }])
        );
        assert_eq!(
            failed_kind(verdict(&t, &c, false, T0 + 61)),
            FailureKind::NotConfirmed
        );
        let mut garbled = t;
        garbled.since = "yesterday".into();
        assert_eq!(
            failed_kind(verdict(&garbled, &c, false, T0)),
            FailureKind::NotConfirmed
        );
    }

    #[test]
    fn boots_hold_at_the_count_and_fail_one_beyond_it() {
        let c = config(false, None, 2);
        let mut t = trial();
        t.boots = 1;
        let pending = Verdict::Pending(vec![Waiting::Boots {
            counted: 1,
            needed: 2,
        }]);
        assert_eq!(verdict(&t, &c, false, T0), pending);
        t.boots = 2;
        assert_eq!(verdict(&t, &c, false, T0), Verdict::Confirmed);

        // Still waiting for a confirmation at the third boot: too many.
        let c = config(false, Some(3600), 2);
        t.boots = 2;
        assert_eq!(
            verdict(&t, &c, false, T0),
            Verdict::Pending(vec![Waiting::Confirm {
                deadline: T0 + 3600
            }])
        );
        t.boots = 3;
        assert_eq!(
            failed_kind(verdict(&t, &c, false, T0)),
            FailureKind::TooManyBoots
        );
        t.confirmed_at = Some(rfc3339(T0));
        assert_eq!(verdict(&t, &c, false, T0), Verdict::Confirmed);
    }

    #[test]
    fn every_condition_must_hold() {
        let c = config(true, Some(100), 1);
        let mut t = Trial::begin(rfc3339(T0), T0, Some(Duration::from_secs(100)), None);
        assert_eq!(
            verdict(&t, &c, false, T0),
            Verdict::Pending(vec![
                Waiting::Health,
                Waiting::Confirm { deadline: T0 + 100 },
                Waiting::Boots {
                    counted: 0,
                    needed: 1
                },
            ])
        );
        t.health = Health::Passed;
        t.boots = 1;
        t.confirmed_at = Some(rfc3339(T0 + 1));
        assert_eq!(verdict(&t, &c, false, T0 + 5_000), Verdict::Confirmed);
    }

    #[test]
    fn a_recorded_failure_stands_whatever_the_config() {
        let mut t = trial();
        t.health = Health::Passed;
        t.failed = Some(Failure {
            kind: FailureKind::AfterUpdateFailed,
            reason: "restart app.service failed".into(),
        });
        assert_eq!(
            failed_kind(verdict(&t, &config(false, None, 0), false, T0)),
            FailureKind::AfterUpdateFailed
        );
    }

    #[test]
    fn the_last_ten_rejected_releases_are_remembered_once_each() {
        let entry = |n: u8| Rejected {
            release: ReleaseId::new(
                "stable",
                format!("v{n}"),
                crate::manifest::ObjectId::for_blob(&[n]),
            ),
            time: rfc3339(T0 + u64::from(n)),
            kind: "health_failed".into(),
            reason: String::new(),
        };
        let mut list = Vec::new();
        for n in 0..12 {
            list = remember(list, entry(n));
        }
        let names: Vec<&str> = list.iter().map(|r| r.release.ref_name.as_str()).collect();
        assert_eq!(
            names,
            ["v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9", "v10", "v11"]
        );
        let again = remember(list, entry(5));
        assert_eq!(again.len(), 10);
        assert_eq!(again.last().unwrap().release.ref_name, "v5");
        assert_eq!(
            again.iter().filter(|r| r.release.ref_name == "v5").count(),
            1
        );
    }

    #[test]
    fn an_older_trial_reads_with_defaults() {
        let old = r#"{"since": "2026-12-01T10:00:00Z"}"#;
        let t: Trial = serde_json::from_str(old).unwrap();
        assert_eq!((t.health, t.boots, t.deadline), (Health::Pending, 0, None));
        assert!(t.failed.is_none() && t.confirmed_at.is_none());
    }
}
