//! `ota publish` and `ota keygen`: add a signed release to a static site that devices
//! update from (`[source] kind = "static"`).
//!
//! A publish reads the release's files (a git commit or a folder), validates every path as
//! a device would (so a publisher cannot sign a release every device refuses), hashes every
//! file (SHA-256 and git blob id), then writes, in this order:
//!
//! 1. every object the site does not have yet (`objects/<2 hex>/<64 hex>[.gz]`, named by the
//!    SHA-256 of the uncompressed content, so equal content is stored once);
//! 2. the release record `releases/<counter>.json` and its `.minisig`;
//! 3. the channel's `manifest.json`, then its `manifest.json.minisig`;
//! 4. with `keep`, pruning: older release records and the objects nothing kept lists.
//!
//! Each file is written atomically (see `site`), so a device never reads a manifest whose
//! objects are not there yet.

mod keygen;
mod original;
mod site;
mod source;

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde::Serialize;
use sha2::Digest as _;

pub use keygen::{KeygenReport, keygen};
pub use original::{
    DELTAS_DIR, DeltasSummary, OriginalOptions, OriginalSummary, delta_name, publish_original,
};

use crate::filter::{Filter, FilterError};
use crate::manifest::{self, Kind, ManifestError, ObjectId, RelPath, Sha256, TreeEntry};
use crate::signed::{
    self, ChangeList, ChangeRef, KeyError, ObjectRef, PatchRef, ReleaseFile, ReleaseManifest,
    SigningKey,
};
use site::Site;
use source::Contents;

/// Longest symlink target devices accept (as `fetch` checks).
const MAX_LINK: u64 = 4096;

/// Where the files of the release come from.
#[derive(Debug, Clone)]
pub enum Input {
    /// A commit of a git repository (a tag, branch or commit id), read with the `git` CLI.
    Git {
        /// The repository (a working copy or a bare repository).
        repo: PathBuf,
        /// The ref to publish.
        reference: String,
    },
    /// The files of a folder.
    Folder(PathBuf),
}

/// What to publish, and where.
#[derive(Debug)]
pub struct Options {
    /// The release's files.
    pub input: Input,
    /// The site folder.
    pub out: PathBuf,
    /// The channel (`stable` → `manifest.json`, else `channels/<name>/manifest.json`).
    pub channel: String,
    /// The release name; `None`: the ref name (`refs/tags/` or `refs/heads/` removed) for
    /// git, the first 12 hex digits of the files' tree id for a folder.
    pub release: Option<String>,
    /// Which files are published (the same rules as a device's `allow`/`ignore`).
    pub filter: Filter,
    /// How long devices accept the manifest.
    pub expires_in: Duration,
    /// The share of devices that take this release (0–100).
    pub rollout_percent: Option<u8>,
    /// Keep the newest `keep` releases of each channel, and prune the rest.
    pub keep: Option<usize>,
}

/// What a publish did.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The release name.
    pub release: String,
    /// The channel.
    pub channel: String,
    /// The commit (or, for a folder, the git tree id of its files).
    pub commit: String,
    /// The new manifest's counter.
    pub counter: u64,
    /// Where the manifest is, relative to the site.
    pub manifest: String,
    /// Where the release record is, relative to the site (`releases/<counter>.json`, the
    /// files listed inline: what a GitHub release carries as its `manifest.json` asset).
    pub record: String,
    /// Files in the release.
    pub files: usize,
    /// Their total size, uncompressed.
    pub bytes: u64,
    /// File objects written by this publish (not counting the file list and change lists).
    pub objects_written: u64,
    /// Bytes of those objects, as stored.
    pub bytes_written: u64,
    /// Objects the site already had.
    pub objects_reused: u64,
    /// Change lists the manifest names: from how many earlier releases of the channel a
    /// device reads only the change.
    pub change_lists: usize,
    /// The size of the release's pack (`packs/<file list SHA-256>.tar.gz`).
    pub pack_bytes: u64,
    /// Binary patches the manifest names (to changed files, from recent releases).
    pub patches: usize,
    /// Their total size.
    pub patch_bytes: u64,
    /// When the manifest was signed (RFC 3339, UTC).
    pub created: String,
    /// When devices stop accepting it (RFC 3339, UTC).
    pub expires: String,
    /// The signing key's id.
    pub key_id: String,
    /// Counters of the release records pruned.
    pub pruned_releases: Vec<u64>,
    /// Objects pruned.
    pub pruned_objects: u64,
    /// Packs pruned.
    pub pruned_packs: u64,
    /// Patches pruned.
    pub pruned_patches: u64,
    /// Bytes of the objects and packs pruned.
    pub pruned_bytes: u64,
    /// What was skipped (submodules).
    pub warnings: Vec<String>,
}

