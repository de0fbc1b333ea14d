//! The static site `ota publish` writes: its objects, its release records, its manifests.
//!
//! Every file is written to a temporary file in the folder it belongs in, flushed to disk,
//! then renamed over its name, and the folder is flushed: a reader (a web server, a mirror
//! sync) sees the old file or the new one, never part of one.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::Digest;

use super::PublishError;
use crate::manifest::Sha256;
use crate::signed::{self, Encoding, ObjectRef, ReleaseFile, ReleaseManifest};

/// zstd's level for objects: its highest before the "ultra" levels, whose memory a device
/// would need to decode. Publishing pays the time once; every device saves the bytes.
const ZSTD_LEVEL: i32 = 19;

/// Compression is kept only when it saves at least this share of the size…
const MIN_SAVING_PERCENT: u64 = 10;
/// …and at least this many bytes.
const MIN_SAVING_BYTES: u64 = 512;

/// The folder where published releases live.
pub(super) struct Site {
    root: PathBuf,
    /// An exclusive `flock` on `SITE/.ota-publish.lock`, held while this publish runs.
    _lock: File,
}

/// How an object is stored on the site.
#[derive(Clone, Copy, Debug)]
pub(super) struct Stored {
    pub(super) encoding: Encoding,
    /// Bytes on the site.
    pub(super) size: u64,
}

/// What pruning removed.
#[derive(Debug, Default)]
pub(super) struct Pruned {
    /// Counters of the release records removed.
    pub(super) releases: Vec<u64>,
    /// Objects removed.
    pub(super) objects: u64,
    /// Packs removed.
    pub(super) packs: u64,
    /// Patches removed.
    pub(super) patches: u64,
    /// The bytes of the objects, packs and patches removed.
    pub(super) bytes: u64,
}

