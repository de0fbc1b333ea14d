//! `ota keygen` and `ota publish`: the keys and the static site they write, checked with
//! the real `minisign` CLI and by reading the site back as a device would.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use ota::signed::{self, Encoding, ReleaseManifest, TrustedKeys};

use crate::util::publisher::{
    Publisher, object_content, objects, ota, ota_env, read_manifest, release_tree,
};
use crate::util::{GitRepo, Node, noise, repo_with_a_submodule, small_app};

/// Runs the real `minisign` CLI; returns (success, stdout + stderr).
fn minisign(args: &[&str]) -> (bool, String) {
    let out = Command::new("minisign")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("the minisign CLI (Debian package `minisign`; .ci/run installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn trusting(public_file: &std::path::Path) -> TrustedKeys {
    let mut keys = TrustedKeys::default();
    keys.add(&std::fs::read_to_string(public_file).unwrap())
        .unwrap();
    keys
}

#[test]
fn keygen_writes_a_private_minisign_key_pair_and_never_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let out = ota(&["keygen", "--out", keys.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let secret = keys.join("ota.key");
    let public = keys.join("ota.pub");
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "ota.key is readable by others");
    let public_text = std::fs::read_to_string(&public).unwrap();
    let id = report["key_id"].as_str().unwrap();
    assert_eq!(id.len(), 16);
    assert!(
        public_text.starts_with(&format!("untrusted comment: minisign public key: {id}\n")),
        "{public_text}"
    );
    assert_eq!(
        public_text.lines().nth(1).unwrap(),
        report["public_key"].as_str().unwrap()
    );
    assert_eq!(report["encrypted"], false);

    // The text output names the id and the exact line a device's config needs.
    let other = dir.path().join("other");
    let out = ota(&["keygen", "--out", other.to_str().unwrap()]);
    let shown = text(&out);
    let line = std::fs::read_to_string(other.join("ota.pub")).unwrap();
    let line = line.lines().nth(1).unwrap();
    assert!(
        shown.contains(&format!("public_key = \"{line}\"")),
        "{shown}"
    );

    // A second run refuses to replace the pair (devices trust the first); --force replaces.
    let before = std::fs::read(&secret).unwrap();
    let out = ota(&["keygen", "--out", keys.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("--force"), "{}", text(&out));
    assert_eq!(std::fs::read(&secret).unwrap(), before);
    let out = ota(&["keygen", "--out", keys.to_str().unwrap(), "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_ne!(std::fs::read(&secret).unwrap(), before);
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // The minisign CLI signs with the key (unencrypted: no password asked), and ota's
    // verification accepts what it signs; a changed byte is refused.
    let file = dir.path().join("manifest.json");
    std::fs::write(&file, b"{\"any\": \"bytes\"}\n").unwrap();
    let (ok, said) = minisign(&[
        "-S",
        "-s",
        secret.to_str().unwrap(),
        "-m",
        file.to_str().unwrap(),
    ]);
    assert!(ok, "{said}");
    let signature = std::fs::read(dir.path().join("manifest.json.minisig")).unwrap();
    let keys = trusting(&public);
    signed::verify(&keys, &std::fs::read(&file).unwrap(), &signature).unwrap();
    let refused = signed::verify(&keys, b"{\"any\": \"bytez\"}\n", &signature).unwrap_err();
    assert_eq!(refused.kind(), "bad_signature");
}

#[test]
fn a_published_release_holds_every_file_and_minisign_verifies_its_manifest() {
    let mut repo = small_app();
    repo.write_exec("bin/run", "#!/bin/sh\necho run\n")
        .symlink("current", "lib/util.py");
    repo.commit("v1.1");
    repo.tag("v1.1.0");
    let publisher = Publisher::new();
    let summary = publisher.publish(&["--repo", repo.path().to_str().unwrap(), "--ref", "v1.1.0"]);
    assert_eq!(summary["release"], "v1.1.0");
    assert_eq!(summary["counter"], 1);
    assert_eq!(summary["commit"], repo.rev("v1.1.0"));
    assert_eq!(summary["files"], 4);
    assert_eq!(summary["objects_written"], 4);
    assert_eq!(summary["record"], "releases/1.json");
    assert_eq!(summary["change_lists"], 0);

    let manifest = publisher.manifest("stable");
    assert_eq!(manifest.release, "v1.1.0");
    assert_eq!(manifest.channel, "stable");
    assert_eq!(manifest.counter, 1);
    assert_eq!(manifest.commit.to_hex(), repo.rev("v1.1.0"));
    assert_eq!(
        release_tree(&publisher.site, &manifest),
        repo.snapshot("v1.1.0")
    );
    // Default expiry: 30 days after it was signed.
    let created: jiff::Timestamp = manifest.created.parse().unwrap();
    let expires: jiff::Timestamp = manifest.expires.parse().unwrap();
    assert_eq!(expires.as_second() - created.as_second(), 30 * 24 * 3600);

    // The real minisign CLI verifies the manifest with ota.pub and shows the trusted
    // comment, which names the release and its counter.
    let site_manifest = publisher.site.join("manifest.json");
    let (ok, said) = minisign(&[
        "-V",
        "-m",
        site_manifest.to_str().unwrap(),
        "-p",
        publisher.public.to_str().unwrap(),
    ]);
    assert!(ok, "{said}");
    assert!(
        said.contains("ota release v1.1.0 channel stable counter 1"),
        "{said}"
    );
    // So does ota's own verification. The release record, signed too, lists the same
    // files inline (the format GitHub release assets use); the channel's manifest names
    // them in a file list object.
    let keys = trusting(&publisher.public);
    let bytes = std::fs::read(&site_manifest).unwrap();
    let signature = std::fs::read(publisher.site.join("manifest.json.minisig")).unwrap();
    signed::verify(&keys, &bytes, &signature).unwrap();
    let record_bytes = std::fs::read(publisher.site.join("releases/1.json")).unwrap();
    let record_sig = std::fs::read(publisher.site.join("releases/1.json.minisig")).unwrap();
    signed::verify(&keys, &record_bytes, &record_sig).unwrap();
    let record = ReleaseManifest::parse(&record_bytes).unwrap();
    assert_eq!(record.format, signed::FORMAT);
    assert_eq!(record.files, manifest.files);
    assert_eq!((record.counter, &record.expires), (1, &manifest.expires));
    let index = ReleaseManifest::parse(&bytes).unwrap();
    assert_eq!(index.format, signed::FORMAT_INDEX);
    assert!(index.files.is_empty() && index.changes.is_empty());
    // The pack holds every file but the symlink, under one top folder, with its mode.
    let list = index.file_list.unwrap().sha256;
    let pack = std::fs::read(publisher.site.join(signed::pack_path(&list))).unwrap();
    assert_eq!(Some(pack.len() as u64), index.pack_size);
    assert_eq!(summary["pack_bytes"], pack.len() as u64);
    let mut packed = std::collections::BTreeMap::new();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&pack[..]));
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_str().unwrap().to_owned();
        let mode = entry.header().mode().unwrap();
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
        packed.insert(name, (mode, content));
    }
    let expected: std::collections::BTreeMap<String, (u32, Vec<u8>)> = (repo.snapshot("v1.1.0"))
        .into_iter()
        .filter_map(|(path, node)| match node {
            Node::File(content, exec) => Some((
                format!("release/{path}"),
                (if exec { 0o755 } else { 0o644 }, content),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(packed, expected);

    // A manifest altered after signing is refused by minisign too.
    let mut altered = bytes.clone();
    let at = altered.windows(6).position(|w| w == b"v1.1.0").unwrap();
    altered[at + 5] = b'9';
    std::fs::write(&site_manifest, &altered).unwrap();
    let (ok, said) = minisign(&[
        "-V",
        "-m",
        site_manifest.to_str().unwrap(),
        "-p",
        publisher.public.to_str().unwrap(),
    ]);
    assert!(!ok, "minisign accepted an altered manifest: {said}");
    // The web server can read every file: each has the mode of a file created with 0644
    // under this process's umask (not a temporary file's 0600).
    let probe = publisher.home().join("probe");
    std::os::unix::fs::OpenOptionsExt::mode(
        std::fs::OpenOptions::new().write(true).create_new(true),
        0o644,
    )
    .open(&probe)
    .unwrap();
    let expected = std::fs::metadata(&probe).unwrap().permissions().mode() & 0o777;
    for file in objects(&publisher.site).iter().map(String::as_str).chain([
        "manifest.json",
        "manifest.json.minisig",
        "releases/1.json",
    ]) {
        let mode = std::fs::metadata(publisher.site.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, expected, "{file}");
    }
    // No temporary file is left on the site.
    let leftovers = walk_names(&publisher.site);
    assert!(
        leftovers.iter().all(|n| !n.starts_with(".tmp")),
        "{leftovers:?}"
    );
}

fn walk_names(dir: &std::path::Path) -> Vec<String> {
    let mut names = Vec::new();
    for item in std::fs::read_dir(dir).unwrap() {
        let item = item.unwrap();
        names.push(item.file_name().to_str().unwrap().to_owned());
        if item.file_type().unwrap().is_dir() {
            names.extend(walk_names(&item.path()));
        }
    }
    names
}

#[test]
fn publishing_again_reuses_objects_and_keeps_older_releases_whole() {
    let mut repo = small_app();
    repo.write("data/big.txt", noise(20_000, 7));
    repo.commit("v1 with data");
    repo.tag("v1.0.1");
    let publisher = Publisher::new();
    let repo_path = repo.path().to_str().unwrap().to_owned();
    let first = publisher.publish(&["--repo", &repo_path, "--ref", "v1.0.1"]);
    assert_eq!(first["objects_written"], 3);
    let v1 = publisher.manifest("stable");

    repo.write("main.py", "print('v2')\n");
    repo.commit("v2");
    repo.tag("v2.0.0");
    let second = publisher.publish(&["--repo", &repo_path, "--ref", "v2.0.0"]);
    // Only main.py changed: one object written, the two others reused (not rewritten).
    assert_eq!(second["objects_written"], 1, "{second}");
    assert_eq!(second["change_lists"], 1, "{second}");
    assert_eq!(second["objects_reused"], 2, "{second}");
    assert_eq!(second["bytes_written"], 12);
    assert_eq!(second["counter"], 2);
    let v2 = publisher.manifest("stable");
    assert_eq!(v2.release, "v2.0.0");
    assert!(v2.counter > v1.counter);

    // Both releases can still be installed whole from the site.
    let record = read_manifest(&publisher.site.join("releases/1.json"));
    assert_eq!(record.files, v1.files);
    assert_eq!(release_tree(&publisher.site, &v1), repo.snapshot("v1.0.1"));
    assert_eq!(release_tree(&publisher.site, &v2), repo.snapshot("v2.0.0"));
    // Four file contents, the two file lists, and the change list from v1's to v2's.
    assert_eq!(objects(&publisher.site).len(), 4 + 3);
    let index = read_manifest(&publisher.site.join("manifest.json"));
    assert_eq!(index.changes.len(), 1);
    assert_eq!(index.changes[0].from, v1.file_list.unwrap().sha256);

    // The same ref again: a new counter and signature, the same commit, nothing written.
    let third = publisher.publish(&["--repo", &repo_path, "--ref", "v2.0.0"]);
    assert_eq!(third["counter"], 3);
    assert_eq!(third["objects_written"], 0);
    assert_eq!(third["commit"], repo.rev("v2.0.0"));
}

#[test]
fn keep_prunes_compressed_objects_too() {
    let mut repo = GitRepo::new();
    let path = repo.path().to_str().unwrap().to_owned();
    let publisher = Publisher::new();
    let mut stored = Vec::new();
    for n in 1..=2 {
        let log: String = (0..500)
            .map(|i| format!("release {n}, line {i}\n"))
            .collect();
        repo.write("log.txt", log);
        repo.commit(&format!("r{n}"));
        repo.tag(&format!("r{n}"));
        publisher.publish(&["--repo", &path, "--ref", &format!("r{n}"), "--keep", "1"]);
        let manifest = publisher.manifest("stable");
        let file = manifest.files.iter().find(|f| f.path == "log.txt").unwrap();
        assert_eq!(file.encoding, Encoding::Zstd);
        stored.push(signed::object_path(&file.sha256, file.encoding));
    }
    // r1's compressed log.txt went with r1; r2's stays.
    assert!(!publisher.site.join(&stored[0]).exists(), "{}", stored[0]);
    assert!(publisher.site.join(&stored[1]).exists());
}

#[test]
fn a_patch_no_smaller_than_the_file_is_not_kept() {
    let mut repo = GitRepo::new();
    let path = repo.path().to_str().unwrap().to_owned();
    let publisher = Publisher::new();
    for n in 1..=2 {
        // Random bytes rewritten whole: a patch is all new data, no smaller than the file.
        repo.write("data.bin", noise(20_000, n));
        repo.commit(&format!("r{n}"));
        repo.tag(&format!("r{n}"));
        let summary = publisher.publish(&["--repo", &path, "--ref", &format!("r{n}")]);
        assert_eq!(summary["patches"], 0, "{summary}");
    }
    assert!(publisher.manifest("stable").patches.is_empty());
    assert!(
        !publisher.site.join("patches").exists(),
        "nothing left of the patch"
    );
}

#[test]
fn keep_prunes_old_releases_and_the_objects_only_they_used() {
    let mut repo = GitRepo::new();
    let repo_path = repo.path().to_str().unwrap().to_owned();
    let publisher = Publisher::new();
    for n in 1..=3 {
        repo.write("shared.txt", "the same in every release\n")
            .write("version.txt", format!("release {n}\n"));
        repo.commit(&format!("r{n}"));
        repo.tag(&format!("r{n}"));
    }
    publisher.publish(&["--repo", &repo_path, "--ref", "r1"]);
    // A beta channel release, which stable's pruning leaves alone.
    publisher.publish(&["--repo", &repo_path, "--ref", "r1", "--channel", "beta"]);
    publisher.publish(&["--repo", &repo_path, "--ref", "r2"]);
    let summary = publisher.publish(&["--repo", &repo_path, "--ref", "r3", "--keep", "1"]);
    assert_eq!(summary["counter"], 4);
    // Stable's records 1 (r1) and 3 (r2) go; beta's record 2 stays.
    assert_eq!(summary["pruned_releases"], serde_json::json!([1, 3]));
    // version.txt of r2 goes, with r2's file list and the change list from r1 to r2; r1's
    // version.txt and file list stay (beta's current release lists them), and so do the
    // change lists from r1 and r2 to r3 (stable's manifest names them).
    assert_eq!(summary["pruned_objects"], 3, "{summary}");
    // So do the packs of r2 (and of r1 on stable: the same files as beta's r1, whose pack
    // stays).
    assert_eq!(summary["pruned_packs"], 1, "{summary}");
    let site = &publisher.site;
    assert!(!site.join("releases/1.json").exists());
    assert!(!site.join("releases/3.json").exists());
    assert!(!site.join("releases/3.json.minisig").exists());
    assert!(site.join("releases/2.json").exists());
    assert!(site.join("releases/4.json").exists());
    let beta = publisher.manifest("beta");
    let stable = publisher.manifest("stable");
    assert_eq!(release_tree(site, &beta), repo.snapshot("r1"));
    assert_eq!(release_tree(site, &stable), repo.snapshot("r3"));
    assert_eq!(stable.changes.len(), 2);
    assert_eq!(objects(site).len(), 3 + 4);

    // --keep 2 on beta: both of beta's releases stay.
    let summary = publisher.publish(&[
        "--repo",
        &repo_path,
        "--ref",
        "r2",
        "--channel",
        "beta",
        "--keep",
        "2",
    ]);
    assert_eq!(summary["pruned_releases"], serde_json::json!([]));
    assert_eq!(summary["counter"], 5);
    let out = publisher.run(&["--repo", &repo_path, "--ref", "r3", "--keep", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn compressible_objects_are_compressed_with_zstd_and_random_ones_are_not() {
    let mut repo = GitRepo::new();
    let text_file: String = (0..2000).map(|i| format!("line {i} of a log\n")).collect();
    let random = noise(64 * 1024, 3);
    repo.write("log.txt", &text_file)
        .write("random.bin", &random)
        .write("small.txt", "a".repeat(400));
    repo.commit("files");
    repo.tag("v1");
    let publisher = Publisher::new();
    publisher.publish(&["--repo", repo.path().to_str().unwrap(), "--ref", "v1"]);
    let manifest = publisher.manifest("stable");
    let file = |path: &str| manifest.files.iter().find(|f| f.path == path).unwrap();

    let log = file("log.txt");
    assert_eq!(log.encoding, Encoding::Zstd);
    let stored = log.stored_size.unwrap();
    assert!(stored * 4 < log.size, "{stored} of {}", log.size);
    let object = signed::object_path(&log.sha256, Encoding::Zstd);
    assert!(object.ends_with(&format!("{}.zst", log.sha256)), "{object}");
    assert_eq!(
        std::fs::metadata(publisher.site.join(&object))
            .unwrap()
            .len(),
        stored
    );
    assert_eq!(
        object_content(&publisher.site, &object, Encoding::Zstd),
        text_file.as_bytes()
    );
    // A large compressible file decodes within the 1 MiB window a device allows.
    let mut repo = GitRepo::new();
    let big: String = (0..200_000)
        .map(|i| format!("entry {} of a log\n", i % 5000))
        .collect();
    repo.write("big.log", &big);
    repo.commit("big");
    repo.tag("v2");
    publisher.publish(&["--repo", repo.path().to_str().unwrap(), "--ref", "v2"]);
    let manifest = publisher.manifest("stable");
    let entry = manifest.files.iter().find(|f| f.path == "big.log").unwrap();
    assert!(entry.size > 3 << 20 && entry.encoding == Encoding::Zstd);
    let object = signed::object_path(&entry.sha256, Encoding::Zstd);
    assert_eq!(
        object_content(&publisher.site, &object, Encoding::Zstd),
        big.as_bytes()
    );

    // Random bytes do not shrink, and 400 bytes cannot save 512: both stored as they are.
    for (path, content) in [
        ("random.bin", random.clone()),
        ("small.txt", b"a".repeat(400)),
    ] {
        let entry = file(path);
        assert_eq!(entry.encoding, Encoding::Identity, "{path}");
        assert_eq!(entry.stored_size, None);
        let object = signed::object_path(&entry.sha256, Encoding::Identity);
        assert_eq!(std::fs::read(publisher.site.join(object)).unwrap(), content);
    }
}

#[test]
fn a_folder_is_published_with_its_modes_links_and_git_tree_id() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("app");
    std::fs::create_dir_all(folder.join("lib/deep")).unwrap();
    std::fs::create_dir_all(folder.join(".git")).unwrap();
    std::fs::create_dir_all(folder.join("empty")).unwrap();
    std::fs::write(folder.join("main.py"), "print('folder')\n").unwrap();
    std::fs::write(folder.join("lib/deep/x.py"), "x = 1\n").unwrap();
    std::fs::write(folder.join("lib-a.txt"), "sorted between lib and lib/\n").unwrap();
    std::fs::write(folder.join("run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        folder.join("run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("lib/deep", folder.join("deep")).unwrap();
    std::fs::write(folder.join(".git/config"), "not published\n").unwrap();

    let publisher = Publisher::new();
    let summary = publisher.publish(&["--dir", folder.to_str().unwrap()]);
    let manifest = publisher.manifest("stable");
    let tree = release_tree(&publisher.site, &manifest);
    let paths: Vec<&str> = tree.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        ["deep", "lib-a.txt", "lib/deep/x.py", "main.py", "run.sh"]
    );
    assert_eq!(tree["deep"], Node::Link("lib/deep".into()));
    assert_eq!(tree["run.sh"], Node::File(b"#!/bin/sh\n".to_vec(), true));
    assert_eq!(
        tree["main.py"],
        Node::File(b"print('folder')\n".to_vec(), false)
    );

    // The release's commit is the git tree id of those files: what git itself computes.
    let mut repo = GitRepo::new();
    repo.write("main.py", "print('folder')\n")
        .write("lib/deep/x.py", "x = 1\n")
        .write("lib-a.txt", "sorted between lib and lib/\n")
        .write_exec("run.sh", "#!/bin/sh\n")
        .symlink("deep", "lib/deep");
    repo.commit("same files");
    let tree_id = repo.rev("HEAD^{tree}");
    assert_eq!(manifest.commit.to_hex(), tree_id);
    // The default release name: the tree id's first 12 hex digits.
    assert_eq!(summary["release"], tree_id[..12]);
    assert_eq!(manifest.release, tree_id[..12]);

    let named = publisher.publish(&["--dir", folder.to_str().unwrap(), "--release", "build-7"]);
    assert_eq!(named["release"], "build-7");
    assert_eq!(named["objects_written"], 0);
}

#[test]
fn allow_and_ignore_choose_the_files_as_on_devices() {
    let mut repo = GitRepo::new();
    repo.write("src/main.py", "main\n")
        .write("src/README.md", "doc\n")
        .write("tests/test_x.py", "test\n")
        .write("setup.cfg", "cfg\n");
    repo.commit("files");
    repo.tag("v1");
    let repo_path = repo.path().to_str().unwrap().to_owned();
    let publisher = Publisher::new();
    publisher.publish(&[
        "--repo",
        &repo_path,
        "--ref",
        "v1",
        "--allow",
        "src/",
        "--allow",
        "setup.cfg",
        "--ignore",
        "*.md",
    ]);
    let paths = |p: &Publisher| -> Vec<String> {
        p.manifest("stable")
            .files
            .iter()
            .map(|f| f.path.clone())
            .collect()
    };
    assert_eq!(paths(&publisher), ["setup.cfg", "src/main.py"]);

    // The same lists taken from a device's config file.
    let config = publisher.home().join("device.toml");
    std::fs::write(
        &config,
        "target_dir = \"/srv/app\"\nallow = [\"src/\", \"setup.cfg\"]\nignore = [\"*.md\"]\n\
         [source]\nowner = \"acme\"\nrepo = \"app\"\n",
    )
    .unwrap();
    let from_config = Publisher::new();
    from_config.publish(&[
        "--repo",
        &repo_path,
        "--ref",
        "v1",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(paths(&from_config), ["setup.cfg", "src/main.py"]);

    // A bad pattern is refused, naming it; nothing is published.
    let out = publisher.run(&["--repo", &repo_path, "--ref", "v1", "--allow", "/etc"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("/etc"), "{}", text(&out));
    // A filter that leaves nothing publishes nothing.
    let empty = Publisher::new();
    let out = empty.run(&["--repo", &repo_path, "--ref", "v1", "--allow", "nothing/"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("no files"), "{}", text(&out));
    assert!(!empty.site.join("manifest.json").exists());
}

#[test]
fn a_release_devices_would_refuse_is_not_published() {
    let publisher = Publisher::new();
    type Make = fn(&mut GitRepo);
    let cases: [(&str, Make); 3] = [
        ("ota's own folder", |repo| {
            repo.write(".ota/state.json", "{}\n");
        }),
        ("outside the target", |repo| {
            repo.symlink("escape", "../../etc/passwd");
        }),
        ("differ only in case", |repo| {
            repo.write("App.py", "a\n").write("app.py", "b\n");
        }),
    ];
    for (expected, make) in cases {
        let mut repo = GitRepo::new();
        repo.write("ok.txt", "fine\n");
        make(&mut repo);
        repo.commit("bad");
        let out = publisher.run(&["--repo", repo.path().to_str().unwrap(), "--ref", "HEAD"]);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(1), "{said}");
        assert!(said.contains("devices would refuse"), "{said}");
        assert!(said.contains(expected), "{expected}: {said}");
        assert!(!publisher.site.join("manifest.json").exists());
        assert!(objects(&publisher.site).is_empty());
    }

    // A submodule is skipped with a warning, as devices skip it.
    let repo = repo_with_a_submodule();
    let summary = publisher.publish(&["--repo", repo.path().to_str().unwrap(), "--ref", "v1.0.0"]);
    assert_eq!(summary["files"], 1);
    assert!(
        summary["warnings"][0]
            .as_str()
            .unwrap()
            .contains("vendor/lib is a git submodule"),
        "{summary}"
    );
    // A ref that names nothing.
    let out = publisher.run(&["--repo", repo.path().to_str().unwrap(), "--ref", "v9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("names no commit"), "{}", text(&out));
}

#[test]
fn channels_expiry_and_rollout_are_signed_into_the_manifest() {
    let repo = small_app();
    let repo_path = repo.path().to_str().unwrap().to_owned();
    let publisher = Publisher::new();
    let summary = publisher.publish(&[
        "--repo",
        &repo_path,
        "--ref",
        "v1.0.0",
        "--channel",
        "beta",
        "--expires-in",
        "2h",
        "--rollout-percent",
        "25",
    ]);
    assert_eq!(summary["manifest"], "channels/beta/manifest.json");
    assert!(!publisher.site.join("manifest.json").exists());
    let beta = publisher.manifest("beta");
    assert_eq!(beta.channel, "beta");
    assert_eq!(beta.rollout_percent, Some(25));
    let created: jiff::Timestamp = beta.created.parse().unwrap();
    let expires: jiff::Timestamp = beta.expires.parse().unwrap();
    assert_eq!(expires.as_second() - created.as_second(), 7200);
    beta.check_fresh(jiff::Timestamp::now()).unwrap();
    let later = created
        .checked_add(jiff::SignedDuration::from_hours(3))
        .unwrap();
    assert_eq!(beta.check_fresh(later).unwrap_err().kind(), "expired");
    let (ok, said) = minisign(&[
        "-V",
        "-m",
        publisher
            .site
            .join("channels/beta/manifest.json")
            .to_str()
            .unwrap(),
        "-p",
        publisher.public.to_str().unwrap(),
    ]);
    assert!(ok, "{said}");

    // The counter is site-wide: stable's first release comes after beta's.
    let stable = publisher.publish(&["--repo", &repo_path, "--ref", "v1.0.0"]);
    assert_eq!(stable["counter"], 2);

    for (args, code, says) in [
        (vec!["--channel", "Beta"], 1, "not a channel name"),
        (vec!["--channel", "developer"], 1, "branch channel"),
        (vec!["--rollout-percent", "101"], 2, "101"),
        (vec!["--expires-in", "soon"], 2, "soon"),
    ] {
        let mut all = vec!["--repo", repo_path.as_str(), "--ref", "v1.0.0"];
        all.extend(args);
        let out = publisher.run(&all);
        assert_eq!(out.status.code(), Some(code), "{all:?}: {}", text(&out));
        assert!(text(&out).contains(says), "{all:?}: {}", text(&out));
    }
}

#[test]
fn keys_made_by_minisign_and_password_protected_keys_sign_releases() {
    let repo = small_app();
    let repo_path = repo.path().to_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    let manifest = site.join("manifest.json");

    // A key made by the minisign CLI without a password (-W).
    let (secret, public) = (dir.path().join("m.key"), dir.path().join("m.pub"));
    let (ok, said) = minisign(&[
        "-G",
        "-W",
        "-s",
        secret.to_str().unwrap(),
        "-p",
        public.to_str().unwrap(),
    ]);
    assert!(ok, "{said}");
    let publish = |key: &std::path::Path, extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec![
            "publish",
            "--key",
            key.to_str().unwrap(),
            "--out",
            site.to_str().unwrap(),
            "--repo",
            &repo_path,
            "--ref",
            "v1.0.0",
        ];
        args.extend_from_slice(extra);
        ota_env(&args, env)
    };
    let out = publish(&secret, &[], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (ok, said) = minisign(&[
        "-V",
        "-m",
        manifest.to_str().unwrap(),
        "-p",
        public.to_str().unwrap(),
    ]);
    assert!(ok, "{said}");

    // A password-protected key from ota keygen: refused without its password (and with a
    // wrong one), used with it.
    let keys = dir.path().join("keys");
    let password = dir.path().join("password");
    std::fs::write(&password, "correct horse\n").unwrap();
    let out = ota(&[
        "keygen",
        "--out",
        keys.to_str().unwrap(),
        "--password-file",
        password.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["encrypted"], true);
    let key = keys.join("ota.key");
    let out = publish(&key, &[], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("password-protected"), "{}", text(&out));
    let out = publish(&key, &["--password-env", "PW"], &[("PW", "wrong")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("does not decrypt"), "{}", text(&out));
    let out = publish(&key, &["--password-file", password.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (ok, said) = minisign(&[
        "-V",
        "-m",
        manifest.to_str().unwrap(),
        "-p",
        keys.join("ota.pub").to_str().unwrap(),
    ]);
    assert!(ok, "{said}");
    assert!(said.contains("counter 2"), "{said}");
    let out = publish(&key, &["--password-env", "PW"], &[("PW", "correct horse")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // A device trusting only the first key refuses the second key's manifest.
    let bytes = std::fs::read(&manifest).unwrap();
    let signature = std::fs::read(site.join("manifest.json.minisig")).unwrap();
    let refused = signed::verify(&trusting(&public), &bytes, &signature).unwrap_err();
    assert_eq!(refused.kind(), "untrusted_key");
    signed::verify(&trusting(&keys.join("ota.pub")), &bytes, &signature).unwrap();
}

#[test]
fn a_folder_holding_the_site_is_not_published() {
    let publisher = Publisher::new();
    let folder = publisher.home().to_path_buf();
    let out = publisher.run(&["--dir", folder.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("inside --dir"), "{}", text(&out));
    assert!(!publisher.site.exists());
}

#[test]
fn two_publishes_at_once_take_turns_and_distinct_counters() {
    let mut repo = small_app();
    repo.write("odd names/ünï cödé.txt", "spaces and unicode\n")
        .write("quote\"name", "git quotes this name without -z\n");
    repo.commit("odd names");
    repo.tag("v1.1.0");
    let publisher = Publisher::new();
    let repo_path = repo.path().to_str().unwrap().to_owned();
    let summaries: Vec<serde_json::Value> = std::thread::scope(|s| {
        let runs: Vec<_> = ["v1.0.0", "v1.1.0"]
            .into_iter()
            .map(|tag| {
                let (publisher, repo_path) = (&publisher, &repo_path);
                s.spawn(move || publisher.publish(&["--repo", repo_path, "--ref", tag]))
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let mut counters: Vec<u64> = summaries
        .iter()
        .map(|s| s["counter"].as_u64().unwrap())
        .collect();
    counters.sort();
    assert_eq!(counters, [1, 2]);
    for (counter, tag) in summaries.iter().map(|s| {
        (
            s["counter"].as_u64().unwrap(),
            s["release"].as_str().unwrap(),
        )
    }) {
        let record = read_manifest(&publisher.site.join(format!("releases/{counter}.json")));
        assert_eq!(record.release, tag);
        assert_eq!(release_tree(&publisher.site, &record), repo.snapshot(tag));
    }
}
