//! `RepoWriter`, cross-checked with the `git` CLI and served.

use std::collections::BTreeMap;

use ota_serve::fixture::{FileSpec, RepoWriter};
use test_git::run_in as git;

use crate::util::{T0, get, serve};

fn file(bytes: &[u8]) -> FileSpec {
    FileSpec::File {
        bytes: bytes.to_vec(),
        exec: false,
    }
}

fn snapshot() -> BTreeMap<String, FileSpec> {
    let mut files = BTreeMap::new();
    files.insert("README.md".into(), file(b"what is up, doc?"));
    files.insert("empty".into(), file(b""));
    files.insert(
        "bin/run".into(),
        FileSpec::File {
            bytes: b"#!/bin/sh\n".to_vec(),
            exec: true,
        },
    );
    files.insert("a/b/c/deep.txt".into(), file(b"deep\n"));
    files.insert("a/b.txt".into(), file(b"b\n"));
    files.insert(
        "a-b".into(),
        file(b"sorts between a and a/ in git's order\n"),
    );
    files.insert("link".into(), FileSpec::Symlink("README.md".into()));
    files.insert(
        "vendor/lib".into(),
        FileSpec::Submodule("2222222222222222222222222222222222222222".into()),
    );
    files
}

#[test]
fn writes_what_git_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("repo.git");
    let mut writer = RepoWriter::init(&path, true).unwrap();
    let c1 = writer.commit("main", &snapshot(), "first", T0).unwrap();
    let mut second = snapshot();
    second.insert("README.md".into(), file(b"changed\n"));
    second.remove("empty");
    let c2 = writer
        .commit("main", &second, "second\n\nbody", T0 + 5)
        .unwrap();
    writer.tag_lightweight("v1.0.0", &c1).unwrap();
    let tag = writer
        .tag_annotated("v2.0.0", &c2, "Release two", T0 + 7)
        .unwrap();
    let tag_of_tag = writer
        .tag_annotated("v2.0.1", &tag, "again", T0 + 8)
        .unwrap();
    writer
        .commit("feature/y", &snapshot(), "branch", T0)
        .unwrap();

    git(&path, &["fsck", "--strict", "--no-dangling"]);
    assert_eq!(git(&path, &["rev-parse", "main"]), c2);
    assert_eq!(git(&path, &["rev-parse", "main~1"]), c1);
    assert_eq!(git(&path, &["rev-parse", "v1.0.0"]), c1);
    assert_eq!(git(&path, &["rev-parse", "v2.0.0^{commit}"]), c2);
    assert_eq!(git(&path, &["rev-parse", "v2.0.1"]), tag_of_tag);
    assert_eq!(git(&path, &["rev-parse", "v2.0.1^{commit}"]), c2);
    assert_eq!(git(&path, &["symbolic-ref", "HEAD"]), "refs/heads/main");
    assert_eq!(
        git(&path, &["log", "-1", "--format=%an <%ae> %at %ct", &c1]),
        format!("ota fixture <fixture@ota.invalid> {T0} {T0}")
    );
    assert_eq!(
        git(&path, &["log", "-1", "--format=%B", &c2]),
        "second\n\nbody"
    );
    assert_eq!(git(&path, &["cat-file", "-t", &tag]), "tag");
    let tag_text = git(&path, &["cat-file", "-p", &tag]);
    assert!(tag_text.contains(&format!("object {c2}\ntype commit\ntag v2.0.0\ntagger ota fixture <fixture@ota.invalid> {} +0000\n\nRelease two", T0 + 7)), "{tag_text}");
    assert!(git(&path, &["cat-file", "-p", &tag_of_tag]).contains("type tag"));

    let listing = git(&path, &["ls-tree", "-r", "-t", &c1]);
    let expected = "\
040000 tree TREE\ta
100644 blob BLOB\ta/b.txt
040000 tree TREE\ta/b
040000 tree TREE\ta/b/c
100644 blob BLOB\ta/b/c/deep.txt
100644 blob BLOB\ta-b
100644 blob BLOB\tREADME.md
040000 tree TREE\tbin
100755 blob BLOB\tbin/run
100644 blob BLOB\tempty
120000 blob BLOB\tlink
040000 tree TREE\tvendor
160000 commit 2222222222222222222222222222222222222222\tvendor/lib";
    let normalised: Vec<String> = listing
        .lines()
        .map(|l| {
            let (meta, p) = l.split_once('\t').unwrap();
            let parts: Vec<&str> = meta.split(' ').collect();
            let sha = match parts[1] {
                "tree" => "TREE",
                "blob" => "BLOB",
                _ => parts[2],
            };
            format!("{} {} {sha}\t{p}", parts[0], parts[1])
        })
        .collect();
    // git sorts "README.md" before lower case; compare as sets of lines in git's own order.
    let mut want: Vec<&str> = expected.lines().collect();
    let mut got: Vec<&str> = normalised.iter().map(String::as_str).collect();
    want.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, want);
    // The blob id of a known content (test vector from GitHub's docs).
    assert_eq!(
        git(&path, &["rev-parse", &format!("{c1}:README.md")]),
        "bd9dbf5aae1a3862dd1526723246b20206e5fc37"
    );
    assert_eq!(
        git(&path, &["rev-parse", &format!("{c1}:empty")]),
        "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    );
    assert_eq!(
        git(&path, &["cat-file", "-p", &format!("{c1}:link")]),
        "README.md"
    );

    // Deterministic: the same input gives the same ids elsewhere.
    let other = tempfile::tempdir().unwrap();
    let mut again = RepoWriter::init(other.path(), false).unwrap();
    assert_eq!(again.commit("main", &snapshot(), "first", T0).unwrap(), c1);

    // And the server reads it.
    let server = serve(&path);
    let api = format!("{}/repos/o/r", server.api_url());
    assert_eq!(
        get(&format!("{api}/releases/latest"), &[]).json()["tag_name"],
        "v2.0.1"
    );
    assert_eq!(
        get(
            &format!("{}/o/r/v1.0.0/a/b/c/deep.txt", server.raw_url()),
            &[]
        )
        .text(),
        "deep\n"
    );
    assert_eq!(
        get(&format!("{}/o/r/feature/y/link", server.raw_url()), &[]).text(),
        "README.md"
    );
}

