//! The original updater's `manifest.json` release asset, made by its generator's rules with
//! real Python (`tests/fixtures/original_manifest.py`), consumed by the GitHub source.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::util::{Device, GitRepo, Tree, serve_with, tables};

const KEY: &str = "fleet-shared-key";

/// Runs the generator on the work tree of `repo` (as it is now) into the assets of `tag`.
fn generate(repo: &GitRepo, assets: &Path, tag: &str, args: &[&str]) -> PathBuf {
    let dir = assets.join(tag);
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("manifest.json");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/original_manifest.py");
    let status = Command::new("python3")
        .arg(script)
        .arg(repo.path())
        .arg(&out)
        .args(args)
        .status()
        .expect("python3 runs (.ci/run installs it)");
    assert!(status.success());
    out
}

/// v1.0.0: a non-ASCII path, an extra file the manifest leaves out.
fn app_v1() -> GitRepo {
    let mut repo = GitRepo::new();
    repo.write("main.py", "print('v1')\n")
        .write("lib/café.py", "CAFE = 1\n")
        .write("old.py", "gone in v2\n")
        .write("notes.txt", "not in the manifest\n");
    repo.commit("v1");
    repo.tag("v1.0.0");
    repo
}

fn app_v2(repo: &mut GitRepo) {
    repo.write("main.py", "print('v2')\n").remove("old.py");
    repo.commit("v2");
    repo.tag("v2.0.0");
}

struct Fleet {
    repo: GitRepo,
    assets: TempDir,
    server: ota_serve::Server,
    device: Device,
}

/// v1.0.0 with a signed manifest (non-ASCII version), a device with `manifest_key` and a
/// recording `post_update` command for `migrate`.
fn fleet() -> Fleet {
    let repo = app_v1();
    let assets = tempfile::tempdir().unwrap();
    generate(
        &repo,
        assets.path(),
        "v1.0.0",
        &[
            "--key",
            KEY,
            "--version",
            "1.0-é ☃",
            "--post-update",
            "migrate",
            "--skip",
            "notes.txt",
        ],
    );
    let server = serve_with(repo.path(), |o| o.assets = Some(assets.path().to_owned()));
    let device = Device::new(&server, "");
    device.configure("source", &format!("manifest_key = \"{KEY}\""));
    let record = device.home().join("post_update.log");
    tables(
        &device,
        &format!(
            "[after_update]\npost_update = {{ migrate = \"echo migrate $OTA_RELEASE >> '{}'\" }}\n",
            record.display()
        ),
    );
    Fleet {
        repo,
        assets,
        server,
        device,
    }
}

fn without(mut tree: Tree, path: &str) -> Tree {
    assert!(tree.remove(path).is_some(), "{path} was there");
    tree
}

fn post_update_log(device: &Device) -> String {
    std::fs::read_to_string(device.home().join("post_update.log")).unwrap_or_default()
}

