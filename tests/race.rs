//! The application changes the target while ota downloads (a stalled download holds the
//! update open): ota never writes, renames or deletes anything outside the target, never
//! overwrites or removes what it did not expect, and rolls back naming the path. A file of
//! the user's at a path the release ships is kept, never destroyed.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ota::config::SourceConfig;
use ota::fs::RealFs;
use ota::source::GitHub;
use ota::{Error, Outcome, UpdateOptions, Updater};
use ota_serve::Server;
use ota_serve::fault::{Action, Fault};

use crate::util::{Device, GitRepo, Node, Tree, noise, read_tree, serve};

/// v1.0.0 installed on a device; v2.0.0 published: the big file changes (its download
/// stalls), `lib/a.py` changes, `lib/b.py` goes, `gone/x.txt` goes (emptying `gone/`), and
/// `lib/new.py`, `newdir/n.py` and `extra.cfg` are added.
struct Setup {
    repo: GitRepo,
    server: Server,
    device: Device,
    /// A folder beside the target that ota must never touch.
    outside: std::path::PathBuf,
}

fn setup() -> Setup {
    let mut repo = GitRepo::new();
    repo.write("data/big.bin", noise(300_000, 1))
        .write("main.py", "v1\n")
        .write("lib/a.py", "a1\n")
        .write("lib/b.py", "b1\n")
        .write("gone/x.txt", "x\n");
    repo.commit("v1");
    repo.tag("v1.0.0");
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    device.ota_expect(&["update"], 0);
    repo.write("data/big.bin", noise(300_000, 2))
        .write("main.py", "v2\n")
        .write("lib/a.py", "a2\n")
        .write("lib/new.py", "new\n")
        .write("newdir/n.py", "n\n")
        .write("extra.cfg", "release's\n")
        .remove("lib/b.py")
        .remove("gone/x.txt");
    repo.commit("v2");
    repo.tag("v2.0.0");
    // The big file stalls after 100 kB: the update is held in its download.
    server.set_faults(vec![
        Fault::new(
            "*/big.bin",
            Action::Stall {
                after: 100_000,
                pause: Duration::from_millis(500),
            },
        )
        .times(1),
    ]);
    let outside = device.home().join("outside");
    std::fs::create_dir_all(outside.join("sub")).unwrap();
    std::fs::write(outside.join("a.py"), "precious a\n").unwrap();
    std::fs::write(outside.join("b.py"), "precious b\n").unwrap();
    std::fs::write(outside.join("sub/c.txt"), "precious c\n").unwrap();
    Setup {
        repo,
        server,
        device,
        outside,
    }
}

impl Setup {
    /// Runs the update through the library with `fs`, calling `change` once, from the
    /// download, as soon as the first bytes are staged (the big file then stalls).
    fn update_with(
        &self,
        fs: RealFs,
        change: impl Fn() + Send + Sync + 'static,
    ) -> Result<Outcome, Error> {
        let config = self.device.load_config();
        let SourceConfig::Github(github) = &config.source else {
            panic!("a GitHub source")
        };
        let source = Box::new(GitHub::new(github, &config.network));
        let mut updater = Updater::with_parts(config, source, Box::new(fs));
        let done = AtomicBool::new(false);
        updater.on_progress(move |p| {
            if p.bytes_done > 0
                && p.files_done < p.files_total
                && !done.swap(true, Ordering::SeqCst)
            {
                change();
            }
        });
        let result = updater.update(UpdateOptions::default());
        assert!(
            self.server
                .stats()
                .log
                .iter()
                .any(|r| r.path.ends_with("big.bin")),
            "the big file was downloaded"
        );
        result
    }

    fn update(&self, change: impl Fn() + Send + Sync + 'static) -> Result<Outcome, Error> {
        self.update_with(confined(&self.device), change)
    }

    fn outside_tree(&self) -> Tree {
        read_tree(&self.outside)
    }
}

fn confined(device: &Device) -> RealFs {
    let config = device.load_config();
    RealFs::confined(&config.target_dir, &config.state_dir)
}

/// The v1 tree with `edit` applied.
fn old_tree_with(s: &Setup, edit: impl FnOnce(&mut Tree)) -> Tree {
    let mut tree = s.repo.snapshot("v1.0.0");
    edit(&mut tree);
    tree
}

fn file(text: &str) -> Node {
    Node::File(text.as_bytes().to_vec(), false)
}

