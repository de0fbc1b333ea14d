//! What to keep up to date, from where: the validated configuration.
//!
//! A config file is TOML, or JSON with the same keys; the original MicroPython updater's flat
//! `ota_config.json` loads too. Every value is checked here, once, with the key's name in the
//! error, and every default is resolved here: nothing downstream reads raw config values.
//!
//! The file is first read into a neutral tree of values (the same for both syntaxes), then
//! every table's keys are checked against the keys it may hold — an unknown key is an error
//! that suggests the closest valid one, because a misspelt key silently falling back to its
//! default is the kind of mistake that only shows on a device in the field — and only then
//! are the values read, typed and checked.
//!
//! The reference below is also `docs/config-reference.md`, ready for the README.
//!
#![doc = include_str!("../docs/config-reference.md")]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::filter::Filter;

/// The environment variable that supplies the token when the config file has none.
pub const TOKEN_ENV: &str = "OTA_TOKEN";

/// Largest config file ota reads, in bytes.
pub const MAX_CONFIG_SIZE: u64 = 1 << 20;

/// Largest token file ota reads, in bytes.
const MAX_TOKEN_FILE_SIZE: u64 = 64 << 10;

/// Longest token ota accepts, in bytes (GitHub's are under 300).
const MAX_TOKEN_LEN: usize = 4096;

/// A fully validated configuration. Built only by [`Config::load`] / [`Config::parse`].
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
    /// Longest wait ota accepts for a rate-limit reset or a `retry-after` (`max_wait_sec`,
    /// default 300); a longer one fails the check instead of waiting.
    pub max_wait: Duration,
    /// Deadline of one whole update, from the first request to the commit
    /// (`update_timeout_sec`, default 3600).
    pub update_timeout: Duration,
    /// Downloads run at once (`parallel`, default 4).
    pub parallel: usize,
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
        }
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
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let json_name = path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
        match text.trim_start().chars().next() {
            Some('{') => Format::Json,
            _ if json_name => Format::Json,
            _ => Format::Toml,
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

/// A config that cannot be used. Its `Display` is one sentence that names the key (as written
/// in the file, e.g. `network.retries` or `allow[2]`) and says what to do. No variant ever
/// holds a token or a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file cannot be read.
    #[error("cannot read the config file {}: {error}; check the path and its permissions", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The config file is far larger than any config.
    #[error(
        "the config file {} is larger than {MAX_CONFIG_SIZE} bytes, which no ota config is; \
         check that the path names the config file",
        path.display()
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The config file is not UTF-8 text.
    #[error("the config file {} is not UTF-8 text; save it as UTF-8", path.display())]
    NotText {
        /// The file.
        path: PathBuf,
    },
    /// The text is not valid TOML or JSON.
    #[error("the config is not valid {format}: {message}; fix the syntax there")]
    Syntax {
        /// The syntax it was read as.
        format: Format,
        /// The parser's message, with line and column (never the text of the line).
        message: String,
    },
    /// A key that ota does not know.
    #[error("unknown key `{key}`: {hint}")]
    UnknownKey {
        /// The key, e.g. `source.ownr`.
        key: String,
        /// What to do: the closest valid key, or the valid keys.
        hint: String,
    },
    /// A value of the wrong type.
    #[error("`{key}` must be {expected}, not {found}{hint}")]
    WrongType {
        /// The key.
        key: String,
        /// The type it must have, e.g. "an integer".
        expected: &'static str,
        /// The type it has.
        found: &'static str,
        /// How to fix it, if there is more to say (starts with `; `), or empty.
        hint: String,
    },
    /// A required key is missing.
    #[error("`{key}` is missing: {hint}")]
    Missing {
        /// The key.
        key: String,
        /// What to set it to, with an example.
        hint: String,
    },
    /// A value still holds a template's placeholder.
    #[error("`{key}` still holds the placeholder{}: {hint}", shown(value))]
    Placeholder {
        /// The key (or `OTA_TOKEN`).
        key: String,
        /// The placeholder; `None` for a token placeholder that might hold a real token
        /// (`<ghp_…>`), which is never shown.
        value: Option<String>,
        /// What to set it to.
        hint: String,
    },
    /// A value that cannot be used; the message names the key and says why.
    #[error("{message}")]
    Invalid {
        /// The key.
        key: String,
        /// The whole sentence.
        message: String,
    },
    /// An error in a config file, with the file's path.
    #[error("{}: {error}", path.display())]
    InFile {
        /// The config file.
        path: PathBuf,
        /// The error.
        error: Box<ConfigError>,
    },
}

/// A placeholder as the error shows it.
fn shown(value: &Option<String>) -> String {
    value
        .as_ref()
        .map(|value| format!(" `{value}`"))
        .unwrap_or_default()
}

impl ConfigError {
    /// The key the error is about (as written in the file), if it is about one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. }
            | ConfigError::WrongType { key, .. }
            | ConfigError::Missing { key, .. }
            | ConfigError::Placeholder { key, .. }
            | ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::InFile { error, .. } => error.key(),
            ConfigError::Read { .. }
            | ConfigError::TooLarge { .. }
            | ConfigError::NotText { .. }
            | ConfigError::Syntax { .. } => None,
        }
    }

    fn invalid(key: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            key: key.to_owned(),
            message,
        }
    }
}

impl Config {
    /// Reads and validates a config file: JSON when its first non-blank character is `{` or
    /// its name ends in `.json`, TOML otherwise (see [`Format::detect`]). Relative paths in it
    /// resolve against the file's folder; the token may come from the `OTA_TOKEN` environment
    /// variable. Errors carry the file's path.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_config_file(path)?;
        let absolute = std::path::absolute(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
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

fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read as _;
    let read_error = |error| ConfigError::Read {
        path: path.to_owned(),
        error,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_CONFIG_SIZE {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
        });
    }
    String::from_utf8(bytes).map_err(|_| ConfigError::NotText {
        path: path.to_owned(),
    })
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
    let root = raw::parse(text, format)?;
    let raw::Value::Table(entries) = root else {
        return Err(ConfigError::Syntax {
            format,
            message: "the document must be one object `{ … }` holding the keys".to_owned(),
        });
    };
    let base_dir = std::path::absolute(base_dir).unwrap_or_else(|_| base_dir.to_owned());
    let legacy = raw::is_legacy(&entries);
    let mut doc = Doc {
        format,
        legacy,
        base_dir: normalize(&base_dir),
        env,
        values: Vec::new(),
        warnings: Vec::new(),
    };
    if legacy {
        doc.collect_legacy(entries)?;
    } else {
        doc.collect_new(entries)?;
    }
    doc.build()
}

/// The neutral value tree both syntaxes are read into.
mod raw {
    use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

    use super::{ConfigError, Format};

    /// A value as written, before any key or type is checked.
    #[derive(Debug, Clone, PartialEq)]
    pub(super) enum Value {
        Null,
        Bool(bool),
        Int(i128),
        Float(f64),
        Str(String),
        Array(Vec<Value>),
        /// Entries in the order written; keys are unique.
        Table(Vec<(String, Value)>),
        /// A TOML date or time.
        Datetime,
    }

    impl Value {
        /// The value's type, as an error message names it.
        pub(super) fn kind(&self, format: Format) -> &'static str {
            match self {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Int(_) => "an integer",
                Value::Float(_) => "a number with a fraction",
                Value::Str(_) => "a string",
                Value::Array(_) => "an array",
                Value::Table(_) => table_word(format),
                Value::Datetime => "a date",
            }
        }
    }

    /// What a table is called in a syntax.
    pub(super) fn table_word(format: Format) -> &'static str {
        match format {
            Format::Toml => "a table",
            Format::Json => "an object",
        }
    }

    /// Parses the text. The error gives the parser's message and position but never the
    /// text of the offending line, which may hold the token.
    pub(super) fn parse(text: &str, format: Format) -> Result<Value, ConfigError> {
        match format {
            Format::Json => serde_json::from_str(text).map_err(|err| ConfigError::Syntax {
                format,
                message: err.to_string(),
            }),
            Format::Toml => toml::from_str(text).map_err(|err| {
                let mut message = err.message().trim_end().to_owned();
                if let Some(before) = err.span().and_then(|span| text.get(..span.start)) {
                    let line = before.matches('\n').count() + 1;
                    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
                    let column = before[line_start..].chars().count() + 1;
                    message = format!("{message} at line {line} column {column}");
                }
                ConfigError::Syntax { format, message }
            }),
        }
    }

    /// The original updater's flat format: top-level `owner` or `repo`, and no `source`.
    pub(super) fn is_legacy(entries: &[(String, Value)]) -> bool {
        let has = |key: &str| entries.iter().any(|(k, _)| k == key);
        (has("owner") || has("repo")) && !has("source")
    }

    impl<'de> Deserialize<'de> for Value {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
            deserializer.deserialize_any(ValueVisitor)
        }
    }

    struct ValueVisitor;

    impl<'de> Visitor<'de> for ValueVisitor {
        type Value = Value;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a config value")
        }

        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }

        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::Int(v.into()))
        }

        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::Int(v.into()))
        }

        fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
            Ok(Value::Int(v))
        }

        fn visit_u128<E>(self, v: u128) -> Result<Value, E> {
            Ok(Value::Int(i128::try_from(v).unwrap_or(i128::MAX)))
        }

        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            Ok(Value::Float(v))
        }

        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::Str(v.to_owned()))
        }

        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::Str(v))
        }

        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }

        fn visit_none<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }

        fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
            deserializer.deserialize_any(ValueVisitor)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element()? {
                items.push(item);
            }
            Ok(Value::Array(items))
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut entries: Vec<(String, Value)> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                let value: Value = map.next_value()?;
                // How the toml crate hands over a date.
                if key.starts_with("$__toml_private") {
                    return Ok(Value::Datetime);
                }
                if !seen.insert(key.clone()) {
                    // The value is not shown: it may be the token.
                    return Err(de::Error::custom(format!(
                        "the key `{key}` appears twice; keep one"
                    )));
                }
                entries.push((key, value));
            }
            Ok(Value::Table(entries))
        }
    }
}

use raw::Value;

/// Top-level keys of the new format.
const TOP_KEYS: &[&str] = &[
    "target_dir",
    "channel",
    "branch",
    "tag",
    "allow",
    "ignore",
    "state_dir",
    "source",
    "network",
];

/// Keys of the `[source]` table.
const SOURCE_KEYS: &[&str] = &[
    "kind",
    "owner",
    "repo",
    "token",
    "token_file",
    "api_url",
    "raw_url",
];

/// Keys of the `[network]` table.
const NETWORK_KEYS: &[&str] = &[
    "connect_timeout_sec",
    "http_timeout_sec",
    "retries",
    "backoff_sec",
    "max_backoff_sec",
    "max_wait_sec",
    "update_timeout_sec",
    "parallel",
];

/// Keys of the original flat format that ota acts on, with the new format's key for each.
const LEGACY_KEYS: &[(&str, &str)] = &[
    ("target_dir", "target_dir"),
    ("owner", "source.owner"),
    ("repo", "source.repo"),
    ("channel", "channel"),
    ("branch", "branch"),
    ("token", "source.token"),
    ("allow", "allow"),
    ("ignore", "ignore"),
    ("connect_timeout_sec", "network.connect_timeout_sec"),
    ("http_timeout_sec", "network.http_timeout_sec"),
    ("retries", "network.retries"),
    ("backoff_sec", "network.backoff_sec"),
    ("max_backoff_sec", "network.max_backoff_sec"),
];

