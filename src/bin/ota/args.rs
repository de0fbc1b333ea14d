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
    /// Make a signing key pair for `ota publish`: DIR/ota.key (secret) and DIR/ota.pub.
    Keygen(KeygenArgs),
    /// Add a signed release to a static site (a folder to serve with any web server).
    Publish(Box<PublishArgs>),
}

impl Command {
    /// Whether the command was asked for JSON output (`--json`).
    pub fn json(&self) -> bool {
        match self {
            Command::Update(a) => a.json,
            Command::Check(a) => a.json,
            Command::Status(a) => a.json,
            Command::Confirm(a) | Command::Boot(a) | Command::Rollback(a) => a.json,
            Command::Keygen(a) => a.json,
            Command::Publish(a) => a.json,
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

/// How the secret key's password is given (`ota keygen`, `ota publish`).
#[derive(Debug, clap::Args)]
pub struct PasswordArgs {
    /// Read the secret key's password from the first line of FILE.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["password_env", "no_password"])]
    pub password_file: Option<PathBuf>,
    /// Read the secret key's password from the environment variable VAR.
    #[arg(long, value_name = "VAR", conflicts_with = "no_password")]
    pub password_env: Option<String>,
    /// Never ask for a password on a terminal (keygen: write the key unencrypted).
    #[arg(long)]
    pub no_password: bool,
}

/// `ota keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// The folder to write ota.key and ota.pub into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Replace an existing ota.key and ota.pub.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub password: PasswordArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `ota publish` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PublishFormat {
    /// A signed release added to a static site.
    Site,
    /// The original updater's manifest.json.
    Original,
}

/// `ota publish`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["repo", "dir"])))]
pub struct PublishArgs {
    /// The secret key (ota.key from `ota keygen`, or a key from `minisign -G`); not with
    /// --format original.
    #[arg(long, value_name = "KEY", required_if_eq("format", "site"))]
    pub key: Option<PathBuf>,
    /// The site folder to add the release to (created if missing); with --format original,
    /// the folder to write manifest.json to.
    #[arg(long, value_name = "SITE")]
    pub out: PathBuf,
    /// What to write: `site` (a signed release added to a static site) or `original` (the
    /// original updater's manifest.json, to upload as the GitHub release's asset).
    #[arg(long, value_enum, default_value = "site")]
    pub format: PublishFormat,
    /// --format original: sign with this HMAC key (the devices' `manifest_key`). Other
    /// users can see a command line: prefer --hmac-key-file or OTA_HMAC_KEY.
    #[arg(
        long,
        value_name = "KEY",
        env = "OTA_HMAC_KEY",
        hide_env_values = true,
        conflicts_with = "hmac_key_file"
    )]
    pub hmac_key: Option<String>,
    /// --format original: sign with the HMAC key in this file (surrounding whitespace
    /// trimmed).
    #[arg(long, value_name = "FILE")]
    pub hmac_key_file: Option<PathBuf>,
    /// --format original: the manifest's `version` [default: the release name].
    #[arg(long, value_name = "TEXT")]
    pub release_version: Option<String>,
    /// --format original: the manifest's `post_update` name.
    #[arg(long, value_name = "NAME")]
    pub post_update: Option<String>,
    /// --format original: a path for `deletes` (repeatable).
    #[arg(long = "delete", value_name = "PATH")]
    pub deletes: Vec<String>,
    /// --format original: also write .deltas/ beside manifest.json, a patch (the original's
    /// OTADELTA format) for each file that differs from the release --from.
    #[arg(long, requires = "from")]
    pub deltas: bool,
    /// With --deltas: the release devices run now, that the patches apply to: a tag,
    /// branch or commit of --repo, or, with --dir, a folder of its files.
    #[arg(long, value_name = "REF|FOLDER", requires = "deltas")]
    pub from: Option<String>,
    /// Publish a commit of this git repository (with --ref).
    #[arg(long, value_name = "GITREPO", requires = "reference")]
    pub repo: Option<PathBuf>,
    /// The tag, branch or commit of --repo to publish.
    #[arg(long = "ref", value_name = "REF", requires = "repo")]
    pub reference: Option<String>,
    /// Publish the files of this folder instead of a git commit.
    #[arg(long, value_name = "FOLDER", conflicts_with = "repo")]
    pub dir: Option<PathBuf>,
    /// The channel: `stable` writes manifest.json, another name channels/NAME/manifest.json.
    #[arg(long, value_name = "NAME", default_value = "stable")]
    pub channel: String,
    /// The release's name [default: the ref name; for --dir, the first 12 hex digits of
    /// the files' git tree id].
    #[arg(long, value_name = "NAME")]
    pub release: Option<String>,
    /// Publish only paths this pattern matches (repeatable; a device's `allow` rules).
    #[arg(long, value_name = "GLOB")]
    pub allow: Vec<String>,
    /// Leave out paths this pattern matches (repeatable; a device's `ignore` rules).
    #[arg(long, value_name = "GLOB")]
    pub ignore: Vec<String>,
    /// Take allow and ignore from this device config file instead.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["allow", "ignore"])]
    pub config: Option<PathBuf>,
    /// How long devices accept the manifest (e.g. 30days, 12h): publish again before.
    #[arg(long, value_name = "DURATION", default_value = "30days", value_parser = humantime::parse_duration)]
    pub expires_in: std::time::Duration,
    /// The share of devices (0-100) that take this release.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub rollout_percent: Option<u8>,
    /// Keep the newest N releases of each channel; delete older records and every object
    /// nothing kept lists.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub keep: Option<u64>,
    #[command(flatten)]
    pub password: PasswordArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}
