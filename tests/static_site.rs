//! Static sites: the real `ota` binary against a real nginx (and Python's plain
//! `http.server`) on loopback, serving sites signed with minisign keys. Installs, updates,
//! no-op polls on the wire (through a counting proxy), and every refusal of a hostile site
//! with the installed tree intact.

use ota::signed::Encoding;

use crate::util::nginx::Nginx;
use crate::util::proxy::Proxy;
use crate::util::site::{Keys, Release, Site};
use crate::util::static_server::PlainServer;
use crate::util::{Device, Tree, exited};

/// A release of three files: one large enough to be stored gzip-compressed.
fn v1() -> Release {
    let big = "print('a line of the application')\n".repeat(400);
    Release::new(
        "v1.0.0",
        1,
        &[
            ("main.py", "print('v1')\n"),
            ("lib/util.py", "def util(): return 1\n"),
            ("lib/big.py", &big),
        ],
    )
}

/// v2: main.py changes, a file is added; the rest is the same.
fn v2() -> Release {
    let mut release = v1();
    release.name = "v2.0.0".into();
    release.counter = 2;
    release
        .files
        .insert("main.py".into(), b"print('v2')\n".to_vec());
    release
        .files
        .insert("lib/new.py".into(), b"NEW = 2\n".to_vec());
    release
}

/// The files of `release`, as `read_tree` shows them.
fn tree_of(release: &Release) -> Tree {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in &release.files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    crate::util::read_tree(dir.path())
}

/// `text` without whitespace (pretty-printed JSON made searchable).
fn compact(text: &str) -> String {
    text.split_whitespace().collect()
}

fn key_line(keys: &Keys) -> String {
    format!("public_key = {:?}", keys.public())
}

/// A site on nginx behind a counting proxy, with v1 published, and a device on it.
struct Setup {
    keys: Keys,
    site: Site,
    _nginx: Nginx,
    proxy: Proxy,
    device: Device,
}

fn setup() -> Setup {
    let keys = Keys::new();
    let site = Site::new();
    site.publish(&keys, &v1());
    let nginx = Nginx::serve(site.root());
    let proxy = Proxy::to(nginx.port());
    let device = Device::on_site(&proxy.url(), &key_line(&keys));
    Setup {
        keys,
        site,
        _nginx: nginx,
        proxy,
        device,
    }
}

#[test]
fn install_update_and_no_op_on_nginx() {
    let s = setup();
    let out = s.device.ota_expect(&["update"], 0);
    assert_eq!(s.device.tree(), tree_of(&v1()), "{out}");
    // Manifest, signature and one request per object.
    assert_eq!(s.proxy.totals().requests, 2 + 3, "{:?}", s.proxy.requests());

    // The update downloads the changed and added objects only.
    let v2_manifest = s.site.publish(&s.keys, &v2());
    let before = s.proxy.requests().len();
    s.device.ota_expect(&["update"], 0);
    assert_eq!(s.device.tree(), tree_of(&v2()));
    let asked: Vec<String> = s.proxy.requests()[before..].to_vec();
    let objects: Vec<&String> = asked.iter().filter(|r| r.contains("/objects/")).collect();
    assert_eq!(objects.len(), 2, "{asked:?}");
    for path in ["main.py", "lib/new.py"] {
        let object = Site::object_of(&v2_manifest, path);
        assert!(
            objects.iter().any(|r| r.contains(&object)),
            "{path}: {asked:?}"
        );
    }

    // A no-op poll: one conditional request, answered 304, under 1 KB both ways.
    let before = s.proxy.totals();
    let out = s.device.ota_expect(&["update", "--json"], 0);
    let after = s.proxy.totals();
    assert_eq!(after.requests - before.requests, 1, "{out}");
    let bytes = after.bytes() - before.bytes();
    assert!(bytes <= 1024, "a no-op poll took {bytes} bytes");
    let access = s.proxy.requests();
    assert!(access.last().unwrap().starts_with("GET /manifest.json "));
    assert!(
        out.contains("up_to_date") || out.contains("up to date"),
        "{out}"
    );
}

#[test]
fn a_plain_server_without_etag_is_polled_with_if_modified_since() {
    let keys = Keys::new();
    let site = Site::new();
    site.publish(&keys, &v1());
    let server = PlainServer::serve(site.root());
    let device = Device::on_site(&server.url(), &key_line(&keys));
    device.ota_expect(&["update"], 0);
    assert_eq!(device.tree(), tree_of(&v1()));
    let cache = std::fs::read_to_string(device.target.join(".ota/cache.json")).unwrap();
    assert!(cache.contains("last_modified"), "{cache}");
    // The no-op: the validator is Last-Modified, and the answer a 304.
    let out = compact(&device.ota_expect(&["update", "--json"], 0));
    assert!(out.contains("\"api_requests\":1,"), "{out}");
    assert!(out.contains("\"api_bytes\":0,"), "{out}");
    assert!(out.contains("\"file_requests\":0,"), "{out}");
}