impl Site {
    /// The site at `root`, created if missing, locked against other `ota publish` runs: a
    /// second one waits for the first to finish, then takes the next counter.
    pub(super) fn open(root: &Path) -> Result<Site, PublishError> {
        fs::create_dir_all(root).map_err(|e| PublishError::io(root, "create", e))?;
        let path = root.join(".ota-publish.lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| PublishError::io(&path, "open", e))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| PublishError::io(&path, "lock", e.into()))?;
        Ok(Site {
            root: root.to_path_buf(),
            _lock: lock,
        })
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// The next counter: one more than every counter found on the site (every channel's
    /// manifest and every release record), so that it increases across channels and never
    /// repeats, even if records were deleted by hand.
    pub(super) fn next_counter(&self) -> Result<u64, PublishError> {
        let mut highest = 0;
        for (_, manifest) in self.current_manifests()? {
            highest = highest.max(manifest.counter);
        }
        for (counter, _) in self.record_files()? {
            highest = highest.max(counter);
        }
        highest
            .checked_add(1)
            .ok_or_else(|| PublishError::Invalid("the site's counter is at its maximum".into()))
    }

    /// The manifest of every channel published here, by site path.
    fn current_manifests(&self) -> Result<Vec<(String, ReleaseManifest)>, PublishError> {
        let mut paths = vec![signed::manifest_path("stable")];
        let channels = self.path("channels");
        if channels.is_dir() {
            for item in
                fs::read_dir(&channels).map_err(|e| PublishError::io(&channels, "list", e))?
            {
                let item = item.map_err(|e| PublishError::io(&channels, "list", e))?;
                if let Some(name) = item.file_name().to_str() {
                    paths.push(signed::manifest_path(name));
                }
            }
        }
        let mut found = Vec::new();
        for rel in paths {
            let path = self.path(&rel);
            if path.is_file() {
                found.push((rel, read_manifest(&path)?));
            }
        }
        Ok(found)
    }

    /// Every release record (`releases/<counter>.json`), by counter.
    fn record_files(&self) -> Result<Vec<(u64, PathBuf)>, PublishError> {
        let dir = self.path("releases");
        let mut found = Vec::new();
        if !dir.is_dir() {
            return Ok(found);
        }
        for item in fs::read_dir(&dir).map_err(|e| PublishError::io(&dir, "list", e))? {
            let item = item.map_err(|e| PublishError::io(&dir, "list", e))?;
            let name = item.file_name();
            let counter = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(counter) = counter {
                found.push((counter, item.path()));
            }
        }
        found.sort();
        Ok(found)
    }

    /// The release records of `channel`, newest first, at most `n`.
    pub(super) fn recent_records(
        &self,
        channel: &str,
        n: usize,
    ) -> Result<Vec<ReleaseManifest>, PublishError> {
        let mut found = Vec::new();
        for (_, path) in self.record_files()?.into_iter().rev() {
            if found.len() == n {
                break;
            }
            let record = read_manifest(&path)?;
            if record.channel == channel {
                found.push(record);
            }
        }
        Ok(found)
    }

    /// Stores metadata `bytes` (a file list, a change list) as an object, unless the site
    /// has it; returns the reference a manifest gives.
    pub(super) fn store_metadata(
        &self,
        bytes: &[u8],
        what: &str,
    ) -> Result<ObjectRef, PublishError> {
        let sha256 = Sha256::of(bytes);
        let size = bytes.len() as u64;
        let stored = match self.find_object(&sha256) {
            Some(stored) => stored,
            None => self.store_object(&sha256, size, &mut &bytes[..], what)?,
        };
        let object = ObjectRef {
            sha256,
            size,
            encoding: stored.encoding,
            stored_size: (!stored.encoding.is_identity()).then_some(stored.size),
        };
        Ok(object)
    }

    /// The object holding content `sha256`, if the site has it (in any encoding).
    pub(super) fn find_object(&self, sha256: &Sha256) -> Option<Stored> {
        [Encoding::Identity, Encoding::Zstd, Encoding::Gzip]
            .into_iter()
            .find_map(|encoding| {
                let meta = fs::metadata(self.path(&signed::object_path(sha256, encoding))).ok()?;
                meta.is_file().then_some(Stored {
                    encoding,
                    size: meta.len(),
                })
            })
    }

    /// Stores `content` (`size` bytes whose SHA-256 is `sha256`) as an object: zstd
    /// compressed (level [`ZSTD_LEVEL`], a window of at most [`signed::ZSTD_WINDOW_LOG`])
    /// when that saves at least 10% and 512 bytes, as it is otherwise (already compressed
    /// content, small files). The content is checked against `sha256` and `size` while it
    /// is written.
    pub(super) fn store_object(
        &self,
        sha256: &Sha256,
        size: u64,
        content: &mut dyn Read,
        what: &str,
    ) -> Result<Stored, PublishError> {
        let identity = self.path(&signed::object_path(sha256, Encoding::Identity));
        let zstd = self.path(&signed::object_path(sha256, Encoding::Zstd));
        let dir = identity
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.clone());
        fs::create_dir_all(&dir).map_err(|e| PublishError::io(&dir, "create", e))?;
        let temp = |suffix: &str| {
            tempfile::Builder::new()
                .prefix(".tmp-")
                .permissions(readable())
                .suffix(suffix)
                .tempfile_in(&dir)
                .map_err(|e| PublishError::io(&dir, "write in", e))
        };
        let plain = temp("")?;
        // Content too small to save 512 bytes is never compressed.
        let mut packed = match size > MIN_SAVING_BYTES {
            true => {
                let mut encoder = zstd::Encoder::new(BufWriter::new(temp(".zst")?), ZSTD_LEVEL)
                    .map_err(|e| PublishError::io(&dir, "write in", e))?;
                encoder
                    .window_log(signed::ZSTD_WINDOW_LOG)
                    .and_then(|()| encoder.set_pledged_src_size(Some(size)))
                    .map_err(|e| PublishError::io(&dir, "write in", e))?;
                Some(encoder)
            }
            false => None,
        };
        let mut plain_out = BufWriter::new(plain);
        let mut hasher = sha2::Sha256::new();
        let mut seen = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        let failed = |e: io::Error| PublishError::io(&dir, "write in", e);
        loop {
            let n = content
                .read(&mut buf)
                .map_err(|e| PublishError::Read(what.to_owned(), e))?;
            if n == 0 {
                break;
            }
            seen += n as u64;
            hasher.update(&buf[..n]);
            plain_out.write_all(&buf[..n]).map_err(failed)?;
            if let Some(packed) = &mut packed {
                packed.write_all(&buf[..n]).map_err(failed)?;
            }
        }
        let digest = Sha256::from_bytes(hasher.finalize().into());
        if seen != size || digest != *sha256 {
            return Err(PublishError::Changed(PathBuf::from(what)));
        }
        let plain = plain_out.into_inner().map_err(|e| failed(e.into_error()))?;
        let packed = match packed {
            Some(encoder) => {
                let writer = encoder.finish().map_err(failed)?;
                Some(writer.into_inner().map_err(|e| failed(e.into_error()))?)
            }
            None => None,
        };
        let packed_size = match &packed {
            Some(file) => file.as_file().metadata().map_err(failed)?.len(),
            None => u64::MAX,
        };
        let saving = size.saturating_sub(packed_size);
        let worth = packed.is_some()
            && saving >= MIN_SAVING_BYTES
            && saving * 100 >= size * MIN_SAVING_PERCENT;
        let (file, target, stored) = match (worth, packed) {
            (true, Some(packed)) => (
                packed,
                &zstd,
                Stored {
                    encoding: Encoding::Zstd,
                    size: packed_size,
                },
            ),
            _ => (
                plain,
                &identity,
                Stored {
                    encoding: Encoding::Identity,
                    size,
                },
            ),
        };
        file.as_file().sync_all().map_err(failed)?;
        file.persist(target)
            .map_err(|e| PublishError::io(target, "write", e.error))?;
        sync_dir(&dir)?;
        Ok(stored)
    }

    /// Writes `bytes` to the site path `rel`, atomically.
    pub(super) fn write(&self, rel: &str, bytes: &[u8]) -> Result<(), PublishError> {
        self.write_with(rel, &mut |file| {
            file.write_all(bytes)
                .map_err(|e| PublishError::io(&self.path(rel), "write", e))
        })
    }

    /// Like [`Site::write`], the content written by `fill` into the temporary file.
    pub(super) fn write_with(
        &self,
        rel: &str,
        fill: &mut dyn FnMut(&mut File) -> Result<(), PublishError>,
    ) -> Result<(), PublishError> {
        let path = self.path(rel);
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.clone());
        fs::create_dir_all(&dir).map_err(|e| PublishError::io(&dir, "create", e))?;
        let failed = |e: io::Error| PublishError::io(&path, "write", e);
        let mut file = tempfile::Builder::new()
            .prefix(".tmp-")
            .permissions(readable())
            .tempfile_in(&dir)
            .map_err(failed)?;
        fill(file.as_file_mut())?;
        // nginx and Apache derive `ETag` and `Last-Modified` from the mtime in whole
        // seconds (and the size): a manifest replaced within the same second by one of the
        // same size would look unchanged to devices polling conditionally, until it
        // expired. So the new file's mtime is moved past the old one's second.
        if let Ok(old) = fs::metadata(&path).and_then(|m| m.modified()) {
            let new = file.as_file().metadata().and_then(|m| m.modified());
            let new = new.map_err(failed)?;
            if whole_seconds(new) <= whole_seconds(old) {
                let later = UNIX_EPOCH + Duration::from_secs(whole_seconds(old) + 1);
                file.as_file().set_modified(later).map_err(failed)?;
            }
        }
        file.as_file().sync_all().map_err(failed)?;
        file.persist(&path).map_err(|e| failed(e.error))?;
        sync_dir(&dir)
    }

