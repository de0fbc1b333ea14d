//! The GitHub source with `public_key`: releases carry ota's signed manifest as the assets
//! `manifest.json` and `manifest.json.minisig`, signed here with the real `minisign` CLI.

use std::path::{Path, PathBuf};
use std::process::Command;

use ota::signed::{FORMAT, ReleaseFile, ReleaseManifest};
use ota::{Kind, ObjectId, Sha256};
use tempfile::TempDir;

use crate::util::{Device, GitRepo, serve_with, small_app};

/// A minisign key pair made by `minisign -G -W` (no password).
struct Keys {
    dir: TempDir,
}

impl Keys {
    fn new() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("minisign")
            .args(["-G", "-W", "-p"])
            .arg(dir.path().join("ota.pub"))
            .arg("-s")
            .arg(dir.path().join("ota.key"))
            .status()
            .expect("minisign runs (.ci/run installs it)");
        assert!(status.success());
        Keys { dir }
    }

    fn public(&self) -> PathBuf {
        self.dir.path().join("ota.pub")
    }

    /// `minisign -S -s KEY -m FILE`: writes `FILE.minisig`.
    fn sign(&self, file: &Path) {
        let status = Command::new("minisign")
            .arg("-S")
            .arg("-s")
            .arg(self.dir.path().join("ota.key"))
            .arg("-m")
            .arg(file)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// The signed manifest of `tag` of `repo`: every file of the tag, expiring in `days`.
fn manifest(repo: &GitRepo, tag: &str, counter: u64, days: i64) -> ReleaseManifest {
    let commit = repo.rev(&format!("{tag}^{{commit}}"));
    let listing = repo.run(&["ls-tree", "-r", "-l", &commit]);
    let files = listing
        .lines()
        .map(|line| {
            let (meta, path) = line.split_once('\t').unwrap();
            let fields: Vec<&str> = meta.split_whitespace().collect();
            let blob = fields[2];
            let content = repo.blob(blob);
            ReleaseFile {
                path: path.to_owned(),
                kind: if fields[0] == "100755" {
                    Kind::Executable
                } else {
                    Kind::File
                },
                size: content.len() as u64,
                blob: ObjectId::from_hex(blob).unwrap(),
                sha256: Sha256::of(&content),
                encoding: Default::default(),
                stored_size: None,
            }
        })
        .collect();
    let now = jiff::Timestamp::now();
    let expires = now
        .checked_add(jiff::SignedDuration::from_hours(24 * days))
        .unwrap();
    ReleaseManifest {
        format: FORMAT.to_owned(),
        channel: "stable".to_owned(),
        release: tag.to_owned(),
        commit: ObjectId::from_hex(&commit).unwrap(),
        counter,
        created: now.to_string(),
        expires: expires.to_string(),
        rollout_percent: None,
        files,
        file_list: None,
        changes: Vec::new(),
        pack_size: None,
        patches: Vec::new(),
    }
}

/// Puts `manifest` as the asset `manifest.json` of `tag`, signed by `keys` when given.
fn publish(assets: &Path, tag: &str, manifest: &ReleaseManifest, keys: Option<&Keys>) {
    let dir = assets.join(tag);
    std::fs::create_dir_all(&dir).unwrap();
    let _ = std::fs::remove_file(dir.join("manifest.json.minisig"));
    let path = dir.join("manifest.json");
    std::fs::write(&path, serde_json::to_vec_pretty(manifest).unwrap()).unwrap();
    if let Some(keys) = keys {
        keys.sign(&path);
    }
}

struct Fleet {
    repo: GitRepo,
    assets: TempDir,
    keys: Keys,
    server: ota_serve::Server,
    device: Device,
}

fn fleet() -> Fleet {
    let repo = small_app();
    let keys = Keys::new();
    let assets = tempfile::tempdir().unwrap();
    publish(
        assets.path(),
        "v1.0.0",
        &manifest(&repo, "v1.0.0", 1, 30),
        Some(&keys),
    );
    let server = serve_with(repo.path(), |o| o.assets = Some(assets.path().to_owned()));
    let device = Device::new(&server, "");
    device.configure("source", &format!("public_key_file = {:?}", keys.public()));
    Fleet {
        repo,
        assets,
        keys,
        server,
        device,
    }
}

fn v2(repo: &mut GitRepo) {
    repo.write("main.py", "print('v2')\n");
    repo.commit("v2");
    repo.tag("v2.0.0");
}

#[test]
fn a_release_signed_with_minisign_installs_with_fewer_api_requests_than_the_tree() {
    let f = fleet();
    f.device.ota_expect(&["update"], 0);
    assert_eq!(f.device.tree(), f.repo.snapshot("v1.0.0"));
    let signed = f.server.stats();
    assert_eq!(
        signed.api_requests, 1,
        "releases/latest only: {:#?}",
        signed.log
    );
    assert_eq!(signed.asset_requests, 2, "manifest.json and its signature");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.device.target.join(".ota/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["release"]["counter"], 1, "{state}");

    // The same release without a key: the tag and the tree cost two more API requests.
    let plain = serve_with(f.repo.path(), |_| {});
    let device = Device::new(&plain, "");
    device.ota_expect(&["update"], 0);
    assert_eq!(device.tree(), f.repo.snapshot("v1.0.0"));
    let tree = plain.stats();
    assert_eq!(tree.api_requests, 3, "{:#?}", tree.log);
    assert!(signed.api_requests < tree.api_requests);
}

/// v2 published by `prepare`, then refused as `kind` with v1 intact.
fn refused(prepare: impl Fn(&Fleet), kind: &str) {
    let mut f = fleet();
    f.device.ota_expect(&["update"], 0);
    let v1 = f.device.tree();
    v2(&mut f.repo);
    prepare(&f);
    let out = f.device.ota(&["update"]);
    assert!(!out.status.success(), "{kind}: refused");
    assert_eq!(f.device.tree(), v1, "{kind}: the installed tree is intact");
    let error = f.device.last_error().unwrap();
    assert_eq!(error["kind"], kind, "{error}");
}

#[test]
fn a_release_without_a_valid_signed_manifest_is_refused() {
    // No assets at all.
    refused(|_| {}, "missing_signature");
    // A manifest without its signature.
    refused(
        |f| {
            publish(
                f.assets.path(),
                "v2.0.0",
                &manifest(&f.repo, "v2.0.0", 2, 30),
                None,
            )
        },
        "missing_signature",
    );
    // Signed by a key the device does not trust.
    refused(
        |f| {
            let other = Keys::new();
            let m = manifest(&f.repo, "v2.0.0", 2, 30);
            publish(f.assets.path(), "v2.0.0", &m, Some(&other));
        },
        "untrusted_key",
    );
    // Expired.
    refused(
        |f| {
            let m = manifest(&f.repo, "v2.0.0", 2, -1);
            publish(f.assets.path(), "v2.0.0", &m, Some(&f.keys));
        },
        "expired",
    );
    // Altered after signing.
    refused(
        |f| {
            let m = manifest(&f.repo, "v2.0.0", 2, 30);
            publish(f.assets.path(), "v2.0.0", &m, Some(&f.keys));
            let path = f.assets.path().join("v2.0.0/manifest.json");
            let text = std::fs::read_to_string(&path).unwrap();
            std::fs::write(&path, text.replace("\"counter\": 2", "\"counter\": 3")).unwrap();
        },
        "bad_signature",
    );
    // A counter lower than the installed release's: a rollback.
    refused(
        |f| {
            let m = manifest(&f.repo, "v2.0.0", 0, 30);
            publish(f.assets.path(), "v2.0.0", &m, Some(&f.keys));
        },
        "downgrade",
    );
    // A valid manifest of another release, copied onto this one.
    refused(
        |f| {
            let m = manifest(&f.repo, "v1.0.0", 2, 30);
            publish(f.assets.path(), "v2.0.0", &m, Some(&f.keys));
        },
        "bad_manifest",
    );
    // A static site's manifest, which names its file list as an object of that site: a
    // release asset must list the files (the site's release record does).
    refused(
        |f| {
            let mut m = manifest(&f.repo, "v2.0.0", 2, 30);
            let list = serde_json::to_vec(&m.files).unwrap();
            m.format = ota::signed::FORMAT_INDEX.to_owned();
            m.files.clear();
            m.file_list = Some(ota::signed::ObjectRef {
                sha256: ota::Sha256::of(&list),
                size: list.len() as u64,
                encoding: Default::default(),
                stored_size: None,
            });
            publish(f.assets.path(), "v2.0.0", &m, Some(&f.keys));
        },
        "bad_manifest",
    );
}

#[test]
fn a_public_key_on_the_developer_channel_is_refused_at_load() {
    let f = fleet();
    f.device
        .configure("", "channel = \"developer\"\nbranch = \"main\"");
    let out = f.device.ota_expect(&["check"], 1);
    assert!(out.contains("branch tip"), "{out}");
    assert!(!f.device.target.join("main.py").exists());
}

#[test]
fn a_private_repository_reads_the_assets_through_the_asset_api_and_its_redirect() {
    let repo = small_app();
    let keys = Keys::new();
    let assets = tempfile::tempdir().unwrap();
    publish(
        assets.path(),
        "v1.0.0",
        &manifest(&repo, "v1.0.0", 1, 30),
        Some(&keys),
    );
    let server = serve_with(repo.path(), |o| {
        o.assets = Some(assets.path().to_owned());
        o.token = Some("ghp_private0123456789".into());
        o.redirect_assets = true;
    });
    let device = Device::new(&server, "");
    device.configure("source", &format!("public_key_file = {:?}", keys.public()));
    device.configure("source", "token = \"ghp_private0123456789\"");
    device.ota_expect(&["update"], 0);
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));
    let log = server.stats().log;
    let asked: Vec<&str> = log.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        asked
            .iter()
            .filter(|p| p.contains("/releases/assets/"))
            .count(),
        2,
        "the asset API, then the redirect: {asked:#?}"
    );
}

