//! Whether the state folder is ota's, decided before ota reads, writes or runs anything in
//! it.
//!
//! ota writes its lock, cache and errors into the state folder and carries out the journal
//! it finds there, usually as root, while the application it updates can write into the
//! target that holds `.ota`. So the folder is used only if it is ota's:
//! - a real folder, not a symbolic link (checked with `lstat`, then opened `O_NOFOLLOW`, and
//!   the facts below read from that open folder, so they describe what ota then uses);
//! - owned by the user ota runs as (its effective uid);
//! - not writable by group or others;
//! - marked as ota's by [`MARKER`], which ota writes when it creates the folder (mode 0700).
//!
//! An unmarked folder that passes the first three checks is adopted (the marker is
//! written) when it holds only names ota creates (`state.json`, `journal.json`, `stage/`,
//! …, with only transaction folders under `stage/` and `backup/`): an empty folder made
//! for ota, or a state folder an older ota made. Any other name means the folder is
//! someone else's, and it is refused.
//!
//! These checks and the lock talk to the operating system directly, not through the
//! [`Fs`](crate::fs::Fs) seam: they are about the real owner and mode of a real folder.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};

use crate::state::{self, MARKER};
use crate::transaction::is_txid;

/// The marker's first line; the rest explains it to whoever finds the file.
const SIGNATURE: &str = "Signature: ota state folder\n";
const MARKER_TEXT: &str = "Signature: ota state folder\n\
    # This folder is ota's state folder: its journal, backups and staged downloads.\n\
    # ota uses a folder only if this file is in it, the folder is owned by the user ota\n\
    # runs as and no one else can write to it. Do not put other files here.\n";

/// What a command may do to the state folder while checking it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Create it if missing (mode 0700, marked); adopt an older ota's folder.
    Create,
    /// Use it if it exists; adopt an older ota's folder.
    Use,
    /// Look only (`status`, `check`): nothing is written, an adoptable folder counts as
    /// ota's.
    Inspect,
}

/// The state folder, open, and found to be ota's.
#[derive(Debug)]
pub(crate) struct TrustedDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl TrustedDir {
    /// Opens (creating it 0600 if missing) the lock file in the folder, never through a
    /// symbolic link.
    pub(crate) fn open_lock(&self) -> io::Result<File> {
        let flags = OFlags::CREATE | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, "lock", flags, Mode::from_raw_mode(0o600))?;
        Ok(File::from(fd))
    }

    /// The folder's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Checks the state folder at `root` (see the module docs); `Ok(None)` when it does not
/// exist and `access` is not [`Access::Create`].
pub(crate) fn open(root: &Path, access: Access) -> Result<Option<TrustedDir>, TrustError> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| TrustError::Io {
            action,
            path,
            source,
        }
    };
    let mut created = false;
    let meta = match std::fs::symlink_metadata(root) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound && access == Access::Create => {
            if let Some(parent) = root.parent() {
                std::fs::create_dir_all(parent).map_err(io("create", parent))?;
            }
            match std::fs::DirBuilder::new().mode(0o700).create(root) {
                Ok(()) => created = true,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io("create", root)(e)),
            }
            std::fs::symlink_metadata(root).map_err(io("inspect", root))?
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("inspect", root)(e)),
    };
    if meta.file_type().is_symlink() {
        let points_to = std::fs::read_link(root).unwrap_or_default();
        return Err(TrustError::Symlink {
            path: root.to_owned(),
            points_to,
        });
    }
    if !meta.is_dir() {
        return Err(TrustError::NotAFolder {
            path: root.to_owned(),
        });
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd =
        rustix::fs::open(root, flags, Mode::empty()).map_err(|e| io("open", root)(e.into()))?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| io("inspect", root)(e.into()))?;
    let euid = rustix::process::geteuid().as_raw();
    if stat.st_uid != euid {
        return Err(TrustError::Owner {
            path: root.to_owned(),
            owner: stat.st_uid,
            euid,
        });
    }
    let mode = stat.st_mode & 0o7777;
    if created && mode != 0o700 {
        // The umask may have taken bits off 0700; ota needs exactly 0700.
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700))
            .map_err(|e| io("set the mode of", root)(e.into()))?;
    } else if mode & 0o022 != 0 {
        return Err(TrustError::Writable {
            path: root.to_owned(),
            mode,
        });
    }
    let dir = TrustedDir {
        fd,
        path: root.to_owned(),
    };
    if !created && has_marker(&dir)? {
        return Ok(Some(dir));
    }
    if !created {
        if let Some(name) = first_foreign_name(&dir)? {
            return Err(TrustError::Foreign {
                path: root.to_owned(),
                name,
            });
        }
        if access == Access::Inspect {
            return Ok(Some(dir));
        }
        tracing::info!(
            "adopting {} as ota's state folder (made by an older ota): writing {MARKER}",
            root.display()
        );
    }
    write_marker(&dir)?;
    Ok(Some(dir))
}

