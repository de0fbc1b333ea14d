//! A simulated filesystem that records every change, and the power-loss model that turns its
//! record into the states a disk can be left in.
//!
//! # The simulated filesystem
//! [`SimFs`] implements `ota::fs::Fs` over an in-memory tree of inodes: files (bytes and
//! permission bits), directories (mode and entries) and symbolic links. Every call that changes
//! the tree is appended to a log as an [`Op`] naming the inodes it touched (parent folder,
//! name, inode), and every write is logged with its offset and bytes. Reads answer from the
//! live tree (what the running process sees, page cache included).
//!
//! # The power-loss model (no weaker than ext4 with default options)
//! A crash after the first `k` logged operations leaves a disk that holds every *durable*
//! effect of those `k` operations and any subset of the others:
//!
//! - **Durable** means: a file's writes once `WriteFile::sync` (fsync) of that inode or a
//!   `sync_fs` (syncfs) followed them; a create, mkdir, symlink, hard link, unlink or rmdir once its
//!   parent folder was fsynced (`sync_dir`) or a `sync_fs` followed; a rename once either of
//!   its two parent folders was fsynced (the rename is atomic, so making one of its names
//!   durable makes both) or a `sync_fs` followed. A file fsync does not make the file's
//!   directory entry durable, and a folder fsync does not make the folder's own entry in its
//!   parent durable.
//! - **Not durable** effects may each be lost, independently of their order (a later one may
//!   persist while an earlier one is lost: the reordering ALICE explores). ext4's ordered
//!   journal never reorders metadata operations; this model does, so it is weaker than ext4
//!   and a protocol that survives it survives ext4.
//! - **File data** that is not durable may be lost (the file keeps its durable length),
//!   survive, be torn (cut in the middle of what was written) or, since the size may reach
//!   the disk before the blocks do, read back as zeros or as garbage over its full length.
//! - **Atomicity**: each metadata operation persists whole or not at all; a rename never
//!   leaves both names or neither (it moves the one inode). A symlink's target is stored with
//!   its inode, as ext4 does.
//! - **Physical dependencies**, applied while replaying the persisted operations in log order
//!   on the last durable tree: an operation whose inputs are not there in the replayed tree is
//!   dropped too. A create/mkdir/symlink needs its parent folder (by inode) and a free name;
//!   a hard link needs its inode (a file or link, still named somewhere) and a free name;
//!   an unlink or rmdir needs the very inode at that name (an inode lives on while another
//!   name holds it), and rmdir needs it empty *in the
//!   replayed tree* (a folder cannot vanish while a lost unlink left a file in it); a rename
//!   needs its source inode at the source name and the destination folder, and may replace
//!   whatever is at the destination only as `rename(2)` could (a file or link over a file or
//!   link, a folder over an empty folder). A write lands only if its inode exists.
//!
//! A crash state is therefore a [`Crash`]: the crash point `k`, the set of non-durable
//! operations lost, and for files with non-durable data how that data came out ([`Data`]).
//! [`materialize`] builds the disk it describes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, Write};
use std::path::{Component, Path};
use std::sync::{Arc, Mutex, MutexGuard};

use ota::fs::{FileKind, Fs, Meta, ReadFile, Space, WriteFile};
use sha1::Digest as _;

/// An inode number.
pub type Ino = u64;

/// The root folder's inode.
pub const ROOT: Ino = 1;

/// One inode.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Node {
    /// A regular file.
    File { data: Arc<Vec<u8>>, mode: u32 },
    /// A folder.
    Dir {
        mode: u32,
        entries: BTreeMap<OsString, Ino>,
    },
    /// A symbolic link and its target.
    Link(Vec<u8>),
}

/// A filesystem tree: inodes by number, the root at [`ROOT`].
#[derive(Clone, Debug)]
pub struct Tree {
    nodes: HashMap<Ino, Node>,
    next: Ino,
}

impl Tree {
    /// A tree holding the folders of `dir` (mode 0755), and nothing else.
    pub fn with_dirs(dir: &Path) -> Tree {
        let mut tree = Tree {
            nodes: HashMap::new(),
            next: ROOT + 1,
        };
        tree.nodes.insert(
            ROOT,
            Node::Dir {
                mode: 0o755,
                entries: BTreeMap::new(),
            },
        );
        tree.mkdir_all(dir, 0o755);
        tree
    }

    fn alloc(&mut self, node: Node) -> Ino {
        let ino = self.next;
        self.next += 1;
        self.nodes.insert(ino, node);
        ino
    }

    fn entries(&self, dir: Ino) -> Option<&BTreeMap<OsString, Ino>> {
        match self.nodes.get(&dir) {
            Some(Node::Dir { entries, .. }) => Some(entries),
            _ => None,
        }
    }

