//! Integration tests of `ota-serve`: a real server on 127.0.0.1:0 over repositories written by
//! the real `git` CLI, driven by a real HTTP client. One test binary (see `util`).
#![allow(clippy::unwrap_used)]

mod api;
mod archive;
mod assets;
mod demo;
mod faults;
mod fixture;
mod live;
mod raw;
mod stats;
mod util;

use util::{GitRepo, T0};

/// The SHA a gitlink in the sample repository points at (it need not exist).
pub(crate) const SUBMODULE_SHA: &str = "1111111111111111111111111111111111111111";

/// The shared sample repository, written with the `git` CLI:
///
/// - `c1` (tag `v1.0.0`, lightweight): README.md, an executable, an empty file, a symlink,
///   nested directories, a binary file, a file with a space, a submodule;
/// - `c2` (tag `v1.1.0`, annotated "Release 1.1", tagger date T0+10; tag `v1.1.1` is a tag of
///   that tag): README.md changed; branch `feature/x` adds `feature.txt` on top of it;
/// - `c3` on `main` (tag `v2.0.0-rc.1` annotated as a prerelease; tag `nightly` is not a
///   version): README.md changed again.
///
/// All commits have the same committer time, so release order comes from the version tie-break.
pub(crate) struct Sample {
    pub(crate) git: GitRepo,
    pub(crate) c1: String,
    pub(crate) c2: String,
    pub(crate) c3: String,
    pub(crate) feature: String,
}

pub(crate) fn sample() -> Sample {
    let git = GitRepo::new();
    git.write("README.md", b"hello\n");
    git.write("bin/run.sh", b"#!/bin/sh\necho hi\n");
    git.write("empty.txt", b"");
    git.write("docs/guide/intro.md", b"intro\n");
    git.write("data.bin", [0, 159, 146, 150, 255, 0, 1]);
    git.write("with space.txt", b"spaced\n");
    std::os::unix::fs::symlink("README.md", git.path().join("link")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        git.path().join("bin/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    git.run(&["add", "-A"]);
    git.run(&[
        "update-index",
        "--add",
        "--cacheinfo",
        &format!("160000,{SUBMODULE_SHA},vendor/sub"),
    ]);
    // An empty directory keeps git from treating the unpopulated submodule as deleted.
    std::fs::create_dir_all(git.path().join("vendor/sub")).unwrap();
    git.run(&["commit", "-q", "-m", "first"]);
    let c1 = git.rev("HEAD");
    git.run(&["tag", "v1.0.0"]);

    git.write("README.md", b"hello v2\n");
    git.run(&["commit", "-q", "-am", "second"]);
    let c2 = git.rev("HEAD");
    git.run_at(T0 + 10, &["tag", "-a", "v1.1.0", "-m", "Release 1.1"]);
    git.run(&["tag", "-a", "v1.1.1", "v1.1.0", "-m", "tag of tag"]);

    git.run(&["checkout", "-q", "-b", "feature/x"]);
    git.write("feature.txt", b"feature\n");
    let feature = git.commit_all("feature", T0);
    git.run(&["checkout", "-q", "main"]);

    git.write("README.md", b"hello v3\n");
    git.run(&["commit", "-q", "-am", "third"]);
    let c3 = git.rev("HEAD");
    git.run(&["tag", "-a", "v2.0.0-rc.1", "-m", "Prerelease: try it"]);
    git.run(&["tag", "nightly"]);
    Sample {
        git,
        c1,
        c2,
        c3,
        feature,
    }
}
