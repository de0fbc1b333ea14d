//! What to keep up to date, from where: the validated configuration. Every value is checked
//! here, once, and every default resolved: nothing downstream reads raw config values.
//!
//! One job per file: `file` is the new format as serde reads it (the one list of its keys),
//! `original` the original's flat format mapped onto it, `validate` turns either into a
//! [`Config`] (with `base_url` for the URLs), and `error` says what is wrong and what to do.
//! An unknown key is an error, not a silent default: a misspelt key would only show on a
//! device in the field.
//!
#![doc = include_str!("../../docs/config-reference.md")]

mod base_url;
mod error;
mod file;
mod original;
mod system;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

pub use error::ConfigError;
pub use validate::is_placeholder;

use crate::filter::Filter;

/// The environment variable that supplies the token when the config file has none.
pub const TOKEN_ENV: &str = "OTA_TOKEN";

/// Largest config file ota reads, in bytes.
pub const MAX_CONFIG_SIZE: u64 = 1 << 20;

/// A fully validated configuration. Built only by [`Config::load`] / [`Config::parse`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The directory kept equal to the release (absolute).
    pub target_dir: PathBuf,
    /// Where ota keeps its state, journal, stage and backups (absolute).
    pub state_dir: PathBuf,
    /// Which release to follow.
    pub channel: Channel,
    /// Which paths of a release ota installs (`allow` / `ignore`).
    pub filter: Filter,
    /// Where releases come from.
    pub source: SourceConfig,
    /// Timeouts, retries and parallelism.
    pub network: NetworkConfig,
    /// Limits on what a release may hold (`[limits]`).
    pub limits: Limits,
    /// How a new release is tried before it is confirmed (`[trial]`).
    pub trial: TrialConfig,
    /// What runs before an update changes the target (`[before_update]`).
    pub before_update: BeforeUpdate,
    /// What runs after an update (or a rollback) changed the target (`[after_update]`).
    pub after_update: AfterUpdate,
    /// The device's resources an update needs (`[guards]`).
    pub guards: Guards,
    /// When an update may run, and which releases this device takes (`[schedule]`).
    pub schedule: ScheduleConfig,
    /// What ota tells a fleet owner from afar (`[report]`): metrics, error history.
    pub report: ReportConfig,
    /// How the device is told what ota is doing (`[device]`): watchdog and status LED.
    pub device: DeviceConfig,
    /// Things worth telling the user that are not errors; the CLI logs each one.
    pub warnings: Vec<String>,
    /// The file this config was read from (absolute, normalised), when [`Config::load`]
    /// read one; a program that calls [`Config::parse`] may set it. When it is inside the
    /// target, a release never writes it, nor the token file (see [`GithubConfig`]).
    pub config_file: Option<PathBuf>,
}

/// Which release to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// The latest published GitHub release (no drafts, no prereleases), or one pinned tag.
    Stable {
        /// Pin to this release's tag instead of following the latest.
        tag: Option<String>,
    },
    /// The tip commit of a branch.
    Developer {
        /// The branch to follow.
        branch: String,
    },
    /// A channel of a static site other than `stable` (`channels/<name>/manifest.json`).
    Named {
        /// The channel's name, as given to `ota publish --channel`.
        name: String,
    },
}

impl Channel {
    /// The name a release of this channel records (`stable`, `developer`, or the name).
    pub fn name(&self) -> &str {
        match self {
            Channel::Stable { .. } => "stable",
            Channel::Developer { .. } => "developer",
            Channel::Named { name } => name,
        }
    }
}

/// Where releases come from.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// The GitHub REST API (or a compatible host such as GitHub Enterprise or `ota-serve`).
    Github(GithubConfig),
    /// A static site written by `ota publish` (nginx, S3, a CDN, GitHub Pages).
    Static(StaticConfig),
}

impl SourceConfig {
    /// The signature policy, whichever the source.
    pub fn trust(&self) -> &Trust {
        match self {
            SourceConfig::Github(github) => &github.trust,
            SourceConfig::Static(site) => &site.trust,
        }
    }

