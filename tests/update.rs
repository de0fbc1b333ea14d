//! Installing and updating: what lands on disk, and what it costs on the wire.

use crate::util::{Device, GitRepo, Node, serve};

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
    assert_eq!(error["kind"], "invalid_release");
}

#[test]
fn submodules_are_skipped_with_a_warning() {
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
