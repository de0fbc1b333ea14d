//! The scenarios (one release pair each) and the recorded run of each: the real `Updater`
//! with the real GitHub source against the real `ota_serve::Server` on 127.0.0.1, over a
//! repository written by `ota_serve::fixture::RepoWriter`, on a [`SimFs`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ota::ReleaseId;
use ota::config::{Channel, Config, Format};
use ota::source::GitHub;
use ota::testing::StateDir;
use ota::{Outcome, UpdateOptions, Updater};
use ota_serve::fixture::{FileSpec, RepoWriter};
use ota_serve::{Options, Server};

use crate::sim::{Entry, Op, Rec, SimFs, Tree};

/// A file the user put in the target before ota came.
pub enum User {
    File(&'static str, &'static [u8]),
}

/// One scenario: releases, what is on the device first, which updates are recorded.
pub struct Scenario {
    pub name: &'static str,
    /// Release contents, tagged `v1.0.0`, `v2.0.0`, … in this order.
    pub releases: Vec<BTreeMap<String, FileSpec>>,
    /// Files the user placed in the target before anything (ota does not own them).
    pub user: Vec<User>,
    /// The release durably installed before the recorded run, if any.
    pub installed: Option<usize>,
    /// Releases the recorded run updates to, in order; crashes are placed in the last one.
    pub updates: Vec<usize>,
    /// The server of the last update is stopped after this many files were staged.
    pub stop_server_after: Option<usize>,
    /// Changes made to the durable tree before the recorded run.
    pub tweak: fn(&mut Tree, &Path),
    /// Whether each of `updates` runs with a trial configured (`[trial] confirm_within_sec`,
    /// so the release stays on trial); missing: no. The starting release is installed
    /// without one: it is the confirmed release a trial rolls back to.
    pub on_trial: &'static [bool],
    /// `ota boot` runs after the updates (`[trial] boots = 1` on trial); when any, crashes
    /// are placed in the last boot instead, which must roll back to `installed`.
    pub boots_after: usize,
}

fn file(bytes: impl Into<Vec<u8>>) -> FileSpec {
    FileSpec::File {
        bytes: bytes.into(),
        exec: false,
    }
}

fn exec(bytes: impl Into<Vec<u8>>) -> FileSpec {
    FileSpec::File {
        bytes: bytes.into(),
        exec: true,
    }
}

fn link(target: &str) -> FileSpec {
    FileSpec::Symlink(target.to_owned())
}

fn release(files: Vec<(&str, FileSpec)>) -> BTreeMap<String, FileSpec> {
    files.into_iter().map(|(p, f)| (p.to_owned(), f)).collect()
}

/// Bytes that take several 64 KiB writes, so torn and partial writes fall inside a file.
fn big(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i % 251) as u8).wrapping_mul(7))
        .collect()
}

fn no_tweak(_: &mut Tree, _: &Path) {}

/// A base release most scenarios start from.
fn base() -> Vec<(&'static str, FileSpec)> {
    vec![
        ("README.md", file("# app\n")),
        ("main.py", file("print('v1')\n")),
        ("lib/util.py", file("def util(): return 1\n")),
        ("run.sh", exec("#!/bin/sh\nexec python3 main.py\n")),
    ]
}

