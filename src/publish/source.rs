//! Where the files of a release come from: a git commit (read with the `git` CLI) or a
//! folder on disk. Both give a tree (paths, modes, blob ids, sizes) and stream each file's
//! content on request, one file at a time: no release is ever held in memory whole.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Cursor, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use sha1::{Digest, Sha1};

use super::PublishError;
use crate::manifest::{BlobHasher, ObjectId, TreeEntry};

const MODE_FILE: u32 = 0o100644;
const MODE_EXECUTABLE: u32 = 0o100755;
const MODE_SYMLINK: u32 = 0o120000;

/// Streams the content of the blobs of one release.
pub(super) trait Contents {
    /// The content of `entry` (a file or a symlink's target), `entry.size` bytes long.
    fn open(&mut self, entry: &TreeEntry) -> Result<Box<dyn Read + '_>, PublishError>;
}

// ---------------------------------------------------------------------------------------
// A git repository
// ---------------------------------------------------------------------------------------

/// Runs `git -C repo args…` and returns its stdout; a failure quotes git's stderr.
fn git(repo: &Path, args: &[&str]) -> Result<Vec<u8>, PublishError> {
    let output = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            PublishError::Git(format!(
                "cannot run `git` ({e}): install git, which `ota publish --repo` uses to read \
                 the repository"
            ))
        })?;
    if !output.status.success() {
        return Err(PublishError::Git(format!(
            "`git {}` in {} failed: {}",
            args.join(" "),
            repo.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(output.stdout)
}

/// The commit `reference` names in `repo` (a tag, branch or commit id; an annotated tag is
/// followed to its commit).
pub(super) fn resolve(repo: &Path, reference: &str) -> Result<ObjectId, PublishError> {
    if reference.starts_with('-') {
        return Err(PublishError::Usage(format!(
            "--ref {reference:?} is not a git reference"
        )));
    }
    let spec = format!("{reference}^{{commit}}");
    let out = git(
        repo,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &spec,
        ],
    )
    .map_err(|e| match e {
        // git says why when it has a reason (not a repository); a ref that names nothing
        // leaves it silent (`--quiet`).
        PublishError::Git(message) if !message.ends_with("failed: ") => PublishError::Git(message),
        _ => PublishError::Git(format!(
            "{reference:?} names no commit in {}: give a tag, branch or commit of that \
                 repository (`git tag`, `git branch`)",
            repo.display()
        )),
    })?;
    let text = String::from_utf8_lossy(&out);
    ObjectId::from_hex(text.trim())
        .ok_or_else(|| PublishError::Git(format!("`git rev-parse` printed {text:?}")))
}

/// Every entry of the tree of `commit`, recursively (`git ls-tree -r -z --long`): files,
/// executables, symlinks and submodules, with the sizes of blobs.
pub(super) fn tree(repo: &Path, commit: &ObjectId) -> Result<Vec<TreeEntry>, PublishError> {
    let out = git(repo, &["ls-tree", "-r", "-z", "--long", &commit.to_hex()])?;
    let mut entries = Vec::new();
    for record in out.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        entries.push(parse_ls_tree(record)?);
    }
    Ok(entries)
}

/// One record of `git ls-tree --long`: `<mode> <type> <id> <size>\t<path>`.
fn parse_ls_tree(record: &[u8]) -> Result<TreeEntry, PublishError> {
    let bad = || {
        PublishError::Git(format!(
            "cannot read `git ls-tree` output {:?}",
            String::from_utf8_lossy(record)
        ))
    };
    let tab = record.iter().position(|b| *b == b'\t').ok_or_else(bad)?;
    let (meta, path) = (&record[..tab], &record[tab + 1..]);
    let path = std::str::from_utf8(path).map_err(|_| {
        PublishError::Invalid(format!(
            "path {:?} is not UTF-8: devices refuse it; rename it",
            String::from_utf8_lossy(path)
        ))
    })?;
    let meta = std::str::from_utf8(meta).map_err(|_| bad())?;
    let mut fields = meta.split_ascii_whitespace();
    let (Some(mode), Some(_kind), Some(id), Some(size)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(bad());
    };
    Ok(TreeEntry {
        path: path.to_owned(),
        mode: u32::from_str_radix(mode, 8).map_err(|_| bad())?,
        id: ObjectId::from_hex(id).ok_or_else(bad)?,
        size: size.parse().ok(),
        sha256: None,
    })
}

/// Blob contents from one `git cat-file --batch` process.
pub(super) struct GitContents {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// The newline git writes after each blob, not read yet.
    pending_newline: bool,
}

impl GitContents {
    pub(super) fn new(repo: &Path) -> Result<GitContents, PublishError> {
        let mut child = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["cat-file", "--batch"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| PublishError::Git(format!("cannot run `git cat-file`: {e}")))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(PublishError::Git("`git cat-file` has no pipes".into()));
        };
        Ok(GitContents {
            child,
            stdin,
            stdout: BufReader::with_capacity(1 << 16, stdout),
            pending_newline: false,
        })
    }
}

