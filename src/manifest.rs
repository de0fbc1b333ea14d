//! The normalized list of files of one release, validated once at the boundary.
//!
//! Everything in a [`Manifest`] came from the network and was checked here before anything
//! else sees it: every path is relative, `/`-separated, has no empty, `.` or `..` part, no
//! backslash, NUL or control character, is not under ota's own state folder (in any casing),
//! and is unique, also ignoring case; no entry sits "inside" another file. A hostile tree is
//! rejected as a whole, before a single byte is written.
//!
//! Case is compared with Unicode's lowercase mapping from std (`str::to_lowercase`), which
//! is simple case folding for nearly all letters: `App/x` and `app/x` collide, and so do
//! `.OTA` and `.ota`. Full folding (`ß` and `ss`) and Unicode normalisation are not applied.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::filter::Filter;

/// A git object id (SHA-1), e.g. a blob, tree or commit id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId([u8; 20]);

impl ObjectId {
    /// Parses 40 hex digits (either case).
    pub fn from_hex(hex: &str) -> Option<ObjectId> {
        let mut bytes = [0u8; 20];
        hex::decode_to_slice(hex, &mut bytes).ok()?;
        Some(ObjectId(bytes))
    }

    /// The git blob id of `content`: SHA-1 of `"blob <len>\0" + content`.
    pub fn for_blob(content: &[u8]) -> ObjectId {
        let mut hasher = BlobHasher::new(content.len() as u64);
        hasher.update(content);
        hasher.finish()
    }

    /// 40 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({})", self.to_hex())
    }
}

impl Serialize for ObjectId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ObjectId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        ObjectId::from_hex(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not a 40-hex object id: {text:?}")))
    }
}

/// A SHA-256 digest of a file's content, which signed release manifests list beside the
/// git blob id (SHA-1 alone is not trusted against a host that chooses what to serve).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256([u8; 32]);

impl Sha256 {
    /// Parses 64 hex digits (either case).
    pub fn from_hex(hex: &str) -> Option<Sha256> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex, &mut bytes).ok()?;
        Some(Sha256(bytes))
    }

    /// The digest of `content`.
    pub fn of(content: &[u8]) -> Sha256 {
        Sha256(sha2::Sha256::digest(content).into())
    }

    /// Wraps a finished digest.
    pub fn from_bytes(bytes: [u8; 32]) -> Sha256 {
        Sha256(bytes)
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The digest's bytes.
    pub fn to_bytes(self) -> [u8; 32] {
        self.0
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({})", self.to_hex())
    }
}

impl Serialize for Sha256 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Sha256::from_hex(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not a 64-hex SHA-256: {text:?}")))
    }
}

/// Computes a git blob id over content that arrives in pieces, for content whose length is
/// known up front (git hashes the length before the bytes).
pub(crate) struct BlobHasher {
    sha1: Sha1,
}

impl BlobHasher {
    /// Starts a blob of `len` bytes.
    pub(crate) fn new(len: u64) -> BlobHasher {
        let mut sha1 = Sha1::new();
        sha1.update(format!("blob {len}\0").as_bytes());
        BlobHasher { sha1 }
    }

    /// Feeds the next bytes.
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.sha1.update(bytes);
    }

    /// The id; only meaningful if exactly `len` bytes were fed.
    pub(crate) fn finish(self) -> ObjectId {
        ObjectId(self.sha1.finalize().into())
    }
}

/// A validated release path: relative, `/`-separated, normalized.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct RelPath(String);

/// Longest path and path component ota accepts (Linux's PATH_MAX and NAME_MAX).
const MAX_PATH: usize = 4096;
const MAX_COMPONENT: usize = 255;

