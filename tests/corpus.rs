//! The hostile-input corpus: every case installs a good release, then meets one hostile
//! input — a git tree, a release or commit answer, a tree listing, a config, a server
//! misbehaving, a target laid out to trap ota — and must end the same way:
//!
//! - `ota update --json` (or the case's command) exits 1 with `{"error":{"kind",…}}` of the
//!   expected kind and a message that names what a user can act on;
//! - nothing outside the state folder changed: the device's whole folder (the target with
//!   the old release, the config, and a sibling `outside/` of canary files) is compared
//!   before and after, entry by entry (kind, mode, owner, inode, size, bytes, link target,
//!   modification time);
//! - a refusal before the fetch downloaded no file;
//! - a failure after the lock is taken is in `last_error.json` with the same kind;
//! - nothing new is left in the state folder (no journal, stage or backup).
//!
//! A few inputs are not refused but skipped with a warning ([`SKIPPED`]): the update succeeds
//! and the paths the case keeps are left alone.
//! `OTA_CORPUS_ONLY=NAME` runs the cases whose name contains NAME.
//!
//! To add a case, append it to [`cases`]: a name, the input, the expected kind and message,
//! and a setup that makes the hostile input on a [`Sandbox`] (v1.0.0 installed, its server
//! ready for faults, nothing run yet).

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use ota_serve::Server;
use ota_serve::fault::{Action, Fault};

use crate::util::{Device, GitRepo, Raw, serve};

/// What kind of input a case is hostile in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Input {
    /// A git tree served as it is by ota-serve.
    Tree,
    /// The release or commit answer of the API.
    ReleaseJson,
    /// The tree listing (the release's manifest) as the API answers it, or the manifest ota
    /// keeps on the device (`state.json`, the journal).
    Manifest,
    /// The config file.
    Config,
    /// The server's answers on the wire (status, bytes, lengths, redirects).
    Server,
    /// What the target looks like on disk.
    Layout,
}

/// One hostile input and the refusal it must meet.
struct Case {
    name: &'static str,
    input: Input,
    /// Prepares the hostile input on a sandbox that has v1.0.0 installed.
    setup: fn(&mut Sandbox),
    /// The `kind` of the JSON error.
    kind: &'static str,
    /// A substring of the error message.
    message: &'static str,
}

const fn case(
    name: &'static str,
    input: Input,
    kind: &'static str,
    message: &'static str,
    setup: fn(&mut Sandbox),
) -> Case {
    Case {
        name,
        input,
        setup,
        kind,
        message,
    }
}

/// A device with v1.0.0 installed from a real git repository served on loopback, with a
/// folder of canary files beside the target.
struct Sandbox {
    repo: GitRepo,
    server: Server,
    device: Device,
    faults: Vec<Fault>,
    /// The state folder, left out of the before/after comparison.
    state: PathBuf,
    /// The command run (`--json` and `--config` are added).
    command: Vec<&'static str>,
    /// What the app does while ota's download is stalled (the case's setup stalls it).
    during: Option<fn(&Sandbox)>,
    /// For a [`SKIPPED`] case: the paths (relative to the device's folder) inside the target
    /// that must not change.
    kept: Vec<PathBuf>,
}

const F: &str = "100644";

/// The `kind` of a case whose input is not refused but skipped: the update succeeds, a
/// warning names the skipped path, nothing outside the target changes, and inside it the
/// `kept` paths stay as they were.
const SKIPPED: &str = "skipped with a warning";

impl Sandbox {
    fn new() -> Sandbox {
        let mut repo = GitRepo::new();
        repo.write("main.py", "print(1)\n")
            .write("lib/util.py", "def f():\n    return 1\n")
            .write_exec("bin/run.sh", "#!/bin/sh\nexec python3 main.py\n")
            .symlink("current", "lib");
        repo.commit("v1");
        repo.tag("v1.0.0");
        let server = serve(repo.path());
        let device = Device::new(&server, "");
        // One retry without backoff: refusals must not depend on patience.
        device.edit_config("retries = 2", "retries = 1");
        device.edit_config("backoff_sec = 1", "backoff_sec = 0");
        device.edit_config("max_backoff_sec = 1", "max_backoff_sec = 0");
        device.ota_expect(&["update"], 0);
        let outside = device.home().join("outside");
        std::fs::create_dir_all(outside.join("dir")).unwrap();
        std::fs::write(outside.join("canary.txt"), "do not touch\n").unwrap();
        std::fs::write(outside.join("dir/secret"), "secret\n").unwrap();
        let state = device.target.join(".ota");
        Sandbox {
            repo,
            server,
            device,
            faults: Vec::new(),
            state,
            command: vec!["update"],
            during: None,
            kept: Vec::new(),
        }
    }

    fn home(&self) -> &Path {
        self.device.home()
    }

    fn target(&self) -> &Path {
        &self.device.target
    }

    /// Publishes v2.0.0 with a hand-written tree (names git itself would refuse).
    fn release_raw(&mut self, entries: &[Raw]) {
        let tree = self.repo.raw_tree(entries);
        self.repo.commit_raw(&tree, "v2.0.0");
    }

    /// Publishes v2.0.0: v1 with `main.py` changed and a 64 KiB file added.
    fn release_v2(&mut self) {
        self.repo
            .write("main.py", "print(2)\n")
            .write("data/big.bin", crate::util::noise(64 * 1024, 2));
        self.repo.commit("v2");
        self.repo.tag("v2.0.0");
    }

    /// Publishes v2.0.0 (see [`Sandbox::release_v2`]) also adding `path`, and stalls the
    /// download of its big file for 5 seconds after its first KiB.
    fn stall_v2_adding(&mut self, path: &str) {
        self.repo.write(path, "new\n");
        self.release_v2();
        let pause = std::time::Duration::from_secs(5);
        self.fault("/raw/*big.bin", Action::Stall { after: 1024, pause });
    }

