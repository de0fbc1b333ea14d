//! What a release and a config may ask for (issue 8, findings 3, 7, 8 and 9): each attack
//! on the real binary against `ota-serve` on loopback, refused or defused with nothing
//! outside the target changed and the old tree intact.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::util::{Device, GitRepo, exited, serve};

/// Every entry under `root`, `.ota` included: kind, mode and content (or link target).
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut all = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode();
            let what = if meta.file_type().is_symlink() {
                format!("link {:?}", std::fs::read_link(&path).unwrap())
            } else if meta.is_dir() {
                stack.push(path.clone());
                format!("dir {mode:o}")
            } else {
                let bytes = std::fs::read(&path).unwrap();
                format!(
                    "file {mode:o} {} {:?}",
                    meta.size(),
                    String::from_utf8_lossy(&bytes)
                )
            };
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            all.insert(rel, what);
        }
    }
    all
}

/// A repository whose v1.0.0 holds `main.py`.
fn good_v1() -> GitRepo {
    let mut repo = GitRepo::new();
    repo.write("main.py", "print(1)\n");
    repo.commit("v1");
    repo.tag("v1.0.0");
    repo
}

/// Installs v1.0.0, lets `hostile` change the repository into v2.0.0, and expects the
/// update to fail with an error holding every needle and the `kind`; the tree, the state
/// folder's records and everything beside the target stay as they were.
fn refused(hostile: impl FnOnce(&GitRepo), needles: &[&str], kind: &str) {
    let mut repo = good_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    device.ota_expect(&["update"], 0);
    let before = device.tree();
    let state = std::fs::read(device.target.join(".ota/state.json")).unwrap();
    let outside = |device: &Device| {
        let mut all = snapshot(device.home());
        all.retain(|path, _| !path.starts_with("app/.ota"));
        all
    };
    let around = outside(&device);

    repo.write("main.py", "print(2)\n");
    hostile(&repo);
    repo.commit("v2");
    repo.tag("v2.0.0");
    let out = device.ota_expect(&["update"], 1);
    for needle in needles {
        assert!(out.contains(needle), "the error says {needle:?}:\n{out}");
    }
    assert_eq!(device.last_error().unwrap()["kind"], kind, "{out}");
    assert_eq!(device.tree(), before, "nothing was written");
    assert_eq!(
        outside(&device),
        around,
        "nothing beside the target changed"
    );
    assert_eq!(
        std::fs::read(device.target.join(".ota/state.json")).unwrap(),
        state
    );
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
    // A dry run says the same, and changes nothing either.
    let all = snapshot(device.home());
    let out = device.ota_expect(&["update", "--dry-run"], 1);
    assert!(out.contains(needles[0]), "{out}");
    assert_eq!(snapshot(device.home()), all, "the dry run changed nothing");
}

/// Finding 3: `r -> .` makes `r/r/r/r/r` the target itself, so the four `..` after it climb
/// out; checked lexically, `etc_link/passwd` read /etc/passwd.
#[test]
fn a_link_that_leaves_through_the_release_own_links_is_refused() {
    refused(
        |repo| {
            repo.symlink("r", ".")
                .symlink("etc_link", "r/r/r/r/r/../../../../etc");
        },
        &[
            "symbolic link etc_link -> \"r/r/r/r/r/../../../../etc\" leads outside the target",
            "r -> \".\"",
            "nothing was changed",
        ],
        "unsafe_path",
    );
}

#[test]
fn a_link_through_a_link_to_a_parent_is_refused() {
    refused(
        |repo| {
            repo.symlink("lib/up", "..").symlink("x", "lib/up/../etc");
        },
        &[
            "x -> \"lib/up/../etc\" leads outside the target",
            "lib/up -> \"..\"",
        ],
        "unsafe_path",
    );
}

#[test]
fn a_link_into_ota_own_folder_is_refused() {
    refused(
        |repo| {
            repo.symlink("r", ".").symlink("state", "r/.OTA/state.json");
        },
        &["state -> \"r/.OTA/state.json\" leads into ota's own folder `.ota`"],
        "unsafe_path",
    );
}

#[test]
fn a_link_loop_is_refused() {
    refused(
        |repo| {
            repo.symlink("a", "b/x").symlink("b", "a");
        },
        &["more than 40 links followed (a loop)"],
        "unsafe_path",
    );
}

/// Finding 7: on a case-insensitive filesystem one of the two would overwrite the other.
#[test]
fn paths_that_differ_only_in_case_are_refused() {
    refused(
        |repo| {
            repo.write("App/x", "1\n").write("app/x", "2\n");
        },
        &["paths App and app differ only in case"],
        "invalid_release",
    );
    refused(
        |repo| {
            repo.write("a/B", "1\n").write("a/b/c", "2\n");
        },
        &["paths a/B and a/b differ only in case"],
        "invalid_release",
    );
}

#[test]
fn any_casing_of_the_state_folder_is_refused() {
    refused(
        |repo| {
            repo.write(".OTA/state.json", "{}");
        },
        &["\".OTA\" lies inside ota's own folder `.ota`"],
        "invalid_release",
    );
}