    fn entries_mut(&mut self, dir: Ino) -> Option<&mut BTreeMap<OsString, Ino>> {
        match self.nodes.get_mut(&dir) {
            Some(Node::Dir { entries, .. }) => Some(entries),
            _ => None,
        }
    }

    /// Resolves `path` (absolute, no `..`, no symlink before the last component) to
    /// (parent folder, name, inode at that name).
    fn lookup(&self, path: &Path) -> io::Result<(Ino, OsString, Option<Ino>)> {
        let mut names: Vec<&OsStr> = Vec::new();
        for c in path.components() {
            match c {
                Component::RootDir => {}
                Component::Normal(n) => names.push(n),
                _ => return Err(invalid(path, "path must be absolute and normal")),
            }
        }
        let Some((last, dirs)) = names.split_last() else {
            return Err(invalid(path, "the root has no parent"));
        };
        let mut dir = ROOT;
        for name in dirs {
            let next = self
                .entries(dir)
                .and_then(|e| e.get(*name).copied())
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, path.display().to_string())
                })?;
            match self.nodes.get(&next) {
                Some(Node::Dir { .. }) => dir = next,
                Some(Node::Link(_)) => {
                    return Err(invalid(path, "the simulation never follows a symlink"));
                }
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotADirectory,
                        path.display().to_string(),
                    ));
                }
            }
        }
        let at = self.entries(dir).and_then(|e| e.get(*last).copied());
        Ok((dir, (*last).to_owned(), at))
    }

    /// Drops inode `ino` once no folder names it any more (a file with another hard link
    /// lives on).
    fn forget(&mut self, ino: Ino) {
        let named = self.nodes.values().any(|n| match n {
            Node::Dir { entries, .. } => entries.values().any(|&i| i == ino),
            _ => false,
        });
        if !named {
            self.nodes.remove(&ino);
        }
    }

    /// The inode at `path`, if any.
    pub fn ino_at(&self, path: &Path) -> Option<Ino> {
        self.lookup(path).ok().and_then(|(_, _, ino)| ino)
    }

    /// Creates every missing folder of `path` with `mode` (setup only, not logged).
    pub fn mkdir_all(&mut self, path: &Path, mode: u32) -> Ino {
        let mut dir = ROOT;
        for c in path.components() {
            let Component::Normal(name) = c else { continue };
            let existing = self.entries(dir).and_then(|e| e.get(name).copied());
            dir = match existing {
                Some(ino) => ino,
                None => {
                    let ino = self.alloc(Node::Dir {
                        mode,
                        entries: BTreeMap::new(),
                    });
                    self.entries_mut(dir)
                        .expect("a folder")
                        .insert(name.to_owned(), ino);
                    ino
                }
            };
        }
        dir
    }

    /// Writes a file (setup only, not logged), creating its folders.
    pub fn put_file(&mut self, path: &Path, data: &[u8], exec: bool) {
        let parent = self.mkdir_all(path.parent().expect("a parent"), 0o755);
        let mode = if exec { 0o755 } else { 0o644 };
        let ino = self.alloc(Node::File {
            data: Arc::new(data.to_vec()),
            mode,
        });
        let name = path.file_name().expect("a name").to_owned();
        self.entries_mut(parent)
            .expect("a folder")
            .insert(name, ino);
    }

    /// Changes a folder's mode (setup only, not logged).
    pub fn chmod_dir(&mut self, path: &Path, new: u32) {
        let ino = self.ino_at(path).expect("the folder exists");
        if let Some(Node::Dir { mode, .. }) = self.nodes.get_mut(&ino) {
            *mode = new;
        }
    }

    /// A 128-bit digest of what is reachable from the root (names, kinds, modes, bytes):
    /// two trees with the same digest look the same to every program.
    pub fn digest(&self) -> u128 {
        let mut a = DefaultHasher::new();
        let mut b = DefaultHasher::new();
        0x5eed_u32.hash(&mut b);
        self.hash_from(ROOT, &mut a, &mut b);
        (u128::from(a.finish()) << 64) | u128::from(b.finish())
    }

    /// [`Tree::digest`] of what is below the folder `dir`, skipping top-level names in
    /// `skip`; equal digests mean equal [`Tree::listing`]s.
    pub fn digest_below(&self, dir: &Path, skip: &[&str]) -> u128 {
        let mut a = DefaultHasher::new();
        let mut b = DefaultHasher::new();
        0x5eed_u32.hash(&mut b);
        if let Some(entries) = self.ino_at(dir).and_then(|ino| self.entries(ino)) {
            for (name, child) in entries {
                if skip.iter().any(|s| name == *s) {
                    continue;
                }
                name.hash(&mut a);
                name.hash(&mut b);
                self.hash_from(*child, &mut a, &mut b);
            }
        }
        (u128::from(a.finish()) << 64) | u128::from(b.finish())
    }

    fn hash_from(&self, ino: Ino, a: &mut DefaultHasher, b: &mut DefaultHasher) {
        match self.nodes.get(&ino) {
            Some(Node::Dir { mode, entries }) => {
                for h in [&mut *a, &mut *b] {
                    (0u8, *mode, entries.len()).hash(h);
                }
                for (name, child) in entries {
                    name.hash(a);
                    name.hash(b);
                    self.hash_from(*child, a, b);
                }
            }
            Some(Node::File { data, mode }) => {
                // SHA-1 is built optimised even in test builds; hashing bytes is most of the
                // enumeration's work.
                let sum: [u8; 20] = sha1::Sha1::digest(&***data).into();
                for h in [&mut *a, &mut *b] {
                    (1u8, *mode, data.len(), sum).hash(h);
                }
            }
            Some(Node::Link(target)) => {
                for h in [&mut *a, &mut *b] {
                    (2u8, target).hash(h);
                }
            }
            None => {
                for h in [&mut *a, &mut *b] {
                    3u8.hash(h);
                }
            }
        }
    }

    /// Everything below the folder `dir`, by path relative to it, skipping top-level names
    /// in `skip`.
    pub fn listing(&self, dir: &Path, skip: &[&str]) -> BTreeMap<String, Entry> {
        let mut out = BTreeMap::new();
        if let Some(ino) = self.ino_at(dir) {
            self.list_into(ino, "", skip, &mut out);
        }
        out
    }

    fn list_into(&self, dir: Ino, prefix: &str, skip: &[&str], out: &mut BTreeMap<String, Entry>) {
        let Some(entries) = self.entries(dir) else {
            return;
        };
        for (name, ino) in entries {
            let name = name.to_string_lossy();
            if prefix.is_empty() && skip.contains(&name.as_ref()) {
                continue;
            }
            let rel = if prefix.is_empty() {
                name.into_owned()
            } else {
                format!("{prefix}/{name}")
            };
            match self.nodes.get(ino) {
                Some(Node::Dir { mode, .. }) => {
                    out.insert(rel.clone(), Entry::Dir(*mode));
                    self.list_into(*ino, &rel, skip, out);
                }
                Some(Node::File { data, mode }) => {
                    out.insert(rel, Entry::File((**data).clone(), *mode));
                }
                Some(Node::Link(t)) => {
                    out.insert(rel, Entry::Link(String::from_utf8_lossy(t).into_owned()));
                }
                None => {}
            }
        }
    }
}

