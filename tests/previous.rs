//! Keeping the previous release while a new one is on trial: the files an update sets aside
//! stay in `<state>/previous/<blob id>` (the displaced inodes themselves), later updates
//! take content from there instead of downloading it, and they go once no trial needs them.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ota::ObjectId;

use crate::util::{Device, GitRepo, serve};

/// v1.0.0: the release confirmed before any trial.
fn app_v1() -> GitRepo {
    let mut repo = GitRepo::new();
    repo.write("main.py", "print('v1')\n")
        .write("lib/util.py", "def util(): return 1\n")
        .write("old.txt", "goes away in v2\n")
        .write("same/one.txt", "twice in v1\n")
        .write("same/two.txt", "twice in v1\n")
        .write_exec("bin/run", "#!/bin/sh\necho v1\n")
        .symlink("current", "main.py");
    repo.commit("v1");
    repo.tag("v1.0.0");
    repo
}

/// v2.0.0: changes main.py, bin/run and the link, deletes old.txt.
fn app_v2(repo: &mut GitRepo) {
    repo.write("main.py", "print('v2')\n")
        .write_exec("bin/run", "#!/bin/sh\necho v2\n")
        .remove("old.txt")
        .remove("same/one.txt")
        .remove("same/two.txt")
        .remove("current")
        .symlink("current", "lib/util.py");
    repo.commit("v2");
    repo.tag("v2.0.0");
}

/// v3.0.0: exactly v1's files again.
fn app_v3_as_v1(repo: &mut GitRepo) {
    repo.write("main.py", "print('v1')\n")
        .write("old.txt", "goes away in v2\n")
        .write("same/one.txt", "twice in v1\n")
        .write("same/two.txt", "twice in v1\n")
        .write_exec("bin/run", "#!/bin/sh\necho v1\n")
        .remove("current")
        .symlink("current", "main.py");
    repo.commit("v3");
    repo.tag("v3.0.0");
}

/// Puts every later update on trial: pending until `ota confirm`, an hour away.
fn start_trials(device: &Device) {
    let mut text = std::fs::read_to_string(&device.config).unwrap();
    text.push_str("\n[trial]\nconfirm_within_sec = 3600\n");
    std::fs::write(&device.config, text).unwrap();
}

fn stop_trials(device: &Device) {
    device.edit_config("\n[trial]\nconfirm_within_sec = 3600\n", "\n");
}

fn blob(content: &str) -> ObjectId {
    ObjectId::for_blob(content.as_bytes())
}

fn previous(device: &Device) -> PathBuf {
    device.target.join(".ota/previous")
}

fn object(device: &Device, content: &str) -> PathBuf {
    previous(device).join(blob(content).to_hex())
}

/// The names under `previous/`, sorted.
fn stored(device: &Device) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(previous(device)) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

fn ino(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).unwrap().ino()
}

/// The rollback point `state.json` records, if any.
fn rollback_ref(device: &Device) -> Option<String> {
    let text = std::fs::read(device.target.join(".ota/state.json")).unwrap();
    let state: serde_json::Value = serde_json::from_slice(&text).unwrap();
    state["trial"]["rollback_to"]["release"]["ref"]
        .as_str()
        .map(str::to_owned)
}

/// v1 confirmed (installed with no trial configured), then v2 installed on trial.
fn v2_on_trial() -> (GitRepo, ota_serve::Server, Device, [u64; 3]) {
    let mut repo = app_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    device.ota_expect(&["update"], 0);
    let before = ["main.py", "old.txt", "bin/run"].map(|p| ino(&device.target.join(p)));
    start_trials(&device);
    app_v2(&mut repo);
    device.ota_expect(&["update"], 0);
    assert_eq!(device.tree(), repo.snapshot("v2.0.0"));
    assert_eq!(rollback_ref(&device).as_deref(), Some("v1.0.0"));
    (repo, server, device, before)
}

