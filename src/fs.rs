//! The narrow filesystem seam: every call the transaction and recovery make.
//!
//! [`Fs`] lists the few operations an update needs, so that a simulated filesystem can stand
//! in for the real one and crash an update at every step (see the crash-enumeration tests).
//! [`RealFs`] is the real thing, confined to the target and the state folder: `rustix`'s
//! `*at` calls on folders resolved without following links.
//!
//! All paths are absolute. Operations never follow a symlink in the last component
//! (`metadata` is `lstat`, `rename` moves the link itself), and [`RealFs`] follows none on
//! the way either.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

/// What a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A device, socket or fifo: never touched by ota.
    Other,
}

/// The facts ota needs about a path (from `lstat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// What it is.
    pub kind: FileKind,
    /// Size in bytes.
    pub len: u64,
    /// Whether the owner exec bit is set.
    pub executable: bool,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// The device (filesystem) it lives on.
    pub dev: u64,
}

/// Space on a filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    /// Bytes available to an unprivileged writer.
    pub available: u64,
    /// Allocation unit: file sizes are rounded up to this.
    pub block_size: u64,
}

/// A file being read: bytes in order, or from any offset (a binary patch copies from the
/// old file wherever its ops point).
pub trait ReadFile: Read + Seek + Send {}

impl<T: Read + Seek + Send> ReadFile for T {}

/// A file being written: bytes, then optionally made durable.
pub trait WriteFile: Write + Send {
    /// Makes the file's data durable (`fsync`).
    fn sync(&mut self) -> io::Result<()>;
}

/// The filesystem operations of an update. See the module docs.
pub trait Fs: Send + Sync {
    /// `lstat`; `Ok(None)` when nothing is at `path`, also when a folder on the way is a
    /// file (`ENOTDIR`): undoing a release that turned a file into a folder looks below it.
    fn metadata(&self, path: &Path) -> io::Result<Option<Meta>>;
    /// Names in a directory (without `.` and `..`).
    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>>;
    /// Opens a file for reading.
    fn open(&self, path: &Path) -> io::Result<Box<dyn ReadFile>>;
    /// The target of a symbolic link, as bytes.
    fn read_link(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Creates a new file (fails if `path` exists) with mode 0644, or 0755 if `executable`.
    fn create(&self, path: &Path, executable: bool) -> io::Result<Box<dyn WriteFile>>;
    /// Opens an existing file to write at its end (never following a link at `path`).
    fn append(&self, path: &Path) -> io::Result<Box<dyn WriteFile>>;
    /// Creates a symbolic link at `link` pointing to `target`.
    fn symlink(&self, target: &[u8], link: &Path) -> io::Result<()>;
    /// Creates one directory with `mode`.
    fn create_dir(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// Removes an empty directory.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// Removes a file or symlink.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Renames `from` to `to` atomically, replacing `to` if it is a file.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Renames `from` to `to` only if nothing is at `to` (`RENAME_NOREPLACE`); fails with
    /// [`io::ErrorKind::AlreadyExists`] otherwise. Where the filesystem cannot do that
    /// atomically, checks `to` first.
    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Creates `to` as a new name of the file or link at `from` (`link(2)`, never following a
    /// link at `from`); fails with [`io::ErrorKind::AlreadyExists`] if `to` exists. Both
    /// must be on one filesystem.
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes a directory's entries durable (`fsync` on the directory).
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Makes every pending write of the filesystem holding `path` durable (`syncfs`).
    fn sync_fs(&self, path: &Path) -> io::Result<()>;
    /// Free space of the filesystem holding `path`.
    fn space(&self, path: &Path) -> io::Result<Space>;
}

/// Reads a whole small file (state, journal), refusing anything over `limit` bytes.
pub(crate) fn read_small(fs: &dyn Fs, path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    fs.open(path)?.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is larger than {limit} bytes", path.display()),
        ));
    }
    Ok(bytes)
}

/// Replaces `path` with `bytes` atomically and durably: write `<path>.tmp`, fsync it,
/// rename it over `path`, fsync the folder. After a crash, `path` holds either the old or
/// the new bytes; the `.tmp` may remain and is removed by recovery.
pub(crate) fn write_atomic(fs: &dyn Fs, path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace(fs, path, bytes, true)
}

/// Replaces `path` with `bytes` atomically but not durably: readers see the old or the new
/// bytes, never a mix, but a power cut may bring back the old ones or leave an empty file.
/// For files that only save work (`cache.json`): no fsync for what nothing depends on.
pub(crate) fn write_replace(fs: &dyn Fs, path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace(fs, path, bytes, false)
}

