//! A bad network, on real loopback sockets: `ota-serve` misbehaves on purpose, and every
//! fault ends either in the exact new tree, or in the exact old tree with `last_error.json`
//! naming the cause and nothing temporary left. The table in docs/network.md lists each
//! fault, the behaviour, and the test here that proves it.

use std::time::Duration;

use ota_serve::Server;
use ota_serve::fault::{Action, Fault};

use crate::util::{Device, GitRepo, Tree, noise, serve};

/// A release v1 with a 300 KB file, installed on a device; then v2 changes that file.
struct Setup {
    repo: GitRepo,
    server: Server,
    device: Device,
    old: Tree,
    new: Tree,
}

/// The big file's size in v2.
const BIG: usize = 300_000;

/// The big file of `version`: incompressible, so that byte offsets on the wire are offsets
/// in the file.
fn big(version: u8) -> Vec<u8> {
    noise(BIG, u64::from(version))
}

fn setup(extra: &str) -> Setup {
    let mut repo = GitRepo::new();
    repo.write("data/big.bin", big(1)).write("main.py", "v1\n");
    repo.commit("v1");
    repo.tag("v1.0.0");
    let server = serve(repo.path());
    let device = Device::new(&server, extra);
    device.ota_expect(&["update"], 0);
    let old = repo.snapshot("v1.0.0");
    repo.write("data/big.bin", big(2)).write("main.py", "v2\n");
    repo.commit("v2");
    repo.tag("v2.0.0");
    let new = repo.snapshot("v2.0.0");
    server.reset_stats();
    Setup {
        repo,
        server,
        device,
        old,
        new,
    }
}

fn fault(pattern: &str, action: Action, times: Option<u32>) -> Fault {
    Fault {
        pattern: pattern.into(),
        action,
        skip: 0,
        times,
    }
}

impl Setup {
    /// Runs `ota update` and expects the exact new tree.
    fn completes(&self) -> String {
        let out = self.device.ota_expect(&["update"], 0);
        assert_eq!(self.device.tree(), self.new, "{out}");
        assert!(
            self.device.leftovers().is_empty(),
            "{:?}",
            self.device.leftovers()
        );
        assert!(self.device.downloads().is_empty(), "{out}");
        assert!(self.device.last_error().is_none());
        out
    }

    /// Runs `ota update` and expects a clean failure: the exact old tree, `last_error.json`
    /// of `kind`, nothing temporary left (but `downloads/`, kept for the next run: never a
    /// file that failed its digests). Returns the output.
    fn fails_cleanly(&self, kind: &str) -> String {
        let out = self.device.ota_expect(&["update"], 1);
        assert_eq!(self.device.tree(), self.old, "{out}");
        assert!(
            self.device.leftovers().is_empty(),
            "{:?}",
            self.device.leftovers()
        );
        let error = self
            .device
            .last_error()
            .expect("last_error.json is written");
        assert_eq!(error["kind"], kind, "{error}");
        out
    }

    /// Requests for the big file, in order.
    fn big_requests(&self) -> Vec<ota_serve::RequestRecord> {
        self.server
            .stats()
            .log
            .into_iter()
            .filter(|r| r.path.ends_with("data/big.bin"))
            .collect()
    }
}

#[test]
fn a_file_survives_ten_consecutive_connection_resets() {
    let s = setup("");
    s.server.set_faults(vec![fault(
        "*/big.bin",
        Action::ResetAfter(20_000),
        Some(10),
    )]);
    let out = s.completes();
    let requests = s.big_requests();
    assert_eq!(requests.len(), 11, "ten drops, ten resumes: {requests:#?}");
    // Each resume asks for the bytes after those already staged: further every time (the
    // first answer may be gzip-encoded, so its 20,000 wire bytes decode to a little less).
    let mut last = 0;
    for (i, r) in requests.iter().enumerate().skip(1) {
        let range = r.range.as_deref().unwrap_or_default();
        assert!(
            range.starts_with("bytes="),
            "resume {i} uses a range: {r:?}"
        );
        let from: u64 = range["bytes=".len()..]
            .trim_end_matches('-')
            .parse()
            .unwrap();
        assert!(
            from > last && from >= 19_000 * i as u64,
            "resume {i} starts at {from}"
        );
        last = from;
    }
    assert!(
        out.contains("resuming at byte"),
        "every drop is logged: {out}"
    );
}

