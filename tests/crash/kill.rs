//! Real `ota update` processes SIGKILLed on the real filesystem.
//!
//! A release pair with enough files that the swap takes measurable time is served by
//! `ota_serve::Server` on 127.0.0.1. One calibration run (the disk polled while it works)
//! times when the journal appears and when `state.json` changes; each trial then copies a
//! device holding the old release, starts `ota update`, and SIGKILLs it at a random moment
//! drawn in turn from the download, swap and commit windows. What was on disk at the kill
//! classifies it (no journal yet / journal present / committed). Then `ota recover` must
//! leave exactly the old or the new release (the new one if it had committed), `state.json`
//! naming it, nothing temporary; and the next `ota update` must install the new release.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ota_serve::fixture::{FileSpec, RepoWriter};
use ota_serve::{Options, Server};

use crate::sim::Entry;

/// Trials in the normal run, and with `OTA_CRASH_LONG`.
const TRIALS: usize = 200;
const TRIALS_LONG: usize = 2_000;

/// The phase a kill landed in, judged from the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// No journal: resolving, downloading, staging (or recovering first).
    Download,
    /// The journal is there, `state.json` still names the old release: the swap.
    Swap,
    /// `state.json` names the new release (cleanup may be running).
    Committed,
    /// The process had exited before the kill.
    Finished,
}

fn releases() -> (BTreeMap<String, FileSpec>, BTreeMap<String, FileSpec>) {
    let mut old = BTreeMap::new();
    let mut new = BTreeMap::new();
    let f = |bytes: Vec<u8>, exec: bool| FileSpec::File { bytes, exec };
    for d in 0..8 {
        for i in 0..40 {
            let body = format!("dir {d} file {i}\n").repeat(8).into_bytes();
            let path = format!("d{d:02}/f{i:02}.txt");
            old.insert(path.clone(), f(body.clone(), false));
            match (d + i) % 16 {
                // Edited: downloaded.
                0 => {
                    let mut edited = body.clone();
                    edited.extend_from_slice(b"edited in v2\n");
                    new.insert(path, f(edited, false));
                }
                // Deleted.
                1 | 2 => {}
                // Moved to a new folder: staged from the local copy, no download.
                3..=8 => {
                    new.insert(format!("moved/d{d:02}/f{i:02}.txt"), f(body, false));
                }
                // Exec bit set: staged from the local copy.
                9 | 10 => {
                    new.insert(path, f(body, true));
                }
                _ => {
                    new.insert(path, f(body, false));
                }
            }
        }
    }
    for i in 0..20 {
        new.insert(
            format!("added/a{i:02}.txt"),
            f(format!("added {i}\n").into_bytes(), false),
        );
    }
    old.insert("current".into(), FileSpec::Symlink("d00/f00.txt".into()));
    new.insert("current".into(), FileSpec::Symlink("added/a00.txt".into()));
    (old, new)
}

fn listing_of(spec: &BTreeMap<String, FileSpec>) -> BTreeMap<String, Entry> {
    spec.iter()
        .filter_map(|(p, f)| {
            let e = match f {
                FileSpec::File { bytes, exec } => Entry::file(bytes.clone(), *exec),
                FileSpec::Symlink(t) => Entry::Link(t.clone()),
                FileSpec::Submodule(_) => return None,
            };
            Some((p.clone(), e))
        })
        .collect()
}

/// Files and links below `root`, `.ota` excluded; folders must all hold something.
fn read_listing(root: &Path) -> Result<BTreeMap<String, Entry>, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let mut empty = true;
        for entry in std::fs::read_dir(&dir).map_err(|e| e.to_string())? {
            empty = false;
            let path = entry.map_err(|e| e.to_string())?.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel == ".ota" {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).map_err(|e| e.to_string())?;
            if meta.file_type().is_symlink() {
                let t = std::fs::read_link(&path).map_err(|e| e.to_string())?;
                out.insert(rel, Entry::Link(t.to_string_lossy().into_owned()));
            } else if meta.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
                out.insert(rel, Entry::File(bytes, meta.mode() & 0o7777));
            }
        }
        if empty && dir != root {
            return Err(format!("empty folder left: {}", dir.display()));
        }
    }
    Ok(out)
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&src).unwrap();
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if meta.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(meta.mode())).unwrap();
        }
    }
}

struct Lab {
    _dir: tempfile::TempDir,
    root: PathBuf,
    server: Server,
    template: PathBuf,
    old: BTreeMap<String, Entry>,
    new: BTreeMap<String, Entry>,
}