/// What is at one path of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A folder and its mode.
    Dir(u32),
    /// A file's bytes and mode: a private file (a crash between creating it and giving it
    /// its mode) is not the release's file.
    File(Vec<u8>, u32),
    /// A symlink's target.
    Link(String),
}

impl Entry {
    /// A release's file: mode 0755 when `exec`, else 0644.
    pub fn file(bytes: Vec<u8>, exec: bool) -> Entry {
        Entry::File(bytes, if exec { 0o755 } else { 0o644 })
    }
}

fn invalid(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{}: {what}", path.display()),
    )
}

/// One logged change.
#[derive(Clone, Debug)]
pub enum Op {
    /// `create(2)` with `O_EXCL`.
    Create {
        parent: Ino,
        name: OsString,
        ino: Ino,
        mode: u32,
    },
    /// `symlink(2)`.
    Symlink {
        parent: Ino,
        name: OsString,
        ino: Ino,
        target: Vec<u8>,
    },
    /// `mkdir(2)`.
    Mkdir {
        parent: Ino,
        name: OsString,
        ino: Ino,
        mode: u32,
    },
    /// `rmdir(2)`.
    Rmdir {
        parent: Ino,
        name: OsString,
        ino: Ino,
    },
    /// `unlink(2)`.
    Unlink {
        parent: Ino,
        name: OsString,
        ino: Ino,
    },
    /// `link(2)`: a new name for the file or link `ino`.
    Link {
        parent: Ino,
        name: OsString,
        ino: Ino,
    },
    /// `rename(2)`, or `renameat2(RENAME_NOREPLACE)` when `noreplace`.
    Rename {
        from: Ino,
        from_name: OsString,
        to: Ino,
        to_name: OsString,
        ino: Ino,
        noreplace: bool,
    },
    /// `fchmod(2)` of a file or folder: `RealFs` makes each private (0600, 0700) and then
    /// gives it its mode, so a crash can leave it private.
    Chmod { ino: Ino, mode: u32 },
    /// `pwrite(2)` of `data` at `offset`.
    Write {
        ino: Ino,
        offset: u64,
        data: Arc<[u8]>,
    },
    /// `fsync(2)` of a file.
    SyncFile { ino: Ino },
    /// `fsync(2)` of a folder.
    SyncDir { ino: Ino },
    /// `syncfs(2)`.
    SyncFs,
}

