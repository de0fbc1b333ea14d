//! Loading and validating configs, end to end through `Config::parse` and `Config::load`.

use std::path::Path;
use std::time::Duration;

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
    let SourceConfig::Github(github) = &config.source else {
        panic!("a GitHub source")
    };
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
            ..NetworkConfig::default()
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
    let config = Config::parse(&minimal("", ""), Format::Toml, Path::new("conf"), &no_env).unwrap();
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
        ("/", "/ is a system or home folder"),
        ("/..", "/ is a system or home folder"),
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
    let e = json(r#"{"target_dir": "/a", "retries": 1, "source": {"owner": "a", "repo": "b"}}"#)
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
    assert!(e.to_string().contains("\"github\""), "{e}");
    assert!(e.to_string().contains("\"static\""), "{e}");
    let e = err(&minimal("", "kind = \"statik\""));
    assert!(e.to_string().contains("did you mean \"static\""), "{e}");
}

/// A real minisign public key (the base64 line of an `ota.pub`).
const KEY: &str = "RWSXKEkNxzRhwbRpC5xQyfuh45KpY+gMDCArbOw8UNy0sT78ilrlhAVZ";

/// A static-site config with these `[source]` lines after `kind` (and `top` lines).
fn site(top: &str, source: &str) -> Result<Config, ConfigError> {
    toml(&format!(
        "target_dir = \"/opt/app\"\n{top}\n[source]\nkind = \"static\"\n{source}\n"
    ))
}

#[test]
fn static_source_takes_url_and_keys() {
    let config = site(
        "",
        &format!("url = \"https://updates.example.com/app/\"\npublic_key = {KEY:?}"),
    )
    .unwrap();
    let SourceConfig::Static(s) = &config.source else {
        panic!("a static source")
    };
    assert_eq!(s.url, "https://updates.example.com/app");
    assert_eq!(s.trust.keys.ids().len(), 1);
    assert!(!s.trust.allow_downgrade);
    assert_eq!(config.channel, Channel::Stable { tag: None });
    // Several keys (rotation), and a named channel.
    let config = site(
        "channel = \"beta\"",
        &format!(
            "url = \"https://u.example.com\"\npublic_key = [{KEY:?}, \"RWQLoynTlfUCFoadg5vwher1fyAd8a4khkyo1KJl6CoR/0FPqi/DT7qS\"]\nallow_downgrade = true"
        ),
    )
    .unwrap();
    assert_eq!(config.source.trust().keys.ids().len(), 2);
    assert!(config.source.trust().allow_downgrade);
    assert_eq!(
        config.channel,
        Channel::Named {
            name: "beta".into()
        }
    );
}

#[test]
fn static_source_needs_a_url_and_a_good_key() {
    let e = site("", &format!("public_key = {KEY:?}")).unwrap_err();
    assert_eq!(e.key(), Some("source.url"), "{e}");
    let e = site("", "url = \"https://u.example.com\"").unwrap_err();
    assert_eq!(e.key(), Some("source.public_key"), "{e}");
    assert!(e.to_string().contains("ota.pub"), "{e}");
    let e = site(
        "",
        "url = \"https://u.example.com\"\npublic_key = \"RWnot-a-key\"",
    )
    .unwrap_err();
    assert_eq!(e.key(), Some("source.public_key"), "{e}");
    assert!(e.to_string().contains("not a minisign public key"), "{e}");
}

#[test]
fn static_source_refuses_github_keys_tags_branches_and_bad_channels() {
    let good = format!("url = \"https://u.example.com\"\npublic_key = {KEY:?}");
    for github_key in [
        "owner = \"acme\"",
        "repo = \"app\"",
        "api_url = \"https://x.example.com\"",
    ] {
        let e = site("", &format!("{good}\n{github_key}")).unwrap_err();
        assert!(e.to_string().contains("key of the GitHub source"), "{e}");
    }
    for top in ["tag = \"v1\"", "branch = \"main\""] {
        let e = site(top, &good).unwrap_err();
        assert!(e.to_string().contains("not used by a static site"), "{e}");
    }
    for bad in ["Beta", "-x", "developer", "a/b"] {
        let e = site(&format!("channel = {bad:?}"), &good).unwrap_err();
        assert_eq!(e.key(), Some("channel"), "{bad}: {e}");
    }
    // `url` belongs to a static site only.
    let e = err(&minimal("", "url = \"https://u.example.com\""));
    assert_eq!(e.key(), Some("source.url"), "{e}");
}