impl RelPath {
    /// Validates `path` against the rules in the module docs. `reserved` are top-level
    /// folders (relative to the target) that no release path may enter, such as `.ota`.
    pub(crate) fn new(path: &str, reserved: &[RelPath]) -> Result<RelPath, PathError> {
        let fail = |reason: PathProblem| PathError {
            path: path.to_owned(),
            problem: reason,
        };
        if path.is_empty() {
            return Err(fail(PathProblem::Empty));
        }
        if path.len() > MAX_PATH {
            return Err(fail(PathProblem::TooLong));
        }
        if path.starts_with('/') {
            return Err(fail(PathProblem::Absolute));
        }
        if path.contains('\0') {
            return Err(fail(PathProblem::Nul));
        }
        if path.contains('\\') {
            return Err(fail(PathProblem::Backslash));
        }
        if path.chars().any(char::is_control) {
            return Err(fail(PathProblem::ControlCharacter));
        }
        for part in path.split('/') {
            match part {
                "" => return Err(fail(PathProblem::EmptyComponent)),
                "." | ".." => return Err(fail(PathProblem::DotComponent)),
                _ if part.len() > MAX_COMPONENT => return Err(fail(PathProblem::TooLong)),
                _ => {}
            }
        }
        // Any casing: on a case-insensitive filesystem `.OTA/x` is `.ota/x`.
        let folded = fold(path);
        if let Some(r) = reserved.iter().find(|r| within(&folded, &fold(&r.0))) {
            return Err(fail(PathProblem::Reserved(r.0.clone())));
        }
        Ok(RelPath(path.to_owned()))
    }

    /// The path as `/`-separated text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parent folder, or `None` at the top level.
    #[cfg(test)]
    pub(crate) fn parent(&self) -> Option<RelPath> {
        self.0.rsplit_once('/').map(|(p, _)| RelPath(p.to_owned()))
    }

    /// Every ancestor folder, outermost first (`a/b/c` → `a`, `a/b`).
    pub(crate) fn ancestors(&self) -> impl Iterator<Item = RelPath> + '_ {
        self.0
            .match_indices('/')
            .map(|(i, _)| RelPath(self.0[..i].to_owned()))
    }

    /// The same path ignoring case (see the module docs).
    pub(crate) fn folded(&self) -> String {
        fold(&self.0)
    }

    /// Number of components (`a/b` → 2).
    pub(crate) fn depth(&self) -> usize {
        self.0.matches('/').count() + 1
    }
}

/// A path's text ignoring case, as a case-insensitive filesystem compares names.
fn fold(path: &str) -> String {
    path.to_lowercase()
}

/// Whether the `/`-separated path `path` is `folder` or lies inside it.
fn within(path: &str, folder: &str) -> bool {
    path == folder || (path.starts_with(folder) && path.as_bytes().get(folder.len()) == Some(&b'/'))
}

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        RelPath::new(&text, &[]).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A path that cannot be installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path {path:?} {problem}")]
pub struct PathError {
    /// The offending path as received (shown escaped).
    pub path: String,
    /// What is wrong with it.
    pub problem: PathProblem,
}

/// What is wrong with a path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)]
pub enum PathProblem {
    #[error("is empty")]
    Empty,
    #[error("is absolute")]
    Absolute,
    #[error("has an empty component (`//` or a trailing `/`)")]
    EmptyComponent,
    #[error("has a `.` or `..` component")]
    DotComponent,
    #[error("contains a NUL byte")]
    Nul,
    #[error("contains a backslash")]
    Backslash,
    #[error("contains a control character")]
    ControlCharacter,
    #[error("is too long")]
    TooLong,
    #[error("lies inside ota's own folder `{0}`")]
    Reserved(String),
}

/// What a release path holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A regular file (git mode 100644).
    File,
    /// A regular file with the exec bit (git mode 100755).
    Executable,
    /// A symbolic link (git mode 120000); its blob is the link target.
    Symlink,
}

/// One file of a release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Where it goes, relative to the target directory.
    pub path: RelPath,
    /// File, executable or symlink.
    pub kind: Kind,
    /// Size in bytes of the blob (for a symlink: the length of its target).
    pub size: u64,
    /// Git blob id of the content.
    pub blob: ObjectId,
    /// SHA-256 of the content, when the release's manifest lists one: then it is verified
    /// too, wherever the blob id is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Sha256>,
}

