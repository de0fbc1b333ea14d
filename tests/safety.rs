//! Failures mid-update: the target ends as exactly the old or exactly the new release.

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ota::config::SourceConfig;
use ota::fs::{Fs, Meta, ReadFile, RealFs, Space, WriteFile};
use ota::source::GitHub;
use ota::{UpdateOptions, Updater};

use crate::util::{Device, GitRepo, serve};

/// The real filesystem, until the `n`-th change (create, write, rename, remove, mkdir,
/// sync): that call and every later one fail, as if the process had been killed right there
/// (nothing after it reaches the disk).
struct KilledAt {
    real: RealFs,
    changes_left: AtomicUsize,
    dead: AtomicBool,
}

impl KilledAt {
    fn new(n: usize, real: RealFs) -> KilledAt {
        KilledAt {
            real,
            changes_left: AtomicUsize::new(n),
            dead: AtomicBool::new(false),
        }
    }

    fn alive(&self) -> io::Result<()> {
        if self.dead.load(Ordering::SeqCst) {
            Err(io::Error::other("killed"))
        } else {
            Ok(())
        }
    }

    /// Counts one change; the `n`-th one dies.
    fn change(&self) -> io::Result<()> {
        self.alive()?;
        if self.changes_left.fetch_sub(1, Ordering::SeqCst) == 0 {
            self.dead.store(true, Ordering::SeqCst);
            return Err(io::Error::other("killed"));
        }
        Ok(())
    }
}

impl Fs for KilledAt {
    fn metadata(&self, path: &Path) -> io::Result<Option<Meta>> {
        self.alive()?;
        self.real.metadata(path)
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        self.alive()?;
        self.real.read_dir(path)
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        self.alive()?;
        self.real.open(path)
    }
    fn read_link(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.alive()?;
        self.real.read_link(path)
    }
    fn create(&self, path: &Path, executable: bool) -> io::Result<Box<dyn WriteFile>> {
        self.change()?;
        self.real.create(path, executable)
    }
    fn append(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        self.change()?;
        self.real.append(path)
    }
    fn symlink(&self, target: &[u8], link: &Path) -> io::Result<()> {
        self.change()?;
        self.real.symlink(target, link)
    }
    fn create_dir(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.change()?;
        self.real.create_dir(path, mode)
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.change()?;
        self.real.remove_dir(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.change()?;
        self.real.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.change()?;
        self.real.rename(from, to)
    }
    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.change()?;
        self.real.rename_noreplace(from, to)
    }
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.change()?;
        self.real.hard_link(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.change()?;
        self.real.sync_dir(path)
    }
    fn sync_fs(&self, path: &Path) -> io::Result<()> {
        self.change()?;
        self.real.sync_fs(path)
    }
    fn space(&self, path: &Path) -> io::Result<Space> {
        self.alive()?;
        self.real.space(path)
    }
}

/// The real filesystem, confined to the device's target and state folder (as `Updater::new`
/// makes it).
fn real_fs(device: &Device) -> RealFs {
    let config = device.load_config();
    RealFs::confined(&config.target_dir, &config.state_dir)
}

fn updater(device: &Device, fs: Box<dyn Fs>) -> Updater {
    let config = device.load_config();
    let SourceConfig::Github(github) = &config.source else {
        panic!("a GitHub source")
    };
    let source = Box::new(GitHub::new(github, &config.network));
    Updater::with_parts(config, source, fs)
}

#[test]
fn a_kill_at_any_step_recovers_the_exact_old_or_new_tree() {
    let mut repo = GitRepo::new();
    repo.write("main.py", "v1\n")
        .write("lib/a.py", "a1\n")
        .write("lib/b.py", "b\n")
        .write("gone/x.txt", "x\n")
        .write_exec("run", "#!/bin/sh\n");
    repo.commit("v1");
    repo.tag("v1.0.0");
    let old = repo.snapshot("v1.0.0");
    repo.write("main.py", "v2\n")
        .write("lib/a.py", "a2 is longer\n")
        .write("new/deep/c.py", "c\n")
        .remove("gone/x.txt");
    repo.commit("v2");
    repo.tag("v2.0.0");
    let new = repo.snapshot("v2.0.0");
    let server = serve(repo.path());

    let mut saw_old = 0;
    let mut saw_new = 0;
    for kill_at in 0.. {
        let device = Device::new(&server, "tag = \"v1.0.0\"");
        device.ota_expect(&["update"], 0);
        device.edit_config("tag = \"v1.0.0\"", "");

        let killed = KilledAt::new(kill_at, real_fs(&device));
        let result = updater(&device, Box::new(killed)).update(UpdateOptions::default());
        if result.is_ok() {
            // Past the last change: the update finished without being killed.
            assert_eq!(device.tree(), new);
            assert!(kill_at > 10, "the kill points were exercised");
            break;
        }
        // The next command recovers first.
        let recovered = updater(&device, Box::new(real_fs(&device)))
            .recover()
            .unwrap();
        let tree = device.tree();
        if tree == old {
            saw_old += 1;
        } else {
            assert_eq!(
                tree, new,
                "kill at change {kill_at}: neither old nor new ({recovered:?})"
            );
            saw_new += 1;
        }
        assert!(
            device.leftovers().is_empty(),
            "kill at change {kill_at}: {:?}",
            device.leftovers()
        );
        let status = updater(&device, Box::new(real_fs(&device)))
            .status()
            .unwrap();
        let on_disk = if tree == old { "v1.0.0" } else { "v2.0.0" };
        assert_eq!(status.installed.unwrap().release.ref_name, on_disk);
        // And a fresh update completes.
        device.ota_expect(&["update"], 0);
        assert_eq!(device.tree(), new);
    }
    assert!(saw_old > 0 && saw_new > 0, "old {saw_old}, new {saw_new}");
}

