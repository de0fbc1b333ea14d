//! What the commands print on stdout: short text for people, `--json` for machines.
//!
//! Every write is checked: a full disk or a closed pipe is an error returned to the caller,
//! never a panic (which `println!` would be). Warnings and errors go to the log (stderr).

use std::io::{self, Write};

use ota::{
    Action, Check, Origin, Outcome, Recovery, Rejected, ReleaseId, Report, Status, Transfer,
    TrialReport, UpdateReason, Verdict, Waiting,
};
use serde_json::json;

/// Standard output, locked for one command's result.
fn stdout() -> io::StdoutLock<'static> {
    io::stdout().lock()
}

/// Writes `value` as pretty JSON and a newline.
fn write_json(out: &mut impl Write, value: &serde_json::Value) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    out.flush()
}

/// Prints a failed command's error as JSON (`--json`): the stage, the cause and the
/// message, the names `last_error.json` uses.
pub fn error_json(phase: Option<&str>, kind: &str, message: &str) -> io::Result<()> {
    let value = json!({"error": {"phase": phase, "kind": kind, "message": message}});
    write_json(&mut stdout(), &value)
}

/// Prints an update's outcome.
pub fn outcome(outcome: &Outcome, as_json: bool) -> io::Result<()> {
    let out = &mut stdout();
    let report = outcome.report();
    if as_json {
        let state = match outcome {
            Outcome::UpToDate(_) => "up_to_date",
            Outcome::Planned(_) => "planned",
            Outcome::Updated(_) => "updated",
            Outcome::Rejected { .. } => "rejected",
            Outcome::Retried(_) => "trial_retried",
            Outcome::Deferred { .. } => "deferred",
        };
        let mut value = report_json(state, report);
        if let Outcome::Rejected { rejected, .. } = outcome {
            value["rejected"] = json!(rejected);
        }
        if let Outcome::Deferred { deferred, .. } = outcome {
            value["reason"] = json!(deferred.reason.name());
            value["next_allowed"] = json!(null);
            value["message"] = json!(deferred.message);
        }
        return write_json(out, &value);
    }
    match outcome {
        Outcome::UpToDate(r) => {
            writeln!(out, "up to date: {}", release(&r.to))?;
            trial_line(out, &r.to, r.trial.as_ref())?;
        }
        Outcome::Rejected { report, rejected } => {
            writeln!(
                out,
                "skipped {}: {}",
                release(&report.to),
                rejected_why(rejected)
            )?;
            writeln!(
                out,
                "  it is not installed again until the channel names another release; \
                 `ota update --force` installs it anyway"
            )?;
        }
        Outcome::Deferred { deferred, .. } => writeln!(out, "deferred: {}", deferred.message)?,
        Outcome::Retried(r) => {
            writeln!(
                out,
                "ran the after-update actions and the health command of {} again (the run \
                 after its update was interrupted); the channel was not asked this time",
                release(&r.to)
            )?;
            trial_line(out, &r.to, r.trial.as_ref())?;
        }
        Outcome::Planned(r) => {
            writeln!(
                out,
                "plan to {} (dry run, nothing changed):",
                what_changes(r, ["install", "reinstall", "update"])
            )?;
            for change in &r.plan.changes {
                let what = match change.action {
                    Action::Add => "add",
                    Action::Replace => "replace",
                    Action::Delete => "delete",
                };
                let size = change.entry.as_ref().map(|e| e.size);
                let how = match &change.origin {
                    Some(Origin::Download) => " (download)".to_owned(),
                    Some(Origin::Copy(p)) => format!(" (copy of {p})"),
                    Some(Origin::Previous(_)) => " (kept from the previous release)".to_owned(),
                    None => String::new(),
                };
                let how = match change.kept {
                    true => format!("{how} (not ota's: kept in the state folder's kept/)"),
                    false => how,
                };
                match size {
                    Some(size) => writeln!(out, "  {what:8} {} {}{how}", change.path, bytes(size))?,
                    None => writeln!(out, "  {what:8} {}", change.path)?,
                }
            }
            summary(out, r)?;
        }
        Outcome::Updated(r) => {
            writeln!(
                out,
                "{}",
                what_changes(r, ["installed", "reinstalled", "updated"])
            )?;
            summary(out, r)?;
            for (path, at) in &r.kept {
                writeln!(
                    out,
                    "  kept {path}, which ota did not own, as {}",
                    at.display()
                )?;
            }
            trial_line(out, &r.to, r.trial.as_ref())?;
        }
    }
    out.flush()
}