impl Entry {
    /// Whether two entries put the same thing on disk (same content and mode).
    pub(crate) fn same_content(&self, other: &Entry) -> bool {
        self.kind == other.kind && self.blob == other.blob && self.size == other.size
    }
}

/// The files of one release (after filtering), sorted by path, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Manifest {
    entries: Vec<Entry>,
}

impl<'de> Deserialize<'de> for Manifest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let entries = Vec::<Entry>::deserialize(d)?;
        Manifest::new(entries).map_err(serde::de::Error::custom)
    }
}

impl Manifest {
    /// Builds a manifest, rejecting duplicate paths, paths inside another file (`a` and
    /// `a/b` both present), and declared sizes whose sum does not fit in 64 bits (so that
    /// every later sum of sizes is exact). Paths themselves are already valid [`RelPath`]s.
    pub(crate) fn new(mut entries: Vec<Entry>) -> Result<Manifest, ManifestError> {
        let mut total = 0u64;
        for entry in &entries {
            total = total
                .checked_add(entry.size)
                .ok_or_else(|| ManifestError::Oversized(entry.path.clone()))?;
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        for pair in entries.windows(2) {
            if pair[0].path == pair[1].path {
                return Err(ManifestError::Duplicate(pair[0].path.clone()));
            }
        }
        // After sorting, `a/b` need not follow `a` directly (`a-x` sorts between them), so
        // check every ancestor of every path against the set.
        let index: BTreeMap<&RelPath, ()> = entries.iter().map(|e| (&e.path, ())).collect();
        for entry in &entries {
            if let Some(parent) = entry.path.ancestors().find(|a| index.contains_key(a)) {
                return Err(ManifestError::InsideFile {
                    path: entry.path.clone(),
                    file: parent,
                });
            }
        }
        Ok(Manifest { entries })
    }

    /// The entries, sorted by path.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry at `path`.
    pub fn get(&self, path: &RelPath) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.path.cmp(path))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total size of all entries in bytes (checked to fit when the manifest was built).
    pub fn total_bytes(&self) -> u64 {
        self.entries
            .iter()
            .fold(0u64, |sum, e| sum.saturating_add(e.size))
    }
}

/// A release whose file list cannot be installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// An invalid path.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The same path listed twice.
    #[error("path {0} is listed twice")]
    Duplicate(RelPath),
    /// A path below something that is a file.
    #[error("path {path} lies inside {file}, which is a file in the same release")]
    InsideFile {
        /// The inner path.
        path: RelPath,
        /// The file it would sit under.
        file: RelPath,
    },
    /// A symlink that leads outside the target directory, into ota's own folder, or nowhere
    /// (a loop), once resolved through the release's own symlinks.
    #[error("symbolic link {path} -> {target:?} {problem}; ota refuses releases with such links")]
    UnsafeLink {
        /// The link.
        path: RelPath,
        /// Its target as stored in the release.
        target: String,
        /// Where it leads, and why that is refused.
        problem: LinkProblem,
    },
    /// Two paths that are one on a case-insensitive filesystem.
    #[error(
        "paths {0} and {1} differ only in case: on a case-insensitive filesystem one would \
         overwrite the other; rename one of them in the release"
    )]
    CaseCollision(String, String),
    /// A file without a size.
    #[error("the release's tree gives no size for {0}")]
    MissingSize(RelPath),
    /// Declared sizes that add up to more than 64 bits can count: no real release.
    #[error(
        "the release's declared file sizes add up to more than {max} bytes (at {0}); no real \
         release is that large: the server sent a broken or hostile file list",
        max = u64::MAX
    )]
    Oversized(RelPath),
    /// A git mode ota does not know.
    #[error("path {path} has git mode {mode}, which ota does not know how to install")]
    UnknownMode {
        /// The path.
        path: String,
        /// The mode string.
        mode: String,
    },
}