impl Lab {
    fn config(&self, home: &Path, tag: &str) -> PathBuf {
        let path = home.join("ota.toml");
        let text = format!(
            "target_dir = {:?}\ntag = {tag:?}\n\
             [source]\nowner = \"acme\"\nrepo = \"app\"\napi_url = \"{}\"\nraw_url = \"{}\"\n\
             [network]\nconnect_timeout_sec = 5\nhttp_timeout_sec = 5\nretries = 2\nbackoff_sec = 1\nmax_backoff_sec = 1\n",
            home.join("app"),
            self.server.api_url(),
            self.server.raw_url(),
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A fresh device holding the old release.
    fn device(&self, n: usize) -> PathBuf {
        let home = self.root.join(format!("trial{n}"));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).unwrap();
        copy_tree(&self.template, &home.join("app"));
        self.config(&home, "v2.0.0");
        home
    }
}

fn ota(home: &Path, command: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ota"));
    cmd.arg(command)
        .arg("--config")
        .arg(home.join("ota.toml"))
        .env_remove("OTA_TOKEN")
        .env_remove("OTA_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

fn run_ok(home: &Path, command: &str) -> Result<(), String> {
    let out = ota(home, command).output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ota {command} exited {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `state.json`'s release tag, if any.
fn installed_tag(app: &Path) -> Option<String> {
    let bytes = std::fs::read(app.join(".ota/state.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v["release"]["ref"].as_str().map(str::to_owned)
}

fn setup() -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let (old, new) = releases();
    let repo = root.join("repo.git");
    let mut writer = RepoWriter::init(&repo, true).unwrap();
    let c1 = writer.commit("main", &old, "v1", 1_700_000_000).unwrap();
    writer.tag_lightweight("v1.0.0", &c1).unwrap();
    let c2 = writer.commit("main", &new, "v2", 1_700_000_060).unwrap();
    writer.tag_lightweight("v2.0.0", &c2).unwrap();
    let mut options = Options::new(&repo);
    options.owner = Some("acme".into());
    options.name = Some("app".into());
    let server = Server::start(options).unwrap();
    let lab = Lab {
        template: root.join("template/app"),
        old: listing_of(&old),
        new: listing_of(&new),
        _dir: dir,
        root,
        server,
    };
    let home = lab.root.join("template");
    std::fs::create_dir_all(&home).unwrap();
    lab.config(&home, "v1.0.0");
    run_ok(&home, "update").expect("the old release installs");
    assert_eq!(read_listing(&lab.template).unwrap(), lab.old);
    lab
}

/// Times of one unkilled update: journal seen, state.json replaced, exit.
fn calibrate(lab: &Lab) -> (Duration, Duration, Duration) {
    let home = lab.device(usize::MAX);
    let app = home.join("app");
    let state_ino = std::fs::metadata(app.join(".ota/state.json"))
        .unwrap()
        .ino();
    let start = Instant::now();
    let mut child = ota(&home, "update").spawn().unwrap();
    let (mut journal, mut commit) = (None, None);
    loop {
        if journal.is_none() && app.join(".ota/journal.json").exists() {
            journal = Some(start.elapsed());
        }
        if commit.is_none()
            && std::fs::metadata(app.join(".ota/state.json")).is_ok_and(|m| m.ino() != state_ino)
        {
            commit = Some(start.elapsed());
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    let end = start.elapsed();
    assert!(child.wait().unwrap().success(), "calibration update failed");
    assert_eq!(read_listing(&app).unwrap(), lab.new);
    let _ = std::fs::remove_dir_all(&home);
    let commit = commit.unwrap_or(end);
    (journal.unwrap_or(commit), commit, end)
}

/// When to kill: after `delay` from the start, from the journal's appearance, or from the
/// commit (`state.json` replaced).
#[derive(Clone, Copy, Debug)]
enum Aim {
    Start(Duration),
    Journal(Duration),
    Commit(Duration),
}

/// One trial: kill as aimed, recover, check, update, check.
fn trial(lab: &Lab, n: usize, aim: Aim) -> Result<Phase, String> {
    let home = lab.device(n);
    let app = home.join("app");
    let journal = app.join(".ota/journal.json");
    let state = app.join(".ota/state.json");
    let state_ino = std::fs::metadata(&state).unwrap().ino();
    let start = Instant::now();
    let mut child = ota(&home, "update").spawn().unwrap();
    let mut since: Option<Instant> = None;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        let (event, delay) = match aim {
            Aim::Start(d) => (true, d),
            Aim::Journal(d) => (journal.exists(), d),
            Aim::Commit(d) => (
                std::fs::metadata(&state).is_ok_and(|m| m.ino() != state_ino),
                d,
            ),
        };
        if event && since.is_none() {
            since = Some(if matches!(aim, Aim::Start(_)) {
                start
            } else {
                Instant::now()
            });
        }
        if since.is_some_and(|t| t.elapsed() >= delay) {
            break;
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    let at = start.elapsed();
    let phase = if child.try_wait().unwrap().is_some() {
        Phase::Finished
    } else {
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if installed_tag(&app).as_deref() == Some("v2.0.0") {
            Phase::Committed
        } else if journal.exists() {
            Phase::Swap
        } else {
            Phase::Download
        }
    };
    let what = |e: String| format!("trial {n} ({aim:?}, killed at {at:?}, {phase:?}): {e}");
    run_ok(&home, "recover").map_err(what)?;
    let listing = read_listing(&app).map_err(what)?;
    let tag = installed_tag(&app);
    let on_disk = if listing == lab.new {
        "v2.0.0"
    } else if listing == lab.old && phase != Phase::Committed && phase != Phase::Finished {
        "v1.0.0"
    } else {
        return Err(what(format!(
            "neither the old nor the new release after recovery ({} paths)",
            listing.len()
        )));
    };
    if tag.as_deref() != Some(on_disk) {
        return Err(what(format!("{on_disk} on disk, state.json names {tag:?}")));
    }
    let state = app.join(".ota");
    for sub in ["stage", "backup"] {
        if let Ok(mut entries) = std::fs::read_dir(state.join(sub))
            && let Some(e) = entries.next()
        {
            return Err(what(format!("{sub}/ holds {:?}", e.unwrap().file_name())));
        }
    }
    for entry in std::fs::read_dir(&state).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name == "journal.json" || name.ends_with(".tmp") {
            return Err(what(format!("left behind: .ota/{name}")));
        }
    }
    run_ok(&home, "update").map_err(what)?;
    if read_listing(&app).map_err(what)? != lab.new {
        return Err(what(
            "the next update did not install the new release".into(),
        ));
    }
    let _ = std::fs::remove_dir_all(&home);
    Ok(phase)
}

/// Runs the trials and prints the counts per phase; false on a violation.
pub fn run(long: bool) -> bool {
    let t = Instant::now();
    let lab = setup();
    let (journal, commit, end) = calibrate(&lab);
    println!();
    println!(
        "crash: SIGKILL of real `ota update` processes ({} files -> {}): calibration: journal at {:.0} ms, state.json replaced at {:.0} ms, exit at {:.0} ms",
        lab.old.len(),
        lab.new.len(),
        journal.as_secs_f64() * 1e3,
        commit.as_secs_f64() * 1e3,
        end.as_secs_f64() * 1e3
    );
    let trials = if long { TRIALS_LONG } else { TRIALS };
    // Aims, in turn: anywhere before the journal (download), within the swap (from the
    // journal's appearance), within commit and cleanup (from state.json's replacement).
    let swap = commit.saturating_sub(journal) + Duration::from_millis(2);
    let cleanup = end.saturating_sub(commit) + Duration::from_millis(2);
    let results: std::sync::Mutex<Vec<Result<Phase, String>>> = Default::default();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= trials {
                        break;
                    }
                    let mut rng = fastrand::Rng::with_seed(0x5147_4b11 ^ n as u64);
                    let pick = |rng: &mut fastrand::Rng, d: Duration| {
                        Duration::from_micros(rng.u64(0..d.as_micros().max(1) as u64))
                    };
                    let aim = match n % 3 {
                        0 => Aim::Start(pick(&mut rng, journal)),
                        1 => Aim::Journal(pick(&mut rng, swap)),
                        _ => Aim::Commit(pick(&mut rng, cleanup)),
                    };
                    let r = trial(&lab, n, aim);
                    results.lock().unwrap().push(r);
                }
            });
        }
    });
    let mut counts: BTreeMap<Phase, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for r in results.into_inner().unwrap() {
        match r {
            Ok(phase) => *counts.entry(phase).or_default() += 1,
            Err(e) => failures.push(e),
        }
    }
    let count = |p| counts.get(&p).copied().unwrap_or(0);
    println!(
        "crash: SIGKILL trials: {trials}: killed with no journal yet (download) {}, journal present (swap) {}, committed {}, finished before the kill {}; violations = {} ({:.1}s)",
        count(Phase::Download),
        count(Phase::Swap),
        count(Phase::Committed),
        count(Phase::Finished),
        failures.len(),
        t.elapsed().as_secs_f64()
    );
    for f in failures.iter().take(10) {
        println!("SIGKILL VIOLATION: {f}");
    }
    failures.is_empty()
}