/// A JSON config saved inside the target, as the original updater kept it, for `server`.
/// `source_extra` is added to the `source` object.
fn config_inside_the_target(
    server: &ota_serve::Server,
    target: &Path,
    source_extra: &str,
) -> String {
    std::fs::create_dir_all(target).unwrap();
    let text = format!(
        "{{\"target_dir\": \".\", \"source\": {{\"owner\": \"acme\", \"repo\": \"app\", \
         {source_extra}, \"api_url\": \"{}\", \"raw_url\": \"{}\"}}, \"network\": \
         {{\"retries\": 1, \"backoff_sec\": 0}}}}",
        server.api_url(),
        server.raw_url()
    );
    std::fs::write(target.join("ota_config.json"), &text).unwrap();
    text
}

fn ota(config: &Path, args: &[&str], code: i32) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ota"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("OTA_TOKEN")
        .env("RUST_LOG", "ota=info")
        .output()
        .unwrap();
    exited(&out, args, code)
}

/// Finding 8: a release that ships a file where the device keeps its config (or its token
/// file) inside the target: the file is skipped with a warning on every update, the
/// device's own stays, and the next update still works.
#[test]
fn a_release_never_writes_the_config_or_the_token_file() {
    let mut repo = good_v1();
    repo.write(
        "ota_config.json",
        "{\"owner\": \"evil\", \"repo\": \"takeover\"}",
    )
    .write("secrets/token", "ghp_evil\n");
    repo.commit("v1 ships a config and a token");
    repo.tag("v1.1.0");
    let server = serve(repo.path());
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("app");
    std::fs::create_dir_all(target.join("secrets")).unwrap();
    std::fs::write(target.join("secrets/token"), "ghp_device\n").unwrap();
    std::fs::set_permissions(
        target.join("secrets/token"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let text = config_inside_the_target(&server, &target, "\"token_file\": \"secrets/token\"");
    let config = target.join("ota_config.json");

    for release in ["v1.1.0", "v2.0.0", "v3.0.0"] {
        if release != "v1.1.0" {
            repo.write("main.py", format!("print({release:?})\n"));
            repo.commit(release);
            repo.tag(release);
        }
        let out = ota(&config, &["update"], 0);
        assert!(out.contains(&format!(" {release} ")), "{out}");
        for (path, what) in [
            ("ota_config.json", "config file"),
            ("secrets/token", "token file"),
        ] {
            assert!(
                out.contains(&format!(
                    "{path} is not installed: it would overwrite this device's {what}"
                )),
                "{release}: warning for {path}:\n{out}"
            );
        }
        assert_eq!(std::fs::read_to_string(&config).unwrap(), text);
        assert_eq!(
            std::fs::read_to_string(target.join("secrets/token")).unwrap(),
            "ghp_device\n"
        );
        assert_eq!(
            std::fs::read_to_string(target.join("main.py")).unwrap(),
            std::str::from_utf8(&repo.blob(&repo.rev(&format!("{release}:main.py")))).unwrap()
        );
    }
    let state = std::fs::read_to_string(target.join(".ota/state.json")).unwrap();
    assert!(
        !state.contains("ota_config.json") && !state.contains("secrets/token"),
        "{state}"
    );
}

/// Finding 8, the way the original's devices are laid out: a flat `ota_config.json` in the
/// application's folder, which is its default target. (The flat format has no `api_url`,
/// so the library is pointed at the loopback server.)
#[test]
fn the_original_layout_keeps_its_config() {
    let mut repo = good_v1();
    repo.write(
        "ota_config.json",
        "{\"owner\": \"evil\", \"repo\": \"takeover\"}",
    );
    repo.commit("ships a config");
    repo.tag("v1.1.0");
    let server = serve(repo.path());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ota_config.json");
    let text = "{\"owner\": \"acme\", \"repo\": \"app\", \"retries\": 1}";
    std::fs::write(&config, text).unwrap();
    let run = || {
        let mut loaded = ota::config::Config::load(&config).unwrap();
        let ota::config::SourceConfig::Github(github) = &mut loaded.source else {
            panic!("a GitHub source")
        };
        github.api_url = server.api_url();
        github.raw_url = server.raw_url();
        ota::Updater::new(loaded)
            .update(ota::UpdateOptions::default())
            .unwrap()
    };
    let outcome = run();
    let warnings = &outcome.report().warnings;
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("ota_config.json is not installed")),
        "{warnings:?}"
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), text);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("main.py")).unwrap(),
        "print(1)\n"
    );
    repo.write("main.py", "print(2)\n");
    repo.commit("v2");
    repo.tag("v2.0.0");
    run();
    assert_eq!(std::fs::read_to_string(&config).unwrap(), text);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("main.py")).unwrap(),
        "print(2)\n"
    );
}