/// A config with this `api_url` (and a `raw_url`, which most API URLs need beside them).
fn api_url(url: &str) -> Result<Config, ConfigError> {
    let raw_url = "raw_url = \"https://raw.example.com\"";
    toml(&minimal("", &format!("api_url = {url:?}\n{raw_url}")))
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
            minimal("", &format!("token = {SECRET:?}")).replace("target_dir = \"/opt/app\"", "")
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
        toml(&with("target_dir = \"/a\"\nbranch = \"x\"", "").replace("https", "http")).unwrap();
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
        "`debug` is not used: run ota with `-v` or set `RUST_LOG=ota=debug`",
        "`branch` is not used with the stable channel",
    ] {
        assert!(warnings.contains(needle), "{needle} in {warnings}");
    }
    assert_eq!(config.warnings.len(), 6, "{warnings}");
    // `reset_mode: "hard"` reset the board after an update: here, a reboot.
    assert!(config.after_update.reboot);
    assert!(config.after_update.restart.is_empty() && config.after_update.command.is_none());
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
    let e = json(&original().replace("\"ignore\": [\"tests/\"]", "\"ignore\": [\"../x\"]"))
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
    // Acted on: it is the watchdog's timeout, though no device is named to feed.
    let timeout = config.device.watchdog_timeout;
    assert_eq!(timeout, Some(std::time::Duration::from_secs(30)));
    assert!(
        warnings.contains("`watchdog_timeout_ms` is set but no watchdog device is named"),
        "{warnings}"
    );
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
fn the_reference_documents_every_key() {
    let reference = include_str!("../../docs/config-reference.md");
    let keys = file::all_keys();
    let new_keys = keys.iter().map(|k| error::leaf(k));
    for key in new_keys.chain(file::fields::<original::Original>().iter().copied()) {
        assert!(reference.contains(&format!("`{key}`")), "{key}");
    }
}

#[test]
fn raw_url_follows_api_url_when_certain() {
    let raw_of = |api: &str| github(&api_only(api).unwrap()).raw_url.clone();
    assert_eq!(
        raw_of("https://ghe.example.com/api/v3/"),
        "https://ghe.example.com/raw"
    );
    assert_eq!(
        raw_of("http://192.168.1.5:8080"),
        "http://192.168.1.5:8080/raw"
    );
    assert_eq!(
        raw_of("https://api.github.com"),
        "https://raw.githubusercontent.com"
    );
    let config = toml(&minimal(
        "",
        "api_url = \"https://git.example.com/api/v1\"\nraw_url = \"https://files.example.com\"",
    ))
    .unwrap();
    assert_eq!(github(&config).raw_url, "https://files.example.com");
}

fn api_only(url: &str) -> Result<Config, ConfigError> {
    toml(&minimal("", &format!("api_url = {url:?}")))
}

