//! Command-line arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Keeps a directory on this device equal to a GitHub release or branch, crash-safely.
#[derive(Debug, Parser)]
#[command(name = "ota", version, about, propagate_version = true)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// More log output on stderr (-v debug, -vv trace). `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check for an update and apply it if there is one.
    Update(UpdateArgs),
    /// Check for an update; exit 0 when up to date, 100 when one is available, 1 on error.
    Check(CheckArgs),
    /// Show the installed release, a pending recovery, and the last error.
    Status(StatusArgs),
    /// Finish or undo an interrupted update (every command that changes the target does
    /// this first).
    Recover(RecoverArgs),
    /// Confirm the release on trial: the application works (`[trial] confirm_within_sec`).
    Confirm(TrialArgs),
    /// Count a boot of the release on trial (`[trial] boots`); run once per boot, before
    /// the application.
    Boot(TrialArgs),
    /// Go back to the previous release, kept while the installed one is on trial.
    Rollback(TrialArgs),
}

impl Command {
    /// Whether the command was asked for JSON output (`--json`).
    pub fn json(&self) -> bool {
        match self {
            Command::Update(a) => a.json,
            Command::Check(a) => a.json,
            Command::Status(a) => a.json,
            Command::Confirm(a) | Command::Boot(a) | Command::Rollback(a) => a.json,
            Command::Recover(_) => false,
        }
    }
}

/// Where the configuration is.
#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// The configuration file (TOML, JSON, or the original updater's ota_config.json).
    #[arg(short, long, env = "OTA_CONFIG", default_value = "/etc/ota.toml")]
    pub config: PathBuf,
}

/// `ota update`.
#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Reinstall even when up to date, verifying every file on disk.
    #[arg(long)]
    pub force: bool,
    /// Print the plan (adds, replaces, deletes, bytes) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run now: ignore the `[schedule]` window, interval and random delay.
    #[arg(long)]
    pub now: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `ota check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `ota status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `ota recover`.
#[derive(Debug, clap::Args)]
pub struct RecoverArgs {
    #[command(flatten)]
    pub config: ConfigArg,
}

/// `ota confirm`, `ota boot`, `ota rollback`.
#[derive(Debug, clap::Args)]
pub struct TrialArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}