impl Op {
    /// Whether this is one of the three durability calls.
    pub fn is_sync(&self) -> bool {
        matches!(self, Op::SyncFile { .. } | Op::SyncDir { .. } | Op::SyncFs)
    }

    /// Whether op `later`, a sync, makes this op durable.
    fn made_durable_by(&self, later: &Op) -> bool {
        match (self, later) {
            (_, Op::SyncFs) => true,
            (Op::Write { ino, .. }, Op::SyncFile { ino: synced }) => ino == synced,
            (Op::Chmod { ino, .. }, Op::SyncFile { ino: synced } | Op::SyncDir { ino: synced }) => {
                ino == synced
            }
            (
                Op::Create { parent, .. }
                | Op::Symlink { parent, .. }
                | Op::Mkdir { parent, .. }
                | Op::Rmdir { parent, .. }
                | Op::Unlink { parent, .. }
                | Op::Link { parent, .. },
                Op::SyncDir { ino },
            ) => parent == ino,
            (Op::Rename { from, to, .. }, Op::SyncDir { ino }) => from == ino || to == ino,
            _ => false,
        }
    }
}

/// A logged change with the path it was made at (for reports).
#[derive(Clone, Debug)]
pub struct Rec {
    /// The change.
    pub op: Op,
    /// The path (for a rename, `from -> to`), as the process named it.
    pub path: String,
}

impl Rec {
    /// A one-line description: `rename a -> b`, `write f [0..12)`, …
    pub fn describe(&self) -> String {
        let kind = match &self.op {
            Op::Create { .. } => "create",
            Op::Symlink { .. } => "symlink",
            Op::Mkdir { .. } => "mkdir",
            Op::Rmdir { .. } => "rmdir",
            Op::Unlink { .. } => "unlink",
            Op::Link { .. } => "link",
            Op::Chmod { mode, .. } => return format!("chmod {:o} {}", mode, self.path),
            Op::Rename {
                noreplace: true, ..
            } => "rename (noreplace)",
            Op::Rename { .. } => "rename",
            Op::Write { offset, data, .. } => {
                return format!(
                    "write {} [{}..{})",
                    self.path,
                    offset,
                    offset + data.len() as u64
                );
            }
            Op::SyncFile { .. } => "fsync",
            Op::SyncDir { .. } => "fsync dir",
            Op::SyncFs => "syncfs",
        };
        format!("{kind} {}", self.path)
    }
}

/// Called after each logged change with its index.
type Hook = Box<dyn FnMut(usize, &Rec) + Send>;

struct State {
    tree: Tree,
    log: Vec<Rec>,
    /// Called after each logged change with its index (fault injection).
    hook: Option<Hook>,
}

