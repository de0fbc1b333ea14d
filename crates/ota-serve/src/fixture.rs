//! Writing git repositories without the `git` CLI.
//!
//! The demo and the benchmarks need sample repositories with many files, built fast and on
//! machines without git. [`RepoWriter`] writes objects and references directly with gix: a
//! full snapshot per commit (nested trees built from `/`-separated paths), lightweight and
//! annotated tags, and HEAD. Identities and times are fixed by the caller, so the same input
//! gives the same object ids on every run.
//!
//! Only objects and references are written: the index and the work tree of a non-bare
//! repository are left alone (the server reads objects, not files).

use std::collections::BTreeMap;
use std::path::Path;

use gix::bstr::ByteSlice;
use gix::objs::tree::{Entry, EntryKind, EntryMode};
use gix::refs::Target;
use gix::refs::transaction::{PreviousValue, RefEdit};
use gix::{ObjectId, objs};

use crate::Error;

/// Name of the author, committer and tagger of everything the writer creates.
pub const FIXTURE_NAME: &str = "ota fixture";
/// Email of the author, committer and tagger of everything the writer creates.
pub const FIXTURE_EMAIL: &str = "fixture@ota.invalid";

/// What to put at one path of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSpec {
    /// A regular file (`100644`, or `100755` with `exec`).
    File {
        /// The content.
        bytes: Vec<u8>,
        /// Whether the file is executable.
        exec: bool,
    },
    /// A symbolic link (`120000`) to the given target.
    Symlink(String),
    /// A submodule (`160000`) at the given commit (40 hex digits).
    Submodule(String),
}

/// Writes commits, tags and HEAD into a git repository.
pub struct RepoWriter {
    repo: gix::Repository,
}

impl std::fmt::Debug for RepoWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoWriter")
            .field("git_dir", &self.repo.git_dir())
            .finish()
    }
}

/// A directory being assembled from paths.
enum Node {
    Leaf(EntryMode, ObjectId),
    Dir(BTreeMap<String, Node>),
}

impl RepoWriter {
    /// Creates a new repository at `path` (bare, or with a work tree), with HEAD on `main`.
    pub fn init(path: &Path, bare: bool) -> Result<RepoWriter, Error> {
        let kind = if bare {
            gix::create::Kind::Bare
        } else {
            gix::create::Kind::WithWorktree
        };
        let repo = gix::ThreadSafeRepository::init_opts(
            path,
            kind,
            gix::create::Options::default(),
            gix::open::Options::isolated(),
        )
        .map_err(Error::git(format!(
            "creating a repository at {}",
            path.display()
        )))?;
        Ok(RepoWriter {
            repo: repo.to_thread_local(),
        })
    }

    /// Opens an existing repository.
    pub fn open(path: &Path) -> Result<RepoWriter, Error> {
        Ok(RepoWriter {
            repo: crate::git::open(path)?.to_thread_local(),
        })
    }

    /// Writes `files` as a full snapshot and commits it on `branch` (parent: the branch's
    /// current tip, if any). Returns the commit SHA in hex. The author and committer are
    /// [`FIXTURE_NAME`] <[`FIXTURE_EMAIL`]> at `time_secs` (UTC).
    pub fn commit(
        &mut self,
        branch: &str,
        files: &BTreeMap<String, FileSpec>,
        message: &str,
        time_secs: i64,
    ) -> Result<String, Error> {
        let reference = full_name(&format!("refs/heads/{branch}"))?;
        let mut root = BTreeMap::new();
        for (path, spec) in files {
            let leaf = self.write_leaf(path, spec)?;
            insert(&mut root, path, leaf)?;
        }
        let tree = self.write_tree(root)?;
        let parent = self.branch_tip(&reference)?;
        let commit = objs::Commit {
            tree,
            parents: parent.into_iter().collect(),
            author: signature(time_secs),
            committer: signature(time_secs),
            encoding: None,
            message: with_newline(message).into(),
            extra_headers: Vec::new(),
        };
        let id = self
            .repo
            .write_object(&commit)
            .map_err(Error::git("writing a commit"))?
            .detach();
        let expected = match parent {
            Some(parent) => PreviousValue::MustExistAndMatch(Target::Object(parent)),
            None => PreviousValue::MustNotExist,
        };
        let summary = message.lines().next().unwrap_or_default();
        let log = if parent.is_some() {
            format!("commit: {summary}")
        } else {
            format!("commit (initial): {summary}")
        };
        self.edit(RefEdit::update(reference, id, expected, log), time_secs)?;
        Ok(id.to_string())
    }

