//! The one git helper of ota's and ota-serve's tests: scratch repositories written with the
//! real `git` CLI, an independent writer, so that neither the server's reading (gix) nor the
//! client's verification is checked against code that shares its bugs.
//!
//! Test support only: every method panics, with git's stderr, when git fails.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The time of the first commit (2023-11-14T22:13:20Z), in seconds since the epoch.
pub const T0: i64 = 1_700_000_000;

/// A scratch git repository with a work tree and `main` as its initial branch, driven by the
/// `git` CLI with an isolated configuration (no user or system config, no signing).
///
/// It keeps a clock: git runs at the clock's time, and [`GitRepo::commit`] moves it a minute
/// on, so that releases ordered by date are well defined. [`GitRepo::run_at`] and
/// [`GitRepo::commit_all`] take an explicit time instead.
pub struct GitRepo {
    _dir: tempfile::TempDir,
    path: PathBuf,
    home: PathBuf,
    time: i64,
}

impl Default for GitRepo {
    fn default() -> GitRepo {
        GitRepo::new()
    }
}

impl GitRepo {
    /// `git init` in a new temporary folder; the clock starts at [`T0`].
    pub fn new() -> GitRepo {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let home = dir.path().join("home");
        let path = dir.path().join("repo");
        std::fs::create_dir_all(&home).expect("creating the home folder");
        std::fs::create_dir_all(&path).expect("creating the repository folder");
        let repo = GitRepo {
            _dir: dir,
            path,
            home,
            time: T0,
        };
        repo.run(&["init", "-q"]);
        repo
    }

