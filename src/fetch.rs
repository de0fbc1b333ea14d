//! Fills the stage: every new file of a plan, verified byte for byte.
//!
//! Each file streams through a fixed buffer (memory does not grow with file size), hashed
//! as it arrives; it is accepted only when its size and git blob id equal the tree's, and
//! its SHA-256 too when the release lists one (a signed manifest: SHA-1 alone is not trusted
//! against a host that chooses what to serve). A dropped connection resumes from the bytes
//! already written (a `Range` request) up to `retries` times; a server that ignores the
//! range restarts the file from zero. A wrong digest is not retried: it stops the update
//! with the path and both digests, and the target is untouched. Files run `parallel` at a
//! time.
//!
//! # Resume across runs
//! A download is written to `<state>/downloads/<blob id>`, not to the stage, and moved into
//! `stage/<txid>/<slot>` ([`Fetched::stage`]) only just before the swap, once every file is
//! here and `[before_update]` succeeded. So a run that stops (Ctrl-C, a reboot, a lost
//! link, a failed download, a failed `[before_update]`) leaves its downloads behind, complete
//! or partial, and the next run that wants the same content, for the same release or any
//! other, takes them up: the bytes on disk are hashed again, the rest is asked for with a
//! `Range` request, and the whole file is verified as always. Bytes kept from an earlier run
//! are never trusted before that check: a file that does not verify (torn by a power cut,
//! or changed) is downloaded again whole. Before downloading, every file there that the
//! update does not want is removed, so `downloads/` never holds more than the files of the
//! last update that began downloading, each at most its size: bytes that update's free
//! space check counted. After a commit it is empty.
//!
//! Content the plan found on disk (a moved file, a changed exec bit) is copied from there
//! instead, verified the same way; if the local copy turns out to differ, it is downloaded.
//! Content kept from the previous release (`<state>/previous/<blob id>`) is hard-linked into
//! the stage (no bytes written; copied when only the exec bit differs) and then verified by
//! reading it; a missing or damaged object is downloaded instead.
//!
//! When the plan chose [`Transfer::Archive`](crate::plan::Transfer), the files to download
//! are first read from one archive of the release (`fetch/archive.rs`), into `downloads/`
//! too; any it did not stage are then downloaded one by one as above.
//!
//! A [`Progress`] callback, when given, hears about every chunk written and every file
//! finished, one call at a time, so that a program can draw a bar or log a line.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

mod archive;

use crate::config::NetworkConfig;
use crate::delta;
use crate::fs::{FileKind, Fs, WriteFile};
use crate::http::{NotTheObject, backoff};
use sha2::Digest as _;

use crate::manifest::{
    BlobHasher, Entry, Kind, LinkProblem, Manifest, ManifestError, ObjectId, RelPath, Sha256,
};
use crate::plan::{Change, Origin, Plan};
use crate::source::{Source, SourceError};
use crate::transaction;

/// Read buffer per download.
const BUFFER: usize = 64 * 1024;
/// Longest symlink target accepted.
const MAX_LINK: u64 = 4096;

/// What fetching did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Fetched {
    /// Files downloaded.
    pub downloaded: usize,
    /// Files staged from local content: copied from the target, or taken from the kept
    /// previous release.
    pub copied: usize,
    /// Downloads still in `downloads/`, and the stage path each goes to: moved by
    /// [`Fetched::stage`] just before the swap, so that a run stopped before it (in
    /// `[before_update]`, say) leaves them for the next one.
    pending: Vec<(PathBuf, PathBuf)>,
}

impl Fetched {
    /// Moves the downloads into the stage (the journal's barrier makes these renames
    /// durable).
    pub(crate) fn stage(&mut self, fs: &dyn Fs) -> Result<(), FetchError> {
        for (download, dest) in std::mem::take(&mut self.pending) {
            fs.rename(&download, &dest)
                .map_err(|e| FetchError::io(&dest, e))?;
        }
        Ok(())
    }
}

/// How far staging an update's files has come: what an [`Updater::on_progress`] callback
/// receives, from the download threads, one call at a time.
///
/// Counts cover every file the update stages, downloaded or copied from local content.
/// `bytes_done` can go back when a server ignores a resume and a file starts over; when all
/// files are staged, `files_done == files_total` and `bytes_done == bytes_total`.
///
/// [`Updater::on_progress`]: crate::Updater::on_progress
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Files staged so far.
    pub files_done: usize,
    /// Files the update stages.
    pub files_total: usize,
    /// Bytes staged so far.
    pub bytes_done: u64,
    /// Bytes the update stages (the sum of the files' sizes).
    pub bytes_total: u64,
}