/// A config that an older ota installed from a release, which the device then used: it is
/// no longer ota's, so a release that drops it does not delete it.
#[test]
fn a_config_installed_by_an_earlier_release_is_kept_when_the_release_drops_it() {
    let mut repo = good_v1();
    repo.write("conf/ota.toml", "# from the release\n");
    repo.commit("ships a config");
    repo.tag("v1.1.0");
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    device.ota_expect(&["update"], 0);
    // The device now runs from the file the release installed, edited.
    let config = device.target.join("conf/ota.toml");
    let text = std::fs::read_to_string(&device.config).unwrap().replacen(
        &format!("target_dir = {:?}", device.target),
        "target_dir = \"..\"",
        1,
    );
    std::fs::write(&config, &text).unwrap();
    repo.remove("conf/ota.toml");
    repo.commit("v2 drops it");
    repo.tag("v2.0.0");
    let out = ota(&config, &["update"], 0);
    assert!(out.contains("v2.0.0"), "{out}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), text);
    let out = ota(&config, &["status", "--json"], 0);
    assert!(out.contains("\"v2.0.0\""), "{out}");
}

/// Finding 9: a system folder as the target is refused before anything is created. `/etc`
/// exists, so the test checks that ota created nothing there (it never gets that far).
#[test]
fn a_system_folder_is_refused_as_the_target() {
    let repo = good_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    let link = device.home().join("etc-link");
    std::os::unix::fs::symlink("/etc", &link).unwrap();
    let etc_before = Path::new("/etc/.ota").exists();
    for (target, shown) in [
        ("/etc".to_owned(), "/etc is a system or home folder"),
        ("/usr/bin".to_owned(), "/usr/bin is a system or home folder"),
        (
            link.display().to_string(),
            "is the system or home folder /etc",
        ),
    ] {
        let text = std::fs::read_to_string(&device.config).unwrap();
        let first_line = text.lines().next().unwrap();
        device.edit_config(first_line, &format!("target_dir = {target:?}"));
        for args in [&["update"][..], &["update", "--dry-run"], &["recover"]] {
            let out = device.ota_expect(args, 1);
            assert!(
                out.contains(shown) && out.contains("`target_dir` is refused"),
                "{out}"
            );
        }
        let out = device.ota_expect(&["update", "--json"], 1);
        assert!(out.contains("\"kind\": \"refused_target\""), "{out}");
        assert!(out.contains("\"phase\": \"config\""), "{out}");
    }
    assert_eq!(
        Path::new("/etc/.ota").exists(),
        etc_before,
        "nothing created in /etc"
    );
    assert!(!device.target.exists());
}

/// Finding 9: `update --dry-run` writes nothing at all, before a first install and after
/// one: not the state folder, not the lock file, not `cache.json`.
#[test]
fn a_dry_run_leaves_the_filesystem_unchanged() {
    let mut repo = good_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    // The target exists but holds nothing of ota's yet.
    std::fs::create_dir(&device.target).unwrap();
    let before = snapshot(device.home());
    device.ota_expect(&["update", "--dry-run"], 0);
    assert_eq!(snapshot(device.home()), before);

    device.ota_expect(&["update"], 0);
    repo.write("main.py", "print(2)\n");
    repo.commit("v2");
    repo.tag("v2.0.0");
    let before = snapshot(device.home());
    let out = device.ota_expect(&["update", "--dry-run"], 0);
    assert!(out.contains("replace  main.py"), "{out}");
    assert_eq!(snapshot(device.home()), before);
    // Without a lock file (none until an update ran under this ota) none is made.
    std::fs::remove_file(device.target.join(".ota/lock")).unwrap();
    let before = snapshot(device.home());
    device.ota_expect(&["update", "--dry-run"], 0);
    assert_eq!(snapshot(device.home()), before);
}

/// A dry run with an interrupted update pending says so and changes nothing: recovering
/// would write. The update is SIGKILLed once its journal is on disk (retried with a new
/// release when a kill lands after the commit).
#[test]
fn a_dry_run_reports_an_interrupted_update_instead_of_recovering_it() {
    let mut repo = good_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    device.ota_expect(&["update"], 0);
    let journal = device.target.join(".ota/journal.json");
    let pending = (2..12).any(|release| {
        for i in 0..300 {
            repo.write(&format!("data/{i}.txt"), format!("{release} {i}\n"));
        }
        repo.commit("many files");
        repo.tag(&format!("v{release}.0.0"));
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ota"))
            .args(["update", "--quiet", "--config"])
            .arg(&device.config)
            .env("RUST_LOG", "off")
            .spawn()
            .unwrap();
        while child.try_wait().unwrap().is_none() && !journal.exists() {
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        journal.exists()
    });
    assert!(pending, "no kill landed between the journal and the commit");
    let before = snapshot(device.home());
    let out = device.ota_expect(&["update", "--dry-run"], 1);
    assert!(
        out.contains("waits for recovery") && out.contains("run `ota recover`"),
        "{out}"
    );
    assert_eq!(
        snapshot(device.home()),
        before,
        "the dry run changed nothing"
    );
    device.ota_expect(&["update"], 0);
    assert!(!journal.exists());
}