fn replace(fs: &dyn Fs, path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let tmp = tmp_path(path);
    if fs.metadata(&tmp)?.is_some() {
        fs.remove_file(&tmp)?;
    }
    let mut file = fs.create(&tmp, false)?;
    file.write_all(bytes)?;
    if durable {
        file.sync()?;
    }
    drop(file);
    fs.rename(&tmp, path)?;
    if durable {
        fs.sync_dir(parent(path))?;
    }
    Ok(())
}

/// The mode of every file ota installs: 0755 when `executable`, else 0644.
pub(crate) fn file_mode(executable: bool) -> u32 {
    if executable { 0o755 } else { 0o644 }
}

/// The temporary name [`write_atomic`] uses for `path`.
pub(crate) fn tmp_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Removes `path` and everything below it (without following symlinks). Missing is fine.
pub(crate) fn remove_tree(fs: &dyn Fs, path: &Path) -> io::Result<()> {
    match fs.metadata(path)? {
        None => Ok(()),
        Some(meta) if meta.kind == FileKind::Dir => {
            for name in fs.read_dir(path)? {
                remove_tree(fs, &path.join(name))?;
            }
            fs.remove_dir(path)
        }
        Some(_) => fs.remove_file(path),
    }
}

/// The folder holding `path` (`/` for a top-level path).
pub(crate) fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("/"))
}

/// The real filesystem, confined to the target and the state folder.
///
/// Every path must lie in one of the two roots (the longest one wins: the default state
/// folder `<target>/.ota` is inside the target). The folders between the root and the last
/// component are resolved beneath the root without following any symbolic link (`openat2`
/// with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, or a walk of `O_NOFOLLOW` opens where the
/// kernel lacks it), and the operation is then done on the last component relative to that
/// folder, never following a link there either. So whatever the application does to the
/// target during an update (a folder swapped for a link to `/etc`…), ota's operations stay
/// inside the roots, or fail with an error [`is_unsafe`] recognises.
///
/// The roots are opened by their configured path: the administrator's path and its ancestors
/// are trusted (only the root's own last component must not be a link). A root inside the
/// other root is itself resolved beneath the outer one.
#[derive(Clone, Debug)]
pub struct RealFs {
    /// The roots, longest first.
    roots: Vec<PathBuf>,
    /// Resolve by walking one component at a time even where `openat2` exists (tests).
    walk_only: bool,
}

/// Why a path was refused: it would leave its root or go through a link.
#[derive(Debug)]
struct Unsafe(String);

impl std::fmt::Display for Unsafe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unsafe {}

fn unsafe_error(message: String) -> io::Error {
    io::Error::other(Unsafe(message))
}

/// Whether `error` says a path would leave the target or the state folder, or go through a
/// symbolic link (something the application changed under ota's feet).
pub fn is_unsafe(error: &io::Error) -> bool {
    error.get_ref().is_some_and(|e| e.is::<Unsafe>())
}

/// A path resolved to the folder holding it and its last component.
struct Located {
    dir: OwnedFd,
    name: OsString,
}

/// `RENAME_NOREPLACE` is missing on this filesystem: warned about once per process.
static NOREPLACE_MISSING: std::sync::Once = std::sync::Once::new();

impl RealFs {
    /// A filesystem that only touches paths under `target_dir` or `state_dir`; see the type
    /// docs.
    pub fn confined(target_dir: &Path, state_dir: &Path) -> RealFs {
        let mut roots = vec![target_dir.to_owned(), state_dir.to_owned()];
        roots.sort_by_key(|r| std::cmp::Reverse(r.components().count()));
        roots.dedup();
        RealFs {
            roots,
            walk_only: false,
        }
    }

    /// Resolves folders by walking one component at a time with `O_NOFOLLOW`, as on kernels
    /// without `openat2` (so that path is tested too).
    #[doc(hidden)]
    pub fn with_component_walk(mut self) -> RealFs {
        self.walk_only = true;
        self
    }

