//! Test fixtures: real git repositories built with the `git` CLI in temp dirs (`test_git`,
//! shared with ota-serve's tests), the real `ota-serve` server on loopback, and devices (a
//! target folder plus a config file) driven through the real `ota` binary or the library.

#![allow(dead_code)]

pub mod nginx;
pub mod proxy;
pub mod site;
pub mod static_server;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ota_serve::{Options, Server};
use tempfile::TempDir;
pub use test_git::{GitRepo, Node, Raw, Tree, noise};

pub mod publisher;

/// The files under `root`, skipping the top-level `.ota` folder.
pub fn read_tree(root: &Path) -> Tree {
    let mut tree = Tree::new();
    walk(root, root, &mut tree);
    tree
}

fn walk(root: &Path, dir: &Path, tree: &mut Tree) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        if rel == ".ota" {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).unwrap();
            tree.insert(rel, Node::Link(target.to_str().unwrap().to_owned()));
        } else if meta.is_dir() {
            walk(root, &path, tree);
        } else {
            let exec = meta.permissions().mode() & 0o100 != 0;
            tree.insert(rel, Node::File(std::fs::read(&path).unwrap(), exec));
        }
    }
}

/// A repository whose release v1.0.0 holds `main.py` and a submodule at `vendor/lib`.
pub fn repo_with_a_submodule() -> GitRepo {
    let mut repo = GitRepo::new();
    repo.write("main.py", "print(1)\n");
    repo.commit("base");
    let sha = repo.head();
    repo.run(&[
        "update-index",
        "--add",
        "--cacheinfo",
        &format!("160000,{sha},vendor/lib"),
    ]);
    repo.run(&["commit", "-q", "-m", "submodule"]);
    repo.tag("v1.0.0");
    repo
}

/// Serves `repo` on 127.0.0.1 with an ephemeral port.
pub fn serve(repo: &Path) -> Server {
    serve_with(repo, |_| {})
}

/// Serves `repo` as `acme/app` with options adjusted by `adjust`.
pub fn serve_with(repo: &Path, adjust: impl FnOnce(&mut Options)) -> Server {
    let mut options = Options::new(repo);
    options.owner = Some("acme".into());
    options.name = Some("app".into());
    adjust(&mut options);
    Server::start(options).unwrap()
}

/// A device: a target folder and a config file pointing at a server.
pub struct Device {
    dir: TempDir,
    pub target: PathBuf,
    pub config: PathBuf,
}

impl Device {
    /// A device following `channel_toml` (e.g. `channel = "stable"`) from `server`; `extra`
    /// is appended to the top-level TOML (before the tables).
    pub fn new(server: &Server, extra: &str) -> Device {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("app");
        let config = dir.path().join("ota.toml");
        let text = format!(
            "target_dir = {target:?}\n{extra}\n\
             [source]\nowner = \"acme\"\nrepo = \"app\"\napi_url = \"{}\"\nraw_url = \"{}\"\n\
             [network]\nconnect_timeout_sec = 5\nhttp_timeout_sec = 5\nretries = 2\nbackoff_sec = 1\nmax_backoff_sec = 1\n",
            server.api_url(),
            server.raw_url(),
        );
        std::fs::write(&config, text).unwrap();
        Device {
            dir,
            target,
            config,
        }
    }

    /// A device following the static site at `url`; `source` adds lines to `[source]`
    /// (`public_key = …`, `channel`, …).
    pub fn on_site(url: &str, source: &str) -> Device {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("app");
        let config = dir.path().join("ota.toml");
        let text = format!(
            "target_dir = {target:?}\n\
             [source]\nkind = \"static\"\nurl = \"{url}\"\n{source}\n\
             [network]\nconnect_timeout_sec = 5\nhttp_timeout_sec = 5\nretries = 1\nbackoff_sec = 1\nmax_backoff_sec = 1\n",
        );
        std::fs::write(&config, text).unwrap();
        Device {
            dir,
            target,
            config,
        }
    }

    /// The device's temp folder (beside the target).
    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    /// Runs the real `ota` binary with this device's config.
    pub fn ota(&self, args: &[&str]) -> Output {
        self.ota_logging(args, "ota=debug")
    }

    /// Runs the real `ota` binary with `RUST_LOG` set to `log`.
    pub fn ota_logging(&self, args: &[&str], log: &str) -> Output {
        self.command(args, log).output().unwrap()
    }

    /// Runs the real `ota` binary with `PATH` set to `path` (a test's recording
    /// `systemctl` first) and asserts it exits with `code`; returns stdout + stderr.
    pub fn ota_with_path(&self, args: &[&str], path: &str, code: i32) -> String {
        let out = self
            .command(args, "ota=debug")
            .env("PATH", path)
            .output()
            .unwrap();
        exited(&out, args, code)
    }

    /// Starts the real `ota` binary with this device's config, its output piped.
    pub fn spawn_ota(&self, args: &[&str]) -> std::process::Child {
        let mut cmd = self.command(args, "ota=debug");
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.spawn().unwrap()
    }

