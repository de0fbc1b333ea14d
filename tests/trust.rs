//! The state folder is used only if it is ota's (issue 8, findings 2 and 4): a link, another
//! user's folder, a folder others can write, or a configured `state_dir` holding files ota
//! did not create is refused before anything is written or run; and ota deletes only names
//! it created.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::util::{Device, GitRepo, read_tree, serve};

/// A repository with v1.0.0 (`main.py`, `lib/util.py`) and, once `release_v2` ran, v2.0.0.
fn repo_v1() -> GitRepo {
    let mut repo = GitRepo::new();
    repo.write("main.py", "print(1)\n")
        .write("lib/util.py", "X = 1\n");
    repo.commit("v1");
    repo.tag("v1.0.0");
    repo
}

fn release_v2(repo: &mut GitRepo) {
    repo.write("main.py", "print(2)\n");
    repo.commit("v2");
    repo.tag("v2.0.0");
}

fn main_py(device: &Device) -> String {
    std::fs::read_to_string(device.target.join("main.py")).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

/// A journal that, carried out, would delete the target's `main.py` (undoing a "place"
/// whose staged file is gone moves the target's file into the stage, which is then removed)
/// and plant `planted.txt` from the "backup".
fn plant_hostile_journal(state: &Path) {
    let txid = "1a2b3c-4d";
    std::fs::create_dir_all(state.join("backup").join(txid)).unwrap();
    std::fs::create_dir_all(state.join("stage").join(txid)).unwrap();
    std::fs::write(state.join("backup").join(txid).join("1"), "pwned\n").unwrap();
    let journal = serde_json::json!({
        "format": 1,
        "txid": txid,
        "release": {"channel": "stable", "ref": "v9", "commit": "a".repeat(40)},
        "ops": [
            {"op": "displace", "path": "planted.txt", "slot": "1"},
            {"op": "place", "path": "main.py", "slot": "0"},
        ],
    });
    std::fs::write(state.join("journal.json"), journal.to_string()).unwrap();
}

/// Runs every command that touches the state folder and expects each to be refused with
/// `needle` and kind `untrusted_state`, leaving the target and `outside` unchanged.
fn every_command_refused(device: &Device, needle: &str, watched: &Path) {
    let target = device.tree();
    let before = read_tree(watched);
    for args in [
        &["update", "--json"][..],
        &["update", "--dry-run", "--json"],
        &["recover"],
        &["status", "--json"],
        &["check", "--json"],
    ] {
        let out = device.ota_expect(args, 1);
        assert!(
            out.contains(needle),
            "ota {args:?} names {needle:?}:\n{out}"
        );
        if args.contains(&"--json") {
            assert!(out.contains("\"untrusted_state\""), "ota {args:?}:\n{out}");
        }
        assert_eq!(device.tree(), target, "ota {args:?} changed the target");
        assert_eq!(
            read_tree(watched),
            before,
            "ota {args:?} wrote into {}",
            watched.display()
        );
    }
}

#[test]
fn a_state_folder_that_is_a_symlink_is_refused_and_its_journal_never_runs() {
    let mut repo = repo_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    device.ota_expect(&["update"], 0);
    release_v2(&mut repo);

    // The app (which can write the target) swaps `.ota` for a link to a folder of its own,
    // holding a journal crafted to delete and plant files.
    let elsewhere = device.home().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    plant_hostile_journal(&elsewhere);
    let state = device.target.join(".ota");
    std::fs::rename(&state, device.home().join("old-state")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &state).unwrap();

    every_command_refused(&device, "is a symbolic link", &elsewhere);
    assert_eq!(main_py(&device), "print(1)\n", "main.py not deleted");
    assert!(
        !device.target.join("planted.txt").exists(),
        "nothing planted"
    );
    let names = ["lock", "cache.json", "last_error.json", "errors.json"];
    for name in names.into_iter().chain(["metrics.json", "ota-state.tag"]) {
        assert!(
            !elsewhere.join(name).exists(),
            "{name} written through the link"
        );
    }

    // Once the link is gone the device updates again (a fresh state folder, a full plan
    // that adopts the identical files).
    std::fs::remove_file(&state).unwrap();
    device.ota_expect(&["update"], 0);
    assert_eq!(main_py(&device), "print(2)\n");
    assert!(
        elsewhere.join("journal.json").exists(),
        "the crafted journal is left alone"
    );
}

#[test]
fn a_state_folder_others_can_write_is_refused() {
    let mut repo = repo_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    device.ota_expect(&["update"], 0);
    release_v2(&mut repo);
    let state = device.target.join(".ota");
    plant_hostile_journal(&state);
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o770)).unwrap();

    every_command_refused(&device, "writable by group or others (mode 0770)", &state);
    assert!(
        state.join("journal.json").exists(),
        "the journal was not run"
    );
    assert!(!device.target.join("planted.txt").exists());

    // The fix the message gives works (and the journal, now trusted, is recovered).
    std::fs::remove_file(state.join("journal.json")).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o750)).unwrap();
    device.ota_expect(&["update"], 0);
    assert_eq!(main_py(&device), "print(2)\n");
}

