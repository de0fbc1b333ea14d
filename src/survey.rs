//! What is on disk now, at the paths an update touches: the local facts the plan needs.
//!
//! This is the only I/O of planning. It `lstat`s every path of the installed and the new
//! manifest (and their parent folders, top-down, never looking through a link), lists the
//! folders that may become empty, and hashes a local file only when that can save a download:
//! a file ota does not own yet, or whose recorded content differs from the new one, but whose
//! size matches what the release ships. Files ota installed and the release keeps are trusted
//! by type, size and exec bit unless `verify` asks for a full check.
//!
//! It also lists the kept previous release (`<state>/previous/`): which contents an update
//! can take from there instead of downloading them (verified when used, in `fetch`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::fs::{FileKind, Fs, Space};
use crate::manifest::{BlobHasher, Entry, Kind, Manifest, ObjectId, RelPath};
use crate::state::StateDir;

/// What is at one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Local {
    /// Nothing.
    Absent,
    /// A regular file; `blob` when it was hashed.
    File {
        /// Size in bytes.
        len: u64,
        /// Exec bit.
        executable: bool,
        /// Git blob id of the content, if computed.
        blob: Option<ObjectId>,
    },
    /// A symbolic link, with the blob id of its target text.
    Symlink {
        /// Git blob id of the link target.
        blob: ObjectId,
    },
    /// A folder, with its permission bits.
    Dir {
        /// Permission bits.
        mode: u32,
    },
    /// A device, socket or fifo.
    Other,
}

impl Local {
    /// What kind of thing this is (`None` when absent).
    pub(crate) fn kind(&self) -> Option<FileKind> {
        match self {
            Local::Absent => None,
            Local::File { .. } => Some(FileKind::File),
            Local::Symlink { .. } => Some(FileKind::Symlink),
            Local::Dir { .. } => Some(FileKind::Dir),
            Local::Other => Some(FileKind::Other),
        }
    }

    /// Whether this holds exactly what `kind`/`size`/`blob` describe. An unhashed file of the
    /// right type and size counts only when `trusted` (ota installed that content).
    pub(crate) fn holds(&self, kind: Kind, size: u64, blob: ObjectId, trusted: bool) -> bool {
        match (self, kind) {
            (Local::Symlink { blob: b }, Kind::Symlink) => *b == blob,
            (
                Local::File {
                    len,
                    executable,
                    blob: b,
                },
                Kind::File | Kind::Executable,
            ) => {
                *len == size
                    && *executable == (kind == Kind::Executable)
                    && b.map_or(trusted, |b| b == blob)
            }
            _ => false,
        }
    }
}

/// Local facts about the paths of an update.
#[derive(Clone, Debug)]
pub(crate) struct Survey {
    /// Facts per path (paths below a non-folder are absent).
    pub paths: BTreeMap<RelPath, Local>,
    /// Names inside folders that might become empty.
    pub listings: BTreeMap<RelPath, Vec<String>>,
    /// The objects kept under `previous/`, by the blob id they are named by (a file's
    /// `blob` is that name, not yet verified).
    pub store: BTreeMap<ObjectId, Local>,
    /// Free space on the target's filesystem.
    pub space: Space,
    /// What an unfinished update left in `downloads/`: the length of each file there, by
    /// the blob id it is named by (not yet verified: a fetch hashes it before use).
    pub downloads: BTreeMap<ObjectId, u64>,
}

impl Survey {
    /// What is at `path` (absent if the survey did not look).
    pub(crate) fn local(&self, path: &RelPath) -> &Local {
        self.paths.get(path).unwrap_or(&Local::Absent)
    }

    /// The object under `previous/` that can stage `entry`: its content by name, of its kind
    /// (a link for a link, a file of its size for a file).
    pub(crate) fn stored(&self, entry: &Entry) -> Option<&Local> {
        self.store.get(&entry.blob).filter(|local| match local {
            Local::Symlink { .. } => entry.kind == Kind::Symlink,
            Local::File { len, .. } => entry.kind != Kind::Symlink && *len == entry.size,
            _ => false,
        })
    }
}

