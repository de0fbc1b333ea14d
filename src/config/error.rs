//! What a user reads when the config cannot be used: [`ConfigError`], and the sentences that
//! turn serde's findings (an ignored key, a type mismatch) into what to do.

use std::path::PathBuf;

use super::file::{self, QUOTED_NUMBER};
use super::original::Original;
use super::{Format, MAX_CONFIG_SIZE};

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
    /// A value still holds a template's placeholder.
    #[error("`{key}` still holds the placeholder{}: {hint}", value.as_ref().map(|v| format!(" `{v}`")).unwrap_or_default())]
    Placeholder {
        /// The key (or `OTA_TOKEN`).
        key: String,
        /// The placeholder; `None` for a token placeholder that might hold a real token
        /// (`<ghp_…>`), which is never shown.
        value: Option<String>,
        /// What to set it to.
        hint: String,
    },
    /// A value that is missing, of the wrong type or cannot be used; the message names the
    /// key and says what to do.
    #[error("{message}")]
    Invalid {
        /// The key.
        key: String,
        /// The whole sentence.
        message: String,
    },
    /// `target_dir` is a system folder or a home folder, which ota refuses to keep equal to
    /// a release: it would own and replace files there that it did not install.
    #[error("{message}")]
    RefusedTarget {
        /// The target as configured (absolute, normalised).
        path: PathBuf,
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

impl ConfigError {
    /// The key the error is about (as written in the file), if it is about one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. }
            | ConfigError::Placeholder { key, .. }
            | ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::RefusedTarget { .. } => Some("target_dir"),
            ConfigError::InFile { error, .. } => error.key(),
            _ => None,
        }
    }

    /// Whether `target_dir` was refused as a system folder (error kind `refused_target`).
    pub fn is_refused_target(&self) -> bool {
        match self {
            ConfigError::RefusedTarget { .. } => true,
            ConfigError::InFile { error, .. } => error.is_refused_target(),
            _ => false,
        }
    }

    pub(super) fn invalid(key: &str, message: String) -> ConfigError {
        let key = key.to_owned();
        ConfigError::Invalid { key, message }
    }
}

/// What a table is called in a syntax, with its article.
fn a_table(format: Format) -> &'static str {
    match format {
        Format::Toml => "a table",
        Format::Json => "an object",
    }
}

/// The error for a value serde could not read into its key's type: `path` is the key as
/// serde_path_to_error names it (`network.retries`, `allow[1]`, `.` for the document), and
/// `message` serde's. Values are never copied from the message: a string may be the token.
pub(super) fn data_error(path: &str, message: &str, format: Format) -> ConfigError {
    let key = if path == "." { "" } else { path };
    let duplicate = message.strip_prefix("duplicate field `");
    if let Some(field) = duplicate.and_then(|m| m.strip_suffix('`')) {
        let key = dotted(key, field);
        return ConfigError::invalid(&key, format!("`{key}` appears twice; keep one"));
    }
    let wrong_type = |key: &str, expected: &str, found: &str, hint: &str| {
        ConfigError::invalid(
            key,
            format!("`{key}` must be {expected}, not {found}{hint}"),
        )
    };
    // serde reads a table written as an array field by field: `source[0]` is `source`.
    if let Some((table, _)) = key
        .split_once('[')
        .filter(|(t, _)| file::table(t).is_some())
    {
        return wrong_type(table, a_table(format), "an array", "");
    }
    let types = message.strip_prefix("invalid type: ");
    let Some((found, expected)) = types.and_then(|m| m.rsplit_once(", expected ")) else {
        // A number out of its range says so itself ("is 500, but it must be between …").
        return ConfigError::invalid(key, format!("`{key}` {message}"));
    };
    if key.is_empty() {
        let message = "the document must be one object `{ … }` holding the keys".to_owned();
        return ConfigError::Syntax { format, message };
    }
    let found_kind = [
        ("boolean", "a boolean"),
        ("integer", "an integer"),
        ("floating point", "a number with a fraction"),
        ("string", "a string"),
        ("character", "a string"),
        ("sequence", "an array"),
        ("unit value", "null"),
        ("null", "null"),
        ("map", a_table(format)),
        ("date", "a date"),
    ]
    .into_iter()
    .find(|(prefix, _)| found.starts_with(prefix))
    .map_or("another type", |(_, kind)| kind);
    let expected = match expected {
        "an integer" | "a string" => expected,
        "a sequence" => "an array of strings",
        _ if expected.starts_with("struct ") => a_table(format),
        _ => "another type",
    };
    let hint = match (expected, found_kind) {
        ("an integer", _) if found.starts_with(QUOTED_NUMBER) => {
            "; write the number without quotes"
        }
        ("a string", "a boolean" | "an integer" | "a number with a fraction") => {
            "; put the value in quotes"
        }
        (_, "a table") => "; a `[section]` header may be misplaced",
        _ => "",
    };
    wrong_type(key, expected, found_kind, hint)
}