fn with(
    mut files: Vec<(&'static str, FileSpec)>,
    extra: Vec<(&'static str, FileSpec)>,
) -> Vec<(&'static str, FileSpec)> {
    for (p, f) in extra {
        files.retain(|(q, _)| *q != p);
        files.push((p, f));
    }
    files
}

fn without(
    mut files: Vec<(&'static str, FileSpec)>,
    gone: &[&str],
) -> Vec<(&'static str, FileSpec)> {
    files.retain(|(p, _)| !gone.contains(p));
    files
}

/// Every scenario of the enumeration.
pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "first-install-empty",
            releases: vec![release(with(
                base(),
                vec![("data/blob.bin", file(big(1, 150_000)))],
            ))],
            user: vec![],
            installed: None,
            updates: vec![0],
            stop_server_after: None,
            tweak: no_tweak,
            on_trial: &[],
            boots_after: 0,
        },
        Scenario {
            name: "first-install-over-user-files",
            releases: vec![release(with(
                base(),
                vec![("config/default.toml", file("a = 1\n"))],
            ))],
            user: vec![
                // Unowned, not in the release: never touched.
                User::File("notes.txt", b"mine\n"),
                User::File("config/local.toml", b"a = 2\n"),
                // Identical to the release's: adopted without a download.
                User::File("README.md", b"# app\n"),
                // A stale copy of a shipped file: replaced, and restored on rollback.
                User::File("main.py", b"print('stale')\n"),
            ],
            installed: None,
            updates: vec![0],
            stop_server_after: None,
            tweak: no_tweak,
            on_trial: &[],
            boots_after: 0,
        },
        Scenario {
            name: "edits",
            releases: vec![
                release(with(base(), vec![("data/blob.bin", file(big(1, 150_000)))])),
                release(with(
                    base(),
                    vec![
                        ("main.py", file("print('v2, longer than before')\n")),
                        ("lib/util.py", file("def util(): return 2\n")),
                        ("data/blob.bin", file(big(2, 140_000))),
                    ],
                )),
            ],
            user: vec![User::File("lib/notes.txt", b"unowned\n")],
            installed: Some(0),
            updates: vec![1],
            stop_server_after: None,
            tweak: no_tweak,
            on_trial: &[],
            boots_after: 0,
        },
        Scenario {
            name: "adds-in-new-nested-folders",
            releases: vec![
                release(base()),
                release(with(
                    base(),
                    vec![
                        ("a/b/c/deep.txt", file("deep\n")),
                        ("a/b/side.txt", file("side\n")),
                        ("x/y.txt", file("y\n")),
                        ("lib/more.py", file("more\n")),
                    ],
                )),
            ],
            user: vec![],
            installed: Some(0),
            updates: vec![1],
            stop_server_after: None,
            tweak: no_tweak,
            on_trial: &[],
            boots_after: 0,
        },
        Scenario {
            name: "deletes-that-empty-folders",
            releases: vec![
                release(with(
                    base(),
                    vec![
                        ("old/sub/one.txt", file("one\n")),
                        ("old/two.txt", file("two\n")),
                        ("keep/owned.txt", file("owned\n")),
                    ],
                )),
                release(base()),
            ],
            user: vec![User::File("keep/user.txt", b"user\n")],
            installed: Some(0),
            updates: vec![1],
            stop_server_after: None,
            // A folder mode other than ota's default, to see it restored on rollback.
            tweak: |tree, target| tree.chmod_dir(&target.join("old/sub"), 0o750),
            on_trial: &[],
            boots_after: 0,
        },
        Scenario {
            name: "exec-bit-change",
            releases: vec![
                release(with(base(), vec![("tool", exec("#!/bin/sh\necho tool\n"))])),
                release(with(
                    base(),
                    vec![
                        ("run.sh", file("#!/bin/sh\nexec python3 main.py\n")),
                        ("tool", file("#!/bin/sh\necho tool\n")),
                        ("main.py", exec("print('v1')\n")),
                    ],
                )),
            ],
            user: vec![],
            installed: Some(0),
            updates: vec![1],
            stop_server_after: None,
            tweak: no_tweak,
            on_trial: &[],
            boots_after: 0,
        },
        Scenario {
            name: "symlink-add-and-retarget",
            releases: vec![
                release(with(
                    base(),
                    vec![
                        ("a.txt", file("a\n")),
                        ("b.txt", file("b\n")),
                        ("latest", link("a.txt")),
                    ],
                )),
                release(with(
                    base(),
                    vec![
                        ("a.txt", file("a\n")),
                        ("b.txt", file("b\n")),
                        ("latest", link("b.txt")),
                        ("lib/current", link("util.py")),
                        ("bin/run", link("../run.sh")),
                    ],
                )),
            ],
            user: vec![],
            installed: Some(0),
            updates: vec![1],
            stop_server_after: None,
            tweak: no_tweak,
            on_trial: &[],
            boots_after: 0,
        },
        Scenario {
            name: "file-to-folder-and-folder-to-file",
            releases: vec![
                release(with(
                    base(),
                    vec![
                        ("d", file("d was a file\n")),
                        ("e/x.txt", file("x\n")),
                        ("e/y.txt", file("y\n")),
                    ],
                )),
                release(with(
                    base(),
                    vec![
                        ("d/inner.txt", file("d is a folder\n")),
                        ("e", file("e is a file\n")),
                    ],
                )),
            ],
            user: vec![],
            installed: Some(0),
            updates: vec![1],
            stop_server_after: None,
            tweak: no_tweak,
            on_trial: &[],
            boots_after: 0,
        },
        Scenario {
            name: "download-fails-midway",
            releases: vec![
                release(base()),
                release(with(
                    without(base(), &["lib/util.py"]),
                    vec![
                        ("main.py", file("print('v2')\n")),
                        ("n1.txt", file("n1\n")),
                        ("n2/n2.txt", file("n2\n")),
                        ("n3.txt", file("n3\n")),
                        ("n4.txt", file("n4\n")),
                    ],
                )),
            ],
            user: vec![],
            installed: Some(0),
            updates: vec![1],
            stop_server_after: Some(2),
            tweak: no_tweak,
            on_trial: &[],
            boots_after: 0,
        },
        Scenario {
            name: "two-updates-back-to-back",
            releases: vec![
                release(base()),
                release(with(
                    base(),
                    vec![
                        ("main.py", file("print('v2')\n")),
                        ("v2/new.txt", file("v2\n")),
                    ],
                )),
                release(with(
                    without(base(), &["lib/util.py"]),
                    vec![("main.py", file("print('v3')\n")), ("v3.txt", file("v3\n"))],
                )),
            ],
            user: vec![],
            installed: Some(0),
            updates: vec![1, 2],
            stop_server_after: None,
            tweak: no_tweak,
            on_trial: &[],
            boots_after: 0,
        },
        // v1 confirmed, v2 installed on trial: what v2 sets aside of v1 is kept in previous/.
        Scenario {
            name: "trial-keeps-the-previous-release",
            releases: vec![trial_v1(), trial_v2()],
            user: vec![],
            installed: Some(0),
            updates: vec![1],
            stop_server_after: None,
            tweak: no_tweak,
            on_trial: &[true],
            boots_after: 0,
        },
        // v1 confirmed, v2 on trial, then v3 on trial (still rolling back to v1): v3 stages
        // v1's main.py from previous/ (hard link) and sets more of v1 aside.
        Scenario {
            name: "trial-update-while-on-trial",
            releases: vec![trial_v1(), trial_v2(), trial_v3()],
            user: vec![],
            installed: Some(0),
            updates: vec![1, 2],
            stop_server_after: None,
            tweak: no_tweak,
            on_trial: &[true, true],
            boots_after: 0,
        },
        // v1 confirmed, v2 on trial, then v1's files again as v3 under a config with no
        // trial: the update first confirms v2 (no condition is configured any more) and
        // sweeps previous/, then installs v3.
        Scenario {
            name: "trial-back-to-the-kept-release",
            releases: vec![trial_v1(), trial_v2(), trial_v1()],
            user: vec![],
            installed: Some(0),
            updates: vec![1, 2],
            stop_server_after: None,
            tweak: no_tweak,
            on_trial: &[true, false],
            boots_after: 0,
        },
        // A real rollback: v1 confirmed, v2 on trial and never confirmed; the second boot on
        // trial (one more than `boots = 1`) rolls it back: one transaction puts v1's files
        // back from previous/ (no download) and records v2 as rejected.
        Scenario {
            name: "trial-rolled-back-at-boot",
            releases: vec![trial_v1(), trial_v2()],
            user: vec![],
            installed: Some(0),
            updates: vec![1],
            stop_server_after: None,
            tweak: no_tweak,
            on_trial: &[true],
            boots_after: 2,
        },
    ]
}

