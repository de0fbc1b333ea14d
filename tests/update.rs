//! Installing and updating: what lands on disk, and what it costs on the wire.

use crate::util::{Device, GitRepo, Node, repo_with_a_submodule, serve};

/// A small application at v1.0.0 (lightweight tag).
fn app_v1() -> GitRepo {
    let mut repo = GitRepo::new();
    repo.write("main.py", "print('v1')\n")
        .write("lib/util.py", "def util(): return 1\n")
        .write("lib/keep.py", "KEEP = True\n")
        .write("old.txt", "goes away in v2\n")
        .write("docs/only/readme.txt", "folder emptied in v2\n")
        .write("empty.txt", "")
        .write_exec("bin/run", "#!/bin/sh\necho run\n");
    repo.commit("v1");
    repo.tag("v1.0.0");
    repo
}

/// v2.0.0 (annotated): edits main.py, adds lib/new.py, deletes old.txt and docs/only/.
fn app_v2(repo: &mut GitRepo) {
    repo.write("main.py", "print('v2')\n")
        .write("lib/new.py", "NEW = 2\n")
        .remove("old.txt")
        .remove("docs/only/readme.txt");
    repo.commit("v2");
    repo.tag_annotated("v2.0.0", "second release");
}

#[test]
fn install_then_update_fetches_only_what_changed() {
    let mut repo = app_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "");

    device.ota_expect(&["update"], 0);
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));
    assert_eq!(
        server.stats().raw_requests,
        7,
        "every file of v1 downloaded once"
    );

    app_v2(&mut repo);
    server.reset_stats();
    let out = device.ota_expect(&["update"], 0);
    assert!(out.contains("v2.0.0"), "{out}");
    assert_eq!(device.tree(), repo.snapshot("v2.0.0"));
    assert!(
        !device.target.join("docs").exists(),
        "emptied folders are removed"
    );

    let stats = server.stats();
    assert_eq!(
        stats.api_requests, 3,
        "releases/latest, commit of the tag, tree: {:#?}",
        stats.log
    );
    assert_eq!(
        stats.raw_requests, 2,
        "only main.py and lib/new.py: {:#?}",
        stats.log
    );
    let mut fetched: Vec<&str> = stats
        .log
        .iter()
        .filter(|r| r.path.starts_with("/raw/"))
        .map(|r| r.path.rsplit('/').next().unwrap())
        .collect();
    fetched.sort();
    assert_eq!(fetched, ["main.py", "new.py"]);
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());

    // Up to date: one request, nothing downloaded, exit 0.
    server.reset_stats();
    let out = device.ota_expect(&["update"], 0);
    assert!(out.contains("up to date"), "{out}");
    assert_eq!(server.stats().requests, 1);
    server.reset_stats();
    device.ota_expect(&["check"], 0);
    assert_eq!(server.stats().requests, 1, "a no-op check is one request");
}

#[test]
fn check_reports_an_available_update_with_exit_100() {
    let mut repo = app_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    let out = device.ota_expect(&["check"], 100);
    assert!(out.contains("update available"), "{out}");
    assert!(device.tree().is_empty(), "check changes nothing");
    device.ota_expect(&["update"], 0);
    device.ota_expect(&["check"], 0);
    app_v2(&mut repo);
    let out = device.ota_expect(&["check", "--json"], 100);
    let json: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(json["available"]["ref"], "v2.0.0");
}

#[test]
fn files_ota_does_not_own_are_never_touched() {
    let mut repo = app_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    // Before the first install: the user's own files, a stale copy of a shipped file, and
    // an identical copy of another.
    std::fs::create_dir_all(device.target.join("data")).unwrap();
    std::fs::create_dir_all(device.target.join("lib")).unwrap();
    std::fs::write(device.target.join("data/readings.csv"), "1,2,3\n").unwrap();
    std::fs::write(device.target.join("local.conf"), "mine\n").unwrap();
    std::fs::write(device.target.join("lib/mine.py"), "mine\n").unwrap();
    std::fs::write(device.target.join("main.py"), "stale\n").unwrap();
    std::fs::write(device.target.join("lib/keep.py"), "KEEP = True\n").unwrap();

    device.ota_expect(&["update"], 0);
    assert_eq!(
        server.stats().raw_requests,
        6,
        "lib/keep.py already had the right content and was not downloaded"
    );
    let mut expected = repo.snapshot("v1.0.0");
    for (path, content) in [
        ("data/readings.csv", "1,2,3\n"),
        ("local.conf", "mine\n"),
        ("lib/mine.py", "mine\n"),
    ] {
        expected.insert(path.into(), Node::File(content.into(), false));
    }
    assert_eq!(device.tree(), expected);

    // v2 deletes files ota owns; the user's files stay, even in folders ota empties.
    std::fs::write(device.target.join("docs/only/notes.txt"), "mine too\n").unwrap();
    app_v2(&mut repo);
    device.ota_expect(&["update"], 0);
    let mut expected = repo.snapshot("v2.0.0");
    for (path, content) in [
        ("data/readings.csv", "1,2,3\n"),
        ("local.conf", "mine\n"),
        ("lib/mine.py", "mine\n"),
        ("docs/only/notes.txt", "mine too\n"),
    ] {
        expected.insert(path.into(), Node::File(content.into(), false));
    }
    assert_eq!(device.tree(), expected);
}