/// The simulated filesystem; cheap to clone (clones share the tree and the log).
#[derive(Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl SimFs {
    /// A filesystem holding `tree`, all of it durable; the log is empty.
    pub fn new(tree: Tree) -> SimFs {
        SimFs {
            state: Arc::new(Mutex::new(State {
                tree,
                log: Vec::new(),
                hook: None,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tree as the running process sees it.
    pub fn live(&self) -> Tree {
        self.lock().tree.clone()
    }

    /// The log so far.
    pub fn log(&self) -> Vec<Rec> {
        self.lock().log.clone()
    }

    /// Calls `hook(index, rec)` after every logged change.
    pub fn set_hook(&self, hook: impl FnMut(usize, &Rec) + Send + 'static) {
        self.lock().hook = Some(Box::new(hook));
    }

    fn record(&self, mut state: MutexGuard<'_, State>, op: Op, path: String) {
        let rec = Rec { op, path };
        let index = state.log.len();
        state.log.push(rec.clone());
        if let Some(hook) = state.hook.as_mut() {
            hook(index, &rec);
        }
    }

    /// Gives the file or folder `ino` its `mode` (`fchmod(2)` on the descriptor just made).
    fn chmod(&self, ino: Ino, mode: u32, path: &str) {
        let mut state = self.lock();
        if let Some(Node::File { mode: m, .. } | Node::Dir { mode: m, .. }) =
            state.tree.nodes.get_mut(&ino)
        {
            *m = mode;
        }
        self.record(state, Op::Chmod { ino, mode }, path.to_owned());
    }

    fn write_at(&self, ino: Ino, offset: u64, buf: &[u8], path: &str) -> io::Result<()> {
        let mut state = self.lock();
        match state.tree.nodes.get_mut(&ino) {
            Some(Node::File { data, .. }) => {
                let data = Arc::make_mut(data);
                let end = offset as usize + buf.len();
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[offset as usize..end].copy_from_slice(buf);
            }
            _ => return Err(io::Error::other("write to a vanished inode")),
        }
        let op = Op::Write {
            ino,
            offset,
            data: Arc::from(buf),
        };
        self.record(state, op, path.to_owned());
        Ok(())
    }
}

fn exists(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::AlreadyExists, path.display().to_string())
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, path.display().to_string())
}

struct SimFile {
    fs: SimFs,
    ino: Ino,
    pos: u64,
    path: String,
}

impl Write for SimFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.fs.write_at(self.ino, self.pos, buf, &self.path)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl WriteFile for SimFile {
    fn sync(&mut self) -> io::Result<()> {
        let state = self.fs.lock();
        self.fs
            .record(state, Op::SyncFile { ino: self.ino }, self.path.clone());
        Ok(())
    }
}

impl Fs for SimFs {
    fn metadata(&self, path: &Path) -> io::Result<Option<Meta>> {
        let state = self.lock();
        // Like `RealFs`: nothing there, also below a file.
        let ino = match state.tree.lookup(path) {
            Ok((_, _, ino)) => ino,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                None
            }
            Err(e) => return Err(e),
        };
        Ok(ino.map(|ino| {
            let (kind, len, mode) = match &state.tree.nodes[&ino] {
                Node::File { data, mode } => (FileKind::File, data.len() as u64, *mode),
                Node::Dir { mode, entries } => (FileKind::Dir, entries.len() as u64, *mode),
                Node::Link(t) => (FileKind::Symlink, t.len() as u64, 0o777),
            };
            Meta {
                kind,
                len,
                executable: mode & 0o100 != 0,
                mode,
                dev: 1,
            }
        }))
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        let state = self.lock();
        let ino = state.tree.lookup(path)?.2.ok_or_else(|| not_found(path))?;
        match state.tree.entries(ino) {
            Some(entries) => Ok(entries.keys().cloned().collect()),
            None => Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                path.display().to_string(),
            )),
        }
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        let state = self.lock();
        let ino = state.tree.lookup(path)?.2.ok_or_else(|| not_found(path))?;
        match &state.tree.nodes[&ino] {
            Node::File { data, .. } => Ok(Box::new(io::Cursor::new((**data).clone()))),
            Node::Dir { .. } => Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                path.display().to_string(),
            )),
            Node::Link(_) => Err(io::Error::other(format!(
                "{}: is a symlink (O_NOFOLLOW)",
                path.display()
            ))),
        }
    }

    fn read_link(&self, path: &Path) -> io::Result<Vec<u8>> {
        let state = self.lock();
        let ino = state.tree.lookup(path)?.2.ok_or_else(|| not_found(path))?;
        match &state.tree.nodes[&ino] {
            Node::Link(t) => Ok(t.clone()),
            _ => Err(invalid(path, "not a symlink")),
        }
    }

    fn append(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        let state = self.lock();
        let ino = state.tree.lookup(path)?.2.ok_or_else(|| not_found(path))?;
        match &state.tree.nodes[&ino] {
            Node::File { data, .. } => Ok(Box::new(SimFile {
                fs: self.clone(),
                ino,
                pos: data.len() as u64,
                path: path.display().to_string(),
            })),
            _ => Err(invalid(path, "not a file (O_NOFOLLOW)")),
        }
    }

    fn create(&self, path: &Path, executable: bool) -> io::Result<Box<dyn WriteFile>> {
        let mut state = self.lock();
        let (parent, name, at) = state.tree.lookup(path)?;
        if at.is_some() {
            return Err(exists(path));
        }
        // As `RealFs` does: private first, then the release's mode.
        let ino = state.tree.alloc(Node::File {
            data: Arc::new(Vec::new()),
            mode: 0o600,
        });
        state
            .tree
            .entries_mut(parent)
            .expect("a folder")
            .insert(name.clone(), ino);
        let op = Op::Create {
            parent,
            name,
            ino,
            mode: 0o600,
        };
        let shown = path.display().to_string();
        self.record(state, op, shown.clone());
        self.chmod(ino, if executable { 0o755 } else { 0o644 }, &shown);
        Ok(Box::new(SimFile {
            fs: self.clone(),
            ino,
            pos: 0,
            path: shown,
        }))
    }

    fn symlink(&self, target: &[u8], link: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let (parent, name, at) = state.tree.lookup(link)?;
        if at.is_some() {
            return Err(exists(link));
        }
        let ino = state.tree.alloc(Node::Link(target.to_vec()));
        state
            .tree
            .entries_mut(parent)
            .expect("a folder")
            .insert(name.clone(), ino);
        let op = Op::Symlink {
            parent,
            name,
            ino,
            target: target.to_vec(),
        };
        self.record(state, op, link.display().to_string());
        Ok(())
    }

    fn create_dir(&self, path: &Path, mode: u32) -> io::Result<()> {
        let mut state = self.lock();
        let (parent, name, at) = state.tree.lookup(path)?;
        if at.is_some() {
            return Err(exists(path));
        }
        // As `RealFs` does: private first, then `mode`.
        let ino = state.tree.alloc(Node::Dir {
            mode: 0o700,
            entries: BTreeMap::new(),
        });
        state
            .tree
            .entries_mut(parent)
            .expect("a folder")
            .insert(name.clone(), ino);
        let op = Op::Mkdir {
            parent,
            name,
            ino,
            mode: 0o700,
        };
        let shown = path.display().to_string();
        self.record(state, op, shown.clone());
        self.chmod(ino, mode, &shown);
        Ok(())
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let (parent, name, at) = state.tree.lookup(path)?;
        let ino = at.ok_or_else(|| not_found(path))?;
        match state.tree.entries(ino) {
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    path.display().to_string(),
                ));
            }
            Some(e) if !e.is_empty() => {
                return Err(io::Error::new(
                    io::ErrorKind::DirectoryNotEmpty,
                    path.display().to_string(),
                ));
            }
            Some(_) => {}
        }
        state
            .tree
            .entries_mut(parent)
            .expect("a folder")
            .remove(&name);
        state.tree.nodes.remove(&ino);
        self.record(
            state,
            Op::Rmdir { parent, name, ino },
            path.display().to_string(),
        );
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let (parent, name, at) = state.tree.lookup(path)?;
        let ino = at.ok_or_else(|| not_found(path))?;
        if state.tree.entries(ino).is_some() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                path.display().to_string(),
            ));
        }
        state
            .tree
            .entries_mut(parent)
            .expect("a folder")
            .remove(&name);
        state.tree.forget(ino);
        self.record(
            state,
            Op::Unlink { parent, name, ino },
            path.display().to_string(),
        );
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.rename_with(from, to, false)
    }

    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.rename_with(from, to, true)
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let ino = state.tree.lookup(from)?.2.ok_or_else(|| not_found(from))?;
        if state.tree.entries(ino).is_some() {
            return Err(io::Error::other(format!(
                "{}: cannot hard-link a folder",
                from.display()
            )));
        }
        let (parent, name, at) = state.tree.lookup(to)?;
        if at.is_some() {
            return Err(exists(to));
        }
        state
            .tree
            .entries_mut(parent)
            .expect("a folder")
            .insert(name.clone(), ino);
        let op = Op::Link { parent, name, ino };
        self.record(state, op, format!("{} -> {}", from.display(), to.display()));
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let state = self.lock();
        let ino = state.tree.lookup(path)?.2.ok_or_else(|| not_found(path))?;
        if state.tree.entries(ino).is_none() {
            return Err(invalid(path, "not a folder"));
        }
        self.record(state, Op::SyncDir { ino }, path.display().to_string());
        Ok(())
    }

    fn sync_fs(&self, path: &Path) -> io::Result<()> {
        let state = self.lock();
        self.record(state, Op::SyncFs, path.display().to_string());
        Ok(())
    }

    fn space(&self, _path: &Path) -> io::Result<Space> {
        Ok(Space {
            available: 1 << 40,
            block_size: 4096,
        })
    }
}

