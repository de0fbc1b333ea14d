//! Resume across runs: an `ota update` stopped mid-download (SIGKILL, Ctrl-C) leaves its
//! downloads in `.ota/downloads/`, and the next run takes them up: complete files are not
//! downloaded again, a partial file only from where it stopped (one `Range` request), for
//! the same release or another one that wants the same content. Bytes kept from the stopped
//! run are verified before use; damaged ones are downloaded again whole. Real binary, real
//! `ota-serve` on loopback, real filesystem.

use std::process::Child;
use std::time::{Duration, Instant};

use ota_serve::fault::{Action, Fault};
use ota_serve::{RequestClass, RequestRecord, Server};

use crate::util::{Device, GitRepo, noise, serve};

/// The big file's size: incompressible, so offsets on the wire are offsets in the file.
const BIG: usize = 2_000_000;

/// Release v1.0.0: a big file, two small ones.
fn v1() -> (GitRepo, Server, Device) {
    let mut repo = GitRepo::new();
    repo.write("data/big.bin", noise(BIG, 7))
        .write("main.py", "print('v1')\n")
        .write("lib/util.py", "def f():\n    return 1\n");
    repo.commit("v1");
    repo.tag("v1.0.0");
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    (repo, server, device)
}

/// Starts `ota update` with the big file throttled, and waits until at least `at_least`
/// of its bytes are in `downloads/`.
fn start_throttled(server: &Server, device: &Device, at_least: u64) -> Child {
    start_slowed(server, device, "*/big.bin", |d| biggest(d) >= at_least)
}

