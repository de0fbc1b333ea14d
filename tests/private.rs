//! A private repository, end to end: `ota-serve` with a token answers GitHub's 401 to any
//! request without it, and the real `ota` binary installs the exact tree with the token from
//! each place it can come from (config `token`, `token_file`, `OTA_TOKEN`).

use std::process::{Command, Output};

use crate::util::{Device, GitRepo, serve_with};

const TOKEN: &str = "ghp_loopbackPrivateRepoToken0123456789";

fn private_repo() -> (GitRepo, String) {
    let mut repo = GitRepo::new();
    repo.write("main.py", "print('private')\n")
        .write("lib/util.py", "X = 1\n")
        .write_exec("bin/run", "#!/bin/sh\n");
    let commit = repo.commit("v1");
    repo.tag("v1.0.0");
    (repo, commit)
}

/// Runs the real `ota update` with `OTA_TOKEN` set to `env_token` (or unset).
fn update(device: &Device, env_token: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ota"));
    cmd.args(["update", "--config"])
        .arg(&device.config)
        .env_remove("OTA_TOKEN")
        .env_remove("OTA_CONFIG")
        .env("RUST_LOG", "ota=info");
    if let Some(token) = env_token {
        cmd.env("OTA_TOKEN", token);
    }
    cmd.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_private_repository_installs_exactly_with_the_token_from_config_file_or_env() {
    let (repo, commit) = private_repo();
    let server = serve_with(repo.path(), |o| o.token = Some(TOKEN.into()));
    let want = repo.snapshot(&commit);

    let in_config = Device::new(&server, "");
    in_config.configure("source", &format!("token = \"{TOKEN}\""));

    let in_file = Device::new(&server, "");
    let token_file = in_file.home().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    in_file.configure("source", &format!("token_file = {token_file:?}"));

    let in_env = Device::new(&server, "");

    for (device, env_token) in [(&in_config, None), (&in_file, None), (&in_env, Some(TOKEN))] {
        server.reset_stats();
        let out = update(device, env_token);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(device.tree(), want, "{}", text(&out));
        let log = server.stats().log;
        assert!(!log.is_empty());
        assert!(
            log.iter().all(|r| r.authorized && r.status != 401),
            "every request carried the token: {log:?}"
        );
    }
}

#[test]
fn without_the_right_token_ota_exits_1_and_installs_nothing() {
    let (repo, _) = private_repo();
    let server = serve_with(repo.path(), |o| o.token = Some(TOKEN.into()));

    let none = Device::new(&server, "");
    let wrong = Device::new(&server, "");
    wrong.configure("source", "token = \"ghp_notTheRightToken\"");

    for device in [&none, &wrong] {
        server.reset_stats();
        let out = update(device, None);
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(1), "{shown}");
        // The refusal reaches the user, with the settings that supply a token.
        for needle in ["401", "token", "token_file", "OTA_TOKEN"] {
            assert!(shown.contains(needle), "the error names {needle}: {shown}");
        }
        assert!(!shown.contains("ghp_notTheRightToken"), "{shown}");
        assert!(device.tree().is_empty(), "nothing was installed: {shown}");
        assert!(
            server.stats().log.iter().all(|r| r.status == 401),
            "the server refused every request"
        );
    }
}
