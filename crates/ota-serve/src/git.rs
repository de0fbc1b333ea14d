//! Reading the repository: references, objects, and the ways GitHub lets a client name a commit.
//!
//! This module knows git and nothing about HTTP or JSON: it returns plain structs that the API
//! layer turns into GitHub's shapes. Every lookup works on a fresh thread-local
//! `gix::Repository`, so references are read from disk on each request and a tag pushed while
//! the server runs is visible at once. Missing things are `Ok(None)` (the caller answers 404);
//! `Err` means the repository itself is broken (the caller answers 500). Input from the network
//! (names, SHAs, paths) is validated here before it reaches gix, and nothing in here panics on a
//! malformed repository.

use std::path::Path;

pub(crate) use gix::ObjectId;
use gix::bstr::ByteSlice;
use gix::objs::tree::EntryKind;
use gix::objs::{Kind, TreeRefIter};
use gix::refs::TargetRef;

use crate::Error;

/// How many tag-to-tag or symbolic-ref hops are followed before giving up (loops are possible
/// in a hand-crafted repository).
const MAX_HOPS: usize = 16;

/// Opens the repository once at start-up, without reading the user's or system's git
/// configuration (so the server behaves the same on every machine) and without any network.
pub(crate) fn open(path: &Path) -> Result<gix::ThreadSafeRepository, Error> {
    gix::open::Options::isolated()
        .open(path)
        .map_err(|source| Error::OpenRepo {
            path: path.to_path_buf(),
            source,
        })
}

/// Someone who authored, committed or tagged, with the time in seconds since the epoch.
#[derive(Debug, Clone)]
pub(crate) struct Person {
    pub name: String,
    pub email: String,
    pub time: i64,
}

/// A decoded commit.
#[derive(Debug, Clone)]
pub(crate) struct CommitInfo {
    pub id: ObjectId,
    pub tree: ObjectId,
    pub parents: Vec<ObjectId>,
    pub author: Person,
    pub committer: Person,
    pub message: String,
}

/// A decoded annotated tag object.
#[derive(Debug, Clone)]
pub(crate) struct TagInfo {
    pub id: ObjectId,
    pub name: String,
    pub target: ObjectId,
    pub target_kind: Kind,
    pub tagger: Option<Person>,
    /// The message as stored (normally ending in a newline), without any signature block.
    pub message: String,
    pub signed: bool,
}

/// A reference and the object it points at directly (symbolic references are followed, tags are
/// not peeled).
#[derive(Debug, Clone)]
pub(crate) struct RefInfo {
    /// Full name, e.g. `refs/heads/main`.
    pub name: String,
    pub target: ObjectId,
    pub kind: Kind,
}

/// One entry of a (possibly recursive) tree listing.
#[derive(Debug, Clone)]
pub(crate) struct TreeEntry {
    /// Path relative to the listed tree, `/`-separated.
    pub path: String,
    pub kind: EntryKind,
    pub id: ObjectId,
    /// Size in bytes, for blobs and symlinks only.
    pub size: Option<u64>,
}

/// A tree listing, possibly cut short.
#[derive(Debug, Clone)]
pub(crate) struct TreeListing {
    pub entries: Vec<TreeEntry>,
    pub truncated: bool,
}

/// What a path inside a commit names.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PathObject {
    /// A file or a symlink (whose blob is the link target).
    Blob(ObjectId),
    Tree,
    Submodule,
}

/// A thread-local view of the repository for the duration of one request.
pub(crate) struct Repo {
    repo: gix::Repository,
}

impl Repo {
    pub(crate) fn new(shared: &gix::ThreadSafeRepository) -> Repo {
        Repo {
            repo: shared.to_thread_local(),
        }
    }

    /// The branch HEAD points at (`main`), or `None` when HEAD is detached.
    pub(crate) fn default_branch(&self) -> Result<Option<String>, Error> {
        let name = self.repo.head_name().map_err(Error::git("reading HEAD"))?;
        Ok(name.and_then(|name| {
            name.as_bstr()
                .to_str()
                .ok()
                .and_then(|n| n.strip_prefix("refs/heads/"))
                .map(str::to_string)
        }))
    }

