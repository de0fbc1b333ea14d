//! Stages files from one archive of the release ([`Transfer::Archive`]): the gzip tar is read
//! once as it streams, through fixed buffers, and each entry the plan downloads is written
//! to its stage slot and verified like any download (size, blob id, SHA-256 when listed).
//!
//! Nothing in the archive chooses where bytes go: an entry's name (its top folder removed)
//! is only looked up among the paths the plan downloads, so names with `..`, absolute names,
//! links and devices are never written; entries that are not wanted are read past. An entry
//! whose size or digest differs from the tree's (`export-subst`, an LFS pointer) is dropped,
//! as is one the archive lacks (`export-ignore`): the caller downloads those one by one.
//! The archive is read at most [`Transfer::Archive`]'s `tar_bytes` (uncompressed).
//!
//! Entries are written where downloads go, `downloads/<blob id>`, so that they outlive a
//! stopped run like any download: when the archive breaks off, the entry it was in keeps
//! its bytes and is resumed with a `Range` request, and a later run does not read again
//! what an earlier one kept whole (read past here, it is verified by the per-file path with
//! no request); a file an earlier run left cut off is written over from the archive.

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use flate2::read::GzDecoder;

use super::{Downloads, FetchError, Fetcher, Hashers, StreamError, Tally, stream};
use crate::manifest::{Entry, Kind};
use crate::plan::{Origin, Transfer};