/// The real filesystem, with a hook run before every rename and every file creation: an
/// error from it fails that call.
struct Hooked<R, C> {
    real: RealFs,
    on_rename: R,
    on_create: C,
}

impl<R, C> Fs for Hooked<R, C>
where
    R: Fn(&Path, &Path) -> io::Result<()> + Send + Sync,
    C: Fn(&Path) -> io::Result<()> + Send + Sync,
{
    fn metadata(&self, path: &Path) -> io::Result<Option<Meta>> {
        self.real.metadata(path)
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        self.real.read_dir(path)
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        self.real.open(path)
    }
    fn read_link(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.real.read_link(path)
    }
    fn create(&self, path: &Path, executable: bool) -> io::Result<Box<dyn WriteFile>> {
        (self.on_create)(path)?;
        self.real.create(path, executable)
    }
    fn append(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        self.real.append(path)
    }
    fn symlink(&self, target: &[u8], link: &Path) -> io::Result<()> {
        self.real.symlink(target, link)
    }
    fn create_dir(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.real.create_dir(path, mode)
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.real.remove_dir(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.real.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        (self.on_rename)(from, to)?;
        self.real.rename(from, to)
    }
    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        (self.on_rename)(from, to)?;
        self.real.rename_noreplace(from, to)
    }
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        (self.on_create)(to)?;
        self.real.hard_link(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.real.sync_dir(path)
    }
    fn sync_fs(&self, path: &Path) -> io::Result<()> {
        self.real.sync_fs(path)
    }
    fn space(&self, path: &Path) -> io::Result<Space> {
        self.real.space(path)
    }
}

/// A device with v1.0.0 installed and v2.0.0 (main.py changed) published.
fn v1_installed_v2_published() -> (GitRepo, ota_serve::Server, Device) {
    let mut repo = GitRepo::new();
    repo.write("main.py", "v1\n").write("lib/a.py", "a\n");
    repo.commit("v1");
    repo.tag("v1.0.0");
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    device.ota_expect(&["update"], 0);
    repo.write("main.py", "v2\n");
    repo.commit("v2");
    repo.tag("v2.0.0");
    (repo, server, device)
}

/// Placing a staged file fails, and so does putting the displaced old file back: the error
/// must not claim the old release is back, and must send the user to `ota recover`, which
/// then restores it.
#[test]
fn a_failed_rollback_says_the_old_release_is_not_back_and_recover_brings_it_back() {
    let (repo, _server, device) = v1_installed_v2_published();
    let old = repo.snapshot("v1.0.0");
    let stage = device.target.join(".ota/stage");
    let backup = device.target.join(".ota/backup");
    let fs = Hooked {
        real: real_fs(&device),
        on_rename: move |from: &Path, _: &Path| match from.starts_with(&stage)
            || from.starts_with(&backup)
        {
            true => Err(io::Error::other("injected failure")),
            false => Ok(()),
        },
        on_create: |_: &Path| Ok(()),
    };
    let error = updater(&device, Box::new(fs))
        .update(UpdateOptions::default())
        .unwrap_err();
    let message = error.to_string();
    assert!(!message.contains("was restored"), "{message}");
    assert!(message.contains("could NOT be restored"), "{message}");
    assert!(message.contains("`ota recover`"), "{message}");
    assert_eq!(error.kind(), "rollback_failed");
    assert_ne!(device.tree(), old, "the failure really left a broken tree");
    assert_eq!(device.last_error().unwrap()["kind"], "rollback_failed");

    let status = device.ota_expect(&["status"], 0);
    assert!(status.contains("pending:"), "{status}");
    let out = device.ota_expect(&["recover"], 0);
    assert!(out.contains("undid the interrupted update"), "{out}");
    assert_eq!(device.tree(), old);
    assert!(
        device.last_error().is_none(),
        "a successful recover clears it"
    );
}

/// `last_error.json` is written by the process holding the lock, so no other ota process
/// can be reading or replacing it at that moment.
#[test]
fn last_error_is_written_while_the_lock_is_held() {
    let (repo, _server, device) = v1_installed_v2_published();
    let stage = device.target.join(".ota/stage");
    let lock = device.target.join(".ota/lock");
    let checked = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = std::sync::Arc::clone(&checked);
    let fs = Hooked {
        real: real_fs(&device),
        // Fail the placement; the rollback works, and the failure is recorded.
        on_rename: move |from: &Path, _: &Path| match from.starts_with(&stage) {
            true => Err(io::Error::other("injected failure")),
            false => Ok(()),
        },
        on_create: move |path: &Path| {
            if path.file_name() == Some("last_error.json.tmp".as_ref()) {
                // A second open file description cannot take an flock someone holds.
                let file = std::fs::File::open(&lock).unwrap();
                let free =
                    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                        .is_ok();
                assert!(!free, "last_error.json is written without the lock");
                seen.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        },
    };
    let error = updater(&device, Box::new(fs))
        .update(UpdateOptions::default())
        .unwrap_err();
    assert!(
        error.to_string().contains("the old release was restored"),
        "{error}"
    );
    assert_eq!(
        checked.load(Ordering::SeqCst),
        1,
        "last_error.json was written"
    );
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));
    assert_eq!(device.last_error().unwrap()["phase"], "apply");
}
