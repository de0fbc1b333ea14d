//! Hooks: the commands ota runs around an update (`[before_update]`, `[after_update]`, the
//! trial's health command) and the `systemctl` calls of `[after_update]`.
//!
//! Every hook runs the same way, so that what a hook sees is documented once
//! (docs/config-reference.md, *Hooks*):
//! - `sh -c COMMAND` with the target as working folder and stdin from `/dev/null`;
//! - a cleared environment plus `PATH` and the `OTA_*` variables of [`HookEnv`]: never the
//!   token or anything else from ota's own environment;
//! - stdout and stderr into one pipe, each line logged at info with the phase, the last
//!   [`KEPT_OUTPUT`] bytes kept for the error;
//! - its own process group: at the timeout the whole group is killed (SIGKILL) and reaped,
//!   and when the shell exits whatever it left running in the group is killed too, so a
//!   hook never outlives its call (long-running programs belong in a systemd unit).

// The updater calls these from issue 9's trial work (engineer `trial`); until that is merged
// only the tests do. Remove this line then.
#![cfg_attr(not(test), allow(dead_code))]

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

use crate::config::AfterUpdate;
use crate::state::ReleaseId;

/// `PATH` for a hook when ota itself runs without one (as a bare `execve` might start it).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Bytes of a hook's output kept for its error (the most recent ones).
const KEPT_OUTPUT: usize = 8 << 10;

/// Lines of output an error shows at most (the last ones).
const SHOWN_LINES: usize = 20;

/// Characters of one output line an error shows at most.
const SHOWN_WIDTH: usize = 300;

/// A line longer than this is logged in pieces, so one runaway line cannot grow memory.
const MAX_LINE: usize = 4 << 10;

/// Lines of a hook's output logged at most, so that a chatty hook cannot flood the log.
const MAX_LOGGED_LINES: usize = 1000;

/// Bytes read from a hook's output between two checks of its end and deadline.
const READ_AT_ONCE: usize = 64 << 10;

/// How often a running hook is checked for exit, output and its deadline.
const POLL: Duration = Duration::from_millis(20);

/// How long output still in the pipe is read once the hook has exited.
const DRAIN: Duration = Duration::from_secs(1);

/// When a hook runs; also `OTA_PHASE` and the prefix of its logged lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// `[before_update] command`: before an update changes anything.
    BeforeUpdate,
    /// `[after_update]`: once an update changed the target.
    AfterUpdate,
    /// `[trial] health_command`.
    Health,
    /// `[after_update]` again, once a rollback restored the previous release.
    AfterRollback,
}

impl Phase {
    /// The name in `OTA_PHASE`, the log and errors.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Phase::BeforeUpdate => "before_update",
            Phase::AfterUpdate => "after_update",
            Phase::Health => "health",
            Phase::AfterRollback => "after_rollback",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a hook is told about the update it runs for (its working folder and `OTA_*`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct HookEnv<'a> {
    /// The target folder: the working folder, and `OTA_TARGET`.
    pub target: &'a Path,
    /// ota's state folder: `OTA_STATE_DIR`.
    pub state_dir: &'a Path,
    /// The release now in the target: `OTA_RELEASE` (its ref), `OTA_COMMIT`, `OTA_CHANNEL`.
    pub release: &'a ReleaseId,
    /// The release it replaced, if any: `OTA_PREVIOUS` (ref), `OTA_PREVIOUS_COMMIT`.
    pub previous: Option<&'a ReleaseId>,
    /// `OTA_PHASE`.
    pub phase: Phase,
}

/// Why a hook failed.
#[derive(Debug)]
enum Failure {
    /// The program (`sh` or `systemctl`) could not be started in the target folder.
    Start {
        program: String,
        target: PathBuf,
        error: io::Error,
    },
    /// The pipe for its output could not be made.
    Pipe(io::Error),
    /// Waiting for it or reading its output failed.
    Wait(io::Error),
    /// It exited with a non-zero code.
    Exit(i32),
    /// A signal killed it (not ota's timeout).
    Signal(i32),
    /// It ran longer than its timeout; ota killed its process group.
    TimedOut(Duration),
}

/// A hook that failed: which command, in which phase, why, and its last output.
#[derive(Debug)]
pub(crate) struct HookError {
    phase: Phase,
    /// The command as the user wrote it (or the `systemctl …` line).
    command: String,
    failure: Failure,
    /// The last lines of its output (at most [`SHOWN_LINES`]).
    output: String,
}

impl HookError {
    /// The phase the hook ran in.
    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether it failed by running past its timeout.
    pub(crate) fn timed_out(&self) -> bool {
        matches!(self.failure, Failure::TimedOut(_))
    }
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (phase, command) = (self.phase, &self.command);
        match &self.failure {
            Failure::Start {
                program,
                target,
                error,
            } => write!(
                f,
                "could not start the {phase} command `{command}`: {error} (ota runs `{program}` \
                 in {}: check that `{program}` is in PATH and that the folder exists)",
                target.display()
            )?,
            Failure::Pipe(e) => write!(
                f,
                "could not make a pipe for the output of the {phase} command `{command}`: {e}"
            )?,
            Failure::Wait(e) => write!(f, "lost track of the {phase} command `{command}`: {e}")?,
            Failure::Exit(code) => {
                write!(
                    f,
                    "the {phase} command `{command}` failed with exit code {code}"
                )?;
            }
            Failure::Signal(sig) => {
                write!(
                    f,
                    "the {phase} command `{command}` was killed by signal {sig}"
                )?;
            }
            Failure::TimedOut(after) => write!(
                f,
                "the {phase} command `{command}` timed out after {} s and was killed with \
                 everything it started (raise its timeout if it needs longer)",
                after.as_secs()
            )?,
        }
        if self.output.is_empty() {
            write!(f, "; it printed nothing")
        } else {
            write!(f, "; its last output:\n{}", self.output)
        }
    }
}