/// Keys of the original format (and of its deployments) that ota does not act on, with what
/// ota does instead. These messages never include the key's value.
const LEGACY_IGNORED: &[(&str, &str)] = &[
    (
        "chunk",
        "`chunk` is not used: ota streams every download through its own fixed-size buffer",
    ),
    (
        "stage_dir",
        "`stage_dir` is not used: ota stages under state_dir (`<target_dir>/.ota/stage` by \
         default) so that renames stay on one filesystem",
    ),
    (
        "backup_dir",
        "`backup_dir` is not used: ota keeps the displaced files under state_dir \
         (`<target_dir>/.ota/backup` by default), on the target's filesystem",
    ),
    (
        "force",
        "`force` is not used: run `ota update --force` to reinstall",
    ),
    (
        "reset_mode",
        "`reset_mode` is not used: ota never resets the device; restart the application \
         from your service manager after an update",
    ),
    (
        "debug",
        "`debug` is not used: run ota with `-v` or set `RUST_LOG=ota=debug`",
    ),
    (
        "ssid",
        "`ssid` is not used: ota uses the system's network connection; configure Wi-Fi in \
         the operating system",
    ),
    (
        "password",
        "`password` is not used: ota uses the system's network connection; configure Wi-Fi \
         in the operating system and remove the password from this file",
    ),
    (
        "status_led_pin",
        "`status_led_pin` is not used: ota drives no LED; it reports through its exit code, \
         its log and the state files under state_dir",
    ),
    (
        "watchdog_timeout_ms",
        "`watchdog_timeout_ms` is not used: ota bounds each update by `update_timeout_sec` \
         (new format, default 3600) and leaves the watchdog to the system",
    ),
    (
        "max_update_attempts",
        "`max_update_attempts` is not used: ota retries each request `retries` times; run it \
         again later (from a timer) to retry a whole update",
    ),
    (
        "retry_backoff_sec",
        "`retry_backoff_sec` is not used: retries back off from `backoff_sec` up to \
         `max_backoff_sec`",
    ),
    (
        "file_retries",
        "`file_retries` is not used: each download is retried `retries` times like every \
         request",
    ),
    (
        "file_backoff_sec",
        "`file_backoff_sec` is not used: downloads back off from `backoff_sec` up to \
         `max_backoff_sec` like every request",
    ),
    (
        "log_file",
        "`log_file` is not used: ota logs to standard error; redirect it, or read it from \
         the system journal",
    ),
    (
        "progress_callback",
        "`progress_callback` is not used: ota logs its progress (more with `-v`)",
    ),
];

/// Whether a key is a comment: `_comment…` or `//…`. Comment keys are allowed anywhere and
/// ignored, since JSON has no comments.
fn is_comment_key(key: &str) -> bool {
    key.starts_with("_comment") || key.starts_with("//")
}

/// The document while it is being validated: values by their new-format key
/// (`source.owner`), taken one by one.
struct Doc<'a> {
    format: Format,
    legacy: bool,
    base_dir: PathBuf,
    env: &'a dyn Fn(&str) -> Option<String>,
    values: Vec<(&'static str, Value)>,
    warnings: Vec<String>,
}