    /// The address the device contacts first: the API of a GitHub source, the base URL of a
    /// static site.
    pub fn url(&self) -> &str {
        match self {
            SourceConfig::Github(github) => &github.api_url,
            SourceConfig::Static(site) => &site.url,
        }
    }

    /// The token file, when the token came from one.
    pub fn token_file(&self) -> Option<&Path> {
        match self {
            SourceConfig::Github(github) => github.token_file.as_deref(),
            SourceConfig::Static(_) => None,
        }
    }

    /// The `manifest_key_file`, when the HMAC key came from one.
    pub fn manifest_key_file(&self) -> Option<&Path> {
        match self {
            SourceConfig::Github(github) => github.manifest_key_file.as_deref(),
            SourceConfig::Static(_) => None,
        }
    }
}

/// Which signed manifests a source accepts.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Trust {
    /// `public_key` and `public_key_file`: when not empty, only releases whose signed
    /// manifest verifies with one of these keys are installed.
    pub keys: crate::signed::TrustedKeys,
    /// `allow_downgrade`: accept a signed manifest whose counter is lower than the
    /// installed release's.
    pub allow_downgrade: bool,
    /// `public_key_file`, absolute and normalised (a release never writes them).
    pub key_files: Vec<PathBuf>,
}

/// A static site written by `ota publish`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StaticConfig {
    /// The site's base URL without a trailing slash, e.g. `https://updates.example.com/app`.
    pub url: String,
    /// The keys that sign its manifests (never empty for a static site).
    pub trust: Trust,
}

/// The GitHub source.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GithubConfig {
    /// Repository owner (user or organisation).
    pub owner: String,
    /// Repository name.
    pub repo: String,
    /// API token, if any: from `token`, `token_file` or `OTA_TOKEN`.
    pub token: Option<Token>,
    /// `token_file`, absolute and normalised, when the token came from one.
    pub token_file: Option<PathBuf>,
    /// API base URL without a trailing slash, e.g. `https://api.github.com`.
    pub api_url: String,
    /// Raw file base URL without a trailing slash, e.g. `https://raw.githubusercontent.com`.
    pub raw_url: String,
    /// Signed release manifests: with keys, a release must carry `manifest.json` and
    /// `manifest.json.minisig` assets that verify.
    pub trust: Trust,
    /// `manifest_key` or `manifest_key_file`: the HMAC key of the original updater's
    /// `manifest.json` release asset; when set, a release must carry that asset, signed.
    pub manifest_key: Option<Token>,
    /// `manifest_key_file`, absolute and normalised, when the key came from one.
    pub manifest_key_file: Option<PathBuf>,
}

/// A secret that never prints: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a secret.
    pub fn new(secret: String) -> Token {
        Token(secret)
    }

    /// The secret itself, for the one place that needs it: the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The device's own signals (`[device]`): a hardware watchdog and a status LED.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceConfig {
    /// `watchdog_device`: a watchdog device (`/dev/watchdog`) held open and fed while a
    /// command runs, and closed with the magic character `V` at its end.
    pub watchdog_device: Option<PathBuf>,
    /// `watchdog_timeout_ms`: the watchdog's timeout as set in the system; ota feeds it
    /// at least every third of it while it makes progress (ota does not set it).
    pub watchdog_timeout: Option<Duration>,
    /// `led`: a sysfs LED folder (`/sys/class/leds/ACT`) that shows the phase.
    pub led: Option<PathBuf>,
}

/// Network behaviour (`[network]`; the reference gives each key's meaning and default).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NetworkConfig {
    /// `connect_timeout_sec`.
    pub connect_timeout: Duration,
    /// `http_timeout_sec`.
    pub http_timeout: Duration,
    /// `retries`: attempts after the first.
    pub retries: u32,
    /// `backoff_sec`: the first delay of the exponential backoff.
    pub backoff: Duration,
    /// `max_backoff_sec`.
    pub max_backoff: Duration,
    /// `max_wait_sec`: a longer rate-limit or `retry-after` wait fails the check instead.
    pub max_wait: Duration,
    /// `update_timeout_sec`: the deadline of one whole update.
    pub update_timeout: Duration,
    /// `parallel`: downloads run at once.
    pub parallel: usize,
    /// `user_agent`.
    pub user_agent: String,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            connect_timeout: Duration::from_secs(20),
            http_timeout: Duration::from_secs(20),
            retries: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_wait: Duration::from_secs(300),
            update_timeout: Duration::from_secs(3600),
            parallel: 4,
            user_agent: concat!("ota/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Limits on what a release may hold; `None` is no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest file-tree response accepted, in KiB (`max_tree_kb`).
    pub max_tree_kb: Option<u64>,
    /// Most files a release may hold (`max_tree_files`).
    pub max_tree_files: Option<u64>,
}