    /// The root `path` is under, and the components below it. A path equal to a root that
    /// lies inside the other root counts as under the outer one.
    fn split<'p>(&self, path: &'p Path) -> io::Result<(&Path, Vec<&'p OsStr>)> {
        for root in &self.roots {
            let Ok(rest) = path.strip_prefix(root) else {
                continue;
            };
            if rest.as_os_str().is_empty() && self.outer_of(root).is_some() {
                continue;
            }
            let mut names = Vec::new();
            for c in rest.components() {
                match c {
                    Component::Normal(name) => names.push(name),
                    Component::CurDir => {}
                    _ => {
                        return Err(unsafe_error(format!(
                            "{} has a `..` component; ota refuses it",
                            path.display()
                        )));
                    }
                }
            }
            return Ok((root, names));
        }
        Err(unsafe_error(format!(
            "{} is outside the target and the state folder ({}); ota touches nothing else",
            path.display(),
            self.roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(" and ")
        )))
    }

    /// The other root that strictly contains `root`, if any.
    fn outer_of(&self, root: &Path) -> Option<&Path> {
        self.roots
            .iter()
            .find(|r| r.as_path() != root && root.starts_with(r))
            .map(PathBuf::as_path)
    }

    /// Opens `root` as an `O_PATH` folder: by its path (trusted), or beneath the root that
    /// contains it.
    fn open_root(&self, root: &Path) -> io::Result<OwnedFd> {
        match self.outer_of(root) {
            Some(outer) => {
                let below: Vec<&OsStr> = root
                    .strip_prefix(outer)
                    .map_err(io::Error::other)?
                    .iter()
                    .collect();
                let base = self.open_root(outer)?;
                self.beneath(base, &below, root)
            }
            None => {
                let parent = root.parent().unwrap_or(Path::new("/"));
                let dir = rfs::open(parent, dir_path_flags(), Mode::empty())?;
                match root.file_name() {
                    Some(name) => self.open_dir_at(&dir, name, root),
                    None => Ok(dir),
                }
            }
        }
    }

    /// Opens the folder `names` (relative to `base`) without following any link.
    fn beneath(&self, base: OwnedFd, names: &[&OsStr], shown: &Path) -> io::Result<OwnedFd> {
        if names.is_empty() {
            return Ok(base);
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if !self.walk_only {
            let rel: PathBuf = names.iter().collect();
            let resolve = rfs::ResolveFlags::BENEATH
                | rfs::ResolveFlags::NO_SYMLINKS
                | rfs::ResolveFlags::NO_MAGICLINKS;
            match rfs::openat2(&base, &rel, dir_path_flags(), Mode::empty(), resolve) {
                Ok(fd) => return Ok(fd),
                // No openat2 (before Linux 5.6), or a seccomp filter that refuses it (older
                // container runtimes answer EPERM): the walk below is as strict.
                Err(Errno::NOSYS) | Err(Errno::PERM) => {}
                Err(Errno::LOOP) | Err(Errno::XDEV) => return Err(through_link(shown)),
                Err(e) => return Err(e.into()),
            }
        }
        let mut dir = base;
        for name in names {
            dir = self.open_dir_at(&dir, name, shown)?;
        }
        Ok(dir)
    }

    /// Opens the folder `name` inside `dir` as `O_PATH`, refusing a link.
    fn open_dir_at(&self, dir: &OwnedFd, name: &OsStr, shown: &Path) -> io::Result<OwnedFd> {
        match rfs::openat(
            dir,
            name,
            dir_path_flags() | OFlags::NOFOLLOW,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(fd),
            Err(Errno::LOOP) => Err(through_link(shown)),
            // O_PATH | O_NOFOLLOW on a link opens the link, and O_DIRECTORY then refuses it.
            Err(Errno::NOTDIR) if is_link_at(dir, name) => Err(through_link(shown)),
            Err(e) => Err(e.into()),
        }
    }

    /// The folder holding `path` (resolved safely) and its last component.
    fn locate(&self, path: &Path) -> io::Result<Located> {
        let (root, names) = self.split(path)?;
        let Some((name, parents)) = names.split_last() else {
            // The root itself: its parent, by path (trusted), or "." for `/`.
            let parent = root.parent().unwrap_or(Path::new("/"));
            let name = root.file_name().unwrap_or(OsStr::new("."));
            return Ok(Located {
                dir: rfs::open(parent, dir_path_flags(), Mode::empty())?,
                name: name.to_owned(),
            });
        };
        let base = self.open_root(root)?;
        Ok(Located {
            dir: self.beneath(base, parents, path)?,
            name: (*name).to_owned(),
        })
    }

    /// Opens the folder at `path` for reading its entries or syncing it.
    fn open_dir(&self, path: &Path) -> io::Result<OwnedFd> {
        let at = self.locate(path)?;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rfs::openat(&at.dir, &at.name, flags, Mode::empty()) {
            Err(Errno::LOOP) => Err(through_link(path)),
            Err(Errno::NOTDIR) if is_link_at(&at.dir, &at.name) => Err(through_link(path)),
            other => Ok(other?),
        }
    }
}

