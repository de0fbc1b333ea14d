//! Installs that read the release as one archive (GitHub's `tarball`, served by ota-serve
//! with `git archive`): what lands on disk, the requests it takes, and what happens when
//! the archive differs from the tree, is hostile, or breaks off.

use std::io::Write;
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;
use ota_serve::fault::{Action, Fault};

use crate::util::{Device, GitRepo, serve};

/// Files in the release beyond the few each test names: enough that an install takes the
/// archive.
const FILLER: usize = 16;

/// A release with `FILLER` files in folders, an executable, a symlink, a path longer than
/// tar's 100-byte name field (split into ustar's prefix) and a file name longer than it (a
/// pax header in the archive).
fn release() -> GitRepo {
    let mut repo = GitRepo::new();
    for i in 0..FILLER {
        repo.write(&format!("pkg/m{}/f{i}.py", i % 3), format!("VALUE = {i}\n"));
    }
    let deep = format!("{}/deep.txt", ["long-folder-name"; 8].join("/"));
    repo.write("main.py", "print('v1')\n")
        .write(&deep, "far down\n")
        .write(&format!("{}.txt", "n".repeat(120)), "long name\n")
        .write_exec("bin/run", "#!/bin/sh\necho run\n")
        .symlink("current", "main.py");
    repo.commit("v1");
    repo.tag("v1.0.0");
    repo
}

fn json(device: &Device, args: &[&str]) -> serde_json::Value {
    let out = device.ota(args);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

#[test]
fn a_first_install_reads_the_release_as_one_archive() {
    let mut repo = release();
    let server = serve(repo.path());
    let device = Device::new(&server, "");

    let planned = json(&device, &["update", "--dry-run", "--json"]);
    assert_eq!(planned["transfer"], "archive", "{planned}");
    let planned = device.ota_expect(&["update", "--dry-run"], 0);
    assert!(planned.contains("to download as one archive"), "{planned}");
    server.reset_stats();

    let out = device.ota_expect(&["update"], 0);
    assert!(out.contains("v1.0.0"), "{out}");
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));
    let stats = server.stats();
    let paths: Vec<&str> = stats.log.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(stats.raw_requests, 0, "no file one by one: {paths:#?}");
    assert_eq!(stats.asset_requests, 1, "the archive, once: {paths:#?}");
    assert!(
        stats.requests <= 10,
        "{} requests: {paths:#?}",
        stats.requests
    );
    assert!(
        paths
            .iter()
            .any(|p| p.ends_with("/tarball/") || p.contains("/tarball/")),
        "{paths:#?}"
    );
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());

    // An update that edits one file of twenty downloads that file alone.
    repo.write("main.py", "print('v2')\n");
    repo.commit("v2");
    repo.tag("v2.0.0");
    let planned = json(&device, &["update", "--dry-run", "--json"]);
    assert_eq!(planned["transfer"], "files", "{planned}");
    server.reset_stats();
    device.ota_expect(&["update"], 0);
    assert_eq!(device.tree(), repo.snapshot("v2.0.0"));
    let stats = server.stats();
    assert_eq!((stats.raw_requests, stats.asset_requests), (1, 0));
}

#[test]
fn export_subst_and_export_ignore_files_are_downloaded_one_by_one() {
    let mut repo = release();
    repo.write(
        ".gitattributes",
        "version.txt export-subst\nsecret.txt export-ignore\n",
    )
    .write("version.txt", "commit $Format:%H$\n")
    .write("secret.txt", "not in archives\n");
    repo.commit("attributes");
    repo.tag("v1.1.0");
    let server = serve(repo.path());
    let device = Device::new(&server, "");

    device.ota_expect(&["update"], 0);

    // The tree's bytes, not the archive's: `$Format:%H$` stays as committed.
    assert_eq!(device.tree(), repo.snapshot("v1.1.0"));
    let version = std::fs::read_to_string(device.target.join("version.txt")).unwrap();
    assert_eq!(version, "commit $Format:%H$\n");
    let stats = server.stats();
    let mut one_by_one: Vec<&str> = (stats.log.iter())
        .filter(|r| r.path.starts_with("/raw/"))
        .map(|r| r.path.rsplit('/').next().unwrap())
        .collect();
    one_by_one.sort();
    assert_eq!(one_by_one, ["secret.txt", "version.txt"]);
    assert_eq!(stats.asset_requests, 1);
}

#[test]
fn an_archive_that_breaks_off_leaves_the_rest_to_per_file_downloads() {
    let repo = release();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    // The archive's connection is reset after 600 bytes: a few entries at most arrive.
    server.set_faults(vec![Fault::new("/codeload/*", Action::ResetAfter(600))]);

    device.ota_expect(&["update"], 0);

    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));
    let stats = server.stats();
    assert_eq!(stats.asset_requests, 1, "an archive is not asked for again");
    let files = FILLER as u64 + 4;
    assert!(
        stats.raw_requests > 0 && stats.raw_requests <= files,
        "{} of {files} files one by one",
        stats.raw_requests
    );
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
}