/// How a new release is tried (`[trial]`): it is confirmed when every configured condition
/// holds, and rolled back as soon as one fails. With none configured (and no
/// `[after_update]` action), a release is confirmed as soon as it is installed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrialConfig {
    /// `health_command`: run in the target after each update; exit 0 = healthy.
    pub health_command: Option<String>,
    /// `health_timeout_sec` (default 60): a slower health command counts as failed.
    pub health_timeout: Duration,
    /// `confirm_within_sec` (0 = `None`): `ota confirm` must come within this long.
    pub confirm_within: Option<Duration>,
    /// `boots` (0 = none): boots the release must survive, counted by `ota boot`.
    pub boots: u32,
}

impl Default for TrialConfig {
    fn default() -> Self {
        TrialConfig {
            health_command: None,
            health_timeout: Duration::from_secs(60),
            confirm_within: None,
            boots: 0,
        }
    }
}

/// `[schedule]`: when an update may run (see [`crate::schedule`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScheduleConfig {
    /// `min_interval_sec` (default 0): seconds between two checks.
    pub min_interval: u64,
    /// `window_start_hour` / `window_end_hour` (local time): `None`, any hour.
    pub window: Option<crate::schedule::Window>,
    /// `random_delay_sec` (default 0): at most this long a random wait before the first
    /// request.
    pub random_delay: u64,
    /// `rollout_percent` (default 100): the share of devices that take a new release.
    pub rollout_percent: u8,
    /// `device_id` (default: `/etc/machine-id`).
    pub device_id: Option<String>,
    /// `max_crashes_before_delay` (default 0, off): failures in a row before safe mode.
    pub max_crashes_before_delay: u32,
    /// `max_delay_sec` (default 86400): the longest safe-mode delay.
    pub max_delay: u64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            min_interval: 0,
            window: None,
            random_delay: 0,
            rollout_percent: 100,
            device_id: None,
            max_crashes_before_delay: 0,
            max_delay: 86_400,
        }
    }
}

/// `[before_update]`: a command run before an update changes anything; when it fails (or
/// times out) the update is not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BeforeUpdate {
    /// `command`, run with `sh -c` in the target.
    pub command: Option<String>,
    /// `timeout_sec` (default 60).
    pub timeout: Duration,
}

impl Default for BeforeUpdate {
    fn default() -> Self {
        BeforeUpdate {
            command: None,
            timeout: Duration::from_secs(60),
        }
    }
}

/// What ota tells a fleet owner from afar (`[report]`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReportConfig {
    /// `metrics_file`: a Prometheus textfile (node_exporter's textfile collector) rewritten
    /// after every command that checks or changes; `None`: no metrics.
    pub metrics_file: Option<PathBuf>,
    /// `error_history_limit` (default 10; 0 keeps none): how many of the last errors
    /// `errors.json` keeps.
    pub error_history_limit: usize,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            metrics_file: None,
            error_history_limit: 10,
        }
    }
}

/// `[after_update]`: what runs once an update (or a rollback) changed the target, in this
/// order: `command`, then `restart`, then `reboot`. A failure after an update fails the
/// release's trial.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AfterUpdate {
    /// `restart`: systemd units restarted (`systemctl restart UNIT…`).
    pub restart: Vec<String>,
    /// `reboot`: reboot the device (`systemctl reboot`) once everything else is done.
    pub reboot: bool,
    /// `command`, run with `sh -c` in the target.
    pub command: Option<String>,
    /// `timeout_sec` (default 60), for `command` and for each `systemctl` call.
    pub timeout: Duration,
    /// `post_update`: the allow-list of the original manifest's `post_update` names, each
    /// mapped to a command run with `sh -c` in the target after `command` (never a command
    /// named by the server).
    pub post_update: BTreeMap<String, String>,
}