/// Whether the folder holds ota's marker (a regular file starting with [`SIGNATURE`]).
fn has_marker(dir: &TrustedDir) -> Result<bool, TrustError> {
    let path = dir.path.join(MARKER);
    let io = |e: rustix::io::Errno| TrustError::Io {
        action: "read",
        path: path.clone(),
        source: e.into(),
    };
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = match rustix::fs::openat(&dir.fd, MARKER, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(false),
        Err(e) => return Err(io(e)),
    };
    let is_file = FileType::from_raw_mode(rustix::fs::fstat(&fd).map_err(io)?.st_mode)
        == FileType::RegularFile;
    let mut head = Vec::new();
    if is_file {
        File::from(fd)
            .take(SIGNATURE.len() as u64)
            .read_to_end(&mut head)
            .map_err(|source| TrustError::Io {
                action: "read",
                path: path.clone(),
                source,
            })?;
    }
    match head == SIGNATURE.as_bytes() {
        true => Ok(true),
        false => Err(TrustError::Foreign {
            path: dir.path.clone(),
            name: format!("{MARKER} (not ota's marker)"),
        }),
    }
}

/// The first name in the folder that ota does not create, if any (`stage/x` for one in
/// `stage/`).
fn first_foreign_name(dir: &TrustedDir) -> Result<Option<String>, TrustError> {
    for name in list(&dir.fd, &dir.path)? {
        let Some(text) = name.to_str().filter(|n| state::is_own_name(n)) else {
            return Ok(Some(name.to_string_lossy().into_owned()));
        };
        if !matches!(text, "stage" | "backup") {
            continue;
        }
        let path = dir.path.join(text);
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let Ok(sub) = rustix::fs::openat(&dir.fd, text, flags, Mode::empty()) else {
            return Ok(Some(format!("{text} (not a folder)")));
        };
        if let Some(inner) = list(&sub, &path)?
            .into_iter()
            .find(|n| !n.to_str().is_some_and(is_txid))
        {
            return Ok(Some(format!("{text}/{}", inner.to_string_lossy())));
        }
    }
    Ok(None)
}