    fn fault(&mut self, pattern: &str, action: Action) {
        self.faults.push(Fault::new(pattern, action));
        self.server.set_faults(self.faults.clone());
    }

    /// Answers `body` (JSON) to every request matching `pattern`.
    fn body(&mut self, pattern: &str, body: impl Into<String>) {
        self.fault(
            pattern,
            Action::Body {
                bytes: body.into().into_bytes(),
                content_type: "application/json".into(),
            },
        );
    }

    /// A tree listing of v2 with `entries` (JSON objects) as its files.
    fn tree_answer(&mut self, entries: &[String]) {
        self.release_v2();
        let body = format!(
            r#"{{"sha":"{}","truncated":false,"tree":[{}]}}"#,
            "0".repeat(40),
            entries.join(",")
        );
        self.body("*/git/trees/*", body);
    }

    /// The blob id of `main.py` at v1.0.0.
    fn blob(&self) -> String {
        self.repo.rev("v1.0.0:main.py")
    }

    /// Replaces `from` with `to` in the config file.
    fn config(&self, from: &str, to: &str) {
        self.device.edit_config(from, to);
    }

    /// Adds `line` at the top of the config file, or under `[section]`.
    fn configure(&self, section: &str, line: &str) {
        self.device.configure(section, line);
    }

    /// Moves the config file into the target (the original updater's layout), with
    /// `target_dir = "."`, and keeps it from changing.
    fn config_in_target(&mut self) {
        let inside = self.target().join("ota.toml");
        let text = std::fs::read_to_string(&self.device.config).unwrap();
        let target = format!("target_dir = {:?}", self.target().display().to_string());
        std::fs::write(&inside, text.replacen(&target, "target_dir = \".\"", 1)).unwrap();
        std::fs::remove_file(&self.device.config).unwrap();
        self.device.config = inside;
        self.kept.push("app/ota.toml".into());
    }

    /// Appends `text` (a table) at the end of the config file.
    fn append(&self, text: &str) {
        let mut config = std::fs::read_to_string(&self.device.config).unwrap();
        config.push_str(text);
        config.push('\n');
        std::fs::write(&self.device.config, config).unwrap();
    }

    /// Writes a file in the state folder.
    fn state_file(&self, name: &str, text: &str) {
        std::fs::write(self.state.join(name), text).unwrap();
    }
}

/// A journal of transaction `txid` with `ops` (JSON objects, comma-separated).
fn journal(txid: &str, ops: &str) -> String {
    format!(
        r#"{{"format":1,"txid":{txid:?},"release":{{"channel":"stable","ref":"v0","commit":"{}"}},"ops":[{ops}]}}"#,
        "0".repeat(40)
    )
}

