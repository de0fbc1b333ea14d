//! How big a release ota installs: one set of numbers, used when an update is planned and
//! when ota's own files are written and read, so that whatever ota commits it can read back.
//!
//! A release over a limit is refused at plan time, before any download and before anything
//! is created, with the numbers. The per-release limits ([`MAX_FILES`], [`MAX_FOLDERS`],
//! [`MAX_PATH_BYTES`]) are chosen so that the largest `state.json` and journal they allow
//! fit [`STATE_BYTES`] and [`JOURNAL_BYTES`] (a unit test below builds the worst case), and
//! the exact sizes of both are checked at plan time as well; writing either over its limit
//! is refused as a last line of defence.
//!
//! `[limits] max_tree_files` in the config lowers the number of files further: it is
//! checked on the release's whole tree (before `allow`/`ignore`) when the tree is read. Each
//! path component's length (`NAME_MAX`, 255) is checked when the manifest is built.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::manifest::{Kind, Manifest};
use crate::state::{Installed, StateDir};
use crate::transaction::Op;

/// Most files (and symlinks) of one release, after `allow`/`ignore`.
pub(crate) const MAX_FILES: usize = 100_000;
/// Most folders the files of one release lie in.
pub(crate) const MAX_FOLDERS: usize = 100_000;
/// Most bytes of all of a release's paths together: its files and its folders.
pub(crate) const MAX_PATH_BYTES: u64 = 16 << 20;
/// Longest path the kernel takes, its terminating NUL included (Linux's `PATH_MAX`).
pub(crate) const PATH_MAX: usize = 4096;
/// Largest `state.json` ota writes and reads.
/// Room for two releases: the installed one and, while it is on trial, the one it rolls back
/// to.
pub(crate) const STATE_BYTES: u64 = 128 << 20;
/// Largest `journal.json` ota writes and reads.
pub(crate) const JOURNAL_BYTES: u64 = 256 << 20;

/// Room for the journal's fields besides its operations (format, txid, release).
const JOURNAL_HEADER_BYTES: u64 = 4096;
/// The longest transaction id (`transaction::new_txid`: 128-bit hex time, `-`, 32-bit hex
/// pid) and the longest temporary name in the state folder, to bound its paths.
const LONGEST_TXID: &str = "ffffffffffffffffffffffffffffffff-ffffffff";
const LONGEST_STATE_NAME: &str = "last_error.json.tmp";

/// Refuses a release that ota could not install under `target` with its state in `dirs`,
/// or could not read back once installed: too many files or folders, too many path bytes,
/// or a path (in the target, or staged or backed up in the state folder) longer than the
/// kernel takes. Looks at the manifest only: nothing is downloaded or created.
pub(crate) fn check_release(
    manifest: &Manifest,
    target: &Path,
    dirs: &StateDir,
) -> Result<(), LimitsError> {
    let files = manifest.len();
    if files > MAX_FILES {
        return Err(LimitsError::Files { files });
    }
    let mut folders = BTreeSet::new();
    let mut path_bytes = 0u64;
    for entry in manifest.entries() {
        let path = entry.path.as_str();
        path_bytes += path.len() as u64;
        // Deepest first: once a folder is known, so are all of its ancestors.
        for (end, _) in path.rmatch_indices('/') {
            if !folders.insert(&path[..end]) {
                break;
            }
            path_bytes += end as u64;
        }
        if folders.len() > MAX_FOLDERS {
            return Err(LimitsError::Folders {
                folders: folders.len(),
            });
        }
        let absolute = target.as_os_str().len() + 1 + path.len();
        if absolute >= PATH_MAX {
            return Err(LimitsError::PathTooLong {
                path: target.join(path),
                bytes: absolute,
            });
        }
        if entry.kind == Kind::Symlink && entry.size >= PATH_MAX as u64 {
            return Err(LimitsError::LinkTooLong {
                path: entry.path.to_string(),
                bytes: entry.size,
            });
        }
    }
    if path_bytes > MAX_PATH_BYTES {
        return Err(LimitsError::PathBytes { bytes: path_bytes });
    }
    // Staged and backed-up files are named by their index in the plan.
    let slot = files.saturating_mul(2).to_string();
    let longest = dirs.backup(LONGEST_TXID).join(&slot);
    let tmp = dirs.root().join(LONGEST_STATE_NAME);
    for path in [longest, tmp] {
        if path.as_os_str().len() >= PATH_MAX {
            return Err(LimitsError::StatePathTooLong {
                bytes: path.as_os_str().len(),
                path,
            });
        }
    }
    Ok(())
}

