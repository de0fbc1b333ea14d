//! A device: a target folder and a config, driven through the real `ota` binary, SIGKILLed
//! at chosen moments, and read back from the real filesystem.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::releases::{Entry, Listing};

/// Longest one `ota` run may take before the soak calls it hung (its own deadline,
/// `update_timeout_sec`, is far shorter).
const HUNG: Duration = Duration::from_secs(180);

/// The device's home: `ota.toml`, `app/` (the target, state in `app/.ota`), `ota.log`.
pub struct Device {
    home: PathBuf,
    pub app: PathBuf,
}

/// When to SIGKILL a running `ota update`.
#[derive(Clone, Copy, Debug)]
pub enum Aim {
    /// This long after the start (resolving, downloading, staging, or later).
    Start(Duration),
    /// This long after `journal.json` appears (the swap).
    Journal(Duration),
    /// This long after `state.json` is replaced (the commit's cleanup).
    Commit(Duration),
}

/// Where a kill landed, judged from the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// No journal: resolving, downloading, staging.
    Download,
    /// A journal, `state.json` not yet naming the wanted release: the swap.
    Swap,
    /// `state.json` names the wanted release.
    Committed,
}

/// How one `ota` run ended.
pub enum Run {
    /// It exited by itself.
    Exited {
        ok: bool,
        stdout: String,
        stderr: String,
    },
    /// It was SIGKILLed.
    Killed { phase: Phase, at: Duration },
    /// It ran past [`HUNG`] and was killed.
    Hung,
}

/// Bytes of the target and its state folder.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    /// File sizes plus symlink target lengths (`st_size` of both).
    pub bytes: u64,
    /// Allocated blocks of everything, folders included (`st_blocks` × 512).
    pub allocated: u64,
}

impl Device {
    /// A device in `home` following the latest release of acme/app on the server at `api`
    /// and `raw`. Short timeouts and no backoff keep a faulted run short; two retries per
    /// request let some faults exhaust a run, so that the next run (the device's timer)
    /// retries the update.
    pub fn new(home: &Path, api: &str, raw: &str) -> Device {
        std::fs::create_dir_all(home).unwrap();
        let app = home.join("app");
        let config = format!(
            "target_dir = {app:?}\n\
             [source]\nowner = \"acme\"\nrepo = \"app\"\napi_url = \"{api}\"\nraw_url = \"{raw}\"\n\
             [network]\nconnect_timeout_sec = 2\nhttp_timeout_sec = 1\nretries = 2\n\
             backoff_sec = 0\nmax_backoff_sec = 0\nmax_wait_sec = 5\nupdate_timeout_sec = 120\n"
        );
        std::fs::write(home.join("ota.toml"), config).unwrap();
        Device {
            home: home.to_owned(),
            app,
        }
    }

    fn state(&self) -> PathBuf {
        self.app.join(".ota")
    }