impl Default for AfterUpdate {
    fn default() -> Self {
        AfterUpdate {
            restart: Vec::new(),
            reboot: false,
            command: None,
            timeout: Duration::from_secs(60),
            post_update: BTreeMap::new(),
        }
    }
}

impl AfterUpdate {
    /// Whether anything runs after an update.
    pub fn is_empty(&self) -> bool {
        self.restart.is_empty()
            && !self.reboot
            && self.command.is_none()
            && self.post_update.is_empty()
    }
}

/// `[guards]`: an update is deferred (refused, nothing changed, not counted as a failure)
/// while the device runs low. 0 turns a guard off (the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Guards {
    /// `min_free_storage`: bytes that must stay free on the target's filesystem beyond what
    /// the update needs.
    pub min_free_storage: u64,
    /// `min_free_mem`: bytes of `MemAvailable` (`/proc/meminfo`) an update needs.
    pub min_free_mem: u64,
    /// `min_battery_percent`: the battery charge an update needs, unless on mains power.
    pub min_battery_percent: u8,
}

impl Config {
    /// Whether a new release goes through a trial that can still fail after it is installed
    /// (a health command, a confirmation, boots, or an after-update action): then the
    /// previous release's files are kept until it is confirmed.
    pub fn has_trial(&self) -> bool {
        let t = &self.trial;
        t.health_command.is_some()
            || t.confirm_within.is_some()
            || t.boots > 0
            || !self.after_update.is_empty()
    }
}

/// The syntax of a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// TOML (the default).
    Toml,
    /// JSON, with the same keys and nested objects for the tables.
    Json,
}

impl Format {
    /// The syntax of a file: JSON when its first non-blank character is `{` or, failing that,
    /// when its name ends in `.json`; TOML otherwise.
    pub fn detect(path: &Path, text: &str) -> Format {
        let text = text.trim_start_matches('\u{feff}').trim_start();
        let json_name = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        if text.starts_with('{') || json_name {
            Format::Json
        } else {
            Format::Toml
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Toml => "TOML",
            Format::Json => "JSON",
        })
    }
}

impl Config {
    /// Reads and validates a config file, in the [`Format`] it is [detected](Format::detect)
    /// to have. Relative paths in it resolve against the file's folder; the token may come
    /// from the `OTA_TOKEN` environment variable. Errors carry the file's path.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let read_error = |error| ConfigError::Read {
            path: path.to_owned(),
            error,
        };
        let text = read_capped(path, MAX_CONFIG_SIZE).map_err(|error| match error {
            ReadError::Io(error) => read_error(error),
            ReadError::TooLarge => ConfigError::TooLarge {
                path: path.to_owned(),
            },
            ReadError::NotText => ConfigError::NotText {
                path: path.to_owned(),
            },
        })?;
        let absolute = path_clean::clean(std::path::absolute(path).map_err(read_error)?);
        let base_dir = absolute.parent().unwrap_or(Path::new("/"));
        let format = Format::detect(path, &text);
        let in_file = |error| ConfigError::InFile {
            path: path.to_owned(),
            error: Box::new(error),
        };
        let (mut config, inline_token) =
            parse_config(&text, format, base_dir, &|name| std::env::var(name).ok())
                .map_err(in_file)?;
        if inline_token && readable_by_others(path) {
            config.warnings.push(format!(
                "{} holds the token and can be read by every user on this system: restrict \
                 it (`chmod 600`), or move the token to `token_file` or the `{TOKEN_ENV}` \
                 environment variable",
                path.display()
            ));
        }
        config.config_file = Some(absolute);
        Ok(config)
    }

    /// Validates a config given as text. `base_dir` is the config file's folder: relative
    /// paths resolve against it (a relative `base_dir` against the current directory). `env`
    /// looks up environment variables; [`Config::load`] passes the real environment.
    pub fn parse(
        text: &str,
        format: Format,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        parse_config(text, format, base_dir, env).map(|(config, _)| config)
    }
}