#[test]
fn raw_url_that_cannot_be_derived_is_required() {
    let e = api_only("https://git.example.com/api/v1").unwrap_err();
    assert_eq!(e.key(), Some("source.raw_url"));
    let text = e.to_string();
    for needle in [
        "`source.api_url`",
        "`source.raw_url` is not set",
        "https://HOST/raw",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
}

#[test]
fn limits() {
    let config = toml(&minimal("", "")).unwrap();
    assert_eq!(config.limits, Limits::default());
    let text = format!(
        "{}\n[limits]\nmax_tree_kb = 64\nmax_tree_files = 500\n",
        minimal("", "")
    );
    let config = toml(&text).unwrap();
    assert_eq!(
        (config.limits.max_tree_kb, config.limits.max_tree_files),
        (Some(64), Some(500))
    );
    let e = err(&format!("{}\n[limits]\nmax_tree_kb = 0\n", minimal("", "")));
    assert_eq!(e.key(), Some("limits.max_tree_kb"));
    assert!(e.to_string().contains("between 1 and 32768"), "{e}");
    let e = err(&format!(
        "{}\n[limits]\nmax_tree_file = 3\n",
        minimal("", "")
    ));
    assert!(
        e.to_string()
            .contains("did you mean `limits.max_tree_files`?"),
        "{e}"
    );
}

#[test]
fn user_agent() {
    let config = toml(&minimal("", "")).unwrap();
    assert!(config.network.user_agent.starts_with("ota/"));
    let config = toml(&with_network("user_agent = \"greenhouse/2.1 (ota)\"")).unwrap();
    assert_eq!(config.network.user_agent, "greenhouse/2.1 (ota)");
    for bad in ["", "caf\u{e9}", "a\tb"] {
        let e = err(&with_network(&format!("user_agent = {bad:?}")));
        assert_eq!(e.key(), Some("network.user_agent"), "{bad:?}");
    }
}

#[test]
fn original_format_acts_on_its_newer_keys() {
    let text = original().replace(
        "\"debug\": false",
        r#""_debug_comment": "x", "debug": false, "http_retries": 7, "user_agent": "pico-ota/1.0",
           "max_tree_size_kb": 48, "max_tree_files": null"#,
    );
    let config = json(&text).unwrap();
    assert_eq!(config.network.retries, 7, "http_retries wins over retries");
    assert_eq!(config.network.user_agent, "pico-ota/1.0");
    assert_eq!(config.limits.max_tree_kb, Some(48));
    assert_eq!(config.limits.max_tree_files, None, "null is no limit");
    let e = json(&text.replace("\"http_retries\": 7", "\"http_retries\": 700")).unwrap_err();
    assert_eq!(e.key(), Some("http_retries"), "named as written: {e}");
    let e = json(&text.replace("48", "0")).unwrap_err();
    assert_eq!(e.key(), Some("max_tree_size_kb"), "{e}");
}

#[test]
fn original_format_drops_a_leading_slash_of_a_pattern() {
    let text = original()
        .replace("[\"main.py\", \"lib/\"]", "[\"/main.py\", \"/lib/\"]")
        .replace("[\"tests/\"]", "[\"/lib/tests/\"]");
    let config = json(&text).unwrap();
    assert!(config.filter.includes("main.py"));
    assert!(config.filter.includes("lib/x.py"));
    assert!(
        !config.filter.includes("library.py"),
        "`/lib/` is the folder"
    );
    assert!(!config.filter.includes("lib/tests/t.py"));
    let e = err(&minimal("allow = [\"/lib/\"]", ""));
    assert_eq!(e.key(), Some("allow[0]"), "the new format keeps the rule");
}

#[test]
fn original_format_comments_and_unused_values_of_any_shape() {
    let text = original().replace(
        "\"debug\": false",
        r#""debug": false, "_owner_comment": {"nested": [1, {"x": null}]},
           "delete_patterns": ["*.tmp", {"odd": 1}], "manifest_key": null"#,
    );
    let config = json(&text).unwrap();
    let warnings = config.warnings.join("\n");
    assert!(
        warnings.contains("`delete_patterns` is not used"),
        "{warnings}"
    );
    assert!(!warnings.contains("manifest_key"), "{warnings}");
}

#[test]
fn original_keys_in_the_new_format_say_why() {
    let e = err(&minimal("manifest_key = \"k\"", ""));
    assert_eq!(e.key(), Some("manifest_key"));
    assert!(
        e.to_string().contains("write it as `source.manifest_key`"),
        "{e}"
    );
    let e = err(&minimal("min_free_storage = 1000", ""));
    assert!(
        e.to_string()
            .contains("write it as `guards.min_free_storage`"),
        "{e}"
    );
    let e = err(&minimal("max_tree_size_kb = 64", ""));
    assert_eq!(
        e.to_string(),
        "unknown key `max_tree_size_kb`: `max_tree_size_kb` is the original format's name of \
         `limits.max_tree_kb`: write it as `limits.max_tree_kb`"
    );
    let e = err(&minimal("user_agent = \"x\"", ""));
    assert!(
        e.to_string().contains("write it as `network.user_agent`"),
        "{e}"
    );
}

#[test]
fn bad_ref_names_name_the_key() {
    let e = err(&minimal(
        "channel = \"developer\"\nbranch = \"my branch\"",
        "",
    ));
    assert_eq!(e.key(), Some("branch"));
    assert!(e.to_string().contains("not a valid git branch name"), "{e}");
    let e = err(&minimal("tag = \"v1..2\"", ""));
    assert_eq!(e.key(), Some("tag"));
}

/// Issue 8, finding 9: system and home folders are refused as targets, before anything is
/// created, with the error kind `refused_target`.
#[test]
fn system_folders_are_refused_as_targets() {
    let home = |name: &str| (name == "HOME").then(|| "/srv/me".to_owned());
    for dir in [
        "/etc",
        "/etc/",
        "/usr",
        "/usr/bin",
        "/bin",
        "/sbin",
        "/lib",
        "/lib64",
        "/boot",
        "/dev",
        "/proc",
        "/sys",
        "/var",
        "/var/lib",
        "/run",
        "/home",
        "/home/pi",
        "/root",
        "/tmp",
        "/srv",
        "/opt",
        "/mnt",
        "/media",
        "/opt/app/..",
        "/srv/me",
    ] {
        let text = format!("target_dir = {dir:?}\n[source]\nowner = \"a\"\nrepo = \"b\"");
        let e = Config::parse(&text, Format::Toml, base(), &home).unwrap_err();
        assert!(e.is_refused_target(), "{dir}: {e}");
        assert_eq!(e.key(), Some("target_dir"));
        assert_eq!(crate::Error::Config(e).kind(), "refused_target");
    }
    let text = "target_dir = \"/srv/me/app\"\n[source]\nowner = \"a\"\nrepo = \"b\"";
    assert!(Config::parse(text, Format::Toml, base(), &home).is_ok());
}

/// The original flat config saved in /etc: its folder would be the target.
#[test]
fn a_flat_config_in_a_system_folder_is_refused() {
    let text = r#"{"owner": "acme", "repo": "app"}"#;
    let e = Config::parse(text, Format::Json, Path::new("/etc"), &no_env).unwrap_err();
    assert!(e.is_refused_target(), "{e}");
    let message = e.to_string();
    assert!(
        message.contains("/etc is a system or home folder") && message.contains("Set `target_dir`"),
        "{message}"
    );
    // With its own target_dir, the same file is fine.
    let text = r#"{"owner": "acme", "repo": "app", "target_dir": "/opt/app"}"#;
    assert!(Config::parse(text, Format::Json, Path::new("/etc"), &no_env).is_ok());
}

/// A config loaded from a file records it, and its token file, so that a release never
/// writes them.
#[test]
fn load_records_the_config_file_and_the_token_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "ghp_abc\n").unwrap();
    let file = dir.path().join("app/../ota.toml");
    std::fs::create_dir(dir.path().join("app")).unwrap();
    std::fs::write(
        &file,
        minimal("", "token_file = \"token\"").replace("/opt/app", "app"),
    )
    .unwrap();
    let config = Config::load(&file).unwrap();
    assert_eq!(config.config_file, Some(dir.path().join("ota.toml")));
    assert_eq!(github(&config).token_file, Some(dir.path().join("token")));
    assert_eq!(toml(&minimal("", "")).unwrap().config_file, None);
}

