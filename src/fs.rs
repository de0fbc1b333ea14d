//! The narrow filesystem seam: every call the transaction and recovery make.
//!
//! [`Fs`] lists the few operations an update needs, so that a simulated filesystem can stand
//! in for the real one and crash an update at every step (see the crash-enumeration tests).
//! [`RealFs`] is the real thing: std plus `rustix` for directory fsync and `syncfs`.
//!
//! All paths are absolute. Operations never follow a symlink in the last component
//! (`metadata` is `lstat`, `rename` moves the link itself).

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// What a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    fn open(&self, path: &Path) -> io::Result<Box<dyn Read + Send>>;
    /// The target of a symbolic link, as bytes.
    fn read_link(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Creates a new file (fails if `path` exists) with mode 0644, or 0755 if `executable`.
    fn create(&self, path: &Path, executable: bool) -> io::Result<Box<dyn WriteFile>>;
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

/// The real filesystem.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealFs;

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

fn meta_of(m: &fs::Metadata) -> Meta {
    let ft = m.file_type();
    let kind = if ft.is_file() {
        FileKind::File
    } else if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_symlink() {
        FileKind::Symlink
    } else {
        FileKind::Other
    };
    Meta {
        kind,
        len: m.len(),
        executable: m.mode() & 0o100 != 0,
        mode: m.mode() & 0o7777,
        dev: m.dev(),
    }
}

impl Fs for RealFs {
    fn metadata(&self, path: &Path) -> io::Result<Option<Meta>> {
        match fs::symlink_metadata(path) {
            Ok(m) => Ok(Some(meta_of(&m))),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path)? {
            names.push(entry?.file_name());
        }
        names.sort();
        Ok(names)
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn Read + Send>> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path)?;
        Ok(Box::new(file))
    }

    fn read_link(&self, path: &Path) -> io::Result<Vec<u8>> {
        use std::os::unix::ffi::OsStringExt;
        Ok(fs::read_link(path)?.into_os_string().into_vec())
    }

    fn create(&self, path: &Path, executable: bool) -> io::Result<Box<dyn WriteFile>> {
        let mode = if executable { 0o755 } else { 0o644 };
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)?;
        // The umask may have masked bits off; the release's mode is what must land.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        Ok(Box::new(RealFile(file)))
    }

    fn symlink(&self, target: &[u8], link: &Path) -> io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), link)
    }

    fn create_dir(&self, path: &Path, mode: u32) -> io::Result<()> {
        fs::create_dir(path)?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn sync_fs(&self, path: &Path) -> io::Result<()> {
        let dir = File::open(path)?;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            rustix::fs::syncfs(&dir)?;
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            // No syncfs outside Linux: sync(2) flushes every filesystem, which covers ours.
            rustix::fs::sync();
            dir.sync_all()?;
        }
        Ok(())
    }

    fn space(&self, path: &Path) -> io::Result<Space> {
        let st = rustix::fs::statvfs(path)?;
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
