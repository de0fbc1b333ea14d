//! Configuration as a user meets it through the `ota` binary.

use std::path::Path;
use std::process::Command;

use ota::config::{Channel, Config, SourceConfig};

/// Runs `ota status` with `config` written to `dir/name`; returns (exit code, all output).
fn status_with(dir: &Path, name: &str, config: &str) -> (i32, String) {
    let path = dir.join(name);
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ota"))
        .args(["status", "--config"])
        .arg(&path)
        .env_remove("OTA_TOKEN")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap(), text)
}

/// The original MicroPython updater's config, as deployed.
const ORIGINAL: &str = r#"{
  "_comment": "OTA updater configuration",
  "owner": "acme",
  "repo": "greenhouse",
  "channel": "stable",
  "branch": "main",
  "token": "",
  "allow": ["main.py", "lib/"],
  "ignore": ["tests/"],
  "chunk": 1024,
  "stage_dir": ".ota_stage",
  "backup_dir": ".ota_backup",
  "connect_timeout_sec": 10,
  "http_timeout_sec": 20,
  "retries": 3,
  "backoff_sec": 3,
  "max_backoff_sec": 60,
  "force": false,
  "reset_mode": "hard",
  "debug": false
}"#;

#[test]
fn the_original_ota_config_json_loads() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = status_with(dir.path(), "ota_config.json", ORIGINAL);
    assert_eq!(code, 0, "{out}");
    // target_dir defaults to the config file's folder.
    assert!(
        out.contains(&format!("target:      {}", dir.path().display())),
        "{out}"
    );
    // Keys ota does not act on are named in warnings, never silently dropped.
    for key in [
        "chunk",
        "stage_dir",
        "backup_dir",
        "force",
        "reset_mode",
        "debug",
    ] {
        assert!(out.contains(key), "no warning names `{key}`:\n{out}");
    }

    let config = Config::load(&dir.path().join("ota_config.json")).unwrap();
    assert_eq!(config.target_dir, dir.path());
    assert_eq!(config.channel, Channel::Stable { tag: None });
    let SourceConfig::Github(github) = &config.source;
    assert_eq!(
        (github.owner.as_str(), github.repo.as_str()),
        ("acme", "greenhouse")
    );
    assert_eq!(github.token, None, "an empty token means none");
    assert_eq!(config.network.retries, 3);
    assert_eq!(config.network.connect_timeout.as_secs(), 10);
    assert!(config.filter.includes("lib/x.py") && !config.filter.includes("tests/t.py"));
}

#[test]
fn config_errors_name_the_key_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let base = "target_dir = \"app\"\n[source]\nowner = \"acme\"\nrepo = \"app\"\n";
    let cases = [
        (
            format!("{base}ownr = \"x\"\n"),
            vec!["source.ownr", "source.owner"],
        ),
        (
            format!("{base}[network]\nretries = \"many\"\n"),
            vec!["network.retries"],
        ),
        (
            format!("{base}[network]\nparallel = 0\n"),
            vec!["network.parallel"],
        ),
        (
            "target_dir = \"app\"\n[source]\nowner = \"YOUR_GITHUB_USERNAME\"\nrepo = \"app\"\n"
                .into(),
            vec!["source.owner", "YOUR_GITHUB_USERNAME"],
        ),
        (
            "[source]\nowner = \"acme\"\nrepo = \"app\"\n".into(),
            vec!["target_dir"],
        ),
        (
            format!("chanel = \"developer\"\n{base}"),
            vec!["chanel", "channel"],
        ),
        (format!("ignore = [\"../up\"]\n{base}"), vec!["ignore[0]"]),
    ];
    for (text, needles) in cases {
        let (code, out) = status_with(dir.path(), "ota.toml", &text);
        assert_eq!(code, 1, "{text}\n{out}");
        for needle in needles {
            assert!(
                out.contains(needle),
                "error for\n{text}\ndoes not name {needle:?}:\n{out}"
            );
        }
    }
}

#[test]
fn the_token_never_shows() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "ghp_SECRET0123456789abcdefSECRET";
    let text = format!(
        "target_dir = \"app\"\n[source]\nowner = \"acme\"\nrepo = \"app\"\ntoken = \"{secret}\"\nbogus = 1\n"
    );
    let (code, out) = status_with(dir.path(), "ota.toml", &text);
    assert_eq!(code, 1);
    assert!(!out.contains(secret), "{out}");
    let text = text.replace("bogus = 1\n", "");
    let (code, out) = status_with(dir.path(), "ota.toml", &text);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains(secret), "{out}");
}