#[test]
fn a_truncated_body_is_resumed() {
    let s = setup("");
    s.server
        .set_faults(vec![fault("*/big.bin", Action::Truncate(100_000), Some(2))]);
    s.completes();
    assert_eq!(s.big_requests().len(), 3);
}

#[test]
fn a_stall_longer_than_the_read_timeout_is_cut_and_resumed() {
    let s = setup("");
    s.device
        .edit_config("http_timeout_sec = 5", "http_timeout_sec = 1");
    s.server.set_faults(vec![fault(
        "*/big.bin",
        Action::Stall {
            after: 50_000,
            pause: Duration::from_secs(4),
        },
        Some(1),
    )]);
    let out = s.completes();
    assert!(
        out.contains("timed out") || out.contains("resuming"),
        "{out}"
    );
    assert_eq!(s.big_requests().len(), 2);
}

#[test]
fn a_flipped_byte_stops_the_update_and_names_both_digests() {
    let s = setup("");
    s.server
        .set_faults(vec![fault("*/big.bin", Action::FlipByte(12_345), None)]);
    let out = s.fails_cleanly("integrity");
    let error = s.device.last_error().unwrap();
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("data/big.bin"), "{message}");
    let blob = s.repo.run(&["rev-parse", "v2.0.0:data/big.bin"]);
    assert!(
        message.contains(blob.trim()),
        "the expected digest is named: {message}"
    );
    // The bytes that failed their digest are not kept for the next run.
    let kept = s.device.downloads();
    assert!(kept.iter().all(|(name, _)| name != blob.trim()), "{kept:?}");
    assert!(
        message.matches(|c: char| c.is_ascii_hexdigit()).count() >= 80,
        "{message}"
    );
    assert!(
        out.contains("integrity") || out.contains("does not match"),
        "{out}"
    );
}

#[test]
fn server_errors_are_retried_with_backoff() {
    for status in [500, 502, 503] {
        let s = setup("");
        s.server.set_faults(vec![
            fault("*/releases/latest", Action::Status(status), Some(2)),
            fault("*/big.bin", Action::Status(status), Some(2)),
        ]);
        let out = s.completes();
        assert!(
            out.contains(&format!("HTTP {status}")) && out.contains("retry"),
            "{out}"
        );
    }
}

#[test]
fn a_persistent_server_error_fails_cleanly() {
    let s = setup("");
    s.server
        .set_faults(vec![fault("/raw/*", Action::Status(503), None)]);
    let out = s.fails_cleanly("network");
    assert!(out.contains("503"), "{out}");
    // retries = 2 in the test config: three attempts of the first file, then stop.
    let raw = s
        .server
        .stats()
        .log
        .iter()
        .filter(|r| r.path.starts_with("/raw/"))
        .count();
    assert!((3..=6).contains(&raw), "{raw} raw requests");
}

#[test]
fn client_errors_are_not_retried() {
    let s = setup("");
    s.server
        .set_faults(vec![fault("*/releases/latest", Action::Status(401), None)]);
    let out = s.fails_cleanly("protocol");
    assert!(out.contains("401"), "{out}");
    assert_eq!(s.server.stats().requests, 1, "no retry of a 401");
}

#[test]
fn a_429_with_retry_after_is_waited_out() {
    let s = setup("");
    s.server.set_faults(vec![fault(
        "*/releases/latest",
        Action::RateLimit {
            status: 429,
            reset_in: Duration::from_secs(1),
            retry_after: Some(Duration::from_secs(1)),
        },
        Some(1),
    )]);
    let out = s.completes();
    assert!(out.contains("rate limit"), "{out}");
}

#[test]
fn a_rate_limit_beyond_max_wait_stops_and_says_when_it_resets() {
    let s = setup("");
    s.server.set_faults(vec![fault(
        "*/releases/latest",
        Action::RateLimit {
            status: 403,
            reset_in: Duration::from_secs(3_000),
            retry_after: None,
        },
        None,
    )]);
    let out = s.fails_cleanly("rate_limited");
    assert!(out.contains("resets at"), "{out}");
    assert_eq!(s.server.stats().requests, 1, "no retry before the reset");
    let status = s.device.ota_expect(&["status"], 0);
    assert!(
        status.contains("rate limit:  0 of"),
        "the quota is shown: {status}"
    );
}