impl Drop for GitContents {
    fn drop(&mut self) {
        // Our stdin closes with us; git then exits. Reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Contents for GitContents {
    fn open(&mut self, entry: &TreeEntry) -> Result<Box<dyn Read + '_>, PublishError> {
        let broken = |e: io::Error| PublishError::Git(format!("`git cat-file` failed: {e}"));
        if self.pending_newline {
            let mut newline = [0u8; 1];
            self.stdout.read_exact(&mut newline).map_err(broken)?;
        }
        writeln!(self.stdin, "{}", entry.id).map_err(broken)?;
        self.stdin.flush().map_err(broken)?;
        let mut header = String::new();
        self.stdout.read_line(&mut header).map_err(broken)?;
        let mut fields = header.split_ascii_whitespace();
        let (Some(_id), Some("blob"), Some(size)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(PublishError::Git(format!(
                "`git cat-file` has no blob {} for {}: {}",
                entry.id,
                entry.path,
                header.trim()
            )));
        };
        let size: u64 = size
            .parse()
            .map_err(|_| PublishError::Git(format!("`git cat-file` said {header:?}")))?;
        self.pending_newline = true;
        Ok(Box::new((&mut self.stdout).take(size)))
    }
}

// ---------------------------------------------------------------------------------------
// A folder
// ---------------------------------------------------------------------------------------

/// The files of a folder, as git would record them: regular files (`100755` when the
/// owner's exec bit is set, `100644` otherwise) and symlinks (kept as links: `120000`, the
/// target as content). Every `.git` folder is skipped, as git does; folders themselves are
/// not entries (an empty folder is not published). Anything else (a FIFO, a socket, a
/// device) is refused.
pub(super) fn walk(root: &Path) -> Result<Vec<TreeEntry>, PublishError> {
    let meta = fs::metadata(root).map_err(|e| PublishError::io(root, "read", e))?;
    if !meta.is_dir() {
        return Err(PublishError::Usage(format!(
            "--dir {} is not a folder",
            root.display()
        )));
    }
    let mut entries = Vec::new();
    walk_into(root, "", &mut entries)?;
    Ok(entries)
}

fn walk_into(dir: &Path, prefix: &str, out: &mut Vec<TreeEntry>) -> Result<(), PublishError> {
    let mut names = Vec::new();
    for item in fs::read_dir(dir).map_err(|e| PublishError::io(dir, "list", e))? {
        let item = item.map_err(|e| PublishError::io(dir, "list", e))?;
        names.push(item.file_name());
    }
    names.sort();
    for name in names {
        let full = dir.join(&name);
        let Some(name) = name.to_str() else {
            return Err(PublishError::Invalid(format!(
                "{} is not a UTF-8 name: devices refuse it; rename it",
                full.display()
            )));
        };
        if name == ".git" {
            continue;
        }
        let path = format!("{prefix}{name}");
        let meta = fs::symlink_metadata(&full).map_err(|e| PublishError::io(&full, "read", e))?;
        let kind = meta.file_type();
        let mode = if kind.is_dir() {
            walk_into(&full, &format!("{path}/"), out)?;
            continue;
        } else if kind.is_symlink() {
            MODE_SYMLINK
        } else if kind.is_file() && meta.permissions().mode() & 0o100 != 0 {
            MODE_EXECUTABLE
        } else if kind.is_file() {
            MODE_FILE
        } else {
            return Err(PublishError::Invalid(format!(
                "{} is neither a file, a folder nor a symlink: a release holds only those; \
                 remove it or publish another folder",
                full.display()
            )));
        };
        let (id, size) = match mode {
            MODE_SYMLINK => {
                let target = link_target(&full)?;
                (ObjectId::for_blob(target.as_bytes()), target.len() as u64)
            }
            _ => file_blob_id(&full, meta.len())?,
        };
        out.push(TreeEntry {
            path,
            mode,
            id,
            size: Some(size),
            sha256: None,
        });
    }
    Ok(())
}

