//! What to keep up to date, from where: the validated configuration.
//!
//! A config file is TOML, or JSON with the same keys; the original MicroPython updater's flat
//! `ota_config.json` loads too. Every value is checked here, once, with the key's name in the
//! error, and every default is resolved here: nothing downstream reads raw config values.

use std::path::PathBuf;
use std::time::Duration;

use crate::filter::Filter;

/// A fully validated configuration. Built only by [`Config::load`] / [`Config::from_str`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The directory kept equal to the release (absolute).
    pub target_dir: PathBuf,
    /// Where ota keeps its state, journal, stage and backups (absolute; on the target's
    /// filesystem). Defaults to `<target_dir>/.ota`.
    pub state_dir: PathBuf,
    /// Which release to follow.
    pub channel: Channel,
    /// Which paths of a release ota installs (`allow` / `ignore`).
    pub filter: Filter,
    /// Where releases come from.
    pub source: SourceConfig,
    /// Timeouts, retries and parallelism.
    pub network: NetworkConfig,
    /// Things worth telling the user that are not errors: keys of the original format that
    /// ota does not act on, and the like. The CLI logs each one.
    pub warnings: Vec<String>,
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
}

/// Where releases come from.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// The GitHub REST API (or a compatible host such as GitHub Enterprise or `ota serve`).
    Github(GithubConfig),
}

/// The GitHub source.
#[derive(Debug, Clone)]
pub struct GithubConfig {
    /// Repository owner (user or organisation).
    pub owner: String,
    /// Repository name.
    pub repo: String,
    /// API token, if any: from `token`, `token_file` or `OTA_TOKEN`.
    pub token: Option<Token>,
    /// API base URL without a trailing slash, e.g. `https://api.github.com`.
    pub api_url: String,
    /// Raw file base URL without a trailing slash, e.g. `https://raw.githubusercontent.com`.
    pub raw_url: String,
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

/// Network behaviour.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    /// Time allowed to open a connection (`connect_timeout_sec`, default 20).
    pub connect_timeout: Duration,
    /// Time allowed for one read or one request's headers without progress
    /// (`http_timeout_sec`, default 20).
    pub http_timeout: Duration,
    /// Attempts after the first for a failed request (`retries`, default 5).
    pub retries: u32,
    /// Base of the exponential backoff (`backoff_sec`, default 1).
    pub backoff: Duration,
    /// Cap of one backoff delay (`max_backoff_sec`, default 60).
    pub max_backoff: Duration,
    /// Downloads run at once (`parallel`, default 4).
    pub parallel: usize,
    /// Longest wait accepted for a rate-limit reset or `retry-after` (`max_wait_sec`, default 300).
    pub max_wait: Duration,
    /// Deadline of one whole update (`update_timeout_sec`, default 3600).
    pub update_timeout: Duration,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            connect_timeout: Duration::from_secs(20),
            http_timeout: Duration::from_secs(20),
            retries: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            parallel: 4,
            max_wait: Duration::from_secs(300),
            update_timeout: Duration::from_secs(3600),
        }
    }
}

/// TEMP until the config branch lands.
#[derive(Debug, thiserror::Error)]
#[error("config")]
pub struct ConfigError;