/// A progress callback. Downloads run in parallel threads, hence `Send + Sync`.
pub(crate) type ProgressFn = dyn Fn(Progress) + Send + Sync;

/// The running [`Progress`] of one fetch, reported after each change. The lock serialises
/// the callback, so it sees the counts in order.
struct Tally<'a> {
    now: Mutex<Progress>,
    report: Option<&'a (dyn Fn(Progress) + Send + Sync + 'a)>,
}

impl Tally<'_> {
    fn change(&self, update: impl FnOnce(&mut Progress)) {
        let Some(report) = self.report else {
            return;
        };
        // A callback that panicked left plain numbers behind; go on with them.
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        update(&mut now);
        report(*now);
    }

    fn bytes(&self, n: u64) {
        self.change(|p| p.bytes_done = p.bytes_done.saturating_add(n));
    }

    fn take_back(&self, n: u64) {
        self.change(|p| p.bytes_done = p.bytes_done.saturating_sub(n));
    }

    fn file_done(&self) {
        self.change(|p| p.files_done += 1);
    }
}

/// What the download threads of one fetch share.
struct Run<'a> {
    /// Set when a file failed: the other threads stop.
    stop: AtomicBool,
    /// The progress.
    tally: Tally<'a>,
    /// Objects of `previous/` already hard-linked into the stage.
    linked: Mutex<BTreeSet<ObjectId>>,
    /// The downloads that go through `downloads/`.
    downloads: Downloads,
}

/// The downloads of one fetch that go through `downloads/`.
struct Downloads {
    /// What earlier runs left there that this fetch wants: the length of each file, by the
    /// blob id it is named by (not yet verified).
    held: BTreeMap<ObjectId, u64>,
    /// The blob ids being downloaded there (one file each).
    claimed: Mutex<BTreeSet<ObjectId>>,
    /// Finished downloads and the stage path each becomes once all files are here.
    finished: Mutex<Vec<(PathBuf, PathBuf)>>,
}

/// Everything fetching needs.
pub(crate) struct Fetcher<'a> {
    /// Where bytes come from.
    pub source: &'a dyn Source,
    /// The filesystem.
    pub fs: &'a dyn Fs,
    /// The target directory (local copies are read from it).
    pub target: &'a Path,
    /// The kept previous release, `<state>/previous/` ([`Origin::Previous`]).
    pub store: &'a Path,
    /// Downloads kept across runs, `<state>/downloads/` (see the module docs).
    pub downloads: &'a Path,
    /// The commit being installed.
    pub commit: ObjectId,
    /// The target of every symlink of the release, read and checked before the update
    /// began ([`link_targets`], [`crate::manifest::check_links`]): the only targets staged.
    pub links: &'a BTreeMap<RelPath, String>,
    /// Retries, backoff, parallelism.
    pub net: &'a NetworkConfig,
    /// Told how far staging has come.
    pub progress: Option<&'a (dyn Fn(Progress) + Send + Sync + 'a)>,
}

