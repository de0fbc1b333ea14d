//! The `ota` command: parses arguments, calls the library, prints, maps errors to exit codes.
//!
//! Exit codes: 0 success (or up to date), 1 error, 2 bad usage, 100 `check` found an update.

mod args;
mod print;

use std::process::ExitCode;

use clap::Parser;
use ota::config::Config;
use ota::{Check, Updater};

use args::{Args, Command};

/// `ota check` found an update.
const EXIT_UPDATE_AVAILABLE: u8 = 100;

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.verbose, args.quiet);
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            // Every error message is complete on its own; the chain would repeat it.
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Update(a) => {
            let updater = updater(&a.config.config)?;
            let outcome = updater.update(ota::UpdateOptions {
                force: a.force,
                dry_run: a.dry_run,
            })?;
            print::outcome(&outcome, a.json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(a) => {
            let updater = updater(&a.config.config)?;
            let check = updater.check()?;
            print::check(&check, a.json)?;
            Ok(match check {
                Check::UpToDate(_) => ExitCode::SUCCESS,
                Check::Available { .. } => ExitCode::from(EXIT_UPDATE_AVAILABLE),
            })
        }
        Command::Status(a) => {
            let updater = updater(&a.config.config)?;
            print::status(&updater.status()?, a.json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Recover(a) => {
            let updater = updater(&a.config.config)?;
            print::recovery(&updater.recover()?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Loads the config, logs its warnings, and builds the updater.
fn updater(path: &std::path::Path) -> anyhow::Result<Updater> {
    let config = Config::load(path)?;
    for warning in &config.warnings {
        tracing::warn!("{}: {warning}", path.display());
    }
    Ok(Updater::new(config))
}

fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "ota=info,ota_serve=info",
        (false, 1) => "ota=debug,ota_serve=debug",
        _ => "trace",
    };
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // At trace level the HTTP client dumps the raw bytes it sends, `Authorization` header
    // included (its debug level redacts headers). The token must never reach a log, whatever
    // RUST_LOG asks for: hold the client at debug when anything asks for trace.
    if filter
        .max_level_hint()
        .is_none_or(|level| level >= tracing_subscriber::filter::LevelFilter::TRACE)
    {
        for clamp in ["ureq=debug", "ureq_proto=debug"] {
            if let Ok(directive) = clamp.parse() {
                filter = filter.add_directive(directive);
            }
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