impl std::error::Error for HookError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.failure {
            Failure::Start { error: e, .. } | Failure::Pipe(e) | Failure::Wait(e) => Some(e),
            _ => None,
        }
    }
}

/// Runs `sh -c command` in `env.target` with the minimal environment, killed (the whole
/// process group) at `timeout`.
pub(crate) fn run(command: &str, timeout: Duration, env: &HookEnv) -> Result<(), HookError> {
    Hooks::from_ota().run(command, timeout, env)
}

/// Runs the `[after_update]` command, then the `post_update` command the release names (when
/// the allow-list maps it), then `systemctl restart UNIT…` (one call for all units), each
/// with the section's timeout. Not the reboot: see [`reboot`].
pub(crate) fn after_update(config: &AfterUpdate, env: &HookEnv) -> Result<(), HookError> {
    Hooks::from_ota().after_update(config, env)
}

/// Asks systemd to reboot (`systemctl --no-block reboot`): it returns once the reboot is
/// queued, so ota ends normally (its state already durable) before systemd stops it.
pub(crate) fn reboot(timeout: Duration, env: &HookEnv) -> Result<(), HookError> {
    Hooks::from_ota().reboot(timeout, env)
}

/// How hooks are run: the `PATH` they get (ota's own in production; a test passes its own,
/// so that it never changes the test process's environment).
struct Hooks {
    path: OsString,
}

impl Hooks {
    /// ota's own `PATH`, or [`DEFAULT_PATH`] when it has none.
    fn from_ota() -> Self {
        let path = std::env::var_os("PATH").filter(|p| !p.is_empty());
        Hooks {
            path: path.unwrap_or_else(|| DEFAULT_PATH.into()),
        }
    }