impl Fetcher<'_> {
    /// Stages every added or replaced file of `plan`; `stage_path(slot)` names the file.
    pub(crate) fn fetch(
        &self,
        plan: &Plan,
        stage_path: &(dyn Fn(&str) -> PathBuf + Sync),
    ) -> Result<Fetched, FetchError> {
        let mut work: Vec<(String, &Entry, &Origin)> = plan
            .changes
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((Change::slot(i), c.entry.as_ref()?, c.origin.as_ref()?)))
            .collect();
        let next = AtomicUsize::new(0);
        let failure: Mutex<Option<FetchError>> = Mutex::new(None);
        let downloaded = AtomicUsize::new(0);
        let copied = AtomicUsize::new(0);
        let wanted = (work.iter())
            .filter(|(_, e, _)| e.kind != Kind::Symlink)
            .map(|(_, e, _)| e.blob)
            .collect();
        let held = self.prepare_downloads(&wanted)?;
        let workers = self.net.parallel.clamp(1, work.len().max(1));
        let run = Run {
            stop: AtomicBool::new(false),
            tally: Tally {
                now: Mutex::new(Progress {
                    files_total: work.len(),
                    bytes_total: work.iter().map(|(_, e, _)| e.size).sum(),
                    ..Progress::default()
                }),
                report: self.progress,
            },
            linked: Mutex::new(BTreeSet::new()),
            downloads: Downloads {
                held,
                claimed: Mutex::new(BTreeSet::new()),
                finished: Mutex::new(Vec::new()),
            },
        };
        run.tally.change(|_| {});
        // Most of the release to download: read it as one archive first; what it did not
        // stage is downloaded one by one below.
        let from_archive =
            self.stage_from_archive(plan.transfer, &work, stage_path, &run.tally, &run.downloads)?;
        work.retain(|(slot, _, _)| !from_archive.contains(slot));
        downloaded.fetch_add(from_archive.len(), Ordering::Relaxed);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    while !run.stop.load(Ordering::Relaxed) {
                        let Some((slot, entry, origin)) =
                            work.get(next.fetch_add(1, Ordering::Relaxed))
                        else {
                            break;
                        };
                        let dest = stage_path(slot);
                        let done = self.fetch_one(entry, origin, &dest, &run);
                        if done.is_ok() {
                            run.tally.file_done();
                        }
                        match done {
                            Ok(true) => copied.fetch_add(1, Ordering::Relaxed),
                            Ok(false) => downloaded.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                run.stop.store(true, Ordering::Relaxed);
                                if let Ok(mut slot) = failure.lock()
                                    && slot.is_none()
                                {
                                    *slot = Some(e);
                                }
                                break;
                            }
                        };
                    }
                });
            }
        });
        if let Some(e) = failure.into_inner().ok().flatten() {
            return Err(e);
        }
        Ok(Fetched {
            downloaded: downloaded.into_inner(),
            copied: copied.into_inner(),
            pending: run.downloads.finished.into_inner().unwrap_or_default(),
        })
    }

    /// Removes from `downloads/` every file whose blob id is not `wanted` (creating the
    /// folder if needed), and returns the length of each file left there. Only names of 40
    /// lowercase hex digits are ever removed there.
    fn prepare_downloads(
        &self,
        wanted: &BTreeSet<ObjectId>,
    ) -> Result<BTreeMap<ObjectId, u64>, FetchError> {
        let dir = self.downloads;
        fn io(path: &Path) -> impl Fn(io::Error) -> FetchError + '_ {
            move |e| FetchError::io(path, e)
        }
        let mut held = BTreeMap::new();
        if self.fs.metadata(dir).map_err(io(dir))?.is_none() {
            self.fs.create_dir(dir, 0o755).map_err(io(dir))?;
            return Ok(held);
        }
        for name in self.fs.read_dir(dir).map_err(io(dir))? {
            let Some(id) = name.to_str().and_then(transaction::object_name) else {
                continue;
            };
            let path = dir.join(&name);
            let Some(meta) = self.fs.metadata(&path).map_err(io(&path))? else {
                continue;
            };
            if meta.kind != FileKind::File {
                continue;
            }
            if wanted.contains(&id) {
                held.insert(id, meta.len);
            } else {
                self.fs.remove_file(&path).map_err(io(&path))?;
                tracing::debug!("removed {}: the update does not want it", path.display());
            }
        }
        Ok(held)
    }

    /// Stages one file; `Ok(true)` when it was copied from local content.
    fn fetch_one(
        &self,
        entry: &Entry,
        origin: &Origin,
        dest: &Path,
        run: &Run,
    ) -> Result<bool, FetchError> {
        let Run {
            stop,
            tally,
            linked,
            downloads,
        } = run;
        if let Origin::Copy(from) = origin {
            if self.copy_local(entry, &self.target.join(from.as_str()), dest)? {
                tracing::debug!("staged {} from local {}", entry.path, from);
                tally.bytes(entry.size);
                return Ok(true);
            }
            tracing::info!("{from} changed on disk; downloading {} instead", entry.path);
        }
        if let Origin::Previous(id) = origin {
            // One hard link per object: two paths of a release with the same content stay
            // two files, as a download would make them.
            let first = linked.lock().map(|mut l| l.insert(*id)).unwrap_or(false);
            if self.stage_kept(entry, &self.store.join(id.to_hex()), dest, first)? {
                tracing::debug!("staged {} from the kept previous release", entry.path);
                tally.bytes(entry.size);
                return Ok(true);
            }
            tracing::info!(
                "the kept copy of {} is missing or damaged; downloading it instead",
                entry.path
            );
        }
        match entry.kind {
            Kind::Symlink => {
                self.download_link(entry, dest)?;
                tally.bytes(entry.size);
            }
            Kind::File | Kind::Executable => {
                // Two paths with the same content: the first goes through `downloads/`, the
                // other straight into the stage (not resumable, as rare as it is).
                let first = (downloads.claimed.lock())
                    .map(|mut c| c.insert(entry.blob))
                    .unwrap_or(false);
                if first {
                    let kept = self.downloads.join(entry.blob.to_hex());
                    if !self.patch(entry, &kept, tally)? {
                        self.download_file(entry, &kept, true, stop, tally)?;
                    }
                    if let Ok(mut finished) = downloads.finished.lock() {
                        finished.push((kept, dest.to_owned()));
                    }
                } else {
                    self.download_file(entry, dest, false, stop, tally)?;
                }
            }
        }
        tracing::debug!("downloaded {} ({} bytes)", entry.path, entry.size);
        Ok(false)
    }

    /// Makes `entry` at `dest` by patching the file at its path in the target, when the
    /// source has a patch from that file's content (its SHA-256, read here); `Ok(false)`,
    /// and nothing changed at `dest`, when there is none, when an earlier run began a
    /// download at `dest` (it goes on), or when the patch does not make exactly the entry's
    /// content (its size and SHA-256: [`delta::apply`] checks both).
    fn patch(&self, entry: &Entry, dest: &Path, tally: &Tally) -> Result<bool, FetchError> {
        let sources = self.source.patch_sources(&self.commit, entry);
        let Some(sha256) = entry.sha256.filter(|_| !sources.is_empty()) else {
            return Ok(false);
        };
        if self
            .fs
            .metadata(dest)
            .map_err(|e| FetchError::io(dest, e))?
            .is_some()
        {
            return Ok(false);
        }
        let old = self.target.join(entry.path.as_str());
        let is_file = |m: Option<crate::fs::Meta>| m.is_some_and(|m| m.kind == FileKind::File);
        if !self.fs.metadata(&old).is_ok_and(is_file) {
            return Ok(false);
        }
        let Some(from) = sha256_of(self.fs, &old).filter(|from| sources.contains(from)) else {
            return Ok(false);
        };
        let patch = match self.source.open_patch(&self.commit, entry, &from) {
            Ok(patch) => patch,
            Err(e) => {
                tracing::info!("{e}; downloading {} whole", entry.path);
                return Ok(false);
            }
        };
        let Ok(mut old_file) = self.fs.open(&old) else {
            return Ok(false);
        };
        let mut file = self.create(entry, dest)?;
        let expected = delta::Expected {
            size: entry.size,
            sha256: sha256.to_bytes(),
        };
        let patched = delta::apply(&mut old_file, patch.reader, &mut *file, &expected);
        drop(file);
        match patched {
            Ok(_) => {
                tracing::info!("patched {} from the installed copy", entry.path);
                tally.bytes(entry.size);
                Ok(true)
            }
            Err(e) => {
                tracing::info!(
                    "the patch of {} does not apply ({e}); downloading it whole",
                    entry.path
                );
                self.fs
                    .remove_file(dest)
                    .map_err(|e| FetchError::io(dest, e))?;
                Ok(false)
            }
        }
    }

    /// Copies local content, verifying it; `Ok(false)` (and nothing left behind) when it
    /// is not what `entry` wants.
    fn copy_local(&self, entry: &Entry, from: &Path, dest: &Path) -> Result<bool, FetchError> {
        let io = |e| FetchError::io(dest, e);
        if entry.kind == Kind::Symlink {
            let target = match self.fs.read_link(from) {
                Ok(t) => t,
                Err(_) => return Ok(false),
            };
            if Hashers::of(entry, &target).check(entry).is_err() {
                return Ok(false);
            }
            self.link(entry, &target, dest)?;
            return Ok(true);
        }
        let Ok(reader) = self.fs.open(from) else {
            return Ok(false);
        };
        let mut file = self.create(entry, dest)?;
        let mut hasher = Hashers::new(entry);
        let copied = stream(
            reader.take(entry.size + 1),
            &mut *file,
            &mut hasher,
            &AtomicBool::new(false),
            &|_| {},
        );
        drop(file);
        match copied {
            Ok(n) if n == entry.size && hasher.check(entry).is_ok() => Ok(true),
            _ => {
                self.fs.remove_file(dest).map_err(io)?;
                Ok(false)
            }
        }
    }

    /// Stages `entry` from `object` under `previous/`: a hard link when `link` and it is a
    /// file with the right exec bit (verified by reading the staged file), else a verified
    /// copy; `Ok(false)` (and nothing left behind) when the object is missing or not what
    /// `entry` wants.
    fn stage_kept(
        &self,
        entry: &Entry,
        object: &Path,
        dest: &Path,
        link: bool,
    ) -> Result<bool, FetchError> {
        let Ok(Some(meta)) = self.fs.metadata(object) else {
            return Ok(false);
        };
        let linkable = link
            && entry.kind != Kind::Symlink
            && meta.kind == FileKind::File
            && meta.len == entry.size
            && meta.executable == (entry.kind == Kind::Executable);
        if linkable {
            match self.fs.hard_link(object, dest) {
                Ok(()) => {
                    if verify_file(self.fs, dest, entry) {
                        return Ok(true);
                    }
                    self.fs
                        .remove_file(dest)
                        .map_err(|e| FetchError::io(dest, e))?;
                    return Ok(false);
                }
                Err(e) => tracing::debug!("cannot hard-link {}: {e}; copying", object.display()),
            }
        }
        self.copy_local(entry, object, dest)
    }

    fn create(&self, entry: &Entry, dest: &Path) -> Result<Box<dyn WriteFile>, FetchError> {
        self.fs
            .create(dest, entry.kind == Kind::Executable)
            .map_err(|e| FetchError::io(dest, e))
    }

    /// Downloads a file into `dest`, resuming after each interruption; with `resume`, from
    /// what an earlier run left at `dest` (see the module docs). An attempt that brought no
    /// new byte counts against `retries`; one that made progress does not, so a file
    /// survives any number of drops as long as bytes keep arriving (the update deadline still
    /// holds). A file that does not verify is removed.
    fn download_file(
        &self,
        entry: &Entry,
        dest: &Path,
        resume: bool,
        stop: &AtomicBool,
        tally: &Tally,
    ) -> Result<(), FetchError> {
        let (mut file, mut hasher, mut written) = match resume {
            true => self.reopen(entry, dest)?,
            false => (self.create(entry, dest)?, Hashers::new(entry), 0),
        };
        let kept = written;
        if kept > 0 {
            tally.bytes(kept);
            tracing::info!(
                "resuming {} at byte {kept} of {} (downloaded by an earlier run)",
                entry.path,
                entry.size
            );
        }
        let mut validator: Option<String> = None;
        let mut fruitless = 0u32;
        let mut drops = 0u32;
        // A file an earlier run finished needs no request: its digests decide below.
        while !(kept > 0 && written == entry.size) {
            let body = self
                .source
                .open(&self.commit, entry, written, validator.as_deref())
                .map_err(FetchError::Source)?;
            if body.offset != written {
                // The server sent the whole file again: start over.
                drop(file);
                self.fs
                    .remove_file(dest)
                    .map_err(|e| FetchError::io(dest, e))?;
                file = self.create(entry, dest)?;
                hasher = Hashers::new(entry);
                tally.take_back(written);
                written = 0;
            }
            if validator.is_none() {
                validator = body.validator;
            }
            let before = written;
            let limit = entry.size - written + 1;
            let outcome = stream(
                body.reader.take(limit),
                &mut *file,
                &mut hasher,
                stop,
                &|n| tally.bytes(n),
            );
            let interruption = match outcome {
                Ok(n) => {
                    written += n;
                    if written > entry.size {
                        return Err(FetchError::Integrity {
                            path: entry.path.to_string(),
                            expected: entry.blob,
                            actual: None,
                            message: format!(
                                "the server sent more than the {} bytes the tree declares",
                                entry.size
                            ),
                        });
                    }
                    if written == entry.size {
                        break;
                    }
                    format!("body ended after {written} of {} bytes", entry.size)
                }
                Err(StreamError::Write(e)) => return Err(FetchError::io(dest, e)),
                Err(StreamError::Stopped) => return Err(FetchError::Stopped),
                Err(StreamError::Read { error, .. }) if NotTheObject::is(&error) => {
                    // Asking again would bring the same bytes.
                    self.fs
                        .remove_file(dest)
                        .map_err(|e| FetchError::io(dest, e))?;
                    return Err(FetchError::Integrity {
                        path: entry.path.to_string(),
                        expected: entry.blob,
                        actual: None,
                        message: error.to_string(),
                    });
                }
                Err(StreamError::Read { read, error }) => {
                    written += read;
                    if written == entry.size {
                        // Every byte is here; the connection broke after them (a declared
                        // length longer than the body). The digest below decides.
                        break;
                    }
                    error.to_string()
                }
            };
            drops += 1;
            if written > before {
                fruitless = 0;
            } else {
                fruitless += 1;
            }
            if fruitless > self.net.retries {
                return Err(FetchError::Interrupted {
                    path: entry.path.to_string(),
                    attempts: drops,
                    message: interruption,
                });
            }
            let delay = backoff(self.net, fruitless);
            tracing::warn!(
                "downloading {}: {interruption}; resuming at byte {written} in {:.1}s (interruption {drops})",
                entry.path,
                delay.as_secs_f64(),
            );
            std::thread::sleep(delay);
        }
        drop(file);
        let checked = hasher.check(entry);
        if checked.is_err() {
            self.fs
                .remove_file(dest)
                .map_err(|e| FetchError::io(dest, e))?;
            if kept > 0 {
                // The error may lie in the bytes an earlier run left (a power cut can zero
                // or tear them): start over from nothing, once.
                tracing::warn!(
                    "{}: the {kept} bytes kept from an earlier run are not the release's; downloading the whole file again",
                    entry.path
                );
                tally.take_back(written);
                return self.download_file(entry, dest, true, stop, tally);
            }
        }
        checked
    }

    /// Opens what an earlier run left at `path` to write on at its end, with the digests of
    /// the bytes there and their count; a new empty file when nothing usable is there (a
    /// file longer than `entry`, of another mode, or unreadable is removed: a run killed
    /// between creating a file and giving it its mode leaves it private).
    fn reopen(
        &self,
        entry: &Entry,
        path: &Path,
    ) -> Result<(Box<dyn WriteFile>, Hashers, u64), FetchError> {
        let io = |e| FetchError::io(path, e);
        if let Some(meta) = self.fs.metadata(path).map_err(io)? {
            let usable = meta.kind == FileKind::File
                && meta.len <= entry.size
                && meta.mode == crate::fs::file_mode(entry.kind == Kind::Executable);
            if usable
                && let Some(hashers) = hash_prefix(self.fs, path, entry, meta.len)
                && let Ok(file) = self.fs.append(path)
            {
                return Ok((file, hashers, meta.len));
            }
            self.fs.remove_file(path).map_err(io)?;
        }
        Ok((self.create(entry, path)?, Hashers::new(entry), 0))
    }

    /// Stages a symlink whose target was read and checked before the update began.
    fn download_link(&self, entry: &Entry, dest: &Path) -> Result<(), FetchError> {
        let target = self
            .links
            .get(&entry.path)
            .ok_or_else(|| FetchError::Integrity {
                path: entry.path.to_string(),
                expected: entry.blob,
                actual: None,
                message: "symbolic link target was not checked before the update".into(),
            })?;
        self.link(entry, target.as_bytes(), dest)
    }

    /// Creates a symlink in the stage, if `target` is the one checked for it.
    fn link(&self, entry: &Entry, target: &[u8], dest: &Path) -> Result<(), FetchError> {
        if self.links.get(&entry.path).map(String::as_bytes) != Some(target) {
            return Err(FetchError::Integrity {
                path: entry.path.to_string(),
                expected: entry.blob,
                actual: Some(ObjectId::for_blob(target)),
                message: "symbolic link target is not the one checked".into(),
            });
        }
        self.fs
            .symlink(target, dest)
            .map_err(|e| FetchError::io(dest, e))
    }
}

