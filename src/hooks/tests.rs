//! Hooks run for real: `sh` scripts in temp dirs, and a recording `systemctl` first in a
//! `PATH` given to [`Hooks`] (never the test process's own `PATH`, never the real
//! `systemctl`).

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::*;
use crate::manifest::ObjectId;

/// A target and a state folder in a temp dir, and the `PATH` hooks get: the temp dir's
/// `bin` (where a test puts its `systemctl`) before the system's.
struct Fixture {
    root: PathBuf,
    /// Removes `root` when the fixture goes; `None` in a child process (its parent's).
    _temp: Option<tempfile::TempDir>,
    release: ReleaseId,
    previous: ReleaseId,
}

impl Fixture {
    fn new() -> Self {
        let temp = tempfile::tempdir().expect("temp dir");
        for sub in ["target", "state", "bin"] {
            fs::create_dir(temp.path().join(sub)).expect("mkdir");
        }
        let mut f = Fixture::at(temp.path().to_owned());
        f._temp = Some(temp);
        f
    }

    /// The fixture a parent test made in `root`.
    fn at(root: PathBuf) -> Self {
        let release = |name: &str, content: &[u8]| {
            ReleaseId::new("stable", name, ObjectId::for_blob(content))
        };
        Fixture {
            root,
            _temp: None,
            release: release("v2", b"two"),
            previous: release("v1", b"one"),
        }
    }

    fn target(&self) -> PathBuf {
        self.root.join("target")
    }

    fn state(&self) -> PathBuf {
        self.root.join("state")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn hooks(&self) -> Hooks {
        let mut path = self.root.join("bin").into_os_string();
        path.push(":/usr/bin:/bin");
        Hooks { path }
    }

    fn run(&self, command: &str, timeout: Duration) -> Result<(), HookError> {
        let (target, state) = (self.target(), self.state());
        let env = self.env(&target, &state, Phase::Health);
        self.hooks().run(command, timeout, &env)
    }

    fn env<'a>(&'a self, target: &'a Path, state: &'a Path, phase: Phase) -> HookEnv<'a> {
        HookEnv {
            target,
            state_dir: state,
            release: &self.release,
            previous: Some(&self.previous),
            phase,
        }
    }

    /// Puts an executable `systemctl` in `bin` that appends its arguments to
    /// `systemctl.log` and exits with `code`.
    fn systemctl(&self, code: i32) -> PathBuf {
        let log = self.path("systemctl.log");
        let script = format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\necho systemctl says hello\nexit {code}\n",
            log.display()
        );
        let bin = self.root.join("bin/systemctl");
        fs::write(&bin, script).expect("write systemctl");
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod");
        log
    }
}

const SHORT: Duration = Duration::from_secs(30);

#[test]
fn exit_zero_is_success_and_other_codes_fail_with_the_command_and_code() {
    let f = Fixture::new();
    f.run("true", SHORT).expect("exit 0 succeeds");
    let e = f.run("echo not healthy; exit 3", SHORT).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("the health command `echo not healthy; exit 3` failed with exit code 3"),
        "{msg}"
    );
    assert!(msg.contains("\n  not healthy"), "{msg}");
    assert_eq!(e.phase(), Phase::Health);
    assert!(!e.timed_out());
}

#[test]
fn a_signal_is_named() {
    let f = Fixture::new();
    let msg = f.run("kill -TERM $$", SHORT).unwrap_err().to_string();
    assert!(msg.contains("was killed by signal 15"), "{msg}");
    assert!(msg.ends_with("it printed nothing"), "{msg}");
}

#[test]
fn a_missing_target_is_a_start_failure() {
    let f = Fixture::new();
    let (missing, state) = (f.path("no-such-target"), f.state());
    let env = f.env(&missing, &state, Phase::BeforeUpdate);
    let msg = f.hooks().run("true", SHORT, &env).unwrap_err().to_string();
    assert!(
        msg.starts_with("could not start the before_update command `true`"),
        "{msg}"
    );
}

