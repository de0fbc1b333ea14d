//! `ota-serve demo`: the whole job on one machine, with nothing to set up.
//!
//! Builds a sample application repository with two releases, serves it on 127.0.0.1, installs
//! v1.0.0 into a device folder with the `ota` library (what the `ota` binary calls), publishes
//! v2.0.0, updates, and prints what happened at each step.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use ota::Action;
use ota::ReleaseId;
use ota::config::Config;
use ota::{Check, Outcome, Updater};
use ota_serve::fixture::{FileSpec, RepoWriter};
use ota_serve::{Options, Server};

/// Commit times of the two releases (fixed, so runs are reproducible).
const V1_TIME: i64 = 1_767_225_600; // 2026-01-01
const V2_TIME: i64 = V1_TIME + 86_400;

pub fn run(dir: Option<PathBuf>) -> anyhow::Result<()> {
    let temp;
    let root = match dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            dir
        }
        None => {
            temp = tempfile::tempdir().context("creating a temporary folder")?;
            temp.path().to_owned()
        }
    };
    let repo_dir = root.join("repo.git");
    let device_dir = root.join("device");
    std::fs::create_dir_all(&device_dir)?;

    step("1. A sample application repository with release v1.0.0");
    let mut repo = RepoWriter::init(&repo_dir, true).context("creating the sample repository")?;
    let mut files = v1_files();
    let v1 = repo.commit("main", &files, "Release 1.0.0", V1_TIME)?;
    repo.tag_annotated("v1.0.0", &v1, "First release", V1_TIME)?;
    repo.set_head("main")?;
    println!("   {} ({} files)", repo_dir.display(), files.len());

    step("2. Serving it over a GitHub-compatible API (ota-serve)");
    let server = Server::start(Options::new(&repo_dir)).context("starting the server")?;
    println!(
        "   api_url = {}\n   raw_url = {}",
        server.api_url(),
        server.raw_url()
    );

    step("3. A device follows the stable channel");
    let config_path = device_dir.join("ota.toml");
    let target = device_dir.join("app");
    std::fs::write(&config_path, device_config(&target, &server))?;
    println!("   {}:", config_path.display());
    for line in std::fs::read_to_string(&config_path)?.lines() {
        println!("     {line}");
    }
    let updater = || -> anyhow::Result<Updater> { Ok(Updater::new(Config::load(&config_path)?)) };

    step("4. First install (ota update)");
    server.reset_stats();
    let outcome = updater()?.update(Default::default())?;
    outcome_lines(&outcome);
    served(&server);

    step("5. Publishing v2.0.0: one file edited, one added, one deleted");
    edit_to_v2(&mut files);
    let v2 = repo.commit("main", &files, "Release 2.0.0", V2_TIME)?;
    repo.tag_annotated("v2.0.0", &v2, "Second release", V2_TIME)?;
    server.reset_stats();
    match updater()?.check()? {
        Check::Available { available, .. } => println!(
            "   update available: {} (`ota check` exits 100)",
            available.ref_name
        ),
        _ => anyhow::bail!("the new release was not seen"),
    }
    served(&server);

    step("6. Update (ota update): only what changed crosses the network");
    server.reset_stats();
    let outcome = updater()?.update(Default::default())?;
    outcome_lines(&outcome);
    served(&server);

    step("7. Nothing new (ota update again)");
    server.reset_stats();
    let outcome = updater()?.update(Default::default())?;
    outcome_lines(&outcome);
    served(&server);

    step("8. Status (ota status)");
    let status = updater()?.status()?;
    match &status.installed {
        Some(installed) => println!(
            "   installed: {} ({} files)",
            release(&installed.release),
            installed.files.len()
        ),
        None => anyhow::bail!("nothing is installed after the update"),
    }
    match &status.last_error {
        Some(error) => println!("   last error: {}", error.message),
        None => println!("   last error: none"),
    }
    println!("\n   The device folder holds:");
    list(&target, &target)?;
    if temp_kept(&root) {
        println!(
            "\nEverything is in {}; try `ota status --config {}` (build ota with \
             `cargo build --release --bin ota`).",
            root.display(),
            config_path.display()
        );
    }
    Ok(())
}