impl Fetcher<'_> {
    /// Stages what it can of `work` (slot, entry, origin) from the release's archive;
    /// returns the slots staged. Only a failure to write is an error: anything wrong with
    /// the archive leaves the rest to per-file downloads.
    pub(super) fn stage_from_archive(
        &self,
        transfer: Transfer,
        work: &[(String, &Entry, &Origin)],
        stage_path: &(dyn Fn(&str) -> PathBuf + Sync),
        tally: &Tally,
        downloads: &Downloads,
    ) -> Result<BTreeSet<String>, FetchError> {
        let mut staged = BTreeSet::new();
        let Transfer::Archive { tar_bytes } = transfer else {
            return Ok(staged);
        };
        let mut wanted: HashMap<&str, (&str, &Entry)> = work
            .iter()
            .filter(|(_, e, origin)| **origin == Origin::Download && e.kind != Kind::Symlink)
            // Held whole by `downloads/`, from an earlier run: the per-file path verifies it
            // with no request. (One cut off, by a run stopped in the middle of an entry, is
            // written over from the archive, which brings all of it anyway: resuming it would
            // cost a request more.)
            .filter(|(_, e, _)| downloads.held.get(&e.blob) != Some(&e.size))
            .map(|(slot, e, _)| (e.path.as_str(), (slot.as_str(), *e)))
            .collect();
        let total = wanted.len();
        if total == 0 {
            return Ok(staged);
        }
        let body = match self.source.open_archive(&self.commit) {
            Ok(Some(body)) => body,
            Ok(None) => return Ok(staged),
            Err(e) => {
                tracing::warn!("{e}; downloading the files one by one");
                return Ok(staged);
            }
        };
        tracing::info!("reading the release as one archive for {total} files");
        let mut tar = tar::Archive::new(GzDecoder::new(body.reader).take(tar_bytes));
        // Raw entries: long names are read here, within MAX_NAME, rather than by the tar
        // crate, which would hold any size a hostile header declares in memory.
        let entries = match tar.entries().map(|e| e.raw(true)) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!("the archive is unreadable ({e}); downloading the files one by one");
                return Ok(staged);
            }
        };
        let mut long_name: Option<Vec<u8>> = None;
        for item in entries {
            let mut item = match item {
                Ok(item) => item,
                Err(e) => {
                    tracing::warn!("the archive broke off ({e}); downloading the rest one by one");
                    break;
                }
            };
            let kind = item.header().entry_type();
            if kind.is_pax_local_extensions() || kind.is_gnu_longname() {
                match read_name(&mut item, kind.is_gnu_longname()) {
                    Ok(name) => long_name = name,
                    Err(e) => {
                        tracing::warn!("{e}; downloading the rest one by one");
                        break;
                    }
                }
                continue;
            }
            let name = long_name.take();
            if !kind.is_file() {
                continue;
            }
            let name = name.unwrap_or_else(|| item.path_bytes().into_owned());
            // Every entry sits under one top folder (`{owner}-{repo}-{sha}/`).
            let Some((path, (slot, entry))) = name
                .iter()
                .position(|b| *b == b'/')
                .and_then(|slash| std::str::from_utf8(&name[slash + 1..]).ok())
                .and_then(|path| wanted.remove(path).map(|w| (path.to_owned(), w)))
            else {
                continue;
            };
            if item.size() != entry.size {
                tracing::info!("{path} differs in the archive; downloading it");
                continue;
            }
            // As in a download: the first path of a content goes to `downloads/`, another
            // with the same content straight to the stage.
            let first = (downloads.claimed.lock())
                .map(|mut c| c.insert(entry.blob))
                .unwrap_or(false);
            let dest = match first {
                true => self.downloads.join(entry.blob.to_hex()),
                false => stage_path(slot),
            };
            if first && self.fs.metadata(&dest).is_ok_and(|m| m.is_some()) {
                // Part of it, from a stopped run: the archive brings all of it anyway.
                self.fs
                    .remove_file(&dest)
                    .map_err(|e| FetchError::io(&dest, e))?;
            }
            let mut file = self.create(entry, &dest)?;
            let mut hasher = Hashers::new(entry);
            let written = Cell::new(0u64);
            let copied = stream(
                &mut item,
                &mut *file,
                &mut hasher,
                &AtomicBool::new(false),
                &|n| {
                    written.set(written.get() + n);
                    tally.bytes(n);
                },
            );
            drop(file);
            let (whole, broke) = match copied {
                Ok(n) => (n == entry.size && hasher.check(entry).is_ok(), false),
                Err(StreamError::Write(e)) => return Err(FetchError::io(&dest, e)),
                Err(StreamError::Read { .. } | StreamError::Stopped) => (false, true),
            };
            if whole {
                staged.insert(slot.to_owned());
                tally.file_done();
                if first && let Ok(mut finished) = downloads.finished.lock() {
                    finished.push((dest, stage_path(slot)));
                }
            } else {
                tally.take_back(written.get());
                if first {
                    // Unclaimed: the per-file download takes this file up.
                    if let Ok(mut claimed) = downloads.claimed.lock() {
                        claimed.remove(&entry.blob);
                    }
                }
                // The bytes an entry broke off in are kept in `downloads/`: its download
                // resumes after them.
                if !(broke && first) {
                    self.fs
                        .remove_file(&dest)
                        .map_err(|e| FetchError::io(&dest, e))?;
                }
                if broke {
                    tracing::warn!(
                        "the archive broke off in {path}; downloading the rest one by one"
                    );
                    break;
                }
                tracing::info!("{path} differs in the archive (export-subst?); downloading it");
            }
            if wanted.is_empty() {
                break;
            }
        }
        tracing::info!("staged {} of {total} files from the archive", staged.len());
        Ok(staged)
    }
}

/// Longest entry name read (a pax header or a GNU long name): far beyond any path a
/// release may hold, and small enough to keep in memory.
const MAX_NAME: u64 = 64 << 10;

/// The name a pax header (`path`) or a GNU long-name entry gives the next entry (`None`:
/// the pax header names none); an error for one longer than [`MAX_NAME`] or unreadable.
fn read_name<R: Read>(item: &mut tar::Entry<'_, R>, gnu: bool) -> std::io::Result<Option<Vec<u8>>> {
    if item.size() > MAX_NAME {
        return Err(std::io::Error::other(format!(
            "the archive has a name header of {} bytes",
            item.size()
        )));
    }
    if gnu {
        let mut name = Vec::new();
        item.read_to_end(&mut name)?;
        while name.last() == Some(&0) {
            name.pop();
        }
        return Ok(Some(name));
    }
    let mut path = None;
    if let Some(extensions) = item.pax_extensions()? {
        for extension in extensions {
            let extension = extension?;
            if extension.key_bytes() == b"path" {
                path = Some(extension.value_bytes().to_vec());
            }
        }
    }
    Ok(path)
}