#[test]
fn it_runs_in_the_target() {
    let f = Fixture::new();
    f.run("pwd -P > where; echo made > made.txt", SHORT)
        .expect("runs");
    let made = fs::read_to_string(f.target().join("made.txt")).expect("made in the target");
    assert_eq!(made, "made\n");
    let pwd = fs::read_to_string(f.target().join("where")).expect("where");
    assert_eq!(
        PathBuf::from(pwd.trim_end()),
        f.target().canonicalize().unwrap()
    );
}

/// Every variable the hook sees, `name=value`, from `env` run by the hook (`sh` adds
/// `PWD`, `SHLVL` and `_` itself).
fn hook_env(f: &Fixture) -> BTreeSet<String> {
    f.run("env > ../env.txt", SHORT).expect("runs");
    let text = fs::read_to_string(f.path("env.txt")).expect("env.txt");
    text.lines()
        .filter(|l| !l.starts_with("PWD=") && !l.starts_with("SHLVL=") && !l.starts_with("_="))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_environment_is_exactly_the_documented_one() {
    let f = Fixture::new();
    let got = hook_env(&f);
    let expected: BTreeSet<String> = [
        format!("PATH={}", f.hooks().path.to_string_lossy()),
        "OTA_PHASE=health".to_owned(),
        "OTA_RELEASE=v2".to_owned(),
        format!("OTA_COMMIT={}", f.release.commit.to_hex()),
        "OTA_CHANNEL=stable".to_owned(),
        "OTA_PREVIOUS=v1".to_owned(),
        format!("OTA_PREVIOUS_COMMIT={}", f.previous.commit.to_hex()),
        format!("OTA_TARGET={}", f.target().display()),
        format!("OTA_STATE_DIR={}", f.state().display()),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, expected);
}

#[test]
fn without_a_previous_release_there_is_no_ota_previous() {
    let f = Fixture::new();
    let (target, state) = (f.target(), f.state());
    let mut env = f.env(&target, &state, Phase::AfterUpdate);
    env.previous = None;
    f.hooks()
        .run("env > ../env.txt", SHORT, &env)
        .expect("runs");
    let text = fs::read_to_string(f.path("env.txt")).expect("env.txt");
    assert!(text.contains("OTA_PHASE=after_update\n"), "{text}");
    assert!(!text.contains("OTA_PREVIOUS"), "{text}");
}

/// The folder of a [`Fixture`] made by the parent test, in a child test process whose
/// environment the parent chose (a test cannot safely change its own environment).
const CHILD_DIR: &str = "OTA_HOOKS_TEST_CHILD_DIR";

/// Run by the tests below in a child test process, with ota's environment as the parent
/// set it: runs the public entry points (`run`, `after_update`, `reboot`), which take
/// `PATH` from ota's own environment as in production. Does nothing in a normal run.
#[test]
fn child_with_otas_environment() {
    let Some(dir) = std::env::var_os(CHILD_DIR).map(PathBuf::from) else {
        return;
    };
    let f = Fixture::at(dir);
    let (target, state) = (f.target(), f.state());
    let env = f.env(&target, &state, Phase::Health);
    run("env > ../env.txt", SHORT, &env).expect("runs");
    // Never the real systemctl: only when the recording one is first in PATH.
    let path = std::env::var("PATH").unwrap_or_default();
    let first = path.split(':').next().unwrap_or_default();
    if !Path::new(first).join("systemctl").starts_with(&f.root) {
        return;
    }
    assert!(Path::new(first).join("systemctl").is_file());
    let env = f.env(&target, &state, Phase::AfterUpdate);
    let config = AfterUpdate {
        restart: vec!["app.service".to_owned()],
        ..AfterUpdate::default()
    };
    after_update(&config, &env).expect("restart");
    reboot(SHORT, &env).expect("reboot");
}

/// Runs [`child_with_otas_environment`] for `f` with `vars` as its whole environment.
fn child(f: &Fixture, vars: &[(&str, &std::ffi::OsStr)]) {
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .args(["hooks::tests::child_with_otas_environment", "--exact"])
        .env_clear()
        .env(CHILD_DIR, &f.root)
        .envs(vars.iter().copied())
        .output()
        .expect("run the child test");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn otas_path_reaches_hooks_and_systemctl_but_no_token_does() {
    let f = Fixture::new();
    let log = f.systemctl(0);
    let path = f.hooks().path;
    child(
        &f,
        &[
            ("PATH", &path),
            ("OTA_TOKEN", "ghp_secret_from_ota_token".as_ref()),
            ("GITHUB_TOKEN", "ghp_secret_from_github_token".as_ref()),
            ("HOME", "/root/secret-home".as_ref()),
        ],
    );
    let text = fs::read_to_string(f.path("env.txt")).expect("the hook's environment");
    assert!(
        text.contains(&format!("\nPATH={}\n", path.to_string_lossy())),
        "{text}"
    );
    assert!(text.contains("OTA_PHASE=health"), "{text}");
    for leak in ["ghp_secret", "secret-home", CHILD_DIR] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
    let calls = fs::read_to_string(&log).expect("the recording systemctl ran");
    assert_eq!(calls, "restart app.service\n--no-block reboot\n");
}

#[test]
fn without_a_path_of_its_own_ota_gives_hooks_the_standard_one() {
    let f = Fixture::new();
    child(&f, &[]);
    let text = fs::read_to_string(f.path("env.txt")).expect("the hook's environment");
    assert!(text.contains(&format!("\nPATH={DEFAULT_PATH}\n")), "{text}");
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet: dead all the same).
fn gone(pid: &str) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn at_the_timeout_the_whole_process_group_is_killed() {
    let f = Fixture::new();
    let e = f
        .run(
            "echo started; sleep 100 & echo $! > ../grandchild.pid; sleep 100",
            Duration::from_secs(1),
        )
        .unwrap_err();
    assert!(e.timed_out());
    let msg = e.to_string();
    assert!(
        msg.contains("the health command `echo started; sleep 100 & echo $! > ../grandchild.pid; sleep 100` timed out after 1 s"),
        "{msg}"
    );
    assert!(msg.contains("\n  started"), "{msg}");
    let pid = fs::read_to_string(f.path("grandchild.pid")).expect("pid written");
    assert!(gone(pid.trim()), "the background sleep {pid} survived");
}

#[test]
fn what_a_hook_leaves_running_is_killed_when_it_exits() {
    let f = Fixture::new();
    f.run("sleep 100 & echo $! > ../left.pid", SHORT)
        .expect("runs");
    let pid = fs::read_to_string(f.path("left.pid")).expect("pid written");
    assert!(gone(pid.trim()), "the background sleep {pid} survived");
}

#[test]
fn stdout_and_stderr_are_captured_and_only_the_end_is_kept() {
    let f = Fixture::new();
    let long = "i=0; while [ $i -lt 3000 ]; do echo line$i; i=$((i+1)); done; \
                echo to-stderr >&2; exit 1";
    let e = f.run(long, SHORT).unwrap_err();
    assert_eq!(e.output.lines().count(), SHOWN_LINES + 1, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("  (earlier output not shown)\n  line2981\n"),
        "{msg}"
    );
    assert!(msg.ends_with("  line2999\n  to-stderr"), "{msg}");
    assert!(!msg.contains("line2980\n"), "{msg}");

    // Everything of a short output is shown, without the note.
    let e = f.run("echo one; echo two >&2; exit 1", SHORT).unwrap_err();
    assert_eq!(e.output, "  one\n  two");
}

#[test]
fn after_update_runs_the_command_then_one_systemctl_restart_from_path() {
    let f = Fixture::new();
    let log = f.systemctl(0);
    let (target, state) = (f.target(), f.state());
    let env = f.env(&target, &state, Phase::AfterUpdate);
    let config = AfterUpdate {
        command: Some(format!("echo command >> '{}'", log.display())),
        restart: vec!["app.service".to_owned(), "web.service".to_owned()],
        reboot: true, // not `after_update`'s job
        ..AfterUpdate::default()
    };
    f.hooks().after_update(&config, &env).expect("runs");
    let calls = fs::read_to_string(&log).expect("log");
    assert_eq!(calls, "command\nrestart app.service web.service\n");

    f.hooks().reboot(SHORT, &env).expect("reboot queued");
    let calls = fs::read_to_string(&log).expect("log");
    assert!(calls.ends_with("restart app.service web.service\n--no-block reboot\n"));
}

#[test]
fn a_failing_command_stops_after_update_before_the_restart() {
    let f = Fixture::new();
    let log = f.systemctl(0);
    let (target, state) = (f.target(), f.state());
    let env = f.env(&target, &state, Phase::AfterRollback);
    let config = AfterUpdate {
        command: Some("exit 4".to_owned()),
        restart: vec!["app.service".to_owned()],
        ..AfterUpdate::default()
    };
    let msg = f
        .hooks()
        .after_update(&config, &env)
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("the after_rollback command `exit 4` failed with exit code 4"),
        "{msg}"
    );
    assert!(!log.exists(), "systemctl ran after a failed command");
}

#[test]
fn a_failing_systemctl_is_an_error_naming_the_units() {
    let f = Fixture::new();
    f.systemctl(5);
    let (target, state) = (f.target(), f.state());
    let env = f.env(&target, &state, Phase::AfterUpdate);
    let config = AfterUpdate {
        restart: vec!["app.service".to_owned()],
        ..AfterUpdate::default()
    };
    let msg = f
        .hooks()
        .after_update(&config, &env)
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        "the after_update command `systemctl restart app.service` failed with exit code 5; \
         its last output:\n  systemctl says hello"
    );
}