/// Publishes v1 (installed), then lets `spoil` make the site hostile, and checks the update
/// is refused with `kind`, exit code 1, and the installed tree intact. Returns the requests
/// the refused update made (request line and status).
fn refused(kind: &str, source_extra: &str, spoil: impl FnOnce(&Site, &Keys)) -> Vec<String> {
    let keys = Keys::new();
    let site = Site::new();
    site.publish(&keys, &v1());
    let nginx = Nginx::serve(site.root());
    let device = Device::on_site(
        &nginx.url(),
        &format!("{}\n{source_extra}", key_line(&keys)),
    );
    device.ota_expect(&["update"], 0);
    let installed = device.tree();
    spoil(&site, &keys);
    let before = nginx.requests().len();
    let out = device.ota_expect(&["update", "--json"], 1);
    assert_eq!(device.tree(), installed, "{out}");
    assert_eq!(device.last_error().unwrap()["kind"], kind, "{out}");
    assert!(
        compact(&out).contains(&format!("\"kind\":\"{kind}\"")),
        "{out}"
    );
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
    nginx.requests()[before..].to_vec()
}

#[test]
fn an_altered_manifest_is_refused() {
    let asked = refused("bad_signature", "", |site, keys| {
        site.publish(keys, &v2());
        let mut text = String::from_utf8(site.read("manifest.json")).unwrap();
        text = text.replace("v2.0.0", "v9.9.9");
        site.write("manifest.json", text.as_bytes());
    });
    // Both files were fetched once more (a publish may have been half done), the manifest
    // unconditionally, before the refusal; no object was asked for.
    assert_eq!(
        asked,
        [
            "GET /manifest.json HTTP/1.1 200",
            "GET /manifest.json.minisig HTTP/1.1 200",
            "GET /manifest.json HTTP/1.1 200",
            "GET /manifest.json.minisig HTTP/1.1 200",
        ]
    );
}

#[test]
fn a_manifest_signed_by_the_minisign_cli_installs() {
    let dir = tempfile::tempdir().unwrap();
    let (public, secret) = (dir.path().join("ota.pub"), dir.path().join("ota.key"));
    let status = std::process::Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(&public)
        .arg("-s")
        .arg(&secret)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("minisign is installed (Debian: apt-get install minisign)");
    assert!(status.success());
    // The objects and manifest as a publisher writes them; the signature by the CLI.
    let site = Site::new();
    site.publish(&Keys::new(), &v1());
    site.remove("manifest.json.minisig");
    let status = std::process::Command::new("minisign")
        .args(["-S", "-s"])
        .arg(&secret)
        .arg("-m")
        .arg(site.path("manifest.json"))
        .status()
        .unwrap();
    assert!(status.success());
    let signature = site.read("manifest.json.minisig");
    site.write("manifest.json.minisig", &signature);
    let nginx = Nginx::serve(site.root());
    let device = Device::on_site(
        &nginx.url(),
        &format!("public_key_file = {:?}", public.display().to_string()),
    );
    device.ota_expect(&["update"], 0);
    assert_eq!(device.tree(), tree_of(&v1()));
}

#[test]
fn a_manifest_signed_by_an_untrusted_key_is_refused() {
    refused("untrusted_key", "", |site, _| {
        site.publish(&Keys::new(), &v2());
    });
}

#[test]
fn an_unsigned_manifest_is_refused() {
    refused("missing_signature", "", |site, keys| {
        site.publish(keys, &v2());
        site.remove("manifest.json.minisig");
    });
}

#[test]
fn a_lower_counter_is_refused_unless_downgrades_are_allowed() {
    let older = |site: &Site, keys: &Keys| {
        let mut release = v2();
        release.counter = 0;
        site.publish(keys, &release);
    };
    refused("downgrade", "", older);
    // With allow_downgrade, the same site installs.
    let keys = Keys::new();
    let site = Site::new();
    site.publish(&keys, &v1());
    let nginx = Nginx::serve(site.root());
    let device = Device::on_site(
        &nginx.url(),
        &format!("{}\nallow_downgrade = true", key_line(&keys)),
    );
    device.ota_expect(&["update"], 0);
    older(&site, &keys);
    device.ota_expect(&["update"], 0);
    assert_eq!(device.tree(), tree_of(&v2()));
}

