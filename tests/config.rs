//! Configuration as a user meets it through the `ota` binary.

use std::path::Path;
use std::process::Command;

use ota::config::{Channel, Config, SourceConfig};

use crate::util::{Device, GitRepo, serve};

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
    for key in ["chunk", "stage_dir", "backup_dir", "force", "debug"] {
        assert!(out.contains(key), "no warning names `{key}`:\n{out}");
    }
    // `reset_mode` is acted on: "hard" reboots after an update, as the original reset.
    assert!(!out.contains("reset_mode"), "{out}");

    let config = Config::load(&dir.path().join("ota_config.json")).unwrap();
    assert_eq!(config.target_dir, dir.path());
    assert_eq!(config.channel, Channel::Stable { tag: None });
    let SourceConfig::Github(github) = &config.source else {
        panic!("a GitHub source")
    };
    assert_eq!(
        (github.owner.as_str(), github.repo.as_str()),
        ("acme", "greenhouse")
    );
    assert_eq!(github.token, None, "an empty token means none");
    assert_eq!(config.network.retries, 3);
    assert_eq!(config.network.connect_timeout.as_secs(), 10);
    assert!(config.filter.includes("lib/x.py") && !config.filter.includes("tests/t.py"));
    assert!(config.after_update.reboot, "reset_mode \"hard\" reboots");
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
        (
            format!("{base}[after_update]\nrestart = [\"app.service web.service\"]\n"),
            vec!["after_update.restart[0]", "one unit per entry"],
        ),
        (
            format!("{base}[trial]\nhealth_command = \"TODO\"\n"),
            vec!["trial.health_command", "placeholder"],
        ),
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

/// The original updater's shipped `ota_config.json`, rebuilt key by key: every key its code
/// reads, each after its `_<key>_comment`, with the template's placeholders.
const SHIPPED: &str = include_str!("fixtures/original_ota_config.json");

/// The keys of the original that ota acts on.
const ACTED: &[&str] = &[
    "owner",
    "repo",
    "token",
    "manifest_key",
    "channel",
    "branch",
    "allow",
    "ignore",
    "connect_timeout_sec",
    "http_timeout_sec",
    "retries",
    "http_retries",
    "backoff_sec",
    "max_backoff_sec",
    "user_agent",
    "max_tree_size_kb",
    "max_tree_files",
    "reset_mode",
    "min_free_storage",
    "min_free_mem",
    "min_battery_percent",
    "min_update_interval_sec",
    "update_window_start_hour",
    "update_window_end_hour",
    "rollout_percent",
    "max_crashes_before_delay",
    "error_history_limit",
    "watchdog_timeout_ms",
];

