//! Static sites built in temp folders with the library's own format (`ota::signed`) and the
//! `minisign` crate: good sites, and hostile ones (altered, unsigned, expired, incomplete).

use std::collections::BTreeMap;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use ota::signed::{self, Encoding, ReleaseFile, ReleaseManifest};
use ota::{Kind, ObjectId, Sha256};
use tempfile::TempDir;

/// A minisign key pair.
pub struct Keys {
    secret: minisign::SecretKey,
    public: minisign::PublicKey,
}

impl Keys {
    pub fn new() -> Keys {
        let pair = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
        Keys {
            secret: pair.sk,
            public: pair.pk,
        }
    }

    /// The public key's base64 line (`RW…`), as `public_key` takes it.
    pub fn public(&self) -> String {
        self.public.to_base64()
    }

    /// A `.minisig` of `data`.
    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        minisign::sign(
            Some(&self.public),
            &self.secret,
            Cursor::new(data),
            Some("ota test"),
            None,
        )
        .unwrap()
        .into_string()
        .into_bytes()
    }
}

/// One release to publish: files by path, and the manifest's fields.
#[derive(Clone)]
pub struct Release {
    pub name: String,
    pub channel: String,
    pub counter: u64,
    /// Seconds from now; negative for an expired manifest.
    pub expires_in: i64,
    pub rollout_percent: Option<u8>,
    pub files: BTreeMap<String, Vec<u8>>,
    /// Store objects gzip-compressed when that saves at least 10% and 512 bytes.
    pub compress: bool,
}

impl Release {
    pub fn new(name: &str, counter: u64, files: &[(&str, &str)]) -> Release {
        Release {
            name: name.into(),
            channel: "stable".into(),
            counter,
            expires_in: 30 * 86_400,
            rollout_percent: None,
            files: files
                .iter()
                .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
                .collect(),
            compress: true,
        }
    }

    /// The manifest of this release (objects not written).
    pub fn manifest(&self) -> ReleaseManifest {
        let mut files = Vec::new();
        let mut listing = String::new();
        for (path, content) in &self.files {
            let (encoding, stored_size) = match self.compress.then(|| gzip(content)) {
                Some(gz)
                    if gz.len() + 512 <= content.len() && gz.len() * 10 <= content.len() * 9 =>
                {
                    (Encoding::Gzip, Some(gz.len() as u64))
                }
                _ => (Encoding::Identity, None),
            };
            let blob = ObjectId::for_blob(content);
            listing.push_str(&format!("{path} {blob}\n"));
            files.push(ReleaseFile {
                path: path.clone(),
                kind: Kind::File,
                size: content.len() as u64,
                blob,
                sha256: Sha256::of(content),
                encoding,
                stored_size,
            });
        }
        let now = jiff::Timestamp::now();
        let expires = now
            .checked_add(jiff::SignedDuration::from_secs(self.expires_in))
            .unwrap();
        ReleaseManifest {
            format: signed::FORMAT.into(),
            channel: self.channel.clone(),
            release: self.name.clone(),
            // A stand-in for the commit: the same files give the same id.
            commit: ObjectId::for_blob(listing.as_bytes()),
            counter: self.counter,
            created: now.to_string(),
            expires: expires.to_string(),
            rollout_percent: self.rollout_percent,
            files,
            file_list: None,
            changes: Vec::new(),
            pack_size: None,
            patches: Vec::new(),
        }
    }
}

pub fn gzip(content: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(content).unwrap();
    encoder.finish().unwrap()
}

/// A static site in a temp folder.
pub struct Site {
    dir: TempDir,
    /// Files written so far: each gets its own modification time (see `write`).
    writes: std::cell::Cell<u64>,
}

impl Site {
    pub fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        // nginx workers may run as another user: the site must be readable by all.
        set_mode(dir.path(), 0o755);
        Site {
            dir,
            writes: std::cell::Cell::new(0),
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Publishes `release` signed by `keys`: objects first, then the manifest, then its
    /// signature (the order `ota publish` keeps). Returns the manifest.
    pub fn publish(&self, keys: &Keys, release: &Release) -> ReleaseManifest {
        let manifest = release.manifest();
        for file in &manifest.files {
            let content = &release.files[&file.path];
            let bytes = match file.encoding {
                Encoding::Identity => content.clone(),
                Encoding::Gzip => gzip(content),
                Encoding::Zstd => zstd::encode_all(&content[..], 19).unwrap(),
            };
            self.write(&signed::object_path(&file.sha256, file.encoding), &bytes);
        }
        let bytes = serde_json::to_vec_pretty(&manifest).unwrap();
        let path = signed::manifest_path(&manifest.channel);
        self.write(&path, &bytes);
        self.write(&format!("{path}.minisig"), &keys.sign(&bytes));
        manifest
    }

    /// Rewrites the stable channel's manifest with `change` and signs it again with `keys`
    /// (a hostile publisher, or one who holds the key).
    pub fn resign(&self, keys: &Keys, change: impl FnOnce(&mut ReleaseManifest)) {
        let mut manifest: ReleaseManifest =
            serde_json::from_slice(&self.read("manifest.json")).unwrap();
        change(&mut manifest);
        let bytes = serde_json::to_vec_pretty(&manifest).unwrap();
        self.write("manifest.json", &bytes);
        self.write("manifest.json.minisig", &keys.sign(&bytes));
    }

    /// The site path of `path`'s object in `manifest`.
    pub fn object_of(manifest: &ReleaseManifest, path: &str) -> String {
        let file = manifest.files.iter().find(|f| f.path == path).unwrap();
        signed::object_path(&file.sha256, file.encoding)
    }

    /// Writes a file of the site (folders made readable by all).
    pub fn write(&self, rel: &str, bytes: &[u8]) {
        let path = self.dir.path().join(rel);
        let mut dir = path.parent().unwrap().to_path_buf();
        std::fs::create_dir_all(&dir).unwrap();
        while dir.starts_with(self.dir.path()) {
            set_mode(&dir, 0o755);
            if !dir.pop() {
                break;
            }
        }
        // Write then rename, as a publisher does: a server never reads half a file.
        let tmp = path.with_extension("tmp-write");
        std::fs::write(&tmp, bytes).unwrap();
        set_mode(&tmp, 0o644);
        // nginx's ETag and Last-Modified count whole seconds: two manifests of the same
        // size written within one second would look unchanged. A test writes faster than a
        // publisher, so each write gets a later second of its own.
        let n = self.writes.get() + 1;
        self.writes.set(n);
        let time = std::time::SystemTime::now() + std::time::Duration::from_secs(n);
        std::fs::File::options()
            .write(true)
            .open(&tmp)
            .unwrap()
            .set_modified(time)
            .unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }

    pub fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(rel)).unwrap()
    }

    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.dir.path().join(rel)).unwrap();
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