#[test]
fn exec_bits_and_empty_files_are_kept() {
    let mut repo = app_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    device.ota_expect(&["update"], 0);
    assert_eq!(
        device.tree().get("bin/run"),
        Some(&Node::File(b"#!/bin/sh\necho run\n".to_vec(), true))
    );
    assert_eq!(
        device.tree().get("empty.txt"),
        Some(&Node::File(Vec::new(), false))
    );

    // Only the mode changes: the content is copied locally, nothing is downloaded.
    repo.write("bin/run", "#!/bin/sh\necho run\n");
    std::fs::set_permissions(
        repo.path().join("bin/run"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    repo.write_exec("lib/util.py", "def util(): return 1\n");
    repo.commit("modes");
    repo.tag("v1.1.0");
    server.reset_stats();
    device.ota_expect(&["update"], 0);
    assert_eq!(device.tree(), repo.snapshot("v1.1.0"));
    assert_eq!(server.stats().raw_requests, 0);
}

#[test]
fn symlinks_inside_the_target_are_installed() {
    let mut repo = GitRepo::new();
    repo.write("lib/real.py", "REAL = 1\n")
        .symlink("current.py", "lib/real.py")
        .symlink("lib/up.py", "../current.py");
    repo.commit("links");
    repo.tag("v1.0.0");
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    device.ota_expect(&["update"], 0);
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));
    assert_eq!(
        std::fs::read_to_string(device.target.join("lib/up.py")).unwrap(),
        "REAL = 1\n"
    );

    // Retarget a link.
    repo.write("lib/other.py", "OTHER = 1\n")
        .symlink("current.py", "lib/other.py");
    repo.commit("retarget");
    repo.tag("v1.1.0");
    device.ota_expect(&["update"], 0);
    assert_eq!(device.tree(), repo.snapshot("v1.1.0"));
}

#[test]
fn a_symlink_leaving_the_target_rejects_the_update() {
    let mut repo = app_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    device.ota_expect(&["update"], 0);
    let before = device.tree();

    repo.write("main.py", "print('evil')\n")
        .symlink("lib/passwd", "../../etc/passwd");
    repo.commit("escape");
    repo.tag("v6.6.6");
    let out = device.ota_expect(&["update"], 1);
    assert!(
        out.contains("lib/passwd"),
        "the error names the link: {out}"
    );
    assert_eq!(device.tree(), before, "nothing was written");
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
    let error = device.last_error().unwrap();
    assert_eq!(error["kind"], "unsafe_path");
}

#[test]
fn submodules_are_skipped_with_a_warning() {
    let repo = repo_with_a_submodule();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    let out = device.ota_expect(&["update"], 0);
    assert!(
        out.contains("vendor/lib") && out.contains("submodule"),
        "{out}"
    );
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));
    assert!(!device.target.join("vendor").exists());
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let mut repo = app_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    device.ota_expect(&["update"], 0);
    app_v2(&mut repo);
    server.reset_stats();
    let out = device.ota_expect(&["update", "--dry-run"], 0);
    assert!(out.contains("replace  main.py"), "{out}");
    assert!(out.contains("add      lib/new.py"), "{out}");
    assert!(out.contains("delete   old.txt"), "{out}");
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));
    assert_eq!(server.stats().raw_requests, 0);
}

#[test]
fn allow_and_ignore_choose_the_installed_files() {
    let repo = app_v1();
    let server = serve(repo.path());
    let device = Device::new(
        &server,
        "allow = [\"lib/\", \"main.py\", \"*.txt\"]\nignore = [\"old.txt\"]",
    );
    device.ota_expect(&["update"], 0);
    let paths: Vec<String> = device.tree().into_keys().collect();
    assert_eq!(
        paths,
        [
            "docs/only/readme.txt",
            "empty.txt",
            "lib/keep.py",
            "lib/util.py",
            "main.py"
        ]
    );
}

#[test]
fn force_repairs_a_file_changed_on_the_device() {
    let repo = app_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    device.ota_expect(&["update"], 0);
    // Same size, different bytes: only a content check finds it.
    std::fs::write(device.target.join("main.py"), "print('XX')\n").unwrap();
    device.ota_expect(&["update"], 0);
    assert_ne!(
        device.tree(),
        repo.snapshot("v1.0.0"),
        "a plain update trusts its records"
    );
    server.reset_stats();
    device.ota_expect(&["update", "--force"], 0);
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));
    assert_eq!(
        server.stats().raw_requests,
        1,
        "only the damaged file is fetched"
    );
}