/// Reads the target of every symlink in `manifest`: from the link in `root` when it already
/// has the release's blob id, else from the link kept as `store/<blob id>` (the previous
/// release), else from `source`; each verified against its blob id. A target over 4 KiB or
/// not UTF-8 rejects the release.
pub(crate) fn link_targets(
    source: &dyn Source,
    fs: &dyn Fs,
    root: &Path,
    store: &Path,
    commit: &ObjectId,
    manifest: &Manifest,
) -> Result<BTreeMap<RelPath, String>, FetchError> {
    let mut targets = BTreeMap::new();
    for entry in manifest
        .entries()
        .iter()
        .filter(|e| e.kind == Kind::Symlink)
    {
        let unsafe_link = |target: String, problem| {
            FetchError::Manifest(ManifestError::UnsafeLink {
                path: entry.path.clone(),
                target,
                problem,
            })
        };
        if entry.size > MAX_LINK {
            let shown = format!("<{} bytes>", entry.size);
            return Err(unsafe_link(shown, LinkProblem::TooLong(MAX_LINK)));
        }
        let right = |t: &Vec<u8>| Hashers::of(entry, t).check(entry).is_ok();
        let local = fs.read_link(&root.join(entry.path.as_str())).ok();
        let kept = || fs.read_link(&store.join(entry.blob.to_hex())).ok();
        let bytes = match local.filter(right).or_else(|| kept().filter(right)) {
            Some(bytes) => bytes,
            None => download_link_target(source, commit, entry)?,
        };
        let text = String::from_utf8(bytes).map_err(|e| {
            let shown = String::from_utf8_lossy(e.as_bytes()).into_owned();
            unsafe_link(shown, LinkProblem::NotText)
        })?;
        targets.insert(entry.path.clone(), text);
    }
    Ok(targets)
}