/// Finding 1 (a): `lib` becomes a link to a folder outside the target during the download.
fn a_folder_swapped_for_a_link_outside(walk_only: bool) {
    let s = setup();
    let target = s.device.target.clone();
    let outside = s.outside.clone();
    let before = s.outside_tree();
    let fs = match walk_only {
        true => confined(&s.device).with_component_walk(),
        false => confined(&s.device),
    };
    let error = s
        .update_with(fs, move || {
            std::fs::remove_dir_all(target.join("lib")).unwrap();
            std::os::unix::fs::symlink(&outside, target.join("lib")).unwrap();
        })
        .unwrap_err();
    assert_eq!(error.kind(), "unsafe_path", "{error}");
    let message = error.to_string();
    assert!(message.contains("lib/a.py"), "{message}");
    assert_eq!(
        s.outside_tree(),
        before,
        "nothing outside the target changed"
    );
    let expected = old_tree_with(&s, |t| {
        t.retain(|path, _| !path.starts_with("lib/"));
        t.insert("lib".into(), Node::Link(s.outside.to_str().unwrap().into()));
    });
    assert_eq!(
        s.device.tree(),
        expected,
        "rolled back, the app's link left"
    );
    assert!(
        s.device.leftovers().is_empty(),
        "{:?}",
        s.device.leftovers()
    );
    assert_eq!(s.device.last_error().unwrap()["kind"], "unsafe_path");
}

#[test]
fn a_folder_swapped_for_a_link_outside_the_target_is_never_written_through() {
    a_folder_swapped_for_a_link_outside(false);
}

#[test]
fn a_folder_swapped_for_a_link_is_refused_by_the_component_walk_too() {
    a_folder_swapped_for_a_link_outside(true);
}

/// Finding 1 (b): a file appears at a path the update adds.
#[test]
fn a_file_created_at_a_path_being_added_is_never_overwritten() {
    let s = setup();
    let before = s.outside_tree();
    let target = s.device.target.clone();
    let error = s
        .update(move || std::fs::write(target.join("lib/new.py"), "the app's\n").unwrap())
        .unwrap_err();
    assert_eq!(error.kind(), "unsafe_path", "{error}");
    assert!(error.to_string().contains("lib/new.py"), "{error}");
    let expected = old_tree_with(&s, |t| {
        t.insert("lib/new.py".into(), file("the app's\n"));
    });
    assert_eq!(s.device.tree(), expected);
    assert_eq!(s.outside_tree(), before);
    assert!(
        s.device.leftovers().is_empty(),
        "{:?}",
        s.device.leftovers()
    );
}

/// A folder the update creates appears, with the app's files, during the download.
#[test]
fn a_folder_created_where_ota_creates_one_is_left_with_its_files() {
    let s = setup();
    let target = s.device.target.clone();
    let error = s
        .update(move || {
            std::fs::create_dir(target.join("newdir")).unwrap();
            std::fs::write(target.join("newdir/own.txt"), "the app's\n").unwrap();
        })
        .unwrap_err();
    assert_eq!(error.kind(), "unsafe_path", "{error}");
    assert!(error.to_string().contains("newdir"), "{error}");
    let expected = old_tree_with(&s, |t| {
        t.insert("newdir/own.txt".into(), file("the app's\n"));
    });
    assert_eq!(s.device.tree(), expected);
}

/// Finding 1 (c): a file being replaced becomes a folder with contents.
#[test]
fn a_file_replaced_by_a_folder_keeps_the_folder_and_its_contents() {
    let s = setup();
    let before = s.outside_tree();
    let target = s.device.target.clone();
    let error = s
        .update(move || {
            std::fs::remove_file(target.join("lib/a.py")).unwrap();
            std::fs::create_dir(target.join("lib/a.py")).unwrap();
            std::fs::write(target.join("lib/a.py/data.txt"), "the app's data\n").unwrap();
        })
        .unwrap_err();
    assert_eq!(error.kind(), "unsafe_path", "{error}");
    assert!(error.to_string().contains("lib/a.py"), "{error}");
    let expected = old_tree_with(&s, |t| {
        t.remove("lib/a.py");
        t.insert("lib/a.py/data.txt".into(), file("the app's data\n"));
    });
    assert_eq!(
        s.device.tree(),
        expected,
        "the folder and its contents stay"
    );
    assert_eq!(s.outside_tree(), before);
}