    /// Looks up exactly the reference `full_name` (`refs/heads/main`, `refs/tags/v1`, `HEAD`).
    pub(crate) fn find_ref(&self, full_name: &str) -> Result<Option<RefInfo>, Error> {
        if !valid_ref_name(full_name) {
            return Ok(None);
        }
        let found = self
            .repo
            .try_find_reference(full_name)
            .map_err(Error::git(format!("looking up {full_name}")))?;
        // gix also tries `refs/tags/<name>`, `<name>/HEAD` and so on; GitHub's ref endpoints
        // want the exact name.
        let Some(reference) = found.filter(|r| r.name().as_bstr() == full_name.as_bytes()) else {
            return Ok(None);
        };
        self.ref_info(reference)
    }

    /// All references whose full name starts with `prefix` (a plain string prefix, like
    /// GitHub's `matching-refs`), sorted by name. Unreadable references are skipped.
    pub(crate) fn refs_with_prefix(&self, prefix: &str) -> Result<Vec<RefInfo>, Error> {
        let platform = self
            .repo
            .references()
            .map_err(Error::git("listing references"))?;
        let mut out = Vec::new();
        for reference in platform.all().map_err(Error::git("listing references"))? {
            let reference = match reference {
                Ok(r) => r,
                Err(err) => {
                    tracing::warn!(
                        "skipping unreadable reference: {}",
                        crate::error::chain(&err)
                    );
                    continue;
                }
            };
            let matches = reference
                .name()
                .as_bstr()
                .to_str()
                .is_ok_and(|name| name.starts_with(prefix));
            if matches && let Some(info) = self.ref_info(reference)? {
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Follows symbolic references down to a direct one and describes its target.
    fn ref_info(&self, reference: gix::Reference<'_>) -> Result<Option<RefInfo>, Error> {
        let Ok(name) = reference.name().as_bstr().to_str().map(str::to_string) else {
            return Ok(None);
        };
        let mut current = reference;
        for _ in 0..MAX_HOPS {
            let next = match current.target() {
                TargetRef::Object(id) => {
                    let target = id.to_owned();
                    return Ok(self
                        .kind(target)?
                        .map(|kind| RefInfo { name, target, kind }));
                }
                TargetRef::Symbolic(_) => current.follow(),
            };
            match next {
                Some(Ok(next)) => current = next,
                Some(Err(err)) => return Err(Error::git(format!("following {name}"))(err)),
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    /// The kind of object `id` is, or `None` if it does not exist.
    pub(crate) fn kind(&self, id: ObjectId) -> Result<Option<Kind>, Error> {
        let header = self
            .repo
            .try_find_header(id)
            .map_err(Error::git(format!("reading object {id}")))?;
        Ok(header.map(|h| h.kind()))
    }

    fn object(&self, id: ObjectId, want: Kind) -> Result<Option<Vec<u8>>, Error> {
        let object = self
            .repo
            .try_find_object(id)
            .map_err(Error::git(format!("reading object {id}")))?;
        Ok(object.filter(|o| o.kind == want).map(|o| o.detach().data))
    }

    /// Decodes the commit `id`; `None` if it is missing or not a commit.
    pub(crate) fn commit(&self, id: ObjectId) -> Result<Option<CommitInfo>, Error> {
        let Some(data) = self.object(id, Kind::Commit)? else {
            return Ok(None);
        };
        let corrupt = |what: &str| Error::Corrupt(format!("commit {id} has a malformed {what}"));
        let commit = gix::objs::CommitRef::from_bytes(&data, self.repo.object_hash())
            .map_err(Error::git(format!("decoding commit {id}")))?;
        let author = commit.author().map_err(|_| corrupt("author"))?;
        let committer = commit.committer().map_err(|_| corrupt("committer"))?;
        Ok(Some(CommitInfo {
            id,
            tree: commit.tree(),
            parents: commit.parents().collect(),
            author: person(author),
            committer: person(committer),
            message: commit.message.to_str_lossy().into_owned(),
        }))
    }

    /// Decodes the annotated tag object `id`; `None` if it is missing or not a tag.
    pub(crate) fn tag(&self, id: ObjectId) -> Result<Option<TagInfo>, Error> {
        let Some(data) = self.object(id, Kind::Tag)? else {
            return Ok(None);
        };
        let tag = gix::objs::TagRef::from_bytes(&data, self.repo.object_hash())
            .map_err(Error::git(format!("decoding tag {id}")))?;
        let tagger = tag
            .tagger()
            .map_err(Error::git(format!("decoding the tagger of tag {id}")))?
            .map(person);
        Ok(Some(TagInfo {
            id,
            name: tag.name.to_str_lossy().into_owned(),
            target: tag.target(),
            target_kind: tag.target_kind,
            tagger,
            message: tag.message.to_str_lossy().into_owned(),
            signed: tag.signature.is_some(),
        }))
    }

    /// Follows tags (and tags of tags) to the commit they name; `None` if the chain ends
    /// anywhere else (a tree, a blob, a missing object).
    pub(crate) fn peel_to_commit(&self, id: ObjectId) -> Result<Option<ObjectId>, Error> {
        self.peel(id, Kind::Commit)
    }

    /// Follows tags and commits to a tree.
    pub(crate) fn peel_to_tree(&self, id: ObjectId) -> Result<Option<ObjectId>, Error> {
        self.peel(id, Kind::Tree)
    }

    fn peel(&self, mut id: ObjectId, want: Kind) -> Result<Option<ObjectId>, Error> {
        for _ in 0..MAX_HOPS {
            match self.kind(id)? {
                Some(kind) if kind == want => return Ok(Some(id)),
                Some(Kind::Tag) => match self.tag(id)? {
                    Some(tag) => id = tag.target,
                    None => return Ok(None),
                },
                Some(Kind::Commit) if want == Kind::Tree => match self.commit(id)? {
                    Some(commit) => id = commit.tree,
                    None => return Ok(None),
                },
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Resolves what a client may put where GitHub expects a ref: a full 40-hex SHA, `HEAD`, a
    /// full ref name (`refs/heads/x`), a name under `refs/` (`heads/x`, `tags/v1`), a tag or
    /// branch name (tags first, like git), or an abbreviated SHA of at least 4 digits.
    /// Returns the object named, not peeled.
    pub(crate) fn resolve(&self, name: &str) -> Result<Option<ObjectId>, Error> {
        if name.is_empty() {
            return Ok(None);
        }
        let hex = name.len() == self.repo.object_hash().len_in_hex() && is_hex(name);
        if hex
            && let Ok(id) = ObjectId::from_hex(name.as_bytes())
            && self.kind(id)?.is_some()
        {
            return Ok(Some(id));
        }
        let candidates = if name == "HEAD" || name.starts_with("refs/") {
            vec![name.to_string()]
        } else {
            vec![
                format!("refs/{name}"),
                format!("refs/tags/{name}"),
                format!("refs/heads/{name}"),
            ]
        };
        for candidate in candidates {
            if let Some(found) = self.find_ref(&candidate)? {
                return Ok(Some(found.target));
            }
        }
        if (4..self.repo.object_hash().len_in_hex()).contains(&name.len()) && is_hex(name) {
            return self.lookup_prefix(name);
        }
        Ok(None)
    }

    fn lookup_prefix(&self, hex: &str) -> Result<Option<ObjectId>, Error> {
        let Ok(prefix) = gix::hash::Prefix::from_hex(hex) else {
            return Ok(None);
        };
        let found = self
            .repo
            .objects
            .lookup_prefix(prefix, None)
            .map_err(Error::git(format!("looking up the abbreviated id {hex}")))?;
        // An ambiguous prefix names nothing.
        Ok(found.and_then(Result::ok))
    }

    /// `resolve` followed by peeling to a commit.
    pub(crate) fn resolve_commit(&self, name: &str) -> Result<Option<ObjectId>, Error> {
        match self.resolve(name)? {
            Some(id) => self.peel_to_commit(id),
            None => Ok(None),
        }
    }

    /// Lists the tree `tree`: its direct entries, or with `recursive` every entry below it in
    /// git's pre-order (a directory before its contents, siblings in tree order). At most
    /// `limit` entries are returned; beyond that the listing says `truncated`.
    pub(crate) fn tree_listing(
        &self,
        tree: ObjectId,
        recursive: bool,
        limit: usize,
    ) -> Result<TreeListing, Error> {
        let mut entries = Vec::new();
        // A stack of directories being walked: (path prefix, remaining entries reversed).
        let mut stack = vec![(String::new(), self.tree_entries(tree)?)];
        while let Some((prefix, pending)) = stack.last_mut() {
            let Some((name, kind, id)) = pending.pop() else {
                stack.pop();
                continue;
            };
            if entries.len() == limit {
                return Ok(TreeListing {
                    entries,
                    truncated: true,
                });
            }
            let path = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let size = match kind {
                EntryKind::Blob | EntryKind::BlobExecutable | EntryKind::Link => self
                    .repo
                    .try_find_header(id)
                    .map_err(Error::git(format!("reading object {id}")))?
                    .map(|h| h.size()),
                EntryKind::Tree | EntryKind::Commit => None,
            };
            entries.push(TreeEntry {
                path: path.clone(),
                kind,
                id,
                size,
            });
            if recursive && kind == EntryKind::Tree {
                let children = self.tree_entries(id)?;
                stack.push((path, children));
            }
        }
        Ok(TreeListing {
            entries,
            truncated: false,
        })
    }

    /// The direct entries of a tree, reversed (so `pop` yields them in tree order).
    fn tree_entries(&self, tree: ObjectId) -> Result<Vec<(String, EntryKind, ObjectId)>, Error> {
        let Some(data) = self.object(tree, Kind::Tree)? else {
            return Err(Error::Corrupt(format!(
                "tree {tree} is missing or is not a tree"
            )));
        };
        let mut out = Vec::new();
        for entry in TreeRefIter::from_bytes(&data, self.repo.object_hash()) {
            let entry = entry.map_err(Error::git(format!("decoding tree {tree}")))?;
            out.push((
                entry.filename.to_str_lossy().into_owned(),
                entry.mode.kind(),
                entry.oid.to_owned(),
            ));
        }
        out.reverse();
        Ok(out)
    }

    /// Finds what `components` (already validated names) name inside the tree of `commit`.
    pub(crate) fn lookup_path(
        &self,
        commit: ObjectId,
        components: &[String],
    ) -> Result<Option<PathObject>, Error> {
        let Some(mut tree) = self.peel_to_tree(commit)? else {
            return Ok(None);
        };
        let Some((last, dirs)) = components.split_last() else {
            return Ok(Some(PathObject::Tree));
        };
        for dir in dirs {
            match self.find_entry(tree, dir)? {
                Some((EntryKind::Tree, id)) => tree = id,
                _ => return Ok(None),
            }
        }
        Ok(self.find_entry(tree, last)?.map(|(kind, id)| match kind {
            EntryKind::Blob | EntryKind::BlobExecutable | EntryKind::Link => PathObject::Blob(id),
            EntryKind::Tree => PathObject::Tree,
            EntryKind::Commit => PathObject::Submodule,
        }))
    }

    fn find_entry(
        &self,
        tree: ObjectId,
        name: &str,
    ) -> Result<Option<(EntryKind, ObjectId)>, Error> {
        let Some(data) = self.object(tree, Kind::Tree)? else {
            return Ok(None);
        };
        for entry in TreeRefIter::from_bytes(&data, self.repo.object_hash()) {
            let entry = entry.map_err(Error::git(format!("decoding tree {tree}")))?;
            if entry.filename == name.as_bytes() {
                return Ok(Some((entry.mode.kind(), entry.oid.to_owned())));
            }
        }
        Ok(None)
    }

    /// The content of blob `id`; `None` if it is missing or not a blob.
    pub(crate) fn blob(&self, id: ObjectId) -> Result<Option<Vec<u8>>, Error> {
        self.object(id, Kind::Blob)
    }

    /// Parses a full hex object id from the network; `None` if it is not one.
    pub(crate) fn parse_id(&self, hex: &str) -> Option<ObjectId> {
        (hex.len() == self.repo.object_hash().len_in_hex() && is_hex(hex))
            .then(|| ObjectId::from_hex(hex.as_bytes()).ok())
            .flatten()
    }
}

fn person(sig: gix::actor::SignatureRef<'_>) -> Person {
    let sig = sig.trim();
    Person {
        name: sig.name.to_str_lossy().into_owned(),
        email: sig.email.to_str_lossy().into_owned(),
        time: sig.seconds(),
    }
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `name` is a reference name git accepts (no `..`, no control characters, no
/// `.lock` components, …), checked before it is handed to the reference store.
fn valid_ref_name(name: &str) -> bool {
    name == "HEAD"
        || (name.starts_with("refs/")
            && gix::validate::reference::name(name.as_bytes().as_bstr()).is_ok())
}
