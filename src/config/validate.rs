//! From the file as written ([`File`]) to a [`Config`]: every value checked, once, with the
//! key's name in the error, and every default resolved.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{ConfigError, closest, leaf};
use super::file::{self, File, Ranged};
use super::{
    AfterUpdate, BeforeUpdate, Channel, Config, DeviceConfig, Format, GithubConfig, Guards, Limits,
    NetworkConfig, ReportConfig, ScheduleConfig, SourceConfig, StaticConfig, TrialConfig, Trust,
};

/// Largest public key file ota reads (a real `ota.pub` is about 100 bytes).
const MAX_KEY_FILE_SIZE: u64 = 4096;
use super::{ReadError, TOKEN_ENV, Token, base_url, read_capped, readable_by_others, system};
use crate::filter::Filter;

/// Largest token file ota reads, in bytes.
const MAX_TOKEN_FILE_SIZE: u64 = 64 << 10;

/// Longest token ota accepts, in bytes (GitHub's are under 300).
const MAX_TOKEN_LEN: usize = 4096;

/// Longest hook command, in bytes: Linux's limit on one argument (`MAX_ARG_STRLEN`, 128 KiB
/// with its NUL).
const MAX_COMMAND_LEN: usize = (128 << 10) - 1;

/// Longest systemd unit name, in bytes (systemd's `UNIT_NAME_MAX`, 256 with its NUL).
const MAX_UNIT_LEN: usize = 255;

/// The state of one validation: how the file was written, and the warnings so far.
pub(super) struct Check<'a> {
    pub format: Format,
    /// The original updater's flat format, whose keys are the last part of the new ones
    /// (the two whose name differs, `http_retries` and `max_tree_size_kb`, are checked by
    /// serde, which names them as written).
    pub legacy: bool,
    /// The config file's folder (absolute, normalised).
    pub base_dir: PathBuf,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub warnings: Vec<String>,
}

/// What a key holds: the hint of an error saying it is missing or a placeholder.
fn what(name: &str) -> &'static str {
    match name {
        "source.owner" => "the GitHub user or organisation that owns the repository",
        "source.repo" => "the name of the repository",
        "source.token" | TOKEN_ENV => {
            "a GitHub token that can read the repository, or remove it (a public repository \
             needs none)"
        }
        "branch" => "the branch the developer channel follows",
        "tag" => "the release tag to install, or remove it to follow the latest release",
        "target_dir" => "the directory ota keeps up to date",
        _ => "the real value",
    }
}

/// A placeholder as an error may show it: a token's only when it cannot be a real token
/// pasted into a template (`<ghp_…>`).
fn shown<'v>(name: &str, value: &'v str) -> Option<&'v str> {
    let secret = matches!(
        name,
        "source.token" | "source.token_file" | "source.manifest_key" | TOKEN_ENV
    );
    let safe = value.len() <= 40 && !value.chars().any(|c| c.is_ascii_digit());
    (!secret || safe).then_some(value)
}

