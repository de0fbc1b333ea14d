//! Spending the fewest requests and bytes: conditional checks, keep-alive, compression.

use crate::util::{Device, GitRepo, serve};

fn one_release() -> GitRepo {
    let mut repo = GitRepo::new();
    repo.write("main.py", "print('hello')\n".repeat(200))
        .write("lib/a.py", "A = 1\n");
    repo.commit("v1");
    repo.tag("v1.0.0");
    repo
}

#[test]
fn an_up_to_date_check_is_one_conditional_request_answered_304() {
    for channel in ["channel = \"stable\"", "channel = \"developer\""] {
        let repo = one_release();
        let server = serve(repo.path());
        let device = Device::new(&server, channel);
        device.ota_expect(&["update"], 0);

        server.reset_stats();
        device.ota_expect(&["check"], 0);
        let stats = server.stats();
        assert_eq!(stats.requests, 1, "{channel}: {:#?}", stats.log);
        let request = &stats.log[0];
        assert!(
            request.if_none_match.is_some(),
            "{channel}: the check is conditional"
        );
        assert_eq!(request.status, 304, "{channel}");
        let wire = stats.wire_bytes_in + stats.wire_bytes_out;
        assert!(
            wire <= 1024,
            "{channel}: a no-op check costs {wire} bytes on the wire"
        );

        // The same for `ota update`, and `ota status` shows when it last asked.
        server.reset_stats();
        let out = device.ota_expect(&["update"], 0);
        assert!(out.contains("up to date"), "{out}");
        assert_eq!(server.stats().requests, 1);
        assert_eq!(server.stats().log[0].status, 304);
        let out = device.ota_expect(&["status"], 0);
        assert!(out.contains("last check:"), "{out}");
    }
}

#[test]
fn a_new_release_is_seen_through_the_conditional_check() {
    let mut repo = one_release();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    device.ota_expect(&["update"], 0);
    device.ota_expect(&["check"], 0);
    repo.write("lib/a.py", "A = 2\n");
    repo.commit("v2");
    repo.tag("v2.0.0");
    device.ota_expect(&["check"], 100);
    device.ota_expect(&["update"], 0);
    assert_eq!(device.tree(), repo.snapshot("v2.0.0"));
}

#[test]
fn files_travel_compressed_and_on_few_connections() {
    let repo = one_release();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    let out = device.ota(&["update", "--json"]);
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stats = server.stats();
    let main = stats
        .log
        .iter()
        .find(|r| r.path.ends_with("/main.py"))
        .unwrap();
    let size = "print('hello')\n".len() as u64 * 200;
    assert!(
        main.body_bytes < size / 4,
        "main.py came gzip-compressed: {} of {size} bytes",
        main.body_bytes
    );
    assert_eq!(
        report["usage"]["file_bytes"],
        size + 6,
        "decoded bytes are the files' sizes"
    );
}

#[test]
fn a_truncated_tree_is_completed_by_walking_sub_trees() {
    let mut repo = GitRepo::new();
    for dir in ["a", "a/b", "c", "c/d/e"] {
        for i in 0..3 {
            repo.write(&format!("{dir}/f{i}.txt"), format!("{dir} {i}\n"));
        }
    }
    repo.write("top.txt", "top\n");
    repo.commit("v1");
    repo.tag("v1.0.0");
    // The server lists at most 5 entries per recursive tree answer.
    let server = crate::util::serve_with(repo.path(), |o| o.max_tree_entries = Some(5));
    let device = Device::new(&server, "");
    device.ota_expect(&["update"], 0);
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));
    let trees = server
        .stats()
        .log
        .iter()
        .filter(|r| r.path.contains("/git/trees/"))
        .count();
    assert!(
        trees > 1,
        "sub-trees were fetched one by one ({trees} tree requests)"
    );
}

#[test]
fn the_token_goes_only_to_the_configured_hosts_and_never_into_a_log() {
    let repo = one_release();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    let token = "ghp_0123456789abcdefSECRETtokenVALUE";
    device.configure("source", &format!("token = \"{token}\""));
    // Even when the log asks for everything, HTTP client internals included.
    for log in ["trace", "ureq=trace,ureq_proto=trace,ota=trace"] {
        let out = device.ota_logging(&["update", "--force", "-vv"], log);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(text.contains("GET "), "the log is verbose");
        assert!(
            !text.contains("SECRETtoken"),
            "the token leaked with RUST_LOG={log}:\n{text}"
        );
    }
    assert!(server.stats().log.iter().all(|r| r.authorized));
    let status = device.ota_expect(&["status", "--json"], 0);
    assert!(!status.contains("SECRETtoken"));
}

#[test]
fn a_state_dir_on_another_filesystem_is_refused_with_a_clear_error() {
    let elsewhere = std::path::Path::new("/dev/shm");
    let repo = one_release();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    std::fs::create_dir_all(&device.target).unwrap();
    let dev =
        |p: &std::path::Path| std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(p).unwrap());
    if !elsewhere.is_dir() || dev(elsewhere) == dev(&device.target) {
        eprintln!("skipped: no second filesystem at /dev/shm");
        return;
    }
    let state = tempfile::tempdir_in(elsewhere).unwrap();
    device.configure("", &format!("state_dir = {:?}", state.path()));
    let out = device.ota_expect(&["update"], 1);
    assert!(out.contains("different filesystem"), "{out}");
    assert!(device.tree().is_empty(), "nothing was installed");
}

/// A host that wants credentials (401) or refuses them (403) is answered with where a
/// token goes.
#[test]
fn a_401_or_403_names_the_token_settings() {
    use ota_serve::fault::{Action, Fault};
    let repo = one_release();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    for status in [401, 403] {
        server.set_faults(vec![Fault::new(
            "*/releases/latest",
            Action::Status(status),
        )]);
        let out = device.ota_expect(&["update"], 1);
        assert!(out.contains(&format!("HTTP {status}")), "{out}");
        for hint in ["`token`", "`token_file`", "OTA_TOKEN"] {
            assert!(out.contains(hint), "{status}: no {hint}:\n{out}");
        }
        assert!(device.tree().is_empty());
    }
}