/// Why a small file could not be read.
enum ReadError {
    Io(std::io::Error),
    TooLarge,
    NotText,
}

/// Reads a file of at most `max` bytes as UTF-8 text, and never more than that: a path may
/// name a device or a pipe by mistake.
fn read_capped(path: &Path, max: u64) -> Result<String, ReadError> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge);
    }
    String::from_utf8(bytes).map_err(|_| ReadError::NotText)
}

/// Whether a file's mode lets users other than its owner and group read it.
fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|meta| meta.permissions().mode() & 0o004 != 0)
}

/// [`Config::parse`], also telling whether the token was written in the config text itself.
fn parse_config(
    text: &str,
    format: Format,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Config, bool), ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // First the syntax, and which format: the original's is flat, with `owner` or `repo` at
    // the top and no `source` table.
    let top: BTreeMap<String, serde_json::Value> = read(text, format, false)?;
    let legacy =
        (top.contains_key("owner") || top.contains_key("repo")) && !top.contains_key("source");
    let (file, warnings) = if legacy {
        read::<original::Original>(text, format, true)?.into_file()?
    } else {
        (read(text, format, false)?, Vec::new())
    };
    let base_dir = std::path::absolute(base_dir).unwrap_or_else(|_| base_dir.to_owned());
    let base_dir = path_clean::clean(base_dir);
    validate::Check {
        format,
        legacy,
        base_dir,
        env,
        warnings,
    }
    .build(file)
}

/// Reads the text into `T`. A key `T` does not read is an error (the first one, with a hint),
/// unless it is a comment: a key starting with `_` or `//`, at any level. Type errors name
/// the key's path. Parser messages give the position, never the text of the line (it may
/// hold the token).
fn read<T: DeserializeOwned>(text: &str, format: Format, legacy: bool) -> Result<T, ConfigError> {
    let mut unknown: Option<(Option<String>, String)> = None;
    let mut note = |path: serde_ignored::Path<'_>| {
        if let serde_ignored::Path::Map { parent, key } = path
            && !key.starts_with('_')
            && !key.starts_with("//")
        {
            let section = match parent {
                serde_ignored::Path::Root => None,
                parent => Some(parent.to_string()),
            };
            unknown.get_or_insert((section, key));
        }
    };
    let syntax = |message: String| ConfigError::Syntax { format, message };
    let result = match format {
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            let value = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(
                &mut de, &mut note,
            ));
            match value {
                Ok(value) => de.end().map(|()| value).map_err(|e| syntax(e.to_string())),
                Err(e) if e.inner().is_data() => {
                    let message = e.inner().to_string();
                    let message = message.rsplit_once(" at line ").map_or(&*message, |m| m.0);
                    Err(error::data_error(&e.path().to_string(), message, format))
                }
                Err(e) => Err(syntax(e.inner().to_string())),
            }
        }
        Format::Toml => {
            let de = toml::Deserializer::parse(text).map_err(|e| syntax(toml_message(text, &e)))?;
            serde_path_to_error::deserialize(serde_ignored::Deserializer::new(de, &mut note))
                .map_err(|e| {
                    // The toml crate hands a date over as a map; its text tells them apart.
                    let value = e.inner().span().and_then(|span| text.get(span));
                    let date = value.is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()));
                    let message = match e.inner().message().strip_prefix("invalid type: map") {
                        Some(rest) if date => format!("invalid type: date{rest}"),
                        _ => e.inner().message().to_owned(),
                    };
                    error::data_error(&e.path().to_string(), &message, format)
                })
        }
    };
    match unknown {
        Some((section, key)) => Err(error::unknown_key(section.as_deref(), &key, legacy, format)),
        None => result,
    }
}

/// A TOML parser message with the line and column of the problem.
fn toml_message(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim_end();
    match err.span().and_then(|span| text.get(..span.start)) {
        Some(before) => {
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let column = before[line_start..].chars().count() + 1;
            format!("{message} at line {line} column {column}")
        }
        None => message.to_owned(),
    }
}
