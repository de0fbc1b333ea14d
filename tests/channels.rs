//! Which release a channel installs: latest release, pinned tag, branch tip.

use crate::util::{Device, GitRepo, serve};

/// Three releases: v1.0.0 (lightweight), v1.1.0 (annotated), v2.0.0-rc.1 (annotated,
/// marked prerelease), plus a commit on main after them.
fn releases() -> GitRepo {
    let mut repo = GitRepo::new();
    repo.write("version.txt", "1.0.0\n");
    repo.commit("1.0.0");
    repo.tag("v1.0.0");
    repo.write("version.txt", "1.1.0\n");
    repo.commit("1.1.0");
    repo.tag_annotated("v1.1.0", "stable release");
    repo.write("version.txt", "2.0.0-rc.1\n");
    repo.commit("2.0.0-rc.1");
    repo.tag_annotated("v2.0.0-rc.1", "prerelease: try it");
    repo.write("version.txt", "tip of main\n");
    repo.commit("work in progress");
    repo
}

fn installed_version(device: &Device) -> String {
    std::fs::read_to_string(device.target.join("version.txt")).unwrap()
}

#[test]
fn stable_installs_the_latest_release_but_not_a_prerelease() {
    let repo = releases();
    let server = serve(repo.path());
    let device = Device::new(&server, "channel = \"stable\"");
    device.ota_expect(&["update"], 0);
    assert_eq!(installed_version(&device), "1.1.0\n");
    assert_eq!(device.tree(), repo.snapshot("v1.1.0"));
}

#[test]
fn a_pinned_tag_installs_that_release() {
    let repo = releases();
    let server = serve(repo.path());
    for (tag, version) in [("v1.0.0", "1.0.0\n"), ("v2.0.0-rc.1", "2.0.0-rc.1\n")] {
        let device = Device::new(&server, &format!("tag = \"{tag}\""));
        device.ota_expect(&["update"], 0);
        assert_eq!(
            installed_version(&device),
            version,
            "lightweight and annotated tags"
        );
    }
    let device = Device::new(&server, "tag = \"v9.9.9\"");
    let out = device.ota_expect(&["update"], 1);
    assert!(out.contains("v9.9.9"), "{out}");
    assert_eq!(device.last_error().unwrap()["kind"], "not_found");
}

#[test]
fn developer_follows_the_branch_tip() {
    let mut repo = releases();
    let server = serve(repo.path());
    let device = Device::new(&server, "channel = \"developer\"\nbranch = \"main\"");
    device.ota_expect(&["update"], 0);
    assert_eq!(installed_version(&device), "tip of main\n");

    repo.write("version.txt", "next\n");
    let head = repo.commit("next");
    server.reset_stats();
    device.ota_expect(&["update"], 0);
    assert_eq!(installed_version(&device), "next\n");
    let stats = server.stats();
    assert_eq!(
        stats.api_requests, 2,
        "commit of the branch, tree: {:#?}",
        stats.log
    );
    let raw = stats
        .log
        .iter()
        .find(|r| r.path.starts_with("/raw/"))
        .unwrap();
    assert!(
        raw.path.contains(&head),
        "files are fetched by commit SHA: {}",
        raw.path
    );

    // A feature branch with a slash in its name.
    repo.run(&["checkout", "-q", "-b", "feature/x"]);
    repo.write("version.txt", "feature\n");
    repo.commit("feature");
    let device = Device::new(&server, "channel = \"developer\"\nbranch = \"feature/x\"");
    device.ota_expect(&["update"], 0);
    assert_eq!(installed_version(&device), "feature\n");

    let device = Device::new(&server, "channel = \"developer\"\nbranch = \"nope\"");
    let out = device.ota_expect(&["update"], 1);
    assert!(out.contains("nope"), "{out}");
}

#[test]
fn switching_channel_reinstalls_from_the_new_channel() {
    let repo = releases();
    let server = serve(repo.path());
    let device = Device::new(&server, "channel = \"stable\"");
    device.ota_expect(&["update"], 0);
    device.edit_config("channel = \"stable\"", "channel = \"developer\"");
    device.ota_expect(&["check"], 100);
    device.ota_expect(&["update"], 0);
    assert_eq!(installed_version(&device), "tip of main\n");
}

/// Hosts whose commits endpoint does not take `tags/{tag}` (it answers 404 there) still
/// work: the tag is peeled through `git/ref/tags` and `git/tags`, annotated or not.
#[test]
fn tags_are_peeled_through_refs_when_the_commits_endpoint_cannot() {
    use ota_serve::fault::{Action, Fault};
    let repo = releases();
    let server = serve(repo.path());
    server.set_faults(vec![Fault::new("*/commits/tags/*", Action::Status(404))]);
    for (tag, version) in [("v1.0.0", "1.0.0\n"), ("v1.1.0", "1.1.0\n")] {
        let device = Device::new(&server, &format!("tag = \"{tag}\""));
        server.reset_stats();
        device.ota_expect(&["update"], 0);
        assert_eq!(installed_version(&device), version);
        let log = server.stats().log;
        assert!(
            log.iter().any(|r| r.path.contains("/git/ref/tags/")),
            "{log:#?}"
        );
        let peeled = log.iter().any(|r| r.path.contains("/git/tags/"));
        assert_eq!(
            peeled,
            tag == "v1.1.0",
            "only the annotated tag needs git/tags"
        );
    }
}

/// A misspelt owner or repository (or a private one asked without a token) is said to be
/// that, not "no release" or "no branch"; a repository that exists but has no release
/// still says so.
#[test]
fn a_wrong_repository_is_named_not_found_and_maybe_private() {
    let repo = releases();
    let server = serve(repo.path());
    for channel in [
        "",
        "tag = \"v1.0.0\"",
        "channel = \"developer\"\nbranch = \"main\"",
    ] {
        let device = Device::new(&server, channel);
        device.edit_config("repo = \"app\"", "repo = \"ap\"");
        for command in ["check", "update"] {
            let out = device.ota_expect(&[command], 1);
            assert!(
                out.contains("repository acme/ap was not found"),
                "{channel} {command}:\n{out}"
            );
            for hint in [
                "`owner` and `repo`",
                "private",
                "`token`",
                "`token_file`",
                "OTA_TOKEN",
            ] {
                assert!(out.contains(hint), "{channel} {command}: no {hint}:\n{out}");
            }
            for wrong in ["no published release", "no branch"] {
                assert!(!out.contains(wrong), "{channel} {command}:\n{out}");
            }
        }
        assert_eq!(device.last_error().unwrap()["kind"], "not_found");
    }

    let mut bare = GitRepo::new();
    bare.write("main.py", "print(1)\n");
    bare.commit("untagged");
    let server = serve(bare.path());
    let device = Device::new(&server, "");
    let out = device.ota_expect(&["update"], 1);
    assert!(out.contains("acme/app has no published release"), "{out}");
}
