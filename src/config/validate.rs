//! From the file as written ([`File`]) to a [`Config`]: every value checked, once, with the
//! key's name in the error, and every default resolved.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::base_url;
use super::error::{ConfigError, closest, leaf};
use super::file::{self, File, Ranged};
use super::{
    Channel, Config, Format, GithubConfig, Limits, NetworkConfig, SourceConfig, TOKEN_ENV, Token,
    readable_by_others,
};
use crate::filter::Filter;

/// Largest token file ota reads, in bytes.
const MAX_TOKEN_FILE_SIZE: u64 = 64 << 10;

/// Longest token ota accepts, in bytes (GitHub's are under 300).
const MAX_TOKEN_LEN: usize = 4096;

/// The state of one validation: how the file was written, and the warnings so far.
pub(super) struct Check<'a> {
    pub format: Format,
    /// The original updater's flat format: keys are named as written there.
    pub legacy: bool,
    /// For the original format: (new key, key as written) of each key it set; the last
    /// one of a new key is the one that took effect.
    pub written: Vec<(&'static str, &'static str)>,
    /// The config file's folder (absolute, normalised).
    pub base_dir: PathBuf,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub warnings: Vec<String>,
}

impl Check<'_> {
    /// The key as the user wrote it: the new format's dotted key, or the flat key.
    fn key(&self, name: &str) -> String {
        if !self.legacy {
            return name.to_owned();
        }
        let written = self.written.iter().rev().find(|(new, _)| *new == name);
        written.map_or(leaf(name), |(_, flat)| flat).to_owned()
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

    fn invalid(&self, name: &str, why: String) -> ConfigError {
        let key = self.key(name);
        ConfigError::invalid(&key, format!("`{key}` {why}"))
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
            key: match name {
                TOKEN_ENV => name.to_owned(),
                _ => self.key(name),
            },
            value,
            hint: hint.to_owned(),
        }
    }

    /// Turns the file into a [`Config`], checking each value; also tells whether the token
    /// was written in the config itself.
    pub(super) fn build(mut self, file: File) -> Result<(Config, bool), ConfigError> {
        let target_dir = match &file.target_dir {
            Some(dir) => self.path("target_dir", dir)?,
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
            return Err(self.invalid(
                "target_dir",
                "is the filesystem root; set it to the application's own directory".to_owned(),
            ));
        }
        let channel = self.channel(file.channel, file.branch, file.tag)?;
        let (allow, ignore) = (
            file.allow.unwrap_or_default(),
            file.ignore.unwrap_or_default(),
        );
        let filter = Filter::new(&allow, &ignore).map_err(|err| ConfigError::Invalid {
            key: err.key(),
            message: err.to_string(),
        })?;
        let state_dir = self.state_dir(file.state_dir, &target_dir)?;
        let (source, inline_token) = self.source(file.source)?;
        let network = self.network(file.network)?;
        let limits = Limits {
            max_tree_kb: file.limits.max_tree_kb.map(|n| n.0),
            max_tree_files: file.limits.max_tree_files.map(|n| n.0),
        };
        let config = Config {
            target_dir,
            state_dir,
            channel,
            filter,
            source,
            network,
            limits,
            warnings: self.warnings,
        };
        Ok((config, inline_token))
    }

    fn channel(
        &mut self,
        channel: Option<String>,
        branch: Option<String>,
        tag: Option<String>,
    ) -> Result<Channel, ConfigError> {
        for (name, value) in [("branch", &branch), ("tag", &tag)] {
            if let Some(value) = value {
                self.no_placeholder(name, value)?;
                check_ref_name(value, name)
                    .map_err(|why| self.invalid(name, format!("is {value:?}, which {why}")))?;
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
            "developer" if tag.is_some() => Err(self.invalid(
                "tag",
                format!(
                    "pins a release, which only the stable channel installs; remove it, or set \
                     `{}` to \"stable\"",
                    self.key("channel")
                ),
            )),
            "developer" => Ok(Channel::Developer {
                branch: branch.unwrap_or_else(|| "main".to_owned()),
            }),
            other => {
                let suggestion = closest(other, &["stable", "developer"])
                    .map(|c| format!("; did you mean \"{c}\"?"))
                    .unwrap_or_default();
                Err(self.invalid(
                    "channel",
                    format!(
                        "is {other:?}, but it must be \"stable\" (the latest release) or \
                         \"developer\" (the tip of `branch`){suggestion}"
                    ),
                ))
            }
        }
    }

    /// A directory path: absolute, lexically normalised.
    fn path(&self, name: &str, value: &str) -> Result<PathBuf, ConfigError> {
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
            return Err(self.invalid(name, why));
        }
        self.no_placeholder(name, value)?;
        Ok(normalize(&self.base_dir.join(value)))
    }

    fn state_dir(
        &mut self,
        dir: Option<String>,
        target_dir: &Path,
    ) -> Result<PathBuf, ConfigError> {
        let Some(dir) = dir else {
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

    fn source(&mut self, source: file::Source) -> Result<(SourceConfig, bool), ConfigError> {
        if let Some(kind) = source.kind.filter(|kind| kind != "github") {
            return Err(self.invalid(
                "source.kind",
                format!(
                    "is {kind:?}, but the only kind ota supports is \"github\" (GitHub or a \
                     compatible server); remove it or set it to \"github\""
                ),
            ));
        }
        let owner = self.github_name("source.owner", source.owner, "\"acme\"")?;
        let repo = self.github_name("source.repo", source.repo, "\"app\"")?;
        let (token, inline) = self.token(source.token, source.token_file)?;
        let has_token = token.is_some();
        let api_url = self.url("source.api_url", source.api_url, has_token)?;
        let raw_url = self.url("source.raw_url", source.raw_url, has_token)?;
        let raw_url = match (raw_url, &api_url) {
            (Some(raw), _) => raw,
            (None, None) => base_url::GITHUB_RAW.to_owned(),
            (None, Some(api)) => self.raw_url_of(api)?,
        };
        let api_url = api_url.unwrap_or_else(|| base_url::GITHUB_API.to_owned());
        let github = GithubConfig {
            owner,
            repo,
            token,
            api_url,
            raw_url,
        };
        Ok((SourceConfig::Github(github), inline))
    }

    /// `raw_url` when only `api_url` is set: derived when certain, else an error naming both.
    fn raw_url_of(&self, api: &str) -> Result<String, ConfigError> {
        base_url::raw_for(api).ok_or_else(|| {
            let (api_key, raw_key) = (self.key("source.api_url"), self.key("source.raw_url"));
            ConfigError::invalid(
                &raw_key,
                format!(
                    "`{api_key}` is {api:?}, whose raw file address ota cannot tell, and \
                     `{raw_key}` is not set, so files would be fetched from GitHub instead: set \
                     `{raw_key}` to where this host serves raw files (on GitHub Enterprise, \
                     `https://HOST/raw`)"
                ),
            )
        })
    }

    /// A GitHub user, organisation or repository name.
    fn github_name(
        &self,
        name: &str,
        value: Option<String>,
        example: &str,
    ) -> Result<String, ConfigError> {
        let what = if name == "source.owner" {
            "the GitHub user or organisation that owns the repository"
        } else {
            "the name of the repository"
        };
        let Some(value) = value else {
            return Err(ConfigError::Missing {
                key: self.key(name),
                hint: format!("set it to {what}, e.g. {}", self.example(name, example)),
            });
        };
        self.no_placeholder(name, &value)?;
        let invalid = |why: String| Err(self.invalid(name, why));
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
        if value.len() > 100 {
            return invalid(format!(
                "is {} characters long; GitHub names are at most 100",
                value.len()
            ));
        }
        if let Some(stem) = value.strip_suffix(".git").filter(|_| name == "source.repo") {
            return invalid(format!(
                "is {value:?}: give the repository's name without `.git`, {stem:?}"
            ));
        }
        Ok(value)
    }

    /// The token, from `token`, `token_file` or `OTA_TOKEN`, in that order; and whether it was
    /// written in the config itself. Never puts the token in an error or a warning.
    fn token(
        &mut self,
        inline: Option<String>,
        file: Option<String>,
    ) -> Result<(Option<Token>, bool), ConfigError> {
        let inline = inline
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty());
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
        let key = match name {
            TOKEN_ENV => format!("the environment variable `{TOKEN_ENV}`"),
            _ => format!("`{}`", self.key(name)),
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
            let subject = match name {
                "source.token_file" => format!("the token in the file named by {key}"),
                _ => format!("the token in {key}"),
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
        let key = self.key("source.token_file");
        let path = self.path("source.token_file", file)?;
        let fail = |why: String| {
            let message = format!(
                "cannot read the token from `{key}` ({}): {why}",
                path.display()
            );
            ConfigError::invalid(&key, message)
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

    /// An `http://` or `https://` base URL, normalised (see [`base_url::parse`]); plain
    /// HTTP off the local network is a warning.
    fn url(
        &mut self,
        name: &str,
        value: Option<String>,
        has_token: bool,
    ) -> Result<Option<String>, ConfigError> {
        let Some(value) = value else {
            return Ok(None);
        };
        let url = base_url::parse(&value).map_err(|why| {
            // The URL is not echoed when it may carry a secret (`user:pass@`, `?access_token=`).
            match value.contains(['@', '?', '#']) {
                true => self.invalid(name, why),
                false => self.invalid(name, format!("is {value:?}, which {why}")),
            }
        })?;
        if url.scheme == "http" && !url.local {
            let token = if has_token { " and the token" } else { "" };
            self.warnings.push(format!(
                "`{}` uses plain http:// to {}, which is not on the local network: \
                 releases{token} travel unencrypted and can be altered on the way; use https://",
                self.key(name),
                url.host
            ));
        }
        Ok(Some(url.normalized))
    }

    fn network(&mut self, n: file::Network) -> Result<NetworkConfig, ConfigError> {
        let d = NetworkConfig::default();
        let network = NetworkConfig {
            connect_timeout: secs(n.connect_timeout_sec, d.connect_timeout),
            http_timeout: secs(n.http_timeout_sec, d.http_timeout),
            retries: n.retries.map_or(d.retries, |n| n.0 as u32),
            backoff: secs(n.backoff_sec, d.backoff),
            max_backoff: secs(n.max_backoff_sec, d.max_backoff),
            max_wait: secs(n.max_wait_sec, d.max_wait),
            update_timeout: secs(n.update_timeout_sec, d.update_timeout),
            parallel: n.parallel.map_or(d.parallel, |n| n.0 as usize),
            user_agent: match n.user_agent {
                Some(agent) => self.user_agent(agent)?,
                None => d.user_agent,
            },
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

    fn user_agent(&self, agent: String) -> Result<String, ConfigError> {
        let agent = agent.trim().to_owned();
        let why = if agent.is_empty() {
            "is empty; remove it to send ota's own (`ota/VERSION`)"
        } else if agent.len() > 256 {
            "is longer than 256 bytes"
        } else if agent.chars().any(|c| !(c == ' ' || c.is_ascii_graphic())) {
            "contains a control character or a non-ASCII character, which cannot be sent in an \
             HTTP header"
        } else {
            return Ok(agent);
        };
        Err(self.invalid("network.user_agent", why.to_owned()))
    }
}

/// A number of seconds, or the default.
fn secs<const LO: u64, const HI: u64>(
    value: Option<Ranged<LO, HI>>,
    default: Duration,
) -> Duration {
    value.map_or(default, |secs| Duration::from_secs(secs.0))
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

/// Lexical normalisation: drops `.`, resolves `..` against the part before it (never above
/// the root). Does not touch the disk.
pub(super) fn normalize(path: &Path) -> PathBuf {
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
    }
}
