//! Release assets from DIR/{tag}/{name}: JSON, bytes, downloads and redirects.

use std::path::Path;

use ota_serve::{Options, Server};
use sha2::{Digest, Sha256};

use crate::sample;
use crate::util::{get, head};

fn write_assets(dir: &Path) -> Vec<u8> {
    let app: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::create_dir_all(dir.join("v1.1.0")).unwrap();
    std::fs::write(dir.join("v1.1.0/app.tar"), &app).unwrap();
    std::fs::write(dir.join("v1.1.0/manifest.json"), b"{\"v\":1}\n").unwrap();
    std::fs::create_dir_all(dir.join("v1.1.0/not-a-file")).unwrap();
    std::fs::create_dir_all(dir.join("nightly")).unwrap();
    std::fs::write(dir.join("nightly/ignored.bin"), b"x").unwrap();
    app
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn server_with_assets(
    redirect: bool,
    token: Option<&str>,
) -> (crate::Sample, tempfile::TempDir, Vec<u8>, Server) {
    let s = sample();
    let dir = tempfile::tempdir().unwrap();
    let app = write_assets(dir.path());
    let mut options = Options::new(s.git.path());
    options.assets = Some(dir.path().to_path_buf());
    options.redirect_assets = redirect;
    options.token = token.map(str::to_string);
    let server = Server::start(options).unwrap();
    (s, dir, app, server)
}

#[test]
fn release_json_lists_assets() {
    let (_s, _dir, app, server) = server_with_assets(false, None);
    let api = format!("{}/repos/acme/app", server.api_url());
    let release = get(&format!("{api}/releases/tags/v1.1.0"), &[]).json();
    let assets = release["assets"].as_array().unwrap();
    let names: Vec<_> = assets.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["app.tar", "manifest.json"]);
    let a = &assets[0];
    let id = a["id"].as_u64().unwrap();
    assert!(id > 0 && id < 1 << 53);
    assert_eq!(a["url"], format!("{api}/releases/assets/{id}").as_str());
    assert_eq!(a["size"], 200_000);
    assert_eq!(a["digest"], format!("sha256:{}", hex_sha256(&app)).as_str());
    assert_eq!(a["state"], "uploaded");
    assert_eq!(a["content_type"], "application/octet-stream");
    assert_eq!(a["download_count"], 0);
    assert!(a["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(a["node_id"].is_string());
    assert_eq!(a["uploader"]["login"], "acme");
    assert_eq!(
        a["browser_download_url"],
        format!(
            "{}/acme/app/releases/download/v1.1.0/app.tar",
            server.api_url()
        )
        .as_str()
    );
    // Other releases have none; a non-release directory is ignored.
    let other = get(&format!("{api}/releases/tags/v1.0.0"), &[]).json();
    assert_eq!(other["assets"], serde_json::json!([]));
    let release_id = release["id"].as_u64().unwrap();
    let listed = get(&format!("{api}/releases/{release_id}/assets"), &[]).json();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(
        get(&format!("{api}/releases/assets/{id}"), &[]).json()["name"],
        "app.tar"
    );
    assert_eq!(get(&format!("{api}/releases/assets/123"), &[]).status, 404);
}

#[test]
fn asset_bytes_and_downloads() {
    let (_s, _dir, app, server) = server_with_assets(false, None);
    let api = format!("{}/repos/acme/app", server.api_url());
    let release = get(&format!("{api}/releases/tags/v1.1.0"), &[]).json();
    let asset = &release["assets"][0];
    let url = asset["url"].as_str().unwrap();
    let octet = [("Accept", "application/octet-stream")];

    let bytes = get(url, &octet);
    assert_eq!(bytes.status, 200);
    assert_eq!(bytes.body, app);
    assert_eq!(
        bytes.header("etag"),
        Some(format!("\"{}\"", hex_sha256(&app)).as_str())
    );
    assert_eq!(
        bytes.header("content-type"),
        Some("application/octet-stream")
    );

    let download = asset["browser_download_url"].as_str().unwrap();
    let r = get(download, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, app);
    let part = get(download, &[("Range", "bytes=100000-100009")]);
    assert_eq!(part.status, 206);
    assert_eq!(part.body, app[100_000..100_010]);
    assert_eq!(
        part.header("content-range"),
        Some("bytes 100000-100009/200000")
    );
    let tail = get(url, &[octet[0], ("Range", "bytes=-5")]);
    assert_eq!(tail.body, app[app.len() - 5..]);
    let h = head(download, &[]);
    assert_eq!(h.header("content-length"), Some("200000"));
    assert!(h.body.is_empty());

    let etag = format!("\"{}\"", hex_sha256(&app));
    assert_eq!(get(download, &[("If-None-Match", &etag)]).status, 304);

    let count = get(url, &[]).json()["download_count"].as_u64().unwrap();
    assert!(count >= 4, "{count}");

    let base = server.api_url();
    for missing in [
        "acme/app/releases/download/v1.1.0/nope",
        "acme/app/releases/download/v1.0.0/app.tar",
        "acme/app/releases/download/nightly/ignored.bin",
        "acme/app/releases/download/v1.1.0/not-a-file",
    ] {
        assert_eq!(
            get(&format!("{base}/{missing}"), &[]).status,
            404,
            "{missing}"
        );
    }
}

#[test]
fn asset_redirects_to_another_host_name() {
    let (_s, _dir, app, server) = server_with_assets(true, Some("tok"));
    let port = server.addr().port();
    let auth = ("Authorization", "Bearer tok");
    let api = format!("{}/repos/acme/app", server.api_url());
    let release = get(&format!("{api}/releases/tags/v1.1.0"), &[auth]).json();
    let url = release["assets"][0]["url"].as_str().unwrap();

    let r = get(url, &[auth, ("Accept", "application/octet-stream")]);
    assert_eq!(r.status, 302);
    let location = r.header("location").unwrap().to_string();
    assert!(
        location.starts_with(&format!(
            "http://localhost:{port}/acme/app/releases/download/v1.1.0/app.tar?"
        )),
        "{location}"
    );
    // The redirect target needs no token, and refuses one (like GitHub's storage).
    let followed = get(&location, &[]);
    assert_eq!(followed.status, 200);
    assert_eq!(followed.body, app);
    assert_eq!(get(&location, &[auth]).status, 400);
    let forged = location.replace("sig=", "sig=0");
    assert_eq!(get(&forged, &[]).status, 403);

    // Asked through `localhost`, it redirects to 127.0.0.1.
    let via_localhost = url.replace("127.0.0.1", "localhost");
    let r = get(
        &via_localhost,
        &[auth, ("Accept", "application/octet-stream")],
    );
    assert!(
        r.header("location")
            .unwrap()
            .starts_with(&format!("http://127.0.0.1:{port}/"))
    );

    // JSON is still JSON; the unsigned download URL wants the token.
    assert_eq!(get(url, &[auth]).json()["name"], "app.tar");
    let download = release["assets"][0]["browser_download_url"]
        .as_str()
        .unwrap();
    assert_eq!(get(download, &[]).status, 401);
    assert_eq!(get(download, &[auth]).status, 200);
}