    /// The work tree (and `.git` inside it).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn command(&self, time: i64) -> Command {
        let date = format!("@{time} +0000");
        let mut cmd = Command::new("git");
        cmd.current_dir(&self.path)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .args([
                "-c",
                "user.name=Test User",
                "-c",
                "user.email=test@ota.invalid",
                "-c",
                "init.defaultBranch=main",
                "-c",
                "commit.gpgsign=false",
                "-c",
                "tag.gpgsign=false",
                "-c",
                "core.autocrlf=false",
                "-c",
                "protocol.file.allow=always",
            ]);
        cmd
    }

    /// Runs git at the clock's time and returns its stdout without trailing whitespace.
    pub fn run(&self, args: &[&str]) -> String {
        self.run_at(self.time, args)
    }

    /// Runs git with author and committer dates set to `time`.
    pub fn run_at(&self, time: i64, args: &[&str]) -> String {
        let output = self.command(time).args(args).output();
        stdout_of(output, args)
    }

    /// Writes a file into the work tree (creating folders).
    pub fn write(&self, path: &str, content: impl AsRef<[u8]>) -> &Self {
        let at = self.path.join(path);
        std::fs::create_dir_all(at.parent().expect("a path inside the repository"))
            .expect("creating folders");
        std::fs::write(&at, content).expect("writing a file");
        self
    }

    /// Writes a file with the exec bit.
    pub fn write_exec(&self, path: &str, content: impl AsRef<[u8]>) -> &Self {
        self.write(path, content);
        std::fs::set_permissions(self.path.join(path), std::fs::Permissions::from_mode(0o755))
            .expect("setting the exec bit");
        self
    }

    /// Creates (or replaces) a symlink.
    pub fn symlink(&self, path: &str, target: &str) -> &Self {
        let at = self.path.join(path);
        std::fs::create_dir_all(at.parent().expect("a path inside the repository"))
            .expect("creating folders");
        let _ = std::fs::remove_file(&at);
        std::os::unix::fs::symlink(target, &at).expect("creating a symlink");
        self
    }

    /// Removes a file from the work tree.
    pub fn remove(&self, path: &str) -> &Self {
        std::fs::remove_file(self.path.join(path)).expect("removing a file");
        self
    }

    /// Commits everything at the clock's time, then moves the clock a minute on; returns the
    /// commit id.
    pub fn commit(&mut self, message: &str) -> String {
        let id = self.commit_all(message, self.time);
        self.time += 60;
        id
    }

    /// `git add -A && git commit` at `time` (the clock is left alone); returns the commit id.
    pub fn commit_all(&self, message: &str, time: i64) -> String {
        self.run_at(time, &["add", "-A"]);
        self.run_at(time, &["commit", "-q", "--allow-empty", "-m", message]);
        self.rev("HEAD")
    }

    /// The id `name` resolves to.
    pub fn rev(&self, name: &str) -> String {
        self.run(&["rev-parse", name])
    }

    /// The id of HEAD.
    pub fn head(&self) -> String {
        self.rev("HEAD")
    }

    /// A lightweight tag at HEAD.
    pub fn tag(&self, name: &str) {
        self.run(&["tag", name]);
    }

    /// An annotated tag at HEAD.
    pub fn tag_annotated(&self, name: &str, message: &str) {
        self.run(&["tag", "-a", name, "-m", message]);
    }

    /// A bare clone of this repository, in a new temporary folder (returned so that it lives
    /// as long as the caller needs it).
    pub fn bare_clone(&self) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let target = dir.path().join("bare.git");
        let (from, to) = (self.path.to_str(), target.to_str());
        self.run(&[
            "clone",
            "-q",
            "--bare",
            from.expect("a UTF-8 path"),
            to.expect("a UTF-8 path"),
        ]);
        (dir, target)
    }

    /// The files of `rev`, read back through git: what a device following it should hold.
    pub fn snapshot(&self, rev: &str) -> Tree {
        let mut tree = Tree::new();
        let listing = self.run(&["ls-tree", "-r", "-z", "--full-tree", rev]);
        for record in listing.split('\0').filter(|r| !r.is_empty()) {
            let (meta, path) = record.split_once('\t').expect("ls-tree: meta TAB path");
            let mut parts = meta.split(' ');
            let mode = parts.next().expect("ls-tree: a mode");
            let id = parts.nth(1).expect("ls-tree: an object id");
            let content = || self.blob(id);
            let node = match mode {
                "100644" => Node::File(content(), false),
                "100755" => Node::File(content(), true),
                "120000" => Node::Link(String::from_utf8(content()).expect("a UTF-8 link")),
                _ => continue,
            };
            tree.insert(path.to_owned(), node);
        }
        tree
    }

    /// The bytes of blob `id`, exactly.
    pub fn blob(&self, id: &str) -> Vec<u8> {
        let output = self
            .command(self.time)
            .args(["cat-file", "blob", id])
            .output()
            .expect("git runs");
        assert!(output.status.success(), "git cat-file blob {id} failed");
        output.stdout
    }

    /// Writes a tree object byte by byte (`git hash-object --literally`), so that names git
    /// itself would refuse (`..`, `a\b`, empty, duplicates) can be served. Returns its id.
    pub fn raw_tree(&self, entries: &[Raw]) -> String {
        let mut bytes = Vec::new();
        for entry in entries {
            let (mode, name, id) = match entry {
                Raw::Blob(mode, name, content) => (*mode, *name, self.hash_object(&[], content)),
                Raw::Tree(name, children) => ("40000", *name, self.raw_tree(children)),
            };
            bytes.extend_from_slice(format!("{mode} {name}\0").as_bytes());
            bytes.extend_from_slice(&hex::decode(&id).expect("git prints hex ids"));
        }
        self.hash_object(&["-t", "tree", "--literally"], &bytes)
    }

    fn hash_object(&self, args: &[&str], input: &[u8]) -> String {
        let mut child = self
            .command(self.time)
            .args(["hash-object", "-w", "--stdin"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("git runs");
        child
            .stdin
            .take()
            .expect("a piped stdin")
            .write_all(input)
            .expect("writing to git");
        let output = child.wait_with_output().expect("git runs");
        assert!(output.status.success(), "git hash-object failed");
        String::from_utf8(output.stdout)
            .expect("git prints UTF-8")
            .trim()
            .to_owned()
    }

    /// Commits `tree` on top of HEAD (moving `main`), tags it `tag`, and moves the clock a
    /// minute on; returns the commit id.
    pub fn commit_raw(&mut self, tree: &str, tag: &str) -> String {
        let head = self.head();
        let id = self.run(&["commit-tree", tree, "-p", &head, "-m", tag]);
        self.run(&["update-ref", "refs/heads/main", &id]);
        self.run(&["tag", tag, &id]);
        self.time += 60;
        id
    }
}

/// Runs git on the repository at `git_dir` (a bare one, or a `.git` folder written by other
/// means) with the same isolated configuration; returns stdout without trailing whitespace.
pub fn run_in(git_dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", git_dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output();
    stdout_of(output, args)
}

/// A git run's standard output without trailing whitespace; panics, naming the command and
/// git's message, when git could not run or failed.
fn stdout_of(output: std::io::Result<std::process::Output>, args: &[&str]) -> String {
    let output = output.expect("git runs (is it installed?)");
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("git prints UTF-8")
        .trim_end()
        .to_string()
}

/// One entry of a hand-made git tree object.
pub enum Raw<'a> {
    /// A blob with this mode (e.g. `100644`), name and content.
    Blob(&'a str, &'a str, &'a [u8]),
    /// A sub-tree with this name.
    Tree(&'a str, Vec<Raw<'a>>),
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

/// `len` incompressible bytes (xorshift from `seed`), so that bytes on the wire are bytes of
/// the file: a bandwidth cap or a fault acts on them one for one, and gzip cannot shrink them.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64 ^ seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