/// Says where the trial of `release` stands, if it has one.
fn trial_line(out: &mut impl Write, r: &ReleaseId, trial: Option<&Verdict>) -> io::Result<()> {
    match trial {
        None => Ok(()),
        Some(Verdict::Confirmed) => writeln!(out, "  {} passed its trial: confirmed", r.ref_name),
        Some(Verdict::Pending(waiting)) => writeln!(
            out,
            "  {} is on trial, waiting for {}",
            r.ref_name,
            waiting_list(waiting)
        ),
        // A failed trial is rolled back and reported as an error; status shows it pending
        // the rollback.
        Some(Verdict::Failed(f)) => writeln!(
            out,
            "  {} failed its trial ({}: {}); the next ota command rolls it back",
            r.ref_name,
            f.kind.name(),
            f.reason
        ),
    }
}

fn waiting_list(waiting: &[Waiting]) -> String {
    let all: Vec<String> = waiting.iter().map(ToString::to_string).collect();
    all.join(" and ")
}

fn rejected_why(r: &Rejected) -> String {
    format!(
        "it failed its trial here and was rolled back at {} ({}): {}",
        r.time, r.kind, r.reason
    )
}

/// A trial's verdict as JSON: `{"state": "confirmed" | "pending" | "failed", "waiting_for":
/// [...], "failed": {...}}`.
fn verdict_json(verdict: Option<&Verdict>) -> serde_json::Value {
    match verdict {
        None => serde_json::Value::Null,
        Some(Verdict::Confirmed) => json!({"state": "confirmed", "waiting_for": []}),
        Some(Verdict::Pending(waiting)) => json!({
            "state": "pending",
            "waiting_for": waiting.iter().map(Waiting::name).collect::<Vec<_>>(),
        }),
        Some(Verdict::Failed(f)) => json!({
            "state": "failed",
            "waiting_for": [],
            "failed": {"kind": f.kind.name(), "reason": f.reason},
        }),
    }
}

/// Prints what `ota confirm` or `ota boot` left: the trial of the installed release.
pub fn trial(trial: Option<&TrialReport>, as_json: bool) -> io::Result<()> {
    let out = &mut stdout();
    if as_json {
        let value = match trial {
            None => json!({"release": null, "trial": null}),
            Some(t) => json!({"release": t.release, "trial": verdict_json(Some(&t.verdict))}),
        };
        return write_json(out, &value);
    }
    match trial {
        None => writeln!(out, "no release is on trial")?,
        Some(t) => match &t.verdict {
            Verdict::Confirmed => {
                writeln!(out, "{} passed its trial: confirmed", release(&t.release))?
            }
            other => {
                writeln!(out, "{} is on trial", release(&t.release))?;
                if let Verdict::Pending(waiting) = other {
                    writeln!(out, "  waiting for {}", waiting_list(waiting))?;
                }
            }
        },
    }
    out.flush()
}

/// Prints what `ota rollback` did.
pub fn rollback(report: &Report, as_json: bool) -> io::Result<()> {
    let out = &mut stdout();
    if as_json {
        return write_json(out, &report_json("rolled_back", report));
    }
    let from = report.from.as_ref().map_or("?".into(), release);
    writeln!(out, "rolled back {from} → {}", release(&report.to))?;
    writeln!(
        out,
        "  {} is recorded as rejected: not installed again until the channel names another \
         release (or `ota update --force`)",
        report.from.as_ref().map_or("?", |r| r.ref_name.as_str())
    )?;
    summary(out, report)?;
    out.flush()
}

fn summary(out: &mut impl Write, r: &Report) -> io::Result<()> {
    let p = &r.plan;
    writeln!(
        out,
        "  {} added, {} replaced, {} deleted, {} unchanged, {} adopted",
        p.count(Action::Add),
        p.count(Action::Replace),
        p.count(Action::Delete),
        p.unchanged,
        p.adopted
    )?;
    writeln!(
        out,
        "  files: {} to download{}, {} copied locally; needs {} free",
        bytes(p.download_bytes),
        match p.transfer {
            Transfer::Archive { .. } => " as one archive",
            Transfer::Files => "",
        },
        bytes(p.copy_bytes),
        bytes(p.space_needed)
    )?;
    let u = &r.usage;
    writeln!(
        out,
        "  network: {} metadata requests ({}), {} file requests ({}), {} retries, {:.2}s",
        u.api_requests,
        bytes(u.api_bytes),
        u.file_requests,
        bytes(u.file_bytes),
        u.retries,
        r.elapsed.as_secs_f64()
    )
}

