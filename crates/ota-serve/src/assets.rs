//! Release assets: plain files in `DIR/<tag>/<name>`.
//!
//! A git repository has no release assets, so they come from a directory beside it. Files are
//! listed on every request (drop a file in and it is an asset at once); their SHA-256 (GitHub's
//! `digest` field, and the ETag of the bytes) is cached by path, size and modification time so
//! a big asset is hashed once, not per request.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use crate::Error;

/// Most digests remembered; the cache is simply cleared when full.
const MAX_CACHED_DIGESTS: usize = 10_000;

/// One asset file of one release.
#[derive(Debug, Clone)]
pub(crate) struct AssetFile {
    pub id: u64,
    pub tag: String,
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    /// Lower-case hex SHA-256 of the content.
    pub sha256: String,
    /// Modification time, epoch seconds (GitHub's `created_at`/`updated_at`).
    pub modified: i64,
}

pub(crate) struct AssetStore {
    dir: PathBuf,
    digests: Mutex<HashMap<PathBuf, (u64, i128, String)>>,
    downloads: Mutex<HashMap<u64, u64>>,
}

impl AssetStore {
    /// Checks that `dir` is a readable directory.
    pub(crate) fn new(dir: &Path) -> Result<AssetStore, Error> {
        let assets_error = |source| Error::Assets {
            path: dir.to_path_buf(),
            source,
        };
        fs::read_dir(dir).map_err(assets_error)?;
        Ok(AssetStore {
            dir: dir.to_path_buf(),
            digests: Mutex::new(HashMap::new()),
            downloads: Mutex::new(HashMap::new()),
        })
    }

    /// The assets of the release `tag`, sorted by name. `tag` must be a version tag (no `/`,
    /// no `..`), which the caller guarantees. A missing directory means no assets.
    pub(crate) fn list(&self, tag: &str) -> Result<Vec<AssetFile>, Error> {
        let dir = self.dir.join(tag);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) if err.kind() == std::io::ErrorKind::NotADirectory => return Ok(Vec::new()),
            Err(err) => return Err(Error::io(format!("listing {}", dir.display()))(err)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(Error::io(format!("listing {}", dir.display())))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let path = entry.path();
            // Follows symlinks: an operator may link assets in from elsewhere.
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i128);
            let sha256 = self.digest(&path, meta.len(), modified)?;
            out.push(AssetFile {
                id: asset_id(tag, &name),
                tag: tag.to_string(),
                name,
                path,
                size: meta.len(),
                sha256,
                modified: (modified / 1_000_000_000) as i64,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The asset `name` of release `tag`, if the file exists.
    pub(crate) fn find(&self, tag: &str, name: &str) -> Result<Option<AssetFile>, Error> {
        Ok(self.list(tag)?.into_iter().find(|a| a.name == name))
    }

    fn digest(&self, path: &Path, size: u64, modified: i128) -> Result<String, Error> {
        {
            let cache = self.digests.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((s, m, hex)) = cache.get(path)
                && *s == size
                && *m == modified
            {
                return Ok(hex.clone());
            }
        }
        let hex = sha256_file(path)?;
        let mut cache = self.digests.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED_DIGESTS {
            cache.clear();
        }
        cache.insert(path.to_path_buf(), (size, modified, hex.clone()));
        Ok(hex)
    }

    pub(crate) fn count_download(&self, id: u64) {
        let mut downloads = self.downloads.lock().unwrap_or_else(|e| e.into_inner());
        *downloads.entry(id).or_default() += 1;
    }

    pub(crate) fn download_count(&self, id: u64) -> u64 {
        let downloads = self.downloads.lock().unwrap_or_else(|e| e.into_inner());
        downloads.get(&id).copied().unwrap_or(0)
    }
}

fn sha256_file(path: &Path) -> Result<String, Error> {
    let context = || format!("hashing {}", path.display());
    let mut file = fs::File::open(path).map_err(Error::io(context()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(Error::io(context()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// A stable id for the asset `name` of release `tag`.
pub(crate) fn asset_id(tag: &str, name: &str) -> u64 {
    crate::releases::stable_id("asset", &format!("{tag}/{name}"))
}
