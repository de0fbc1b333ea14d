//! Folders that are never a target: the system's own, and home folders. ota replaces and
//! deletes the files it installs in its target, and refuses a release whose paths hold a
//! user's folder; in `/etc` or `/usr/bin` it would own system files. Checked when the config
//! is read, before anything is created.

use std::path::{Component, Path, PathBuf};

/// Folders refused as a target themselves (their sub-folders are fine: `/opt/app`).
const SYSTEM: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/media",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/var",
    "/var/backups",
    "/var/cache",
    "/var/lib",
    "/var/local",
    "/var/lock",
    "/var/log",
    "/var/mail",
    "/var/opt",
    "/var/run",
    "/var/spool",
    "/var/tmp",
    "/usr/local/bin",
    "/usr/local/etc",
    "/usr/local/include",
    "/usr/local/lib",
    "/usr/local/sbin",
    "/usr/local/share",
    "/usr/local/src",
];

/// Folders whose every direct sub-folder is refused too: `/usr/bin`, `/home/pi`.
const EVERY_CHILD: &[&str] = &["/usr", "/home"];

/// Virtual filesystems: nothing under them is a place for files.
const NOTHING_UNDER: &[&str] = &["/dev", "/proc", "/sys"];

/// The system or home folder `target` is, if it is one: as written, or once the symlinks
/// of its longest existing part are resolved (`/bin` is `/usr/bin` on Debian). `home` is
/// the user's home folder (`$HOME`).
pub(super) fn refused(target: &Path, home: Option<&Path>) -> Option<PathBuf> {
    let resolved = resolve(target);
    [Some(target), resolved.as_deref()]
        .into_iter()
        .flatten()
        .find(|path| is_refused(path, home))
        .map(Path::to_path_buf)
}

fn is_refused(path: &Path, home: Option<&Path>) -> bool {
    let home = home
        .filter(|home| home.is_absolute())
        .map(path_clean::clean);
    SYSTEM.iter().any(|s| path == Path::new(s))
        || EVERY_CHILD
            .iter()
            .any(|s| path.parent() == Some(Path::new(s)))
        || NOTHING_UNDER.iter().any(|s| path.starts_with(s))
        || home.is_some_and(|home| path == home || resolve(&home).is_some_and(|h| path == h))
}

/// `path` with the symlinks of its longest existing ancestor resolved, the rest appended;
/// `None` when nothing of it resolves.
fn resolve(path: &Path) -> Option<PathBuf> {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            let mut full = real;
            full.extend(rest.iter().rev());
            return Some(path_clean::clean(full));
        }
        match (existing.parent(), existing.components().next_back()) {
            (Some(parent), Some(Component::Normal(name))) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_and_home_folders_are_refused() {
        let home = Some(Path::new("/srv/users/me"));
        for path in [
            "/",
            "/etc",
            "/usr",
            "/usr/bin",
            "/usr/lib",
            "/usr/local",
            "/bin",
            "/sbin",
            "/lib",
            "/lib64",
            "/boot",
            "/dev",
            "/dev/shm",
            "/proc/1",
            "/sys/class",
            "/var",
            "/var/lib",
            "/run",
            "/home",
            "/home/pi",
            "/root",
            "/tmp",
            "/srv",
            "/opt",
            "/mnt",
            "/media",
            "/srv/users/me",
        ] {
            assert!(refused(Path::new(path), home).is_some(), "{path} accepted");
        }
        for path in [
            "/opt/app",
            "/srv/app",
            "/var/lib/app",
            "/home/pi/app",
            "/etc/app",
            "/tmp/x",
            "/usr/local/app",
            "/srv/users/me/app",
            "/data",
        ] {
            assert_eq!(refused(Path::new(path), home), None, "{path} refused");
        }
    }

    #[test]
    fn symlinks_are_resolved_where_the_path_exists() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("etc-link");
        std::os::unix::fs::symlink("/etc", &link).unwrap();
        assert_eq!(refused(&link, None), Some(PathBuf::from("/etc")));
        let link = dir.path().join("usr-link");
        std::os::unix::fs::symlink("/usr", &link).unwrap();
        assert_eq!(
            refused(&link.join("bin"), None),
            Some(PathBuf::from("/usr/bin"))
        );
        assert_eq!(refused(&link.join("local/app/new"), None), None);
        // A home folder reached through a link.
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        std::os::unix::fs::symlink(&home, dir.path().join("h")).unwrap();
        assert!(refused(&dir.path().join("h"), Some(&home)).is_some());
    }
}
