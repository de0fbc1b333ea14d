//! The normalized list of files of one release, validated once at the boundary.
//!
//! Everything in a [`Manifest`] came from the network and was checked here before anything
//! else sees it: every path is relative, `/`-separated, has no empty, `.` or `..` part, no
//! backslash, NUL or control character, is not under ota's own state folder, and is unique;
//! no entry sits "inside" another file. A hostile tree is rejected as a whole, before a
//! single byte is written.

use std::collections::BTreeMap;
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
        let candidate = RelPath(path.to_owned());
        if let Some(r) = reserved.iter().find(|r| candidate.starts_with(r)) {
            return Err(fail(PathProblem::Reserved(r.0.clone())));
        }
        Ok(candidate)
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

    /// Whether `self` is `other` or lies inside it.
    pub(crate) fn starts_with(&self, other: &RelPath) -> bool {
        self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }

    /// Number of components (`a/b` → 2).
    pub(crate) fn depth(&self) -> usize {
        self.0.matches('/').count() + 1
    }
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
    /// A symlink that points outside the target directory.
    #[error(
        "symbolic link {path} points to {target:?}, outside the target directory; ota refuses releases with such links"
    )]
    SymlinkEscapes {
        /// The link.
        path: RelPath,
        /// Its target as stored in the release.
        target: String,
    },
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
}

/// Git modes ota installs or knowingly skips.
const MODE_FILE: u32 = 0o100644;
const MODE_GROUP_WRITABLE: u32 = 0o100664;
const MODE_EXECUTABLE: u32 = 0o100755;
const MODE_SYMLINK: u32 = 0o120000;
const MODE_TREE: u32 = 0o040000;
const MODE_SUBMODULE: u32 = 0o160000;

/// Turns a release's tree into its manifest: validates every path (a single bad one
/// rejects the release, even one the filter would drop), keeps the paths the filter
/// includes, skips folders, and skips submodules with a warning.
pub(crate) fn from_tree(
    tree: Vec<TreeEntry>,
    filter: &Filter,
    reserved: &[RelPath],
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
        let size = raw
            .size
            .ok_or_else(|| ManifestError::MissingSize(path.clone()))?;
        entries.push(Entry {
            path,
            kind,
            size,
            blob: raw.id,
        });
    }
    Ok((Manifest::new(entries)?, warnings))
}

/// Checks that a symlink at `link` with target `target` stays inside the target directory,
/// following the manifest's own symlinks it passes through is not attempted: a `..` that
/// would step back out of a folder that is itself a symlink is refused, because where it
/// lands depends on that link. `is_symlink` tells which release paths are symlinks.
pub(crate) fn check_symlink(
    link: &RelPath,
    target: &str,
    is_symlink: &dyn Fn(&str) -> bool,
) -> Result<(), ManifestError> {
    let escapes = || ManifestError::SymlinkEscapes {
        path: link.clone(),
        target: target.to_owned(),
    };
    if target.is_empty() || target.starts_with('/') || target.contains('\0') {
        return Err(escapes());
    }
    // Resolve lexically from the link's folder.
    let mut stack: Vec<&str> = match link.as_str().rsplit_once('/') {
        Some((parent, _)) => parent.split('/').collect(),
        None => Vec::new(),
    };
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if stack.is_empty() {
                    return Err(escapes());
                }
                if is_symlink(&stack.join("/")) {
                    return Err(escapes());
                }
                stack.pop();
            }
            name => stack.push(name),
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

    #[test]
    fn symlinks_must_stay_inside() {
        let none = |_: &str| false;
        let ok = |l: &str, t: &str| check_symlink(&path(l), t, &none).is_ok();
        assert!(ok("a", "b"));
        assert!(ok("d/a", "../b"));
        assert!(ok("d/e/a", "../../b"));
        assert!(ok("d/a", "./x/../y"));
        assert!(!ok("a", "../b"));
        assert!(!ok("d/a", "../../b"));
        assert!(!ok("a", "/etc/passwd"));
        assert!(!ok("a", ""));
        // `r` -> "." then `x` -> "r/../etc" would escape through the link `r`.
        let r_is_link = |p: &str| p == "r";
        assert!(check_symlink(&path("x"), "r/../etc", &r_is_link).is_err());
    }

    #[test]
    fn ancestors_and_prefixes() {
        let p = path("a/b/c");
        let anc: Vec<String> = p.ancestors().map(|a| a.to_string()).collect();
        assert_eq!(anc, ["a", "a/b"]);
        assert!(p.starts_with(&path("a/b")));
        assert!(!path("a/bc").starts_with(&path("a/b")));
        assert_eq!(p.depth(), 3);
    }
}