/// The confirmed release of the trial scenarios: a big file, an executable, a link.
fn trial_v1() -> BTreeMap<String, FileSpec> {
    release(with(
        base(),
        vec![
            ("data/blob.bin", file(big(1, 150_000))),
            ("current", link("main.py")),
            ("old.txt", file("only in v1\n")),
        ],
    ))
}

/// On trial: changes main.py, run.sh (exec) and the link, deletes old.txt and the big file.
fn trial_v2() -> BTreeMap<String, FileSpec> {
    release(with(
        without(base(), &[]),
        vec![
            ("main.py", file("print('v2')\n")),
            ("run.sh", exec("#!/bin/sh\nexec python3 main.py --v2\n")),
            ("current", link("lib/util.py")),
        ],
    ))
}

/// On trial after v2: v1's main.py again (from previous/), lib/util.py changed, README.md
/// deleted (both v1's, set aside into previous/).
fn trial_v3() -> BTreeMap<String, FileSpec> {
    release(with(
        without(base(), &["README.md"]),
        vec![
            ("run.sh", exec("#!/bin/sh\nexec python3 main.py --v2\n")),
            ("lib/util.py", file("def util(): return 3\n")),
            ("current", link("lib/util.py")),
        ],
    ))
}

/// The tag of release `i`.
pub fn tag(i: usize) -> String {
    format!("v{}.0.0", i + 1)
}