    fn run(&self, command: &str, timeout: Duration, env: &HookEnv) -> Result<(), HookError> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(command);
        self.execute(cmd, command, timeout, env)
    }

    fn after_update(&self, config: &AfterUpdate, env: &HookEnv) -> Result<(), HookError> {
        if let Some(command) = &config.command {
            self.run(command, config.timeout, env)?;
        }
        // The original manifest's `post_update` names a command of the allow-list; it is
        // the release's own step, so it runs after installing it, not after a rollback.
        if let Some(name) = &env.release.post_update
            && env.phase == Phase::AfterUpdate
        {
            match config.post_update.get(name) {
                Some(command) => self.run(command, config.timeout, env)?,
                None => tracing::warn!(
                    "release {} asks for post_update {name:?}, which `[after_update] \
                     post_update` does not list: nothing run (ota never runs a command named \
                     by the server; add `{name} = \"COMMAND\"` there to run one)",
                    env.release.ref_name
                ),
            }
        }
        if !config.restart.is_empty() {
            let mut cmd = Command::new("systemctl");
            cmd.arg("restart").args(&config.restart);
            let shown = format!("systemctl restart {}", config.restart.join(" "));
            self.execute(cmd, &shown, config.timeout, env)?;
        }
        Ok(())
    }

    fn reboot(&self, timeout: Duration, env: &HookEnv) -> Result<(), HookError> {
        let mut cmd = Command::new("systemctl");
        cmd.args(["--no-block", "reboot"]);
        self.execute(cmd, "systemctl --no-block reboot", timeout, env)
    }

    /// Runs `cmd` as a hook: environment, working folder, output and timeout as the module
    /// says. `shown` names it in the log and errors.
    fn execute(
        &self,
        mut cmd: Command,
        shown: &str,
        timeout: Duration,
        env: &HookEnv,
    ) -> Result<(), HookError> {
        let phase = env.phase;
        let fail = |failure, output: &Output| HookError {
            phase,
            command: shown.to_owned(),
            failure,
            output: output.last_lines(),
        };
        let mut output = Output::new(phase);
        let (reader, writer) = io::pipe().map_err(|e| fail(Failure::Pipe(e), &output))?;
        // Non-blocking, so that output kept open by a process that escaped the group (setsid)
        // can never hang ota: reading stops at the deadline whatever happens.
        rustix::fs::fcntl_getfl(&reader)
            .and_then(|flags| {
                rustix::fs::fcntl_setfl(&reader, flags | rustix::fs::OFlags::NONBLOCK)
            })
            .map_err(|e| fail(Failure::Pipe(e.into()), &output))?;
        let writer2 = writer
            .try_clone()
            .map_err(|e| fail(Failure::Pipe(e), &output))?;
        cmd.env_clear()
            .envs(self.environment(env))
            .current_dir(env.target)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(writer2)
            .process_group(0);
        tracing::info!("{phase}: running `{shown}`");
        let program = cmd.get_program().to_owned();
        let spawned = cmd.spawn();
        // The Command holds our copies of the pipe's write end: drop them, or the pipe never
        // reports end of file.
        drop(cmd);
        let started = |error| Failure::Start {
            program: program.to_string_lossy().into_owned(),
            target: env.target.to_owned(),
            error,
        };
        let mut child = spawned.map_err(|e| fail(started(e), &output))?;
        let status = wait(&mut child, reader, timeout, &mut output);
        let status = status.map_err(|e| fail(e, &output))?;
        match (status.code(), status.signal()) {
            (Some(0), _) => {
                tracing::info!("{phase}: `{shown}` succeeded");
                Ok(())
            }
            (Some(code), _) => Err(fail(Failure::Exit(code), &output)),
            (None, Some(sig)) => Err(fail(Failure::Signal(sig), &output)),
            (None, None) => Err(fail(Failure::Signal(0), &output)),
        }
    }

    /// The hook's whole environment: nothing of ota's but `PATH`.
    fn environment(&self, env: &HookEnv) -> Vec<(&'static str, OsString)> {
        let mut vars = vec![
            ("PATH", self.path.clone()),
            ("OTA_PHASE", env.phase.name().into()),
            ("OTA_RELEASE", env.release.ref_name.clone().into()),
            ("OTA_COMMIT", env.release.commit.to_hex().into()),
            ("OTA_CHANNEL", env.release.channel.clone().into()),
            ("OTA_TARGET", env.target.as_os_str().to_owned()),
            ("OTA_STATE_DIR", env.state_dir.as_os_str().to_owned()),
        ];
        if let Some(previous) = env.previous {
            vars.push(("OTA_PREVIOUS", previous.ref_name.clone().into()));
            vars.push(("OTA_PREVIOUS_COMMIT", previous.commit.to_hex().into()));
        }
        vars
    }
}

/// Waits for `child` while reading its output, until it exits or `timeout` passes; then kills
/// what is left of its process group and reaps it. Returns how the shell ended.
fn wait(
    child: &mut Child,
    mut reader: io::PipeReader,
    timeout: Duration,
    output: &mut Output,
) -> Result<ExitStatus, Failure> {
    // The group's id is the shell's pid (`process_group(0)`).
    let group = i32::try_from(child.id()).ok().and_then(Pid::from_raw);
    let started = Instant::now();
    let mut open = true;
    let ended = loop {
        if open {
            open = output.read_from(&mut reader);
        }
        match group.map(has_ended) {
            Some(Ok(true)) => break Ok(()),
            Some(Ok(false)) => {}
            Some(Err(e)) => break Err(Failure::Wait(e)),
            None => break Err(Failure::Wait(io::Error::other("no process id"))),
        }
        if started.elapsed() >= timeout {
            break Err(Failure::TimedOut(timeout));
        }
        std::thread::sleep(POLL);
    };
    // Whatever way the shell ended, nothing it started may outlive the hook. The shell is not
    // reaped yet, so its pid, the group's id, cannot have been reused by another program.
    if let Some(group) = group {
        kill_group(group);
    }
    let status = child.wait();
    let drained = Instant::now();
    while open && drained.elapsed() < DRAIN {
        open = output.read_from(&mut reader);
        if open {
            std::thread::sleep(POLL);
        }
    }
    output.finish();
    ended?;
    status.map_err(Failure::Wait)
}