/// Flags to open a folder only to resolve names beneath it (`O_PATH` where it exists).
fn dir_path_flags() -> OFlags {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let only_path = OFlags::PATH;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let only_path = OFlags::RDONLY;
    only_path | OFlags::DIRECTORY | OFlags::CLOEXEC
}

fn through_link(path: &Path) -> io::Error {
    unsafe_error(format!(
        "a folder on the way to {} is a symbolic link or leaves its root (changed while ota \
         was working?); ota never follows links there",
        path.display()
    ))
}

fn is_link_at(dir: &OwnedFd, name: &OsStr) -> bool {
    rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
}

struct RealFile(File);

impl Write for RealFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl WriteFile for RealFile {
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }
}

fn meta_of(st: &rfs::Stat) -> Meta {
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => FileKind::File,
        FileType::Directory => FileKind::Dir,
        FileType::Symlink => FileKind::Symlink,
        _ => FileKind::Other,
    };
    // The fields' integer types differ between architectures.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    Meta {
        kind,
        len: st.st_size as u64,
        executable: st.st_mode & 0o100 != 0,
        mode: (st.st_mode & 0o7777) as u32,
        dev: st.st_dev as u64,
    }
}

impl Fs for RealFs {
    fn metadata(&self, path: &Path) -> io::Result<Option<Meta>> {
        // "Not a directory": a component of the path is a file, so nothing is at the path
        // (an update that turned a file into a folder is undone through such paths).
        let at = match self.locate(path) {
            Ok(at) => at,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        match rfs::statat(&at.dir, &at.name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(meta_of(&st))),
            Err(Errno::NOENT | Errno::NOTDIR) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        use std::os::unix::ffi::OsStrExt;
        let mut names = Vec::new();
        for entry in rfs::Dir::new(self.open_dir(path)?)? {
            let name = entry?.file_name().to_bytes().to_owned();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(&name).to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        let at = self.locate(path)?;
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        Ok(Box::new(File::from(rfs::openat(
            &at.dir,
            &at.name,
            flags,
            Mode::empty(),
        )?)))
    }

    fn read_link(&self, path: &Path) -> io::Result<Vec<u8>> {
        let at = self.locate(path)?;
        Ok(rfs::readlinkat(&at.dir, &at.name, Vec::new())?.into_bytes())
    }

    fn create(&self, path: &Path, executable: bool) -> io::Result<Box<dyn WriteFile>> {
        let at = self.locate(path)?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let file = File::from(rfs::openat(
            &at.dir,
            &at.name,
            flags,
            Mode::from_raw_mode(0o600),
        )?);
        // Created private, then given the release's mode (which the umask must not mask).
        // A kill in between leaves a private file: whoever takes it up checks its mode.
        rfs::fchmod(&file, Mode::from_raw_mode(file_mode(executable)))?;
        Ok(Box::new(RealFile(file)))
    }

    fn append(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        let at = self.locate(path)?;
        let flags = OFlags::WRONLY | OFlags::APPEND | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let file = File::from(rfs::openat(&at.dir, &at.name, flags, Mode::empty())?);
        Ok(Box::new(RealFile(file)))
    }

    fn symlink(&self, target: &[u8], link: &Path) -> io::Result<()> {
        let at = self.locate(link)?;
        rfs::symlinkat(target, &at.dir, &at.name)?;
        Ok(())
    }

    fn create_dir(&self, path: &Path, mode: u32) -> io::Result<()> {
        let at = self.locate(path)?;
        // Private first, then the wanted mode: a crash in between leaves a narrower mode,
        // never a wider one.
        rfs::mkdirat(&at.dir, &at.name, Mode::from_raw_mode(0o700))?;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let dir = rfs::openat(&at.dir, &at.name, flags, Mode::empty())?;
        rfs::fchmod(&dir, Mode::from_raw_mode(mode))?;
        Ok(())
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let at = self.locate(path)?;
        rfs::unlinkat(&at.dir, &at.name, AtFlags::REMOVEDIR)?;
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let at = self.locate(path)?;
        rfs::unlinkat(&at.dir, &at.name, AtFlags::empty())?;
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (a, b) = (self.locate(from)?, self.locate(to)?);
        rfs::renameat(&a.dir, &a.name, &b.dir, &b.name)?;
        Ok(())
    }

    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (a, b) = (self.locate(from)?, self.locate(to)?);
        #[cfg(any(target_os = "linux", target_os = "android"))]
        match rfs::renameat_with(&a.dir, &a.name, &b.dir, &b.name, RenameFlags::NOREPLACE) {
            Ok(()) => return Ok(()),
            // EINVAL: the filesystem cannot; ENOSYS/EPERM: no renameat2 (old kernel, seccomp).
            // A real permission problem fails the checked rename below just the same.
            Err(Errno::INVAL) | Err(Errno::NOSYS) | Err(Errno::PERM) | Err(Errno::NOTSUP) => {
                NOREPLACE_MISSING.call_once(|| {
                    tracing::warn!(
                        "the filesystem of {} cannot rename without replacing \
                         (RENAME_NOREPLACE); ota checks the destination first instead",
                        to.display()
                    )
                });
            }
            Err(e) => return Err(e.into()),
        }
        // Checked rename: the window between the check and the move is the best this
        // filesystem allows.
        match rfs::statat(&b.dir, &b.name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Err(io::Error::from(Errno::EXIST)),
            Err(Errno::NOENT) => Ok(rfs::renameat(&a.dir, &a.name, &b.dir, &b.name)?),
            Err(e) => Err(e.into()),
        }
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (a, b) = (self.locate(from)?, self.locate(to)?);
        // No AT_SYMLINK_FOLLOW: a link at `from` is linked itself, never what it points to.
        rfs::linkat(&a.dir, &a.name, &b.dir, &b.name, AtFlags::empty())?;
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        rfs::fsync(self.open_dir(path)?)?;
        Ok(())
    }

    fn sync_fs(&self, path: &Path) -> io::Result<()> {
        let dir = self.open_dir(path)?;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            rfs::syncfs(&dir)?;
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            // No syncfs outside Linux: sync(2) flushes every filesystem, which covers ours.
            rfs::sync();
            rfs::fsync(&dir)?;
        }
        Ok(())
    }