/// Finding 6: a folder emptied by deletes is moved into the backup, not removed and
/// recreated: a rollback brings back the very folder, with its mode (and owner).
#[test]
fn a_rollback_brings_back_an_emptied_folder_with_its_mode_and_owner() {
    let s = setup();
    let gone = s.device.target.join("gone");
    std::fs::set_permissions(&gone, std::fs::Permissions::from_mode(0o750)).unwrap();
    let as_root = rustix::process::geteuid().is_root();
    if as_root {
        // An owner that is not ota's (root's): a recreated folder would be root's.
        rustix::fs::chown(
            &gone,
            Some(rustix::process::Uid::from_raw(4242)),
            Some(rustix::process::Gid::from_raw(4343)),
        )
        .unwrap();
    }
    let before = std::fs::metadata(&gone).unwrap();
    let target = s.device.target.clone();
    // Placing fails (a file appeared at an added path) after `gone/` was displaced.
    s.update(move || std::fs::write(target.join("lib/new.py"), "the app's\n").unwrap())
        .unwrap_err();
    let after = std::fs::metadata(&gone).unwrap();
    assert_eq!(after.mode() & 0o7777, 0o750);
    assert_eq!(after.ino(), before.ino(), "the same folder came back");
    assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
    if as_root {
        assert_eq!((after.uid(), after.gid()), (4242, 4343));
    }
    assert_eq!(
        s.device.tree()["gone/x.txt"],
        file("x\n"),
        "its file came back into it"
    );
}

/// Finding 8: a file of the user's at a path the release ships is kept under the state
/// folder after the commit, listed in the report and in `ota status`.
#[test]
fn a_users_file_at_a_shipped_path_is_kept_and_listed() {
    let s = setup();
    s.server.clear_faults();
    let extra = s.device.target.join("extra.cfg");
    std::fs::write(&extra, "the user's\n").unwrap();
    let outcome = s.update(|| {}).unwrap();
    let Outcome::Updated(report) = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(s.device.tree(), s.repo.snapshot("v2.0.0"));
    assert_eq!(report.kept.len(), 1, "{:?}", report.kept);
    let (path, kept_at) = &report.kept[0];
    assert_eq!(path.as_str(), "extra.cfg");
    assert!(kept_at.starts_with(s.device.target.join(".ota/kept")));
    assert!(kept_at.ends_with("extra.cfg"));
    assert_eq!(std::fs::read_to_string(kept_at).unwrap(), "the user's\n");

    let status = s.device.ota_expect(&["status"], 0);
    assert!(status.contains(&kept_at.display().to_string()), "{status}");
    let json: serde_json::Value =
        serde_json::from_str(&s.device.ota_expect(&["status", "--json"], 0)).unwrap();
    assert_eq!(json["kept"][0], kept_at.to_str().unwrap());
    assert!(
        s.device.leftovers().is_empty(),
        "{:?}",
        s.device.leftovers()
    );
}

/// Finding 8: when the update rolls back, the user's file is back at its path.
#[test]
fn a_users_file_at_a_shipped_path_is_restored_by_a_rollback() {
    let s = setup();
    let extra = s.device.target.join("extra.cfg");
    std::fs::write(&extra, "the user's\n").unwrap();
    let target = s.device.target.clone();
    s.update(move || std::fs::write(target.join("lib/new.py"), "the app's\n").unwrap())
        .unwrap_err();
    assert_eq!(std::fs::read_to_string(&extra).unwrap(), "the user's\n");
    assert!(!s.device.target.join(".ota/kept").exists());
    let status = s.device.ota_expect(&["status", "--json"], 0);
    let json: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(json["kept"], serde_json::json!([]));
}

/// A path outside both roots is refused by the filesystem itself.
#[test]
fn the_confined_filesystem_refuses_paths_outside_its_roots() {
    use ota::fs::Fs;
    let s = setup();
    let fs = confined(&s.device);
    let outside: &Path = &s.outside;
    let error = fs.remove_file(&outside.join("a.py")).unwrap_err();
    assert!(ota::fs::is_unsafe(&error), "{error}");
    assert!(error.to_string().contains("outside"), "{error}");
    let error = fs
        .metadata(&s.device.target.join("lib/../../outside/a.py"))
        .unwrap_err();
    assert!(ota::fs::is_unsafe(&error), "{error}");
    assert!(outside.join("a.py").exists());
}