    /// Creates the lightweight tag `refs/tags/{name}` pointing at `commit` (any object id in
    /// hex). Fails if the tag exists.
    pub fn tag_lightweight(&mut self, name: &str, commit: &str) -> Result<(), Error> {
        let reference = full_name(&format!("refs/tags/{name}"))?;
        let target = self.existing_object(commit)?.0;
        self.edit(
            RefEdit::update(reference, target, PreviousValue::MustNotExist, "tag"),
            0,
        )
    }

    /// Creates an annotated tag object for `commit` (any object id in hex, so tags of tags
    /// work) with `message`, tagged by the fixture identity at `time_secs`, and the reference
    /// `refs/tags/{name}` to it. Returns the tag object's SHA in hex. Fails if the tag exists.
    pub fn tag_annotated(
        &mut self,
        name: &str,
        commit: &str,
        message: &str,
        time_secs: i64,
    ) -> Result<String, Error> {
        let reference = full_name(&format!("refs/tags/{name}"))?;
        let (target, target_kind) = self.existing_object(commit)?;
        let tag = objs::Tag {
            target,
            target_kind,
            name: name.into(),
            tagger: Some(signature(time_secs)),
            message: with_newline(message).into(),
            signature: None,
        };
        let id = self
            .repo
            .write_object(&tag)
            .map_err(Error::git(format!("writing tag {name}")))?
            .detach();
        self.edit(
            RefEdit::update(reference, id, PreviousValue::MustNotExist, "tag"),
            time_secs,
        )?;
        Ok(id.to_string())
    }

    /// Points HEAD at `refs/heads/{branch}` (which need not exist yet).
    pub fn set_head(&mut self, branch: &str) -> Result<(), Error> {
        let target = full_name(&format!("refs/heads/{branch}"))?;
        let head = full_name("HEAD")?;
        self.edit(
            RefEdit::update(head, Target::Symbolic(target), PreviousValue::Any, ""),
            0,
        )
    }

    fn edit(&self, edit: RefEdit, time_secs: i64) -> Result<(), Error> {
        let name = edit.name.as_bstr().to_str_lossy().into_owned();
        let committer = signature(time_secs);
        let mut time = gix::date::parse::TimeBuf::default();
        self.repo
            .edit_references_as([edit], Some(committer.to_ref(&mut time)))
            .map_err(Error::git(format!("updating {name}")))?;
        Ok(())
    }

    fn branch_tip(&self, reference: &gix::refs::FullName) -> Result<Option<ObjectId>, Error> {
        let name = reference.as_bstr().to_str_lossy().into_owned();
        let found = self
            .repo
            .try_find_reference(reference.as_bstr())
            .map_err(Error::git(format!("reading {name}")))?;
        match found {
            Some(r) if r.name() == reference.as_ref() => match r.target().try_id() {
                Some(id) => Ok(Some(id.to_owned())),
                None => Err(Error::Invalid(format!("{name} is a symbolic reference"))),
            },
            _ => Ok(None),
        }
    }

    fn existing_object(&self, hex: &str) -> Result<(ObjectId, objs::Kind), Error> {
        let id = ObjectId::from_hex(hex.as_bytes())
            .map_err(|_| Error::Invalid(format!("{hex:?} is not a full object id")))?;
        let header = self
            .repo
            .try_find_header(id)
            .map_err(Error::git(format!("reading object {id}")))?
            .ok_or_else(|| Error::Invalid(format!("object {id} does not exist")))?;
        Ok((id, header.kind()))
    }