/// Whether the shell has ended, without reaping it.
fn has_ended(pid: Pid) -> io::Result<bool> {
    let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
    Ok(rustix::process::waitid(WaitId::Pid(pid), options)?.is_some())
}

/// SIGKILL to a whole process group; a group already gone is fine.
fn kill_group(group: Pid) {
    match rustix::process::kill_process_group(group, Signal::KILL) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => {}
        Err(e) => tracing::warn!("could not kill the hook's process group {group:?}: {e}"),
    }
}

/// A hook's output: logged line by line as it comes, the last [`KEPT_OUTPUT`] bytes kept.
struct Output {
    phase: Phase,
    /// The current line, not yet ended by a newline.
    line: Vec<u8>,
    /// The most recent output, at most [`KEPT_OUTPUT`] bytes.
    kept: VecDeque<u8>,
    /// Whether older output was dropped from `kept`.
    cut: bool,
    /// Lines logged so far (the log takes at most [`MAX_LOGGED_LINES`]).
    logged: usize,
}

impl Output {
    fn new(phase: Phase) -> Self {
        Output {
            phase,
            line: Vec::new(),
            kept: VecDeque::new(),
            cut: false,
            logged: 0,
        }
    }

    /// Reads what the pipe holds now; returns whether it may still hold more (not at end of
    /// file and no error).
    /// At most [`READ_AT_ONCE`] bytes, so that a hook that writes without pause (`yes`)
    /// cannot keep ota from checking its deadline.
    fn read_from(&mut self, reader: &mut io::PipeReader) -> bool {
        let mut buf = [0u8; 4096];
        for _ in 0..READ_AT_ONCE / buf.len() {
            match reader.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => self.push(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!("{}: could not read the hook's output: {e}", self.phase);
                    return false;
                }
            }
        }
        true
    }

    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.log_line();
            } else {
                self.line.push(b);
                if self.line.len() >= MAX_LINE {
                    self.log_line();
                }
            }
        }
        self.kept.extend(bytes);
        let excess = self.kept.len().saturating_sub(KEPT_OUTPUT);
        if excess > 0 {
            self.kept.drain(..excess);
            self.cut = true;
        }
    }

    fn log_line(&mut self) {
        self.logged += 1;
        if self.logged <= MAX_LOGGED_LINES {
            let line = String::from_utf8_lossy(&self.line);
            tracing::info!("{}: {}", self.phase, line.trim_end_matches('\r'));
        } else if self.logged == MAX_LOGGED_LINES + 1 {
            tracing::info!(
                "{}: (more output; only its last lines are kept, for an error)",
                self.phase
            );
        }
        self.line.clear();
    }

    /// Logs a last line the hook did not end with a newline.
    fn finish(&mut self) {
        if !self.line.is_empty() {
            self.log_line();
        }
    }

    /// The last [`SHOWN_LINES`] lines kept, each indented (and cut at [`SHOWN_WIDTH`]
    /// characters), for an error.
    fn last_lines(&self) -> String {
        let (front, back) = self.kept.as_slices();
        let text = String::from_utf8_lossy(&[front, back].concat()).into_owned();
        let mut lines: Vec<&str> = text.lines().collect();
        // The first line kept was cut mid-way by the bound: not shown, unless it is all.
        if self.cut && lines.len() > 1 {
            lines.remove(0);
        }
        let start = lines.len().saturating_sub(SHOWN_LINES);
        let mut shown = Vec::new();
        if self.cut || start > 0 {
            shown.push("  (earlier output not shown)".to_owned());
        }
        for line in &lines[start..] {
            let line = line.trim_end();
            match line.char_indices().nth(SHOWN_WIDTH) {
                Some((cut, _)) => shown.push(format!("  {}…", &line[..cut])),
                None => shown.push(format!("  {line}")),
            }
        }
        shown.join("\n")
    }
}

#[cfg(test)]
mod tests;
