//! Test fixtures: real git repositories built with the `git` CLI in temp dirs, the real
//! `ota serve` server on loopback, and devices (a target folder plus a config file) driven
//! through the real `ota` binary or the library.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ota_serve::{Options, Server};
use tempfile::TempDir;

/// A git repository with a work tree, written through the `git` CLI (an independent
/// writer, so the server's reading is checked against real git).
pub struct GitRepo {
    dir: TempDir,
    home: TempDir,
    /// Commit time of the next commit (seconds since the epoch); each commit adds a minute
    /// so that release order by date is well defined.
    time: i64,
}

impl GitRepo {
    pub fn new() -> GitRepo {
        let repo = GitRepo {
            dir: tempfile::tempdir().unwrap(),
            home: tempfile::tempdir().unwrap(),
            time: 1_700_000_000,
        };
        repo.git(&["init", "-q", "-b", "main"]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs git in the repository and returns its stdout; panics on failure.
    pub fn git(&self, args: &[&str]) -> String {
        let date = format!("@{} +0000", self.time);
        let out = Command::new("git")
            .args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "Test")
            .env("GIT_AUTHOR_EMAIL", "test@ota.invalid")
            .env("GIT_COMMITTER_NAME", "Test")
            .env("GIT_COMMITTER_EMAIL", "test@ota.invalid")
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Writes a file (creating folders).
    pub fn write(&self, path: &str, content: impl AsRef<[u8]>) -> &Self {
        let at = self.dir.path().join(path);
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::write(&at, content).unwrap();
        self
    }

    /// Writes a file with the exec bit.
    pub fn write_exec(&self, path: &str, content: impl AsRef<[u8]>) -> &Self {
        self.write(path, content);
        let at = self.dir.path().join(path);
        std::fs::set_permissions(&at, std::fs::Permissions::from_mode(0o755)).unwrap();
        self
    }

    /// Creates a symlink.
    pub fn symlink(&self, path: &str, target: &str) -> &Self {
        let at = self.dir.path().join(path);
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&at);
        std::os::unix::fs::symlink(target, &at).unwrap();
        self
    }

    /// Removes a file.
    pub fn remove(&self, path: &str) -> &Self {
        std::fs::remove_file(self.dir.path().join(path)).unwrap();
        self
    }

    /// Commits everything; returns the commit SHA.
    pub fn commit(&mut self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.time += 60;
        self.head()
    }

    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"]).trim().to_owned()
    }

    /// A lightweight tag at HEAD.
    pub fn tag(&self, name: &str) {
        self.git(&["tag", name]);
    }

    /// An annotated tag at HEAD.
    pub fn tag_annotated(&self, name: &str, message: &str) {
        self.git(&["tag", "-a", name, "-m", message]);
    }

    /// The files of `rev` as a tree snapshot (what a device should hold).
    pub fn snapshot(&self, rev: &str) -> Tree {
        let mut tree = Tree::new();
        let listing = self.git(&["ls-tree", "-r", "-z", "--full-tree", rev]);
        for record in listing.split('\0').filter(|r| !r.is_empty()) {
            let (meta, path) = record.split_once('\t').unwrap();
            let mut parts = meta.split(' ');
            let mode = parts.next().unwrap();
            let sha = parts.nth(1).unwrap();
            let content = || {
                Command::new("git")
                    .args(["cat-file", "blob", sha])
                    .current_dir(self.dir.path())
                    .output()
                    .unwrap()
                    .stdout
            };
            let node = match mode {
                "100644" => Node::File(content(), false),
                "100755" => Node::File(content(), true),
                "120000" => Node::Link(String::from_utf8(content()).unwrap()),
                _ => continue,
            };
            tree.insert(path.to_owned(), node);
        }
        tree
    }
}

/// What is at one path of a tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// Content and exec bit.
    File(Vec<u8>, bool),
    /// Link target.
    Link(String),
}

/// Files (not folders) of a tree, by relative path.
pub type Tree = BTreeMap<String, Node>;

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
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ota"));
        cmd.args(args)
            .arg("--config")
            .arg(&self.config)
            .env_remove("OTA_TOKEN")
            .env_remove("OTA_CONFIG")
            .env("RUST_LOG", log);
        cmd.output().unwrap()
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
        let out = self.ota(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(code), "ota {args:?}:\n{text}");
        text
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

    /// Everything left in the state folder besides the permanent files.
    pub fn leftovers(&self) -> Vec<String> {
        let state = self.target.join(".ota");
        let mut out = Vec::new();
        for sub in ["stage", "backup"] {
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
                    "state.json" | "last_error.json" | "lock" | "stage" | "backup" | "cache.json"
                ) {
                    out.push(name);
                }
            }
        }
        out.sort();
        out
    }
}

/// One entry of a hand-made git tree object.
pub enum Raw<'a> {
    /// A blob with this mode (e.g. `100644`) and content.
    Blob(&'a str, &'a str, &'a [u8]),
    /// A sub-tree.
    Tree(&'a str, Vec<Raw<'a>>),
}

impl GitRepo {
    /// Writes a tree object byte by byte (`git hash-object --literally`), so that names git
    /// itself would refuse (`..`, `a\b`, empty, duplicates) can be served. Returns its SHA.
    pub fn raw_tree(&self, entries: &[Raw]) -> String {
        let mut bytes = Vec::new();
        for entry in entries {
            let (mode, name, sha) = match entry {
                Raw::Blob(mode, name, content) => (*mode, *name, self.raw_blob(content)),
                Raw::Tree(name, children) => ("40000", *name, self.raw_tree(children)),
            };
            bytes.extend_from_slice(format!("{mode} {name}\0").as_bytes());
            bytes.extend_from_slice(&hex_bytes(&sha));
        }
        self.hash_object(&["-t", "tree", "--literally"], &bytes)
    }

    fn raw_blob(&self, content: &[u8]) -> String {
        self.hash_object(&[], content)
    }

    fn hash_object(&self, args: &[&str], input: &[u8]) -> String {
        use std::io::Write;
        let mut child = Command::new("git")
            .args(["hash-object", "-w", "--stdin"])
            .args(args)
            .current_dir(self.dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Commits `tree` on top of HEAD and tags it `tag`.
    pub fn commit_raw(&mut self, tree: &str, tag: &str) -> String {
        let head = self.head();
        let sha = self
            .git(&["commit-tree", tree, "-p", &head, "-m", tag])
            .trim()
            .to_owned();
        self.git(&["update-ref", "refs/heads/main", &sha]);
        self.git(&["tag", tag, &sha]);
        self.time += 60;
        sha
    }
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}