impl Doc<'_> {
    /// The key as the user wrote it: the new format's dotted key, or the flat key.
    fn key(&self, name: &str) -> String {
        if self.legacy {
            name.rsplit('.').next().unwrap_or(name).to_owned()
        } else {
            name.to_owned()
        }
    }

    fn collect_new(&mut self, entries: Vec<(String, Value)>) -> Result<(), ConfigError> {
        for (key, value) in entries {
            if is_comment_key(&key) {
                continue;
            }
            match key.as_str() {
                "source" | "network" => {
                    let (section, known) = if key == "source" {
                        ("source", SOURCE_KEYS)
                    } else {
                        ("network", NETWORK_KEYS)
                    };
                    let Value::Table(inner) = value else {
                        return Err(self.wrong_type(section, raw::table_word(self.format), &value));
                    };
                    for (key, value) in inner {
                        if is_comment_key(&key) {
                            continue;
                        }
                        let Some(name) = ALL_KEYS.iter().find(|name| {
                            name.strip_prefix(section).and_then(|n| n.strip_prefix('.'))
                                == Some(key.as_str())
                        }) else {
                            return Err(self.unknown_key(Some(section), &key, known));
                        };
                        self.values.push((name, value));
                    }
                }
                _ => {
                    let Some(name) = TOP_KEYS.iter().find(|name| **name == key) else {
                        return Err(self.unknown_key(None, &key, TOP_KEYS));
                    };
                    self.values.push((name, value));
                }
            }
        }
        Ok(())
    }

    fn collect_legacy(&mut self, entries: Vec<(String, Value)>) -> Result<(), ConfigError> {
        for (key, value) in entries {
            if is_comment_key(&key) {
                continue;
            }
            if let Some((_, name)) = LEGACY_KEYS.iter().find(|(flat, _)| *flat == key) {
                self.values.push((name, value));
            } else if let Some((_, warning)) = LEGACY_IGNORED.iter().find(|(k, _)| *k == key) {
                self.warnings.push((*warning).to_owned());
            } else {
                let known: Vec<&str> = LEGACY_KEYS.iter().map(|(flat, _)| *flat).collect();
                return Err(self.unknown_key(None, &key, &known));
            }
        }
        Ok(())
    }

    /// The error for an unknown key, with the most useful hint there is.
    fn unknown_key(&self, section: Option<&str>, key: &str, known: &[&str]) -> ConfigError {
        let full = |name: &str| match section {
            Some(section) => format!("{section}.{name}"),
            None => name.to_owned(),
        };
        let same_name = ALL_KEYS.iter().find(|name| leaf(name) == key);
        let hint = if let (false, Some(elsewhere)) = (self.legacy, same_name) {
            match elsewhere.split_once('.') {
                Some((table, _)) => format!(
                    "`{key}` belongs in the `{table}` {}: write it as `{elsewhere}`",
                    self.table_noun()
                ),
                None => format!("`{key}` belongs at the top level, not in a table"),
            }
        } else if self.legacy && (same_name.is_some() || key == "source" || key == "network") {
            let new_name = same_name
                .filter(|name| leaf(name) != **name)
                .map(|name| format!(" (as `{name}`)"))
                .unwrap_or_default();
            format!(
                "this file is in the original updater's flat format, because it has a \
                 top-level `owner`/`repo`, and `{key}` exists only in the new format{new_name}; \
                 to use it, move the file to the new format, with `owner` and `repo` in a \
                 `source` {}",
                self.table_noun()
            )
        } else if let Some((_, why)) = LEGACY_IGNORED.iter().find(|(k, _)| *k == key) {
            format!("{why}; remove it")
        } else if let Some(close) = closest(key, known) {
            format!("did you mean `{}`?", full(close))
        } else {
            format!(
                "remove it; the keys allowed here are {}",
                known
                    .iter()
                    .map(|k| format!("`{}`", full(k)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        ConfigError::UnknownKey {
            key: full(key),
            hint,
        }
    }

    fn table_noun(&self) -> &'static str {
        match self.format {
            Format::Toml => "table",
            Format::Json => "object",
        }
    }

    /// An example of `key = value` in the file's syntax.
    fn example(&self, name: &str, value: &str) -> String {
        let key = self.key(name);
        match (self.format, self.legacy, name.split_once('.')) {
            (Format::Toml, false, Some((table, leaf))) => {
                format!("`{leaf} = {value}` under `[{table}]`")
            }
            (Format::Toml, _, _) => format!("`{key} = {value}`"),
            (Format::Json, false, Some((table, leaf))) => {
                format!("`\"{table}\": {{\"{leaf}\": {value}}}`")
            }
            (Format::Json, _, _) => format!("`\"{key}\": {value}`"),
        }
    }

    fn take(&mut self, name: &str) -> Option<Value> {
        let index = self.values.iter().position(|(n, _)| *n == name)?;
        match self.values.remove(index).1 {
            Value::Null => None,
            value => Some(value),
        }
    }

    fn wrong_type(&self, name: &str, expected: &'static str, found: &Value) -> ConfigError {
        let hint = match (expected, found) {
            ("an integer", Value::Str(s)) if s.trim().parse::<i64>().is_ok() => {
                "; write the number without quotes".to_owned()
            }
            ("a string", Value::Int(_) | Value::Float(_) | Value::Bool(_)) => {
                "; put the value in quotes".to_owned()
            }
            (_, Value::Table(_)) if self.format == Format::Toml => {
                "; a `[section]` header may be misplaced".to_owned()
            }
            _ => String::new(),
        };
        ConfigError::WrongType {
            key: self.key(name),
            expected,
            found: found.kind(self.format),
            hint,
        }
    }

    fn string(&mut self, name: &str) -> Result<Option<String>, ConfigError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong_type(name, "a string", &other)),
        }
    }

    fn strings(&mut self, name: &str) -> Result<Vec<String>, ConfigError> {
        let items = match self.take(name) {
            None => return Ok(Vec::new()),
            Some(Value::Array(items)) => items,
            Some(other) => return Err(self.wrong_type(name, "an array of strings", &other)),
        };
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Str(s) => Ok(s),
                other => Err(ConfigError::WrongType {
                    key: format!("{}[{i}]", self.key(name)),
                    expected: "a string",
                    found: other.kind(self.format),
                    hint: String::new(),
                }),
            })
            .collect()
    }

    fn integer(
        &mut self,
        name: &str,
        range: RangeInclusive<u64>,
        default: u64,
    ) -> Result<u64, ConfigError> {
        let key = self.key(name);
        let (low, high) = (*range.start(), *range.end());
        match self.take(name) {
            None => Ok(default),
            Some(Value::Int(n)) => match u64::try_from(n) {
                Ok(n) if range.contains(&n) => Ok(n),
                _ => Err(ConfigError::invalid(
                    &key,
                    format!("`{key}` is {n}, but it must be between {low} and {high}"),
                )),
            },
            Some(Value::Float(f)) => Err(ConfigError::invalid(
                &key,
                format!("`{key}` is {f}, but it must be a whole number between {low} and {high}"),
            )),
            Some(other) => Err(self.wrong_type(name, "an integer", &other)),
        }
    }

    fn seconds(
        &mut self,
        name: &str,
        range: RangeInclusive<u64>,
        default: u64,
    ) -> Result<Duration, ConfigError> {
        self.integer(name, range, default).map(Duration::from_secs)
    }

    /// Rejects a template's placeholder.
    fn no_placeholder(&self, name: &str, value: &str) -> Result<(), ConfigError> {
        if is_placeholder(value) {
            Err(self.placeholder(name, Some(value.to_owned())))
        } else {
            Ok(())
        }
    }

    fn placeholder(&self, name: &str, value: Option<String>) -> ConfigError {
        let hint = match name {
            "source.owner" => "set it to the GitHub user or organisation that owns the repository",
            "source.repo" => "set it to the name of the repository",
            "source.token" | TOKEN_ENV => {
                "set it to a GitHub token that can read the repository, or remove it (a \
                 public repository needs none)"
            }
            "branch" => "set it to the branch the developer channel follows",
            "tag" => {
                "set it to the release tag to install, or remove it to follow the latest release"
            }
            "target_dir" => "set it to the directory ota keeps up to date",
            _ => "replace it with the real value",
        };
        ConfigError::Placeholder {
            key: if name == TOKEN_ENV {
                name.to_owned()
            } else {
                self.key(name)
            },
            value,
            hint: hint.to_owned(),
        }
    }

    /// Turns the collected values into a [`Config`], checking each; also tells whether the
    /// token was written in the config itself.
    fn build(mut self) -> Result<(Config, bool), ConfigError> {
        let target_dir = match self.string("target_dir")? {
            Some(dir) => self.path("target_dir", &dir)?,
            None if self.legacy => self.base_dir.clone(),
            None => {
                return Err(ConfigError::Missing {
                    key: "target_dir".to_owned(),
                    hint: format!(
                        "set it to the directory ota keeps up to date, e.g. {}",
                        self.example("target_dir", "\"/opt/app\"")
                    ),
                });
            }
        };
        if target_dir.parent().is_none() {
            return Err(ConfigError::invalid(
                "target_dir",
                format!(
                    "`{}` is the filesystem root; set it to the application's own directory",
                    self.key("target_dir")
                ),
            ));
        }
        let channel = self.channel()?;
        let allow = self.strings("allow")?;
        let ignore = self.strings("ignore")?;
        let filter = Filter::new(&allow, &ignore).map_err(|err| ConfigError::Invalid {
            key: err.key(),
            message: err.to_string(),
        })?;
        let state_dir = self.state_dir(&target_dir)?;
        let (source, inline_token) = self.source()?;
        let network = self.network()?;
        debug_assert!(self.values.is_empty(), "every collected key is read");
        Ok((
            Config {
                target_dir,
                state_dir,
                channel,
                filter,
                source,
                network,
                warnings: self.warnings,
            },
            inline_token,
        ))
    }

    fn channel(&mut self) -> Result<Channel, ConfigError> {
        let channel = self.string("channel")?;
        let branch = self.string("branch")?;
        let tag = self.string("tag")?;
        for (name, value) in [("branch", &branch), ("tag", &tag)] {
            if let Some(value) = value {
                self.no_placeholder(name, value)?;
                let key = self.key(name);
                check_ref_name(value, name).map_err(|why| {
                    ConfigError::invalid(&key, format!("`{key}` is {value:?}, which {why}"))
                })?;
            }
        }
        match channel.as_deref().unwrap_or("stable") {
            "stable" => {
                if branch.is_some() {
                    self.warnings.push(format!(
                        "`{}` is not used with the stable channel, which follows releases; set \
                         `{}` to \"developer\" to follow the branch",
                        self.key("branch"),
                        self.key("channel")
                    ));
                }
                Ok(Channel::Stable { tag })
            }
            "developer" => {
                if tag.is_some() {
                    let key = self.key("tag");
                    return Err(ConfigError::invalid(
                        &key,
                        format!(
                            "`{key}` pins a release, which only the stable channel installs; \
                             remove it, or set `{}` to \"stable\"",
                            self.key("channel")
                        ),
                    ));
                }
                Ok(Channel::Developer {
                    branch: branch.unwrap_or_else(|| "main".to_owned()),
                })
            }
            other => {
                let key = self.key("channel");
                let suggestion = closest(other, &["stable", "developer"])
                    .map(|c| format!("; did you mean \"{c}\"?"))
                    .unwrap_or_default();
                Err(ConfigError::invalid(
                    &key,
                    format!(
                        "`{key}` is {other:?}, but it must be \"stable\" (the latest release) \
                         or \"developer\" (the tip of `branch`){suggestion}"
                    ),
                ))
            }
        }
    }

    /// A directory path: absolute, lexically normalised.
    fn path(&self, name: &str, value: &str) -> Result<PathBuf, ConfigError> {
        let key = self.key(name);
        let why = if value.trim().is_empty() {
            Some("is empty; set it to a directory or remove it".to_owned())
        } else if value.contains('\0') {
            Some("contains a NUL character".to_owned())
        } else if value.starts_with('~') {
            Some(format!(
                "is {value:?}, but ota does not expand `~`; write the absolute path"
            ))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(ConfigError::invalid(&key, format!("`{key}` {why}")));
        }
        self.no_placeholder(name, value)?;
        Ok(normalize(&self.base_dir.join(value)))
    }

    fn state_dir(&mut self, target_dir: &Path) -> Result<PathBuf, ConfigError> {
        let Some(dir) = self.string("state_dir")? else {
            return Ok(target_dir.join(".ota"));
        };
        let state_dir = self.path("state_dir", &dir)?;
        let problem = if state_dir == target_dir {
            Some("is target_dir itself; ota's state must not mix with the application's files")
        } else if target_dir.starts_with(&state_dir) {
            Some(
                "contains target_dir; put it inside target_dir (the default is \
                 `<target_dir>/.ota`) or beside it",
            )
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(ConfigError::invalid(
                "state_dir",
                format!("`state_dir` ({}) {problem}", state_dir.display()),
            ));
        }
        if state_dir.starts_with(target_dir) && state_dir != target_dir.join(".ota") {
            self.warnings.push(format!(
                "`state_dir` ({}) is inside target_dir but is not `.ota`: a release must never \
                 contain files under it",
                state_dir.display()
            ));
        }
        Ok(state_dir)
    }

    fn source(&mut self) -> Result<(SourceConfig, bool), ConfigError> {
        let kind = self.string("source.kind")?;
        if let Some(kind) = kind.filter(|kind| kind != "github") {
            return Err(ConfigError::invalid(
                "source.kind",
                format!(
                    "`source.kind` is {kind:?}, but the only kind ota supports is \"github\" \
                     (GitHub or a compatible server); remove it or set it to \"github\""
                ),
            ));
        }
        let owner = self.github_name("source.owner", "\"acme\"", 100)?;
        let repo = self.github_name("source.repo", "\"app\"", 100)?;
        let (token, inline) = self.token()?;
        let api_url = self.url("source.api_url", "https://api.github.com", token.is_some())?;
        let raw_url = self.url(
            "source.raw_url",
            "https://raw.githubusercontent.com",
            token.is_some(),
        )?;
        Ok((
            SourceConfig::Github(GithubConfig {
                owner,
                repo,
                token,
                api_url,
                raw_url,
            }),
            inline,
        ))
    }

    /// A GitHub user, organisation or repository name.
    fn github_name(
        &mut self,
        name: &str,
        example: &str,
        max_len: usize,
    ) -> Result<String, ConfigError> {
        let key = self.key(name);
        let what = if name == "source.owner" {
            "the GitHub user or organisation that owns the repository"
        } else {
            "the name of the repository"
        };
        let Some(value) = self.string(name)? else {
            return Err(ConfigError::Missing {
                key,
                hint: format!("set it to {what}, e.g. {}", self.example(name, example)),
            });
        };
        self.no_placeholder(name, &value)?;
        let invalid = |why: String| Err(ConfigError::invalid(&key, format!("`{key}` {why}")));
        if value.is_empty() {
            return invalid(format!("is empty: set it to {what}"));
        }
        let split = value.split_once('/');
        if let Some((owner, repo)) = split
            .filter(|(owner, repo)| !owner.is_empty() && !repo.is_empty() && !repo.contains('/'))
        {
            return invalid(format!(
                "is {value:?}, which looks like owner/repository: set `{}` to {owner:?} and \
                 `{}` to {repo:?}",
                self.key("source.owner"),
                self.key("source.repo")
            ));
        }
        if let Some(bad) = value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return invalid(format!(
                "is {value:?}, which contains {bad:?}; GitHub names hold only letters, digits, \
                 `-`, `_` and `.`"
            ));
        }
        if value == "." || value == ".." {
            return invalid(format!("is {value:?}, which is not a GitHub name"));
        }
        if value.len() > max_len {
            return invalid(format!(
                "is {} characters long; GitHub names are at most {max_len}",
                value.len()
            ));
        }
        let stem = value.strip_suffix(".git").filter(|_| name == "source.repo");
        if let Some(stem) = stem {
            return invalid(format!(
                "is {value:?}: give the repository's name without `.git`, {stem:?}"
            ));
        }
        Ok(value)
    }

    /// The token, from `token`, `token_file` or `OTA_TOKEN`, in that order; and whether it was
    /// written in the config itself. Never puts the token in an error or a warning.
    fn token(&mut self) -> Result<(Option<Token>, bool), ConfigError> {
        let inline = self
            .string("source.token")?
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty());
        let file = self.string("source.token_file")?;
        let (secret, name) = match (inline, file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    "source.token",
                    "`source.token` and `source.token_file` are both set: keep one \
                     (`token_file` keeps the secret out of this file)"
                        .to_owned(),
                ));
            }
            (Some(token), None) => (token, "source.token"),
            (None, Some(file)) => (self.read_token_file(&file)?, "source.token_file"),
            (None, None) => match (self.env)(TOKEN_ENV).map(|t| t.trim().to_owned()) {
                Some(token) if !token.is_empty() => (token, TOKEN_ENV),
                _ => return Ok((None, false)),
            },
        };
        let key = if name == TOKEN_ENV {
            format!("the environment variable `{TOKEN_ENV}`")
        } else {
            format!("`{}`", self.key(name))
        };
        if is_placeholder(&secret) {
            // Shown only when it cannot be a real token pasted into a template (`<ghp_…>`).
            let shown = (secret.len() <= 40 && !secret.chars().any(|c| c.is_ascii_digit()))
                .then_some(secret);
            if name == "source.token_file" {
                let shown = shown.map(|s| format!(" `{s}`")).unwrap_or_default();
                return Err(ConfigError::invalid(
                    &self.key(name),
                    format!(
                        "the file named by {key} still holds a placeholder{shown}: put a GitHub \
                         token that can read the repository in it"
                    ),
                ));
            }
            return Err(self.placeholder(name, shown));
        }
        let why = if secret.len() > MAX_TOKEN_LEN {
            Some(format!("is longer than {MAX_TOKEN_LEN} bytes"))
        } else if secret.chars().any(|c| !c.is_ascii_graphic()) {
            Some(
                "contains a space, a control character or a non-ASCII character, which cannot \
                 be sent in an HTTP header"
                    .to_owned(),
            )
        } else {
            None
        };
        if let Some(why) = why {
            let subject = if name == "source.token_file" {
                format!("the token in the file named by {key}")
            } else {
                format!("the token in {key}")
            };
            return Err(ConfigError::invalid(
                &self.key(name),
                format!("{subject} {why}; check that it was copied whole"),
            ));
        }
        Ok((Some(Token::new(secret)), name == "source.token"))
    }

    fn read_token_file(&mut self, file: &str) -> Result<String, ConfigError> {
        use std::io::Read as _;
        let name = "source.token_file";
        let key = self.key(name);
        let path = self.path(name, file)?;
        let fail = |why: String| {
            ConfigError::invalid(
                &key,
                format!(
                    "cannot read the token from `{key}` ({}): {why}",
                    path.display()
                ),
            )
        };
        let io_fail =
            |err: std::io::Error| fail(format!("{err}; check the path and its permissions"));
        let file = std::fs::File::open(&path).map_err(io_fail)?;
        let mut bytes = Vec::new();
        file.take(MAX_TOKEN_FILE_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(io_fail)?;
        if bytes.len() as u64 > MAX_TOKEN_FILE_SIZE {
            return Err(fail(format!(
                "it is larger than {MAX_TOKEN_FILE_SIZE} bytes, so it is not a token file"
            )));
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| fail("it is not text; it must hold only the token".to_owned()))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(fail(
                "it is empty; put the token in it, or remove `token_file`".to_owned(),
            ));
        }
        if readable_by_others(&path) {
            self.warnings.push(format!(
                "the token file {} can be read by every user on this system; restrict it \
                 (`chmod 600`)",
                path.display()
            ));
        }
        Ok(token.to_owned())
    }

    /// An `http://` or `https://` base URL, without a trailing `/`.
    fn url(&mut self, name: &str, default: &str, has_token: bool) -> Result<String, ConfigError> {
        let key = self.key(name);
        let Some(url) = self.string(name)? else {
            return Ok(default.to_owned());
        };
        let parsed = parse_base_url(&url).map_err(|why| {
            // The URL is not echoed when it may carry a secret (`user:pass@`, `?access_token=`).
            let message = if url.contains(['@', '?', '#']) {
                format!("`{key}` {why}")
            } else {
                format!("`{key}` is {url:?}, which {why}")
            };
            ConfigError::invalid(&key, message)
        })?;
        if parsed.scheme == "http" && !is_local_host(&parsed.host) {
            let token = if has_token { " and the token" } else { "" };
            self.warnings.push(format!(
                "`{key}` uses plain http:// to {}, which is not on the local network: releases{token} \
                 travel unencrypted and can be altered on the way; use https://",
                parsed.host
            ));
        }
        Ok(parsed.normalized)
    }

    fn network(&mut self) -> Result<NetworkConfig, ConfigError> {
        let defaults = NetworkConfig::default();
        let secs = |d: Duration| d.as_secs();
        let network = NetworkConfig {
            connect_timeout: self.seconds(
                "network.connect_timeout_sec",
                1..=3600,
                secs(defaults.connect_timeout),
            )?,
            http_timeout: self.seconds(
                "network.http_timeout_sec",
                1..=3600,
                secs(defaults.http_timeout),
            )?,
            retries: self.integer("network.retries", 0..=100, u64::from(defaults.retries))? as u32,
            backoff: self.seconds("network.backoff_sec", 0..=3600, secs(defaults.backoff))?,
            max_backoff: self.seconds(
                "network.max_backoff_sec",
                0..=3600,
                secs(defaults.max_backoff),
            )?,
            max_wait: self.seconds("network.max_wait_sec", 0..=3600, secs(defaults.max_wait))?,
            update_timeout: self.seconds(
                "network.update_timeout_sec",
                1..=86_400,
                secs(defaults.update_timeout),
            )?,
            parallel: self.integer("network.parallel", 1..=64, defaults.parallel as u64)? as usize,
        };
        if network.backoff > network.max_backoff {
            let (backoff, max) = (
                self.key("network.backoff_sec"),
                self.key("network.max_backoff_sec"),
            );
            return Err(ConfigError::invalid(
                &backoff,
                format!(
                    "`{backoff}` ({}) is larger than `{max}` ({}); the first delay cannot \
                     exceed the cap, so lower `{backoff}` or raise `{max}`",
                    network.backoff.as_secs(),
                    network.max_backoff.as_secs()
                ),
            ));
        }
        Ok(network)
    }
}