#[test]
fn a_process_that_escapes_the_group_does_not_hold_the_hook() {
    let f = Fixture::new();
    // `setsid` leaves the group (and is not killed with it) but keeps the output pipe open:
    // the hook still ends when its shell does, with the output read so far.
    let result = f.run(
        "echo before; setsid sh -c 'echo $$ > ../escaped.pid; exec sleep 100' & \
         while [ ! -s ../escaped.pid ]; do sleep 0.01; done; echo after",
        SHORT,
    );
    let pid = fs::read_to_string(f.path("escaped.pid")).unwrap_or_default();
    if !pid.trim().is_empty() {
        // Ours to end: the escaped sleep.
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
    result.expect("the hook succeeds");
    assert!(!pid.trim().is_empty());
}

/// Log lines written during `f`, as ota's log shows them (without time or colour).
fn logged(f: impl FnOnce()) -> String {
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log buffer").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = buffer.0.lock().expect("log buffer").clone();
    String::from_utf8(bytes).expect("UTF-8 log")
}

#[test]
fn each_output_line_is_logged_with_the_phase() {
    let f = Fixture::new();
    let log = logged(|| {
        f.run("echo one; echo two >&2; printf 'no newline'", SHORT)
            .expect("runs");
    });
    let lines: Vec<&str> = log.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        [
            "INFO health: running `echo one; echo two >&2; printf 'no newline'`",
            "INFO health: one",
            "INFO health: two",
            "INFO health: no newline",
            "INFO health: `echo one; echo two >&2; printf 'no newline'` succeeded",
        ]
    );
}

