//! Limits are consistent (issue 8, finding 5, and the PATH_MAX half of 7): a release ota
//! could not install, or could not read back once installed, is refused when the update is
//! planned, with the numbers, before any download.

use crate::util::{Device, GitRepo, Raw, serve};

const F: &str = "100644";

#[test]
fn a_path_longer_than_path_max_under_this_target_is_refused_before_any_download() {
    let mut repo = GitRepo::new();
    repo.write("main.py", "print(1)\n");
    repo.commit("v1");
    repo.tag("v1.0.0");
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    device.ota_expect(&["update"], 0);
    let before = device.tree();

    // 16 folders of 249 bytes and an 80-byte name: a valid 4080-byte release path, which
    // under this target's absolute path is longer than the 4095 bytes Linux takes.
    let folder = "d".repeat(249);
    let name = "f".repeat(80);
    let mut deep = Raw::Blob(F, &name, b"deep\n");
    for _ in 0..16 {
        deep = Raw::Tree(&folder, vec![deep]);
    }
    let tree = repo.raw_tree(&[Raw::Blob(F, "main.py", b"print(2)\n"), deep]);
    repo.commit_raw(&tree, "v2.0.0");
    let absolute = device.target.as_os_str().len() + 1 + 4080;
    assert!(absolute > 4095);

    server.reset_stats();
    let out = device.ota_expect(&["update"], 1);
    let stats = server.stats();
    assert!(
        out.contains(&format!("would be a {absolute}-byte path in this target"))
            && out.contains("Linux takes at most 4095"),
        "the error gives the numbers:\n{out}"
    );
    assert_eq!(stats.raw_requests + stats.asset_requests, 0, "no download");
    assert_eq!(
        stats.requests, stats.api_requests,
        "only the release, its commit and its tree were asked for: {:#?}",
        stats.log
    );
    assert_eq!(device.tree(), before, "nothing changed");
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
    assert_eq!(device.last_error().unwrap()["kind"], "limits");
    assert_eq!(device.last_error().unwrap()["phase"], "plan");

    // `--dry-run` says the same; leaving the path out makes the release installable, and
    // the next release installs normally.
    let out = device.ota_expect(&["update", "--dry-run"], 1);
    assert!(out.contains("-byte path in this target"), "{out}");
    device.configure("", &format!("ignore = [\"{folder}/\"]"));
    device.ota_expect(&["update"], 0);
    assert_eq!(
        std::fs::read_to_string(device.target.join("main.py")).unwrap(),
        "print(2)\n"
    );
    assert!(device.last_error().is_none());
}
