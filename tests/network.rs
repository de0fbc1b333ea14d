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
    let out = device.ota_expect(&["update", "--json"], 0);
    let report: serde_json::Value = serde_json::from_str(out.lines().next().unwrap_or("{}"))
        .or_else(|_| serde_json::from_str(&out[..out.rfind('}').unwrap() + 1]))
        .unwrap();
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
