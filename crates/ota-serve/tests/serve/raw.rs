//! Raw file hosting under /raw/{owner}/{repo}/{ref}/{path}.

use std::io::Read;

use sha2::{Digest, Sha256};

use crate::sample;
use crate::util::{get, head, raw_get, raw_get_bytes, serve};

fn etag_of(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    format!(
        "\"{}\"",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

#[test]
fn raw_files_by_branch_tag_and_sha() {
    let s = sample();
    let server = serve(s.git.path());
    let raw = format!("{}/acme/app", server.raw_url());

    let r = get(&format!("{raw}/main/README.md"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello v3\n");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("cache-control"), Some("max-age=300"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.header("etag"), Some(etag_of(b"hello v3\n").as_str()));
    assert!(r.header("content-encoding").is_none());

    for (reference, path, expected) in [
        ("v1.0.0", "README.md", "hello\n"),
        ("v1.1.0", "README.md", "hello v2\n"),
        ("v1.1.1", "README.md", "hello v2\n"),
        (s.c1.as_str(), "README.md", "hello\n"),
        (s.c2.as_str(), "README.md", "hello v2\n"),
        (&s.c1[..10], "README.md", "hello\n"),
        ("refs/heads/main", "README.md", "hello v3\n"),
        ("feature/x", "feature.txt", "feature\n"),
        ("feature%2Fx", "feature.txt", "feature\n"),
        ("feature/x", "README.md", "hello v2\n"),
        ("main", "docs/guide/intro.md", "intro\n"),
        ("main", "with%20space.txt", "spaced\n"),
        ("main", "link", "README.md"),
        ("main", "bin/run.sh", "#!/bin/sh\necho hi\n"),
        ("main", "empty.txt", ""),
    ] {
        let r = get(&format!("{raw}/{reference}/{path}"), &[]);
        assert_eq!(r.status, 200, "{reference} {path}");
        assert_eq!(r.text(), expected, "{reference} {path}");
    }

    let bin = get(&format!("{raw}/main/data.bin"), &[]);
    assert_eq!(bin.body, [0, 159, 146, 150, 255, 0, 1]);
    assert_eq!(bin.header("content-type"), Some("application/octet-stream"));

    for missing in [
        "main/docs",
        "main/docs/guide",
        "main/vendor/sub",
        "main/nope.txt",
        "nope/README.md",
        "main",
        "feature/x/nope",
        "main/README.md/x",
    ] {
        assert_eq!(
            get(&format!("{raw}/{missing}"), &[]).status,
            404,
            "{missing}"
        );
    }
}

#[test]
fn traversal_segments_are_refused() {
    let s = sample();
    let server = serve(s.git.path());
    let addr = server.addr();
    assert_eq!(raw_get(addr, "/raw/acme/app/main/README.md").0, 200);
    for path in [
        "/raw/acme/app/main/../README.md",
        "/raw/acme/app/main/./README.md",
        "/raw/acme/app/main//README.md",
        "/raw/acme/app/main/docs/../README.md",
        "/raw/acme/app/main/%2e%2e/README.md",
        "/raw/acme/app/main/docs%2Fguide%2Fintro.md",
        "/raw/acme/app/main/docs/guide/intro.md/",
        "/raw/acme/app/main/bad%zzescape",
        "/raw/acme/app/main/%00",
        "/raw/acme/app/../../../etc/passwd",
    ] {
        let (status, _) = raw_get(addr, path);
        assert!(status == 404 || status == 400, "{path}: {status}");
    }
}

#[test]
fn ranges_and_if_range() {
    let s = sample();
    let server = serve(s.git.path());
    let url = format!("{}/acme/app/main/README.md", server.raw_url());
    // "hello v3\n" is 9 bytes.
    for (range, body, content_range) in [
        ("bytes=1-3", "ell", "bytes 1-3/9"),
        ("bytes=6-", "v3\n", "bytes 6-8/9"),
        ("bytes=-3", "v3\n", "bytes 6-8/9"),
        ("bytes=0-100", "hello v3\n", "bytes 0-8/9"),
    ] {
        let r = get(&url, &[("Range", range)]);
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(r.text(), body, "{range}");
        assert_eq!(r.header("content-range"), Some(content_range), "{range}");
        assert_eq!(r.header("content-length").unwrap(), body.len().to_string());
    }
    let r = get(&url, &[("Range", "bytes=9-")]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */9"));

    let etag = etag_of(b"hello v3\n");
    let same = get(&url, &[("Range", "bytes=6-"), ("If-Range", &etag)]);
    assert_eq!(same.status, 206);
    assert_eq!(same.text(), "v3\n");
    let changed = get(&url, &[("Range", "bytes=6-"), ("If-Range", "\"stale\"")]);
    assert_eq!(changed.status, 200);
    assert_eq!(changed.text(), "hello v3\n");
    let dated = get(
        &url,
        &[
            ("Range", "bytes=6-"),
            ("If-Range", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ],
    );
    assert_eq!(dated.status, 200);

    let not_modified = get(&url, &[("If-None-Match", &etag)]);
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    assert_eq!(not_modified.header("etag"), Some(etag.as_str()));
    // Multiple ranges are not supported: the whole file, as RFC 9110 allows.
    assert_eq!(get(&url, &[("Range", "bytes=0-1,3-4")]).status, 200);
}

#[test]
fn gzip_when_allowed_and_no_range() {
    let s = sample();
    let big = "line of text that compresses well\n".repeat(500);
    s.git.write("big.txt", big.as_bytes());
    s.git.commit_all("big", crate::util::T0);
    let server = serve(s.git.path());
    let addr = server.addr();
    let path = "/raw/acme/app/main/big.txt";

    // A raw socket: no client library decompressing behind our back.
    let r = raw_get_bytes(addr, path, &[("Accept-Encoding", "gzip, deflate")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert!(r.header("vary").unwrap().contains("Accept-Encoding"));
    assert_eq!(
        r.header("content-length").unwrap(),
        r.body.len().to_string()
    );
    assert!(r.body.len() < big.len() / 5);
    let mut decoded = String::new();
    flate2::read::GzDecoder::new(&r.body[..])
        .read_to_string(&mut decoded)
        .unwrap();
    assert_eq!(decoded, big);
    let etag = r.header("etag").unwrap().to_string();
    assert_eq!(etag, format!("W/{}", etag_of(big.as_bytes())));

    // A weak (gzip) ETag still validates If-None-Match.
    let r = raw_get_bytes(
        addr,
        path,
        &[("Accept-Encoding", "gzip"), ("If-None-Match", &etag)],
    );
    assert_eq!(r.status, 304);

    let identity = raw_get_bytes(addr, path, &[]);
    assert!(identity.header("content-encoding").is_none());
    assert_eq!(identity.body, big.as_bytes());
    let refused = raw_get_bytes(addr, path, &[("Accept-Encoding", "gzip;q=0")]);
    assert_eq!(refused.header("content-encoding"), None);
    let star = raw_get_bytes(addr, path, &[("Accept-Encoding", "*")]);
    assert_eq!(star.header("content-encoding"), Some("gzip"));

    let ranged = raw_get_bytes(
        addr,
        path,
        &[("Accept-Encoding", "gzip"), ("Range", "bytes=0-3")],
    );
    assert_eq!(ranged.status, 206);
    assert!(ranged.header("content-encoding").is_none());
    assert_eq!(ranged.body, b"line");
}

#[test]
fn head_on_raw_files() {
    let s = sample();
    let server = serve(s.git.path());
    let url = format!("{}/acme/app/main/README.md", server.raw_url());
    let h = head(&url, &[]);
    assert_eq!(h.status, 200);
    assert!(h.body.is_empty());
    assert_eq!(h.header("content-length"), Some("9"));
    assert_eq!(h.header("etag"), Some(etag_of(b"hello v3\n").as_str()));
    let h = head(&url, &[("Range", "bytes=0-1")]);
    assert_eq!(h.status, 206);
    assert_eq!(h.header("content-length"), Some("2"));
}