/// Every key of the new format, dotted.
const ALL_KEYS: &[&str] = &[
    "target_dir",
    "channel",
    "branch",
    "tag",
    "allow",
    "ignore",
    "state_dir",
    "source.kind",
    "source.owner",
    "source.repo",
    "source.token",
    "source.token_file",
    "source.api_url",
    "source.raw_url",
    "network.connect_timeout_sec",
    "network.http_timeout_sec",
    "network.retries",
    "network.backoff_sec",
    "network.max_backoff_sec",
    "network.max_wait_sec",
    "network.update_timeout_sec",
    "network.parallel",
];

fn leaf(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

/// The candidate closest to `word`, if one is close enough to be a likely typo.
fn closest<'k>(word: &str, candidates: &[&'k str]) -> Option<&'k str> {
    let word = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(&word, c), *c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Whether a value is a template's placeholder rather than a real value. The rule, case
/// insensitive, after trimming spaces:
/// - it starts with `YOUR_` or `YOUR-` (`YOUR_GITHUB_USERNAME`, `your-token-here`);
/// - it is wrapped in `<…>`, `{{…}}` or `${…}` (`<owner>`, `{{ repo }}`, `${OTA_TOKEN}`:
///   ota expands no variables);
/// - it is `CHANGE_ME`, `CHANGEME`, `REPLACE_ME`, `TODO`, `FIXME`, `TBD` or `PLACEHOLDER`
///   (with `_`, `-` or nothing between the words), `...` or `…`, or three or more `x`.
pub fn is_placeholder(value: &str) -> bool {
    let v = value.trim().to_ascii_lowercase();
    let wrapped = |open: &str, close: &str| {
        v.len() > open.len() + close.len() && v.starts_with(open) && v.ends_with(close)
    };
    let squashed: String = v
        .chars()
        .filter(|c| !matches!(c, '_' | '-' | ' '))
        .collect();
    v.starts_with("your_")
        || v.starts_with("your-")
        || wrapped("<", ">")
        || wrapped("{{", "}}")
        || wrapped("${", "}")
        || matches!(
            squashed.as_str(),
            "changeme" | "replaceme" | "todo" | "fixme" | "tbd" | "placeholder"
        )
        || v == "..."
        || v == "…"
        || (v.len() >= 3 && v.chars().all(|c| c == 'x'))
}

/// Checks a branch or tag name against git's ref-name rules (`git check-ref-format`), plus
/// no leading `-`. Returns why it is not valid.
fn check_ref_name(name: &str, what: &str) -> Result<(), String> {
    let prefix = if what == "branch" {
        "refs/heads/"
    } else {
        "refs/tags/"
    };
    if let Some(short) = name.strip_prefix(prefix) {
        return Err(format!(
            "is a full ref; give the {what} name alone, {short:?}"
        ));
    }
    let why = if name.is_empty() {
        "is empty".to_owned()
    } else if name == "@" {
        "is `@`, which git does not allow as a name".to_owned()
    } else if name.len() > 255 {
        "is longer than 255 bytes".to_owned()
    } else if name.starts_with('-') {
        "starts with `-`".to_owned()
    } else if name.starts_with('/') || name.ends_with('/') {
        "starts or ends with `/`".to_owned()
    } else if name.ends_with('.') {
        "ends with `.`".to_owned()
    } else if name.contains("..") {
        "contains `..`".to_owned()
    } else if name.contains("@{") {
        "contains `@{`".to_owned()
    } else if name.contains("//") {
        "contains `//`".to_owned()
    } else if let Some(c) = name.chars().find(|c| {
        c.is_ascii_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\')
    }) {
        if c.is_ascii_control() {
            "contains a control character".to_owned()
        } else {
            format!("contains {c:?}")
        }
    } else if name.split('/').any(|part| part.starts_with('.')) {
        "has a part that starts with `.`".to_owned()
    } else if name.split('/').any(|part| part.ends_with(".lock")) {
        "has a part that ends with `.lock`".to_owned()
    } else {
        return Ok(());
    };
    Err(format!("is not a valid git {what} name: it {why}"))
}

/// A checked base URL.
struct BaseUrl {
    scheme: &'static str,
    host: String,
    /// `scheme://authority/path` without a trailing `/`.
    normalized: String,
}

/// Parses an `http(s)://host[:port][/path]` base URL; the error says why it is not one.
fn parse_base_url(url: &str) -> Result<BaseUrl, String> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains a space or a control character".to_owned());
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("does not start with https:// (or http://)".to_owned());
    };
    let scheme = if scheme.eq_ignore_ascii_case("https") {
        "https"
    } else if scheme.eq_ignore_ascii_case("http") {
        "http"
    } else {
        return Err(format!(
            "uses the scheme {scheme:?}; ota speaks only https:// and http://"
        ));
    };
    if rest.contains(['?', '#']) {
        return Err(
            "has a query or fragment (`?…` or `#…`), which a base URL cannot have; remove it"
                .to_owned(),
        );
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(
            "holds credentials before an `@`; remove them and give the token in \
                    `token`, `token_file` or OTA_TOKEN"
                .to_owned(),
        );
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err("has an IPv6 address without its closing `]`".to_owned());
        };
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(format!(
                "has {host:?} in brackets, which is not an IPv6 address"
            ));
        }
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err("has text after the IPv6 address's `]`".to_owned()),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("has no host".to_owned());
    }
    if !authority.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(format!(
            "has the host {host:?}, which is not a valid host name"
        ));
    }
    let valid_port = |port: &str| {
        port.chars().all(|c| c.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p != 0)
    };
    if let Some(port) = port.filter(|port| !valid_port(port)) {
        return Err(format!(
            "has the port {port:?}; a port is a number from 1 to 65535"
        ));
    }
    let path = path.trim_end_matches('/');
    Ok(BaseUrl {
        scheme,
        host: host.to_ascii_lowercase(),
        normalized: format!("{scheme}://{authority}{path}"),
    })
}

/// Whether plain HTTP to this host stays on the machine or the local network: loopback,
/// private and link-local addresses, `localhost`, single-label names and the local-only
/// domains `.local`, `.lan`, `.internal`, `.home.arpa`, `.localhost`.
fn is_local_host(host: &str) -> bool {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => is_local_v4(ip),
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback()
                || ip.is_unique_local()
                || ip.is_unicast_link_local()
                || ip.to_ipv4_mapped().is_some_and(is_local_v4)
        }
        Err(_) => {
            let host = host.trim_end_matches('.');
            host == "localhost"
                || !host.contains('.')
                || [".localhost", ".local", ".lan", ".internal", ".home.arpa"]
                    .iter()
                    .any(|suffix| host.ends_with(suffix))
        }
    }
}

fn is_local_v4(ip: Ipv4Addr) -> bool {
    ip.is_loopback() || ip.is_private() || ip.is_link_local()
}