/// The same site again on the same address. The release answer carries download counts,
/// which an update raises: a fresh server answers what the device cached, so that a
/// conditional check can get its 304.
fn restarted(mut f: Fleet) -> Fleet {
    let addr = f.server.addr();
    drop(f.server);
    f.server = serve_with(f.repo.path(), |o| {
        o.assets = Some(f.assets.path().to_owned());
        o.addr = addr;
    });
    f
}

#[test]
fn a_304_stands_for_a_signed_release_only_until_its_manifest_expires() {
    let f = fleet();
    f.device.ota_expect(&["update"], 0);
    let cache_path = f.device.target.join(".ota/cache.json");
    let mut cache: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cache_path).unwrap()).unwrap();
    assert!(cache["validator"]["expires"].is_string(), "{cache}");

    let f = restarted(f);
    f.device.ota_expect(&["check"], 0);
    let stats = f.server.stats();
    assert_eq!(
        (stats.requests, stats.not_modified),
        (1, 1),
        "{:#?}",
        stats.log
    );

    // Once the cached manifest has expired, the device asks without a condition and checks
    // the signed manifest again.
    cache["validator"]["expires"] = "2020-01-01T00:00:00Z".into();
    std::fs::write(&cache_path, serde_json::to_vec(&cache).unwrap()).unwrap();
    let f = restarted(f);
    f.device.ota_expect(&["check"], 0);
    let stats = f.server.stats();
    assert_eq!(stats.not_modified, 0, "{:#?}", stats.log);
    assert!(stats.log[0].if_none_match.is_none(), "{:#?}", stats.log);
    assert_eq!(
        stats.asset_requests, 2,
        "the manifest and its signature again"
    );
}

/// A check of the installed signed release reads no asset while its manifest is fresh, even
/// though the release's answer changed (its assets' download counts): one API request.
#[test]
fn a_check_of_the_installed_signed_release_is_one_request_while_fresh() {
    let f = fleet();
    f.device.ota_expect(&["update"], 0);
    let before = f.server.stats();
    let out = f.device.ota_expect(&["check"], 0);
    let after = f.server.stats();
    assert_eq!(after.api_requests - before.api_requests, 1, "{out}");
    assert_eq!(
        after.asset_requests, before.asset_requests,
        "{:#?}",
        after.log
    );
    assert_eq!(after.not_modified, before.not_modified, "a 200, not a 304");
    let cache: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.device.target.join(".ota/cache.json")).unwrap())
            .unwrap();
    assert!(cache["validator"]["expires"].is_string(), "{cache}");
}
