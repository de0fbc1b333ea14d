//! `ota publish --format original`: the original updater's `manifest.json` for a release, to
//! upload as its GitHub release asset, so that devices still running the original updater
//! and devices running ota (with `manifest_key`) are served by one release workflow.

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;

use super::{Options, PublishError, check, read};
use crate::original::{self, OriginalFile, OriginalManifest};

/// What goes into the original manifest besides the files.
#[derive(Default)]
pub struct OriginalOptions {
    /// The HMAC key devices check `signature` with (`manifest_key`); `None`: unsigned.
    pub hmac_key: Option<Vec<u8>>,
    /// `version` [default: the release name].
    pub version: Option<String>,
    /// `post_update`: a name devices map to a command in `[after_update] post_update`.
    pub post_update: Option<String>,
    /// `deletes`.
    pub deletes: Vec<String>,
}

/// What `publish_original` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct OriginalSummary {
    /// The release name.
    pub release: String,
    /// The commit (or, for a folder, the git tree id of its files).
    pub commit: String,
    /// `version` as written.
    pub version: String,
    /// The file written.
    pub manifest: PathBuf,
    /// Files listed.
    pub files: usize,
    /// Their total size.
    pub bytes: u64,
    /// Whether it carries a `signature`.
    pub signed: bool,
    /// What was skipped (submodules).
    pub warnings: Vec<String>,
}

/// Writes `options.out/manifest.json` in the original updater's format for the release
/// `options` names (the same files, filter and checks as a signed publish); the file is
/// replaced atomically.
pub fn publish_original(
    options: &Options,
    extra: &OriginalOptions,
) -> Result<OriginalSummary, PublishError> {
    check(options)?;
    let mut release = read(options)?;
    let mut files = Vec::with_capacity(release.files.len());
    for file in &release.files {
        let path = file.entry.path.as_str();
        let mut reader = release.contents.open(&file.raw)?;
        let listed = OriginalFile::read(path, &mut *reader)
            .map_err(|e| PublishError::Read(path.to_owned(), e))?;
        if listed.sha256 != file.sha256 {
            return Err(PublishError::Changed(path.into()));
        }
        files.push(listed);
    }
    let version = extra
        .version
        .clone()
        .unwrap_or_else(|| release.name.clone());
    let bytes = original::render(
        &files,
        &extra.deletes,
        Some(&version),
        extra.post_update.as_deref(),
        extra.hmac_key.as_deref(),
    )
    .map_err(PublishError::Usage)?;
    // What devices will check: a publisher cannot write a manifest they refuse.
    let parsed = OriginalManifest::parse(&bytes)
        .map_err(|e| PublishError::Usage(format!("devices would refuse it: {e}")))?;
    if let Some(key) = &extra.hmac_key {
        parsed
            .verify(key)
            .map_err(|e| PublishError::Invalid(format!("the signature does not verify: {e}")))?;
    }
    let manifest = write_atomically(&options.out, &bytes)?;
    Ok(OriginalSummary {
        release: release.name.clone(),
        commit: release.commit.to_hex(),
        version,
        manifest,
        files: files.len(),
        bytes: release.bytes,
        signed: extra.hmac_key.is_some(),
        warnings: std::mem::take(&mut release.warnings),
    })
}

/// `dir/manifest.json` (`dir` created if missing), through a temporary file renamed over it.
fn write_atomically(dir: &std::path::Path, bytes: &[u8]) -> Result<PathBuf, PublishError> {
    std::fs::create_dir_all(dir).map_err(|e| PublishError::io(dir, "create", e))?;
    let path = dir.join("manifest.json");
    let mut temp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| PublishError::io(dir, "write a temporary file in", e))?;
    // Readable by all like the site's files (it is published, not secret).
    let readable = std::os::unix::fs::PermissionsExt::from_mode(0o644);
    temp.write_all(bytes)
        .and_then(|()| temp.as_file().set_permissions(readable))
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|e| PublishError::io(temp.path(), "write", e))?;
    temp.persist(&path)
        .map_err(|e| PublishError::io(&path, "write", e.error))?;
    Ok(path)
}
