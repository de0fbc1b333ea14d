//! What a person or a script sees of the `ota` binary: results on stdout through checked
//! writes, one log format on stderr, colour only on a terminal, errors as JSON with `--json`.

use std::process::{Command, Output};

use ota_serve::fault::{Action, Fault};

use crate::util::{Device, GitRepo, on_a_terminal, repo_with_a_submodule, serve};

/// The real `ota` binary for `device`, at the default log level (no `RUST_LOG`).
fn ota(device: &Device, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ota"));
    cmd.args(args)
        .arg("--config")
        .arg(&device.config)
        .env_remove("OTA_TOKEN")
        .env_remove("OTA_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR");
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A device with one release installed.
fn installed() -> (GitRepo, ota_serve::Server, Device) {
    let mut repo = GitRepo::new();
    repo.write("main.py", "print(1)\n")
        .write("lib/a.py", "A = 1\n");
    repo.commit("v1");
    repo.tag("v1.0.0");
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    device.ota_expect(&["update"], 0);
    (repo, server, device)
}

/// Every line on stderr starts with its level, the way the final error does.
fn assert_one_format(stderr: &str) {
    for line in stderr.lines() {
        assert!(
            ["error: ", "warning: ", "info: ", "debug: ", "trace: "]
                .iter()
                .any(|label| line.starts_with(label)),
            "a line in another format: {line:?} in\n{stderr}"
        );
    }
}

#[test]
fn a_full_stdout_is_an_error_and_a_closed_one_a_quiet_end() {
    let (_repo, _server, device) = installed();
    let commands: [&[&str]; 5] = [
        &["status"],
        &["status", "--json"],
        &["check"],
        &["update"],
        &["recover"],
    ];
    for args in commands {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = ota(&device, args).stdout(full).output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "ota {args:?} >/dev/full: {stderr}"
        );
        assert!(
            stderr.contains("error: cannot write to standard output: No space left on device"),
            "ota {args:?} >/dev/full: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");

        // `ota status | head -0`: the reader is gone before anything is written.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = ota(&device, args).stdout(writer).output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "ota {args:?} | head -0: {stderr}"
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("error"),
            "ota {args:?} | head -0 ends quietly: {stderr}"
        );
    }
    let full = std::fs::File::create("/dev/full").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ota"))
        .arg("--help")
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot write to standard output"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn logs_in_a_pipe_have_one_format_and_no_colour() {
    let mut repo = GitRepo::new();
    repo.write("main.py", "print(1)\n");
    repo.commit("v1");
    repo.tag("v1.0.0");
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    // A retried request logs a warning, a refused one ends in an error.
    server.set_faults(vec![Fault {
        pattern: "*/releases/latest".into(),
        action: Action::Status(503),
        skip: 0,
        times: Some(1),
    }]);
    let out = ota(&device, &["update", "-v"])
        .env("TERM", "xterm-256color")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: ") && stderr.contains("503"),
        "{stderr}"
    );
    assert!(stderr.contains("info: installed"), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "no colour codes in a pipe: {stderr:?}"
    );
    assert_one_format(&stderr);

    device.edit_config("repo = \"app\"", "repo = \"app\"\nbogus_key = 1");
    let out = ota(&device, &["update"]).output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: ") && stderr.contains("bogus_key"),
        "{stderr}"
    );
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
    assert_one_format(&stderr);
}

#[test]
fn colour_only_on_a_terminal_without_no_color_or_a_dumb_term() {
    let (_repo, _server, device) = installed();
    device.edit_config("repo = \"app\"", "repo = \"app\"\nbogus_key = 1");
    let Some(coloured) = on_a_terminal(&device, "update", &[]) else {
        return;
    };
    assert!(
        coloured.contains("\x1b[1;31merror\x1b[0m: "),
        "a terminal gets colour: {coloured:?}"
    );
    for env in [("NO_COLOR", "1"), ("TERM", "dumb")] {
        let plain = on_a_terminal(&device, "update", &[env]).unwrap();
        assert!(plain.contains("error: "), "{plain:?}");
        assert!(
            !plain.contains('\x1b'),
            "{env:?} turns colour off: {plain:?}"
        );
    }
}

#[test]
fn submodule_warnings_go_to_stderr_and_obey_quiet() {
    let repo = repo_with_a_submodule();
    let server = serve(repo.path());
    let warning = "warning: vendor/lib is a git submodule";

    let device = Device::new(&server, "");
    let out = ota(&device, &["update"]).output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(warning), "{stderr}");
    assert!(
        !stdout.contains("submodule"),
        "stdout holds the result only: {stdout}"
    );

    let quiet = Device::new(&server, "");
    let out = ota(&quiet, &["update", "-q"]).output().unwrap();
    assert!(out.status.success());
    assert!(
        !text(&out.stderr).contains("submodule") && !text(&out.stdout).contains("submodule"),
        "-q silences warnings: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(quiet.tree(), repo.snapshot("v1.0.0"));
}

/// `--json` output of a failed command: the error as a JSON object.
fn json_error(out: &Output) -> serde_json::Value {
    let value: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is JSON ({e}): {}", text(&out.stdout)));
    value["error"].clone()
}

#[test]
fn with_json_an_error_is_also_a_json_object_on_stdout() {
    let (mut repo, server, device) = installed();
    repo.write("main.py", "print(2)\n");
    repo.commit("v2");
    repo.tag("v2.0.0");
    server.set_faults(vec![Fault {
        pattern: "*/main.py".into(),
        action: Action::FlipByte(3),
        skip: 0,
        times: None,
    }]);
    let out = ota(&device, &["update", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let error = json_error(&out);
    let recorded = device.last_error().expect("last_error.json");
    for key in ["phase", "kind", "message"] {
        assert_eq!(error[key], recorded[key], "{key}: {error} vs {recorded}");
    }
    assert_eq!(error["phase"], "fetch", "{error}");
    let message = error["message"].as_str().unwrap();
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("error: {message}")),
        "the person reading stderr sees the same message: {stderr}"
    );

    // An error before any state exists: a config that does not load.
    device.edit_config("repo = \"app\"", "repo = 5");
    for args in [&["check", "--json"][..], &["status", "--json"]] {
        let out = ota(&device, args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        let error = json_error(&out);
        assert_eq!(error["kind"], "config", "{error}");
        assert_eq!(error["phase"], "config", "{error}");
        assert!(
            error["message"].as_str().unwrap().contains("repo"),
            "{error}"
        );
    }
}