/// Refuses an update whose `state.json` (`installed`, as it will be committed) or journal
/// (`ops`) would be larger than ota reads back. Sizes are exact (the journal's up to a small
/// bound for its header).
pub(crate) fn check_commit(installed: &Installed, ops: &[Op]) -> Result<(), LimitsError> {
    let state = state_size(installed);
    if state > STATE_BYTES {
        return Err(LimitsError::State { bytes: state });
    }
    let journal = json_size(ops, false).saturating_add(JOURNAL_HEADER_BYTES);
    if journal > JOURNAL_BYTES {
        return Err(LimitsError::Journal { bytes: journal });
    }
    Ok(())
}

/// The exact size of `state.json` holding `installed` (as `state` writes it, pretty).
pub(crate) fn state_size(installed: &Installed) -> u64 {
    json_size(installed, true)
}

/// The length of `value` as JSON, counted without keeping the text.
fn json_size<T: Serialize + ?Sized>(value: &T, pretty: bool) -> u64 {
    let mut count = Count(0);
    let written = match pretty {
        true => serde_json::to_writer_pretty(&mut count, value),
        false => serde_json::to_writer(&mut count, value),
    };
    // Serializing ota's own types cannot fail; count a failure as too large.
    written.map_or(u64::MAX, |()| count.0)
}

/// A writer that only counts bytes.
struct Count(u64);

impl io::Write for Count {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A release larger than ota installs. Nothing was downloaded or changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// Too many files.
    #[error(
        "the release has {files} files (after `allow` and `ignore`); ota installs at most \
         {MAX_FILES}, so that it can always read back what it commits. Nothing was downloaded \
         or changed. Leave files out with `ignore`, or split the release"
    )]
    Files {
        /// Files in the release.
        files: usize,
    },
    /// Too many folders.
    #[error(
        "the release's files lie in more than {MAX_FOLDERS} folders ({folders} counted so \
         far); ota installs at most {MAX_FOLDERS}. Nothing was downloaded or changed. Leave \
         folders out with `ignore`, or flatten the release"
    )]
    Folders {
        /// Folders counted before stopping.
        folders: usize,
    },
    /// Too many path bytes.
    #[error(
        "the release's paths (files and folders) add up to {bytes} bytes; ota installs at \
         most {MAX_PATH_BYTES}, so that it can always read back what it commits. Nothing was \
         downloaded or changed. Leave files out with `ignore`, or use shorter paths"
    )]
    PathBytes {
        /// Bytes of all paths.
        bytes: u64,
    },
    /// A path in the target longer than the kernel takes.
    #[error(
        "the release's file {} would be a {bytes}-byte path in this target; Linux takes at \
         most {} (PATH_MAX {PATH_MAX}). Nothing was downloaded or changed. Use a shorter \
         `target_dir`, leave the file out with `ignore`, or shorten it in the release",
        abbreviated(path), PATH_MAX - 1
    )]
    PathTooLong {
        /// The path in the target.
        path: PathBuf,
        /// Its length in bytes.
        bytes: usize,
    },
    /// A symlink whose target is longer than the kernel takes.
    #[error(
        "the release's symlink {path} points to a {bytes}-byte path; Linux takes at most {} \
         (PATH_MAX {PATH_MAX}). Nothing was downloaded or changed. Leave it out with `ignore`",
        PATH_MAX - 1
    )]
    LinkTooLong {
        /// The symlink's path in the release.
        path: String,
        /// The length of its target.
        bytes: u64,
    },
    /// A path in the state folder longer than the kernel takes.
    #[error(
        "the state folder's path is too long: ota would use {} ({bytes} bytes; Linux takes \
         at most {}). Nothing was downloaded or changed. Set a shorter `state_dir`",
        abbreviated(path), PATH_MAX - 1
    )]
    StatePathTooLong {
        /// The longest path ota would use there.
        path: PathBuf,
        /// Its length in bytes.
        bytes: usize,
    },
    /// `state.json` would be too large.
    #[error(
        "the release's file list would make a {bytes}-byte state.json; ota reads at most \
         {STATE_BYTES}. Nothing was downloaded or changed. Leave files out with `ignore`, or \
         use shorter paths"
    )]
    State {
        /// Its size in bytes.
        bytes: u64,
    },
    /// The journal would be too large.
    #[error(
        "this update's journal would be {bytes} bytes; ota reads at most {JOURNAL_BYTES}. \
         Nothing was downloaded or changed. Leave files out with `ignore`, or use shorter paths"
    )]
    Journal {
        /// Its size in bytes (an upper bound).
        bytes: u64,
    },
}