fn report_json(state: &str, r: &Report) -> serde_json::Value {
    let p = &r.plan;
    json!({
        "result": state,
        "from": r.from,
        "to": r.to,
        "reason": r.reason.map(UpdateReason::name),
        "added": p.count(Action::Add),
        "replaced": p.count(Action::Replace),
        "deleted": p.count(Action::Delete),
        "unchanged": p.unchanged,
        "adopted": p.adopted,
        "download_bytes": p.download_bytes,
        "copy_bytes": p.copy_bytes,
        "space_needed": p.space_needed,
        "transfer": p.transfer.name(),
        "changes": p.changes.iter().map(|c| json!({
            "path": c.path,
            "action": format!("{:?}", c.action).to_lowercase(),
            "size": c.entry.as_ref().map(|e| e.size),
            "kept": c.kept,
        })).collect::<Vec<_>>(),
        "usage": r.usage,
        "elapsed_sec": r.elapsed.as_secs_f64(),
        "warnings": r.warnings,
        "kept": r.kept.iter().map(|(path, at)| json!({"path": path, "kept_at": at})).collect::<Vec<_>>(),
        "trial": verdict_json(r.trial.as_ref()),
        "peak_rss_bytes": peak_rss_bytes(),
    })
}

/// Prints a check's result.
pub fn check(check: &Check, as_json: bool) -> io::Result<()> {
    let out = &mut stdout();
    match check {
        Check::UpToDate(r) if as_json => writeln!(
            out,
            "{}",
            json!({"update_available": false, "installed": r})
        )?,
        Check::UpToDate(r) => writeln!(out, "up to date: {}", release(r))?,
        Check::Rejected {
            installed,
            available,
            rejected,
        } if as_json => writeln!(
            out,
            "{}",
            json!({
                "update_available": false,
                "installed": installed,
                "available": available,
                "rejected": rejected,
            })
        )?,
        Check::Rejected {
            available,
            rejected,
            ..
        } => writeln!(
            out,
            "no update: the channel names {}, but {}",
            release(available),
            rejected_why(rejected)
        )?,
        Check::Available {
            installed,
            available,
            reason,
        } if as_json => writeln!(
            out,
            "{}",
            json!({
                "update_available": true,
                "installed": installed,
                "available": available,
                "reason": reason.name(),
            })
        )?,
        Check::Available {
            installed,
            available,
            reason,
        } => match (installed, reason) {
            (Some(installed), UpdateReason::NewRelease | UpdateReason::ChannelChanged) => writeln!(
                out,
                "update available: {} → {}",
                release(installed),
                release(available)
            )?,
            // Nothing installed, or the same release to reinstall: say why.
            _ => writeln!(out, "update available: {} ({reason})", release(available))?,
        },
    }
    out.flush()
}

/// Prints `ota status`.
/// The schedule as `status --json` and a deferred `update --json` show it.
fn schedule_json(deferred: Option<&ota::schedule::Deferred>) -> serde_json::Value {
    json!({
        "next_allowed": deferred.and_then(|d| d.until).map(rfc3339),
        "reason": deferred.map(|d| d.reason.name()),
        "safe_mode": deferred.is_some_and(|d| d.reason == ota::schedule::Reason::SafeMode),
    })
}

/// A deferred `ota update`: why, and when it may run.
pub fn deferred(deferred: &ota::schedule::Deferred, as_json: bool) -> io::Result<()> {
    let out = &mut stdout();
    if as_json {
        let mut value = schedule_json(Some(deferred));
        value["result"] = json!("deferred");
        value["message"] = json!(deferred.message);
        return write_json(out, &value);
    }
    writeln!(out, "deferred: {}", deferred.message)
}