#[test]
fn open_set_head_and_non_bare() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut writer = RepoWriter::init(dir.path(), false).unwrap();
        writer.commit("main", &snapshot(), "first", T0).unwrap();
    }
    let git_dir = dir.path().join(".git");
    let mut writer = RepoWriter::open(dir.path()).unwrap();
    let c = writer
        .commit("stable", &snapshot(), "stable", T0 + 1)
        .unwrap();
    writer.set_head("stable").unwrap();
    git(&git_dir, &["fsck", "--strict", "--no-dangling"]);
    assert_eq!(
        git(&git_dir, &["symbolic-ref", "HEAD"]),
        "refs/heads/stable"
    );
    assert_eq!(git(&git_dir, &["rev-parse", "HEAD"]), c);
    let server = serve(dir.path());
    assert_eq!(
        get(&format!("{}/repos/o/r", server.api_url()), &[]).json()["default_branch"],
        "stable"
    );
}

#[test]
fn many_files_are_written_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = RepoWriter::init(dir.path(), true).unwrap();
    let mut files = BTreeMap::new();
    for i in 0..1000 {
        files.insert(
            format!("d{}/e{}/f{i}.txt", i % 10, i % 7),
            file(format!("file {i}\n").as_bytes()),
        );
    }
    let started = std::time::Instant::now();
    let c = writer.commit("main", &files, "many", T0).unwrap();
    assert!(started.elapsed().as_secs() < 20);
    let count = git(dir.path(), &["ls-tree", "-r", "--name-only", &c])
        .lines()
        .count();
    assert_eq!(count, 1000);
}

#[test]
fn bad_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = RepoWriter::init(dir.path(), true).unwrap();
    for bad in [
        "",
        "a//b",
        "../x",
        "a/./b",
        ".git/config",
        "a/",
        "/abs",
        "nul\0byte",
    ] {
        let mut files = BTreeMap::new();
        files.insert(bad.to_string(), file(b"x"));
        assert!(writer.commit("main", &files, "bad", T0).is_err(), "{bad:?}");
    }
    let mut clash = BTreeMap::new();
    clash.insert("a".to_string(), file(b"x"));
    clash.insert("a/b".to_string(), file(b"y"));
    assert!(writer.commit("main", &clash, "clash", T0).is_err());
    let mut sub = BTreeMap::new();
    sub.insert("s".to_string(), FileSpec::Submodule("nothex".into()));
    assert!(writer.commit("main", &sub, "bad sub", T0).is_err());
    assert!(
        writer
            .commit("bad..name", &snapshot(), "bad branch", T0)
            .is_err()
    );

    let c = writer.commit("main", &snapshot(), "ok", T0).unwrap();
    writer.tag_lightweight("v1", &c).unwrap();
    writer.tag_lightweight("v1", &c).unwrap();
    let other = writer
        .commit("main", &BTreeMap::new(), "other", T0)
        .unwrap();
    assert!(
        writer.tag_lightweight("v1", &other).is_err(),
        "tags are not moved"
    );
    writer.tag_annotated("a1", &c, "one", T0).unwrap();
    assert!(
        writer.tag_annotated("a1", &c, "two", T0).is_err(),
        "tags are not moved"
    );
    assert!(
        writer
            .tag_annotated("v2", "0000000000000000000000000000000000000000", "x", T0)
            .is_err()
    );
    assert!(writer.tag_lightweight("v3", "abc").is_err());
    // An empty snapshot is a commit with the empty tree.
    assert_eq!(
        git(dir.path(), &["rev-parse", &format!("{other}^{{tree}}")]),
        "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
    );
    git(dir.path(), &["fsck", "--strict", "--no-dangling"]);
}