/// Why a publish failed (nothing the site's devices read was changed, unless said).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A bad option.
    #[error("{0}")]
    Usage(String),
    /// A file could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was done.
        action: &'static str,
        /// To what.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// Content could not be read.
    #[error("cannot read {0}: {1}")]
    Read(String, io::Error),
    /// A file changed while it was published.
    #[error("{} changed while it was being published: publish again once nothing writes to it", .0.display())]
    Changed(PathBuf),
    /// git failed.
    #[error("{0}")]
    Git(String),
    /// A release devices would refuse.
    #[error("devices would refuse this release: {0}; nothing was published")]
    Refused(#[from] ManifestError),
    /// A release or site that cannot be published.
    #[error("{0}")]
    Invalid(String),
    /// A bad `--allow`/`--ignore` pattern.
    #[error("{0}")]
    Filter(#[from] FilterError),
    /// The signing key cannot be used.
    #[error("{0}")]
    Key(#[from] KeyError),
}

impl PublishError {
    pub(crate) fn io(path: &Path, action: &'static str, source: io::Error) -> PublishError {
        PublishError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Compiles `--allow`/`--ignore` patterns (the same rules as a device's config).
pub fn filter(allow: &[String], ignore: &[String]) -> Result<Filter, PublishError> {
    Ok(Filter::new(allow, ignore)?)
}

/// One file of the release, hashed.
struct Hashed {
    entry: manifest::Entry,
    sha256: Sha256,
    /// The tree entry it came from (to read its content again).
    raw: TreeEntry,
}

/// A release read and validated, before anything is written.
struct Release {
    name: String,
    commit: ObjectId,
    files: Vec<Hashed>,
    bytes: u64,
    warnings: Vec<String>,
    /// Where the files' content is read again to store new objects.
    contents: Box<dyn Contents>,
}

/// Publishes one release into the site `options.out`, signed with `key`.
pub fn publish(options: &Options, key: &SigningKey) -> Result<Summary, PublishError> {
    let expires_in = check(options)?;
    let mut release = read(options)?;

    let site = Site::open(&options.out)?;
    let counter = site.next_counter()?;
    let mut summary = Summary {
        release: release.name.clone(),
        channel: options.channel.clone(),
        commit: release.commit.to_hex(),
        counter,
        manifest: signed::manifest_path(&options.channel),
        record: format!("releases/{counter}.json"),
        files: release.files.len(),
        bytes: release.bytes,
        objects_written: 0,
        bytes_written: 0,
        objects_reused: 0,
        change_lists: 0,
        pack_bytes: 0,
        patches: 0,
        patch_bytes: 0,
        created: String::new(),
        expires: String::new(),
        key_id: key.id(),
        pruned_releases: Vec::new(),
        pruned_objects: 0,
        pruned_packs: 0,
        pruned_patches: 0,
        pruned_bytes: 0,
        warnings: std::mem::take(&mut release.warnings),
    };
    // 1. Objects.
    let files = store_objects(&site, &mut release, &mut summary)?;

    // 2. and 3. The release record, then the manifest, then its signature.
    let now = jiff::Timestamp::now();
    let now = jiff::Timestamp::from_second(now.as_second()).unwrap_or(now);
    let expires = now
        .checked_add(expires_in)
        .map_err(|_| PublishError::Usage("--expires-in is too long".into()))?;
    summary.created = now.to_string();
    summary.expires = expires.to_string();
    let record = ReleaseManifest {
        format: signed::FORMAT.to_owned(),
        channel: options.channel.clone(),
        release: release.name.clone(),
        commit: release.commit,
        counter,
        created: summary.created.clone(),
        expires: summary.expires.clone(),
        rollout_percent: options.rollout_percent,
        files: Vec::new(),
        file_list: None,
        changes: Vec::new(),
        pack_size: None,
        patches: Vec::new(),
    };
    // The channel's manifest names its file list, the change lists from recent releases
    // and the release's pack, all written first (the record lists the files inline).
    let recent = site.recent_records(&options.channel, CHANGE_LISTS)?;
    let (file_list, changes) = store_lists(&site, &recent, &files, &mut summary)?;
    let pack_size = store_pack(&site, &file_list.sha256, &mut release)?;
    summary.pack_bytes = pack_size;
    let patches = store_patches(&site, &recent, &mut release, &files)?;
    summary.patches = patches.len();
    summary.patch_bytes = patches.iter().map(|p| p.size).sum();
    let manifest = ReleaseManifest {
        format: signed::FORMAT_INDEX.to_owned(),
        file_list: Some(file_list),
        changes,
        pack_size: Some(pack_size),
        patches,
        ..record.clone()
    };
    let record = ReleaseManifest { files, ..record };
    let comment = format!(
        "ota release {} channel {} counter {counter} expires {}",
        release.name, options.channel, summary.expires
    );
    for (path, manifest) in [(&summary.record, &record), (&summary.manifest, &manifest)] {
        let mut bytes = serde_json::to_vec(manifest)
            .map_err(|e| PublishError::Invalid(format!("cannot write the manifest: {e}")))?;
        bytes.push(b'\n');
        let signature = key.sign(&bytes, &comment)?;
        site.write(path, &bytes)?;
        site.write(&format!("{path}.minisig"), signature.as_bytes())?;
    }

    // 4. Pruning, once the new manifest is in place.
    if let Some(keep) = options.keep {
        let pruned = site.prune(keep)?;
        summary.pruned_releases = pruned.releases;
        summary.pruned_objects = pruned.objects;
        summary.pruned_packs = pruned.packs;
        summary.pruned_patches = pruned.patches;
        summary.pruned_bytes = pruned.bytes;
    }
    Ok(summary)
}

/// Checks the options that need no reading; returns `expires_in` as a signed duration.
fn check(options: &Options) -> Result<jiff::SignedDuration, PublishError> {
    signed::check_channel_name(&options.channel)
        .map_err(|e| PublishError::Usage(format!("--channel {:?} {e}", options.channel)))?;
    if options.rollout_percent.is_some_and(|p| p > 100) {
        return Err(PublishError::Usage(
            "--rollout-percent is a share of devices: 0 to 100".into(),
        ));
    }
    if options.keep == Some(0) {
        return Err(PublishError::Usage(
            "--keep 0 would delete the release being published: keep at least 1".into(),
        ));
    }
    if let Some(name) = &options.release {
        check_release_name(name)?;
    }
    jiff::SignedDuration::try_from(options.expires_in)
        .ok()
        .filter(|d| jiff::Timestamp::now().checked_add(*d).is_ok())
        .ok_or_else(|| PublishError::Usage("--expires-in is too long".into()))
}

fn check_release_name(name: &str) -> Result<(), PublishError> {
    if name.is_empty() || name.chars().any(char::is_control) || name.len() > 255 {
        return Err(PublishError::Usage(format!(
            "--release {name:?} is not a release name: 1 to 255 characters, no control \
             characters"
        )));
    }
    Ok(())
}

/// Reads the release's files and validates them as devices would (paths, modes, symlink
/// targets), hashing every file: nothing is written.
fn read(options: &Options) -> Result<Release, PublishError> {
    let (tree, commit, default_name, mut contents): (_, _, _, Box<dyn Contents>) =
        match &options.input {
            Input::Git { repo, reference } => {
                let commit = source::resolve(repo, reference)?;
                let tree = source::tree(repo, &commit)?;
                let name = reference
                    .strip_prefix("refs/tags/")
                    .or_else(|| reference.strip_prefix("refs/heads/"))
                    .unwrap_or(reference)
                    .to_owned();
                let contents = Box::new(source::GitContents::new(repo)?);
                (tree, Some(commit), Some(name), contents)
            }
            Input::Folder(dir) => {
                refuse_site_inside(dir, &options.out)?;
                let tree = source::walk(dir)?;
                (tree, None, None, Box::new(source::FolderContents::new(dir)))
            }
        };
    let raw_by_path: BTreeMap<String, TreeEntry> =
        tree.iter().map(|e| (e.path.clone(), e.clone())).collect();
    let reserved = [RelPath::new(".ota", &[]).map_err(ManifestError::from)?];
    let (files, warnings) = manifest::from_tree(tree, &options.filter, &reserved, &[])?;
    if files.is_empty() {
        return Err(PublishError::Invalid(
            "the release has no files (after --allow/--ignore): nothing to publish".into(),
        ));
    }

    // Every file's SHA-256; symlink targets are read to be checked as devices check them.
    let mut hashed = Vec::with_capacity(files.len());
    let mut links = BTreeMap::new();
    for entry in files.entries() {
        let Some(raw) = raw_by_path.get(entry.path.as_str()) else {
            continue;
        };
        if entry.kind == Kind::Symlink && entry.size > MAX_LINK {
            return Err(ManifestError::UnsafeLink {
                path: entry.path.clone(),
                target: String::new(),
                problem: manifest::LinkProblem::TooLong(MAX_LINK),
            }
            .into());
        }
        let mut reader = contents.open(raw)?;
        let (sha256, link) = hash(&mut *reader, entry, entry.kind == Kind::Symlink)?;
        drop(reader);
        if let Some(target) = link {
            links.insert(entry.path.clone(), target);
        }
        hashed.push(Hashed {
            entry: entry.clone(),
            sha256,
            raw: raw.clone(),
        });
    }
    manifest::check_links(&links, &reserved)?;
    // A folder's id: the git tree id of the files published.
    let commit = match commit {
        Some(commit) => commit,
        None => source::tree_id(
            &hashed
                .iter()
                .map(|h| (h.entry.path.as_str().to_owned(), h.raw.mode, h.entry.blob))
                .collect::<Vec<_>>(),
        ),
    };
    let name = match (&options.release, default_name) {
        (Some(name), _) => name.clone(),
        (None, Some(name)) => name,
        (None, None) => commit.to_hex()[..12].to_owned(),
    };
    check_release_name(&name)?;
    Ok(Release {
        name,
        commit,
        files: hashed,
        bytes: files.total_bytes(),
        warnings,
        contents,
    })
}

/// Stores every object the site does not have yet (each content once), counting in
/// `summary`; returns the manifest's file list.
fn store_objects(
    site: &Site,
    release: &mut Release,
    summary: &mut Summary,
) -> Result<Vec<ReleaseFile>, PublishError> {
    let mut stored = BTreeMap::new();
    let mut listed = Vec::with_capacity(release.files.len());
    for file in &release.files {
        let object = match stored.get(&file.sha256) {
            Some(object) => *object,
            None => {
                let object = match site.find_object(&file.sha256) {
                    Some(object) => {
                        summary.objects_reused += 1;
                        object
                    }
                    None => {
                        let mut reader = release.contents.open(&file.raw)?;
                        let what = format!("{} of the release", file.entry.path);
                        let object =
                            site.store_object(&file.sha256, file.entry.size, &mut *reader, &what)?;
                        summary.objects_written += 1;
                        summary.bytes_written += object.size;
                        object
                    }
                };
                stored.insert(file.sha256, object);
                object
            }
        };
        listed.push(ReleaseFile {
            path: file.entry.path.as_str().to_owned(),
            kind: file.entry.kind,
            size: file.entry.size,
            blob: file.entry.blob,
            sha256: file.sha256,
            encoding: object.encoding,
            stored_size: (object.encoding != signed::Encoding::Identity).then_some(object.size),
        });
    }
    Ok(listed)
}

/// How many earlier releases of a channel its manifest names change lists and patches from:
/// a device on one of them reads only what changed; one further behind reads the whole file
/// list, and whole files.
const CHANGE_LISTS: usize = 3;

/// Stores the file list `files` and the change lists to it from the channel's
/// [`CHANGE_LISTS`] newest release records, as objects; returns their references.
fn store_lists(
    site: &Site,
    recent: &[ReleaseManifest],
    files: &[ReleaseFile],
    summary: &mut Summary,
) -> Result<(ObjectRef, Vec<ChangeRef>), PublishError> {
    let file_list = site.store_metadata(&signed::file_list_bytes(files), "the file list")?;
    let mut changes: Vec<ChangeRef> = Vec::new();
    for old in recent {
        let change = ChangeList::between(&old.files, files);
        if change.from == change.to || changes.iter().any(|c| c.from == change.from) {
            continue;
        }
        let bytes = serde_json::to_vec(&change)
            .map_err(|e| PublishError::Invalid(format!("cannot write a change list: {e}")))?;
        let object = site.store_metadata(&bytes, "a change list")?;
        changes.push(ChangeRef {
            from: change.from,
            object,
        });
    }
    summary.change_lists = changes.len();
    Ok((file_list, changes))
}

/// Files smaller than this get no patch: their own object is small already.
const MIN_PATCH_SIZE: u64 = 1024;

/// Writes the patches to each changed file of `files` from its content in the `recent`
/// releases of the channel (the same path, another content), kept when smaller than the
/// file's own object; returns those the manifest names (the site may hold them already).
fn store_patches(
    site: &Site,
    recent: &[ReleaseManifest],
    release: &mut Release,
    files: &[ReleaseFile],
) -> Result<Vec<PatchRef>, PublishError> {
    let earlier: Vec<std::collections::HashMap<&str, &ReleaseFile>> = (recent.iter())
        .map(|r| r.files.iter().map(|f| (f.path.as_str(), f)).collect())
        .collect();
    let raw: std::collections::HashMap<&str, &TreeEntry> = (release.files.iter())
        .map(|f| (f.entry.path.as_str(), &f.raw))
        .collect();
    let mut patches: Vec<PatchRef> = Vec::new();
    for new in files
        .iter()
        .filter(|f| f.kind != Kind::Symlink && f.size >= MIN_PATCH_SIZE)
    {
        let own = new.stored_size.unwrap_or(new.size);
        let olds = (earlier.iter()).filter_map(|files| files.get(new.path.as_str()));
        for old in olds.filter(|old| old.kind != Kind::Symlink && old.sha256 != new.sha256) {
            if patches
                .iter()
                .any(|p| p.from == old.sha256 && p.to == new.sha256)
            {
                continue;
            }
            let size = match site.find_patch(&old.sha256, &new.sha256) {
                Some(size) => Some(size),
                None => {
                    let Some(raw) = raw.get(new.path.as_str()) else {
                        continue;
                    };
                    let mut content = release.contents.open(raw)?;
                    site.store_patch(old, &new.sha256, &mut *content, own)?
                }
            };
            if let Some(size) = size {
                patches.push(PatchRef {
                    from: old.sha256,
                    to: new.sha256,
                    size,
                });
            }
        }
    }
    Ok(patches)
}

/// Writes the release's pack, `packs/<list>.tar.gz` (unless the site has it: the same file
/// list gives the same pack): a gzip tar of every file under one top folder `release/`,
/// in the list's order, with fixed owners and times so the same files give the same bytes.
/// Symlinks are left out (a device reads them from the file list). Each file is checked
/// against its SHA-256 as it is packed. Returns the pack's size.
fn store_pack(site: &Site, list: &Sha256, release: &mut Release) -> Result<u64, PublishError> {
    if let Some(size) = site.has_pack(list) {
        return Ok(size);
    }
    let rel = signed::pack_path(list);
    site.write_with(&rel, &mut |file| {
        let failed = |e: io::Error| PublishError::io(Path::new(&rel), "write", e);
        let packed = GzEncoder::new(io::BufWriter::new(&mut *file), Compression::best());
        let mut tar = tar::Builder::new(packed);
        for hashed in release
            .files
            .iter()
            .filter(|f| f.entry.kind != Kind::Symlink)
        {
            let mut header = tar::Header::new_gnu();
            header.set_size(hashed.entry.size);
            header.set_mode(match hashed.entry.kind {
                Kind::Executable => 0o755,
                _ => 0o644,
            });
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            let mut content = HashingReader {
                inner: release.contents.open(&hashed.raw)?,
                hasher: sha2::Sha256::new(),
            };
            let name = format!("release/{}", hashed.entry.path);
            tar.append_data(&mut header, &name, &mut content)
                .map_err(failed)?;
            let digest = Sha256::from_bytes(content.hasher.finalize_reset().into());
            if digest != hashed.sha256 {
                return Err(PublishError::Changed(PathBuf::from(
                    hashed.entry.path.as_str(),
                )));
            }
        }
        let packed = tar.into_inner().map_err(failed)?;
        packed.finish().map_err(failed)?.flush().map_err(failed)
    })?;
    site.has_pack(list)
        .ok_or_else(|| PublishError::Invalid(format!("{rel} vanished as it was written")))
}

/// A reader that hashes what goes through it.
struct HashingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
}

impl<R: io::Read> io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Refuses to publish a folder that holds the site: the site's own files would become part
/// of the release, and change while it is read.
fn refuse_site_inside(dir: &Path, out: &Path) -> Result<(), PublishError> {
    let dir = std::fs::canonicalize(dir).map_err(|e| PublishError::io(dir, "read", e))?;
    let out = match std::fs::canonicalize(out) {
        Ok(out) => out,
        Err(_) => path_clean::clean(
            std::path::absolute(out).map_err(|e| PublishError::io(out, "read", e))?,
        ),
    };
    if out.starts_with(&dir) {
        return Err(PublishError::Usage(format!(
            "--out {} is inside --dir {}: the site would publish itself; write the site \
             elsewhere",
            out.display(),
            dir.display()
        )));
    }
    Ok(())
}

/// Reads `reader` to the end: its SHA-256, checked against the entry's size and blob id;
/// for a symlink, also its target (UTF-8, as devices require).
fn hash(
    reader: &mut dyn io::Read,
    entry: &manifest::Entry,
    keep_text: bool,
) -> Result<(Sha256, Option<String>), PublishError> {
    use sha2::Digest;
    let mut sha256 = sha2::Sha256::new();
    let mut blob = manifest::BlobHasher::new(entry.size);
    let mut seen = 0u64;
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| PublishError::Read(entry.path.to_string(), e))?;
        if n == 0 {
            break;
        }
        seen += n as u64;
        sha256.update(&buf[..n]);
        blob.update(&buf[..n]);
        if keep_text {
            kept.extend_from_slice(&buf[..n]);
        }
    }
    if seen != entry.size || blob.finish() != entry.blob {
        return Err(PublishError::Changed(PathBuf::from(entry.path.as_str())));
    }
    let text = match keep_text {
        true => Some(
            String::from_utf8(kept).map_err(|_| ManifestError::UnsafeLink {
                path: entry.path.clone(),
                target: String::new(),
                problem: manifest::LinkProblem::NotText,
            })?,
        ),
        false => None,
    };
    Ok((Sha256::from_bytes(sha256.finalize().into()), text))
}