    fn command(&self, args: &[&str], log: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ota"));
        cmd.args(args)
            .arg("--config")
            .arg(&self.config)
            .env_remove("OTA_TOKEN")
            .env_remove("OTA_CONFIG")
            .env("RUST_LOG", log);
        cmd
    }

    /// Replaces `from` (which must be there) with `to` in the config file.
    pub fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        assert!(
            text.contains(from),
            "{from:?} is not in the config:\n{text}"
        );
        std::fs::write(&self.config, text.replacen(from, to, 1)).unwrap();
    }

    /// Adds `line` to the config file right after `[section]`, or at the top for "".
    pub fn configure(&self, section: &str, line: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let text = if section.is_empty() {
            format!("{line}\n{text}")
        } else {
            let header = format!("[{section}]\n");
            text.replacen(&header, &format!("{header}{line}\n"), 1)
        };
        std::fs::write(&self.config, text).unwrap();
    }

    /// Runs `ota` and asserts it exits with `code`; returns stdout + stderr.
    pub fn ota_expect(&self, args: &[&str], code: i32) -> String {
        exited(&self.ota(args), args, code)
    }

    /// The target's files.
    pub fn tree(&self) -> Tree {
        read_tree(&self.target)
    }

    /// The library's config for this device.
    pub fn load_config(&self) -> ota::config::Config {
        ota::config::Config::load(&self.config).unwrap()
    }

    /// `last_error.json`, parsed.
    pub fn last_error(&self) -> Option<serde_json::Value> {
        let text = std::fs::read(self.target.join(".ota/last_error.json")).ok()?;
        Some(serde_json::from_slice(&text).unwrap())
    }

    /// The files kept in `downloads/` for the next run: name (a blob id) and size.
    pub fn downloads(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = std::fs::read_dir(self.target.join(".ota/downloads"))
            .map(|entries| {
                entries
                    .map(|e| {
                        let e = e.unwrap();
                        let name = e.file_name().to_string_lossy().into_owned();
                        (name, e.metadata().unwrap().len())
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Everything left in the state folder besides the permanent files (and the files of
    /// `previous/`, kept only while a release is on trial). The files of `downloads/` are
    /// not leftovers: an update that stopped while downloading keeps them on purpose for
    /// the next run ([`Device::downloads`] lists them).
    pub fn leftovers(&self) -> Vec<String> {
        let state = self.target.join(".ota");
        let mut out = Vec::new();
        // `previous/` holds files only while a release is on trial.
        for sub in ["stage", "backup", "previous"] {
            if let Ok(entries) = std::fs::read_dir(state.join(sub)) {
                for e in entries {
                    out.push(format!(
                        "{sub}/{}",
                        e.unwrap().file_name().to_string_lossy()
                    ));
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(&state) {
            for e in entries {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                if !matches!(
                    name.as_str(),
                    "state.json"
                        | "last_error.json"
                        | "lock"
                        | "stage"
                        | "backup"
                        | "cache.json"
                        | "metrics.json"
                        | "errors.json"
                        | "ota-state.tag"
                        | "kept"
                        | "previous"
                        | "downloads"
                ) {
                    out.push(name);
                }
            }
        }
        out.sort();
        out
    }
}

/// Runs `ota ARGS` on a pseudo-terminal (util-linux `script`) with `env`; returns what the
/// terminal showed, or `None` when `script` is not installed.
pub fn on_a_terminal(device: &Device, args: &str, env: &[(&str, &str)]) -> Option<String> {
    let line = format!(
        "'{}' {args} --config '{}'",
        env!("CARGO_BIN_EXE_ota"),
        device.config.display()
    );
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .env_remove("OTA_TOKEN")
        .env_remove("OTA_CONFIG")
        .env("TERM", "xterm-256color");
    for (key, value) in env {
        cmd.env(key, value);
    }
    match cmd.output() {
        Ok(out) if !out.stdout.is_empty() => {
            Some(String::from_utf8_lossy(&out.stdout).into_owned())
        }
        other => {
            eprintln!("skipped: `script` cannot give ota a terminal here: {other:?}");
            None
        }
    }
}

/// Asserts that the `ota` run with `args` that gave `out` exited with `code`; returns its
/// stdout + stderr.
pub fn exited(out: &Output, args: &[&str], code: i32) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(code), "ota {args:?}:\n{text}");
    text
}

/// Appends TOML tables to the device's config.
pub fn tables(device: &Device, text: &str) {
    let mut config = std::fs::read_to_string(&device.config).unwrap();
    config.push_str(text);
    std::fs::write(&device.config, config).unwrap();
}

/// v1.0.0 of a small application: `main.py` and `lib/util.py`.
pub fn small_app() -> GitRepo {
    let mut repo = GitRepo::new();
    repo.write("main.py", "print('v1')\n")
        .write("lib/util.py", "def util(): return 1\n");
    repo.commit("v1");
    repo.tag("v1.0.0");
    repo
}
