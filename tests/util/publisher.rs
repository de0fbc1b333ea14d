//! The publisher's side in tests: `ota keygen` and `ota publish` run as the real binary, and
//! a reader of the static site they write (manifests parsed, objects decoded back into
//! files), for checking what a device would get.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ota::signed::{Encoding, ReleaseManifest};
use tempfile::TempDir;

use super::{Node, Tree};

/// Runs the real `ota` binary with a clean environment (only `PATH`) and no terminal.
pub fn ota(args: &[&str]) -> Output {
    ota_env(args, &[])
}

/// Runs the real `ota` binary with a clean environment plus `env`, and no terminal.
pub fn ota_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ota"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A key pair made by `ota keygen` (no password) and a site folder to publish into.
pub struct Publisher {
    dir: TempDir,
    /// `ota.key`.
    pub key: PathBuf,
    /// `ota.pub`.
    pub public: PathBuf,
    /// The site folder (`ota publish --out`).
    pub site: PathBuf,
}

impl Publisher {
    /// Makes a key with `ota keygen` (unencrypted) in a new temp folder.
    pub fn new() -> Publisher {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let out = ota(&["keygen", "--out", keys.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        Publisher {
            key: keys.join("ota.key"),
            public: keys.join("ota.pub"),
            site: dir.path().join("site"),
            dir,
        }
    }

    /// The temp folder holding the keys and the site.
    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    /// The public key's base64 line (the value of a device's `public_key`).
    pub fn public_key(&self) -> String {
        let text = std::fs::read_to_string(&self.public).unwrap();
        text.lines().nth(1).unwrap().trim().to_owned()
    }

    /// `ota publish --key KEY --out SITE --json ARGS…`: asserts it exits 0, returns its JSON.
    pub fn publish(&self, args: &[&str]) -> serde_json::Value {
        let out = self.run(args);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "ota publish {args:?}:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(&text).unwrap()
    }

    /// `ota publish --key KEY --out SITE --json ARGS…`, whatever its exit code.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut all = vec![
            "publish",
            "--key",
            self.key.to_str().unwrap(),
            "--out",
            self.site.to_str().unwrap(),
            "--json",
        ];
        all.extend_from_slice(args);
        ota(&all)
    }

    /// The manifest of `channel` on the site.
    /// The channel's manifest, its files read from its file list object (checked against
    /// the digest it gives).
    pub fn manifest(&self, channel: &str) -> ReleaseManifest {
        with_files(
            &self.site,
            read_manifest(&self.site.join(ota::signed::manifest_path(channel))),
        )
    }
}

/// Parses the manifest file at `path`.
pub fn read_manifest(path: &Path) -> ReleaseManifest {
    ReleaseManifest::parse(&std::fs::read(path).unwrap()).unwrap()
}

/// `manifest` with the files of its file list object, if it names one.
pub fn with_files(site: &Path, mut manifest: ReleaseManifest) -> ReleaseManifest {
    if let Some(list) = manifest.file_list {
        let path = ota::signed::object_path(&list.sha256, list.encoding);
        let bytes = object_content(site, &path, list.encoding);
        assert_eq!(ota::Sha256::of(&bytes), list.sha256);
        assert_eq!(bytes.len() as u64, list.size);
        manifest.files = serde_json::from_slice(&bytes).unwrap();
    }
    manifest
}

/// The bytes of the object at `site`/`path`, decoded (gunzipped when `encoding` says so).
pub fn object_content(site: &Path, path: &str, encoding: Encoding) -> Vec<u8> {
    let stored = std::fs::read(site.join(path)).unwrap();
    match encoding {
        Encoding::Identity => stored,
        Encoding::Gzip => {
            let mut content = Vec::new();
            flate2::read::GzDecoder::new(&stored[..])
                .read_to_end(&mut content)
                .unwrap();
            content
        }
        Encoding::Zstd => {
            // As a device decodes it: a window of at most 1 MiB.
            let mut decoder = zstd::Decoder::new(&stored[..]).unwrap().single_frame();
            decoder
                .window_log_max(ota::signed::ZSTD_WINDOW_LOG)
                .unwrap();
            let mut content = Vec::new();
            decoder.read_to_end(&mut content).unwrap();
            content
        }
    }
}

/// The files a device would install from `manifest`, rebuilt from the site's objects; each
/// object is checked against the manifest's SHA-256, size and git blob id.
pub fn release_tree(site: &Path, manifest: &ReleaseManifest) -> Tree {
    let mut tree = Tree::new();
    for file in &manifest.files {
        let path = ota::signed::object_path(&file.sha256, file.encoding);
        let content = object_content(site, &path, file.encoding);
        assert_eq!(ota::Sha256::of(&content), file.sha256, "{}", file.path);
        assert_eq!(content.len() as u64, file.size, "{}", file.path);
        assert_eq!(
            ota::ObjectId::for_blob(&content),
            file.blob,
            "{}",
            file.path
        );
        let node = match file.kind {
            ota::Kind::Symlink => Node::Link(String::from_utf8(content).unwrap()),
            kind => Node::File(content, kind == ota::Kind::Executable),
        };
        tree.insert(file.path.clone(), node);
    }
    tree
}

/// Every file under `site/objects`, as site paths (`objects/ab/…`).
pub fn objects(site: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(folders) = std::fs::read_dir(site.join("objects")) else {
        return found;
    };
    for folder in folders {
        let folder = folder.unwrap().path();
        for item in std::fs::read_dir(&folder).unwrap() {
            let path = item.unwrap().path();
            found.push(
                path.strip_prefix(site)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned(),
            );
        }
    }
    found.sort();
    found
}