impl SimFs {
    /// `rename(2)`, or with `RENAME_NOREPLACE` semantics when `noreplace`.
    fn rename_with(&self, from: &Path, to: &Path, noreplace: bool) -> io::Result<()> {
        let mut state = self.lock();
        let (from_dir, from_name, at) = state.tree.lookup(from)?;
        let ino = at.ok_or_else(|| not_found(from))?;
        let (to_dir, to_name, occupant) = state.tree.lookup(to)?;
        if noreplace && occupant.is_some() {
            return Err(exists(to));
        }
        if occupant == Some(ino) {
            return Ok(());
        }
        if let Some(o) = occupant {
            check_replace(&state.tree, ino, o).map_err(|what| invalid(to, what))?;
        }
        state
            .tree
            .entries_mut(from_dir)
            .expect("a folder")
            .remove(&from_name);
        state
            .tree
            .entries_mut(to_dir)
            .expect("a folder")
            .insert(to_name.clone(), ino);
        if let Some(o) = occupant {
            state.tree.forget(o);
        }
        let op = Op::Rename {
            from: from_dir,
            from_name,
            to: to_dir,
            to_name,
            ino,
            noreplace,
        };
        self.record(state, op, format!("{} -> {}", from.display(), to.display()));
        Ok(())
    }
}

/// Whether `rename(2)` may put inode `moving` over inode `occupant`.
fn check_replace(tree: &Tree, moving: Ino, occupant: Ino) -> Result<(), &'static str> {
    let moving_is_dir = tree.entries(moving).is_some();
    match (moving_is_dir, tree.entries(occupant)) {
        (true, Some(e)) if e.is_empty() => Ok(()),
        (true, Some(_)) => Err("rename over a non-empty folder"),
        (true, None) => Err("rename of a folder over a file"),
        (false, Some(_)) => Err("rename of a file over a folder"),
        (false, None) => Ok(()),
    }
}