/// Gathers the facts; see the module docs. `root` is the target directory, `dirs` the
/// state folder (for `previous/`).
pub(crate) fn survey(
    fs: &dyn Fs,
    root: &Path,
    dirs: &StateDir,
    installed: &Manifest,
    target: &Manifest,
    verify: bool,
) -> Result<Survey, SurveyError> {
    let mut out = Survey {
        paths: BTreeMap::new(),
        listings: BTreeMap::new(),
        store: stored(fs, dirs),
        space: space_at(fs, root).map_err(|e| SurveyError::at(root.to_owned(), e))?,
        downloads: kept_downloads(fs, dirs),
    };
    // What an unfinished update left in `downloads/` is free space to this one: fetching
    // either goes on with each file or removes it first.
    let block = out.space.block_size.max(1);
    let kept = (out.downloads.values())
        .map(|len| len.div_ceil(block).saturating_mul(block))
        .fold(0u64, u64::saturating_add);
    out.space.available = out.space.available.saturating_add(kept);
    let mut blocked: BTreeSet<RelPath> = BTreeSet::new();
    let mut to_list: BTreeSet<RelPath> = BTreeSet::new();
    let all = installed.entries().iter().chain(target.entries());
    for entry in all {
        // Ancestors top-down; below anything that is not a real folder, nothing exists.
        let mut reachable = true;
        for dir in entry.path.ancestors() {
            if blocked.contains(&dir) {
                reachable = false;
                break;
            }
            let local = match out.paths.get(&dir) {
                Some(l) => l.clone(),
                None => {
                    let l = look(fs, root, &dir, None)?;
                    out.paths.insert(dir.clone(), l.clone());
                    l
                }
            };
            if !matches!(local, Local::Dir { .. }) {
                blocked.insert(dir);
                reachable = false;
                break;
            }
        }
        if !reachable || out.paths.contains_key(&entry.path) {
            continue;
        }
        let wanted = target.get(&entry.path);
        let owned = installed.get(&entry.path);
        let hash_size = wanted
            .filter(|w| verify || owned.is_none_or(|o| !o.same_content(w)))
            .map(|w| w.size);
        let local = look(fs, root, &entry.path, hash_size)?;
        out.paths.insert(entry.path.clone(), local);
    }
    // Folders that may be emptied: those holding owned files the release drops, and folders
    // standing where the release puts a file.
    for entry in installed.entries() {
        if target.get(&entry.path).is_none() {
            to_list.extend(entry.path.ancestors());
        }
    }
    for entry in target.entries() {
        if matches!(out.local(&entry.path), Local::Dir { .. }) {
            to_list.insert(entry.path.clone());
        }
    }
    for dir in to_list {
        if matches!(out.local(&dir), Local::Dir { .. }) {
            let at = root.join(dir.as_str());
            let names = fs
                .read_dir(&at)
                .map_err(|e| SurveyError::at(at.clone(), e))?
                .into_iter()
                .map(|n| n.to_string_lossy().into_owned())
                .collect();
            out.listings.insert(dir, names);
        }
    }
    Ok(out)
}

/// The objects under `previous/`. One that cannot be listed is only a download more: warned.
fn stored(fs: &dyn Fs, dirs: &StateDir) -> BTreeMap<ObjectId, Local> {
    let objects = match crate::transaction::previous_objects(fs, dirs) {
        Ok(objects) => objects,
        Err(e) => {
            let root = dirs.previous_root();
            tracing::warn!("cannot list {}: {e}; downloading instead", root.display());
            return BTreeMap::new();
        }
    };
    (objects.into_iter())
        .map(|(id, meta)| {
            let local = match meta.kind {
                FileKind::Symlink => Local::Symlink { blob: id },
                _ => Local::File {
                    len: meta.len,
                    executable: meta.executable,
                    blob: Some(id),
                },
            };
            (id, local)
        })
        .collect()
}

/// The files under `downloads/` named by a blob id, and their lengths: the files a fetch
/// takes up or removes before downloading. None when it cannot be listed.
fn kept_downloads(fs: &dyn Fs, dirs: &StateDir) -> BTreeMap<ObjectId, u64> {
    let dir = dirs.downloads_root();
    let names = fs.read_dir(&dir).unwrap_or_default();
    (names.iter())
        .filter_map(|n| {
            let id = n.to_str().and_then(crate::transaction::object_name)?;
            let meta = fs.metadata(&dir.join(n)).ok().flatten()?;
            (meta.kind == FileKind::File).then_some((id, meta.len))
        })
        .collect()
}

/// Free space where `root` is, or will be: before the first install (a dry run creates
/// nothing) that is the filesystem of its nearest existing ancestor.
pub(crate) fn space_at(fs: &dyn Fs, root: &Path) -> io::Result<Space> {
    let mut at = root;
    loop {
        match fs.space(at) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => match at.parent() {
                Some(parent) => at = parent,
                None => return Err(e),
            },
            other => return other,
        }
    }
}

/// `lstat`s one path; hashes a regular file of exactly `hash_size` bytes.
fn look(
    fs: &dyn Fs,
    root: &Path,
    path: &RelPath,
    hash_size: Option<u64>,
) -> Result<Local, SurveyError> {
    let at = root.join(path.as_str());
    let err = |e| SurveyError::at(at.clone(), e);
    let Some(meta) = fs.metadata(&at).map_err(err)? else {
        return Ok(Local::Absent);
    };
    Ok(match meta.kind {
        FileKind::Dir => Local::Dir { mode: meta.mode },
        FileKind::Other => Local::Other,
        FileKind::Symlink => Local::Symlink {
            blob: ObjectId::for_blob(&fs.read_link(&at).map_err(err)?),
        },
        FileKind::File => {
            let blob = match hash_size {
                Some(size) if size == meta.len => hash_file(fs, &at, meta.len).map_err(err)?,
                _ => None,
            };
            Local::File {
                len: meta.len,
                executable: meta.executable,
                blob,
            }
        }
    })
}

/// The git blob id of a local file expected to be `len` bytes; `None` if its size changed
/// while reading.
pub(crate) fn hash_file(fs: &dyn Fs, path: &Path, len: u64) -> io::Result<Option<ObjectId>> {
    let mut reader = fs.open(path)?;
    let mut hasher = BlobHasher::new(len);
    let mut buf = vec![0u8; 64 * 1024];
    let mut seen = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        seen += n as u64;
        if seen > len {
            return Ok(None);
        }
        hasher.update(&buf[..n]);
    }
    Ok((seen == len).then(|| hasher.finish()))
}

/// The target directory could not be inspected.
#[derive(Debug, thiserror::Error)]
#[error("cannot inspect {}: {source}", path.display())]
pub struct SurveyError {
    /// Where.
    pub path: PathBuf,
    /// Why.
    pub source: io::Error,
}

impl SurveyError {
    fn at(path: PathBuf, source: io::Error) -> SurveyError {
        SurveyError { path, source }
    }
}