/// `path`, cut to its first and last 60 bytes when longer (a 4000-byte path helps no one).
fn abbreviated(path: &Path) -> String {
    let text = path.to_string_lossy();
    if text.len() <= 130 {
        return text.into_owned();
    }
    let head = text.char_indices().take_while(|(i, _)| *i < 60).count();
    let tail_start = text
        .char_indices()
        .map(|(i, _)| i)
        .find(|i| *i >= text.len() - 60)
        .unwrap_or(text.len());
    let head: String = text.chars().take(head).collect();
    format!("{head}…{}", &text[tail_start..])
}

#[cfg(test)]
mod tests {
    use std::ops::Add;

    use super::*;
    use crate::fs::FileKind;
    use crate::manifest::{Entry, ObjectId, RelPath};
    use crate::state::{ReleaseId, RollbackPoint, STATE_FORMAT, Trial};

    /// A path of `len` bytes made of the character JSON escapes most (`"` → `\"`), unique
    /// by its prefix `n`.
    fn worst_path(n: usize, len: usize) -> RelPath {
        let prefix = n.to_string();
        let text = format!("{prefix}{}", "\"".repeat(len - prefix.len()));
        RelPath::new(&text, &[]).unwrap()
    }

    fn release() -> ReleaseId {
        ReleaseId {
            counter: Some(u64::MAX),
            rollout_percent: Some(100),
            post_update: Some("p".repeat(crate::state::MAX_POST_UPDATE)),
            ..ReleaseId::new("developer", "r".repeat(255), ObjectId::for_blob(b"x"))
        }
    }