/// How a file's non-durable data came out of the crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Data {
    /// Written bytes are lost: the file keeps its durable length.
    Lost,
    /// Cut in the middle of what was written since the last durable point.
    Torn,
    /// The size reached the disk, the blocks did not: zeros.
    Zeros,
    /// The size reached the disk with someone else's blocks: garbage.
    Garbage,
}

impl Data {
    /// Every variant.
    pub const ALL: [Data; 4] = [Data::Lost, Data::Torn, Data::Zeros, Data::Garbage];
}

/// A crash state: see the module docs.
#[derive(Clone, Debug, Default)]
pub struct Crash {
    /// Operations `0..k` had been issued.
    pub k: usize,
    /// Non-durable operations that did not persist.
    pub lost: BTreeSet<usize>,
    /// Files whose non-durable writes came out other than intact.
    pub data: BTreeMap<Ino, Data>,
}

impl Crash {
    /// A crash after `k` operations with everything issued persisting.
    pub fn prefix(k: usize) -> Crash {
        Crash {
            k,
            ..Crash::default()
        }
    }
}

/// When each logged operation becomes durable: `at[i]` is the index of the first sync after
/// `i` that covers it (`usize::MAX`: never). Syncs in `disabled` do nothing (sensitivity).
#[derive(Clone, Debug)]
pub struct Durability {
    at: Vec<usize>,
}

impl Durability {
    /// Computes the durability of `log`.
    pub fn of(log: &[Rec], disabled: &BTreeSet<usize>) -> Durability {
        let mut at = vec![usize::MAX; log.len()];
        for (i, rec) in log.iter().enumerate() {
            if rec.op.is_sync() {
                at[i] = i;
                continue;
            }
            for (j, later) in log.iter().enumerate().skip(i + 1) {
                if later.op.is_sync() && !disabled.contains(&j) && rec.op.made_durable_by(&later.op)
                {
                    at[i] = j;
                    break;
                }
            }
        }
        Durability { at }
    }

    /// Whether op `i` is durable in a crash after `k` operations.
    pub fn durable(&self, i: usize, k: usize) -> bool {
        self.at[i] < k
    }

    /// The operations before `k` that are not durable (syncs excluded).
    pub fn volatile(&self, k: usize) -> Vec<usize> {
        (0..k).filter(|&i| !self.durable(i, k)).collect()
    }
}

/// Files with non-durable writes among the first `k` operations.
pub fn volatile_files(log: &[Rec], dur: &Durability, k: usize) -> BTreeSet<Ino> {
    log[..k]
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r.op {
            Op::Write { ino, .. } if !dur.durable(i, k) => Some(ino),
            _ => None,
        })
        .collect()
}

/// The disk a crash leaves: `base` (durable before the log began) plus the persisted
/// operations of `log`, replayed in order under the physical dependencies of the module
/// docs.
pub fn materialize(base: &Tree, log: &[Rec], dur: &Durability, crash: &Crash) -> Tree {
    let mut tree = base.clone();
    // Per file with a data variant: its bytes from durable writes only, and from all writes.
    let mut durable_bytes: HashMap<Ino, Vec<u8>> = HashMap::new();
    let mut all_bytes: HashMap<Ino, Vec<u8>> = HashMap::new();
    for ino in crash.data.keys() {
        if let Some(Node::File { data, .. }) = base.nodes.get(ino) {
            durable_bytes.insert(*ino, (**data).clone());
            all_bytes.insert(*ino, (**data).clone());
        }
    }
    for (i, rec) in log[..crash.k].iter().enumerate() {
        let lost = crash.lost.contains(&i);
        debug_assert!(
            !lost || !dur.durable(i, crash.k),
            "a durable op cannot be lost"
        );
        if let Op::Write { ino, offset, data } = &rec.op
            && crash.data.contains_key(ino)
        {
            let all = all_bytes.entry(*ino).or_default();
            put(all, *offset, data);
            if dur.durable(i, crash.k) {
                put(durable_bytes.entry(*ino).or_default(), *offset, data);
            }
            continue;
        }
        if lost {
            continue;
        }
        apply(&mut tree, &rec.op);
    }
    for (ino, how) in &crash.data {
        let Some(Node::File { data, .. }) = tree.nodes.get_mut(ino) else {
            continue;
        };
        let base_len = durable_bytes.get(ino).map_or(0, Vec::len);
        let mut out = all_bytes.remove(ino).unwrap_or_default();
        let durable = durable_bytes.remove(ino).unwrap_or_default();
        let cut = base_len.min(out.len());
        out[..cut].copy_from_slice(&durable[..cut]);
        match how {
            Data::Lost => out.truncate(base_len),
            Data::Torn => {
                let cut = base_len + (out.len().saturating_sub(base_len)) / 2;
                out.truncate(cut);
            }
            Data::Zeros => out[cut..].fill(0),
            Data::Garbage => {
                for (n, b) in out[cut..].iter_mut().enumerate() {
                    *b = 0xa5 ^ (n as u8).wrapping_mul(31);
                }
            }
        }
        *data = Arc::new(out);
    }
    tree
}