/// What an update did, in the words of `ota update`.
fn outcome_lines(outcome: &Outcome) {
    let report = outcome.report();
    match outcome {
        Outcome::UpToDate(r) => println!("   up to date: {}", release(&r.to)),
        Outcome::Planned(r) => println!("   planned (dry run): {}", release(&r.to)),
        Outcome::Updated(r) => match &r.from {
            Some(from) => println!("   updated {} → {}", release(from), release(&r.to)),
            None => println!("   installed {}", release(&r.to)),
        },
        // The demo configures no trial and rejects nothing.
        _ => println!("   {}", release(&report.to)),
    }
    if !matches!(outcome, Outcome::UpToDate(_)) {
        let plan = &report.plan;
        println!(
            "   {} added, {} replaced, {} deleted, {} unchanged",
            plan.count(Action::Add),
            plan.count(Action::Replace),
            plan.count(Action::Delete),
            plan.unchanged,
        );
    }
    for warning in &report.warnings {
        println!("   warning: {warning}");
    }
}

fn release(r: &ReleaseId) -> String {
    format!("{} ({})", r.ref_name, r.channel)
}

fn step(title: &str) {
    println!("\n{title}");
}

/// The server's side of the story: requests and bytes it answered.
fn served(server: &Server) {
    let s = server.stats();
    println!(
        "   server answered {} request{}: {} API ({} B), {} file ({} B)",
        s.requests,
        if s.requests == 1 { "" } else { "s" },
        s.api_requests,
        s.api_body_bytes,
        s.raw_requests + s.asset_requests,
        s.file_body_bytes
    );
}

fn temp_kept(root: &Path) -> bool {
    !root.starts_with(std::env::temp_dir())
}

fn device_config(target: &Path, server: &Server) -> String {
    format!(
        "target_dir = \"{}\"\nchannel = \"stable\"\nignore = [\"tests/\"]\n\n[source]\nowner = \"demo\"\nrepo = \"greenhouse\"\napi_url = \"{}\"\nraw_url = \"{}\"\n",
        target.display(),
        server.api_url(),
        server.raw_url()
    )
}

fn file(text: &str) -> FileSpec {
    FileSpec::File {
        bytes: text.as_bytes().to_vec(),
        exec: false,
    }
}

fn v1_files() -> BTreeMap<String, FileSpec> {
    let mut files = BTreeMap::new();
    files.insert(
        "main.py".into(),
        file("from lib import sensors\n\nprint('greenhouse v1', sensors.read())\n"),
    );
    files.insert("lib/__init__.py".into(), file(""));
    files.insert(
        "lib/sensors.py".into(),
        file("def read():\n    return {'temp_c': 21.5, 'humidity': 0.61}\n"),
    );
    files.insert("lib/net.py".into(), file("RETRIES = 3\n"));
    files.insert(
        "config/defaults.json".into(),
        file("{\"interval_sec\": 60}\n"),
    );
    files.insert("assets/logo.txt".into(), file("[greenhouse]\n"));
    files.insert(
        "tests/test_sensors.py".into(),
        file("def test_read(): pass\n"),
    );
    files.insert(
        "bin/start".into(),
        FileSpec::File {
            bytes: b"#!/bin/sh\nexec python3 main.py\n".to_vec(),
            exec: true,
        },
    );
    files.insert("current".into(), FileSpec::Symlink("main.py".into()));
    files
}

fn edit_to_v2(files: &mut BTreeMap<String, FileSpec>) {
    files.insert(
        "main.py".into(),
        file("from lib import sensors, display\n\ndisplay.show(sensors.read())\n"),
    );
    files.insert(
        "lib/display.py".into(),
        file("def show(values):\n    print('greenhouse v2', values)\n"),
    );
    files.remove("assets/logo.txt");
}

/// Prints the files under `dir` (skipping ota's own folder).
fn list(root: &Path, dir: &Path) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let rel = path.strip_prefix(root)?.display().to_string();
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            if rel != ".ota" {
                list(root, &path)?;
            }
        } else if meta.file_type().is_symlink() {
            println!("     {rel} -> {}", std::fs::read_link(&path)?.display());
        } else {
            println!("     {rel} ({} B)", meta.len());
        }
    }
    Ok(())
}