/// Downloads one symlink's target, verified against its blob id.
fn download_link_target(
    source: &dyn Source,
    commit: &ObjectId,
    entry: &Entry,
) -> Result<Vec<u8>, FetchError> {
    let body = source
        .open(commit, entry, 0, None)
        .map_err(FetchError::Source)?;
    let mut target = Vec::new();
    body.reader
        .take(entry.size + 1)
        .read_to_end(&mut target)
        .map_err(|e| FetchError::Interrupted {
            path: entry.path.to_string(),
            attempts: 1,
            message: e.to_string(),
        })?;
    Hashers::of(entry, &target).check(entry)?;
    Ok(target)
}

/// The digests a file is verified against, computed in one pass over its bytes: the git
/// blob id always, and the SHA-256 when the release lists one (a signed manifest).
struct Hashers {
    blob: BlobHasher,
    sha256: Option<sha2::Sha256>,
}

impl Hashers {
    fn new(entry: &Entry) -> Hashers {
        Hashers {
            blob: BlobHasher::new(entry.size),
            sha256: entry.sha256.map(|_| sha2::Sha256::new()),
        }
    }

    /// The digests of `content`, whole.
    fn of(entry: &Entry, content: &[u8]) -> Hashers {
        let mut hashers = Hashers::new(&Entry {
            size: content.len() as u64,
            ..entry.clone()
        });
        hashers.update(content);
        hashers
    }