fn with_hooks(sections: &str) -> String {
    format!("{}\n{sections}\n", minimal("", ""))
}

#[test]
fn hook_sections_take_their_values_and_defaults() {
    let config = toml(&minimal("", "")).unwrap();
    assert_eq!(config.trial, TrialConfig::default());
    assert_eq!(config.before_update, BeforeUpdate::default());
    assert_eq!(config.after_update, AfterUpdate::default());
    assert!(!config.has_trial());

    let config = toml(&with_hooks(
        "[trial]\nhealth_command = \"  sh health.sh \"\nhealth_timeout_sec = 5\n\
         confirm_within_sec = 600\nboots = 2\n\
         [before_update]\ncommand = \"./stop.sh\"\ntimeout_sec = 7\n\
         [after_update]\nrestart = [\"app.service\", \"app-web\", \"getty@tty1.service\"]\n\
         reboot = true\ncommand = \"./migrate.sh --yes\"\ntimeout_sec = 9\n",
    ))
    .unwrap();
    assert_eq!(
        config.trial,
        TrialConfig {
            health_command: Some("sh health.sh".to_owned()),
            health_timeout: Duration::from_secs(5),
            confirm_within: Some(Duration::from_secs(600)),
            boots: 2,
        }
    );
    assert_eq!(config.before_update.command.as_deref(), Some("./stop.sh"));
    assert_eq!(config.before_update.timeout, Duration::from_secs(7));
    let a = &config.after_update;
    // Unit names stay as written: systemctl reads `app-web` as `app-web.service`.
    assert_eq!(a.restart, ["app.service", "app-web", "getty@tty1.service"]);
    assert!(a.reboot);
    assert_eq!(a.command.as_deref(), Some("./migrate.sh --yes"));
    assert_eq!(a.timeout, Duration::from_secs(9));
    assert!(config.has_trial());
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn an_empty_command_or_restart_list_is_none() {
    let config = toml(&with_hooks(
        "[trial]\nhealth_command = \"\"\n[before_update]\ncommand = \" \\t\\n\"\n\
         [after_update]\ncommand = \"\"\nrestart = []\n",
    ))
    .unwrap();
    assert_eq!(config.trial.health_command, None);
    assert_eq!(config.before_update.command, None);
    assert!(config.after_update.is_empty());
    assert!(!config.has_trial());
}

#[test]
fn bad_commands_are_errors_naming_the_key() {
    let e = err(&with_hooks("[before_update]\ncommand = \"a\\u0000b\"\n"));
    assert_eq!(
        e.to_string(),
        "`before_update.command` contains a NUL character, which no command can hold"
    );
    let e = err(&with_hooks(
        "[trial]\nhealth_command = \"<your health check>\"\n",
    ));
    assert_eq!(e.key(), Some("trial.health_command"));
    assert!(e.to_string().contains("placeholder"), "{e}");
    let long = "true; ".repeat(40_000);
    let e = err(&with_hooks(&format!(
        "[after_update]\ncommand = \"{long}\"\n"
    )));
    assert!(
        e.to_string()
            .starts_with("`after_update.command` is 240000 bytes long, more than Linux passes"),
        "{}",
        e.to_string().chars().take(200).collect::<String>()
    );
}

#[test]
fn bad_unit_names_are_errors_naming_the_entry() {
    let cases = [
        (
            "\"\"",
            "`after_update.restart[1]` is empty; give a unit's name",
        ),
        (
            "\"-x\"",
            "which starts with `-`: systemctl would read it as an option",
        ),
        (
            "\"app.service web.service\"",
            "which contains ' '; systemd unit names hold only ASCII letters, digits and \
             `:-_.\\@` (one unit per entry",
        ),
        ("\"app/x\"", "which contains '/'"),
        ("\"app\\n\"", "which contains '\\n'"),
        ("\"ota.service\"", "the unit that runs ota itself"),
        ("\"ota-boot\"", "the unit that runs ota itself"),
        ("\"YOUR_APP.service\"", "still holds the placeholder"),
    ];
    for (unit, needle) in cases {
        let text = with_hooks(&format!(
            "[after_update]\nrestart = [\"ok.service\", {unit}]\n"
        ));
        let e = err(&text);
        assert_eq!(e.key(), Some("after_update.restart[1]"), "{unit}: {e}");
        assert!(e.to_string().contains(needle), "{unit}: {e}");
    }
    let long = format!("{}.service", "a".repeat(250));
    let e = err(&with_hooks(&format!(
        "[after_update]\nrestart = [\"{long}\"]\n"
    )));
    assert!(e.to_string().contains("longer than 255 bytes"), "{e}");
}

fn original_with_reset(mode: &str) -> Result<Config, ConfigError> {
    json(&original().replace(
        "\"reset_mode\": \"hard\"",
        &format!("\"reset_mode\": {mode}"),
    ))
}

#[test]
fn the_originals_reset_mode_maps_onto_after_update() {
    let hard = original_with_reset("\"hard\"").unwrap();
    assert!(hard.after_update.reboot && hard.has_trial());

    for none in ["\"none\"", "null"] {
        let config = original_with_reset(none).unwrap();
        assert!(config.after_update.is_empty(), "{none}");
        assert!(!config.warnings.join("\n").contains("reset_mode"), "{none}");
    }

    let soft = original_with_reset("\"soft\"").unwrap();
    assert!(soft.after_update.is_empty());
    let warnings = soft.warnings.join("\n");
    assert!(
        warnings.contains(
            "`reset_mode` \"soft\" restarted the application in the original updater, but ota \
             cannot tell which systemd units run it, so nothing is restarted after an update: \
             move to the new format and list them in `restart` under `[after_update]`"
        ),
        "{warnings}"
    );

    let e = original_with_reset("\"Hard\"").unwrap_err();
    assert_eq!(e.key(), Some("reset_mode"));
    assert_eq!(
        e.to_string(),
        "`reset_mode` is \"Hard\", but it must be \"hard\" (reboot after an update), \"soft\" \
         (restart the application: see `[after_update]` in the new format) or \"none\"; did \
         you mean \"hard\"?"
    );
    let e = original_with_reset("\"machine\"").unwrap_err();
    assert!(e.to_string().ends_with("or \"none\""), "{e}");
}

#[test]
fn reset_mode_in_the_new_format_says_how_to_write_it() {
    let e = err(&minimal("reset_mode = \"hard\"", ""));
    assert_eq!(
        e.to_string(),
        "unknown key `reset_mode`: `reset_mode` is the original format's; in this format write \
         `reboot = true` under `[after_update]` for \"hard\", the application's systemd units \
         in `restart` under `[after_update]` for \"soft\", nothing for \"none\""
    );
}

#[test]
fn guards_are_read_in_both_formats() {
    let config = toml(&minimal(
        "",
        "[guards]\nmin_free_storage = 1000000\nmin_free_mem = 65536\nmin_battery_percent = 20\n",
    ))
    .unwrap();
    assert_eq!(config.guards.min_free_storage, 1_000_000);
    assert_eq!(config.guards.min_free_mem, 65_536);
    assert_eq!(config.guards.min_battery_percent, 20);
    assert_eq!(toml(&minimal("", "")).unwrap().guards, Guards::default());
    let e = err(&minimal("", "[guards]\nmin_battery_percent = 101\n"));
    assert_eq!(e.key(), Some("guards.min_battery_percent"));
    // The original's keys are acted on, with no warning.
    let text = original().replace(
        "\"debug\": false",
        r#""debug": false, "min_free_storage": 65536, "min_free_mem": 32768,
           "min_battery_percent": 20"#,
    );
    let config = json(&text).unwrap();
    assert_eq!(config.guards.min_free_storage, 65_536);
    assert_eq!(config.guards.min_free_mem, 32_768);
    assert_eq!(config.guards.min_battery_percent, 20);
    let warnings = config.warnings.join("\n");
    assert!(!warnings.contains("min_free"), "{warnings}");
    assert!(!warnings.contains("`min_battery_percent`"), "{warnings}");
}

#[test]
fn device_table_names_the_watchdog_and_the_led() {
    let config = toml(&format!(
        "{}\n[device]\nwatchdog_device = \"/dev/watchdog\"\nwatchdog_timeout_ms = 15000\n\
         led = \"/sys/class/leds/ACT/\"\n",
        minimal("", "")
    ))
    .unwrap();
    let device = &config.device;
    assert_eq!(
        device.watchdog_device.as_deref(),
        Some(Path::new("/dev/watchdog"))
    );
    assert_eq!(
        device.watchdog_timeout,
        Some(std::time::Duration::from_secs(15))
    );
    assert_eq!(
        device.led.as_deref(),
        Some(Path::new("/sys/class/leds/ACT"))
    );
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let e = toml(&format!(
        "{}\n[device]\nwatchdog_timeout_ms = 5\n",
        minimal("", "")
    ));
    let e = e.unwrap_err().to_string();
    assert!(e.contains("between 100 and 3600000"), "{e}");
    let e = toml(&format!("{}\n[device]\nled = \"\"\n", minimal("", "")));
    assert!(e.unwrap_err().to_string().contains("`device.led` is empty"));
    assert_eq!(toml(&minimal("", "")).unwrap().device, Default::default());
}

#[test]
fn manifest_key_inline_from_a_file_and_from_the_original_format() {
    let config = toml(&minimal("", "manifest_key = \"s3cret\"")).unwrap();
    let gh = github(&config);
    assert_eq!(gh.manifest_key.as_ref().unwrap().expose(), "s3cret");
    assert!(!format!("{config:?}").contains("s3cret"), "never printed");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hmac"), "filekey\n").unwrap();
    set_mode(&dir.path().join("hmac"), 0o600);
    let text = minimal("", "manifest_key_file = \"hmac\"");
    let config = Config::parse(&text, Format::Toml, dir.path(), &no_env).unwrap();
    let gh = github(&config);
    assert_eq!(gh.manifest_key.as_ref().unwrap().expose(), "filekey");
    assert_eq!(
        gh.manifest_key_file.as_deref(),
        Some(dir.path().join("hmac").as_path())
    );

    let e = err(&minimal(
        "",
        "manifest_key = \"a\"\nmanifest_key_file = \"b\"",
    ));
    assert_eq!(e.key(), Some("source.manifest_key"));
    let e = err(&minimal("", "manifest_key = \" \""));
    assert!(e.to_string().contains("is empty"), "{e}");
    let e = Config::parse(
        &minimal("", "manifest_key_file = \"missing\""),
        Format::Toml,
        dir.path(),
        &no_env,
    )
    .unwrap_err();
    assert_eq!(e.key(), Some("source.manifest_key_file"));

    let config = json(&original().replace(
        "\"debug\": false",
        "\"debug\": false, \"manifest_key\": \"orig\"",
    ))
    .unwrap();
    assert_eq!(
        github(&config).manifest_key.as_ref().unwrap().expose(),
        "orig"
    );
    assert!(!config.warnings.join("\n").contains("manifest_key"));
}

#[test]
fn post_update_allow_list() {
    let text = format!(
        "{}\n[after_update]\npost_update = {{ migrate = \"./migrate.sh\", \"db-v2\" = \"true\" }}\n",
        minimal("", "")
    );
    let config = toml(&text).unwrap();
    let list = &config.after_update.post_update;
    assert_eq!(
        list.get("migrate").map(String::as_str),
        Some("./migrate.sh")
    );
    assert_eq!(list.get("db-v2").map(String::as_str), Some("true"));
    assert!(!config.after_update.is_empty());

    for (bad, why) in [
        ("{ \"a b\" = \"x\" }", "not a plain name"),
        ("{ a = \"\" }", "is empty"),
        ("{ a = 1 }", ""),
    ] {
        let text = format!("{}\n[after_update]\npost_update = {bad}\n", minimal("", ""));
        let e = err(&text);
        assert!(e.to_string().contains(why), "{bad}: {e}");
    }
}

#[test]
fn public_key_with_the_developer_channel_is_refused_at_load() {
    let key = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3";
    let e = err(&minimal(
        "channel = \"developer\"\nbranch = \"main\"",
        &format!("public_key = \"{key}\""),
    ));
    assert_eq!(e.key(), Some("source.public_key"));
    assert!(e.to_string().contains("branch tip"), "{e}");

    let config = toml(&minimal(
        "channel = \"developer\"\nbranch = \"main\"",
        "manifest_key = \"k\"",
    ))
    .unwrap();
    assert!(
        config
            .warnings
            .join("\n")
            .contains("no `manifest.json` is checked"),
        "{:?}",
        config.warnings
    );
}
