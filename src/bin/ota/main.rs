//! The `ota` command: parses arguments, calls the library, prints, maps errors to exit codes.
//!
//! Exit codes: 0 success (or up to date, or a release on trial still waiting), 1 error (a
//! release that failed its trial and was rolled back included: error kind `unhealthy`), 2 bad
//! usage, 75 an update deferred by `[guards]` (low storage, memory or battery: nothing
//! changed; sysexits' `EX_TEMPFAIL`), 100 `check` found an update.
//!
//! Results go to stdout through checked writes; logs, the progress bar and the final error
//! to stderr (see `log`). A closed stdout (`ota status | head -0`) ends the command quietly.

mod args;
mod log;
mod print;
mod progress;
mod publish;

use std::io;
use std::process::ExitCode;

use clap::Parser;
use ota::config::Config;
use ota::schedule::Reason;
use ota::{Check, Updater};

use args::{Args, Command};
use log::Stderr;

/// `ota check` found an update.
const EXIT_UPDATE_AVAILABLE: u8 = 100;

/// An update deferred by `[guards]`: try again later (sysexits' `EX_TEMPFAIL`).
const EXIT_DEFERRED: u8 = 75;

/// Tests only: folders standing in for `/proc` and `/sys`, where free memory and the
/// battery are read. Not a setting: a device never sets them.
const TEST_PROC_ROOT: &str = "OTA_TEST_PROC_ROOT";
const TEST_SYS_ROOT: &str = "OTA_TEST_SYS_ROOT";

/// The result could not be written to stdout.
#[derive(Debug, thiserror::Error)]
#[error("cannot write to standard output: {0}")]
struct OutputError(#[from] io::Error);

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => return usage(&e),
    };
    let json = args.command.json();
    let stderr = log::init(args.verbose, args.quiet);
    let result = run(args, &stderr);
    stderr.clear_bar();
    match result {
        Ok(code) => code,
        Err(e) => fail(&e, json, &stderr),
    }
}

/// Prints clap's help, version or usage error, and exits with clap's code; a stdout that
/// cannot take the help is an error like any other.
fn usage(e: &clap::Error) -> ExitCode {
    if let Err(error) = e.print() {
        return fail(&OutputError(error).into(), false, &Stderr::default());
    }
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
}

/// Reports a failed command: `error: …` on stderr and, with `--json`, the same error as a
/// JSON object on stdout. Exit code 1 (75 for an update deferred by `[guards]`).
fn fail(error: &anyhow::Error, json: bool, stderr: &Stderr) -> ExitCode {
    let output = error.downcast_ref::<OutputError>();
    if output.is_some_and(|OutputError(e)| e.kind() == io::ErrorKind::BrokenPipe) {
        // Whoever read the output has stopped listening (`| head`): nothing to report.
        return ExitCode::SUCCESS;
    }
    // Every error message is complete on its own; the chain would repeat it.
    let message = error.to_string();
    stderr.error(&message);
    let ota = error.downcast_ref::<ota::Error>();
    if json && output.is_none() {
        let phase = ota.map(ota::Error::phase);
        let kind = ota.map_or("other", ota::Error::kind);
        // stdout failing as well leaves the message on stderr, which is all there is to do.
        let _ = print::error_json(phase, kind, &message);
    }
    match ota.is_some_and(ota::Error::deferred) {
        true => ExitCode::from(EXIT_DEFERRED),
        false => ExitCode::FAILURE,
    }
}

fn run(args: Args, stderr: &Stderr) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Update(a) => {
            let mut updater = updater(&a.config.config)?;
            // `--now` skips the window, the interval and the delay, not safe mode; `--force`
            // skips all of them; a dry run changes nothing, so it is never held back.
            let deferred = updater.deferred(&jiff::ZonedDateTime::now());
            let deferred = deferred.filter(|d| !a.now || d.reason == Reason::SafeMode);
            if !a.dry_run
                && !a.force
                && let Some(deferred) = deferred
            {
                print::deferred(&deferred, a.json).map_err(OutputError)?;
                return Ok(ExitCode::SUCCESS);
            }
            if !a.now && !a.dry_run {
                std::thread::sleep(ota::schedule::random_delay(
                    updater.config().schedule.random_delay,
                ));
            }
            wait_for_network(updater.config())?;
            updater.on_progress(progress::reporter(stderr.clone(), args.quiet));
            let outcome = updater.update(ota::UpdateOptions {
                force: a.force,
                dry_run: a.dry_run,
            })?;
            stderr.clear_bar();
            for warning in &outcome.report().warnings {
                tracing::warn!("{warning}");
            }
            print::outcome(&outcome, a.json).map_err(OutputError)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(a) => {
            let updater = updater(&a.config.config)?;
            wait_for_network(updater.config())?;
            let check = updater.check()?;
            print::check(&check, a.json).map_err(OutputError)?;
            Ok(match check {
                Check::UpToDate(_) | Check::Rejected { .. } => ExitCode::SUCCESS,
                Check::Available { .. } => ExitCode::from(EXIT_UPDATE_AVAILABLE),
            })
        }
        Command::Status(a) => {
            let updater = updater(&a.config.config)?;
            print::status(&updater.status()?, a.json).map_err(OutputError)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Recover(a) => {
            let updater = updater(&a.config.config)?;
            print::recovery(&updater.recover()?).map_err(OutputError)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Confirm(a) => {
            let updater = updater(&a.config.config)?;
            print::trial(updater.confirm()?.as_ref(), a.json).map_err(OutputError)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Boot(a) => {
            let updater = updater(&a.config.config)?;
            print::trial(updater.boot()?.as_ref(), a.json).map_err(OutputError)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Rollback(a) => {
            let mut updater = updater(&a.config.config)?;
            updater.on_progress(progress::reporter(stderr.clone(), args.quiet));
            let report = updater.rollback()?;
            stderr.clear_bar();
            print::rollback(&report, a.json).map_err(OutputError)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen(a) => {
            publish::keygen(&a)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Publish(a) => {
            publish::publish(&a)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Waits (bounded by `connect_timeout_sec`) for a default route and for the API host to
/// resolve, on a device that just booted.
fn wait_for_network(config: &Config) -> Result<(), ota::Error> {
    let Ok(url) = url::Url::parse(config.source.url()) else {
        return Ok(());
    };
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return Ok(());
    };
    let bound = config.network.connect_timeout;
    ota::schedule::wait_for_network(std::path::Path::new("/"), host, port, bound)
        .map(|_| ())
        .map_err(ota::Error::NoNetwork)
}

/// Loads the config, logs its warnings, and builds the updater.
fn updater(path: &std::path::Path) -> Result<Updater, ota::Error> {
    let config = Config::load(path)?;
    for warning in &config.warnings {
        tracing::warn!("{}: {warning}", path.display());
    }
    let updater = Updater::new(config);
    let (proc_root, sys_root) = (
        std::env::var_os(TEST_PROC_ROOT),
        std::env::var_os(TEST_SYS_ROOT),
    );
    if proc_root.is_none() && sys_root.is_none() {
        return Ok(updater);
    }
    let resources = ota::Resources::new(
        proc_root.unwrap_or_else(|| "/proc".into()),
        sys_root.unwrap_or_else(|| "/sys".into()),
    );
    Ok(updater.with_resources(resources))
}