/// The names in an open folder, without `.` and `..`, sorted.
fn list(fd: &OwnedFd, path: &Path) -> Result<Vec<std::ffi::OsString>, TrustError> {
    let io = |e: rustix::io::Errno| TrustError::Io {
        action: "list",
        path: path.to_owned(),
        source: e.into(),
    };
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(fd).map_err(io)? {
        let name = OsStr::from_bytes(entry.map_err(io)?.file_name().to_bytes()).to_owned();
        if name != "." && name != ".." {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Writes the marker (0600) into the folder.
fn write_marker(dir: &TrustedDir) -> Result<(), TrustError> {
    let path = dir.path.join(MARKER);
    let io = |source: io::Error| TrustError::Io {
        action: "write",
        path: path.clone(),
        source,
    };
    let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(&dir.fd, MARKER, flags, Mode::from_raw_mode(0o600))
        .map_err(|e| io(e.into()))?;
    let mut file = File::from(fd);
    file.write_all(MARKER_TEXT.as_bytes()).map_err(io)?;
    // Durable, so that a power cut cannot leave a marked-looking folder without it: an
    // unmarked folder with ota's names only is adopted again anyway, but this keeps the
    // marker's presence a plain fact.
    file.sync_all().map_err(io)
}

/// The state folder is not ota's (or cannot be checked).
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// A symbolic link where the state folder should be.
    #[error(
        "the state folder {} is a symbolic link (to {}): ota only uses a real folder it \
         created, so that nothing it writes or runs can be sent elsewhere. Nothing was written \
         or run. Remove the link (ota creates the folder on the next update), or set \
         `state_dir` to a real folder",
        path.display(), points_to.display()
    )]
    Symlink {
        /// The state folder's path.
        path: PathBuf,
        /// Where the link points.
        points_to: PathBuf,
    },
    /// Something other than a folder.
    #[error(
        "the state folder {} is not a folder. Nothing was written or run. Move it away (ota \
         creates the folder on the next update), or set `state_dir` elsewhere",
        path.display()
    )]
    NotAFolder {
        /// The state folder's path.
        path: PathBuf,
    },
    /// Owned by another user.
    #[error(
        "the state folder {} belongs to user {owner}, but ota runs as user {euid}: that user \
         could plant a journal there for ota to carry out. Nothing was written or run. If the \
         folder is ota's, give it to user {euid} (`chown -R {euid} {}`); otherwise remove it \
         or set `state_dir` elsewhere",
        path.display(), path.display()
    )]
    Owner {
        /// The state folder's path.
        path: PathBuf,
        /// Its owner's uid.
        owner: u32,
        /// The effective uid ota runs as.
        euid: u32,
    },
    /// Writable by group or others.
    #[error(
        "the state folder {} is writable by group or others (mode {mode:04o}): another user \
         could plant a journal there for ota to carry out. Nothing was written or run. If the \
         folder is ota's, run `chmod go-w {}`; otherwise remove it or set `state_dir` \
         elsewhere",
        path.display(), path.display()
    )]
    Writable {
        /// The state folder's path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Not marked as ota's, and holding something ota did not create.
    #[error(
        "the state folder {} is not ota's: it has no {MARKER} and holds {name}, which ota did \
         not create. ota deletes and carries out what it finds in its state folder, so it uses \
         only a new or empty folder, or one an older ota made. Nothing was written or run. Set \
         `state_dir` to a new or empty folder, or move {name} out of this one",
        path.display()
    )]
    Foreign {
        /// The state folder's path.
        path: PathBuf,
        /// The first name ota did not create.
        name: String,
    },
    /// The folder could not be created, opened or read.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What ota was doing.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

#[cfg(test)]
mod tests {
    use crate::state::is_own_name;
    use crate::transaction::is_txid;

    #[test]
    fn only_names_ota_creates_are_its_own() {
        for name in [
            "state.json",
            "journal.json.tmp",
            "cache.json.tmp",
            "lock",
            "stage",
        ] {
            assert!(is_own_name(name), "{name}");
        }
        for name in ["x.tmp", "lock.tmp", "state.json.bak", "Stage", ".ota", ""] {
            assert!(!is_own_name(name), "{name}");
        }
    }

    #[test]
    fn only_transaction_ids_are_swept() {
        assert!(is_txid("18a2b3c4d5e6f708-2a"));
        for name in [
            "foo",
            "18a2b3c4d5e6f708",
            "-2a",
            "18a2-",
            "18A2-2a",
            "1-2-3",
            "1-2.tmp",
        ] {
            assert!(!is_txid(name), "{name}");
        }
    }
}
