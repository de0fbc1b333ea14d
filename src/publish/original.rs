//! `ota publish --format original`: the original updater's `manifest.json` for a release, to
//! upload as its GitHub release asset, so that devices still running the original updater
//! and devices running ota (with `manifest_key`) are served by one release workflow.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Seek, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Input, Options, PublishError, Release, check, read};
use crate::delta;
use crate::manifest::Kind;
use crate::original::{self, OriginalFile, OriginalManifest};

/// The folder, beside `manifest.json`, where the original updater looks for deltas.
pub const DELTAS_DIR: &str = ".deltas";

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
    /// With a release here (read like `Options::input`: a ref of the same repository, or a
    /// folder), also write `.deltas/`: a patch from its version of each changed file.
    pub deltas_from: Option<Input>,
}

/// What the `.deltas/` folder got.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeltasSummary {
    /// The folder.
    pub dir: PathBuf,
    /// Patches written.
    pub written: usize,
    /// Their total size.
    pub bytes: u64,
    /// Total size of the files they make.
    pub file_bytes: u64,
    /// Changed files left without a patch because it was not smaller than the file.
    pub not_smaller: usize,
    /// Patches of an earlier publish removed (their files did not change this time).
    pub removed: usize,
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
    /// What was skipped (submodules, deltas the original cannot name).
    pub warnings: Vec<String>,
    /// With `deltas_from`: the `.deltas/` folder.
    pub deltas: Option<DeltasSummary>,
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
    // The patches first: a manifest is never published before the deltas of its files.
    let mut warnings = std::mem::take(&mut release.warnings);
    let deltas = match &extra.deltas_from {
        Some(from) => Some(write_deltas(options, from, &mut release, &mut warnings)?),
        None => None,
    };
    let manifest = write_atomically(&options.out, &bytes)?;
    Ok(OriginalSummary {
        release: release.name.clone(),
        commit: release.commit.to_hex(),
        version,
        manifest,
        files: files.len(),
        bytes: release.bytes,
        signed: extra.hmac_key.is_some(),
        warnings,
        deltas,
    })
}

/// The name the original updater gives a path's patch: `/` replaced by `_`, then `.delta`.
pub fn delta_name(path: &str) -> String {
    format!("{}.delta", path.replace('/', "_"))
}

/// Writes `out/.deltas/<name>.delta` for each regular file of `release` whose content differs
/// from the same path's in the release `from`, when the patch is smaller than the file;
/// removes the `.delta` files this publish did not write (made for another release, they
/// would not apply).
fn write_deltas(
    options: &Options,
    from: &Input,
    release: &mut Release,
    warnings: &mut Vec<String>,
) -> Result<DeltasSummary, PublishError> {
    let old_options = Options {
        input: from.clone(),
        out: options.out.clone(),
        channel: options.channel.clone(),
        release: None,
        filter: options.filter.clone(),
        expires_in: options.expires_in,
        rollout_percent: None,
        keep: None,
    };
    let mut old = read(&old_options)?;
    let old_files: BTreeMap<&str, usize> = old
        .files
        .iter()
        .enumerate()
        .filter(|(_, f)| f.entry.kind != Kind::Symlink)
        .map(|(i, f)| (f.entry.path.as_str(), i))
        .collect();
    // Changed files, by the name of their patch; two paths the original names alike get none.
    let mut changed: BTreeMap<String, Vec<(usize, usize)>> = BTreeMap::new();
    for (i, file) in release.files.iter().enumerate() {
        let path = file.entry.path.as_str();
        if file.entry.kind == Kind::Symlink {
            continue;
        }
        if let Some(&j) = old_files.get(path)
            && old.files[j].sha256 != file.sha256
        {
            changed.entry(delta_name(path)).or_default().push((i, j));
        }
    }
    let dir = options.out.join(DELTAS_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| PublishError::io(&dir, "create", e))?;
    let mut summary = DeltasSummary {
        dir: dir.clone(),
        ..DeltasSummary::default()
    };
    let mut written = BTreeSet::new();
    for (name, pairs) in &changed {
        let &[(i, j)] = pairs.as_slice() else {
            let paths: Vec<&str> = pairs
                .iter()
                .map(|&(i, _)| release.files[i].entry.path.as_str())
                .collect();
            warnings.push(format!(
                "no delta for {}: the original updater names their deltas alike ({name})",
                paths.join(", ")
            ));
            continue;
        };
        let new = &release.files[i];
        let path = new.entry.path.as_str();
        // The old content, spooled to a temporary file: the generator seeks in it.
        let mut old_copy = tempfile::tempfile()
            .map_err(|e| PublishError::io(&dir, "write a temporary file in", e))?;
        {
            let mut reader = old.contents.open(&old.files[j].raw)?;
            io::copy(&mut *reader, &mut old_copy)
                .map_err(|e| PublishError::Read(format!("{path} of {}", old.name), e))?;
        }
        let mut temp = tempfile::NamedTempFile::new_in(&dir)
            .map_err(|e| PublishError::io(&dir, "write a temporary file in", e))?;
        {
            let mut reader = release.contents.open(&new.raw)?;
            let out = io::BufWriter::new(temp.as_file_mut());
            delta::write_original(&mut old_copy, &mut *reader, out)
                .map_err(|e| PublishError::Read(format!("{path} (making its delta)"), e))?;
        }
        let size = temp
            .as_file_mut()
            .stream_position()
            .map_err(|e| PublishError::io(temp.path(), "write", e))?;
        if size >= new.entry.size {
            summary.not_smaller += 1;
            continue;
        }
        let target = dir.join(name);
        persist(temp, &target)?;
        written.insert(name.clone());
        summary.written += 1;
        summary.bytes += size;
        summary.file_bytes += new.entry.size;
    }
    summary.removed = remove_stale(&dir, &written)?;
    Ok(summary)
}

/// Removes the `.delta` files of `dir` not in `keep`; returns how many.
fn remove_stale(dir: &Path, keep: &BTreeSet<String>) -> Result<usize, PublishError> {
    let mut removed = 0;
    let entries = std::fs::read_dir(dir).map_err(|e| PublishError::io(dir, "read", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| PublishError::io(dir, "read", e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".delta") && !keep.contains(name) {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| PublishError::io(&path, "remove", e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Makes `temp` readable by all, syncs it, and renames it to `path`.
fn persist(temp: tempfile::NamedTempFile, path: &Path) -> Result<(), PublishError> {
    // Readable by all like the site's files (it is published, not secret).
    let readable = std::os::unix::fs::PermissionsExt::from_mode(0o644);
    temp.as_file()
        .set_permissions(readable)
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|e| PublishError::io(temp.path(), "write", e))?;
    temp.persist(path)
        .map_err(|e| PublishError::io(path, "write", e.error))?;
    Ok(())
}

/// `dir/manifest.json` (`dir` created if missing), through a temporary file renamed over it.
fn write_atomically(dir: &Path, bytes: &[u8]) -> Result<PathBuf, PublishError> {
    std::fs::create_dir_all(dir).map_err(|e| PublishError::io(dir, "create", e))?;
    let path = dir.join("manifest.json");
    let mut temp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| PublishError::io(dir, "write a temporary file in", e))?;
    temp.write_all(bytes)
        .map_err(|e| PublishError::io(temp.path(), "write", e))?;
    persist(temp, &path)?;
    Ok(path)
}