/// Why a release symlink is refused; `via` lists the release's links it went through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)]
pub enum LinkProblem {
    #[error("is empty")]
    Empty,
    #[error("is not UTF-8 text")]
    NotText,
    #[error("is longer than {0} bytes")]
    TooLong(u64),
    #[error("leads to the absolute path {to:?}{}", through(via))]
    Absolute { to: String, via: Vec<String> },
    #[error("leads outside the target directory (`..` above it){}", through(via))]
    Leaves { via: Vec<String> },
    #[error("leads into ota's own folder `{folder}`{}", through(via))]
    IntoState { folder: String, via: Vec<String> },
    #[error(
        "does not resolve: more than {MAX_LINK_HOPS} links followed (a loop){}",
        through(via)
    )]
    Loop { via: Vec<String> },
    #[error(
        "names {name}, which is the release's link {link} in another case: where it leads \
         depends on the filesystem"
    )]
    CaseOfLink { name: String, link: String },
}

/// ", through the release's links a -> \"x\", b -> \"y\"", or nothing.
fn through(via: &[String]) -> String {
    // A loop passes the same links again and again: each is named once.
    let mut named: Vec<&str> = Vec::new();
    for hop in via {
        if !named.contains(&hop.as_str()) {
            named.push(hop);
        }
    }
    match named.is_empty() {
        true => String::new(),
        false => format!(", through the release's link(s) {}", named.join(", ")),
    }
}

/// Most symlinks followed while resolving one link, like Linux's `MAXSYMLINKS`.
pub(crate) const MAX_LINK_HOPS: usize = 40;

/// Checks every symlink of a release, given the targets of all of them (`links`: link path →
/// target text): each is resolved as the kernel would, through the release's own symlinks
/// (at most [`MAX_LINK_HOPS`] of them), and must end inside the target directory and
/// outside `reserved` (ota's own folders, in any casing). A target that names a path the
/// release does not hold resolves as a plain folder: ota judges what the release ships.
pub(crate) fn check_links(
    links: &BTreeMap<RelPath, String>,
    reserved: &[RelPath],
) -> Result<(), ManifestError> {
    let by_name: BTreeMap<&str, &str> = links
        .iter()
        .map(|(path, target)| (path.as_str(), target.as_str()))
        .collect();
    let folded: BTreeMap<String, &str> = links
        .keys()
        .map(|path| (path.folded(), path.as_str()))
        .collect();
    let reserved: Vec<String> = reserved.iter().map(RelPath::folded).collect();
    for (link, target) in links {
        resolve_link(link, target, &by_name, &folded, &reserved).map_err(|problem| {
            ManifestError::UnsafeLink {
                path: link.clone(),
                target: target.clone(),
                problem,
            }
        })?;
    }
    Ok(())
}