#[test]
fn a_wrong_content_length_is_caught_and_the_file_completes() {
    for delta in [-1000, 1000] {
        let s = setup("");
        s.server.set_faults(vec![fault(
            "*/big.bin",
            Action::WrongLength(delta),
            Some(1),
        )]);
        let out = s.completes();
        let requests = s.big_requests();
        // The fault fired: the first answer's head declared a length `delta` off its body.
        let lied = &requests[0];
        assert_eq!(lied.faults, [format!("wrong-length:{delta}")], "{lied:?}");
        let declared = lied.content_length.expect("the head declares a length");
        assert_eq!(
            declared as i64,
            lied.body_bytes as i64 + delta,
            "the declared length is off by {delta}: {lied:?}"
        );
        if delta < 0 {
            // Short by 1000 bytes: the client saw the body end early and fetched the rest.
            assert_eq!(requests.len(), 2, "{requests:#?}");
            assert!(requests[1].range.is_some(), "{:?}", requests[1]);
            assert!(out.contains("resuming at byte"), "{out}");
        } else {
            // Every byte arrived before the connection closed: the digest accepted them.
            assert_eq!(requests.len(), 1, "{requests:#?}");
        }
    }
}

#[test]
fn a_body_that_keeps_lying_about_its_length_fails_cleanly() {
    let s = setup("");
    s.server
        .set_faults(vec![fault("*/big.bin", Action::WrongLength(-1000), None)]);
    // Every answer stops 1000 bytes short; the range that resumes it is short too, so no
    // attempt brings the last bytes... but each brings some: progress keeps it going until
    // the tail is shorter than 1000 bytes and nothing more arrives.
    s.fails_cleanly("network");
}

#[test]
fn raw_redirects_are_followed_without_the_token() {
    let s = setup("");
    s.device
        .configure("source", "token = \"ghp_loopbacktesttoken0123456789\"");
    let mirror = serve(s.repo.path());
    let to = mirror.addr().to_string();
    s.server
        .set_faults(vec![fault("/raw/*", Action::Redirect { to }, None)]);
    s.completes();
    let own = s.server.stats();
    assert!(
        own.log.iter().all(|r| r.authorized),
        "the configured host gets the token"
    );
    let other = mirror.stats();
    assert!(!other.log.is_empty(), "the redirect was followed");
    assert!(
        other.log.iter().all(|r| !r.authorized),
        "another host never gets it: {:#?}",
        other.log
    );
}

#[test]
fn a_non_json_answer_is_a_clear_error() {
    let s = setup("");
    s.server.set_faults(vec![fault(
        "*/releases/latest",
        Action::Body {
            bytes: b"<html><body>Captive portal: please log in</body></html>".to_vec(),
            content_type: "text/html".into(),
        },
        None,
    )]);
    let out = s.fails_cleanly("protocol");
    assert!(
        out.contains("not the JSON expected") && out.contains("text/html"),
        "{out}"
    );
    assert!(out.contains("Captive portal"), "shows what arrived: {out}");
}

#[test]
fn latency_and_a_bandwidth_cap_only_slow_things_down() {
    let s = setup("");
    s.server.set_faults(vec![
        fault("*", Action::Latency(Duration::from_millis(30)), None),
        fault("*", Action::Bandwidth(1_000_000), None),
    ]);
    s.completes();
    // Both faults fired, on every request, the big file's included.
    let log = s.server.stats().log;
    assert!(log.len() > 2, "{log:#?}");
    for r in &log {
        assert_eq!(r.faults, ["latency:30ms", "bandwidth:1000000"], "{r:?}");
    }
    let big: u64 = s.big_requests().iter().map(|r| r.body_bytes).sum();
    assert!(
        big >= BIG as u64 / 2,
        "the big file went through the cap: {big} bytes"
    );
}

#[test]
fn the_update_deadline_stops_a_trickle() {
    let s = setup("");
    s.device.configure("network", "update_timeout_sec = 2");
    s.server
        .set_faults(vec![fault("*/big.bin", Action::Bandwidth(20_000), None)]);
    let out = s.fails_cleanly("network");
    assert!(out.contains("update_timeout_sec"), "{out}");
}