#[test]
fn an_expired_manifest_is_refused() {
    refused("expired", "", |site, keys| {
        let mut release = v2();
        release.expires_in = -60;
        site.publish(keys, &release);
    });
}

#[test]
fn an_object_that_differs_from_its_digest_is_refused() {
    refused("integrity", "", |site, keys| {
        let manifest = site.publish(keys, &v2());
        let object = Site::object_of(&manifest, "main.py");
        site.write(&object, b"print('evil')\n");
    });
}

#[test]
fn an_object_longer_than_declared_is_refused() {
    refused("integrity", "", |site, keys| {
        let manifest = site.publish(keys, &v2());
        let object = Site::object_of(&manifest, "lib/new.py");
        site.write(&object, b"NEW = 2\n# and more\n");
    });
}

#[test]
fn a_missing_object_is_refused() {
    refused("missing_object", "", |site, keys| {
        let manifest = site.publish(keys, &v2());
        site.remove(&Site::object_of(&manifest, "lib/new.py"));
    });
}

#[test]
fn keys_rotate_a_release_signed_by_a_second_trusted_key_installs() {
    let (old, new) = (Keys::new(), Keys::new());
    let site = Site::new();
    site.publish(&old, &v1());
    let nginx = Nginx::serve(site.root());
    let device = Device::on_site(
        &nginx.url(),
        &format!("public_key = [{:?}, {:?}]", old.public(), new.public()),
    );
    device.ota_expect(&["update"], 0);
    site.publish(&new, &v2());
    device.ota_expect(&["update"], 0);
    assert_eq!(device.tree(), tree_of(&v2()));
}

#[test]
fn a_named_channel_follows_its_own_manifest() {
    let keys = Keys::new();
    let site = Site::new();
    site.publish(&keys, &v1());
    let mut beta = v2();
    beta.channel = "beta".into();
    beta.name = "v2.0.0-beta".into();
    site.publish(&keys, &beta);
    let nginx = Nginx::serve(site.root());
    let device = Device::on_site(&nginx.url(), &key_line(&keys));
    device.configure("", "channel = \"beta\"");
    let out = device.ota_expect(&["update"], 0);
    assert_eq!(device.tree(), tree_of(&v2()), "{out}");
    let status = compact(&exited(
        &device.ota(&["status", "--json"]),
        &["status", "--json"],
        0,
    ));
    assert!(status.contains("\"counter\":2"), "{status}");
    assert!(status.contains("beta"), "{status}");
    let check = device.ota_expect(&["check"], 0);
    assert!(check.contains("(beta, counter 2)"), "{check}");
}

#[test]
fn a_compressed_object_is_never_inflated_past_its_signed_size() {
    refused("integrity", "", |site, keys| {
        let mut release = v2();
        let big = "print('a changed line')\n".repeat(600);
        release.files.insert("lib/big.py".into(), big.into_bytes());
        let manifest = site.publish(keys, &release);
        let object = Site::object_of(&manifest, "lib/big.py");
        assert!(object.ends_with(".gz"), "{object}");
        // A bomb: 16 MiB of zeros, a few KiB compressed, for a file signed as 14,400 bytes
        // (its compressed size re-signed to match: only the declared size stops it).
        let bomb = crate::util::site::gzip(&vec![0u8; 16 << 20]);
        site.write(&object, &bomb);
        site.resign(keys, |m| {
            let file = m.files.iter_mut().find(|f| f.path == "lib/big.py").unwrap();
            file.stored_size = Some(bomb.len() as u64);
        });
    });
}

#[test]
fn a_304_is_not_trusted_once_the_cached_manifest_has_expired() {
    let s = setup();
    s.device.ota_expect(&["update"], 0);
    // The device's cached validator says its manifest expired: the next poll asks again
    // without a condition (manifest and signature), and finds the site's fresh manifest.
    let path = s.device.target.join(".ota/cache.json");
    let mut cache: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    cache["validator"]["expires"] = "2000-01-01T00:00:00Z".into();
    std::fs::write(&path, serde_json::to_vec(&cache).unwrap()).unwrap();
    let out = compact(&s.device.ota_expect(&["update", "--json"], 0));
    assert!(out.contains("\"api_requests\":2,"), "{out}");
    // The fresh validator is cached again: the poll after is one request.
    let out = compact(&s.device.ota_expect(&["update", "--json"], 0));
    assert!(out.contains("\"api_requests\":1,"), "{out}");
    assert!(out.contains("\"api_bytes\":0,"), "{out}");
}