/// What the target must look like: a listing (below the target, `.ota` excluded) and the
/// release `state.json` names with its owned paths.
#[derive(Clone, Debug)]
pub struct Side {
    pub label: String,
    pub listing: BTreeMap<String, Entry>,
    /// `Tree::digest_below` of the target, `.ota` skipped.
    pub digest: u128,
    pub release: Option<ReleaseId>,
    pub owned: BTreeSet<String>,
    /// The user's files ota replaced and kept (`<state>/kept/<txid>/<path>`), by `<path>`.
    pub kept: BTreeMap<String, Entry>,
}

/// A scenario with its recorded run.
pub struct Prepared {
    pub name: &'static str,
    /// Holds the real folder (lock file) and the repository while the scenario lives.
    pub _dir: tempfile::TempDir,
    pub target: PathBuf,
    pub dirs: StateDir,
    /// The durable disk before the recorded run.
    pub base: Tree,
    /// The recorded run.
    pub log: Vec<Rec>,
    /// Crashes are placed at `k` in `crash_from..=log.len()`.
    pub crash_from: usize,
    /// Index of the commit point's folder fsync (crash after it: the new release must be in).
    pub commit_sync: Option<usize>,
    /// Index of the folder fsync that made `last_error.json` durable, if the run failed.
    pub error_sync: Option<usize>,
    /// The tree before the crashed update, and after it.
    pub old: Side,
    pub new: Side,
    /// Whether the new release may be on disk after a crash (not when the download fails).
    pub new_allowed: bool,
    /// What a fresh, healthy update ends with.
    pub fresh: Side,
    pub fresh_tag: String,
    /// Serves the repository while the scenario lives.
    pub _server: Server,
    pub config: Config,
    /// How the update under test ended.
    pub result: String,
}

/// Config text for a target and server; with a trial that stays pending if `trial`.
fn config(target: &Path, server: &Server, tag: &str, trial: bool) -> Config {
    let mut text = format!(
        "target_dir = {target:?}\ntag = {tag:?}\n\
         [source]\nowner = \"acme\"\nrepo = \"app\"\napi_url = \"{}\"\nraw_url = \"{}\"\n\
         [network]\nconnect_timeout_sec = 5\nhttp_timeout_sec = 5\nretries = 0\nbackoff_sec = 1\n\
         max_backoff_sec = 1\nparallel = 1\n",
        server.api_url(),
        server.raw_url(),
    );
    if trial {
        text.push_str("[trial]\nconfirm_within_sec = 3600\nboots = 1\n");
    }
    Config::parse(&text, Format::Toml, Path::new("/"), &|_| None).expect("valid config")
}

fn with_tag(config: &Config, tag: &str) -> Config {
    let mut config = config.clone();
    config.channel = Channel::Stable {
        tag: Some(tag.to_owned()),
    };
    config
}

/// Runs `ota boot` on `fs`.
pub fn boot(config: &Config, fs: SimFs) -> Result<Option<ota::TrialReport>, ota::Error> {
    let ota::config::SourceConfig::Github(github) = &config.source else {
        panic!("a GitHub source")
    };
    let source = Box::new(GitHub::new(github, &config.network));
    Updater::with_parts(config.clone(), source, Box::new(fs)).boot()
}

/// Whether `error` says a release failed its trial and was rolled back.
pub fn rolled_back(error: &ota::Error) -> bool {
    matches!(error, ota::Error::Trial(e) if matches!(**e, ota::error::TrialError::RolledBack { .. }))
}

/// Runs one update on `fs` following `tag`.
pub fn update(config: &Config, tag: &str, fs: SimFs) -> Result<Outcome, ota::Error> {
    let config = with_tag(config, tag);
    let ota::config::SourceConfig::Github(github) = &config.source else {
        panic!("a GitHub source")
    };
    let source = Box::new(GitHub::new(github, &config.network));
    Updater::with_parts(config, source, Box::new(fs)).update(UpdateOptions::default())
}

fn start_server(repo: &Path) -> Server {
    let mut options = Options::new(repo);
    options.owner = Some("acme".into());
    options.name = Some("app".into());
    Server::start(options).expect("server starts")
}

/// What a tree holds, as an outcome.
/// The paths `state.json` says ota owns.
pub fn owned_paths(installed: Option<&ota::Installed>) -> BTreeSet<String> {
    installed
        .map(|i| {
            i.files
                .entries()
                .iter()
                .map(|e| e.path.to_string())
                .collect()
        })
        .unwrap_or_default()
}