    fn write_leaf(&self, path: &str, spec: &FileSpec) -> Result<Node, Error> {
        let blob = |bytes: &[u8]| {
            self.repo
                .write_blob(bytes)
                .map(|id| id.detach())
                .map_err(Error::git(format!("writing the blob of {path}")))
        };
        Ok(match spec {
            FileSpec::File { bytes, exec } => {
                let kind = if *exec {
                    EntryKind::BlobExecutable
                } else {
                    EntryKind::Blob
                };
                Node::Leaf(kind.into(), blob(bytes)?)
            }
            FileSpec::Symlink(target) => {
                Node::Leaf(EntryKind::Link.into(), blob(target.as_bytes())?)
            }
            FileSpec::Submodule(commit) => {
                let id = ObjectId::from_hex(commit.as_bytes()).map_err(|_| {
                    Error::Invalid(format!(
                        "submodule {path}: {commit:?} is not a full commit id"
                    ))
                })?;
                Node::Leaf(EntryKind::Commit.into(), id)
            }
        })
    }

    fn write_tree(&self, dir: BTreeMap<String, Node>) -> Result<ObjectId, Error> {
        let mut entries = Vec::with_capacity(dir.len());
        for (name, node) in dir {
            let (mode, oid) = match node {
                Node::Leaf(mode, id) => (mode, id),
                Node::Dir(children) => (EntryKind::Tree.into(), self.write_tree(children)?),
            };
            entries.push(Entry {
                mode,
                filename: name.into(),
                oid,
            });
        }
        // Git's order: names compared as if directories ended in `/`.
        entries.sort();
        Ok(self
            .repo
            .write_object(&objs::Tree { entries })
            .map_err(Error::git("writing a tree"))?
            .detach())
    }
}

/// Places `leaf` at `path` in `root`, creating directories; refuses bad names and clashes
/// between a file and a directory.
fn insert(root: &mut BTreeMap<String, Node>, path: &str, leaf: Node) -> Result<(), Error> {
    let parts: Vec<&str> = path.split('/').collect();
    for part in &parts {
        if part.is_empty()
            || *part == "."
            || *part == ".."
            || part.eq_ignore_ascii_case(".git")
            || part.contains('\0')
        {
            return Err(Error::Invalid(format!(
                "path {path:?}: components must be non-empty, not `.`, `..` or `.git`, without NUL"
            )));
        }
    }
    let Some((last, dirs)) = parts.split_last() else {
        return Err(Error::Invalid("empty path".to_string()));
    };
    let mut current = root;
    for dir in dirs {
        let node = current
            .entry((*dir).to_string())
            .or_insert_with(|| Node::Dir(BTreeMap::new()));
        current = match node {
            Node::Dir(children) => children,
            Node::Leaf(..) => {
                return Err(Error::Invalid(format!(
                    "path {path:?}: {dir:?} is a file, not a directory"
                )));
            }
        };
    }
    if current.contains_key(*last) {
        return Err(Error::Invalid(format!(
            "path {path:?} is both a file and a directory"
        )));
    }
    current.insert((*last).to_string(), leaf);
    Ok(())
}

fn full_name(name: &str) -> Result<gix::refs::FullName, Error> {
    gix::refs::FullName::try_from(name)
        .map_err(|err| Error::Invalid(format!("{name:?} is not a valid reference name: {err}")))
}

fn signature(time_secs: i64) -> gix::actor::Signature {
    gix::actor::Signature {
        name: FIXTURE_NAME.into(),
        email: FIXTURE_EMAIL.into(),
        time: gix::date::Time {
            seconds: time_secs,
            offset: 0,
        },
    }
}

/// Git stores messages with a final newline, as `git commit -m` and `git tag -m` do.
fn with_newline(message: &str) -> String {
    if message.ends_with('\n') {
        message.to_string()
    } else {
        format!("{message}\n")
    }
}