/// The git blob id of the file at `path`, `len` bytes long (git hashes the length first).
fn file_blob_id(path: &Path, len: u64) -> Result<(ObjectId, u64), PublishError> {
    let mut file = File::open(path).map_err(|e| PublishError::io(path, "read", e))?;
    let mut hasher = BlobHasher::new(len);
    let mut buf = vec![0u8; 1 << 16];
    let mut seen = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| PublishError::io(path, "read", e))?;
        if n == 0 {
            break;
        }
        seen += n as u64;
        hasher.update(&buf[..n]);
    }
    if seen != len {
        return Err(PublishError::Changed(path.to_path_buf()));
    }
    Ok((hasher.finish(), len))
}

/// A symlink's target, which must be UTF-8 text (devices refuse anything else).
fn link_target(path: &Path) -> Result<String, PublishError> {
    let target = fs::read_link(path).map_err(|e| PublishError::io(path, "read", e))?;
    target.into_os_string().into_string().map_err(|_| {
        PublishError::Invalid(format!(
            "symlink {} has a target that is not UTF-8: devices refuse it",
            path.display()
        ))
    })
}

/// File contents read from the folder being published.
pub(super) struct FolderContents {
    root: PathBuf,
}

impl FolderContents {
    pub(super) fn new(root: &Path) -> FolderContents {
        FolderContents {
            root: root.to_path_buf(),
        }
    }
}

impl Contents for FolderContents {
    fn open(&mut self, entry: &TreeEntry) -> Result<Box<dyn Read + '_>, PublishError> {
        let full = self.root.join(&entry.path);
        if entry.mode == MODE_SYMLINK {
            return Ok(Box::new(Cursor::new(link_target(&full)?.into_bytes())));
        }
        let file = File::open(&full).map_err(|e| PublishError::io(&full, "read", e))?;
        Ok(Box::new(file))
    }
}

/// The git tree id of `entries` (files, executables and symlinks; paths `/`-separated):
/// what `git write-tree` prints for an index holding exactly those files.
pub(super) fn tree_id(entries: &[(String, u32, ObjectId)]) -> ObjectId {
    #[derive(Default)]
    struct Folder<'a> {
        files: BTreeMap<&'a str, (u32, ObjectId)>,
        folders: BTreeMap<&'a str, Folder<'a>>,
    }
    fn insert<'a>(folder: &mut Folder<'a>, path: &'a str, mode: u32, id: ObjectId) {
        match path.split_once('/') {
            Some((first, rest)) => insert(folder.folders.entry(first).or_default(), rest, mode, id),
            None => {
                folder.files.insert(path, (mode, id));
            }
        }
    }
    fn hash(folder: &Folder<'_>) -> ObjectId {
        // git sorts a tree's entries by name, a folder's name compared as if it ended in `/`.
        let mut items: Vec<(String, u32, ObjectId)> = folder
            .files
            .iter()
            .map(|(name, (mode, id))| ((*name).to_owned(), *mode, *id))
            .collect();
        for (name, sub) in &folder.folders {
            items.push((format!("{name}/"), 0o40000, hash(sub)));
        }
        items.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut body = Vec::new();
        for (name, mode, id) in &items {
            let name = name.strip_suffix('/').unwrap_or(name);
            body.extend_from_slice(format!("{mode:o} {name}\0").as_bytes());
            body.extend_from_slice(&id_bytes(id));
        }
        let mut sha1 = Sha1::new();
        sha1.update(format!("tree {}\0", body.len()).as_bytes());
        sha1.update(&body);
        let digest: [u8; 20] = sha1.finalize().into();
        // `ObjectId` is built from hex outside `manifest`; 40 hex digits always parse.
        ObjectId::from_hex(&hex::encode(digest)).unwrap_or(ObjectId::for_blob(b""))
    }
    let mut root = Folder::default();
    for (path, mode, id) in entries {
        insert(&mut root, path, *mode, *id);
    }
    hash(&root)
}

fn id_bytes(id: &ObjectId) -> [u8; 20] {
    let mut bytes = [0u8; 20];
    // An ObjectId's hex is always 40 valid digits.
    let _ = hex::decode_to_slice(id.to_hex(), &mut bytes);
    bytes
}