#[test]
fn a_missing_systemctl_is_a_start_failure() {
    let f = Fixture::new();
    let (target, state) = (f.target(), f.state());
    let env = f.env(&target, &state, Phase::AfterUpdate);
    let config = AfterUpdate {
        restart: vec!["app.service".to_owned()],
        ..AfterUpdate::default()
    };
    // Only the fixture's empty `bin` in PATH: no systemctl anywhere.
    let hooks = Hooks {
        path: f.path("bin").into_os_string(),
    };
    let msg = hooks.after_update(&config, &env).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!(
            "could not start the after_update command `systemctl restart app.service`: No such \
             file or directory (os error 2) (ota runs `systemctl` in {}: check that \
             `systemctl` is in PATH and that the folder exists)",
            target.display()
        )),
        "{msg}"
    );
}

#[test]
fn the_reference_documents_what_a_hook_gets() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/config-reference.md");
    let doc = fs::read_to_string(path).expect("docs/config-reference.md");
    let hooks = doc
        .split_once("## Hooks\n")
        .and_then(|(_, rest)| rest.split("\n## ").next())
        .expect("a Hooks section");
    let f = Fixture::new();
    let (target, state) = (f.target(), f.state());
    let env = f.env(&target, &state, Phase::Health);
    for (name, _) in f.hooks().environment(&env) {
        assert!(hooks.contains(&format!("`{name}`")), "{name} undocumented");
    }
    for phase in [
        Phase::BeforeUpdate,
        Phase::AfterUpdate,
        Phase::Health,
        Phase::AfterRollback,
    ] {
        assert!(
            hooks.contains(&format!("`{phase}`")),
            "{phase} undocumented"
        );
    }
    assert!(hooks.contains(DEFAULT_PATH));
    assert!(hooks.contains(&format!("last {} KiB", KEPT_OUTPUT >> 10)));
    assert!(hooks.contains(&format!("last {SHOWN_LINES} lines")));
    assert!(hooks.contains(&format!("first {MAX_LOGGED_LINES} lines")));
}