/// Where `link` (whose target is `target`) leads, relative to the target directory
/// (`""` is the target itself).
fn resolve_link(
    link: &RelPath,
    target: &str,
    links: &BTreeMap<&str, &str>,
    folded_links: &BTreeMap<String, &str>,
    reserved: &[String],
) -> Result<String, LinkProblem> {
    if target.is_empty() {
        return Err(LinkProblem::Empty);
    }
    let mut via: Vec<String> = Vec::new();
    let absolute = |to: &str, via: &[String]| LinkProblem::Absolute {
        to: to.to_owned(),
        via: via.to_vec(),
    };
    if target.starts_with('/') {
        return Err(absolute(target, &via));
    }
    // `dir` holds folders only, never one of the release's links (each is replaced by its
    // target as soon as it is reached), so `..` is its parent, as for the kernel.
    let mut dir: Vec<&str> = link.as_str().split('/').collect();
    dir.pop();
    let mut pending: VecDeque<&str> = target.split('/').collect();
    // Opening the link itself is the first hop, as for the kernel.
    let mut hops = 1;
    while let Some(part) = pending.pop_front() {
        match part {
            "" | "." => continue,
            ".." => {
                if dir.pop().is_none() {
                    return Err(LinkProblem::Leaves { via });
                }
                continue;
            }
            name => dir.push(name),
        }
        let here = dir.join("/");
        let here_folded = fold(&here);
        if let Some(folder) = reserved.iter().find(|r| within(&here_folded, r)) {
            let folder = folder.clone();
            return Err(LinkProblem::IntoState { folder, via });
        }
        let Some(next) = links.get(here.as_str()) else {
            if let Some(link) = folded_links.get(&here_folded) {
                let link = (*link).to_owned();
                return Err(LinkProblem::CaseOfLink { name: here, link });
            }
            continue;
        };
        hops += 1;
        via.push(format!("{here} -> {next:?}"));
        if hops > MAX_LINK_HOPS {
            return Err(LinkProblem::Loop { via });
        }
        if next.starts_with('/') {
            return Err(absolute(next, &via));
        }
        dir.pop();
        for part in next.split('/').rev() {
            pending.push_front(part);
        }
    }
    Ok(dir.join("/"))
}

/// One entry of a release's git tree, as the source reported it (untrusted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEntry {
    /// Path inside the repository.
    pub path: String,
    /// Git file mode, e.g. `0o100644`.
    pub mode: u32,
    /// Object id (blob, or commit for a submodule).
    pub id: ObjectId,
    /// Size in bytes (blobs).
    pub size: Option<u64>,
    /// SHA-256 of the content, when a signed or original manifest lists it.
    pub sha256: Option<Sha256>,
}

/// Git modes ota installs or knowingly skips.
const MODE_FILE: u32 = 0o100644;
const MODE_GROUP_WRITABLE: u32 = 0o100664;
const MODE_EXECUTABLE: u32 = 0o100755;
const MODE_SYMLINK: u32 = 0o120000;
const MODE_TREE: u32 = 0o040000;
const MODE_SUBMODULE: u32 = 0o160000;

/// A file of the device that a release never writes (its config file, its token file),
/// relative to the target directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Protected {
    /// Where it is, relative to the target.
    pub path: RelPath,
    /// What it is, for the warning: "the config file".
    pub what: String,
}

impl Protected {
    /// Whether installing `path` would write this file, replace it, or replace a folder
    /// that holds it (in any casing).
    pub(crate) fn touched_by(&self, path: &RelPath) -> bool {
        let (path, mine) = (path.folded(), self.path.folded());
        within(&path, &mine) || within(&mine, &path)
    }
}

/// Turns a release's tree into its manifest: validates every path (a single bad one
/// rejects the release, even one the filter would drop), keeps the paths the filter
/// includes, skips folders, skips submodules with a warning, and skips with a warning every
/// path that would write a `protected` file. The paths it keeps must not collide ignoring
/// case (a folder `a/b` and a file `a/B` collide too).
pub(crate) fn from_tree(
    tree: Vec<TreeEntry>,
    filter: &Filter,
    reserved: &[RelPath],
    protected: &[Protected],
) -> Result<(Manifest, Vec<String>), ManifestError> {
    let mut entries = Vec::new();
    let mut warnings = Vec::new();
    for raw in tree {
        let path = RelPath::new(&raw.path, reserved)?;
        let kind = match raw.mode {
            MODE_FILE | MODE_GROUP_WRITABLE => Kind::File,
            MODE_EXECUTABLE => Kind::Executable,
            MODE_SYMLINK => Kind::Symlink,
            MODE_TREE => continue,
            MODE_SUBMODULE => {
                if filter.includes(path.as_str()) {
                    warnings.push(format!(
                        "{path} is a git submodule; ota does not install submodules, skipped"
                    ));
                }
                continue;
            }
            other => {
                return Err(ManifestError::UnknownMode {
                    path: raw.path,
                    mode: format!("{other:o}"),
                });
            }
        };
        if !filter.includes(path.as_str()) {
            continue;
        }
        if let Some(mine) = protected.iter().find(|p| p.touched_by(&path)) {
            warnings.push(format!(
                "{path} is not installed: it would overwrite {} ({}), which a release never \
                 writes; the device's own file stays. Remove {path} from the release, or \
                 `ignore` it",
                mine.what, mine.path
            ));
            continue;
        }
        let size = raw
            .size
            .ok_or_else(|| ManifestError::MissingSize(path.clone()))?;
        entries.push(Entry {
            path,
            kind,
            size,
            blob: raw.id,
            sha256: raw.sha256,
        });
    }
    check_case(&entries)?;
    Ok((Manifest::new(entries)?, warnings))
}