pub fn status(status: &Status, as_json: bool) -> io::Result<()> {
    let out = &mut stdout();
    if as_json {
        let installed = status.installed.as_ref().map(|i| {
            json!({
                "release": i.release,
                "installed_at": i.installed_at,
                "source": i.source,
                "previous": i.previous,
                "files": i.files.len(),
                "bytes": i.files.total_bytes(),
            })
        });
        let installed_trial = status.installed.as_ref().and_then(|i| i.trial.as_ref());
        let trial = installed_trial.map(|t| {
            let mut value = verdict_json(status.trial.as_ref());
            let waiting: &[Waiting] = match &status.trial {
                Some(Verdict::Pending(w)) => w,
                _ => &[],
            };
            let deadline = waiting.iter().find_map(|w| match w {
                Waiting::Confirm { deadline } => Some(rfc3339(*deadline)),
                _ => None,
            });
            value["since"] = json!(t.since);
            value["confirm_deadline"] = json!(deadline.or(t.deadline.map(rfc3339)));
            value["confirmed_at"] = json!(t.confirmed_at);
            value["boots"] = json!(t.boots);
            value["boots_needed"] = json!(status.boots_needed);
            value["health"] = match status.health_needed {
                true => json!(t.health.name()),
                false => json!("not_configured"),
            };
            value
        });
        let previous = installed_trial
            .and_then(|t| t.rollback_to.as_ref())
            .map(|p| {
                json!({
                    "release": p.release,
                    "installed_at": p.installed_at,
                    "files": p.files.len(),
                    "bytes": p.files.total_bytes(),
                    "kept_bytes": status.previous_bytes,
                })
            });
        let rejected = status
            .installed
            .as_ref()
            .map_or(&[][..], |i| &i.rejected[..]);
        let value = json!({
            "target": status.target,
            "installed": installed,
            "trial": trial,
            "previous": previous,
            "rejected": rejected,
            "recovery_pending": status.pending,
            "last_error": status.last_error,
            "errors": status.errors,
            "update_available": status.counters.update_available,
            "last_success": status.counters.last_success.map(|secs| {
                let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
                humantime::format_rfc3339_seconds(time).to_string()
            }),
            "requests_total": status.counters.requests,
            "download_bytes_total": status.counters.bytes,
            "last_check": status.cache.last_check,
            "rate_limit": status.cache.quota,
            "kept": status.kept,
            "free_storage": status.resources.free_storage,
            "free_memory": status.resources.free_memory,
            "battery": status.resources.battery,
            "schedule": schedule_json(status.schedule.as_ref()),
        });
        return write_json(out, &value);
    }
    writeln!(out, "target:      {}", status.target.display())?;
    match &status.installed {
        Some(i) => {
            writeln!(out, "installed:   {}", release(&i.release))?;
            writeln!(out, "             from {} at {}", i.source, i.installed_at)?;
            writeln!(
                out,
                "             {} files, {}",
                i.files.len(),
                bytes(i.files.total_bytes())
            )?;
            if let Some(prev) = &i.previous {
                writeln!(out, "previous:    {}", release(prev))?;
            }
            if let Some(t) = &i.trial {
                match &status.trial {
                    Some(Verdict::Pending(waiting)) => writeln!(
                        out,
                        "trial:       since {}, waiting for {}",
                        t.since,
                        waiting_list(waiting)
                    )?,
                    Some(Verdict::Failed(f)) => writeln!(
                        out,
                        "trial:       since {}, failed ({}: {}); the next ota command rolls it back",
                        t.since,
                        f.kind.name(),
                        f.reason
                    )?,
                    _ => writeln!(
                        out,
                        "trial:       since {}, every condition holds; the next ota command \
                         confirms it",
                        t.since
                    )?,
                }
                let health = match status.health_needed {
                    true => t.health.name(),
                    false => "not checked",
                };
                writeln!(
                    out,
                    "             health {health}, {} boots counted{}",
                    t.boots,
                    match status.boots_needed {
                        0 => String::new(),
                        n => format!(" of {n}"),
                    }
                )?;
                match &t.rollback_to {
                    Some(p) => writeln!(
                        out,
                        "rollback to: {} ({} files, {} kept in the state folder)",
                        release(&p.release),
                        p.files.len(),
                        bytes(status.previous_bytes)
                    )?,
                    None => writeln!(
                        out,
                        "rollback to: nothing (the first release installed here)"
                    )?,
                }
            }
            for r in &i.rejected {
                writeln!(
                    out,
                    "rejected:    {}: {}",
                    release(&r.release),
                    rejected_why(r)
                )?;
            }
        }
        None => writeln!(out, "installed:   nothing yet")?,
    }
    if let Some(pending) = &status.pending {
        writeln!(
            out,
            "pending:     an interrupted update to {}; the next `ota update` or `ota recover` finishes or undoes it",
            release(pending)
        )?;
    }
    match &status.last_error {
        Some(e) => {
            writeln!(
                out,
                "last error:  {} [{}/{}] {}",
                e.time, e.phase, e.kind, e.message
            )?;
            if e.consecutive > 1 {
                writeln!(
                    out,
                    "             {} failures in a row since {}",
                    e.consecutive,
                    e.since.as_deref().unwrap_or("?")
                )?;
            }
        }
        None => writeln!(out, "last error:  none")?,
    }
    if status.errors.len() > 1 {
        writeln!(
            out,
            "errors:      the last {}, oldest first:",
            status.errors.len()
        )?;
        for e in &status.errors {
            writeln!(
                out,
                "             {} [{}/{}] {}",
                e.time, e.phase, e.kind, e.message
            )?;
        }
    }
    for path in &status.kept {
        writeln!(
            out,
            "kept:        {} (a file ota replaced but did not own)",
            path.display()
        )?;
    }
    if let Some(time) = &status.cache.last_check {
        writeln!(out, "last check:  {time}")?;
    }
    if let Some(q) = &status.cache.quota {
        let reset = q.reset.map_or("?".into(), |r| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(r),
            )
            .to_string()
        });
        let num = |n: Option<u64>| n.map_or("?".into(), |n| n.to_string());
        writeln!(
            out,
            "rate limit:  {} of {} requests left, resets at {reset}",
            num(q.remaining),
            num(q.limit)
        )?;
    }
    device(out, &status.resources)?;
    if let Some(deferred) = &status.schedule {
        writeln!(out, "schedule:    {deferred}")?;
    }
    out.flush()
}