    fn update(&mut self, bytes: &[u8]) {
        self.blob.update(bytes);
        if let Some(sha256) = &mut self.sha256 {
            sha256.update(bytes);
        }
    }

    /// Whether the bytes fed are `entry`'s content; the error names both digests.
    fn check(self, entry: &Entry) -> Result<(), FetchError> {
        let actual = self.blob.finish();
        if let (Some(expected), Some(hasher)) = (entry.sha256, self.sha256) {
            let got = Sha256::from_bytes(hasher.finalize().into());
            if got != expected {
                return Err(FetchError::Integrity {
                    path: entry.path.to_string(),
                    expected: entry.blob,
                    actual: Some(actual),
                    message: format!(
                        "content does not match the release: expected SHA-256 {expected}, got {got}"
                    ),
                });
            }
        }
        if actual != entry.blob {
            return Err(FetchError::Integrity {
                path: entry.path.to_string(),
                expected: entry.blob,
                actual: Some(actual),
                message: "content does not match the release".into(),
            });
        }
        Ok(())
    }
}

/// The digests of the first `len` bytes of the file at `path`, to go on with the rest of
/// `entry`'s content; `None` if fewer bytes can be read.
fn hash_prefix(fs: &dyn Fs, path: &Path, entry: &Entry, len: u64) -> Option<Hashers> {
    let mut hashers = Hashers::new(entry);
    let seen = feed(fs.open(path).ok()?.take(len), |bytes| hashers.update(bytes))?;
    (seen == len).then_some(hashers)
}