#[test]
fn status_shows_the_installed_release_and_the_last_error() {
    let repo = app_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    let out = device.ota_expect(&["status"], 0);
    assert!(out.contains("nothing yet"), "{out}");
    device.ota_expect(&["update"], 0);
    let out = device.ota_expect(&["status", "--json"], 0);
    let json: serde_json::Value =
        serde_json::from_str(&out[..out.rfind('}').unwrap() + 1]).unwrap();
    assert_eq!(json["installed"]["release"]["ref"], "v1.0.0");
    assert_eq!(json["installed"]["files"], 7);
    assert!(json["last_error"].is_null());
}

/// What a new user reads on a first install, and what `--dry-run` and `recover` leave on a
/// device that has nothing yet: nothing at all.
#[test]
fn a_first_install_says_installed_and_dry_run_and_recover_create_nothing() {
    let repo = app_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "");

    let out = device.ota_expect(&["recover"], 0);
    assert!(out.contains("nothing to recover"), "{out}");
    assert!(
        !device.target.exists(),
        "recover created {:?}",
        device.target
    );

    let out = device.ota_expect(&["update", "--dry-run"], 0);
    assert!(out.contains("plan to install v1.0.0 "), "{out}");
    assert!(out.contains("add      main.py"), "{out}");
    assert!(!out.contains("nothing →"), "{out}");
    assert!(
        !device.target.exists(),
        "--dry-run created {:?}",
        device.target
    );

    let out = device.ota_expect(&["check"], 100);
    assert!(
        out.contains("update available: v1.0.0 ") && out.contains("(nothing is installed yet)"),
        "{out}"
    );
    assert!(!device.target.exists(), "check created {:?}", device.target);

    let out = device.ota_expect(&["update"], 0);
    assert!(out.contains("installed v1.0.0 "), "{out}");
    assert!(!out.contains("updated nothing"), "{out}");
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));

    // With something installed, a dry run still changes nothing.
    let mut repo = repo;
    app_v2(&mut repo);
    let state = std::fs::read(device.target.join(".ota/state.json")).unwrap();
    let out = device.ota_expect(&["update", "--dry-run"], 0);
    assert!(out.contains("plan to update v1.0.0 "), "{out}");
    assert!(out.contains(" → v2.0.0 "), "{out}");
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));
    assert_eq!(
        std::fs::read(device.target.join(".ota/state.json")).unwrap(),
        state
    );
    let out = device.ota_expect(&["update"], 0);
    assert!(out.contains("updated v1.0.0 "), "{out}");
}

/// The same release with another filter: the check says what changed, not "v1 → v1".
#[test]
fn a_filter_change_says_what_changed() {
    let repo = app_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "ignore = [\"old.txt\"]");
    device.ota_expect(&["update"], 0);
    assert!(!device.target.join("old.txt").exists());

    device.edit_config("ignore = [\"old.txt\"]", "");
    let out = device.ota_expect(&["check"], 100);
    assert!(
        out.contains("update available: v1.0.0 ")
            && out.contains("(allow/ignore changed since it was installed)"),
        "{out}"
    );
    assert!(!out.contains('→'), "{out}");
    let out = device.ota_expect(&["check", "--json"], 100);
    let json: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(json["reason"], "filter_changed");

    let out = device.ota_expect(&["update"], 0);
    assert!(
        out.contains("reinstalled v1.0.0 ")
            && out.contains("(allow/ignore changed since it was installed)"),
        "{out}"
    );
    assert!(out.contains("1 added"), "{out}");
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));
}

/// A failed update stays on record through successful checks, until an update succeeds.
#[test]
fn a_successful_check_keeps_the_last_failed_update_on_record() {
    let repo = app_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "tag = \"v9.9.9\"");
    device.ota_expect(&["update"], 1);
    let failed = device.last_error().expect("the failure is recorded");
    assert_eq!(failed["kind"], "not_found");

    device.edit_config("tag = \"v9.9.9\"", "tag = \"v1.0.0\"");
    device.ota_expect(&["check"], 100);
    assert_eq!(
        device.last_error(),
        Some(failed.clone()),
        "a check keeps it"
    );
    let out = device.ota_expect(&["status"], 0);
    assert!(
        out.contains("v9.9.9"),
        "status still shows the failure:\n{out}"
    );
    device.ota_expect(&["update", "--dry-run"], 0);
    assert_eq!(device.last_error(), Some(failed), "a dry run keeps it");

    device.ota_expect(&["update"], 0);
    assert_eq!(device.last_error(), None, "a successful update clears it");
}