/// Refuses two paths, or a path and a folder of another path, that differ only in case.
fn check_case(entries: &[Entry]) -> Result<(), ManifestError> {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for entry in entries {
        let path = entry.path.as_str();
        let folders = path.match_indices('/').map(|(i, _)| &path[..i]);
        for name in folders.chain([path]) {
            let first = *seen.entry(fold(name)).or_insert(name);
            if first != name {
                return Err(ManifestError::CaseCollision(first.into(), name.into()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> RelPath {
        RelPath::new(p, &[]).unwrap()
    }

    fn entry(p: &str) -> Entry {
        Entry {
            path: path(p),
            kind: Kind::File,
            size: 0,
            blob: ObjectId::for_blob(b""),
            sha256: None,
        }
    }

    #[test]
    fn sizes_whose_sum_overflows_are_refused() {
        let mut a = entry("a");
        let mut b = entry("b");
        a.size = 1 << 63;
        b.size = 1 << 63;
        assert!(Manifest::new(vec![a.clone(), entry("b")]).is_ok());
        let err = Manifest::new(vec![a, b]).unwrap_err();
        assert_eq!(err, ManifestError::Oversized(path("b")));
        assert!(err.to_string().contains("broken or hostile"), "{err}");
    }

    #[test]
    fn blob_ids_match_git() {
        assert_eq!(
            ObjectId::for_blob(b"").to_hex(),
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        );
        assert_eq!(
            ObjectId::for_blob(b"what is up, doc?").to_hex(),
            "bd9dbf5aae1a3862dd1526723246b20206e5fc37"
        );
    }

    #[test]
    fn hostile_paths_are_refused() {
        let reserved = [path(".ota")];
        for bad in [
            "",
            "/etc/x",
            "../x",
            "a/../../x",
            "a//b",
            "a/",
            "./a",
            "a/.",
            "a\\b",
            "a\0b",
            ".ota/x",
            ".ota",
            "a\nb",
        ] {
            assert!(RelPath::new(bad, &reserved).is_err(), "{bad:?} accepted");
        }
        for good in [
            "a",
            "a/b.c",
            ".otax/y",
            "x/.ota/y",
            "..a",
            "a..b/c",
            "ünïcødé",
        ] {
            assert!(RelPath::new(good, &reserved).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn duplicates_and_files_inside_files_are_refused() {
        assert!(matches!(
            Manifest::new(vec![entry("a"), entry("a")]),
            Err(ManifestError::Duplicate(_))
        ));
        assert!(matches!(
            Manifest::new(vec![entry("a"), entry("a-x"), entry("a/b")]),
            Err(ManifestError::InsideFile { .. })
        ));
        assert!(Manifest::new(vec![entry("a/b"), entry("a/c"), entry("ab")]).is_ok());
    }

    /// Checks the links `(path, target)` of one release; `Err` is the problem of the first
    /// refused link.
    fn links(list: &[(&str, &str)]) -> Result<(), LinkProblem> {
        let links = list
            .iter()
            .map(|(p, t)| (path(p), (*t).to_owned()))
            .collect();
        match check_links(&links, &[path(".ota"), path("var/state")]) {
            Ok(()) => Ok(()),
            Err(ManifestError::UnsafeLink { problem, .. }) => Err(problem),
            Err(other) => panic!("{other}"),
        }
    }

    #[test]
    fn links_that_stay_inside_pass() {
        assert_eq!(links(&[("a", "b")]), Ok(()));
        assert_eq!(links(&[("d/a", "../b")]), Ok(()));
        assert_eq!(links(&[("d/e/a", "../../b")]), Ok(()));
        assert_eq!(links(&[("d/a", "./x/../y")]), Ok(()));
        assert_eq!(links(&[("r", ".")]), Ok(()));
        assert_eq!(links(&[("a", "d/"), ("d/x", "../a")]), Ok(()));
        // Through a link into a folder, then back up from there.
        assert_eq!(links(&[("lib", "d/e/f"), ("x", "lib/../../g")]), Ok(()));
        // A chain of 40 links is what the kernel follows.
        let chain: Vec<(String, String)> = (0..40)
            .map(|i| (format!("l{i}"), format!("l{}", i + 1)))
            .collect();
        let chain: Vec<(&str, &str)> = chain.iter().map(|(a, b)| (&**a, &**b)).collect();
        assert_eq!(links(&chain), Ok(()));
    }

    #[test]
    fn links_that_leave_lexically_are_refused() {
        assert!(matches!(
            links(&[("a", "../b")]),
            Err(LinkProblem::Leaves { .. })
        ));
        assert!(matches!(
            links(&[("d/a", "../../b")]),
            Err(LinkProblem::Leaves { .. })
        ));
        assert!(matches!(links(&[("a", "")]), Err(LinkProblem::Empty)));
        let absolute = links(&[("a", "/etc/passwd")]);
        assert!(
            matches!(absolute, Err(LinkProblem::Absolute { .. })),
            "{absolute:?}"
        );
    }

    /// Finding 3 of issue 8: each `r` is the target itself, so four `..` climb above it.
    #[test]
    fn links_that_leave_through_the_release_own_links_are_refused() {
        let problem = links(&[("r", "."), ("etc_link", "r/r/r/r/r/../../../../etc")]);
        let Err(LinkProblem::Leaves { via }) = &problem else {
            panic!("{problem:?}");
        };
        assert_eq!(via[0], "r -> \".\"");
        // Folders in the release do not help: `d/up` is `d/..`, the target itself.
        let problem = links(&[("d/up", ".."), ("x", "d/up/../etc")]);
        assert!(
            matches!(problem, Err(LinkProblem::Leaves { .. })),
            "{problem:?}"
        );
        // A relative link to an absolute one.
        let problem = links(&[("abs", "/etc"), ("x", "abs/passwd")]);
        assert!(
            matches!(problem, Err(LinkProblem::Absolute { .. })),
            "{problem:?}"
        );
        // The error names the link and where it goes.
        let links = [("r", "."), ("etc_link", "r/r/../../etc")]
            .iter()
            .map(|(p, t)| (path(p), (*t).to_owned()))
            .collect();
        let err = check_links(&links, &[]).unwrap_err().to_string();
        assert!(
            err.contains("etc_link -> \"r/r/../../etc\" leads outside the target")
                && err.contains("r -> \".\""),
            "{err}"
        );
    }

    #[test]
    fn link_loops_and_long_chains_are_refused() {
        let problem = links(&[("a", "b"), ("b", "a")]);
        let Err(LinkProblem::Loop { via }) = &problem else {
            panic!("{problem:?}");
        };
        assert_eq!(via.len(), MAX_LINK_HOPS);
        assert!(matches!(
            links(&[("a", "a/x")]),
            Err(LinkProblem::Loop { .. })
        ));
        let chain: Vec<(String, String)> = (0..41)
            .map(|i| (format!("l{i}"), format!("l{}", i + 1)))
            .collect();
        let chain: Vec<(&str, &str)> = chain.iter().map(|(a, b)| (&**a, &**b)).collect();
        assert!(matches!(links(&chain), Err(LinkProblem::Loop { .. })));
        // The message names each link of the loop once.
        let links = [("a", "b"), ("b", "a")]
            .iter()
            .map(|(p, t)| (path(p), (*t).to_owned()))
            .collect();
        let err = check_links(&links, &[]).unwrap_err().to_string();
        assert_eq!(err.matches("b -> ").count(), 1, "{err}");
    }

    #[test]
    fn links_into_ota_own_folders_are_refused() {
        for (link, target) in [
            ("s", ".ota"),
            ("s", ".ota/state.json"),
            ("s", ".OTA/journal.json"),
            ("d/s", "../.Ota"),
            ("s", "var/state"),
            ("s", "var/STATE/x"),
        ] {
            let problem = links(&[(link, target)]);
            assert!(
                matches!(problem, Err(LinkProblem::IntoState { .. })),
                "{link} -> {target}: {problem:?}"
            );
        }
        let problem = links(&[("r", "."), ("s", "r/.ota")]);
        assert!(
            matches!(problem, Err(LinkProblem::IntoState { .. })),
            "{problem:?}"
        );
        assert_eq!(links(&[("s", ".otax"), ("t", "var/stately")]), Ok(()));
    }

    #[test]
    fn a_link_named_in_another_case_is_refused() {
        let problem = links(&[("lib", "d/e"), ("x", "LIB/../..")]);
        assert!(
            matches!(problem, Err(LinkProblem::CaseOfLink { .. })),
            "{problem:?}"
        );
    }

    #[test]
    fn paths_that_collide_ignoring_case_are_refused() {
        let tree = |paths: &[&str]| {
            let raw = paths.iter().map(|p| TreeEntry {
                path: (*p).to_owned(),
                mode: MODE_FILE,
                id: ObjectId::for_blob(b""),
                size: Some(0),
                sha256: None,
            });
            from_tree(raw.collect(), &Filter::default(), &[path(".ota")], &[])
        };
        for paths in [
            &["App/x", "app/x"][..],
            &["a/B", "a/b/c"],
            &["README", "readme"],
            &["Ünï/x", "üNÏ/y"],
        ] {
            let err = tree(paths).unwrap_err();
            assert!(
                matches!(err, ManifestError::CaseCollision(..)),
                "{paths:?}: {err}"
            );
        }
        assert!(tree(&["a/b", "a/c", "A-b"]).is_ok());
        for ota in [".OTA/x", ".Ota", ".oTa/state.json"] {
            let err = tree(&[ota]).unwrap_err();
            assert!(err.to_string().contains("ota's own folder"), "{ota}: {err}");
        }
    }

    #[test]
    fn protected_files_are_skipped_with_a_warning() {
        let protected = [Protected {
            path: path("conf/ota.json"),
            what: "the config file".into(),
        }];
        let raw = ["main.py", "conf/ota.json", "CONF/OTA.JSON/x", "confx"]
            .iter()
            .map(|p| TreeEntry {
                path: (*p).to_owned(),
                mode: MODE_FILE,
                id: ObjectId::for_blob(b""),
                size: Some(0),
                sha256: None,
            })
            .collect();
        let (manifest, warnings) = from_tree(raw, &Filter::default(), &[], &protected).unwrap();
        let kept: Vec<&str> = manifest.entries().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(kept, ["confx", "main.py"]);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("the config file"), "{warnings:?}");
        // A file where the config's folder is would replace the folder: skipped too.
        assert!(protected[0].touched_by(&path("conf")));
        assert!(!protected[0].touched_by(&path("conf/other")));
    }

    #[test]
    fn ancestors_and_prefixes() {
        let p = path("a/b/c");
        let anc: Vec<String> = p.ancestors().map(|a| a.to_string()).collect();
        assert_eq!(anc, ["a", "a/b"]);
        assert!(within(p.as_str(), "a/b"));
        assert!(!within("a/bc", "a/b"));
        assert_eq!(p.depth(), 3);
    }
}