/// A tar entry written by hand, so its name and type can be anything a hostile server sends.
fn raw_entry(tar: &mut Vec<u8>, name: &[u8], kind: u8, link: &[u8], declared: u64, data: &[u8]) {
    let mut header = tar::Header::new_old();
    {
        let old = header.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
    }
    header.set_mode(0o644);
    header.set_size(declared);
    header.set_entry_type(tar::EntryType::new(kind));
    header.set_cksum();
    tar.extend_from_slice(header.as_bytes());
    tar.extend_from_slice(data);
    tar.resize(tar.len().next_multiple_of(512), 0);
}

/// Installs v1, then updates to a v2 that changes every file but `pkg/m0/f0.py`, through
/// an archive made by `entries(tar, folder beside the target)`; checks the tree and that
/// nothing was written beside the target; returns the files downloaded one by one.
fn update_through_archive(entries: impl FnOnce(&mut Vec<u8>, &Path)) -> u64 {
    let mut repo = release();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    device.ota_expect(&["update"], 0);
    let outside = device.target.parent().unwrap().to_owned();
    for i in 1..FILLER {
        repo.write(
            &format!("pkg/m{}/f{i}.py", i % 3),
            format!("VALUE = {i} v2\n"),
        );
    }
    repo.write("main.py", "print('v2')\n");
    repo.commit("v2");
    repo.tag("v2.0.0");
    let mut tar = Vec::new();
    entries(&mut tar, &outside);
    tar.extend_from_slice(&[0; 1024]);
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(&tar).unwrap();
    server.set_faults(vec![Fault::new(
        "/codeload/*",
        Action::Body {
            bytes: gz.finish().unwrap(),
            content_type: "application/x-gzip".into(),
        },
    )]);
    server.reset_stats();

    device.ota_expect(&["update"], 0);

    assert_eq!(device.tree(), repo.snapshot("v2.0.0"));
    let mut around: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    around.sort();
    assert_eq!(around, ["app", "ota.toml"], "nothing beside the target");
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
    let stats = server.stats();
    assert_eq!(stats.asset_requests, 1);
    stats.raw_requests
}

/// Files v2 changes: `FILLER - 1` and `main.py`.
const CHANGED: u64 = FILLER as u64;

#[test]
fn a_hostile_archive_writes_nothing_outside_the_stage() {
    let downloaded = update_through_archive(|tar, outside| {
        let evil = b"print('evil')\n";
        let escape = outside.join("escaped.txt");
        // Names with `..` and an absolute name, a link out of the tree and a file through it.
        raw_entry(tar, b"top/../../escaped.txt", b'0', b"", 14, evil);
        let absolute = escape.to_str().unwrap().as_bytes();
        raw_entry(tar, absolute, b'0', b"", 14, evil);
        let out = outside.to_str().unwrap().as_bytes();
        raw_entry(tar, b"top/pkg", b'2', out, 0, b"");
        raw_entry(tar, b"top/pkg/escaped.txt", b'0', b"", 14, evil);
        // A release path with other bytes; then one right entry, which is taken.
        raw_entry(tar, b"top/main.py", b'0', b"", 14, evil);
        raw_entry(tar, b"top/pkg/m1/f1.py", b'0', b"", 13, b"VALUE = 1 v2\n");
        // A release path whose header claims a gibibyte: the read stops at the most bytes
        // the release can take, and the files after it are downloaded one by one.
        raw_entry(tar, b"top/pkg/m2/f2.py", b'0', b"", 1 << 30, evil);
        raw_entry(tar, b"top/pkg/m0/f3.py", b'0', b"", 13, b"VALUE = 3 v2\n");
    });
    assert_eq!(downloaded, CHANGED - 1, "f1.py alone came from the archive");
}

#[test]
fn a_name_header_over_64_kib_ends_the_archive() {
    let downloaded = update_through_archive(|tar, _| {
        // A pax header of 1 MiB (the tar crate would hold it in memory whole) that names
        // the next entry, a right one: read within 64 KiB, it would be taken.
        let path = "25 path=top/pkg/m1/f1.py\n";
        let comment = format!("1048551 comment={}\n", "a".repeat(1_048_534));
        let records = format!("{comment}{path}");
        assert_eq!(records.len(), 1 << 20);
        raw_entry(
            tar,
            b"top/PaxHeader",
            b'x',
            b"",
            1 << 20,
            records.as_bytes(),
        );
        raw_entry(tar, b"top/junk", b'0', b"", 13, b"VALUE = 1 v2\n");
    });
    assert_eq!(downloaded, CHANGED, "nothing came from the archive");
}

#[test]
fn a_partial_download_a_killed_run_left_is_written_over_from_the_archive() {
    let repo = release();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    // A run killed while the archive was writing main.py left its first bytes in
    // `downloads/` (a streamed archive can stop mid-entry for as long as the server takes).
    let blob = repo.rev("v1.0.0:main.py");
    let downloads = device.target.join(".ota/downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    std::fs::write(downloads.join(&blob), "print(").unwrap();

    device.ota_expect(&["update"], 0);

    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));
    assert!(device.downloads().is_empty(), "{:?}", device.downloads());
    let stats = server.stats();
    assert_eq!(stats.asset_requests, 1, "the archive");
    // main.py came whole from the archive: no request of its own.
    let one_by_one: Vec<_> = (stats.log.iter())
        .filter(|r| r.path.starts_with("/raw/"))
        .map(|r| r.path.as_str())
        .collect();
    assert!(one_by_one.is_empty(), "{one_by_one:?}");
}