/// The SHA-256 of the file at `path`; `None` when it cannot be read.
fn sha256_of(fs: &dyn Fs, path: &Path) -> Option<Sha256> {
    let mut hasher = sha2::Sha256::new();
    feed(fs.open(path).ok()?, |bytes| hasher.update(bytes))?;
    Some(Sha256::from_bytes(hasher.finalize().into()))
}

/// Whether the file at `path` holds exactly `entry`'s content (size and every digest).
fn verify_file(fs: &dyn Fs, path: &Path, entry: &Entry) -> bool {
    let Ok(reader) = fs.open(path) else {
        return false;
    };
    let mut hashers = Hashers::new(entry);
    let seen = feed(reader.take(entry.size + 1), |bytes| hashers.update(bytes));
    seen == Some(entry.size) && hashers.check(entry).is_ok()
}

/// Hands every byte of `reader` to `each`, through a fixed buffer; returns how many, or
/// `None` when reading fails.
fn feed(mut reader: impl Read, mut each: impl FnMut(&[u8])) -> Option<u64> {
    let mut buf = vec![0u8; BUFFER];
    let mut seen = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Some(seen),
            Ok(n) => {
                seen += n as u64;
                each(&buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

enum StreamError {
    Read { read: u64, error: io::Error },
    Write(io::Error),
    Stopped,
}

/// Copies `reader` into `file` through a fixed buffer, hashing and telling `written` about
/// each chunk; returns bytes copied.
fn stream(
    mut reader: impl Read,
    file: &mut dyn WriteFile,
    hasher: &mut Hashers,
    stop: &AtomicBool,
    written: &dyn Fn(u64),
) -> Result<u64, StreamError> {
    let mut buf = vec![0u8; BUFFER];
    let mut total = 0u64;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(StreamError::Stopped);
        }
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(StreamError::Read { read: total, error }),
        };
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(StreamError::Write)?;
        total += n as u64;
        written(n as u64);
    }
}