/// The error for a key that no struct reads: `section` is its table (`None` at the top),
/// `legacy` whether the file is in the original flat format.
pub(super) fn unknown_key(
    section: Option<&str>,
    key: &str,
    legacy: bool,
    format: Format,
) -> ConfigError {
    let full = |name: &str| dotted(section.unwrap_or_default(), name);
    let all = file::all_keys();
    let same_name = all.iter().find(|name| leaf(name) == key);
    let noun = match format {
        Format::Toml => "table",
        Format::Json => "object",
    };
    let hint = if let (false, Some(elsewhere)) = (legacy, same_name) {
        match elsewhere.split_once('.') {
            Some((table, _)) => {
                format!("`{key}` belongs in the `{table}` {noun}: write it as `{elsewhere}`")
            }
            None => format!("`{key}` belongs at the top level, not in a table"),
        }
    } else if legacy && (same_name.is_some() || file::table(key).is_some()) {
        let new_name = same_name
            .filter(|name| leaf(name) != name.as_str())
            .map(|name| format!(" (as `{name}`)"))
            .unwrap_or_default();
        format!(
            "this file is in the original updater's flat format, because it has a top-level \
             `owner`/`repo`, and `{key}` exists only in the new format{new_name}; to use it, \
             move the file to the new format, with `owner` and `repo` in a `source` {noun}"
        )
    } else if let Some(new) = Original::new_name(key).filter(|_| !legacy) {
        format!("`{key}` is the original format's name of `{new}`: write it as `{new}`")
    } else if let Some(way) = Original::new_way(key).filter(|_| !legacy) {
        format!("`{key}` is the original format's; in this format write {way}")
    } else if let Some(why) = Original::why_unused(key) {
        format!("`{key}` is not used: {why}; remove it")
    } else {
        let known = match (legacy, section) {
            (true, _) => file::fields::<Original>(),
            (false, None) => file::fields::<file::File>(),
            (false, Some(section)) => file::table(section).unwrap_or_default(),
        };
        match closest(key, known) {
            Some(close) => format!("did you mean `{}`?", full(close)),
            None => {
                let known: Vec<_> = known.iter().map(|k| format!("`{}`", full(k))).collect();
                format!("remove it; the keys allowed here are {}", known.join(", "))
            }
        }
    };
    ConfigError::UnknownKey {
        key: full(key),
        hint,
    }
}

/// `name` in the table `parent` (`""` at the top).
fn dotted(parent: &str, name: &str) -> String {
    match parent {
        "" => name.to_owned(),
        parent => format!("{parent}.{name}"),
    }
}

/// The last part of a dotted key.
pub(super) fn leaf(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

/// The candidate closest to `word`, if one is close enough to be a likely typo.
pub(super) fn closest<'k>(word: &str, candidates: &[&'k str]) -> Option<&'k str> {
    let word = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(&word, c), *c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}