/// Starts `ota update` with requests matching `pattern` slowed to 200 KB/s, and waits
/// until `ready(device)` (its output drained meanwhile, so it never blocks).
fn start_slowed(
    server: &Server,
    device: &Device,
    pattern: &str,
    ready: impl Fn(&Device) -> bool,
) -> Child {
    server.set_faults(vec![Fault {
        pattern: pattern.into(),
        action: Action::Bandwidth(200_000),
        skip: 0,
        times: None,
    }]);
    let mut child = device.spawn_ota(&["update"]);
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        std::thread::spawn(move || std::io::copy(&mut { pipe }, &mut std::io::sink()));
    }
    // A guard against a hang, not a timing assertion.
    let give_up = Instant::now() + Duration::from_secs(120);
    while !ready(device) {
        assert!(Instant::now() < give_up, "the download never got going");
        assert!(child.try_wait().unwrap().is_none(), "ota ended on its own");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// The size of the largest file in `downloads/` (the big file's download).
fn biggest(device: &Device) -> u64 {
    device
        .downloads()
        .iter()
        .map(|(_, len)| *len)
        .max()
        .unwrap_or(0)
}

/// Stops `child` with `signal` (as `kill -SIGNAL` would) and reaps it.
fn stop(mut child: Child, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(!exit.success(), "ota was stopped by {signal}: {exit:?}");
}

/// Runs `ota update` again with the faults gone and the counters reset, and checks that it
/// installs `tag` exactly, leaving nothing behind and nothing in `downloads/`.
fn finish(repo: &GitRepo, server: &Server, device: &Device, tag: &str) -> String {
    server.clear_faults();
    server.reset_stats();
    let out = device.ota_expect(&["update"], 0);
    assert_eq!(device.tree(), repo.snapshot(tag), "{out}");
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
    assert!(device.downloads().is_empty(), "{:?}", device.downloads());
    out
}

/// The requests of the last run for release files (the raw host), in order.
fn file_requests(server: &Server) -> Vec<RequestRecord> {
    let stats = server.stats();
    stats
        .log
        .into_iter()
        .filter(|r| r.class == RequestClass::Raw)
        .collect()
}

/// Where a ranged request starts.
fn range_start(r: &RequestRecord) -> u64 {
    let range = r.range.as_deref().expect("a ranged request");
    range["bytes=".len()..]
        .trim_end_matches('-')
        .parse()
        .unwrap()
}

#[test]
fn an_install_killed_mid_download_downloads_only_the_rest() {
    let (repo, server, device) = v1();
    let child = start_throttled(&server, &device, 300_000);
    stop(child, "KILL");
    // Nothing is installed; the downloads wait: the two small files whole, the big one
    // partly.
    assert!(!device.target.join("main.py").exists());
    let kept = device.downloads();
    assert_eq!(kept.len(), 3, "{kept:?}");
    let partial = biggest(&device);
    assert!((300_000..BIG as u64).contains(&partial), "{kept:?}");

    finish(&repo, &server, &device, "v1.0.0");
    // Only the rest of the big file crossed the network: one ranged request from where
    // the killed run stopped; the complete small files were not asked for again.
    let requests = file_requests(&server);
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert!(requests[0].path.ends_with("data/big.bin"), "{requests:#?}");
    assert_eq!(range_start(&requests[0]), partial);
    let body: u64 = requests.iter().map(|r| r.body_bytes).sum();
    assert_eq!(body, BIG as u64 - partial);
    eprintln!(
        "resume: killed at {partial} of {BIG} bytes; the second run downloaded {body} bytes of files \
         ({} bytes on the wire, {} requests in all)",
        server.stats().wire_bytes_out,
        server.stats().requests
    );
}

#[test]
fn after_ctrl_c_an_update_to_another_release_reuses_what_it_wants() {
    let (mut repo, server, device) = v1();
    let child = start_throttled(&server, &device, 200_000);
    stop(child, "INT");
    let partial = biggest(&device);
    assert!(partial < BIG as u64);
    // A new release meanwhile: main.py changes, the big file and lib/util.py do not.
    repo.write("main.py", "print('v2')\n");
    repo.commit("v2");
    repo.tag("v2.0.0");

    let out = finish(&repo, &server, &device, "v2.0.0");
    let mut paths: Vec<String> = file_requests(&server)
        .iter()
        .map(|r| r.path.rsplit('/').next().unwrap().to_owned())
        .collect();
    paths.sort();
    // v2's main.py is new; the big file resumes; lib/util.py was already downloaded.
    assert_eq!(paths, ["big.bin", "main.py"], "{out}");
    let big = file_requests(&server)
        .into_iter()
        .find(|r| r.path.ends_with("big.bin"))
        .unwrap();
    assert_eq!(range_start(&big), partial);
}

#[test]
fn bytes_damaged_while_stopped_are_downloaded_again_whole() {
    let (repo, server, device) = v1();
    let child = start_throttled(&server, &device, 200_000);
    stop(child, "KILL");
    // A power cut can leave zeros where the data did not reach the disk.
    let (name, partial) = device
        .downloads()
        .into_iter()
        .max_by_key(|(_, len)| *len)
        .unwrap();
    let path = device.target.join(".ota/downloads").join(&name);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1000..2000].fill(0);
    std::fs::write(&path, bytes).unwrap();

    let out = finish(&repo, &server, &device, "v1.0.0");
    let big: Vec<RequestRecord> = file_requests(&server)
        .into_iter()
        .filter(|r| r.path.ends_with("big.bin"))
        .collect();
    // The resume is tried, fails verification, and the file comes again from byte 0.
    assert_eq!(big.len(), 2, "{big:#?}");
    assert_eq!(range_start(&big[0]), partial);
    assert!(big[1].range.is_none(), "{big:#?}");
    assert!(out.contains("downloading the whole file again"), "{out}");
}

#[test]
fn downloads_left_private_by_a_kill_are_installed_with_the_release_s_mode() {
    use std::os::unix::fs::PermissionsExt;
    let (repo, server, device) = v1();
    let child = start_throttled(&server, &device, 100_000);
    stop(child, "KILL");
    // A kill between creating a file (mode 0600, so that no one reads it half made) and
    // giving it its mode leaves it so; here every download, whole or not.
    let kept = device.downloads();
    assert_eq!(kept.len(), 3, "{kept:?}");
    for (name, _) in &kept {
        let path = device.target.join(".ota/downloads").join(name);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    let out = finish(&repo, &server, &device, "v1.0.0");
    for path in ["main.py", "lib/util.py", "data/big.bin"] {
        let mode = std::fs::metadata(device.target.join(path))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o644, "{path}: {out}");
    }
}

#[test]
fn downloads_the_next_release_does_not_want_are_removed() {
    let (mut repo, server, device) = v1();
    let child = start_throttled(&server, &device, 100_000);
    stop(child, "KILL");
    assert_eq!(device.downloads().len(), 3);
    // The next release drops the big file and changes main.py: only lib/util.py's
    // download is of use.
    repo.remove("data/big.bin");
    repo.write("main.py", "print('v2')\n");
    repo.commit("v2");
    repo.tag("v2.0.0");

    finish(&repo, &server, &device, "v2.0.0");
    let paths: Vec<String> = file_requests(&server)
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(paths.len(), 1, "{paths:?}");
    assert!(paths[0].ends_with("/main.py"), "{paths:?}");
}