    /// Keeps the `keep` newest release records of each channel and deletes the older ones,
    /// then every object that no kept record and no channel's manifest lists.
    pub(super) fn prune(&self, keep: usize) -> Result<Pruned, PublishError> {
        let mut pruned = Pruned::default();
        let mut by_channel: std::collections::BTreeMap<String, Vec<(u64, PathBuf)>> =
            Default::default();
        let mut referenced = BTreeSet::new();
        let records = self.record_files()?;
        let mut kept = Vec::new();
        for (counter, path) in records {
            let manifest = read_manifest(&path)?;
            by_channel
                .entry(manifest.channel.clone())
                .or_default()
                .push((counter, path));
        }
        for (_, mut records) in by_channel {
            records.sort();
            let cut = records.len().saturating_sub(keep);
            for (counter, path) in records.drain(..cut) {
                for file in [path.clone(), signature_of(&path)] {
                    match fs::remove_file(&file) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(PublishError::io(&file, "delete", e)),
                    }
                }
                pruned.releases.push(counter);
            }
            kept.extend(records);
        }
        // Site paths (`objects/…`, `packs/…`, `patches/…`) that a kept record or a current
        // manifest names.
        for (_, path) in &kept {
            let record = read_manifest(path)?;
            referenced.extend(objects_of(&record));
            referenced.insert(signed::pack_path(&Sha256::of(&signed::file_list_bytes(
                &record.files,
            ))));
        }
        for (_, manifest) in self.current_manifests()? {
            referenced.extend(objects_of(&manifest));
            referenced.extend(
                manifest
                    .file_list
                    .map(|list| signed::pack_path(&list.sha256)),
            );
            let patches = manifest.patches.iter();
            referenced.extend(patches.map(|p| signed::patch_path(&p.from, &p.to)));
        }
        // Only files named as ota names them are ours to delete.
        let object = |name: &str| {
            let hex = [".gz", ".zst"].iter().find_map(|s| name.strip_suffix(s));
            Sha256::from_hex(hex.unwrap_or(name)).is_some()
        };
        let pack = |name: &str| {
            name.strip_suffix(".tar.gz")
                .and_then(Sha256::from_hex)
                .is_some()
        };
        let patch = |name: &str| {
            (name.strip_suffix(".zst"))
                .and_then(|n| n.split_once('-'))
                .is_some_and(|(f, t)| {
                    Sha256::from_hex(f).is_some() && Sha256::from_hex(t).is_some()
                })
        };
        (pruned.objects, pruned.bytes) = self.prune_folder("objects", 1, &object, &referenced)?;
        let (packs, bytes) = self.prune_folder("packs", 0, &pack, &referenced)?;
        (pruned.packs, pruned.bytes) = (packs, pruned.bytes + bytes);
        let (patches, bytes) = self.prune_folder("patches", 1, &patch, &referenced)?;
        (pruned.patches, pruned.bytes) = (patches, pruned.bytes + bytes);
        Ok(pruned)
    }

    /// Deletes the files in the site folder `rel`, and in its folders `depth` levels down,
    /// that `ours` recognises by name and `wanted` (site paths) does not hold; a folder
    /// below `rel` they emptied goes too. Returns how many files, and their bytes.
    fn prune_folder(
        &self,
        rel: &str,
        depth: usize,
        ours: &dyn Fn(&str) -> bool,
        wanted: &BTreeSet<String>,
    ) -> Result<(u64, u64), PublishError> {
        let dir = self.path(rel);
        let mut removed = (0, 0);
        if !dir.is_dir() {
            return Ok(removed);
        }
        let list = |e| PublishError::io(&dir, "list", e);
        for item in fs::read_dir(&dir).map_err(list)? {
            let item = item.map_err(list)?;
            let Some(name) = item.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let site_path = format!("{rel}/{name}");
            let path = item.path();
            if item.file_type().map_err(list)?.is_dir() {
                if depth > 0 {
                    let (files, bytes) = self.prune_folder(&site_path, depth - 1, ours, wanted)?;
                    (removed.0, removed.1) = (removed.0 + files, removed.1 + bytes);
                    // An emptied folder goes too; one still holding files stays.
                    let _ = fs::remove_dir(&path);
                }
                continue;
            }
            if !ours(&name) || wanted.contains(&site_path) {
                continue;
            }
            let len = item.metadata().map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&path).map_err(|e| PublishError::io(&path, "delete", e))?;
            (removed.0, removed.1) = (removed.0 + 1, removed.1 + len);
        }
        Ok(removed)
    }

    /// The size of the patch from content `from` to `to`, if the site has it.
    pub(super) fn find_patch(&self, from: &Sha256, to: &Sha256) -> Option<u64> {
        let meta = fs::metadata(self.path(&signed::patch_path(from, to))).ok()?;
        meta.is_file().then_some(meta.len())
    }

    /// The content of the object `file` lists, decoded.
    fn open_object(&self, file: &ReleaseFile) -> Result<Box<dyn Read>, PublishError> {
        let path = self.path(&signed::object_path(&file.sha256, file.encoding));
        let stored = File::open(&path).map_err(|e| PublishError::io(&path, "read", e))?;
        let failed = |e| PublishError::io(&path, "read", e);
        Ok(match file.encoding {
            Encoding::Identity => Box::new(stored),
            Encoding::Gzip => Box::new(flate2::read::GzDecoder::new(stored)),
            Encoding::Zstd => Box::new(zstd::Decoder::new(stored).map_err(failed)?),
        })
    }

    /// Writes the patch that turns `old` (an object of the site) into `new` (`to` is its
    /// SHA-256): an `OTADELTA` patch, zstd-compressed, kept only when smaller than `limit`
    /// bytes (the new content's own object). Returns its size when kept.
    pub(super) fn store_patch(
        &self,
        old: &ReleaseFile,
        to: &Sha256,
        new: &mut dyn Read,
        limit: u64,
    ) -> Result<Option<u64>, PublishError> {
        let rel = signed::patch_path(&old.sha256, to);
        let path = self.path(&rel);
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.clone());
        let failed = |e: io::Error| PublishError::io(&path, "write", e);
        // The old content, seekable: the patch copies from anywhere in it.
        let mut old_content = tempfile::tempfile().map_err(failed)?;
        io::copy(&mut self.open_object(old)?, &mut old_content).map_err(failed)?;
        fs::create_dir_all(&dir).map_err(|e| PublishError::io(&dir, "create", e))?;
        let mut patch = tempfile::Builder::new()
            .prefix(".tmp-")
            .permissions(readable())
            .tempfile_in(&dir)
            .map_err(failed)?;
        let mut out = Limited {
            inner: BufWriter::new(patch.as_file_mut()),
            left: limit,
            over: false,
        };
        let written = zstd::Encoder::new(&mut out, ZSTD_LEVEL).and_then(|mut encoder| {
            encoder.window_log(signed::ZSTD_WINDOW_LOG)?;
            old_content.seek(io::SeekFrom::Start(0))?;
            crate::delta::write_original(&mut old_content, new, &mut encoder)?;
            encoder.finish().map(drop)
        });
        // A patch not worth keeping leaves nothing, not even its folders (when empty).
        let dropped = |patch: tempfile::NamedTempFile| {
            drop(patch);
            let _ = fs::remove_dir(&dir);
            let _ = fs::remove_dir(self.path("patches"));
            Ok(None)
        };
        if out.over {
            drop(out);
            return dropped(patch);
        }
        written.and_then(|()| out.inner.flush()).map_err(failed)?;
        drop(out);
        let size = patch.as_file().metadata().map_err(failed)?.len();
        if size >= limit {
            return dropped(patch);
        }
        patch.as_file().sync_all().map_err(failed)?;
        patch.persist(&path).map_err(|e| failed(e.error))?;
        sync_dir(&dir)?;
        Ok(Some(size))
    }

    /// Whether the site has the pack of the file list `list`.
    pub(super) fn has_pack(&self, list: &Sha256) -> Option<u64> {
        let meta = fs::metadata(self.path(&signed::pack_path(list))).ok()?;
        meta.is_file().then_some(meta.len())
    }
}