    fn space(&self, path: &Path) -> io::Result<Space> {
        // A root not created yet: the free space of the folder that will hold it (only
        // read, so an ancestor of a root is fine).
        let st = match self.roots.iter().any(|r| r != path && r.starts_with(path)) {
            true => rfs::statvfs(path)?,
            false => rfs::fstatvfs(self.open_dir(path)?)?,
        };
        Ok(Space {
            available: st.f_bavail.saturating_mul(st.f_frsize),
            block_size: st.f_frsize.max(512),
        })
    }
}

/// The kind of filesystem holding `path`, if it is one whose renames are not atomic across a
/// power cut (the FAT family, NTFS through ntfs3). Linux only; `None` elsewhere or unknown.
pub(crate) fn non_atomic_rename_fs(path: &Path) -> Option<&'static str> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // The field's integer type differs between architectures.
        #[allow(clippy::unnecessary_cast)]
        let magic = (rustix::fs::statfs(path).ok()?.f_type as u64) & 0xffff_ffff;
        match magic {
            0x4d44 => Some("vfat"),
            0x2011_bab0 => Some("exfat"),
            0x7366_746e => Some("ntfs3"),
            _ => None,
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = path;
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A target with `lib/a.txt`, its state folder `.ota` inside, and a folder beside it.
    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("app");
        std::fs::create_dir_all(target.join("lib")).unwrap();
        std::fs::create_dir_all(target.join(".ota")).unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        std::fs::write(target.join("lib/a.txt"), "a").unwrap();
        std::fs::write(dir.path().join("outside/x.txt"), "x").unwrap();
        let state = target.join(".ota");
        (dir, target, state)
    }

    fn both(target: &Path, state: &Path) -> [RealFs; 2] {
        let fs = RealFs::confined(target, state);
        [fs.clone(), fs.with_component_walk()]
    }

    #[test]
    fn links_on_the_way_and_paths_outside_are_refused() {
        let (dir, target, state) = setup();
        let outside = dir.path().join("outside");
        std::os::unix::fs::symlink(&outside, target.join("link")).unwrap();
        for fs in both(&target, &state) {
            for path in [
                target.join("link/x.txt"),
                outside.join("x.txt"),
                target.join("lib/../../outside/x.txt"),
            ] {
                let error = fs.remove_file(&path).unwrap_err();
                assert!(is_unsafe(&error), "{}: {error}", path.display());
                let error = fs.metadata(&path).unwrap_err();
                assert!(is_unsafe(&error), "{}: {error}", path.display());
            }
            // The link itself (last component) is seen, not followed.
            let meta = fs.metadata(&target.join("link")).unwrap().unwrap();
            assert_eq!(meta.kind, FileKind::Symlink);
            assert!(fs.open(&target.join("link")).is_err());
            assert_eq!(fs.read_dir(&target.join("lib")).unwrap(), vec!["a.txt"]);
        }
        assert!(outside.join("x.txt").exists());
    }

    #[test]
    fn a_link_in_place_of_the_inner_state_folder_is_not_followed() {
        let (dir, target, state) = setup();
        std::fs::remove_dir(&state).unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), &state).unwrap();
        for fs in both(&target, &state) {
            let error = fs.create(&state.join("new.json"), false).err().unwrap();
            assert!(is_unsafe(&error), "{error}");
        }
        assert!(!dir.path().join("outside/new.json").exists());
    }

    #[test]
    fn rename_noreplace_never_replaces() {
        let (_dir, target, state) = setup();
        for fs in both(&target, &state) {
            std::fs::write(target.join("b.txt"), "b").unwrap();
            let error = fs
                .rename_noreplace(&target.join("b.txt"), &target.join("lib/a.txt"))
                .unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
            assert_eq!(std::fs::read(target.join("lib/a.txt")).unwrap(), b"a");
            fs.rename_noreplace(&target.join("b.txt"), &state.join("b.txt"))
                .unwrap();
            assert_eq!(std::fs::read(state.join("b.txt")).unwrap(), b"b");
            std::fs::remove_file(state.join("b.txt")).unwrap();
        }
    }

    #[test]
    fn hard_links_link_links_themselves_and_stay_inside() {
        use std::os::unix::fs::MetadataExt;
        let (dir, target, state) = setup();
        let outside = dir.path().join("outside");
        std::os::unix::fs::symlink(&outside, target.join("link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", target.join("lib/abs")).unwrap();
        for fs in both(&target, &state) {
            fs.hard_link(&target.join("lib/a.txt"), &state.join("a"))
                .unwrap();
            let ino = |p: &Path| std::fs::symlink_metadata(p).unwrap().ino();
            assert_eq!(ino(&state.join("a")), ino(&target.join("lib/a.txt")));
            let error = fs
                .hard_link(&target.join("lib/a.txt"), &state.join("a"))
                .unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
            // A link is linked itself, never what it points to.
            fs.hard_link(&target.join("lib/abs"), &state.join("l"))
                .unwrap();
            let meta = std::fs::symlink_metadata(state.join("l")).unwrap();
            assert!(meta.file_type().is_symlink());
            for (from, to) in [
                (target.join("link/x.txt"), state.join("x")),
                (target.join("lib/a.txt"), target.join("link/y.txt")),
                (outside.join("x.txt"), state.join("x")),
            ] {
                let error = fs.hard_link(&from, &to).unwrap_err();
                assert!(is_unsafe(&error), "{}: {error}", from.display());
            }
            std::fs::remove_file(state.join("a")).unwrap();
            std::fs::remove_file(state.join("l")).unwrap();
        }
        assert!(!outside.join("y.txt").exists());
    }

    #[test]
    fn folders_and_files_get_their_final_mode() {
        let (_dir, target, state) = setup();
        let fs = RealFs::confined(&target, &state);
        fs.create_dir(&target.join("d"), 0o750).unwrap();
        assert_eq!(fs.metadata(&target.join("d")).unwrap().unwrap().mode, 0o750);
        drop(fs.create(&target.join("d/run"), true).unwrap());
        let meta = fs.metadata(&target.join("d/run")).unwrap().unwrap();
        assert_eq!((meta.kind, meta.mode), (FileKind::File, 0o755));
        assert!(fs.space(&target.join("not-yet")).is_err());
        assert!(fs.space(&target).unwrap().block_size >= 512);
    }

    #[test]
    fn remove_tree_removes_links_never_what_they_point_to() {
        let (dir, target, state) = setup();
        let outside = dir.path().join("outside");
        for fs in both(&target, &state) {
            std::fs::create_dir_all(state.join("backup/tx")).unwrap();
            std::os::unix::fs::symlink(&outside, state.join("backup/tx/link")).unwrap();
            remove_tree(&fs, &state.join("backup")).unwrap();
            assert!(!state.join("backup").exists());
        }
        assert!(outside.join("x.txt").exists());
    }
}