pub fn outcome_of(label: &str, tree: &Tree, target: &Path, dirs: &StateDir) -> Side {
    let fs = SimFs::new(tree.clone());
    let installed = dirs.read_installed(&fs).expect("state.json reads");
    Side {
        label: label.to_owned(),
        listing: tree.listing(target, &[".ota"]),
        digest: tree.digest_below(target, &[".ota"]),
        release: installed.as_ref().map(|i| i.release.clone()),
        owned: owned_paths(installed.as_ref()),
        kept: kept_files(tree, dirs),
    }
}

/// The files under `<state>/kept/`, by their path in the target (the txid folder dropped).
pub fn kept_files(tree: &Tree, dirs: &StateDir) -> BTreeMap<String, Entry> {
    tree.listing(&dirs.root().join("kept"), &[])
        .into_iter()
        .filter(|(_, e)| !matches!(e, Entry::Dir(_)))
        .filter_map(|(path, e)| Some((path.split_once('/')?.1.to_owned(), e)))
        .collect()
}

/// The listing a release plus the user's files should give (files and links only).
fn expected_files(spec: &BTreeMap<String, FileSpec>, user: &[User]) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    for u in user {
        let User::File(p, b) = u;
        out.insert((*p).to_owned(), Entry::file(b.to_vec(), false));
    }
    for (p, f) in spec {
        let e = match f {
            FileSpec::File { bytes, exec } => Entry::file(bytes.clone(), *exec),
            FileSpec::Symlink(t) => Entry::Link(t.clone()),
            FileSpec::Submodule(_) => continue,
        };
        out.insert(p.clone(), e);
    }
    out
}

fn files_only(listing: &BTreeMap<String, Entry>) -> BTreeMap<String, Entry> {
    listing
        .iter()
        .filter(|(_, e)| !matches!(e, Entry::Dir(_)))
        .map(|(p, e)| (p.clone(), e.clone()))
        .collect()
}