/// A file that could not be staged.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The source failed (after its retries).
    #[error(transparent)]
    Source(SourceError),
    /// The bytes are not the release's.
    #[error(
        "{path}: {message} (expected git blob {expected}{}). The update was stopped and nothing in the target changed; \
         if this repeats, something between the device and the server alters files",
        actual.map(|a| format!(", got {a}")).unwrap_or_default()
    )]
    Integrity {
        /// The release path.
        path: String,
        /// The blob id the tree declares.
        expected: ObjectId,
        /// The blob id of what arrived, when complete.
        actual: Option<ObjectId>,
        /// What was wrong.
        message: String,
    },
    /// The connection kept failing.
    #[error(
        "downloading {path}: {message} (gave up after {attempts} attempts); check the network and retry"
    )]
    Interrupted {
        /// The release path.
        path: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        message: String,
    },
    /// A symlink that escapes, or similar.
    #[error(transparent)]
    Manifest(ManifestError),
    /// Writing the stage failed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The staged file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Another download failed first.
    #[error("stopped because another download failed")]
    Stopped,
}

impl FetchError {
    fn io(path: &Path, source: io::Error) -> FetchError {
        FetchError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(content: &[u8], sha256: Option<Sha256>) -> Entry {
        Entry {
            path: RelPath::new("a.txt", &[]).unwrap(),
            kind: Kind::File,
            size: content.len() as u64,
            blob: ObjectId::for_blob(content),
            sha256,
        }
    }

    #[test]
    fn the_sha256_is_checked_beside_the_blob_id_and_both_digests_are_named() {
        let content = b"hello\n";
        let good = entry(content, Some(Sha256::of(content)));
        assert!(Hashers::of(&good, content).check(&good).is_ok());
        // The blob id matches but the signed SHA-256 does not: refused, naming both.
        let other = Sha256::of(b"other");
        let bad = entry(content, Some(other));
        let error = Hashers::of(&bad, content).check(&bad).unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, FetchError::Integrity { .. }), "{text}");
        assert!(text.contains(&other.to_hex()), "{text}");
        assert!(text.contains(&Sha256::of(content).to_hex()), "{text}");
        // Without a SHA-256, the blob id alone decides, as before.
        let plain = entry(content, None);
        assert!(Hashers::of(&plain, content).check(&plain).is_ok());
        assert!(Hashers::of(&plain, b"hellO\n").check(&plain).is_err());
    }
}