#[test]
fn an_update_on_trial_keeps_the_files_it_sets_aside_themselves() {
    let (_repo, _server, device, before) = v2_on_trial();
    // The displaced inodes themselves (moved, not copied), mode kept.
    assert_eq!(ino(&object(&device, "print('v1')\n")), before[0]);
    assert_eq!(ino(&object(&device, "goes away in v2\n")), before[1]);
    let run = object(&device, "#!/bin/sh\necho v1\n");
    assert_eq!(ino(&run), before[2]);
    assert_eq!(std::fs::metadata(&run).unwrap().mode() & 0o777, 0o755);
    // The link itself.
    let link = object(&device, "main.py");
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("main.py"));
    // Only what v1 had and the target no longer has, once per content: five objects,
    // nothing of v2's.
    assert!(object(&device, "twice in v1\n").is_file());
    assert_eq!(stored(&device).len(), 5, "{:?}", stored(&device));
    // Nothing else is left: `leftovers` lists the objects of `previous/` themselves.
    let leftovers = device.leftovers();
    assert!(
        leftovers.iter().all(|l| l.starts_with("previous/")),
        "{leftovers:?}"
    );
    assert_eq!(leftovers.len(), 5, "{leftovers:?}");
}

#[test]
fn reinstalling_the_kept_release_downloads_no_file() {
    let (mut repo, server, device, before) = v2_on_trial();
    app_v3_as_v1(&mut repo);
    server.reset_stats();
    device.ota_expect(&["update"], 0);
    assert_eq!(device.tree(), repo.snapshot("v3.0.0"));
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));
    let stats = server.stats();
    assert_eq!(
        stats.raw_requests, 0,
        "no file downloaded: {:#?}",
        stats.log
    );
    // Hard-linked back: the very inodes v1 had.
    assert_eq!(ino(&device.target.join("main.py")), before[0]);
    assert_eq!(ino(&device.target.join("bin/run")), before[2]);
    // Two paths with one content stay two files (one linked, one copied).
    let (one, two) = (
        device.target.join("same/one.txt"),
        device.target.join("same/two.txt"),
    );
    assert_ne!(ino(&one), ino(&two));
    // v3 is on trial too, still rolling back to v1 (v2 was never confirmed).
    assert_eq!(rollback_ref(&device).as_deref(), Some("v1.0.0"));
}

#[test]
fn a_damaged_kept_file_is_downloaded_instead() {
    let (mut repo, server, device, _) = v2_on_trial();
    // Same length, other bytes: only reading it can tell.
    let damaged = object(&device, "print('v1')\n");
    std::fs::remove_file(&damaged).unwrap();
    std::fs::write(&damaged, "print('v0')\n").unwrap();
    app_v3_as_v1(&mut repo);
    server.reset_stats();
    device.ota_expect(&["update"], 0);
    assert_eq!(device.tree(), repo.snapshot("v3.0.0"));
    let stats = server.stats();
    let fetched: Vec<&str> = (stats.log.iter())
        .filter(|r| r.path.starts_with("/raw/"))
        .map(|r| r.path.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(fetched, ["main.py"], "{:#?}", stats.log);
}

#[test]
fn the_kept_files_go_once_no_trial_needs_them_and_foreign_names_stay() {
    let (mut repo, _server, device, _) = v2_on_trial();
    let foreign = [
        "notes.txt".to_owned(),
        blob("x").to_hex().to_uppercase(),
        format!("{}.bak", blob("y").to_hex()),
    ];
    for name in &foreign {
        std::fs::write(previous(&device).join(name), "not ota's\n").unwrap();
    }
    let folder = blob("a folder").to_hex();
    std::fs::create_dir(previous(&device).join(&folder)).unwrap();

    // Still on trial: recovery keeps what the rollback point needs.
    device.ota_expect(&["recover"], 0);
    assert_eq!(stored(&device).len(), 5 + foreign.len() + 1);

    // The next release installs with no trial configured: v2's trial ends with it.
    stop_trials(&device);
    repo.write("main.py", "print('v4')\n");
    repo.commit("v4");
    repo.tag("v4.0.0");
    device.ota_expect(&["update"], 0);
    assert_eq!(rollback_ref(&device), None);
    let mut left = foreign.to_vec();
    left.push(folder);
    left.sort();
    assert_eq!(stored(&device), left);
}