/// Builds the repository, installs the starting release, records the run.
pub fn prepare(sc: &Scenario) -> Prepared {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("app");
    let state = target.join(".ota");
    let dirs = StateDir::new(state.clone());
    let repo = dir.path().join("repo.git");
    let mut writer = RepoWriter::init(&repo, true).expect("repo");
    for (i, files) in sc.releases.iter().enumerate() {
        let time = 1_700_000_000 + 60 * i as i64;
        let commit = writer
            .commit("main", files, &format!("release {}", i + 1), time)
            .expect("commit");
        writer.tag_lightweight(&tag(i), &commit).expect("tag");
    }
    let server = start_server(&repo);
    let config = config(&target, &server, &tag(0), false);
    let on_trial = |n: usize| sc.on_trial.get(n).copied().unwrap_or(false);
    let trial_config = self::config(&target, &server, &tag(0), true);
    let config_of = |n: usize| match on_trial(n) {
        true => trial_config.clone(),
        false => config.clone(),
    };

    let mut base = Tree::with_dirs(&target);
    for u in &sc.user {
        let User::File(p, b) = u;
        base.put_file(&target.join(p), b, false);
    }
    if let Some(i) = sc.installed {
        base.mkdir_all(&state, 0o755);
        let fs = SimFs::new(base.clone());
        update(&config, &tag(i), fs.clone()).expect("the starting release installs");
        base = fs.live();
        let want = expected_files(&sc.releases[i], &sc.user);
        assert_eq!(
            files_only(&base.listing(&target, &[".ota"])),
            want,
            "{}: start",
            sc.name
        );
    }
    (sc.tweak)(&mut base, &target);

    let fs = SimFs::new(base.clone());
    if fs.live().ino_at(&state).is_none() {
        // `Updater::prepare` creates the state folder with std::fs (outside the seam) before
        // anything else; do the same here, as a logged, non-durable mkdir.
        ota::fs::Fs::create_dir(&fs, &state, 0o755).expect("mkdir .ota");
    }
    let mut old = outcome_of("old", &base, &target, &dirs);
    let mut crash_from = 0;
    let mut result = String::new();
    // With boots after the updates, the last boot is under test, not an update.
    let last = match sc.boots_after {
        0 => sc.updates.len() - 1,
        _ => usize::MAX,
    };
    // The update under test may get its own server, stopped mid-run.
    let mut doomed_config = None;
    for (n, &u) in sc.updates.iter().enumerate() {
        if n == last {
            crash_from = fs.log().len();
            if n > 0 {
                old = outcome_of("old", &fs.live(), &target, &dirs);
            }
            if let Some(after) = sc.stop_server_after {
                let server = start_server(&repo);
                doomed_config = Some(self::config(&target, &server, &tag(u), on_trial(n)));
                let slot = Arc::new(Mutex::new(Some(server)));
                // Files are downloaded into `downloads/` (copies go straight to the stage).
                let stage = state.join("stage");
                let downloads = state.join("downloads");
                let mut staged = 0;
                fs.set_hook(move |_, rec| {
                    let at = Path::new(&rec.path);
                    if matches!(rec.op, Op::Create { .. })
                        && (at.starts_with(&stage) || at.starts_with(&downloads))
                    {
                        staged += 1;
                        if staged == after + 1
                            && let Some(s) = slot.lock().expect("lock").take()
                        {
                            s.shutdown();
                        }
                    }
                });
            }
        }
        let cfg = doomed_config.take().unwrap_or_else(|| config_of(n));
        let got = update(&cfg, &tag(u), fs.clone());
        match (&got, n == last && sc.stop_server_after.is_some()) {
            (Ok(_), false) => result = "update returned Ok".into(),
            (Err(e), true) => result = format!("update failed as intended: {e}"),
            (got, _) => panic!(
                "{}: update to {} ended {:?}",
                sc.name,
                tag(u),
                got.as_ref().err()
            ),
        }
    }
    for b in 0..sc.boots_after {
        let under_test = b + 1 == sc.boots_after;
        if under_test {
            crash_from = fs.log().len();
            old = outcome_of("old", &fs.live(), &target, &dirs);
        }
        let got = boot(
            &with_tag(&config_of(sc.updates.len() - 1), &tag(0)),
            fs.clone(),
        );
        match (&got, under_test) {
            (Ok(_), false) => {}
            (Err(e), true) if rolled_back(e) => result = "ota boot rolled back".into(),
            (got, _) => panic!("{}: boot {} ended {got:?}", sc.name, b + 1),
        }
    }
    // The release the run must leave: a boot under test rolls back to the installed one.
    let wanted = match sc.boots_after {
        0 => *sc.updates.last().expect("an update"),
        _ => sc
            .installed
            .expect("a rollback goes back to the installed release"),
    };
    let log = fs.log();
    let end = fs.live();
    let fresh_tag = tag(wanted);
    let (new, new_allowed) = if sc.stop_server_after.is_some() {
        assert_eq!(
            end.listing(&target, &[".ota"]),
            old.listing,
            "{}: a failed download changed the target",
            sc.name
        );
        let healthy = SimFs::new(end.clone());
        let config = config_of(sc.updates.len() - 1);
        update(&config, &fresh_tag, healthy.clone()).expect("a healthy update works");
        (outcome_of("new", &healthy.live(), &target, &dirs), false)
    } else {
        (outcome_of("new", &end, &target, &dirs), true)
    };
    let want = expected_files(&sc.releases[wanted], &sc.user);
    assert_eq!(
        files_only(&new.listing),
        want,
        "{}: the new release",
        sc.name
    );
    let sync_after_rename_to = |file: &str, from: usize| {
        (from..log.len().saturating_sub(1))
            .find(|&i| {
                matches!(&log[i].op, Op::Rename { to_name, .. } if to_name == file)
                    && matches!(log[i + 1].op, Op::SyncDir { .. })
            })
            .map(|i| i + 1)
    };
    // The commit point is the transaction's `state.json` (after its journal): an update may
    // also rewrite `state.json` before it (settling the trial of the installed release) and
    // after it (recording its own trial's verdict), neither of which changes the files.
    let journal = (crash_from..log.len())
        .rev()
        .find(|&i| matches!(&log[i].op, Op::Rename { to_name, .. } if to_name == "journal.json"))
        .unwrap_or(crash_from);
    let commit_sync = sync_after_rename_to("state.json", journal);
    let error_sync = sync_after_rename_to("last_error.json", crash_from);
    Prepared {
        name: sc.name,
        _dir: dir,
        target,
        dirs,
        base,
        log,
        crash_from,
        commit_sync,
        error_sync,
        fresh: new.clone(),
        old,
        new,
        new_allowed,
        fresh_tag,
        _server: server,
        // A fresh update after recovery runs like the update under test.
        config: config_of(sc.updates.len() - 1),
        result,
    }
}