/// Lexical normalisation: drops `.`, resolves `..` against the part before it (never above
/// the root). Does not touch the disk.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "ghp_S3cretS3cretS3cretS3cret";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn base() -> &'static Path {
        Path::new("/etc/ota")
    }

    fn toml(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Format::Toml, base(), &no_env)
    }

    fn json(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Format::Json, base(), &no_env)
    }

    /// A minimal new-format TOML config with `extra` top-level lines and `source` lines.
    fn minimal(top: &str, source: &str) -> String {
        format!(
            "target_dir = \"/opt/app\"\n{top}\n[source]\nowner = \"acme\"\nrepo = \"app\"\n{source}\n"
        )
    }

    fn with_network(network: &str) -> String {
        format!("{}\n[network]\n{network}\n", minimal("", ""))
    }

    fn err(text: &str) -> ConfigError {
        toml(text).unwrap_err()
    }

    fn github(config: &Config) -> &GithubConfig {
        let SourceConfig::Github(github) = &config.source;
        github
    }

    #[test]
    fn minimal_config_takes_every_default() {
        let config = toml(&minimal("", "")).unwrap();
        assert_eq!(config.target_dir, Path::new("/opt/app"));
        assert_eq!(config.state_dir, Path::new("/opt/app/.ota"));
        assert_eq!(config.channel, Channel::Stable { tag: None });
        assert!(config.filter.includes("anything/at/all"));
        let gh = github(&config);
        assert_eq!((gh.owner.as_str(), gh.repo.as_str()), ("acme", "app"));
        assert_eq!(gh.token, None);
        assert_eq!(gh.api_url, "https://api.github.com");
        assert_eq!(gh.raw_url, "https://raw.githubusercontent.com");
        assert_eq!(config.network, NetworkConfig::default());
        assert_eq!(config.network.max_wait, Duration::from_secs(300));
        assert_eq!(config.network.update_timeout, Duration::from_secs(3600));
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }

    const FULL_TOML: &str = r#"
target_dir = "/opt/app"
channel = "stable"
tag = "v1.4.0"
allow = ["app/", "lib/", "main.py"]
ignore = ["tests/", "*.md"]
state_dir = "/var/lib/ota"
[source]
kind = "github"
owner = "acme"
repo = "app"
token = "ghp_S3cretS3cretS3cretS3cret"
api_url = "https://ghe.example.com/api/v3/"
raw_url = "https://ghe.example.com/raw"
[network]
connect_timeout_sec = 10
http_timeout_sec = 30
retries = 7
backoff_sec = 2
max_backoff_sec = 120
max_wait_sec = 600
update_timeout_sec = 7200
parallel = 8
"#;

    const FULL_JSON: &str = r#"{
"target_dir": "/opt/app", "channel": "stable", "tag": "v1.4.0",
"allow": ["app/", "lib/", "main.py"], "ignore": ["tests/", "*.md"],
"state_dir": "/var/lib/ota",
"source": {"kind": "github", "owner": "acme", "repo": "app",
  "token": "ghp_S3cretS3cretS3cretS3cret",
  "api_url": "https://ghe.example.com/api/v3/", "raw_url": "https://ghe.example.com/raw"},