/// A JSON tree entry.
fn entry(path: &str, mode: &str, sha: &str, size: &str) -> String {
    let path = serde_json::to_string(path).unwrap();
    format!(r#"{{"path":{path},"mode":"{mode}","type":"blob","sha":"{sha}","size":{size}}}"#)
}

/// Waits until ota has started writing a download into `downloads/` (it is then stalled
/// by the case's fault), so that the app's change lands mid-download.
fn wait_for_staging(state: &Path) {
    for _ in 0..3000 {
        let staged = std::fs::read_dir(state.join("downloads"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|file| file.metadata().is_ok_and(|m| m.len() > 0));
        if staged {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("ota never started staging a download");
}

/// What an entry of the sandbox is, to the byte.
#[derive(Debug, PartialEq, Eq)]
struct Snap {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    ino: u64,
    mtime: (i64, i64),
    size: u64,
    content: Vec<u8>,
}

/// Every entry under `root` except `skip` and what is below it, without following links.
fn snapshot(root: &Path, skip: &Path) -> BTreeMap<PathBuf, Snap> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path == skip {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let ft = meta.file_type();
        let (kind, content) = if ft.is_symlink() {
            let target = std::fs::read_link(&path).unwrap();
            ("link", target.into_os_string().into_encoded_bytes())
        } else if ft.is_dir() {
            for e in std::fs::read_dir(&path).unwrap() {
                stack.push(e.unwrap().path());
            }
            ("dir", Vec::new())
        } else if ft.is_file() {
            ("file", std::fs::read(&path).unwrap())
        } else if ft.is_fifo() {
            ("fifo", Vec::new())
        } else {
            ("other", Vec::new())
        };
        let snap = Snap {
            kind,
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            ino: meta.ino(),
            // A folder's mtime and size follow its entries, which are compared one by one; a
            // rollback that moved a file out and back changes them and nothing else.
            mtime: match kind {
                "dir" => (0, 0),
                _ => (meta.mtime(), meta.mtime_nsec()),
            },
            size: match kind {
                "dir" => 0,
                _ => meta.len(),
            },
            content,
        };
        out.insert(path.strip_prefix(root).unwrap().to_path_buf(), snap);
    }
    out
}

/// Runs one case; `Err` says how it went wrong.
fn check(case: &Case) -> Result<(), String> {
    let mut sandbox = Sandbox::new();
    (case.setup)(&mut sandbox);
    let home = sandbox.home().to_path_buf();
    let mut before = snapshot(&home, &sandbox.state);
    let in_state = sandbox.state.starts_with(sandbox.target());
    let planted = match in_state {
        true => sandbox.device.leftovers(),
        false => Vec::new(),
    };
    sandbox.server.reset_stats();
    let mut args = sandbox.command.clone();
    args.push("--json");
    let out = match sandbox.during {
        None => sandbox.device.ota(&args),
        Some(during) => {
            let child = sandbox.device.spawn_ota(&args);
            wait_for_staging(&sandbox.state);
            during(&sandbox);
            // The app's change is not ota's write: compare against the target as the app left it.
            before = snapshot(&home, &sandbox.state);
            child.wait_with_output().unwrap()
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout_start: String = stdout.chars().take(600).collect();
    let shown = format!(
        "exit {:?}\nstdout: {stdout_start}\nstderr: {stderr}",
        out.status.code()
    );
    let mut problems = Vec::new();
    let skipped = case.kind == SKIPPED;
    if skipped {
        if out.status.code() != Some(0) {
            problems.push("ota did not exit 0".to_string());
        }
        if !stderr
            .lines()
            .any(|l| l.starts_with("warning:") && l.contains(case.message))
        {
            problems.push(format!("no warning says {:?}", case.message));
        }
    } else if out.status.code() != Some(1) {
        problems.push("ota did not exit 1".to_string());
    }
    match serde_json::from_str::<serde_json::Value>(&stdout) {
        _ if skipped => {}
        Ok(json) => {
            let error = &json["error"];
            if error["kind"] != case.kind {
                problems.push(format!("kind {} instead of {:?}", error["kind"], case.kind));
            }
            let message = error["message"].as_str().unwrap_or_default();
            if !message.contains(case.message) {
                problems.push(format!("the message does not say {:?}", case.message));
            }
            // A release refused before the fetch costs no download.
            let early = ["config", "setup", "resolve", "manifest", "plan"];
            let downloads = sandbox.server.stats().raw_requests;
            if early.iter().any(|p| error["phase"] == *p) && downloads > 0 {
                problems.push(format!("{downloads} files were downloaded"));
            }
            // A failed update is recorded for `ota status`, unless it failed before it
            // could trust its config or hold the lock.
            let recorded = in_state && error["phase"] != "config" && error["phase"] != "setup";
            let dry_run = args.contains(&"--dry-run");
            match sandbox.device.last_error() {
                Some(last) if last["kind"] != case.kind => {
                    problems.push(format!("last_error.json says kind {}", last["kind"]))
                }
                None if recorded && !dry_run => {
                    problems.push("the failure is not in last_error.json".to_string())
                }
                _ => {}
            }
        }
        Err(e) => problems.push(format!("stdout is not a JSON error ({e})")),
    }
    let mut after = snapshot(&home, &sandbox.state);
    if skipped {
        // The release's other files are installed: only the kept paths inside the target count.
        let target = sandbox.target().strip_prefix(&home).unwrap().to_path_buf();
        let watched = |path: &PathBuf| !path.starts_with(&target) || sandbox.kept.contains(path);
        before.retain(|path, _| watched(path));
        after.retain(|path, _| watched(path));
    }
    for (path, snap) in &before {
        match after.get(path) {
            None => problems.push(format!("{} was removed", path.display())),
            Some(now) if now != snap => {
                problems.push(format!("{} changed: {snap:?} -> {now:?}", path.display()))
            }
            Some(_) => {}
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        problems.push(format!("{} was created", path.display()));
    }
    if in_state {
        let left: Vec<String> = sandbox
            .device
            .leftovers()
            .into_iter()
            .filter(|name| !planted.contains(name))
            .collect();
        if !left.is_empty() {
            problems.push(format!("left in the state folder: {left:?}"));
        }
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(format!("{}\n{shown}", problems.join("\n"))),
    }
}

#[test]
fn every_hostile_input_is_refused_without_a_write_outside_the_state_folder() {
    let only = std::env::var("OTA_CORPUS_ONLY").unwrap_or_default();
    let cases = cases();
    assert!(cases.len() >= 40, "the corpus holds {} cases", cases.len());
    let mut names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names are unique");

    let to_run: Vec<&Case> = cases.iter().filter(|c| c.name.contains(&only)).collect();
    // Each case has its own sandbox and server: two run at once.
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while let Some(case) = to_run.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let result = catch_unwind(AssertUnwindSafe(|| check(case)));
                    let result = result.unwrap_or_else(|panic| {
                        let text = (panic.downcast_ref::<String>().cloned())
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
                        Err(format!("panicked: {}", text.unwrap_or_default()))
                    });
                    results.lock().unwrap().push((*case, result));
                }
            });
        }
    });
    let mut failures = Vec::new();
    let mut ran: BTreeMap<Input, usize> = BTreeMap::new();
    for (case, result) in results.into_inner().unwrap() {
        match result {
            Ok(()) => *ran.entry(case.input).or_default() += 1,
            Err(why) => failures.push(format!("--- {} ({:?}):\n{why}", case.name, case.input)),
        }
    }
    println!("corpus: refused as expected, by input: {ran:?}");
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn cases() -> Vec<Case> {
    use Input::*;
    vec![
        // --- Trees: git trees written byte by byte, served as they are. ---
        case(
            "tree_parent_folder",
            Tree,
            "invalid_release",
            "`.` or `..` component",
            |s| {
                s.release_raw(&[
                    Raw::Blob(F, "main.py", b"print(2)\n"),
                    Raw::Tree("..", vec![Raw::Blob(F, "outside-x", b"pwned\n")]),
                ])
            },
        ),
        case(
            "tree_parent_deep",
            Tree,
            "invalid_release",
            "`.` or `..` component",
            |s| {
                s.release_raw(&[Raw::Tree(
                    "a",
                    vec![Raw::Tree(
                        "..",
                        vec![Raw::Tree("..", vec![Raw::Blob(F, "b", b"pwned\n")])],
                    )],
                )])
            },
        ),
        case(
            "tree_dot",
            Tree,
            "invalid_release",
            "`.` or `..` component",
            |s| s.release_raw(&[Raw::Tree(".", vec![Raw::Blob(F, "x", b"x\n")])]),
        ),
        case(
            "tree_state_journal",
            Tree,
            "invalid_release",
            "inside ota's own folder",
            |s| {
                s.release_raw(&[
                    Raw::Blob(F, "main.py", b"print(2)\n"),
                    Raw::Tree(".ota", vec![Raw::Blob(F, "journal.json", b"{}")]),
                ])
            },
        ),
        case(
            "tree_state_folder_as_file",
            Tree,
            "invalid_release",
            "inside ota's own folder",
            |s| s.release_raw(&[Raw::Blob(F, ".ota", b"not a folder\n")]),
        ),
        case(
            "tree_backslash",
            Tree,
            "invalid_release",
            "backslash",
            |s| s.release_raw(&[Raw::Blob(F, "..\\outside\\x", b"x\n")]),
        ),
        case(
            "tree_empty_component",
            Tree,
            "invalid_release",
            "empty component",
            |s| {
                s.release_raw(&[Raw::Tree(
                    "a",
                    vec![Raw::Tree("", vec![Raw::Blob(F, "b", b"x\n")])],
                )])
            },
        ),
        case("tree_absolute", Tree, "invalid_release", "is empty", |s| {
            s.release_raw(&[Raw::Tree(
                "",
                vec![Raw::Tree("etc", vec![Raw::Blob(F, "x", b"x\n")])],
            )])
        }),
        case(
            "tree_duplicate",
            Tree,
            "invalid_release",
            "listed twice",
            |s| {
                s.release_raw(&[
                    Raw::Blob(F, "twice", b"one\n"),
                    Raw::Blob(F, "twice", b"two\n"),
                ])
            },
        ),
        case(
            "tree_control_character",
            Tree,
            "invalid_release",
            "control character",
            |s| s.release_raw(&[Raw::Blob(F, "evil\x1b[2Jname", b"x\n")]),
        ),
        case(
            "tree_newline_in_name",
            Tree,
            "invalid_release",
            "control character",
            |s| s.release_raw(&[Raw::Blob(F, "a\nb", b"x\n")]),
        ),
        case(
            "tree_long_component",
            Tree,
            "invalid_release",
            "too long",
            |s| {
                let name = "n".repeat(300);
                s.release_raw(&[Raw::Blob(F, &name, b"x\n")])
            },
        ),
        case("tree_long_path", Tree, "invalid_release", "too long", |s| {
            let name = "d".repeat(250);
            let mut tree = Raw::Blob(F, "leaf", b"x\n");
            for _ in 0..17 {
                tree = Raw::Tree(&name, vec![tree]);
            }
            s.release_raw(&[tree])
        }),
        case(
            "tree_file_and_folder",
            Tree,
            "invalid_release",
            "which is a file",
            |s| {
                s.release_raw(&[
                    Raw::Blob(F, "lib", b"a file\n"),
                    Raw::Tree("lib", vec![Raw::Blob(F, "util.py", b"x\n")]),
                ])
            },
        ),
        case(
            "tree_symlink_parent",
            Tree,
            "unsafe_path",
            "outside the target",
            |s| s.release_raw(&[Raw::Blob("120000", "escape", b"../outside")]),
        ),
        case(
            "tree_symlink_absolute",
            Tree,
            "unsafe_path",
            "absolute path",
            |s| s.release_raw(&[Raw::Blob("120000", "passwd", b"/etc/passwd")]),
        ),
        case(
            "tree_symlink_climbs",
            Tree,
            "unsafe_path",
            "outside the target",
            |s| {
                s.release_raw(&[Raw::Tree(
                    "lib",
                    vec![Raw::Blob("120000", "up", b"x/../../../outside/canary.txt")],
                )])
            },
        ),
        case(
            "tree_file_under_symlink",
            Tree,
            "invalid_release",
            "which is a file",
            |s| {
                s.release_raw(&[
                    Raw::Blob("120000", "out", b"../outside"),
                    Raw::Tree("out", vec![Raw::Blob(F, "canary.txt", b"pwned\n")]),
                ])
            },
        ),
        case(
            "tree_symlink_dotdot_after_a_symlink",
            Tree,
            "unsafe_path",
            "outside the target",
            |s| {
                s.release_raw(&[
                    Raw::Blob("120000", "r", b"."),
                    Raw::Blob("120000", "etc_link", b"r/../outside"),
                ])
            },
        ),
        case(
            "tree_symlink_through_symlinks",
            Tree,
            "unsafe_path",
            "etc_link",
            |s| {
                s.release_raw(&[
                    Raw::Blob("120000", "r", b"."),
                    Raw::Blob("120000", "etc_link", b"r/r/../outside"),
                ])
            },
        ),
        case(
            "tree_case_collision",
            Tree,
            "invalid_release",
            "case",
            |s| {
                s.release_raw(&[
                    Raw::Blob(F, "README", b"a\n"),
                    Raw::Blob(F, "readme", b"b\n"),
                ])
            },
        ),
        case(
            "tree_state_folder_other_case",
            Tree,
            "invalid_release",
            ".OTA",
            |s| s.release_raw(&[Raw::Tree(".OTA", vec![Raw::Blob(F, "journal.json", b"{}")])]),
        ),
        // --- Release and commit answers of the API. ---
        case(
            "release_not_json",
            ReleaseJson,
            "protocol",
            "looking up the release",
            |s| s.body("*/releases/latest", r#"{"tag_name": "v9"#),
        ),
        case(
            "release_html",
            ReleaseJson,
            "protocol",
            "looking up the release",
            |s| {
                s.fault(
                    "*/releases/latest",
                    Action::Body {
                        bytes: b"<html><body>Login</body></html>".to_vec(),
                        content_type: "text/html".into(),
                    },
                )
            },
        ),
        case(
            "release_array",
            ReleaseJson,
            "protocol",
            "looking up the release",
            |s| s.body("*/releases/latest", r#"[{"tag_name":"v2.0.0"}]"#),
        ),
        case(
            "release_without_tag",
            ReleaseJson,
            "protocol",
            "tag_name",
            |s| s.body("*/releases/latest", r#"{"draft":false,"prerelease":false}"#),
        ),
        case(
            "release_tag_not_a_string",
            ReleaseJson,
            "protocol",
            "tag_name",
            |s| {
                s.body(
                    "*/releases/latest",
                    r#"{"tag_name":7,"draft":false,"prerelease":false}"#,
                )
            },
        ),
        case(
            "release_draft",
            ReleaseJson,
            "protocol",
            "is a draft",
            |s| {
                s.body(
                    "*/releases/latest",
                    r#"{"tag_name":"v2.0.0","draft":true,"prerelease":false}"#,
                )
            },
        ),
        case(
            "release_prerelease",
            ReleaseJson,
            "protocol",
            "is a prerelease",
            |s| {
                s.body(
                    "*/releases/latest",
                    r#"{"tag_name":"v2.0.0","draft":false,"prerelease":true}"#,
                )
            },
        ),
        case(
            "release_oversized",
            ReleaseJson,
            "protocol",
            "looking up the release",
            |s| {
                let pad = "x".repeat(8 << 20);
                s.body(
                    "*/releases/latest",
                    format!(r#"{{"tag_name":"v2","body":"{pad}"}}"#),
                )
            },
        ),
        case(
            "release_unknown_tag",
            ReleaseJson,
            "not_found",
            "v9.9.9",
            |s| {
                s.body(
                    "*/releases/latest",
                    r#"{"tag_name":"v9.9.9","draft":false,"prerelease":false}"#,
                )
            },
        ),
        case(
            "commit_oversized",
            ReleaseJson,
            "protocol",
            "resolving tag v2.0.0",
            |s| {
                s.release_v2();
                s.body("*/commits/*", "0".repeat(100 << 10))
            },
        ),
        case(
            "commit_not_a_sha",
            ReleaseJson,
            "protocol",
            "not a commit SHA",
            |s| {
                s.release_v2();
                s.body("*/commits/*", "<html>nope</html>")
            },
        ),
        case(
            "commit_sha_too_short",
            ReleaseJson,
            "protocol",
            "not a commit SHA",
            |s| {
                s.release_v2();
                s.body("*/commits/*", "0123456789abcdef0123456789abcdef0123456")
            },
        ),
        // --- Tree listings (the release's manifest) and the device's own manifests. ---
        case("listing_nul", Manifest, "invalid_release", "NUL", |s| {
            let blob = s.blob();
            s.tree_answer(&[entry("evil\u{0}.py", F, &blob, "9")])
        }),
        case(
            "listing_absolute",
            Manifest,
            "invalid_release",
            "is absolute",
            |s| {
                let blob = s.blob();
                s.tree_answer(&[entry("/etc/cron.d/x", F, &blob, "9")])
            },
        ),
        case(
            "listing_escape",
            Manifest,
            "invalid_release",
            "`.` or `..` component",
            |s| {
                let blob = s.blob();
                s.tree_answer(&[entry("../outside/canary.txt", F, &blob, "9")])
            },
        ),
        case(
            "listing_unknown_mode",
            Manifest,
            "invalid_release",
            "does not know how to install",
            |s| {
                let blob = s.blob();
                s.tree_answer(&[entry("main.py", "100600", &blob, "9")])
            },
        ),
        case(
            "listing_device_file_mode",
            Manifest,
            "invalid_release",
            "does not know how to install",
            |s| {
                let blob = s.blob();
                s.tree_answer(&[entry("dev/sda", "020644", &blob, "9")])
            },
        ),
        case("listing_bad_mode", Manifest, "protocol", "bad mode", |s| {
            let blob = s.blob();
            s.tree_answer(&[entry("main.py", "rwxr-xr-x", &blob, "9")])
        }),
        case("listing_huge_mode", Manifest, "protocol", "bad mode", |s| {
            let blob = s.blob();
            s.tree_answer(&[entry("main.py", "777777777777777777777", &blob, "9")])
        }),
        case("listing_short_sha", Manifest, "protocol", "bad SHA", |s| {
            s.tree_answer(&[entry("main.py", F, "abc123", "9")])
        }),
        case(
            "listing_no_size",
            Manifest,
            "invalid_release",
            "gives no size",
            |s| {
                let blob = s.blob();
                s.tree_answer(&[format!(
                    r#"{{"path":"main.py","mode":"100644","type":"blob","sha":"{blob}"}}"#
                )])
            },
        ),
        case(
            "listing_negative_size",
            Manifest,
            "protocol",
            "reading the file tree",
            |s| {
                let blob = s.blob();
                s.tree_answer(&[entry("main.py", F, &blob, "-9")])
            },
        ),
        case(
            "listing_sizes_overflow",
            Manifest,
            "invalid_release",
            "add up to more than",
            |s| {
                let blob = s.blob();
                let half = (1u64 << 63).to_string();
                s.tree_answer(&[
                    entry("a.py", F, &blob, &half),
                    entry("b.py", F, &blob, &half),
                ])
            },
        ),
        case(
            "listing_size_beyond_disk",
            Manifest,
            "disk_full",
            "not enough free space",
            |s| {
                let blob = s.blob();
                s.tree_answer(&[entry("a.py", F, &blob, &(u64::MAX - 1).to_string())])
            },
        ),
        case("listing_size_lies", Manifest, "integrity", "main.py", |s| {
            let blob = s.blob();
            s.tree_answer(&[entry("main.py", F, &blob, "5")])
        }),
        case(
            "listing_oversized",
            Manifest,
            "protocol",
            "reading the file tree",
            |s| {
                s.release_v2();
                let pad = "x".repeat(33 << 20);
                s.body(
                    "*/git/trees/*",
                    format!(r#"{{"sha":"{pad}","truncated":false,"tree":[]}}"#),
                )
            },
        ),
        case(
            "listing_not_json",
            Manifest,
            "protocol",
            "reading the file tree",
            |s| {
                s.release_v2();
                s.body("*/git/trees/*", r#"{"sha":"0","tree":[{"path":"#)
            },
        ),
        case(
            "listing_endless_truncation",
            Manifest,
            "protocol",
            "nested too deeply",
            |s| {
                s.release_v2();
                let sub = s.repo.rev("v2.0.0");
                let body = format!(
                    r#"{{"sha":"{sub}","truncated":true,"tree":[{{"path":"d","mode":"040000","type":"tree","sha":"{sub}"}}]}}"#
                );
                s.body("*/git/trees/*", body)
            },
        ),
        case(
            "listing_over_max_tree_kb",
            Manifest,
            "protocol",
            "max_tree_kb",
            |s| {
                s.append("[limits]\nmax_tree_kb = 1");
                let pad: Vec<String> = (0..40).map(|i| format!("padding-file-{i:04}.py")).collect();
                let blob = s.blob();
                let entries: Vec<String> = pad.iter().map(|p| entry(p, F, &blob, "9")).collect();
                s.tree_answer(&entries)
            },
        ),
        case(
            "listing_over_max_tree_files",
            Manifest,
            "protocol",
            "max_tree_files",
            |s| {
                s.append("[limits]\nmax_tree_files = 2");
                let blob = s.blob();
                let entries: Vec<String> = (0..3)
                    .map(|i| entry(&format!("f{i}.py"), F, &blob, "9"))
                    .collect();
                s.tree_answer(&entries)
            },
        ),
        case("state_json_garbage", Manifest, "state", "state.json", |s| {
            s.release_v2();
            s.state_file("state.json", "\u{0}\u{1}garbage")
        }),
        case(
            "state_json_escaping_path",
            Manifest,
            "state",
            "state.json",
            |s| {
                s.release_v2();
                let state = std::fs::read_to_string(s.state.join("state.json")).unwrap();
                s.state_file(
                    "state.json",
                    &state.replace("\"main.py\"", "\"../outside/canary.txt\""),
                );
            },
        ),
        case(
            "journal_escaping_path",
            Manifest,
            "rollback_failed",
            "journal",
            |s| {
                s.state_file(
                    "journal.json",
                    &journal(
                        "t",
                        r#"{"op":"place","path":"../outside/canary.txt","slot":"0"}"#,
                    ),
                );
            },
        ),
        case(
            "journal_unknown_format",
            Manifest,
            "rollback_failed",
            "journal",
            |s| {
                s.state_file(
                    "journal.json",
                    &journal("t", "").replace("\"format\":1", "\"format\":99"),
                );
            },
        ),
        case(
            "journal_garbage",
            Manifest,
            "rollback_failed",
            "journal",
            |s| {
                s.release_v2();
                s.state_file("journal.json", "{\"format\":1,\"ops\":[");
            },
        ),
        case(
            "journal_slot_escapes",
            Manifest,
            "rollback_failed",
            "journal",
            |s| {
                std::fs::create_dir_all(s.state.join("backup/t")).unwrap();
                s.state_file("journal.json", &journal("t", r#"{"op":"displace","path":"stolen.txt","slot":"../../../../outside/canary.txt"}"#));
            },
        ),
        case(
            "journal_txid_escapes",
            Manifest,
            "rollback_failed",
            "journal",
            |s| {
                s.state_file("journal.json", &journal("../../../outside", ""));
            },
        ),
        // --- Configs. ---
        case("config_not_toml", Config, "config", "ota.toml", |s| {
            std::fs::write(&s.device.config, b"\xff\xfe\x00garbage = [").unwrap()
        }),
        case(
            "config_credentials_in_url",
            Config,
            "config",
            "api_url",
            |s| s.config("api_url = \"http://", "api_url = \"http://user:pass@"),
        ),
        case("config_ftp_url", Config, "config", "api_url", |s| {
            s.config("api_url = \"http://", "api_url = \"ftp://")
        }),
        case("config_url_with_query", Config, "config", "raw_url", |s| {
            let text = std::fs::read_to_string(&s.device.config).unwrap();
            let line = text
                .lines()
                .find(|l| l.starts_with("raw_url"))
                .unwrap()
                .to_string();
            s.config(&line, &format!("{}?x=1\"", line.trim_end_matches('"')));
        }),
        case(
            "config_state_is_target",
            Config,
            "config",
            "state_dir",
            |s| {
                let target = s.target().display().to_string();
                s.configure("", &format!("state_dir = {target:?}"))
            },
        ),
        case(
            "config_state_holds_target",
            Config,
            "config",
            "state_dir",
            |s| {
                let home = s.home().display().to_string();
                s.configure("", &format!("state_dir = {home:?}"))
            },
        ),
        case(
            "config_target_root",
            Config,
            "refused_target",
            "target_dir",
            |s| {
                let target = format!("target_dir = {:?}", s.target().display().to_string());
                s.config(&target, "target_dir = \"/\"")
            },
        ),
        case(
            "config_allow_traversal",
            Config,
            "config",
            "allow[0]",
            |s| s.configure("", "allow = [\"../outside/\"]"),
        ),
        case(
            "config_ignore_absolute",
            Config,
            "config",
            "ignore[0]",
            |s| s.configure("", "ignore = [\"/etc\"]"),
        ),
        case("config_huge_number", Config, "config", "retries", |s| {
            s.config("retries = 1", "retries = 99999999999999999999999")
        }),
        case(
            "config_negative_number",
            Config,
            "config",
            "parallel",
            |s| s.configure("network", "parallel = -1"),
        ),
        case("config_owner_traversal", Config, "config", "owner", |s| {
            s.config("owner = \"acme\"", "owner = \"..\"")
        }),
        case("config_branch_traversal", Config, "config", "branch", |s| {
            s.configure("", "channel = \"developer\"\nbranch = \"../../etc\"")
        }),
        case(
            "config_user_agent_newline",
            Config,
            "config",
            "user_agent",
            |s| s.configure("network", "user_agent = \"ota\\r\\nX-Injected: 1\""),
        ),
        case(
            "config_token_and_file",
            Config,
            "config",
            "token_file",
            |s| s.configure("source", "token = \"abc123\"\ntoken_file = \"token\""),
        ),
        case(
            "config_token_file_missing",
            Config,
            "config",
            "token_file",
            |s| s.configure("source", "token_file = \"no-such-token\""),
        ),
        case(
            "config_placeholder",
            Config,
            "config",
            "YOUR_GITHUB_USERNAME",
            |s| s.config("owner = \"acme\"", "owner = \"YOUR_GITHUB_USERNAME\""),
        ),
        case("config_unknown_key", Config, "config", "source.ownr", |s| {
            s.configure("source", "ownr = \"acme\"")
        }),
        // A system folder that refuses writes even to root, so that running this case on a
        // branch without the refusal cannot install anything into a real system folder.
        case(
            "config_target_system_folder",
            Config,
            "refused_target",
            "/proc",
            |s| {
                let target = format!("target_dir = {:?}", s.target().display().to_string());
                s.config(&target, "target_dir = \"/proc\"")
            },
        ),
        case(
            "config_target_system_folder_dry_run",
            Config,
            "refused_target",
            "/proc",
            |s| {
                let target = format!("target_dir = {:?}", s.target().display().to_string());
                s.config(&target, "target_dir = \"/proc\"");
                s.command = vec!["update", "--dry-run"];
            },
        ),
        case(
            "config_state_dir_foreign",
            Config,
            "untrusted_state",
            "state_dir",
            |s| {
                let foreign = s.home().join("outside");
                s.configure(
                    "",
                    &format!("state_dir = {:?}", foreign.display().to_string()),
                )
            },
        ),
        // --- Server answers on the wire. ---
        case(
            "server_flipped_byte",
            Server,
            "network",
            "gave up after 2 attempts",
            |s| {
                s.release_v2();
                s.fault("/raw/*", Action::FlipByte(3))
            },
        ),
        case(
            "server_other_content",
            Server,
            "integrity",
            "main.py",
            |s| {
                s.release_v2();
                s.fault(
                    "/raw/*",
                    Action::Body {
                        bytes: b"print(666)\n".to_vec(),
                        content_type: "application/octet-stream".into(),
                    },
                )
            },
        ),
        case(
            "server_truncated_every_time",
            Server,
            "network",
            "gave up after 2 attempts",
            |s| {
                s.release_v2();
                s.fault("/raw/*", Action::Truncate(0))
            },
        ),
        case(
            "server_reset_every_time",
            Server,
            "network",
            "gave up after 2 attempts",
            |s| {
                s.release_v2();
                s.fault("/raw/*", Action::ResetAfter(0))
            },
        ),
        case(
            "server_tree_short_length",
            Server,
            "protocol",
            "file tree",
            |s| {
                s.release_v2();
                s.fault("*/git/trees/*", Action::WrongLength(-40))
            },
        ),
        case("server_5xx", Server, "network", "503", |s| {
            s.release_v2();
            s.fault("/raw/*", Action::Status(503))
        }),
        case(
            "server_raw_missing",
            Server,
            "not_found",
            "not found (404)",
            |s| {
                s.release_v2();
                s.fault("/raw/*", Action::Status(404))
            },
        ),
        case(
            "server_tree_truncated",
            Server,
            "network",
            "file tree",
            |s| {
                s.release_v2();
                s.fault("*/git/trees/*", Action::Truncate(30))
            },
        ),
        case(
            "server_rate_limit_forever",
            Server,
            "rate_limited",
            "rate limit",
            |s| {
                s.fault(
                    "*",
                    Action::RateLimit {
                        status: 403,
                        reset_in: std::time::Duration::from_secs(86_400),
                        retry_after: None,
                    },
                )
            },
        ),
        case(
            "server_redirect_nowhere",
            Server,
            "network",
            "Connection refused",
            |s| {
                s.release_v2();
                let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let to = closed.local_addr().unwrap().to_string();
                drop(closed);
                s.fault("/raw/*", Action::Redirect { to })
            },
        ),
        // --- Target layouts. ---
        case(
            "layout_folder_at_a_shipped_file",
            Layout,
            "conflict",
            "main.py",
            |s| {
                s.release_v2();
                let main = s.target().join("main.py");
                std::fs::remove_file(&main).unwrap();
                std::fs::create_dir(&main).unwrap();
                std::fs::write(main.join("user-data"), "mine\n").unwrap();
            },
        ),
        case(
            "layout_folder_behind_a_symlink",
            Layout,
            "conflict",
            "data",
            |s| {
                s.release_v2();
                std::os::unix::fs::symlink("../outside/dir", s.target().join("data")).unwrap();
            },
        ),
        case(
            "layout_shipped_folder_is_a_symlink",
            Layout,
            "conflict",
            "lib",
            |s| {
                s.repo.write("lib/new.py", "new\n");
                s.repo.commit("v2");
                s.repo.tag("v2.0.0");
                let lib = s.target().join("lib");
                std::fs::rename(&lib, s.home().join("outside/lib")).unwrap();
                std::os::unix::fs::symlink("../outside/lib", &lib).unwrap();
            },
        ),
        case(
            "layout_target_is_a_file",
            Layout,
            "filesystem",
            "is not a folder",
            |s| {
                let target = s.target().to_path_buf();
                std::fs::rename(&target, s.home().join("old-app")).unwrap();
                std::fs::write(&target, "a file\n").unwrap();
                s.state = s.home().join("old-app/.ota");
            },
        ),
        case(
            "layout_state_folder_is_a_file",
            Layout,
            "untrusted_state",
            ".ota",
            |s| {
                std::fs::remove_dir_all(&s.state).unwrap();
                std::fs::write(&s.state, "a file\n").unwrap();
                s.state = s.home().join("no-state-folder");
            },
        ),
        case(
            "layout_state_folder_is_a_symlink",
            Layout,
            "untrusted_state",
            ".ota",
            |s| {
                let moved = s.home().join("outside/state");
                std::fs::rename(&s.state, &moved).unwrap();
                std::os::unix::fs::symlink(&moved, &s.state).unwrap();
                s.release_v2();
                s.state = s.home().join("no-state-folder");
            },
        ),
        case(
            "layout_journal_through_symlinked_state",
            Layout,
            "untrusted_state",
            ".ota",
            |s| {
                let moved = s.home().join("outside/state");
                std::fs::create_dir(&moved).unwrap();
                std::fs::write(moved.join("journal.json"), journal("t", "")).unwrap();
                std::fs::remove_dir_all(&s.state).unwrap();
                std::os::unix::fs::symlink(&moved, &s.state).unwrap();
                s.state = s.home().join("no-state-folder");
            },
        ),
        case(
            "layout_state_folder_world_writable",
            Layout,
            "untrusted_state",
            ".ota",
            |s| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&s.state, std::fs::Permissions::from_mode(0o777)).unwrap();
                s.release_v2();
            },
        ),
        case(
            "layout_fifo_at_a_shipped_file",
            Layout,
            "conflict",
            "main.py",
            |s| {
                s.release_v2();
                let main = s.target().join("main.py");
                std::fs::remove_file(&main).unwrap();
                let made = std::process::Command::new("mkfifo")
                    .arg(&main)
                    .status()
                    .unwrap();
                assert!(made.success());
            },
        ),
        case(
            "layout_file_at_a_shipped_folder",
            Layout,
            "conflict",
            "lib",
            |s| {
                s.repo.write("lib/new.py", "new\n");
                s.repo.commit("v2");
                s.repo.tag("v2.0.0");
                let lib = s.target().join("lib");
                std::fs::remove_dir_all(&lib).unwrap();
                std::fs::write(&lib, "the app's file\n").unwrap();
            },
        ),
        case(
            "tree_ships_the_config_file",
            Tree,
            SKIPPED,
            "ota.toml",
            |s| {
                s.config_in_target();
                s.repo.write("ota.toml", "target_dir = \"/\"\n");
                s.release_v2();
            },
        ),
        case("tree_ships_the_token_file", Tree, SKIPPED, "token", |s| {
            std::fs::write(s.target().join("token"), "t0ken\n").unwrap();
            let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
            std::fs::set_permissions(s.target().join("token"), private).unwrap();
            s.configure("source", "token_file = \"app/token\"");
            s.kept.push("app/token".into());
            s.repo.write("token", "stolen\n");
            s.release_v2();
        }),
        case(
            "release_path_too_long_for_this_target",
            Tree,
            "limits",
            "4096",
            |s| {
                // Valid on its own (4,091 bytes), too long once under the target's own path.
                let name = "d".repeat(250);
                let leaf = "f".repeat(75);
                let mut tree = Raw::Blob(F, &leaf, b"x\n");
                for _ in 0..16 {
                    tree = Raw::Tree(&name, vec![tree]);
                }
                s.release_raw(&[tree])
            },
        ),
        case(
            "layout_state_folder_foreign_owner",
            Layout,
            "untrusted_state",
            ".ota",
            |s| {
                std::os::unix::fs::chown(&s.state, Some(65534), Some(65534)).unwrap();
                s.release_v2();
            },
        ),
        case(
            "race_folder_swapped_for_a_symlink",
            Layout,
            "unsafe_path",
            "lib",
            |s| {
                s.stall_v2_adding("lib/new.py");
                s.during = Some(|s| {
                    let lib = s.target().join("lib");
                    std::fs::rename(&lib, s.home().join("outside/lib-moved")).unwrap();
                    std::os::unix::fs::symlink("../outside/dir", &lib).unwrap();
                });
            },
        ),
        case(
            "race_file_appears_at_an_added_path",
            Layout,
            "unsafe_path",
            "lib/new.py",
            |s| {
                s.stall_v2_adding("lib/new.py");
                s.during =
                    Some(|s| std::fs::write(s.target().join("lib/new.py"), "the app's\n").unwrap());
            },
        ),
        case(
            "race_file_replaced_by_a_folder",
            Layout,
            "unsafe_path",
            "main.py",
            |s| {
                s.stall_v2_adding("lib/new.py");
                s.during = Some(|s| {
                    let main = s.target().join("main.py");
                    std::fs::remove_file(&main).unwrap();
                    std::fs::create_dir(&main).unwrap();
                    std::fs::write(main.join("user-data"), "mine\n").unwrap();
                });
            },
        ),
    ]
}

/// What ota does not defend (SECURITY.md): the server names the release, and a well-formed
/// older one is installed like any other. Signed releases (issue 11) will refuse it.
#[test]
fn a_server_can_roll_a_device_back_to_an_older_release() {
    let mut sandbox = Sandbox::new();
    sandbox.release_v2();
    sandbox.device.ota_expect(&["update"], 0);
    let body = r#"{"tag_name":"v1.0.0","draft":false,"prerelease":false}"#;
    sandbox.body("*/releases/latest", body);
    let out = sandbox.device.ota_expect(&["update"], 0);
    assert!(out.contains("installed v1.0.0"), "{out}");
    assert_eq!(sandbox.device.tree(), sandbox.repo.snapshot("v1.0.0"));
}