#[test]
fn a_release_rollout_percent_overrides_the_device_s() {
    let keys = Keys::new();
    let site = Site::new();
    site.publish(&keys, &v1());
    let nginx = Nginx::serve(site.root());
    let device = Device::on_site(&nginx.url(), &key_line(&keys));
    crate::util::tables(
        &device,
        "[schedule]\ndevice_id = \"device-0001\"\nrollout_percent = 100\n",
    );
    device.ota_expect(&["update"], 0);
    // The release says 0%: no device takes it, whatever the device's own percentage.
    let mut held = v2();
    held.rollout_percent = Some(0);
    site.publish(&keys, &held);
    let out = compact(&device.ota_expect(&["update", "--json"], 0));
    assert!(out.contains("\"reason\":\"rollout\""), "{out}");
    assert_eq!(device.tree(), tree_of(&v1()));
    // The release says 100%: every device takes it, even one whose config says 0%.
    device.edit_config("rollout_percent = 100", "rollout_percent = 0");
    let mut open = v2();
    open.counter = 3;
    open.rollout_percent = Some(100);
    site.publish(&keys, &open);
    device.ota_expect(&["update"], 0);
    assert_eq!(device.tree(), tree_of(&v2()));
}

#[test]
fn a_dropped_identity_object_resumes_with_range() {
    let keys = Keys::new();
    let site = Site::new();
    let mut release = v1();
    // Incompressible bytes: stored as they are, so a drop resumes where it stopped.
    release
        .files
        .insert("data.bin".into(), crate::util::noise(200_000, 7));
    let manifest = site.publish(&keys, &release);
    let object = Site::object_of(&manifest, "data.bin");
    assert!(!object.ends_with(".gz"), "{object}");
    let nginx = Nginx::serve(site.root());
    let proxy = Proxy::to(nginx.port());
    proxy.cut_once(&object, 64 * 1024);
    let device = Device::on_site(&proxy.url(), &key_line(&keys));
    device.ota_expect(&["update"], 0);
    assert_eq!(device.tree(), tree_of(&release));
    let served: Vec<String> = nginx
        .requests()
        .into_iter()
        .filter(|r| r.contains(&object))
        .collect();
    assert_eq!(served.len(), 2, "{served:?}");
    assert!(served[1].ends_with(" 206"), "{served:?}");
}

/// The whole path a fleet owner takes: `ota keygen`, `ota publish` of a git tag into a site
/// that nginx serves, devices install it; the next tag is published and installed with
/// only its changed files; publishing the same tag again (a new signature and expiry, the
/// same release) is seen, and changes nothing on the device.
#[test]
fn ota_publish_to_nginx_then_install_update_and_resign() {
    let mut repo = crate::util::small_app();
    let publisher = crate::util::publisher::Publisher::new();
    let repo_path = repo.path().to_str().unwrap().to_owned();
    publisher.publish(&["--repo", &repo_path, "--ref", "v1.0.0"]);
    let nginx = Nginx::serve(&publisher.site);
    let proxy = Proxy::to(nginx.port());
    let key = format!("public_key = {:?}", publisher.public_key());
    let device = Device::on_site(&proxy.url(), &key);
    device.ota_expect(&["update"], 0);
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));

    repo.write("main.py", "print('v2')\n").remove("lib/util.py");
    repo.write("lib/extra.py", "EXTRA = 1\n");
    repo.commit("v2");
    repo.tag("v2.0.0");
    publisher.publish(&["--repo", &repo_path, "--ref", "v2.0.0"]);
    let before = proxy.requests().len();
    let out = device.ota_expect(&["update", "--json"], 0);
    assert_eq!(device.tree(), repo.snapshot("v2.0.0"), "{out}");
    let asked = proxy.requests()[before..].to_vec();
    let objects = asked.iter().filter(|r| r.contains("/objects/")).count();
    // The file list is not read again: the change list from v1's, which the device kept,
    // gives it. Then main.py and lib/extra.py: the deleted file costs nothing, the rest is
    // kept.
    let index = crate::util::publisher::read_manifest(&publisher.site.join("manifest.json"));
    let change = &index.changes[0].object;
    let change = ota::signed::object_path(&change.sha256, change.encoding);
    assert_eq!(
        asked.iter().filter(|r| r.contains(&change)).count(),
        1,
        "{asked:?}"
    );
    assert_eq!(objects, 1 + 2, "{asked:?}");
    assert_eq!(
        asked.len(),
        2 + 1 + 2,
        "manifest, signature, change list, 2 objects: {asked:?}"
    );

    // Re-signing the same tag: a new counter and expiry, the same release. The manifest's
    // mtime moves to a later second even within the same second, so nginx's ETag changes
    // and the device sees the new manifest, verifies it, and installs nothing.
    let mtime = |p: &std::path::Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let manifest = publisher.site.join("manifest.json");
    let first = mtime(&manifest);
    let again = publisher.publish(&["--repo", &repo_path, "--ref", "v2.0.0"]);
    assert_eq!(again["counter"], 3);
    assert!(mtime(&manifest) > first);
    let before = proxy.requests().len();
    let out = compact(&device.ota_expect(&["update", "--json"], 0));
    let asked = proxy.requests()[before..].to_vec();
    assert_eq!(asked.len(), 2, "manifest and signature only: {asked:?}");
    assert!(out.contains("\"counter\":3"), "{out}");
    assert_eq!(device.tree(), repo.snapshot("v2.0.0"));
}