/// A writer that stops (an error) once more than `left` bytes would pass: a patch is not
/// worth keeping past the size of the object it spares.
struct Limited<W: Write> {
    inner: W,
    left: u64,
    over: bool,
}

impl<W: Write> Write for Limited<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.left {
            self.over = true;
            return Err(io::Error::other("the patch is not smaller than the file"));
        }
        let n = self.inner.write(buf)?;
        self.left -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The site paths of the objects a manifest lists (files, file list, change lists).
fn objects_of(manifest: &ReleaseManifest) -> impl Iterator<Item = String> + '_ {
    let files = manifest.files.iter().map(|f| (f.sha256, f.encoding));
    let metadata = (manifest.file_list.iter())
        .chain(manifest.changes.iter().map(|c| &c.object))
        .map(|o| (o.sha256, o.encoding));
    (files.chain(metadata)).map(|(sha256, encoding)| signed::object_path(&sha256, encoding))
}

fn signature_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".minisig");
    PathBuf::from(name)
}

fn whole_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A manifest of this site (trusted: we wrote it; its signature is not checked here).
fn read_manifest(path: &Path) -> Result<ReleaseManifest, PublishError> {
    let bytes = fs::read(path).map_err(|e| PublishError::io(path, "read", e))?;
    ReleaseManifest::parse(&bytes).map_err(|e| {
        PublishError::Invalid(format!(
            "{} is not a release manifest ({e}): the site's counter cannot be known; \
             publish into an empty folder, or remove that file",
            path.display()
        ))
    })
}

/// A site file's mode: readable by everyone (the web server), as a file created with
/// 0644 under the process's umask.
fn readable() -> fs::Permissions {
    fs::Permissions::from_mode(0o644)
}

/// Flushes a folder's entries (a rename in it) to disk.
fn sync_dir(dir: &Path) -> Result<(), PublishError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| PublishError::io(dir, "flush", e))
}