/// The `free:` and `battery:` lines of `ota status`.
fn device(out: &mut impl Write, now: &ota::Snapshot) -> io::Result<()> {
    let known = |n: Option<u64>| n.map_or("unknown".into(), bytes);
    writeln!(
        out,
        "free:        {} of storage, {} of memory",
        known(now.free_storage),
        known(now.free_memory)
    )?;
    match now.battery {
        Some(b) if b.on_mains => writeln!(out, "battery:     {}%, on mains power", b.percent),
        Some(b) => writeln!(out, "battery:     {}%, on battery", b.percent),
        None => writeln!(out, "battery:     none"),
    }
}

/// Prints what `ota recover` did.
pub fn recovery(recovery: &Recovery) -> io::Result<()> {
    let out = &mut stdout();
    match recovery {
        Recovery::Clean => writeln!(out, "nothing to recover")?,
        Recovery::SweptLeftovers => writeln!(out, "removed leftovers of an interrupted download")?,
        Recovery::Completed(r) => {
            writeln!(out, "finished the interrupted update to {}", release(r))?
        }
        Recovery::RolledBack(r) => writeln!(
            out,
            "undid the interrupted update to {}: the previous release is back in place",
            release(r)
        )?,
    }
    out.flush()
}

/// This process's peak resident memory so far (Linux: `VmHWM`), for fleet telemetry and
/// the benchmark.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn rfc3339(unix: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// `v2.0.0 1a2b3c4 (stable)`; a release of a signed manifest also shows its counter:
/// `v2.0.0 1a2b3c4 (stable, counter 7)`.
fn release(r: &ReleaseId) -> String {
    match r.counter {
        Some(counter) => format!(
            "{} {} ({}, counter {counter})",
            r.ref_name,
            r.short(),
            r.channel
        ),
        None => format!("{} {} ({})", r.ref_name, r.short(), r.channel),
    }
}

/// What an update does, with `verbs` for a first install, a reinstall of the same release
/// and a move to another: `installed v1`, `reinstalled v1 (allow/ignore changed …)`,
/// `updated v1 → v2`.
fn what_changes(r: &Report, [install, reinstall, update]: [&str; 3]) -> String {
    match (&r.from, r.reason) {
        (None, _) => format!("{install} {}", release(&r.to)),
        (Some(from), Some(reason)) if *from == r.to => {
            format!("{reinstall} {} ({reason})", release(&r.to))
        }
        (Some(from), _) => format!("{update} {} → {}", release(from), release(&r.to)),
    }
}

/// A byte count for people: `1.5 MB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KB", "MB", "GB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Prints any serializable result as pretty JSON (`ota keygen --json`, `ota publish --json`).
pub fn json(out: &mut impl Write, value: &impl serde::Serialize) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    out.flush()
}