/// Compressed objects keep the connection alive: each is read to the end of its HTTP body,
/// so 20 gzip objects travel over the few connections of the parallel downloads.
#[test]
fn a_zstd_object_that_needs_more_than_a_1_mib_window_is_refused() {
    let asked = refused("integrity", "", |site, keys| {
        let mut release = v2();
        // 3 MiB whose repeats lie 2 MiB apart: only a window past 1 MiB finds them.
        let half: Vec<u8> = crate::util::noise(2 << 20, 9);
        let content = [&half[..], &half[..1 << 20]].concat();
        release.files.insert("lib/big.py".into(), content.clone());
        release.compress = false;
        site.publish(keys, &release);
        let mut encoder = zstd::Encoder::new(Vec::new(), 3).unwrap();
        encoder.window_log(23).unwrap();
        encoder.long_distance_matching(true).unwrap();
        std::io::Write::write_all(&mut encoder, &content).unwrap();
        let frame = encoder.finish().unwrap();
        assert!(frame.len() < content.len() * 3 / 4, "{} bytes", frame.len());
        let sha256 = ota::Sha256::of(&content);
        site.write(&ota::signed::object_path(&sha256, Encoding::Zstd), &frame);
        site.resign(keys, |m| {
            let file = m.files.iter_mut().find(|f| f.path == "lib/big.py").unwrap();
            file.encoding = Encoding::Zstd;
            file.stored_size = Some(frame.len() as u64);
        });
    });
    // Refused at once: asking again would bring the same frame.
    let frames = asked.iter().filter(|r| r.contains(".zst")).count();
    assert_eq!(frames, 1, "{asked:?}");
}

#[test]
fn a_compressed_object_that_does_not_decode_is_refused_without_retries() {
    let asked = refused("integrity", "", |site, keys| {
        let mut release = v2();
        let big = "print('a changed line')\n".repeat(600);
        release.files.insert("lib/big.py".into(), big.into_bytes());
        let manifest = site.publish(keys, &release);
        let object = Site::object_of(&manifest, "lib/big.py");
        // A gzip header, then bytes that are no deflate stream, re-signed to its size:
        // only decoding tells.
        let mut broken = crate::util::site::gzip(b"print('a changed line')\n")[..10].to_vec();
        broken.extend(crate::util::noise(4000, 3));
        site.write(&object, &broken);
        site.resign(keys, |m| {
            let file = m.files.iter_mut().find(|f| f.path == "lib/big.py").unwrap();
            file.stored_size = Some(broken.len() as u64);
        });
    });
    let tries = asked.iter().filter(|r| r.contains(".gz")).count();
    assert_eq!(tries, 1, "{asked:?}");
}

#[test]
fn gzip_objects_reuse_connections() {
    let keys = Keys::new();
    let site = Site::new();
    let bodies: Vec<(String, String)> = (0..20)
        .map(|i| (format!("lib/m{i}.py"), format!("VALUE = {i}\n").repeat(300)))
        .collect();
    let files: Vec<(&str, &str)> = bodies
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let release = Release::new("v1.0.0", 1, &files);
    let manifest = site.publish(&keys, &release);
    let gzip = manifest
        .files
        .iter()
        .filter(|f| f.encoding == ota::signed::Encoding::Gzip)
        .count();
    assert_eq!(gzip, 20, "every file is stored compressed");
    let nginx = Nginx::serve(site.root());
    let proxy = Proxy::to(nginx.port());
    let device = Device::on_site(&proxy.url(), &key_line(&keys));
    device.ota_expect(&["update"], 0);
    assert_eq!(device.tree(), tree_of(&release));
    let connections = proxy.connections();
    assert_eq!(proxy.totals().requests, 22, "{:?}", proxy.requests());
    // The manifest's connection, then at most one per parallel download (4 by default).
    assert!(connections.len() <= 5, "{} connections", connections.len());
}