"network": {"connect_timeout_sec": 10, "http_timeout_sec": 30, "retries": 7,
  "backoff_sec": 2, "max_backoff_sec": 120, "max_wait_sec": 600,
  "update_timeout_sec": 7200, "parallel": 8}
}"#;

    fn check_full(config: &Config) {
        assert_eq!(config.target_dir, Path::new("/opt/app"));
        assert_eq!(config.state_dir, Path::new("/var/lib/ota"));
        assert_eq!(
            config.channel,
            Channel::Stable {
                tag: Some("v1.4.0".into())
            }
        );
        assert!(config.filter.includes("app/x.py"));
        assert!(config.filter.includes("main.py"));
        assert!(!config.filter.includes("lib/README.md"));
        assert!(!config.filter.includes("other.py"));
        let gh = github(config);
        assert_eq!(gh.token.as_ref().unwrap().expose(), SECRET);
        assert_eq!(gh.api_url, "https://ghe.example.com/api/v3");
        assert_eq!(gh.raw_url, "https://ghe.example.com/raw");
        assert_eq!(
            config.network,
            NetworkConfig {
                connect_timeout: Duration::from_secs(10),
                http_timeout: Duration::from_secs(30),
                retries: 7,
                backoff: Duration::from_secs(2),
                max_backoff: Duration::from_secs(120),
                max_wait: Duration::from_secs(600),
                update_timeout: Duration::from_secs(7200),
                parallel: 8,
            }
        );
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }

    #[test]
    fn full_toml() {
        check_full(&toml(FULL_TOML).unwrap());
    }

    #[test]
    fn full_json_has_the_same_keys() {
        let config = json(FULL_JSON).unwrap();
        check_full(&config);
        assert_eq!(
            config.filter.fingerprint(),
            toml(FULL_TOML).unwrap().filter.fingerprint()
        );
    }

    #[test]
    fn developer_channel() {
        let config = toml(&minimal("channel = \"developer\"", "")).unwrap();
        assert_eq!(
            config.channel,
            Channel::Developer {
                branch: "main".into()
            }
        );
        let config = toml(&minimal(
            "channel = \"developer\"\nbranch = \"feature/x\"",
            "",
        ))
        .unwrap();
        assert_eq!(
            config.channel,
            Channel::Developer {
                branch: "feature/x".into()
            }
        );
        assert!(config.warnings.is_empty());
    }

    #[test]
    fn tag_with_developer_channel_is_an_error() {
        let e = err(&minimal("channel = \"developer\"\ntag = \"v1\"", ""));
        assert_eq!(e.key(), Some("tag"));
        assert!(e.to_string().contains("only the stable channel"), "{e}");
    }

    #[test]
    fn branch_with_stable_channel_is_a_warning() {
        let config = toml(&minimal("branch = \"dev\"", "")).unwrap();
        assert_eq!(config.channel, Channel::Stable { tag: None });
        assert_eq!(config.warnings.len(), 1);
        assert!(
            config.warnings[0].contains("`branch` is not used"),
            "{:?}",
            config.warnings
        );
    }

    #[test]
    fn unknown_channel_suggests() {
        let e = err(&minimal("channel = \"dev\"", ""));
        assert_eq!(e.key(), Some("channel"));
        assert!(e.to_string().contains("did you mean \"developer\"?"), "{e}");
        let e = err(&minimal("channel = \"nightly\"", ""));
        assert!(e.to_string().contains("\"stable\""), "{e}");
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let config = toml(
            "target_dir = \"app/./x/../y\"\nstate_dir = \"../state\"\n[source]\nowner = \"a\"\nrepo = \"b\"",
        )
        .unwrap();
        assert_eq!(config.target_dir, Path::new("/etc/ota/app/y"));
        assert_eq!(config.state_dir, Path::new("/etc/state"));
    }

    #[test]
    fn relative_base_dir_is_made_absolute() {
        let config =
            Config::parse(&minimal("", ""), Format::Toml, Path::new("conf"), &no_env).unwrap();
        assert!(config.target_dir.is_absolute());
        let config = Config::parse(
            "target_dir = \"x\"\n[source]\nowner = \"a\"\nrepo = \"b\"",
            Format::Toml,
            Path::new("conf"),
            &no_env,
        )
        .unwrap();
        assert!(config.target_dir.is_absolute());
        assert!(config.target_dir.ends_with("conf/x"));
    }

    #[test]
    fn target_dir_is_required_with_an_example() {
        let e = err("[source]\nowner = \"a\"\nrepo = \"b\"");
        assert_eq!(e.key(), Some("target_dir"));
        assert!(e.to_string().contains("`target_dir = \"/opt/app\"`"), "{e}");
        let e = json(r#"{"source": {"owner": "a", "repo": "b"}}"#).unwrap_err();
        assert!(
            e.to_string().contains(r#"`"target_dir": "/opt/app"`"#),
            "{e}"
        );
    }

    #[test]
    fn bad_target_dirs() {
        for (dir, needle) in [
            ("", "empty"),
            ("  ", "empty"),
            ("/", "root"),
            ("/..", "root"),
            ("~/app", "`~`"),
            ("YOUR_APP_DIR", "placeholder"),
        ] {
            let e = err(&format!(
                "target_dir = {dir:?}\n[source]\nowner = \"a\"\nrepo = \"b\""
            ));
            assert_eq!(e.key(), Some("target_dir"), "{dir:?}");
            assert!(e.to_string().contains(needle), "{dir:?}: {e}");
        }
    }

    #[test]
    fn state_dir_checks() {
        let e = err(&minimal("state_dir = \"/opt/app\"", ""));
        assert_eq!(e.key(), Some("state_dir"));
        let e = err(&minimal("state_dir = \"/opt\"", ""));
        assert!(e.to_string().contains("contains target_dir"), "{e}");
        let e = err(&minimal("state_dir = \"\"", ""));
        assert!(e.to_string().contains("empty"), "{e}");
        let config = toml(&minimal("state_dir = \"/opt/app/state\"", "")).unwrap();
        assert!(
            config.warnings[0].contains("inside target_dir"),
            "{:?}",
            config.warnings
        );
        let config = toml(&minimal("state_dir = \"/opt/app/.ota\"", "")).unwrap();
        assert!(config.warnings.is_empty());
        let config = toml(&minimal("state_dir = \"/var/lib/ota\"", "")).unwrap();
        assert_eq!(config.state_dir, Path::new("/var/lib/ota"));
    }

    #[test]
    fn unknown_keys_suggest_the_closest_at_every_level() {
        for (text, key, suggestion) in [
            (minimal("chanel = \"stable\"", ""), "chanel", "channel"),
            (minimal("", "ownr = \"x\""), "source.ownr", "source.owner"),
            (
                minimal("", "tokenfile = \"x\""),
                "source.tokenfile",
                "source.token_file",
            ),
            (
                with_network("retry = 3"),
                "network.retry",
                "network.retries",
            ),
            (
                with_network("paralel = 3"),
                "network.paralel",
                "network.parallel",
            ),
            (
                with_network("max_wait = 3"),
                "network.max_wait",
                "network.max_wait_sec",
            ),
        ] {
            let e = err(&text);
            assert_eq!(e.key(), Some(key));
            assert!(
                e.to_string()
                    .contains(&format!("did you mean `{suggestion}`?")),
                "{e}"
            );
            assert!(matches!(e, ConfigError::UnknownKey { .. }));
        }
    }

    #[test]
    fn unknown_keys_in_json_too() {
        let e = json(r#"{"target_dir": "/a", "source": {"ownr": "a", "repo": "b"}}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown key `source.ownr`: did you mean `source.owner`?"
        );
    }

    #[test]
    fn unknown_key_without_a_close_match_lists_the_valid_ones() {
        let e = err(&with_network("zzz = 1"));
        let text = e.to_string();
        assert!(
            text.starts_with("unknown key `network.zzz`: remove it;"),
            "{text}"
        );
        assert!(text.contains("`network.parallel`"), "{text}");
    }

    #[test]
    fn a_key_in_the_wrong_table_says_where_it_belongs() {
        let e = err("target_dir = \"/a\"\nowner = \"x\"\n[source]\nrepo = \"b\"");
        assert_eq!(e.key(), Some("owner"));
        assert!(
            e.to_string().contains("belongs in the `source` table"),
            "{e}"
        );
        let e = err(&minimal("", "retries = 3"));
        assert!(
            e.to_string().contains("write it as `network.retries`"),
            "{e}"
        );
        let e = err(&with_network("branch = \"x\""));
        assert!(e.to_string().contains("belongs at the top level"), "{e}");
        let e =
            json(r#"{"target_dir": "/a", "retries": 1, "source": {"owner": "a", "repo": "b"}}"#)
                .unwrap_err();
        assert!(e.to_string().contains("the `network` object"), "{e}");
    }

    #[test]
    fn original_format_keys_are_errors_in_the_new_format() {
        let e = err(&minimal("stage_dir = \".ota_stage\"", ""));
        assert_eq!(e.key(), Some("stage_dir"));
        assert!(e.to_string().contains("ota stages under state_dir"), "{e}");
    }

    #[test]
    fn wrong_types_name_the_key_and_the_type() {
        let cases = [
            (
                with_network("retries = \"3\""),
                "network.retries",
                "must be an integer, not a string; write the number without quotes",
            ),
            (
                with_network("retries = 2.5"),
                "network.retries",
                "must be a whole number",
            ),
            (
                with_network("http_timeout_sec = 20.0"),
                "network.http_timeout_sec",
                "must be a whole number",
            ),
            (
                with_network("retries = -1"),
                "network.retries",
                "is -1, but it must be between 0 and 100",
            ),
            (
                with_network("parallel = true"),
                "network.parallel",
                "must be an integer, not a boolean",
            ),
            (
                minimal("", "").replace("\"acme\"", "5"),
                "source.owner",
                "must be a string, not an integer; put the value in quotes",
            ),
            (
                minimal("allow = \"lib/\"", ""),
                "allow",
                "must be an array of strings, not a string",
            ),
            (
                minimal("allow = [\"a\", 3]", ""),
                "allow[1]",
                "must be a string, not an integer",
            ),
            (minimal("channel = 1979-05-27", ""), "channel", "not a date"),
            (
                "target_dir = \"/a\"\nsource = \"github\"".to_owned(),
                "source",
                "must be a table, not a string",
            ),
        ];
        for (text, key, needle) in cases {
            let e = err(&text);
            assert_eq!(e.key(), Some(key), "{e}");
            assert!(e.to_string().contains(needle), "{key}: {e}");
        }
        let e = json(r#"{"target_dir": "/a", "source": [1]}"#).unwrap_err();
        assert!(
            e.to_string()
                .contains("`source` must be an object, not an array"),
            "{e}"
        );
    }

    #[test]
    fn number_ranges() {
        for (key, low, high) in [
            ("connect_timeout_sec", 1, 3600),
            ("http_timeout_sec", 1, 3600),
            ("retries", 0, 100),
            ("max_backoff_sec", 0, 3600),
            ("max_wait_sec", 0, 3600),
            ("update_timeout_sec", 1, 86_400),
            ("parallel", 1, 64),
        ] {
            // backoff_sec = 0 keeps the backoff ≤ max_backoff rule out of the way.
            let at = |n: i64| with_network(&format!("backoff_sec = 0\n{key} = {n}"));
            toml(&at(low)).unwrap();
            toml(&at(high)).unwrap();
            for bad in [low - 1, high + 1] {
                let e = err(&at(bad));
                assert_eq!(e.key(), Some(format!("network.{key}").as_str()));
                assert!(
                    e.to_string()
                        .contains(&format!("must be between {low} and {high}")),
                    "{e}"
                );
            }
        }
        let e = err(&with_network("retries = 99999999999999999999"));
        assert_eq!(e.key(), Some("network.retries"), "{e}");
    }

    #[test]
    fn backoff_must_not_exceed_its_cap() {
        let e = err(&with_network("backoff_sec = 90"));
        assert_eq!(e.key(), Some("network.backoff_sec"));
        assert!(
            e.to_string()
                .contains("larger than `network.max_backoff_sec` (60)"),
            "{e}"
        );
        toml(&with_network("backoff_sec = 60")).unwrap();
    }

    #[test]
    fn placeholder_rule() {
        for p in [
            "YOUR_GITHUB_USERNAME",
            "YOUR_REPO_NAME",
            "YOUR_TOKEN",
            "your-token-here",
            "<owner>",
            "< your repo >",
            "{{ owner }}",
            "${OTA_TOKEN}",
            "CHANGE_ME",
            "changeme",
            "Change-Me",
            "REPLACE_ME",
            "TODO",
            "fixme",
            "TBD",
            "placeholder",
            "xxx",
            "XXXXXXXX",
            "...",
            "…",
            "  YOUR_X  ",
        ] {
            assert!(is_placeholder(p), "{p}");
        }
        for p in [
            "acme", "app", "yourself", "your", "xx", "x", "todo-app", "mytodo", "<", "<>", "main",
            "v1.0", "ghp_abc", "tbd2",
        ] {
            assert!(!is_placeholder(p), "{p}");
        }
    }

    #[test]
    fn placeholders_are_rejected_with_what_to_set() {
        let e = err(&minimal("", "").replace("\"acme\"", "\"YOUR_GITHUB_USERNAME\""));
        assert_eq!(
            e.to_string(),
            "`source.owner` still holds the placeholder `YOUR_GITHUB_USERNAME`: set it to the \
             GitHub user or organisation that owns the repository"
        );
        let e = err(&minimal("", "").replace("\"app\"", "\"YOUR_REPO_NAME\""));
        assert_eq!(e.key(), Some("source.repo"));
        assert!(e.to_string().contains("the name of the repository"), "{e}");
        for owner in ["<owner>", "CHANGE_ME", "xxx"] {
            let e = err(&minimal("", "").replace("\"acme\"", &format!("{owner:?}")));
            assert!(matches!(e, ConfigError::Placeholder { .. }), "{owner}: {e}");
        }
        let e = err(&minimal("", "token = \"YOUR_TOKEN\""));
        assert_eq!(e.key(), Some("source.token"));
        assert!(e.to_string().contains("placeholder `YOUR_TOKEN`"), "{e}");
        let e = err(&minimal(
            "channel = \"developer\"\nbranch = \"<branch>\"",
            "",
        ));
        assert_eq!(e.key(), Some("branch"));
        assert!(matches!(e, ConfigError::Placeholder { .. }), "{e}");
        let e = err(&minimal("tag = \"TODO\"", ""));
        assert_eq!(e.key(), Some("tag"));
    }

    #[test]
    fn ref_names_follow_git_rules() {
        for good in [
            "main",
            "feature/x",
            "v1.4.0",
            "release-2024.10",
            "a_b",
            "日本",
        ] {
            check_ref_name(good, "branch").unwrap();
        }
        for bad in [
            "", "@", "-x", "/x", "x/", "x.", "a..b", "a@{b", "a//b", "a b", "a~1", "a^", "a:b",
            "a?", "a*", "a[b", "a\\b", "a\tb", "a\u{7f}", ".hidden", "x/.y", "x.lock", "x.lock/y",
        ] {
            assert!(check_ref_name(bad, "branch").is_err(), "{bad:?}");
        }
        let why = check_ref_name("refs/heads/main", "branch").unwrap_err();
        assert!(why.contains("\"main\""), "{why}");
        let e = err(&minimal(
            "channel = \"developer\"\nbranch = \"my branch\"",
            "",
        ));
        assert_eq!(e.key(), Some("branch"));
        assert!(e.to_string().contains("not a valid git branch name"), "{e}");
        let e = err(&minimal("tag = \"v1..2\"", ""));
        assert_eq!(e.key(), Some("tag"));
    }

    #[test]
    fn owner_and_repo_names() {
        let owner = |v: &str| toml(&minimal("", "").replace("\"acme\"", &format!("{v:?}")));
        let repo = |v: &str| toml(&minimal("", "").replace("\"app\"", &format!("{v:?}")));
        owner("Acme-Corp_1.x").unwrap();
        repo("my.app_2-x").unwrap();
        let e = owner("acme/app").unwrap_err();
        assert!(e.to_string().contains("looks like owner/repository"), "{e}");
        assert!(e.to_string().contains("`source.owner` to \"acme\""), "{e}");
        let e = repo("app.git").unwrap_err();
        assert!(e.to_string().contains("without `.git`, \"app\""), "{e}");
        for bad in [
            "",
            ".",
            "..",
            "a b",
            "a:b",
            "é",
            "https://github.com/acme/app",
        ] {
            let e = owner(bad).unwrap_err();
            assert_eq!(e.key(), Some("source.owner"), "{bad:?}: {e}");
        }
        repo(&"a".repeat(100)).unwrap();
        let e = repo(&"a".repeat(101)).unwrap_err();
        assert!(e.to_string().contains("at most 100"), "{e}");
        let e = err("target_dir = \"/a\"\n[source]\nrepo = \"b\"");
        assert_eq!(e.key(), Some("source.owner"));
        assert!(
            e.to_string()
                .contains("`owner = \"acme\"` under `[source]`"),
            "{e}"
        );
        let e = err("target_dir = \"/a\"");
        assert_eq!(e.key(), Some("source.owner"));
    }

    #[test]
    fn source_kind() {
        toml(&minimal("", "kind = \"github\"")).unwrap();
        let e = err(&minimal("", "kind = \"gitlab\""));
        assert_eq!(e.key(), Some("source.kind"));
        assert!(e.to_string().contains("only kind"), "{e}");
    }

    fn api_url(url: &str) -> Result<Config, ConfigError> {
        toml(&minimal("", &format!("api_url = {url:?}")))
    }

    #[test]
    fn urls_are_normalised() {
        for (given, expected) in [
            ("https://api.github.com/", "https://api.github.com"),
            (
                "HTTPS://ghe.example.com/api/v3//",
                "https://ghe.example.com/api/v3",
            ),
            (
                "https://ghe.example.com:8443/api",
                "https://ghe.example.com:8443/api",
            ),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://[::1]:8080/", "http://[::1]:8080"),
        ] {
            let config = api_url(given).unwrap();
            assert_eq!(github(&config).api_url, expected);
        }
        let config = toml(&minimal("", "raw_url = \"https://raw.example.com/\"")).unwrap();
        assert_eq!(github(&config).raw_url, "https://raw.example.com");
    }

    #[test]
    fn bad_urls() {
        for (url, needle) in [
            ("api.github.com", "does not start with https://"),
            ("ftp://x.org", "scheme \"ftp\""),
            ("https://", "no host"),
            ("https:///path", "no host"),
            ("https://x.org/?a=1", "query or fragment"),
            ("https://x.org/#top", "query or fragment"),
            ("https://x.org:0", "port"),
            ("https://x.org:99999", "port"),
            ("https://x.org:abc", "port"),
            ("https://x y.org", "space"),
            ("https://x!.org", "not a valid host name"),
            ("https://[::1", "closing `]`"),
            ("https://[zz]", "not an IPv6 address"),
        ] {
            let e = api_url(url).unwrap_err();
            assert_eq!(e.key(), Some("source.api_url"), "{url}");
            assert!(e.to_string().contains(needle), "{url}: {e}");
        }
    }

    #[test]
    fn credentials_in_a_url_are_not_echoed() {
        let e = api_url(&format!("https://user:{SECRET}@x.org")).unwrap_err();
        assert!(e.to_string().contains("credentials"), "{e}");
        assert!(!e.to_string().contains(SECRET), "{e}");
        assert!(!format!("{e:?}").contains(SECRET));
    }

    #[test]
    fn a_url_with_a_query_is_not_echoed() {
        let e = api_url(&format!("https://x.org/?access_token={SECRET}")).unwrap_err();
        assert!(e.to_string().contains("query"), "{e}");
        assert!(!e.to_string().contains(SECRET), "{e}");
    }

    #[test]
    fn a_token_pasted_into_a_template_is_not_echoed() {
        let e = err(&minimal("", &format!("token = \"<{SECRET}>\"")));
        assert_eq!(e.key(), Some("source.token"));
        assert!(
            matches!(e, ConfigError::Placeholder { value: None, .. }),
            "{e}"
        );
        assert!(!e.to_string().contains(SECRET), "{e}");
        assert!(
            e.to_string()
                .starts_with("`source.token` still holds the placeholder: "),
            "{e}"
        );
        let env = |_: &str| Some(format!("${{{SECRET}}}"));
        let e = Config::parse(&minimal("", ""), Format::Toml, base(), &env).unwrap_err();
        assert!(!e.to_string().contains(SECRET), "{e}");
    }

    #[test]
    fn plain_http_warns_unless_local() {
        for local in [
            "http://localhost:8080",
            "http://127.0.0.1",
            "http://10.1.2.3",
            "http://172.20.0.1",
            "http://192.168.1.5:8000/api",
            "http://169.254.1.1",
            "http://[::1]",
            "http://[fd00::1]",
            "http://[fe80::1]",
            "http://mirror",
            "http://mirror.local",
            "http://pi.lan",
            "http://build.home.arpa",
            "http://ota.internal",
        ] {
            let config = api_url(local).unwrap();
            assert!(config.warnings.is_empty(), "{local}: {:?}", config.warnings);
        }
        for public in [
            "http://example.com",
            "http://8.8.8.8",
            "http://[2001:db8::1]",
        ] {
            let config = api_url(public).unwrap();
            assert_eq!(config.warnings.len(), 1, "{public}");
            assert!(
                config.warnings[0].contains("unencrypted"),
                "{:?}",
                config.warnings
            );
        }
        let config = toml(&minimal(
            "",
            &format!("token = {SECRET:?}\nraw_url = \"http://example.com\""),
        ))
        .unwrap();
        assert!(
            config.warnings[0].contains("source.raw_url"),
            "{:?}",
            config.warnings
        );
        assert!(
            config.warnings[0].contains("and the token"),
            "{:?}",
            config.warnings
        );
    }

    #[test]
    fn token_sources_and_precedence() {
        let env = |name: &str| (name == TOKEN_ENV).then(|| "ghp_fromenv".to_owned());
        let parse =
            |source: &str| Config::parse(&minimal("", source), Format::Toml, base(), &env).unwrap();
        let token = |config: &Config| github(config).token.as_ref().map(|t| t.expose().to_owned());
        assert_eq!(token(&parse("")).as_deref(), Some("ghp_fromenv"));
        assert_eq!(
            token(&parse("token = \" ghp_inline\\n\"")).as_deref(),
            Some("ghp_inline")
        );
        assert_eq!(
            token(&parse("token = \"\"")).as_deref(),
            Some("ghp_fromenv")
        );
        assert_eq!(token(&toml(&minimal("", "token = \"\"")).unwrap()), None);
        assert_eq!(token(&toml(&minimal("", "")).unwrap()), None);
        let blank_env = |_: &str| Some("  ".to_owned());
        let config = Config::parse(&minimal("", ""), Format::Toml, base(), &blank_env).unwrap();
        assert_eq!(token(&config), None);
    }

    #[test]
    fn env_token_placeholder_names_the_variable() {
        let env = |_: &str| Some("YOUR_TOKEN".to_owned());
        let e = Config::parse(&minimal("", ""), Format::Toml, base(), &env).unwrap_err();
        assert_eq!(e.key(), Some(TOKEN_ENV));
        assert!(
            e.to_string()
                .starts_with("`OTA_TOKEN` still holds the placeholder"),
            "{e}"
        );
    }

    #[test]
    fn token_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, format!("\n{SECRET}\n")).unwrap();
        set_mode(&path, 0o600);
        let config = Config::parse(
            &minimal("", "token_file = \"token\""),
            Format::Toml,
            dir.path(),
            &|_| Some("ghp_fromenv".to_owned()),
        )
        .unwrap();
        assert_eq!(github(&config).token.as_ref().unwrap().expose(), SECRET);
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);

        set_mode(&path, 0o644);
        let config = Config::parse(
            &minimal("", "token_file = \"token\""),
            Format::Toml,
            dir.path(),
            &no_env,
        )
        .unwrap();
        assert!(
            config.warnings[0].contains("chmod 600"),
            "{:?}",
            config.warnings
        );
        assert!(!config.warnings[0].contains(SECRET));
    }

    fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn token_file_errors_name_the_key_and_path_never_the_contents() {
        let dir = tempfile::tempdir().unwrap();
        let parse = |source: &str| {
            Config::parse(&minimal("", source), Format::Toml, dir.path(), &no_env).unwrap_err()
        };
        let e = parse("token_file = \"missing\"");
        assert_eq!(e.key(), Some("source.token_file"));
        let missing = dir.path().join("missing");
        assert!(
            e.to_string().contains(&missing.display().to_string()),
            "{e}"
        );

        std::fs::write(dir.path().join("empty"), "\n ").unwrap();
        assert!(
            parse("token_file = \"empty\"")
                .to_string()
                .contains("empty")
        );

        std::fs::write(dir.path().join("spaced"), format!("{SECRET} {SECRET}")).unwrap();
        let e = parse("token_file = \"spaced\"");
        assert!(e.to_string().contains("HTTP header"), "{e}");
        assert!(!e.to_string().contains(SECRET), "{e}");

        std::fs::write(dir.path().join("template"), "YOUR_TOKEN\n").unwrap();
        let e = parse("token_file = \"template\"");
        assert!(e.to_string().contains("placeholder `YOUR_TOKEN`"), "{e}");

        std::fs::write(dir.path().join("binary"), [0xff, 0xfe, 0x00]).unwrap();
        assert!(
            parse("token_file = \"binary\"")
                .to_string()
                .contains("not text")
        );

        std::fs::write(dir.path().join("token"), SECRET).unwrap();
        let e = parse(&format!("token = {SECRET:?}\ntoken_file = \"token\""));
        assert!(e.to_string().contains("both set"), "{e}");
        assert!(!e.to_string().contains(SECRET), "{e}");
    }

    #[test]
    fn token_with_bad_characters_is_rejected_without_echo() {
        for bad in [
            format!("{SECRET} x"),
            format!("{SECRET}\u{e9}"),
            "a\tb".to_owned(),
        ] {
            let e = err(&minimal("", &format!("token = {bad:?}")));
            assert_eq!(e.key(), Some("source.token"));
            assert!(!e.to_string().contains(SECRET), "{e}");
        }
        let e = err(&minimal("", &format!("token = {:?}", "a".repeat(5000))));
        assert!(e.to_string().contains("longer than"), "{e}");
    }

    #[test]
    fn the_token_never_prints() {
        let config = toml(&minimal("", &format!("token = {SECRET:?}"))).unwrap();
        assert_eq!(github(&config).token.as_ref().unwrap().expose(), SECRET);
        assert!(!format!("{config:?}").contains(SECRET));
        assert!(!format!("{config:#?}").contains(SECRET));
        assert!(format!("{config:?}").contains("Token(***)"));
        assert_eq!(github(&config).token.as_ref().unwrap().to_string(), "***");

        // Errors and warnings that happen in a file holding the token.
        let with = |top: &str, network: &str| {
            format!(
                "{top}\n{}\n[network]\n{network}",
                minimal("", &format!("token = {SECRET:?}"))
                    .replace("target_dir = \"/opt/app\"", "")
            )
        };
        let failing = [
            with("", ""),
            with("target_dir = 3", ""),
            with("target_dir = \"/a\"\nbranch = \"x\"", "retries = \"x\""),
            with("target_dir = \"/a\"", "retris = 1"),
            with("target_dir = \"/a\"", "retries = 1.5"),
            with("target_dir = \"/a\"\nallow = [\"/abs\"]", ""),
            format!("target_dir = \"/a\"\n[source]\ntoken = {SECRET:?}\ntoken = \"x\""),
            format!("target_dir = \"/a\"\n[source]\ntoken = {SECRET}"),
            format!("target_dir = \"/a\"\n[source]\ntoken = \"{SECRET}"),
            format!("target_dir = \"/a\"\n[source]\ntoken = '''{SECRET}"),
        ];
        for text in failing {
            let e = err(&text);
            assert!(!e.to_string().contains(SECRET), "{e}");
            assert!(!format!("{e:?}").contains(SECRET), "{e:?}");
        }
        let json_failing = [
            format!(
                r#"{{"target_dir": "/a", "source": {{"token": "{SECRET}", "token": "{SECRET}"}}}}"#
            ),
            format!(r#"{{"target_dir": "/a", "source": {{"token": {SECRET}}}}}"#),
            format!(r#"{{"target_dir": "/a", "source": {{"token": "{SECRET}\q"}}}}"#),
            format!(
                r#"{{"owner": "a", "repo": "b", "token": "{SECRET}", "password": "{SECRET}", "retries": -1}}"#
            ),
        ];
        for text in json_failing {
            let e = json(&text).unwrap_err();
            assert!(!e.to_string().contains(SECRET), "{e}");
            assert!(!format!("{e:?}").contains(SECRET), "{e:?}");
        }
        let config =
            toml(&with("target_dir = \"/a\"\nbranch = \"x\"", "").replace("https", "http"))
                .unwrap();
        for warning in &config.warnings {
            assert!(!warning.contains(SECRET), "{warning}");
        }
    }

    #[test]
    fn syntax_errors_give_the_position() {
        let e = err("target_dir = \"/a\"\n[source\n");
        assert!(
            matches!(
                e,
                ConfigError::Syntax {
                    format: Format::Toml,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(
            e.to_string().starts_with("the config is not valid TOML:"),
            "{e}"
        );
        let e = json("{\"target_dir\": \"/a\",\n}").unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::Syntax {
                    format: Format::Json,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = json("[1, 2]").unwrap_err();
        assert!(e.to_string().contains("one object"), "{e}");
        let e = json(r#"{"target_dir": "/a", "target_dir": "/b"}"#).unwrap_err();
        assert!(e.to_string().contains("`target_dir` appears twice"), "{e}");
    }

    #[test]
    fn bad_patterns_name_the_entry() {
        let e = err(&minimal("allow = [\"lib/\", \"main.py\", \"../etc\"]", ""));
        assert_eq!(e.key(), Some("allow[2]"));
        assert!(e.to_string().contains("\"../etc\""), "{e}");
        let e = err(&minimal("ignore = [\"a[\"]", ""));
        assert_eq!(e.key(), Some("ignore[0]"));
        assert!(e.to_string().contains("not a valid glob"), "{e}");
    }

    #[test]
    fn comment_keys_are_ignored_at_every_level() {
        let config = json(
            r#"{"_comment": "x", "// note": 1, "target_dir": "/a",
                "source": {"_comment_owner": "who", "owner": "a", "repo": "b"},
                "network": {"//": null, "retries": 2}}"#,
        )
        .unwrap();
        assert_eq!(config.network.retries, 2);
        assert!(config.warnings.is_empty());
        toml(&minimal("_comment = \"hi\"", "_comment = \"there\"")).unwrap();
    }

    #[test]
    fn json_null_means_not_set() {
        let config = json(
            r#"{"target_dir": "/a", "tag": null, "branch": null,
                "source": {"owner": "a", "repo": "b", "token": null},
                "network": {"retries": null}}"#,
        )
        .unwrap();
        assert_eq!(config.channel, Channel::Stable { tag: None });
        assert_eq!(config.network.retries, 5);
        assert!(config.warnings.is_empty());
    }

    #[test]
    fn byte_order_mark_is_skipped() {
        toml(&format!("\u{feff}{}", minimal("", ""))).unwrap();
        json("\u{feff}{\"target_dir\": \"/a\", \"source\": {\"owner\": \"a\", \"repo\": \"b\"}}")
            .unwrap();
    }

    /// The original updater's template, as shipped.
    const ORIGINAL: &str = r#"{"_comment": "OTA updater configuration", "owner": "YOUR_GITHUB_USERNAME", "repo": "YOUR_REPO_NAME",
 "channel": "stable", "branch": "main", "token": "", "allow": ["main.py", "lib/"], "ignore": ["tests/"],
 "chunk": 1024, "stage_dir": ".ota_stage", "backup_dir": ".ota_backup", "connect_timeout_sec": 10,
 "http_timeout_sec": 20, "retries": 3, "backoff_sec": 3, "max_backoff_sec": 60, "force": false,
 "reset_mode": "hard", "debug": false}"#;

    fn original() -> String {
        ORIGINAL
            .replace("YOUR_GITHUB_USERNAME", "acme")
            .replace("YOUR_REPO_NAME", "app")
    }

    #[test]
    fn original_format_loads() {
        let config = json(&original()).unwrap();
        assert_eq!(config.target_dir, base());
        assert_eq!(config.state_dir, Path::new("/etc/ota/.ota"));
        assert_eq!(config.channel, Channel::Stable { tag: None });
        let gh = github(&config);
        assert_eq!((gh.owner.as_str(), gh.repo.as_str()), ("acme", "app"));
        assert_eq!(gh.token, None, "an empty token means none");
        assert_eq!(gh.api_url, "https://api.github.com");
        assert!(config.filter.includes("main.py"));
        assert!(config.filter.includes("lib/x.py"));
        assert!(!config.filter.includes("tests/t.py"));
        assert!(!config.filter.includes("boot.py"));
        assert_eq!(
            config.network,
            NetworkConfig {
                connect_timeout: Duration::from_secs(10),
                http_timeout: Duration::from_secs(20),
                retries: 3,
                backoff: Duration::from_secs(3),
                max_backoff: Duration::from_secs(60),
                ..NetworkConfig::default()
            }
        );
        let warnings = config.warnings.join("\n");
        for needle in [
            "`chunk` is not used",
            "`stage_dir` is not used: ota stages under state_dir",
            "`backup_dir` is not used",
            "`force` is not used: run `ota update --force`",
            "`reset_mode` is not used",
            "`debug` is not used: run ota with `-v` or set `RUST_LOG=ota=debug`",
            "`branch` is not used with the stable channel",
        ] {
            assert!(warnings.contains(needle), "{needle} in {warnings}");
        }
        assert_eq!(config.warnings.len(), 7, "{warnings}");
    }

    #[test]
    fn original_template_placeholders_are_rejected() {
        let e = json(ORIGINAL).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`owner` still holds the placeholder `YOUR_GITHUB_USERNAME`: set it to the GitHub \
             user or organisation that owns the repository"
        );
        let e = json(&ORIGINAL.replace("YOUR_GITHUB_USERNAME", "acme")).unwrap_err();
        assert_eq!(e.key(), Some("repo"));
    }

    #[test]
    fn original_format_errors_use_the_flat_key_names() {
        let e = json(&original().replace("\"retries\": 3", "\"retries\": 3.5")).unwrap_err();
        assert_eq!(e.key(), Some("retries"));
        assert!(e.to_string().starts_with("`retries` is 3.5"), "{e}");
        let e = json(&original().replace("\"ignore\": [\"tests/\"]", "\"ignore\": [\"/x\"]"))
            .unwrap_err();
        assert_eq!(e.key(), Some("ignore[0]"));
        let e = json(&original().replace("\"owner\": \"acme\"", "\"ownr\": \"acme\"")).unwrap_err();
        assert_eq!(e.to_string(), "unknown key `ownr`: did you mean `owner`?");
        let e = json(&original().replace("\"debug\": false", "\"parallel\": 2")).unwrap_err();
        assert_eq!(e.key(), Some("parallel"));
        assert!(e.to_string().contains("`network.parallel`"), "{e}");
        let e = json(r#"{"repo": "app"}"#).unwrap_err();
        assert_eq!(e.key(), Some("owner"));
        assert!(e.to_string().contains(r#"`"owner": "acme"`"#), "{e}");
    }

    #[test]
    fn original_format_deployment_keys_warn_without_values() {
        let text = original().replace(
            "\"debug\": false",
            r#""debug": true, "ssid": "HomeWifi", "password": "hunter2-wifi-pass",
               "status_led_pin": 25, "watchdog_timeout_ms": 30000, "max_update_attempts": 3,
               "retry_backoff_sec": 60, "file_retries": 3, "file_backoff_sec": 5,
               "log_file": "ota.log", "progress_callback": null,
               "// New optional fields for enhanced operation": """#,
        );
        let config = json(&text).unwrap();
        let warnings = config.warnings.join("\n");
        for key in [
            "ssid",
            "password",
            "status_led_pin",
            "watchdog_timeout_ms",
            "max_update_attempts",
            "retry_backoff_sec",
            "file_retries",
            "file_backoff_sec",
            "log_file",
            "progress_callback",
        ] {
            assert!(warnings.contains(&format!("`{key}` is not used")), "{key}");
        }
        assert!(!warnings.contains("hunter2"), "{warnings}");
        assert!(!warnings.contains("HomeWifi"), "{warnings}");
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn original_format_with_target_dir_and_developer_channel() {
        let text = original()
            .replace(
                "\"channel\": \"stable\"",
                "\"channel\": \"developer\", \"target_dir\": \"../app\"",
            )
            .replace("\"branch\": \"main\"", "\"branch\": \"dev\"");
        let config = json(&text).unwrap();
        assert_eq!(config.target_dir, Path::new("/etc/app"));
        assert_eq!(config.state_dir, Path::new("/etc/app/.ota"));
        assert_eq!(
            config.channel,
            Channel::Developer {
                branch: "dev".into()
            }
        );
    }

    #[test]
    fn original_format_in_toml() {
        let config = toml("owner = \"acme\"\nrepo = \"app\"\nretries = 2\nchunk = 512\n").unwrap();
        assert_eq!(config.network.retries, 2);
        assert_eq!(config.target_dir, base());
        assert_eq!(config.warnings.len(), 1);
    }

    #[test]
    fn owner_beside_a_source_table_is_the_new_format() {
        let e = err("target_dir = \"/a\"\nowner = \"x\"\n[source]\nowner = \"a\"\nrepo = \"b\"");
        assert_eq!(e.key(), Some("owner"));
        assert!(matches!(e, ConfigError::UnknownKey { .. }));
    }

    #[test]
    fn format_detection() {
        let p = Path::new;
        assert_eq!(Format::detect(p("a.json"), "x = 1"), Format::Json);
        assert_eq!(Format::detect(p("a.JSON"), ""), Format::Json);
        assert_eq!(Format::detect(p("a.toml"), "x = 1"), Format::Toml);
        assert_eq!(Format::detect(p("a.toml"), "\n  {\"a\": 1}"), Format::Json);
        assert_eq!(Format::detect(p("ota.conf"), "\u{feff}{}"), Format::Json);
        assert_eq!(Format::detect(p("ota"), "# comment\n"), Format::Toml);
    }

    #[test]
    fn load_reads_files_and_names_them_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let toml_path = dir.path().join("ota.toml");
        std::fs::write(
            &toml_path,
            minimal("", "").replace("\"/opt/app\"", "\"app\""),
        )
        .unwrap();
        let config = Config::load(&toml_path).unwrap();
        assert_eq!(config.target_dir, dir.path().join("app"));

        let json_path = dir.path().join("ota_config.json");
        std::fs::write(&json_path, original()).unwrap();
        let config = Config::load(&json_path).unwrap();
        assert_eq!(config.target_dir, dir.path());

        let conf_path = dir.path().join("ota.conf");
        std::fs::write(&conf_path, original()).unwrap();
        Config::load(&conf_path).unwrap();

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, with_network("retries = 500")).unwrap();
        let e = Config::load(&bad).unwrap_err();
        assert_eq!(e.key(), Some("network.retries"));
        assert_eq!(
            e.to_string(),
            format!(
                "{}: `network.retries` is 500, but it must be between 0 and 100",
                bad.display()
            )
        );

        let missing = dir.path().join("missing.toml");
        let e = Config::load(&missing).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(
            e.to_string().contains(&missing.display().to_string()),
            "{e}"
        );

        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_CONFIG_SIZE as usize + 1]).unwrap();
        assert!(matches!(
            Config::load(&big).unwrap_err(),
            ConfigError::TooLarge { .. }
        ));

        let latin1 = dir.path().join("latin1.toml");
        std::fs::write(&latin1, b"target_dir = \"/caf\xe9\"").unwrap();
        assert!(
            Config::load(&latin1)
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
    }

    #[test]
    fn load_resolves_token_file_against_the_config_folder() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("etc");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("token"), SECRET).unwrap();
        set_mode(&sub.join("token"), 0o600);
        let path = sub.join("ota.toml");
        std::fs::write(&path, minimal("", "token_file = \"token\"")).unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(github(&config).token.as_ref().unwrap().expose(), SECRET);
    }

    #[test]
    fn load_warns_about_a_readable_config_holding_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ota.toml");
        std::fs::write(&path, minimal("", &format!("token = {SECRET:?}"))).unwrap();
        set_mode(&path, 0o644);
        let config = Config::load(&path).unwrap();
        assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
        assert!(config.warnings[0].contains("chmod 600"));
        assert!(!config.warnings[0].contains(SECRET));
        set_mode(&path, 0o600);
        assert!(Config::load(&path).unwrap().warnings.is_empty());
    }

    #[test]
    fn key_lists_agree() {
        let mut from_tables: Vec<String> = TOP_KEYS
            .iter()
            .filter(|k| !matches!(**k, "source" | "network"))
            .map(|k| k.to_string())
            .collect();
        from_tables.extend(SOURCE_KEYS.iter().map(|k| format!("source.{k}")));
        from_tables.extend(NETWORK_KEYS.iter().map(|k| format!("network.{k}")));
        assert_eq!(from_tables, ALL_KEYS);
        for (flat, name) in LEGACY_KEYS {
            assert!(ALL_KEYS.contains(name));
            assert_eq!(leaf(name), *flat);
        }
    }

    #[test]
    fn the_reference_documents_every_key() {
        let reference = include_str!("../docs/config-reference.md");
        for key in ALL_KEYS
            .iter()
            .map(|k| leaf(k))
            .chain(LEGACY_IGNORED.iter().map(|(k, _)| *k))
        {
            assert!(reference.contains(&format!("`{key}`")), "{key}");
        }
    }
}