#[test]
fn the_original_shipped_config_loads_with_only_its_placeholders_filled_in() {
    let dir = tempfile::tempdir().unwrap();
    let token = "ghp_0123456789abcdefABCDEF0123456789abcd";
    let text = SHIPPED
        .replace("YOUR_GITHUB_USERNAME", "acme")
        .replace("YOUR_REPO_NAME", "greenhouse")
        .replace("YOUR_GITHUB_TOKEN", token)
        .replace("YOUR_WIFI_SSID", "HomeWifi")
        .replace("YOUR_WIFI_PASSWORD", "hunter2-wifi-pass");
    let (code, out) = status_with(dir.path(), "ota_config.json", &text);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("unknown key"), "{out}");
    for secret in [token, "hunter2", "HomeWifi"] {
        assert!(!out.contains(secret), "{secret} shown:\n{out}");
    }

    // Every key ota does not act on is named in a warning that says why; no other key is.
    let shipped: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(SHIPPED).unwrap();
    let keys: Vec<&str> = shipped.keys().map(String::as_str).collect();
    assert!(keys.len() > 50, "{keys:?}");
    for key in keys.iter().filter(|k| !k.starts_with('_')) {
        let warned = out.contains(&format!("`{key}` is not used: "));
        assert_eq!(warned, !ACTED.contains(key), "`{key}`:\n{out}");
    }
    assert!(out.contains("a later version"), "{out}");

    // The acted-on keys took effect.
    let config = Config::load(&dir.path().join("ota_config.json")).unwrap();
    assert_eq!(config.target_dir, dir.path());
    let SourceConfig::Github(github) = &config.source else {
        panic!("a GitHub source")
    };
    assert_eq!(
        (github.owner.as_str(), github.repo.as_str()),
        ("acme", "greenhouse")
    );
    assert_eq!(github.token.as_ref().unwrap().expose(), token);
    assert_eq!(config.channel, Channel::Stable { tag: None });
    assert_eq!(config.report.error_history_limit, 10);
    assert!(config.filter.includes("lib/x.py") && !config.filter.includes("tests/t.py"));
    let schedule = &config.schedule;
    assert_eq!(schedule.min_interval, 3600);
    assert_eq!(
        schedule.window,
        Some(ota::schedule::Window { start: 2, end: 5 })
    );
    assert_eq!(
        (schedule.rollout_percent, schedule.max_crashes_before_delay),
        (100, 3)
    );
    let watchdog = config.device.watchdog_timeout;
    assert_eq!(watchdog, Some(std::time::Duration::from_secs(8)));
    let net = &config.network;
    assert_eq!(
        (net.connect_timeout.as_secs(), net.http_timeout.as_secs()),
        (10, 20)
    );
    assert_eq!(
        (
            net.retries,
            net.backoff.as_secs(),
            net.max_backoff.as_secs()
        ),
        (3, 3, 60)
    );
    assert_eq!(net.user_agent, "pico-ota/1.0");
    assert!(config.after_update.reboot, "reset_mode \"hard\" reboots");
    let guards = config.guards;
    assert_eq!(
        (guards.min_free_storage, guards.min_free_mem),
        (65536, 32768)
    );
    assert_eq!(guards.min_battery_percent, 20);
    assert_eq!(
        (config.limits.max_tree_kb, config.limits.max_tree_files),
        (None, None),
        "null is no limit"
    );

    // Unfilled, it names the first placeholder.
    let (code, out) = status_with(dir.path(), "ota_config.json", SHIPPED);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("`owner` still holds the placeholder `YOUR_GITHUB_USERNAME`"),
        "{out}"
    );
}

/// A release of `files` small files, served; a device following it.
fn release_of(files: usize) -> (GitRepo, ota_serve::Server, Device) {
    let mut repo = GitRepo::new();
    for i in 0..files {
        repo.write(&format!("lib/module_{i:02}.py"), format!("N = {i}\n"));
    }
    repo.commit("v1");
    repo.tag("v1.0.0");
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    (repo, server, device)
}

fn set_limit(device: &Device, line: &str) {
    let text = std::fs::read_to_string(&device.config).unwrap();
    std::fs::write(&device.config, format!("{text}\n[limits]\n{line}\n")).unwrap();
}

#[test]
fn a_release_with_more_files_than_max_tree_files_is_refused_with_both_numbers() {
    let (repo, server, device) = release_of(5);
    set_limit(&device, "max_tree_files = 4");
    let out = device.ota_expect(&["update"], 1);
    assert!(out.contains("the release holds 5 files"), "{out}");
    assert!(out.contains("limit of 4 set by `max_tree_files`"), "{out}");
    assert!(out.contains("raise the limit, or remove it"), "{out}");
    assert_eq!(server.stats().raw_requests, 0, "no file downloaded");
    assert!(!device.target.join("lib").exists());

    device.edit_config("max_tree_files = 4", "max_tree_files = 5");
    device.ota_expect(&["update"], 0);
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));
}

#[test]
fn a_tree_response_larger_than_max_tree_kb_is_refused_with_both_numbers() {
    let (repo, server, device) = release_of(20);
    set_limit(&device, "max_tree_kb = 1");
    let out = device.ota_expect(&["update"], 1);
    let kb = out
        .split("the tree response is ")
        .nth(1)
        .and_then(|rest| rest.split(" KiB (").next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no size in:\n{out}"));
    assert!(kb > 1, "{out}");
    assert!(
        out.contains("more than the limit of 1 KiB set by `max_tree_kb`"),
        "{out}"
    );
    assert_eq!(server.stats().raw_requests, 0, "no file downloaded");

    device.edit_config("max_tree_kb = 1", &format!("max_tree_kb = {kb}"));
    device.ota_expect(&["update"], 0);
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));
}

#[test]
fn api_url_alone_finds_ota_serve_raw_files() {
    let (repo, server, device) = release_of(3);
    device.edit_config(&format!("raw_url = \"{}\"\n", server.raw_url()), "");
    device.ota_expect(&["update"], 0);
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));
    assert_eq!(server.stats().raw_requests, 3);
}