#[test]
fn a_manifest_made_by_the_original_generator_installs_its_files_and_runs_post_update() {
    let f = fleet();
    let out = f.device.ota_expect(&["update"], 0);
    let expected = without(f.repo.snapshot("v1.0.0"), "notes.txt");
    assert_eq!(f.device.tree(), expected, "the listed files, not notes.txt");
    assert!(
        out.contains("notes.txt"),
        "a warning names the unlisted file: {out}"
    );
    assert!(out.contains("1.0-é ☃"), "the version is shown: {out}");
    assert!(
        post_update_log(&f.device).starts_with("migrate v1.0.0"),
        "{}",
        post_update_log(&f.device)
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.device.target.join(".ota/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["release"]["post_update"], "migrate", "{state}");

    // Checking the installed release again reads the release answer, not the manifest.
    f.server.reset_stats();
    f.device.ota_expect(&["check"], 0);
    let stats = f.server.stats();
    assert_eq!(
        (stats.api_requests, stats.asset_requests),
        (1, 0),
        "{:#?}",
        stats.log
    );
}

#[test]
fn a_post_update_name_not_in_the_allow_list_runs_nothing() {
    let mut f = fleet();
    f.device.ota_expect(&["update"], 0);
    app_v2(&mut f.repo);
    generate(
        &f.repo,
        f.assets.path(),
        "v2.0.0",
        &[
            "--key",
            KEY,
            "--post-update",
            "rm-rf",
            "--skip",
            "notes.txt",
        ],
    );
    let out = f.device.ota_expect(&["update"], 0);
    let expected = without(f.repo.snapshot("v2.0.0"), "notes.txt");
    assert_eq!(f.device.tree(), expected);
    assert!(out.contains("post_update \"rm-rf\""), "{out}");
    assert_eq!(
        post_update_log(&f.device).lines().count(),
        1,
        "only v1's allow-listed migrate ran"
    );
}

/// Edits v2's generated manifest.json with `edit` (on the parsed JSON) and expects `kind`.
fn refused_after(edit: impl Fn(&mut serde_json::Value), key: &str, kind: &str) {
    let mut f = fleet();
    f.device.ota_expect(&["update"], 0);
    let v1 = f.device.tree();
    app_v2(&mut f.repo);
    let path = generate(
        &f.repo,
        f.assets.path(),
        "v2.0.0",
        &["--key", key, "--skip", "notes.txt"],
    );
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut manifest);
    std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let out = f.device.ota(&["update"]);
    assert!(!out.status.success(), "{kind}: refused");
    let shown = String::from_utf8_lossy(&out.stderr);
    assert!(
        shown.contains("checking the manifest.json of release v2.0.0 of acme/app"),
        "{shown}"
    );
    assert_eq!(f.device.tree(), v1, "{kind}: the installed tree is intact");
    let error = f.device.last_error().unwrap();
    assert_eq!(error["kind"], kind, "{error}");
    let _ = f.server.stats();
}

fn file(manifest: &mut serde_json::Value, path: &str) -> serde_json::Value {
    manifest["files"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|f| f["path"] == path)
        .unwrap()
        .take()
}

/// Puts `entry` back where [`file`] took one out.
fn put(manifest: &mut serde_json::Value, entry: serde_json::Value) {
    let files = manifest["files"].as_array_mut().unwrap();
    let slot = files.iter_mut().find(|f| f.is_null()).unwrap();
    *slot = entry;
}

#[test]
fn tampered_manifests_are_refused_with_the_tree_intact() {
    let sha = "ab".repeat(32);
    refused_after(
        |m| {
            let mut e = file(m, "main.py");
            e["sha256"] = sha.clone().into();
            put(m, e);
        },
        KEY,
        "bad_signature",
    );
    refused_after(
        |m| {
            let mut e = file(m, "main.py");
            e["size"] = 5.into();
            put(m, e);
        },
        KEY,
        "bad_signature",
    );
    refused_after(
        |m| {
            let mut e = file(m, "main.py");
            e["path"] = "main2.py".into();
            put(m, e);
        },
        KEY,
        "bad_signature",
    );
    refused_after(|m| m["version"] = "9.9".into(), KEY, "bad_signature");
    refused_after(
        |m| {
            m.as_object_mut().unwrap().remove("signature");
        },
        KEY,
        "missing_signature",
    );
    refused_after(|_| {}, "another-key", "bad_signature");
}

#[test]
fn a_release_without_the_manifest_is_refused_when_manifest_key_is_set() {
    let mut f = fleet();
    f.device.ota_expect(&["update"], 0);
    let v1 = f.device.tree();
    app_v2(&mut f.repo);
    let out = f.device.ota(&["update"]);
    assert!(!out.status.success());
    assert_eq!(f.device.tree(), v1);
    assert_eq!(f.device.last_error().unwrap()["kind"], "missing_signature");
    let shown = String::from_utf8_lossy(&out.stderr);
    assert!(
        shown.contains(
            "release v2.0.0 of acme/app has no `manifest.json` asset, and `manifest_key` is set"
        ),
        "{shown}"
    );
}

#[test]
fn without_manifest_key_a_manifest_that_contradicts_the_tree_is_refused() {
    for (edit, why) in [
        (
            Box::new(|m: &mut serde_json::Value| {
                let mut e = file(m, "main.py");
                e["size"] = 5.into();
                put(m, e);
            }) as Box<dyn Fn(&mut serde_json::Value)>,
            "main.py with 5 bytes",
        ),
        (
            Box::new(|m: &mut serde_json::Value| {
                let mut e = file(m, "main.py");
                e["path"] = "nowhere.py".into();
                put(m, e);
            }),
            "nowhere.py, which is not a file",
        ),
    ] {
        let repo = app_v1();
        let assets = tempfile::tempdir().unwrap();
        let path = generate(&repo, assets.path(), "v1.0.0", &[]);
        let mut manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        edit(&mut manifest);
        std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
        let server = serve_with(repo.path(), |o| o.assets = Some(assets.path().to_owned()));
        let device = Device::new(&server, "");
        let out = device.ota(&["update"]);
        assert!(!out.status.success());
        let error = device.last_error().unwrap();
        assert_eq!(error["kind"], "bad_manifest", "{error}");
        assert!(error.to_string().contains(why), "{error}");
        assert!(!device.target.join("main.py").exists(), "nothing installed");
    }
}

#[test]
fn a_file_whose_content_differs_from_the_manifest_sha256_is_refused() {
    let repo = app_v1();
    let assets = tempfile::tempdir().unwrap();
    let path = generate(&repo, assets.path(), "v1.0.0", &["--key", KEY]);
    // Re-sign a manifest whose sha256 of main.py is wrong but whose size is right: the
    // HMAC verifies, the tree agrees, only the content's digest tells.
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut e = file(&mut manifest, "main.py");
    e["sha256"] = "ab".repeat(32).into();
    put(&mut manifest, e);
    let object = manifest.as_object_mut().unwrap();
    object.remove("signature");
    let canonical = ota::original::canonical(&serde_json::Value::Object(object.clone())).unwrap();
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
    mac.update(&canonical);
    object.insert(
        "signature".into(),
        hex::encode(mac.finalize().into_bytes()).into(),
    );
    std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let server = serve_with(repo.path(), |o| o.assets = Some(assets.path().to_owned()));
    let device = Device::new(&server, "");
    device.configure("source", &format!("manifest_key = \"{KEY}\""));
    let out = device.ota(&["update"]);
    assert!(!out.status.success());
    assert!(!device.target.join("main.py").exists(), "nothing installed");
    let error = device.last_error().unwrap();
    assert_eq!(error["kind"], "integrity", "{error}");
    assert!(error.to_string().contains("main.py"), "{error}");
}

#[test]
fn deletes_remove_only_files_ota_installed() {
    let mut f = fleet();
    f.device.ota_expect(&["update"], 0);
    std::fs::write(f.device.target.join("local.txt"), "the user's own\n").unwrap();
    app_v2(&mut f.repo);
    generate(
        &f.repo,
        f.assets.path(),
        "v2.0.0",
        &[
            "--key",
            KEY,
            "--skip",
            "notes.txt",
            "--delete",
            "old.py",
            "--delete",
            "local.txt",
        ],
    );
    f.device.ota_expect(&["update"], 0);
    assert!(
        !f.device.target.join("old.py").exists(),
        "installed by ota: removed"
    );
    assert_eq!(
        std::fs::read_to_string(f.device.target.join("local.txt")).unwrap(),
        "the user's own\n",
        "not installed by ota: left alone"
    );
}

#[test]
fn a_path_both_listed_and_deleted_is_refused() {
    let repo = app_v1();
    let assets = tempfile::tempdir().unwrap();
    generate(
        &repo,
        assets.path(),
        "v1.0.0",
        &["--key", KEY, "--delete", "main.py"],
    );
    let server = serve_with(repo.path(), |o| o.assets = Some(assets.path().to_owned()));
    let device = Device::new(&server, "");
    device.configure("source", &format!("manifest_key = \"{KEY}\""));
    assert!(!device.ota(&["update"]).status.success());
    assert_eq!(device.last_error().unwrap()["kind"], "bad_manifest");
    assert!(!device.target.join("main.py").exists());
}

#[test]
fn what_ota_publish_format_original_renders_is_what_python_signs() {
    // `render` with the files of v1 gives the same bytes Python's generator signs.
    let repo = app_v1();
    let assets = tempfile::tempdir().unwrap();
    let path = generate(
        &repo,
        assets.path(),
        "v1.0.0",
        &[
            "--key",
            KEY,
            "--version",
            "1.0-é ☃",
            "--post-update",
            "migrate",
        ],
    );
    let python: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let files: Vec<ota::original::OriginalFile> = ["main.py", "lib/café.py", "old.py", "notes.txt"]
        .iter()
        .map(|p| ota::original::OriginalFile::of(*p, &std::fs::read(repo.path().join(p)).unwrap()))
        .collect();
    let ours = ota::original::render(
        &files,
        &[],
        Some("1.0-é ☃"),
        Some("migrate"),
        Some(KEY.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(ours).unwrap(),
        String::from_utf8(ota::original::canonical(&python).unwrap()).unwrap()
    );
}

#[test]
fn after_a_304_the_release_is_asked_again_for_its_manifest() {
    let mut f = fleet();
    f.device.ota_expect(&["update"], 0);
    app_v2(&mut f.repo);
    generate(
        &f.repo,
        f.assets.path(),
        "v2.0.0",
        &[
            "--key",
            KEY,
            "--skip",
            "notes.txt",
            "--post-update",
            "migrate",
        ],
    );
    // `check` caches the validator of v2's answer; `update` then gets a 304 and must read
    // the release (and its manifest) again before it can list the files. The release JSON
    // carries the assets' download counts (as GitHub's does), which `check` itself raised:
    // a fresh server on the same address starts them from 0 again, so the answer matches.
    f.device.ota_expect(&["check"], 100);
    let addr = f.server.addr();
    drop(f.server);
    f.server = serve_with(f.repo.path(), |o| {
        o.assets = Some(f.assets.path().to_owned());
        o.addr = addr;
    });
    f.device.ota_expect(&["update"], 0);
    let stats = f.server.stats();
    assert_eq!(stats.not_modified, 1, "{:#?}", stats.log);
    let expected = without(f.repo.snapshot("v2.0.0"), "notes.txt");
    assert_eq!(f.device.tree(), expected, "v2's manifest was used");
    assert!(post_update_log(&f.device).contains("migrate v2.0.0"));
}

#[test]
fn a_release_never_writes_the_manifest_key_file() {
    use std::os::unix::fs::PermissionsExt;
    let mut repo = GitRepo::new();
    repo.write("main.py", "print('v1')\n")
        .write("secrets/hmac", "attacker-key\n");
    repo.commit("v1 ships a key");
    repo.tag("v1.0.0");
    let assets = tempfile::tempdir().unwrap();
    generate(&repo, assets.path(), "v1.0.0", &["--key", KEY]);
    let server = serve_with(repo.path(), |o| o.assets = Some(assets.path().to_owned()));
    let device = Device::new(&server, "");
    let key_file = device.target.join("secrets/hmac");
    std::fs::create_dir_all(key_file.parent().unwrap()).unwrap();
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    device.configure("source", &format!("manifest_key_file = {key_file:?}"));
    let out = device.ota_expect(&["update"], 0);
    assert!(
        out.contains(
            "secrets/hmac is not installed: it would overwrite this device's manifest key file"
        ),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap(),
        format!("{KEY}\n")
    );
    assert!(device.target.join("main.py").exists());
}

/// Runs the real `ota publish` with `args`; returns stdout + stderr.
fn ota_publish(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ota"))
        .arg("publish")
        .args(args)
        .env_remove("OTA_HMAC_KEY")
        .output()
        .unwrap()
}

#[test]
fn ota_publish_format_original_writes_what_python_writes_and_devices_accept() {
    let repo = app_v1();
    let assets = tempfile::tempdir().unwrap();
    let out_dir = assets.path().join("v1.0.0");
    let key_file = assets.path().join("hmac.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let out = ota_publish(&[
        "--format",
        "original",
        "--hmac-key-file",
        key_file.to_str().unwrap(),
        "--repo",
        repo.path().to_str().unwrap(),
        "--ref",
        "v1.0.0",
        "--release-version",
        "1.0-é ☃",
        "--post-update",
        "migrate",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("4 files"), "{shown}");
    std::fs::remove_file(&key_file).unwrap();

    // Byte for byte what the original's generator writes (canonically) for the same files.
    let ours = std::fs::read(out_dir.join("manifest.json")).unwrap();
    let python_dir = tempfile::tempdir().unwrap();
    let python = generate(
        &repo,
        python_dir.path(),
        "v1.0.0",
        &[
            "--key",
            KEY,
            "--version",
            "1.0-é ☃",
            "--post-update",
            "migrate",
        ],
    );
    let python: serde_json::Value =
        serde_json::from_slice(&std::fs::read(python).unwrap()).unwrap();
    assert_eq!(
        String::from_utf8(ours).unwrap(),
        String::from_utf8(ota::original::canonical(&python).unwrap()).unwrap()
    );

    // A device with the key installs the release from it and runs the allow-listed command.
    let server = serve_with(repo.path(), |o| o.assets = Some(assets.path().to_owned()));
    let device = Device::new(&server, "");
    device.configure("source", &format!("manifest_key = \"{KEY}\""));
    let record = device.home().join("post_update.log");
    tables(
        &device,
        &format!(
            "[after_update]\npost_update = {{ migrate = \"echo migrate >> '{}'\" }}\n",
            record.display()
        ),
    );
    device.ota_expect(&["update"], 0);
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));
    assert_eq!(std::fs::read_to_string(&record).unwrap(), "migrate\n");

    // One with another key refuses it.
    let other = Device::new(&server, "");
    other.configure("source", "manifest_key = \"not-the-key\"");
    assert!(!other.ota(&["update"]).status.success());
    assert_eq!(other.last_error().unwrap()["kind"], "bad_signature");
}

#[test]
fn ota_publish_format_original_refuses_what_devices_would_refuse() {
    let repo = app_v1();
    let out_dir = tempfile::tempdir().unwrap();
    for (args, why) in [
        (&["--post-update", "rm -rf /"][..], "not a plain name"),
        (
            &["--delete", "main.py"][..],
            "both in `files` and in `deletes`",
        ),
        (&["--delete", "../etc/passwd"][..], "not a valid path"),
    ] {
        let mut all = vec![
            "--format",
            "original",
            "--repo",
            repo.path().to_str().unwrap(),
            "--ref",
            "v1.0.0",
            "--out",
            out_dir.path().to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        let out = ota_publish(&all);
        let shown = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(shown.contains(why), "{args:?}: {shown}");
        assert!(
            !out_dir.path().join("manifest.json").exists(),
            "nothing written"
        );
    }
}