impl Check<'_> {
    /// The key as the user wrote it: dotted in the new format, its last part in the original.
    fn key<'n>(&self, name: &'n str) -> &'n str {
        if self.legacy { leaf(name) } else { name }
    }

    /// An example of `key = value` in the file's syntax.
    fn example(&self, name: &str, value: &str) -> String {
        let key = self.key(name);
        match (self.format, key.split_once('.')) {
            (Format::Toml, Some((table, leaf))) => format!("`{leaf} = {value}` under `[{table}]`"),
            (Format::Toml, None) => format!("`{key} = {value}`"),
            (Format::Json, Some((table, leaf))) => {
                format!("`\"{table}\": {{\"{leaf}\": {value}}}`")
            }
            (Format::Json, None) => format!("`\"{key}\": {value}`"),
        }
    }

    /// "`key` why", about the key `name`.
    fn invalid(&self, name: &str, why: impl Display) -> ConfigError {
        let key = self.key(name);
        ConfigError::invalid(key, format!("`{key}` {why}"))
    }

    fn missing(&self, name: &str, example: &str) -> ConfigError {
        let (what, example) = (what(name), self.example(name, example));
        self.invalid(
            name,
            format_args!("is missing: set it to {what}, e.g. {example}"),
        )
    }

    /// Rejects a template's placeholder.
    fn no_placeholder(&self, name: &str, value: &str) -> Result<(), ConfigError> {
        if !is_placeholder(value) {
            return Ok(());
        }
        Err(ConfigError::Placeholder {
            key: self.key(name).to_owned(),
            value: shown(name, value).map(str::to_owned),
            hint: format!("set it to {}", what(name)),
        })
    }

    /// Turns the file into a [`Config`], checking each value; also tells whether the token
    /// was written in the config itself.
    pub(super) fn build(mut self, file: File) -> Result<(Config, bool), ConfigError> {
        let target_dir = match &file.target_dir {
            Some(dir) => self.path("target_dir", dir)?,
            None if self.legacy => self.base_dir.clone(),
            None => return Err(self.missing("target_dir", "\"/opt/app\"")),
        };
        self.not_a_system_folder(&target_dir, file.target_dir.is_none())?;
        let channel = match file.source.kind.as_deref() {
            Some("static") => self.site_channel(file.channel, file.branch, file.tag)?,
            _ => self.channel(file.channel, file.branch, file.tag)?,
        };
        let (allow, ignore) = (
            file.allow.unwrap_or_default(),
            file.ignore.unwrap_or_default(),
        );
        let filter = Filter::new(&allow, &ignore)
            .map_err(|err| ConfigError::invalid(&err.key(), err.to_string()))?;
        let state_dir = self.state_dir(file.state_dir, &target_dir)?;
        let (source, inline_token) = self.source(file.source)?;
        if let (SourceConfig::Github(github), Channel::Developer { .. }) = (&source, &channel)
            && !github.trust.keys.is_empty()
        {
            // A branch tip has no release, so no signed manifest asset to verify.
            return Err(self.invalid(
                "source.public_key",
                "is set, but the channel is \"developer\": a branch tip carries no signed \
                 manifest, so nothing could be installed; follow \"stable\" (signed releases), \
                 or remove `public_key` on development devices",
            ));
        }
        if let (SourceConfig::Github(github), Channel::Developer { .. }) = (&source, &channel)
            && github.manifest_key.is_some()
        {
            self.warnings.push(
                "`source.manifest_key` is set, but the channel is \"developer\": a branch tip \
                 has no release assets, so no `manifest.json` is checked"
                    .to_owned(),
            );
        }
        let network = self.network(file.network)?;
        let limits = Limits {
            max_tree_kb: file.limits.max_tree_kb.map(|n| n.0),
            max_tree_files: file.limits.max_tree_files.map(|n| n.0),
        };
        let (trial, before_update, after_update) =
            self.hooks(file.trial, file.before_update, file.after_update)?;
        let guards = Guards {
            min_free_storage: file.guards.min_free_storage.map_or(0, |n| n.0),
            min_free_mem: file.guards.min_free_mem.map_or(0, |n| n.0),
            // Ranged to 0..=100, so it fits.
            min_battery_percent: file.guards.min_battery_percent.map_or(0, |n| n.0 as u8),
        };
        let schedule = self.schedule(file.schedule)?;
        let report = self.report(file.report)?;
        let device = self.device(file.device)?;
        let warnings = self.warnings;
        let config = Config {
            target_dir,
            state_dir,
            channel,
            filter,
            source,
            network,
            limits,
            trial,
            before_update,
            after_update,
            guards,
            schedule,
            report,
            device,
            warnings,
            config_file: None,
        };
        Ok((config, inline_token))
    }

    /// `[schedule]`: the window needs both hours, and they must differ.
    fn schedule(&self, s: file::Schedule) -> Result<ScheduleConfig, ConfigError> {
        let window = match (s.window_start_hour, s.window_end_hour) {
            (None, None) => None,
            (Some(start), Some(end)) if start.0 == end.0 % 24 && end.0 != 24 => {
                return Err(self.invalid(
                    "schedule.window_end_hour",
                    format_args!(
                        "is {}, the same as `window_start_hour`: the window would be empty. \
                         Set the hour the window closes, or remove both for any hour",
                        end.0
                    ),
                ));
            }
            (Some(start), Some(end)) => Some(crate::schedule::Window {
                start: u8::try_from(start.0).unwrap_or(0),
                end: u8::try_from(end.0).unwrap_or(24),
            }),
            (Some(_), None) => return Err(self.missing("schedule.window_end_hour", "6")),
            (None, Some(_)) => return Err(self.missing("schedule.window_start_hour", "2")),
        };
        if let Some(id) = &s.device_id
            && id.trim().is_empty()
        {
            return Err(self.invalid(
                "schedule.device_id",
                "is empty: set this device's id, or remove it to use /etc/machine-id",
            ));
        }
        let default = ScheduleConfig::default();
        Ok(ScheduleConfig {
            min_interval: s.min_interval_sec.map_or(default.min_interval, |n| n.0),
            window,
            random_delay: s.random_delay_sec.map_or(0, |n| n.0),
            rollout_percent: s
                .rollout_percent
                .and_then(|n| u8::try_from(n.0).ok())
                .unwrap_or(100),
            device_id: s.device_id,
            max_crashes_before_delay: s
                .max_crashes_before_delay
                .and_then(|n| u32::try_from(n.0).ok())
                .unwrap_or(0),
            max_delay: s.max_delay_sec.map_or(default.max_delay, |n| n.0),
        })
    }

    /// Refuses a system or home folder as the target (`defaulted`: the original format's
    /// default, the config file's own folder).
    fn not_a_system_folder(&self, target: &Path, defaulted: bool) -> Result<(), ConfigError> {
        let home = (self.env)("HOME").map(PathBuf::from);
        let Some(system) = system::refused(target, home.as_deref()) else {
            return Ok(());
        };
        let (shown, system_shown) = (target.display(), system.display());
        let which = match system == target {
            true => format!("{shown} is a system or home folder"),
            false => format!("{shown} is the system or home folder {system_shown}"),
        };
        let message = if defaulted {
            format!(
                "this config is in the original updater's flat format without `target_dir`, so \
                 the target would be the config file's folder, and {which}: ota would take over \
                 and delete files there that it did not install. Set `target_dir` to the \
                 application's own folder, e.g. `\"target_dir\": \"/opt/app\"`"
            )
        } else {
            let key = self.key("target_dir");
            format!(
                "`{key}` is refused: {which}, where ota would take over and delete files it \
                 did not install. Set it to the application's own folder, e.g. {}",
                self.example("target_dir", "\"/opt/app\"")
            )
        };
        Err(ConfigError::RefusedTarget {
            path: target.to_owned(),
            message,
        })
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
                    .map_err(|why| self.invalid(name, format_args!("is {value:?}, which {why}")))?;
            }
        }
        let channel_key = self.key("channel");
        match channel.as_deref().unwrap_or("stable") {
            "stable" => {
                if branch.is_some() {
                    self.warnings.push(format!(
                        "`branch` is not used with the stable channel, which follows releases; \
                         set `{channel_key}` to \"developer\" to follow the branch"
                    ));
                }
                Ok(Channel::Stable { tag })
            }
            "developer" if tag.is_some() => Err(self.invalid(
                "tag",
                format_args!(
                    "pins a release, which only the stable channel installs; remove it, or set \
                     `{channel_key}` to \"stable\""
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
                    format_args!(
                        "is {other:?}, but it must be \"stable\" (the latest release) or \
                         \"developer\" (the tip of `branch`){suggestion}"
                    ),
                ))
            }
        }
    }

    /// The channel of a static site: `stable` (the default) or any name `ota publish
    /// --channel` accepts; a site has no tags or branches.
    fn site_channel(
        &mut self,
        channel: Option<String>,
        branch: Option<String>,
        tag: Option<String>,
    ) -> Result<Channel, ConfigError> {
        for (name, set) in [("branch", branch.is_some()), ("tag", tag.is_some())] {
            if set {
                return Err(self.invalid(
                    name,
                    "is not used by a static site, whose releases are published to channels: \
                     remove it, and set `channel` to the name given to `ota publish --channel`",
                ));
            }
        }
        match channel.as_deref().unwrap_or("stable") {
            "stable" => Ok(Channel::Stable { tag: None }),
            name => {
                crate::signed::check_channel_name(name).map_err(|why| {
                    self.invalid("channel", format_args!("is {name:?}, which {why}"))
                })?;
                Ok(Channel::Named {
                    name: name.to_owned(),
                })
            }
        }
    }

    /// `[report]`.
    fn report(&self, r: file::Report) -> Result<ReportConfig, ConfigError> {
        let metrics_file = match r.metrics_file {
            Some(file) => Some(self.path(self.key("report.metrics_file"), &file)?),
            None => None,
        };
        let default = ReportConfig::default();
        Ok(ReportConfig {
            metrics_file,
            error_history_limit: (r.error_history_limit)
                .map_or(default.error_history_limit, |n| n.0 as usize),
        })
    }

    /// A directory path: absolute, lexically normalised (`.` and `..` resolved without
    /// touching the disk).
    fn path(&self, name: &str, value: &str) -> Result<PathBuf, ConfigError> {
        if value.trim().is_empty() {
            Err(self.invalid(name, "is empty; set it to a directory or remove it"))
        } else if value.contains('\0') {
            Err(self.invalid(name, "contains a NUL character"))
        } else if value.starts_with('~') {
            let why = "but ota does not expand `~`; write the absolute path";
            Err(self.invalid(name, format_args!("is {value:?}, {why}")))
        } else {
            self.no_placeholder(name, value)?;
            Ok(path_clean::clean(self.base_dir.join(value)))
        }
    }

    fn state_dir(&mut self, dir: Option<String>, target: &Path) -> Result<PathBuf, ConfigError> {
        let Some(dir) = dir else {
            return Ok(target.join(".ota"));
        };
        let state_dir = self.path("state_dir", &dir)?;
        let shown = state_dir.display();
        let why = if state_dir == target {
            "is target_dir itself; ota's state must not mix with the application's files"
        } else if target.starts_with(&state_dir) {
            "contains target_dir; put it inside target_dir (the default is `<target_dir>/.ota`) \
             or beside it"
        } else {
            if state_dir.starts_with(target) && state_dir != target.join(".ota") {
                self.warnings.push(format!(
                    "`state_dir` ({shown}) is inside target_dir but is not `.ota`: a release \
                     must never contain files under it"
                ));
            }
            return Ok(state_dir);
        };
        Err(self.invalid("state_dir", format_args!("({shown}) {why}")))
    }

    fn source(&mut self, mut source: file::Source) -> Result<(SourceConfig, bool), ConfigError> {
        let trust = self.trust(
            source.public_key.take(),
            source.public_key_file.take(),
            source.allow_downgrade.take(),
        )?;
        match source.kind.as_deref() {
            None | Some("github") => self.github(source, trust),
            Some("static") => Ok((
                SourceConfig::Static(self.static_site(source, trust)?),
                false,
            )),
            Some(kind) => {
                let suggestion = closest(kind, &["github", "static"])
                    .map(|c| format!("; did you mean \"{c}\"?"))
                    .unwrap_or_default();
                Err(self.invalid(
                    "source.kind",
                    format_args!(
                        "is {kind:?}, but it must be \"github\" (GitHub or a compatible \
                         server, the default) or \"static\" (a site written by `ota \
                         publish`){suggestion}"
                    ),
                ))
            }
        }
    }

    /// `public_key`, `public_key_file` and `allow_downgrade`, for either kind of source.
    fn trust(
        &mut self,
        keys: Option<file::OneOrMany>,
        files: Option<file::OneOrMany>,
        allow_downgrade: Option<bool>,
    ) -> Result<Trust, ConfigError> {
        let mut trust = Trust {
            allow_downgrade: allow_downgrade.unwrap_or(false),
            ..Trust::default()
        };
        for key in keys.map(file::OneOrMany::into_vec).unwrap_or_default() {
            self.no_placeholder("source.public_key", &key)?;
            trust
                .keys
                .add(&key)
                .map_err(|why| self.invalid("source.public_key", why))?;
        }
        for file in files.map(file::OneOrMany::into_vec).unwrap_or_default() {
            let key = self.key("source.public_key_file");
            let path = self.path(key, &file)?;
            let text = match read_capped(&path, MAX_KEY_FILE_SIZE) {
                Ok(text) => text,
                Err(ReadError::Io(err)) => {
                    let why = format!("{err}; check the path and its permissions");
                    let message = format!("cannot read `{key}` ({}): {why}", path.display());
                    return Err(ConfigError::invalid(key, message));
                }
                Err(ReadError::TooLarge | ReadError::NotText) => {
                    let message = format!(
                        "`{key}` ({}) is not a minisign public key file (`ota.pub`)",
                        path.display()
                    );
                    return Err(ConfigError::invalid(key, message));
                }
            };
            trust.keys.add(&text).map_err(|why| {
                ConfigError::invalid(key, format!("`{key}` ({}) {why}", path.display()))
            })?;
            trust.key_files.push(path);
        }
        Ok(trust)
    }

    /// `kind = "static"`: `url` and at least one key; none of the GitHub keys.
    fn static_site(
        &mut self,
        source: file::Source,
        trust: Trust,
    ) -> Result<StaticConfig, ConfigError> {
        let github_only = [
            ("source.owner", source.owner.is_some()),
            ("source.repo", source.repo.is_some()),
            ("source.token", source.token.is_some()),
            ("source.token_file", source.token_file.is_some()),
            ("source.api_url", source.api_url.is_some()),
            ("source.raw_url", source.raw_url.is_some()),
            ("source.manifest_key", source.manifest_key.is_some()),
            (
                "source.manifest_key_file",
                source.manifest_key_file.is_some(),
            ),
        ];
        if let Some((name, _)) = github_only.iter().find(|(_, set)| *set) {
            return Err(self.invalid(
                name,
                "is a key of the GitHub source, but `source.kind` is \"static\": remove it",
            ));
        }
        let url = self
            .url("source.url", source.url, false)?
            .ok_or_else(|| self.missing("source.url", "\"https://updates.example.com/app\""))?;
        if trust.keys.is_empty() {
            return Err(self.invalid(
                "source.public_key",
                "is not set, and a static site is trusted only through its signatures: set it \
                 to the second line of the `ota.pub` that `ota keygen` wrote (or set \
                 `public_key_file` to that file)",
            ));
        }
        Ok(StaticConfig { url, trust })
    }

    /// The GitHub source (`kind = "github"` or no kind).
    fn github(
        &mut self,
        source: file::Source,
        trust: Trust,
    ) -> Result<(SourceConfig, bool), ConfigError> {
        if source.url.is_some() {
            return Err(self.invalid(
                "source.url",
                "is the address of a static site, but `source.kind` is not \"static\": set \
                 `kind = \"static\"`, or use `api_url` and `raw_url` for a GitHub-compatible host",
            ));
        }
        let owner = self.github_name("source.owner", source.owner, "\"acme\"")?;
        let repo = self.github_name("source.repo", source.repo, "\"app\"")?;
        let token_file = match &source.token_file {
            Some(file) => Some(self.path(self.key("source.token_file"), file)?),
            None => None,
        };
        let (token, inline) = self.token(source.token, source.token_file)?;
        let (manifest_key, manifest_key_file) =
            self.manifest_key(source.manifest_key, source.manifest_key_file)?;
        let has_token = token.is_some();
        let api_url = self.url("source.api_url", source.api_url, has_token)?;
        let api_url = api_url.unwrap_or_else(|| base_url::GITHUB_API.to_owned());
        let raw_url = match self.url("source.raw_url", source.raw_url, has_token)? {
            Some(raw_url) => raw_url,
            None => base_url::raw_for(&api_url).ok_or_else(|| {
                ConfigError::invalid(
                    "source.raw_url",
                    format!(
                        "`source.api_url` is {api_url:?}, whose raw file address ota cannot \
                         tell, and `source.raw_url` is not set, so files would be fetched from \
                         GitHub instead: set `source.raw_url` to where this host serves raw \
                         files (on GitHub Enterprise, `https://HOST/raw`)"
                    ),
                )
            })?,
        };
        let github = GithubConfig {
            owner,
            repo,
            token_file: token_file.filter(|_| token.is_some()),
            token,
            api_url,
            raw_url,
            trust,
            manifest_key,
            manifest_key_file,
        };
        Ok((SourceConfig::Github(github), inline))
    }

    /// The HMAC key of the original updater's `manifest.json`, from `manifest_key` or
    /// `manifest_key_file` (and that file's path). Never puts the key in an error.
    fn manifest_key(
        &mut self,
        inline: Option<String>,
        file: Option<String>,
    ) -> Result<(Option<Token>, Option<PathBuf>), ConfigError> {
        let (key, path) = match (inline, file) {
            (Some(_), Some(_)) => {
                return Err(self.invalid(
                    "source.manifest_key",
                    "and `source.manifest_key_file` are both set: keep one (the file keeps the \
                     key out of the config)",
                ));
            }
            (None, None) => return Ok((None, None)),
            (Some(key), None) => (key, None),
            (None, Some(file)) => {
                let name = self.key("source.manifest_key_file");
                let path = self.path(name, &file)?;
                let why = match read_capped(&path, MAX_TOKEN_FILE_SIZE) {
                    Ok(text) if !text.trim().is_empty() => {
                        if readable_by_others(&path) {
                            self.warnings.push(format!(
                                "the manifest key file {} can be read by every user on this \
                                 system; restrict it (`chmod 600`)",
                                path.display()
                            ));
                        }
                        return Ok((Some(Token::new(text.trim().to_owned())), Some(path)));
                    }
                    Ok(_) => "it is empty; put the key in it".to_owned(),
                    Err(ReadError::Io(err)) => {
                        format!("{err}; check the path and its permissions")
                    }
                    Err(ReadError::TooLarge) => format!(
                        "it is larger than {MAX_TOKEN_FILE_SIZE} bytes, so it is not a key file"
                    ),
                    Err(ReadError::NotText) => {
                        "it is not text; it must hold only the key".to_owned()
                    }
                };
                let message = format!(
                    "cannot read the manifest key from `{name}` ({}): {why}",
                    path.display()
                );
                return Err(ConfigError::invalid(name, message));
            }
        };
        if key.trim().is_empty() {
            return Err(self.invalid(
                "source.manifest_key",
                "is empty; set it to the original updater's `manifest_key`, or remove it",
            ));
        }
        Ok((Some(Token::new(key)), path))
    }

    /// A GitHub user, organisation or repository name.
    fn github_name(
        &self,
        name: &str,
        value: Option<String>,
        example: &str,
    ) -> Result<String, ConfigError> {
        let Some(value) = value else {
            return Err(self.missing(name, example));
        };
        self.no_placeholder(name, &value)?;
        let parts = value.split_once('/');
        let parts = parts.filter(|(o, r)| !o.is_empty() && !r.is_empty() && !r.contains('/'));
        let bad = |c: &char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        let why = if value.is_empty() {
            format!("is empty: set it to {}", what(name))
        } else if let Some((owner, repo)) = parts {
            let (owner_key, repo_key) = (self.key("source.owner"), self.key("source.repo"));
            format!(
                "is {value:?}, which looks like owner/repository: set `{owner_key}` to \
                 {owner:?} and `{repo_key}` to {repo:?}"
            )
        } else if let Some(bad) = value.chars().find(bad) {
            format!(
                "is {value:?}, which contains {bad:?}; GitHub names hold only letters, digits, \
                 `-`, `_` and `.`"
            )
        } else if value == "." || value == ".." {
            format!("is {value:?}, which is not a GitHub name")
        } else if value.len() > 100 {
            format!(
                "is {} characters long; GitHub names are at most 100",
                value.len()
            )
        } else if let Some(stem) = value.strip_suffix(".git").filter(|_| name == "source.repo") {
            format!("is {value:?}: give the repository's name without `.git`, {stem:?}")
        } else {
            return Ok(value);
        };
        Err(self.invalid(name, why))
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
                let why = "and `source.token_file` are both set: keep one (`token_file` keeps \
                           the secret out of this file)";
                return Err(self.invalid("source.token", why));
            }
            (Some(token), None) => (token, "source.token"),
            (None, Some(file)) => (self.read_token_file(&file)?, "source.token_file"),
            (None, None) => match (self.env)(TOKEN_ENV).map(|t| t.trim().to_owned()) {
                Some(token) if !token.is_empty() => (token, TOKEN_ENV),
                _ => return Ok((None, false)),
            },
        };
        let key = self.key(name);
        let holder = match name {
            TOKEN_ENV => format!("the environment variable `{TOKEN_ENV}`"),
            "source.token_file" => format!("the file named by `{key}`"),
            _ => format!("`{key}`"),
        };
        if name != "source.token_file" {
            self.no_placeholder(name, &secret)?;
        }
        let why = if is_placeholder(&secret) {
            let shown = shown(name, &secret).map(|s| format!(" `{s}`"));
            let shown = shown.unwrap_or_default();
            format!(
                "{holder} still holds a placeholder{shown}: put a GitHub token that can read the \
                 repository in it"
            )
        } else if secret.len() > MAX_TOKEN_LEN {
            format!(
                "the token in {holder} is longer than {MAX_TOKEN_LEN} bytes; check that it was \
                 copied whole"
            )
        } else if secret.chars().any(|c| !c.is_ascii_graphic()) {
            format!(
                "the token in {holder} contains a space, a control character or a non-ASCII \
                 character, which cannot be sent in an HTTP header; check that it was copied \
                 whole"
            )
        } else {
            return Ok((Some(Token::new(secret)), name == "source.token"));
        };
        Err(ConfigError::invalid(key, why))
    }

    fn read_token_file(&mut self, file: &str) -> Result<String, ConfigError> {
        let key = self.key("source.token_file");
        let path = self.path(key, file)?;
        let why = match read_capped(&path, MAX_TOKEN_FILE_SIZE) {
            Ok(text) if !text.trim().is_empty() => {
                if readable_by_others(&path) {
                    self.warnings.push(format!(
                        "the token file {} can be read by every user on this system; restrict \
                         it (`chmod 600`)",
                        path.display()
                    ));
                }
                return Ok(text.trim().to_owned());
            }
            Ok(_) => "it is empty; put the token in it, or remove `token_file`".to_owned(),
            Err(ReadError::Io(err)) => format!("{err}; check the path and its permissions"),
            Err(ReadError::TooLarge) => {
                format!("it is larger than {MAX_TOKEN_FILE_SIZE} bytes, so it is not a token file")
            }
            Err(ReadError::NotText) => "it is not text; it must hold only the token".to_owned(),
        };
        let message = format!(
            "cannot read the token from `{key}` ({}): {why}",
            path.display()
        );
        Err(ConfigError::invalid(key, message))
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
        // The URL is not echoed when it may carry a secret (`user:pass@`, `?access_token=`).
        let url = base_url::parse(&value).map_err(|why| match value.contains(['@', '?', '#']) {
            true => self.invalid(name, why),
            false => self.invalid(name, format_args!("is {value:?}, which {why}")),
        })?;
        if url.scheme() == "http" && !base_url::is_local(&url) {
            let token = if has_token { " and the token" } else { "" };
            let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
            self.warnings.push(format!(
                "`{name}` uses plain http:// to {host}, which is not on the local network: \
                 releases{token} travel unencrypted and can be altered on the way; use https://"
            ));
        }
        Ok(Some(base_url::normalized(&url)))
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
            user_agent: match n.user_agent.map(|agent| agent.trim().to_owned()) {
                Some(agent) => self.user_agent(agent)?,
                None => d.user_agent,
            },
        };
        let (backoff, max) = (network.backoff.as_secs(), network.max_backoff.as_secs());
        if backoff > max {
            let (key, max_key) = (
                self.key("network.backoff_sec"),
                self.key("network.max_backoff_sec"),
            );
            return Err(self.invalid(
                key,
                format_args!(
                    "({backoff}) is larger than `{max_key}` ({max}); the first delay cannot \
                     exceed the cap, so lower `{key}` or raise `{max_key}`"
                ),
            ));
        }
        Ok(network)
    }

    /// `[device]`: paths checked like every path (whether they exist is the run's
    /// business: a missing LED only warns then).
    fn device(&mut self, d: file::Device) -> Result<DeviceConfig, ConfigError> {
        let watchdog_device = (d.watchdog_device)
            .map(|p| self.path("device.watchdog_device", &p))
            .transpose()?;
        let led = (d.led).map(|p| self.path("device.led", &p)).transpose()?;
        let watchdog_timeout = d.watchdog_timeout_ms.map(|ms| Duration::from_millis(ms.0));
        if watchdog_timeout.is_some() && watchdog_device.is_none() {
            self.warnings.push(format!(
                "`{}` is set but no watchdog device is named, so ota feeds no watchdog: set \
                 `watchdog_device` under `[device]` (new format), e.g. \"/dev/watchdog\"",
                self.key("device.watchdog_timeout_ms"),
            ));
        }
        Ok(DeviceConfig {
            watchdog_device,
            watchdog_timeout,
            led,
        })
    }

    /// `[trial]`, `[before_update]` and `[after_update]`.
    fn hooks(
        &self,
        t: file::Trial,
        b: file::BeforeUpdate,
        a: file::AfterUpdate,
    ) -> Result<(TrialConfig, BeforeUpdate, AfterUpdate), ConfigError> {
        let (dt, db, da) = (
            TrialConfig::default(),
            BeforeUpdate::default(),
            AfterUpdate::default(),
        );
        let trial = TrialConfig {
            health_command: self.command("trial.health_command", t.health_command)?,
            health_timeout: secs(t.health_timeout_sec, dt.health_timeout),
            confirm_within: t
                .confirm_within_sec
                .filter(|s| s.0 > 0)
                .map(|s| Duration::from_secs(s.0)),
            boots: t.boots.map_or(0, |n| n.0 as u32),
        };
        let before = BeforeUpdate {
            command: self.command("before_update.command", b.command)?,
            timeout: secs(b.timeout_sec, db.timeout),
        };
        let restart = a.restart.unwrap_or_default();
        for (i, unit) in restart.iter().enumerate() {
            self.unit(&format!("after_update.restart[{i}]"), unit)?;
        }
        let mut post_update = std::collections::BTreeMap::new();
        for (name, command) in a.post_update.unwrap_or_default() {
            let key = format!("after_update.post_update.{name}");
            crate::original::check_post_update(&name).map_err(|why| {
                self.invalid(&key, format_args!("names {why} (a `post_update` name)"))
            })?;
            let Some(command) = self.command(&key, Some(command))? else {
                return Err(self.invalid(&key, "is empty; give the command to run"));
            };
            post_update.insert(name, command);
        }
        let after = AfterUpdate {
            restart,
            reboot: a.reboot.unwrap_or(false),
            command: self.command("after_update.command", a.command)?,
            timeout: secs(a.timeout_sec, da.timeout),
            post_update,
        };
        Ok((trial, before, after))
    }

    /// A hook's command, run with `sh -c`: empty (or only white space) is no command.
    fn command(&self, name: &str, value: Option<String>) -> Result<Option<String>, ConfigError> {
        let Some(command) = value.filter(|c| !c.trim().is_empty()) else {
            return Ok(None);
        };
        if command.contains('\0') {
            Err(self.invalid(name, "contains a NUL character, which no command can hold"))
        } else if command.len() > MAX_COMMAND_LEN {
            Err(self.invalid(
                name,
                format_args!(
                    "is {} bytes long, more than Linux passes in one argument \
                     ({MAX_COMMAND_LEN}); put the commands in a script and run that",
                    command.len()
                ),
            ))
        } else {
            self.no_placeholder(name, &command)?;
            Ok(Some(command.trim().to_owned()))
        }
    }

    /// A systemd unit name for `systemctl restart`, as systemd accepts it. A name without a
    /// suffix stays as written: `systemctl` reads it as `NAME.service`.
    fn unit(&self, name: &str, unit: &str) -> Result<(), ConfigError> {
        self.no_placeholder(name, unit)?;
        let allowed = |c: char| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c);
        let stem = unit.strip_suffix(".service").unwrap_or(unit);
        let why = if unit.is_empty() {
            "is empty; give a unit's name, e.g. \"app.service\"".to_owned()
        } else if unit.starts_with('-') {
            format!("is {unit:?}, which starts with `-`: systemctl would read it as an option")
        } else if let Some(c) = unit.chars().find(|&c| !allowed(c)) {
            format!(
                "is {unit:?}, which contains {c:?}; systemd unit names hold only ASCII letters, \
                 digits and `:-_.\\@` (one unit per entry: `[\"a.service\", \"b.service\"]`)"
            )
        } else if unit.len() > MAX_UNIT_LEN {
            format!("is longer than {MAX_UNIT_LEN} bytes, the most systemd allows")
        } else if matches!(stem, "ota" | "ota-boot") {
            format!(
                "is {unit:?}, the unit that runs ota itself: restarting it would stop ota in the \
                 middle of the update's trial; list the application's own units"
            )
        } else {
            return Ok(());
        };
        Err(self.invalid(name, why))
    }

    fn user_agent(&self, agent: String) -> Result<String, ConfigError> {
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
        Err(self.invalid("network.user_agent", why))
    }
}