#[test]
fn a_state_folder_owned_by_another_user_is_refused() {
    if rustix::process::geteuid().as_raw() != 0 {
        eprintln!("skipped: giving a folder to another user needs root");
        return;
    }
    let repo = repo_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    device.ota_expect(&["update"], 0);
    let state = device.target.join(".ota");
    plant_hostile_journal(&state);
    std::os::unix::fs::chown(&state, Some(4242), Some(4242)).unwrap();

    every_command_refused(
        &device,
        "belongs to user 4242, but ota runs as user 0",
        &state,
    );
    assert!(
        state.join("journal.json").exists(),
        "the journal was not run"
    );
}

#[test]
fn a_configured_state_dir_with_foreign_files_is_refused_and_they_are_kept() {
    let repo = repo_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "state_dir = \"state\"");
    let state = device.home().join("state");
    std::fs::create_dir_all(state.join("stage/foo")).unwrap();
    std::fs::create_dir_all(state.join("backup")).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(state.join("x.tmp"), "mine\n").unwrap();
    std::fs::write(state.join("stage/foo/data"), "mine too\n").unwrap();
    std::fs::write(state.join("backup/bar"), "and mine\n").unwrap();

    // The first name ota did not create, in sorted order: `backup/bar`.
    every_command_refused(
        &device,
        "holds backup/bar, which ota did not create",
        &state,
    );
    assert!(!device.target.exists(), "no target created");

    std::fs::remove_file(state.join("backup/bar")).unwrap();
    every_command_refused(&device, "holds stage/foo", &state);
    std::fs::remove_dir_all(state.join("stage/foo")).unwrap();
    every_command_refused(&device, "holds x.tmp", &state);
    assert_eq!(std::fs::read(state.join("x.tmp")).unwrap(), b"mine\n");
}

#[test]
fn ota_deletes_only_the_names_it_created_in_its_state_folder() {
    let mut repo = repo_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "state_dir = \"state\"");
    let state = device.home().join("state");
    device.ota_expect(&["update"], 0);
    assert_eq!(mode(&state), 0o700, "created 0700");
    assert_eq!(mode(&state.join("lock")), 0o600, "lock created 0600");
    let marker = std::fs::read_to_string(state.join("ota-state.tag")).unwrap();
    assert!(
        marker.starts_with("Signature: ota state folder\n"),
        "{marker}"
    );

    // Someone puts files into ota's (marked) folder; recovery sweeps only ota's names.
    std::fs::write(state.join("x.tmp"), "mine\n").unwrap();
    std::fs::create_dir_all(state.join("stage/foo")).unwrap();
    std::fs::write(state.join("backup/bar"), "mine\n").unwrap();
    std::fs::write(state.join("state.json.tmp"), "torn").unwrap();
    std::fs::create_dir_all(state.join("stage/18a2b3c4d5e6f708-2a")).unwrap();
    release_v2(&mut repo);
    device.ota_expect(&["update"], 0);
    device.ota_expect(&["recover"], 0);
    assert_eq!(main_py(&device), "print(2)\n");
    assert!(state.join("x.tmp").exists() && state.join("stage/foo").exists());
    assert_eq!(std::fs::read(state.join("backup/bar")).unwrap(), b"mine\n");
    assert!(
        !state.join("state.json.tmp").exists(),
        "ota's own temp file removed"
    );
    assert!(
        !state.join("stage/18a2b3c4d5e6f708-2a").exists(),
        "ota's leftover swept"
    );
}

#[test]
fn a_state_folder_made_by_an_older_ota_is_adopted() {
    let mut repo = repo_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    device.ota_expect(&["update"], 0);
    // An older ota wrote no marker; it may also have left an interrupted download.
    let state = device.target.join(".ota");
    std::fs::remove_file(state.join("ota-state.tag")).unwrap();
    std::fs::create_dir_all(state.join("stage/18a2b3c4d5e6f708-2a")).unwrap();

    let out = device.ota_expect(&["status"], 0);
    assert!(out.contains("v1.0.0"), "{out}");
    assert!(
        !state.join("ota-state.tag").exists(),
        "status writes nothing"
    );

    release_v2(&mut repo);
    device.ota_expect(&["update"], 0);
    assert_eq!(main_py(&device), "print(2)\n");
    assert!(state.join("ota-state.tag").exists(), "adopted: marked");
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
}

#[test]
fn the_lock_is_never_opened_through_a_symlink() {
    let repo = repo_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    device.ota_expect(&["update"], 0);
    let outside = device.home().join("outside.txt");
    std::fs::write(&outside, "keep\n").unwrap();
    let lock = device.target.join(".ota/lock");
    std::fs::remove_file(&lock).unwrap();
    std::os::unix::fs::symlink(&outside, &lock).unwrap();

    let out = device.ota_expect(&["update"], 1);
    assert!(out.contains("cannot open") && out.contains("lock"), "{out}");
    assert_eq!(std::fs::read(&outside).unwrap(), b"keep\n");
}
