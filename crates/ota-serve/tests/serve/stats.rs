//! Request statistics: per class, body bytes, 304s, wire bytes, the log and /_ota/stats.

use ota_serve::RequestClass;

use crate::sample;
use crate::util::{get, serve};

#[test]
fn counts_requests_bytes_and_not_modified() {
    let s = sample();
    let server = serve(s.git.path());
    let api = format!("{}/repos/acme/app", server.api_url());
    let raw = format!("{}/acme/app", server.raw_url());
    assert_eq!(server.stats().requests, 0);

    let a = get(
        &format!("{api}/releases/latest"),
        &[("Authorization", "Bearer x")],
    );
    let b = get(
        &format!("{api}/commits/main"),
        &[("Accept", "application/vnd.github.sha")],
    );
    let etag = b.header("etag").unwrap().to_string();
    let c = get(
        &format!("{api}/commits/main"),
        &[
            ("Accept", "application/vnd.github.sha"),
            ("If-None-Match", &etag),
        ],
    );
    let d = get(&format!("{raw}/main/README.md"), &[("Range", "bytes=0-1")]);
    let e = get(&format!("{raw}/main/nope"), &[]);
    let f = get(&format!("{}/elsewhere", server.api_url()), &[]);
    assert_eq!(
        (a.status, b.status, c.status, d.status, e.status, f.status),
        (200, 200, 304, 206, 404, 404)
    );

    let stats = server.stats();
    assert_eq!(stats.requests, 6);
    assert_eq!(stats.api_requests, 3);
    assert_eq!(stats.raw_requests, 2);
    assert_eq!(stats.asset_requests, 0);
    assert_eq!(stats.not_modified, 1);
    let api_bytes = (a.body.len() + b.body.len() + c.body.len()) as u64;
    let file_bytes = (d.body.len() + e.body.len()) as u64;
    assert_eq!(stats.api_body_bytes, api_bytes);
    assert_eq!(stats.file_body_bytes, file_bytes);
    assert_eq!(
        stats.body_bytes,
        api_bytes + file_bytes + f.body.len() as u64
    );
    assert!(
        stats.wire_bytes_out > stats.body_bytes + 6 * 50,
        "{stats:?}"
    );
    assert!(stats.wire_bytes_in > 6 * 40, "{stats:?}");

    assert_eq!(stats.log.len(), 6);
    let first = &stats.log[0];
    assert_eq!(first.method, "GET");
    assert_eq!(first.path, "/repos/acme/app/releases/latest");
    assert_eq!(first.status, 200);
    assert_eq!(first.class, RequestClass::Api);
    assert!(first.authorized);
    assert_eq!(first.body_bytes, a.body.len() as u64);
    assert_eq!(stats.log[2].if_none_match.as_deref(), Some(etag.as_str()));
    assert!(!stats.log[2].authorized);
    assert_eq!(stats.log[3].range.as_deref(), Some("bytes=0-1"));
    assert_eq!(stats.log[3].class, RequestClass::Raw);
    assert_eq!(stats.log[5].class, RequestClass::Other);

    server.reset_stats();
    let stats = server.stats();
    assert_eq!(
        (stats.requests, stats.body_bytes, stats.wire_bytes_out),
        (0, 0, 0)
    );
    assert!(stats.log.is_empty());
}

#[test]
fn head_and_query_strings_are_recorded() {
    let s = sample();
    let server = serve(s.git.path());
    let url = format!("{}/repos/acme/app/releases?per_page=1", server.api_url());
    crate::util::head(&url, &[]);
    let stats = server.stats();
    assert_eq!(stats.log[0].method, "HEAD");
    assert_eq!(stats.log[0].path, "/repos/acme/app/releases?per_page=1");
    assert_eq!(stats.log[0].body_bytes, 0);
    assert_eq!(stats.body_bytes, 0);
}

#[test]
fn stats_endpoint_is_not_counted() {
    let s = sample();
    let server = serve(s.git.path());
    get(
        &format!("{}/acme/app/main/README.md", server.raw_url()),
        &[],
    );
    // The server counts a write once the kernel took it, which can be just after the client
    // read it: wait until the counters settle.
    let before = settled(&server);

    let json = get(&format!("{}/_ota/stats", server.api_url()), &[]).json();
    assert_eq!(json["requests"], 1);
    assert_eq!(json["raw_requests"], 1);
    assert_eq!(json["file_body_bytes"], 9);
    assert_eq!(json["log"][0]["class"], "Raw");
    assert_eq!(json["log"][0]["path"], "/raw/acme/app/main/README.md");

    let after = server.stats();
    assert_eq!(after.requests, before.requests);
    assert_eq!(after.wire_bytes_in, before.wire_bytes_in);
    assert_eq!(after.wire_bytes_out, before.wire_bytes_out);

    let reset = get(&format!("{}/_ota/stats?reset=1", server.api_url()), &[]).json();
    assert_eq!(
        reset["requests"], 1,
        "answers the counts from before the reset"
    );
    let stats = server.stats();
    assert_eq!(
        (stats.requests, stats.wire_bytes_in, stats.wire_bytes_out),
        (0, 0, 0)
    );
}

#[test]
fn asset_requests_are_their_own_class() {
    let s = sample();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("v1.0.0")).unwrap();
    std::fs::write(dir.path().join("v1.0.0/a.bin"), vec![7u8; 1000]).unwrap();
    let mut options = ota_serve::Options::new(s.git.path());
    options.assets = Some(dir.path().to_path_buf());
    let server = ota_serve::Server::start(options).unwrap();
    let release = get(
        &format!("{}/repos/o/r/releases/tags/v1.0.0", server.api_url()),
        &[],
    )
    .json();
    let asset_url = release["assets"][0]["url"].as_str().unwrap();
    let download = release["assets"][0]["browser_download_url"]
        .as_str()
        .unwrap();
    get(asset_url, &[("Accept", "application/octet-stream")]);
    get(download, &[]);
    get(asset_url, &[]);
    let stats = server.stats();
    assert_eq!(stats.asset_requests, 2);
    assert_eq!(stats.api_requests, 2, "release JSON and asset JSON");
    assert_eq!(stats.file_body_bytes, 2000);
}

#[test]
fn wire_bytes_are_exactly_what_crossed_the_socket() {
    let s = sample();
    let server = serve(s.git.path());
    let addr = server.addr();
    let requests = [
        format!(
            "GET /raw/o/r/main/README.md HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: t\r\nConnection: close\r\n\r\n"
        ),
        format!(
            "GET /repos/o/r/releases HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: t\r\nConnection: close\r\n\r\n"
        ),
        format!(
            "HEAD /repos/o/r HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: t\r\nConnection: close\r\n\r\n"
        ),
    ];
    let mut sent = 0;
    let mut received = 0;
    for request in &requests {
        let (status, text) = crate::util::raw_http(addr, request);
        assert_eq!(status, 200);
        sent += request.len() as u64;
        received += text.len() as u64;
    }
    let stats = server.stats();
    assert_eq!(stats.wire_bytes_in, sent);
    assert_eq!(stats.wire_bytes_out, received);
    assert_eq!(stats.requests, 3);
}

/// Stats once the wire counters stop moving.
fn settled(server: &ota_serve::Server) -> ota_serve::Stats {
    let mut last = server.stats();
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(10));
        let now = server.stats();
        if (now.wire_bytes_in, now.wire_bytes_out) == (last.wire_bytes_in, last.wire_bytes_out) {
            return now;
        }
        last = now;
    }
    last
}