/// A number of seconds, or the default.
fn secs<const LO: u64, const HI: u64>(value: Option<Ranged<LO, HI>>, or: Duration) -> Duration {
    value.map_or(or, |secs| Duration::from_secs(secs.0))
}

/// Whether a value is a template's placeholder rather than a real value, by the rule of the
/// reference's *Placeholders*: ignoring case and surrounding spaces, it starts with `YOUR_`
/// or `YOUR-`; is wrapped in `<…>`, `{{…}}` or `${…}` (ota expands no variables); or is
/// `CHANGE_ME`, `REPLACE_ME`, `TODO`, `FIXME`, `TBD`, `PLACEHOLDER`, `...`, `…` or `xxx`.
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
/// no leading `-` (git refuses such branches, and they read as options). Written out rather
/// than taken from gix-validate, which would bring a `gix` crate into the device binary.
/// Returns why it is not valid.
fn check_ref_name(name: &str, what: &str) -> Result<(), String> {
    let full = if what == "branch" {
        "refs/heads/"
    } else {
        "refs/tags/"
    };
    if let Some(short) = name.strip_prefix(full) {
        return Err(format!(
            "is a full ref; give the {what} name alone, {short:?}"
        ));
    }
    let bad_char = name.chars().find(|c| {
        c.is_ascii_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\')
    });
    let parts = || name.split('/');
    let why = match name {
        "" => "it is empty".to_owned(),
        "@" => "it is `@`, which git does not allow as a name".to_owned(),
        _ if name.starts_with('-') => "it starts with `-`".to_owned(),
        _ if name.starts_with('/') || name.ends_with('/') => "it starts or ends with `/`".into(),
        _ if name.ends_with('.') => "it ends with `.`".to_owned(),
        _ if name.contains("..") => "it contains `..`".to_owned(),
        _ if name.contains("@{") => "it contains `@{`".to_owned(),
        _ if name.contains("//") => "it contains `//`".to_owned(),
        _ if bad_char.is_some_and(|c| c.is_ascii_control()) => {
            "it contains a control character".to_owned()
        }
        _ if bad_char.is_some() => format!("it contains {:?}", bad_char.unwrap_or_default()),
        _ if parts().any(|part| part.starts_with('.')) => {
            "it has a part that starts with `.`".to_owned()
        }
        _ if parts().any(|part| part.ends_with(".lock")) => {
            "it has a part that ends with `.lock`".to_owned()
        }
        _ => return Ok(()),
    };
    Err(format!("is not a valid git {what} name: {why}"))
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