#[test]
fn endless_output_neither_stops_the_timeout_nor_floods_the_log() {
    let f = Fixture::new();
    let mut result = None;
    let log = logged(|| result = Some(f.run("yes", Duration::from_secs(1))));
    let e = result.expect("ran").unwrap_err();
    assert!(e.timed_out(), "{e}");
    assert!(e.to_string().ends_with("\n  y\n  y"), "{e}");
    assert_eq!(
        log.lines().filter(|l| l.ends_with("health: y")).count(),
        MAX_LOGGED_LINES
    );
    assert!(log.contains("health: (more output; only its last lines are kept, for an error)"));
}

/// What the reference tells a device without systemd: `setsid -f` starts a program that
/// outlives the hook, and the hook still ends at once.
#[test]
fn a_program_started_with_setsid_outlives_its_hook() {
    let f = Fixture::new();
    f.run(
        "setsid -f sh -c 'echo $$ > ../app.pid; exec sleep 30' >/dev/null 2>&1",
        SHORT,
    )
    .expect("the hook succeeds");
    let mut pid = String::new();
    for _ in 0..250 {
        pid = fs::read_to_string(f.path("app.pid")).unwrap_or_default();
        if !pid.trim().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = pid.trim().to_owned();
    assert!(!pid.is_empty(), "the detached program never started");
    let alive = !gone(&pid);
    let _ = Command::new("kill").args(["-9", &pid]).status();
    assert!(alive, "the detached program {pid} was killed with the hook");
}

#[test]
fn post_update_runs_the_allow_listed_command_between_command_and_restart() {
    let f = Fixture::new();
    let log = f.systemctl(0);
    let (target, state) = (f.target(), f.state());
    let mut release = f.release.clone();
    release.post_update = Some("migrate".to_owned());
    let mut env = f.env(&target, &state, Phase::AfterUpdate);
    env.release = &release;
    let mut config = AfterUpdate {
        command: Some(format!("echo command >> '{}'", log.display())),
        restart: vec!["app.service".to_owned()],
        ..AfterUpdate::default()
    };
    config.post_update.insert(
        "migrate".to_owned(),
        format!("echo migrate $OTA_PHASE >> '{}'", log.display()),
    );
    f.hooks().after_update(&config, &env).expect("runs");
    let calls = fs::read_to_string(&log).expect("log");
    assert_eq!(
        calls,
        "command\nmigrate after_update\nrestart app.service\n"
    );

    // A name the allow-list does not map runs nothing; nor does a rollback.
    fs::remove_file(&log).expect("clear");
    release.post_update = Some("other".to_owned());
    let env = HookEnv {
        release: &release,
        ..f.env(&target, &state, Phase::AfterUpdate)
    };
    f.hooks().after_update(&config, &env).expect("runs");
    release.post_update = Some("migrate".to_owned());
    let env = HookEnv {
        release: &release,
        ..f.env(&target, &state, Phase::AfterRollback)
    };
    f.hooks().after_update(&config, &env).expect("runs");
    let calls = fs::read_to_string(&log).expect("log");
    assert_eq!(
        calls,
        "command\nrestart app.service\ncommand\nrestart app.service\n"
    );
}