#[test]
fn a_failed_before_update_keeps_the_downloads_for_the_next_run() {
    let (repo, server, device) = v1();
    crate::util::tables(&device, "[before_update]\ncommand = \"exit 3\"\n");
    let out = device.ota_expect(&["update"], 1);
    assert!(!device.target.join("main.py").exists(), "{out}");
    let kept = device.downloads();
    assert_eq!(kept.len(), 3, "{kept:?}");
    assert!(kept.iter().any(|(_, len)| *len == BIG as u64), "{kept:?}");

    device.edit_config("[before_update]\ncommand = \"exit 3\"\n", "");
    server.reset_stats();
    let out = device.ota_expect(&["update"], 0);
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"), "{out}");
    // Every file was already here, verified again: not one file request.
    assert_eq!(file_requests(&server).len(), 0, "{out}");
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
    assert!(device.downloads().is_empty(), "{:?}", device.downloads());
}

/// A release of 40 incompressible files of 50 KB (a first install reads them as one
/// archive), and a device whose first `ota update` was killed once `whole` of them were in
/// `downloads/`, and part of the next.
const ARCHIVE_FILES: usize = 40;
const ARCHIVE_FILE_SIZE: usize = 50_000;

fn archive_install_killed_after(whole: usize) -> (GitRepo, Server, Device) {
    let partial = |d: &Device| {
        (d.downloads().iter()).any(|(_, len)| *len > 0 && *len < ARCHIVE_FILE_SIZE as u64)
    };
    let mut repo = GitRepo::new();
    for i in 0..ARCHIVE_FILES {
        repo.write(
            &format!("data/f{i:02}.bin"),
            noise(ARCHIVE_FILE_SIZE, i as u64),
        );
    }
    repo.commit("v1");
    repo.tag("v1.0.0");
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    let child = start_slowed(&server, &device, "/codeload/*", |d| {
        held_whole(d) >= whole && partial(d)
    });
    stop(child, "KILL");
    server.clear_faults();
    (repo, server, device)
}

/// Files in `downloads/` of a whole archive file's size.
fn held_whole(device: &Device) -> usize {
    (device.downloads().iter())
        .filter(|(_, len)| *len == ARCHIVE_FILE_SIZE as u64)
        .count()
}

fn planned_transfer(device: &Device) -> serde_json::Value {
    let planned = device.ota(&["update", "--dry-run", "--json"]);
    assert!(planned.status.success(), "{planned:?}");
    let planned: serde_json::Value = serde_json::from_slice(&planned.stdout).unwrap();
    planned["transfer"].clone()
}

#[test]
fn an_archive_install_stopped_midway_finishes_file_by_file() {
    let (repo, server, device) = archive_install_killed_after(30);
    let held = held_whole(&device);
    let kept: u64 = device.downloads().iter().map(|(_, len)| len).sum();

    // What the archive brought stays: the next run downloads only the rest, one by one,
    // and says so.
    assert_eq!(planned_transfer(&device), "files");
    server.reset_stats();
    device.ota_expect(&["update"], 0);
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));
    assert!(device.downloads().is_empty(), "{:?}", device.downloads());
    let stats = server.stats();
    assert_eq!(stats.asset_requests, 0, "the archive is not read again");
    let requests = file_requests(&server);
    assert!(requests.len() <= ARCHIVE_FILES - held, "{requests:#?}");
    // The bytes missing from `downloads/`, and gzip's few bytes of framing per file.
    let body: u64 = requests.iter().map(|r| r.body_bytes).sum();
    let missing = (ARCHIVE_FILES * ARCHIVE_FILE_SIZE) as u64 - kept;
    assert!(
        body <= missing + 100 * requests.len() as u64,
        "{body} bytes of files for {missing} missing"
    );
}

#[test]
fn an_archive_install_stopped_early_reads_the_archive_again() {
    let (repo, server, device) = archive_install_killed_after(1);
    // Most of the release is still missing: the archive again, which writes over the
    // partial file the killed run left (its whole files are read past).
    assert_eq!(planned_transfer(&device), "archive");
    server.reset_stats();
    device.ota_expect(&["update"], 0);
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));
    assert!(device.downloads().is_empty(), "{:?}", device.downloads());
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
    assert_eq!(server.stats().asset_requests, 1);
}