fn put(bytes: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if bytes.len() < end {
        bytes.resize(end, 0);
    }
    bytes[offset as usize..end].copy_from_slice(data);
}

/// Replays one operation if its physical inputs are there; otherwise it is dropped.
fn apply(tree: &mut Tree, op: &Op) {
    let free = |tree: &Tree, parent: Ino, name: &OsStr| {
        tree.entries(parent).is_some_and(|e| !e.contains_key(name))
    };
    let holds = |tree: &Tree, parent: Ino, name: &OsStr, ino: Ino| {
        tree.entries(parent).and_then(|e| e.get(name)) == Some(&ino)
    };
    match op {
        Op::Create {
            parent,
            name,
            ino,
            mode,
        } => {
            if free(tree, *parent, name) {
                tree.nodes.insert(
                    *ino,
                    Node::File {
                        data: Arc::new(Vec::new()),
                        mode: *mode,
                    },
                );
                link(tree, *parent, name, *ino);
            }
        }
        Op::Symlink {
            parent,
            name,
            ino,
            target,
        } => {
            if free(tree, *parent, name) {
                tree.nodes.insert(*ino, Node::Link(target.clone()));
                link(tree, *parent, name, *ino);
            }
        }
        Op::Mkdir {
            parent,
            name,
            ino,
            mode,
        } => {
            if free(tree, *parent, name) {
                tree.nodes.insert(
                    *ino,
                    Node::Dir {
                        mode: *mode,
                        entries: BTreeMap::new(),
                    },
                );
                link(tree, *parent, name, *ino);
            }
        }
        Op::Unlink { parent, name, ino } => {
            if holds(tree, *parent, name, *ino) && tree.entries(*ino).is_none() {
                tree.entries_mut(*parent).expect("a folder").remove(name);
                tree.forget(*ino);
            }
        }
        Op::Link { parent, name, ino } => {
            let linkable = matches!(tree.nodes.get(ino), Some(Node::File { .. } | Node::Link(_)));
            if linkable && free(tree, *parent, name) {
                link(tree, *parent, name, *ino);
            }
        }
        Op::Rmdir { parent, name, ino } => {
            if holds(tree, *parent, name, *ino) && tree.entries(*ino).is_some_and(|e| e.is_empty())
            {
                tree.entries_mut(*parent).expect("a folder").remove(name);
                tree.nodes.remove(ino);
            }
        }
        Op::Rename {
            from,
            from_name,
            to,
            to_name,
            ino,
            // What lands on disk is the same entry either way: `RENAME_NOREPLACE` is checked
            // when the call is made, not when the change persists. A crash that loses the move
            // which had freed the destination therefore replays this over the occupant.
            noreplace: _,
        } => {
            if !holds(tree, *from, from_name, *ino) || tree.entries(*to).is_none() {
                return;
            }
            let occupant = tree.entries(*to).and_then(|e| e.get(to_name)).copied();
            if let Some(o) = occupant
                && (o == *ino || check_replace(tree, *ino, o).is_err())
            {
                return;
            }
            tree.entries_mut(*from).expect("a folder").remove(from_name);
            link(tree, *to, to_name, *ino);
            if let Some(o) = occupant {
                tree.forget(o);
            }
        }
        Op::Chmod { ino, mode } => {
            if let Some(Node::File { mode: m, .. } | Node::Dir { mode: m, .. }) =
                tree.nodes.get_mut(ino)
            {
                *m = *mode;
            }
        }
        Op::Write { ino, offset, data } => {
            if let Some(Node::File { data: bytes, .. }) = tree.nodes.get_mut(ino) {
                put(Arc::make_mut(bytes), *offset, data);
            }
        }
        Op::SyncFile { .. } | Op::SyncDir { .. } | Op::SyncFs => {}
    }
    // Keep fresh inode numbers above every replayed one.
    if let Op::Create { ino, .. } | Op::Symlink { ino, .. } | Op::Mkdir { ino, .. } = op {
        tree.next = tree.next.max(ino + 1);
    }
}

fn link(tree: &mut Tree, parent: Ino, name: &OsStr, ino: Ino) {
    tree.entries_mut(parent)
        .expect("a folder")
        .insert(name.to_owned(), ino);
}