    fn command(&self, command: &str) -> Command {
        let log = std::fs::File::create(self.home.join("ota.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ota"));
        cmd.arg(command)
            .arg("--config")
            .arg(self.home.join("ota.toml"))
            .env_remove("OTA_TOKEN")
            .env_remove("OTA_CONFIG")
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        cmd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.home.join("ota.log")).unwrap_or_default()
    }

    /// Runs `ota COMMAND` to its end, or SIGKILLs it as `aim` says (`wanted`: the tag being
    /// installed, to tell a committed update from one in its swap).
    pub fn run(&self, command: &str, aim: Option<Aim>, wanted: &str) -> Run {
        let journal = self.state().join("journal.json");
        let state = self.state().join("state.json");
        let state_ino = || std::fs::symlink_metadata(&state).map(|m| m.ino()).ok();
        let old_ino = state_ino();
        let start = Instant::now();
        let mut child = self.command(command).spawn().unwrap();
        let mut since: Option<Instant> = None;
        let mut kill = false;
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > HUNG {
                child.kill().unwrap();
                child.wait().unwrap();
                return Run::Hung;
            }
            if let Some(aim) = aim {
                let (event, delay) = match aim {
                    Aim::Start(d) => (true, d),
                    Aim::Journal(d) => (journal.exists(), d),
                    Aim::Commit(d) => (old_ino.is_some() && state_ino() != old_ino, d),
                };
                if event && since.is_none() {
                    since = Some(Instant::now());
                }
                if since.is_some_and(|t| t.elapsed() >= delay) {
                    kill = true;
                    break;
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let at = start.elapsed();
        if kill && child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            let phase = if self.installed_tag().as_deref() == Some(wanted) {
                Phase::Committed
            } else if journal.exists() {
                Phase::Swap
            } else {
                Phase::Download
            };
            return Run::Killed { phase, at };
        }
        let out = child.wait_with_output().unwrap();
        Run::Exited {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: self.log(),
        }
    }

    /// The tag `state.json` names, if any.
    pub fn installed_tag(&self) -> Option<String> {
        let bytes = std::fs::read(self.state().join("state.json")).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        v["release"]["ref"].as_str().map(str::to_owned)
    }

    /// `last_error.json`'s kind, if any.
    pub fn last_error_kind(&self) -> Option<String> {
        let bytes = std::fs::read(self.state().join("last_error.json")).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        Some(format!(
            "{}/{}",
            v["phase"].as_str().unwrap_or("?"),
            v["kind"].as_str().unwrap_or("?")
        ))
    }

    /// The target's files and symlinks (`.ota` excluded). An empty folder, a file whose
    /// mode is not 0644 or 0755 (what ota sets), folders of different modes, or anything
    /// that is neither file, folder nor symlink, is an error: no release holds one.
    pub fn tree(&self) -> Result<Listing, String> {
        let mut out = Listing::new();
        if !self.app.exists() {
            return Ok(out);
        }
        let mut folder_mode: Option<(u32, PathBuf)> = None;
        let mut stack = vec![self.app.clone()];
        while let Some(dir) = stack.pop() {
            if dir != self.app {
                let mode = std::fs::symlink_metadata(&dir)
                    .map_err(|e| e.to_string())?
                    .mode()
                    & 0o7777;
                match &folder_mode {
                    None => folder_mode = Some((mode, dir.clone())),
                    Some((first, at)) if *first != mode => {
                        return Err(format!(
                            "folder {} has mode {mode:o}, folder {} {first:o}",
                            dir.display(),
                            at.display()
                        ));
                    }
                    Some(_) => {}
                }
            }
            let mut empty = true;
            for entry in std::fs::read_dir(&dir).map_err(|e| e.to_string())? {
                empty = false;
                let path = entry.map_err(|e| e.to_string())?.path();
                let rel = path.strip_prefix(&self.app).unwrap();
                let rel = rel.to_string_lossy().into_owned();
                if rel == ".ota" {
                    continue;
                }
                let meta = std::fs::symlink_metadata(&path).map_err(|e| e.to_string())?;
                let kind = meta.file_type();
                if kind.is_symlink() {
                    let to = std::fs::read_link(&path).map_err(|e| e.to_string())?;
                    out.insert(rel, Entry::Link(to.to_string_lossy().into_owned()));
                } else if kind.is_dir() {
                    stack.push(path);
                } else if kind.is_file() {
                    let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
                    let mode = meta.permissions().mode() & 0o7777;
                    if mode != 0o644 && mode != 0o755 {
                        return Err(format!("{rel} has mode {mode:o}"));
                    }
                    let exec = mode == 0o755;
                    out.insert(rel, Entry::File { bytes, exec });
                } else {
                    return Err(format!("not a file, folder or symlink: {rel}"));
                }
            }
            if empty && dir != self.app {
                return Err(format!("empty folder left: {}", dir.display()));
            }
        }
        Ok(out)
    }

    /// What a clean state folder must not hold: entries of `stage/` and `backup/`, `*.tmp`
    /// files, a journal. (Anything else ota keeps there, such as `state.json`, `lock`,
    /// `cache.json`, a marker or a `kept/` folder, is not a leftover; the disk figures show
    /// whether it grows.)
    pub fn leftovers(&self) -> Vec<String> {
        let state = self.state();
        let mut out = Vec::new();
        for sub in ["stage", "backup"] {
            if let Ok(entries) = std::fs::read_dir(state.join(sub)) {
                for e in entries {
                    let name = e.unwrap().file_name().to_string_lossy().into_owned();
                    out.push(format!("{sub}/{name}"));
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(&state) {
            for e in entries {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                if name == "journal.json" || name.ends_with(".tmp") {
                    out.push(name);
                }
            }
        }
        out.sort();
        out
    }

    /// Bytes of the target and the state folder (inside it).
    pub fn usage(&self) -> Usage {
        let mut usage = Usage {
            bytes: 0,
            allocated: 0,
        };
        let mut stack = vec![self.app.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
                    continue;
                };
                usage.allocated += meta.blocks() * 512;
                if meta.is_dir() {
                    stack.push(entry.path());
                } else {
                    usage.bytes += meta.size();
                }
            }
        }
        usage
    }
}