    /// The largest `state.json` the per-release limits allow still reads back: as many
    /// files as allowed, all path bytes in them, every path byte escaped, every size the
    /// widest number; on trial, with a rollback point as large.
    #[test]
    fn the_largest_allowed_release_makes_a_state_ota_reads_back() {
        let len = (MAX_PATH_BYTES / MAX_FILES as u64) as usize;
        let files: Vec<Entry> = (0..MAX_FILES)
            .map(|n| Entry {
                path: worst_path(n, len),
                kind: Kind::Executable,
                size: u64::MAX / MAX_FILES as u64,
                blob: ObjectId::for_blob(b"x"),
                sha256: None,
            })
            .collect();
        let installed = Installed {
            format: STATE_FORMAT,
            txid: LONGEST_TXID.into(),
            release: release(),
            source: "o".repeat(100),
            filter: "f".repeat(64),
            installed_at: "2026-12-03T11:23:49Z".into(),
            previous: Some(release()),
            files: Manifest::new(files).unwrap(),
            trial: None,
            rejected: Vec::new(),
        };
        let mut installed = installed;
        // From JSON: whatever else a trial records has a default.
        let mut trial: Trial = serde_json::from_str(r#"{"since":"2026-12-03T11:23:49Z"}"#).unwrap();
        trial.rollback_to = Some(Box::new(RollbackPoint {
            release: release(),
            source: installed.source.clone(),
            filter: installed.filter.clone(),
            installed_at: installed.installed_at.clone(),
            previous: Some(release()),
            files: installed.files.clone(),
        }));
        installed.trial = Some(trial);
        let size = state_size(&installed);
        eprintln!("largest state.json: {size} bytes of {STATE_BYTES}");
        assert!(size <= STATE_BYTES, "{size} > {STATE_BYTES}");
        assert_eq!(check_commit(&installed, &[]), Ok(()));
        // And the count is exact: what `state` writes is this long.
        let mut small = installed;
        small.files = manifest_of(&["a/\"b\"", "c"]);
        let written = serde_json::to_vec_pretty(&small).unwrap().len() as u64;
        assert_eq!(state_size(&small), written);
    }

    /// The largest journal the limits allow: every file displaced and placed, every folder
    /// removed and created, all path bytes escaped.
    #[test]
    fn the_largest_allowed_update_makes_a_journal_ota_reads_back() {
        let len = (MAX_PATH_BYTES / (MAX_FILES + MAX_FOLDERS) as u64) as usize;
        let slot = (2 * MAX_FILES).to_string();
        let mut ops = Vec::new();
        for n in 0..MAX_FILES {
            let path = worst_path(n, len);
            let slot = slot.clone();
            ops.push(Op::Displace {
                path: path.clone(),
                slot: slot.clone(),
                kind: FileKind::Symlink,
                keep: true,
                previous: Some(ObjectId::for_blob(b"x")),
            });
            ops.push(Op::Place { path, slot });
        }
        for n in 0..MAX_FOLDERS {
            let path = worst_path(n, len);
            ops.push(Op::Displace {
                path: path.clone(),
                slot: slot.clone(),
                kind: FileKind::Symlink,
                keep: true,
                previous: Some(ObjectId::for_blob(b"x")),
            });
            ops.push(Op::CreateDir { path });
        }
        let size = json_size(&ops, false) + JOURNAL_HEADER_BYTES;
        eprintln!("largest journal.json: {size} bytes of {JOURNAL_BYTES}");
        assert!(size <= JOURNAL_BYTES, "{size} > {JOURNAL_BYTES}");
    }

    fn manifest_of(paths: &[&str]) -> Manifest {
        let entries = paths
            .iter()
            .map(|p| Entry {
                path: RelPath::new(p, &[]).unwrap(),
                kind: Kind::File,
                size: 1,
                blob: ObjectId::for_blob(b"x"),
                sha256: None,
            })
            .collect();
        Manifest::new(entries).unwrap()
    }

    #[test]
    fn paths_are_counted_with_their_folders_and_the_target() {
        let dirs = StateDir::new("/t/.ota".into());
        let target = Path::new("/t");
        assert_eq!(
            check_release(&manifest_of(&["a/b/c", "a/b/d", "e"]), target, &dirs),
            Ok(())
        );
        // `/t/` + 4092 bytes = 4095: the longest the kernel takes; one more is refused.
        let long = format!("{}{}", "x".repeat(249).add("/").repeat(16), "y".repeat(92));
        assert_eq!(long.len(), 4092);
        assert_eq!(check_release(&manifest_of(&[&long]), target, &dirs), Ok(()));
        let longer = format!("{long}z");
        let e = check_release(&manifest_of(&[&longer]), target, &dirs).unwrap_err();
        assert_eq!(
            e,
            LimitsError::PathTooLong {
                path: target.join(&longer),
                bytes: 4096
            }
        );
        assert!(e.to_string().contains("4096-byte path"), "{e}");
        // The same release fits a shorter target.
        assert_eq!(
            check_release(&manifest_of(&[&longer]), Path::new("/"), &dirs),
            Ok(())
        );
    }

    #[test]
    fn long_paths_are_shown_abbreviated() {
        let path = PathBuf::from(format!("/t/{}", "x".repeat(4000)));
        let shown = abbreviated(&path);
        assert!(shown.len() < 130 && shown.starts_with("/t/xx") && shown.contains('…'));
    }
}
