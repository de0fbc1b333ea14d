//! The trial of each release and the automatic rollback (issue 9), through the real `ota`
//! binary against `ota-serve` on loopback: health command, `ota confirm` and its deadline,
//! boots counted by `ota boot`, `ota rollback`, rejected releases, `--force`, and the
//! `[before_update]` / `[after_update]` commands. Commands are small `sh` scripts the
//! release ships (`health.sh`) or the test writes beside the target.

use serde_json::Value;

use crate::util::{Device, GitRepo, serve, tables};

/// v1.0.0: an application whose `health.sh` passes.
fn app_v1() -> GitRepo {
    let mut repo = GitRepo::new();
    repo.write("main.py", "print('v1')\n")
        .write("lib/util.py", "def util(): return 1\n")
        .write("lib/old.py", "OLD = 1\n")
        .write("health.sh", "echo healthy v1\nexit 0\n");
    repo.commit("v1");
    repo.tag("v1.0.0");
    repo
}

/// A release that changes, adds and deletes files; its `health.sh` exits `health`.
fn release(repo: &mut GitRepo, tag: &str, health: i32) {
    repo.write("main.py", format!("print('{tag}')\n"))
        .write(&format!("lib/{}.py", tag.replace('.', "_")), "NEW = 1\n")
        .write(
            "health.sh",
            format!("echo health of {tag}\nexit {health}\n"),
        );
    if repo.path().join("lib/old.py").exists() {
        repo.remove("lib/old.py");
    }
    repo.commit(tag);
    repo.tag(tag);
}

/// Seconds since the Unix epoch.
fn ota_now() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.unwrap().as_secs()
}

/// `ota status --json`, parsed.
fn status(device: &Device) -> Value {
    let out = device.ota_expect(&["status", "--json"], 0);
    let start = out.find('{').unwrap();
    let end = out.rfind('}').unwrap();
    serde_json::from_str(&out[start..=end]).unwrap()
}

/// The device holds exactly v1.0.0 again, and v2.0.0 is the one release rejected, for `kind`.
fn assert_back_on_v1(device: &Device, repo: &GitRepo, kind: &str) {
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));
    assert_eq!(rejected(device), [("v2.0.0".to_owned(), kind.to_owned())]);
}

/// Dates the trial of the installed release back two hours, as if the run that began it
/// had been interrupted long ago (no other ota can still be running its commands).
fn backdate_trial(device: &Device) {
    let state_file = device.target.join(".ota/state.json");
    let mut state: Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    let since = humantime::format_rfc3339_seconds(
        std::time::SystemTime::now() - std::time::Duration::from_secs(7200),
    );
    state["trial"]["since"] = since.to_string().into();
    state["trial"]["tried_at"] = (ota_now() - 7200).into();
    std::fs::write(&state_file, serde_json::to_vec(&state).unwrap()).unwrap();
}

/// The refs `ota status --json` lists as rejected, with their kind.
fn rejected(device: &Device) -> Vec<(String, String)> {
    let status = status(device);
    (status["rejected"].as_array().unwrap().iter())
        .map(|r| {
            let name = r["release"]["ref"].as_str().unwrap().to_owned();
            (name, r["kind"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// Requests that fetched a file's content or a file list (not the channel's answer).
fn downloads(server: &ota_serve::Server) -> Vec<String> {
    (server.stats().log.iter())
        .filter(|r| r.path.starts_with("/raw/") || r.path.contains("/git/trees/"))
        .map(|r| r.path.clone())
        .collect()
}

#[test]
fn a_release_whose_health_check_fails_is_rolled_back_and_skipped_until_a_newer_one() {
    let mut repo = app_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    tables(&device, "[trial]\nhealth_command = \"sh health.sh\"\n");

    let out = device.ota_expect(&["update"], 0);
    assert!(out.contains("v1.0.0 passed its trial: confirmed"), "{out}");
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));
    assert!(status(&device)["trial"].is_null());

    release(&mut repo, "v2.0.0", 1);
    server.reset_stats();
    let out = device.ota_expect(&["update"], 1);
    assert!(
        out.contains("v2.0.0")
            && out.contains("failed its trial")
            && out.contains("health of v2.0.0"),
        "the error names the release and shows the health command's output: {out}"
    );
    assert!(out.contains("rolled back: v1.0.0"), "{out}");
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"), "exactly v1 again");
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
    let error = device.last_error().unwrap();
    assert_eq!(
        (error["phase"].as_str(), error["kind"].as_str()),
        (Some("trial"), Some("unhealthy"))
    );
    assert_eq!(
        rejected(&device),
        [("v2.0.0".to_owned(), "health_failed".to_owned())]
    );
    let status = status(&device);
    assert_eq!(status["installed"]["release"]["ref"], "v1.0.0");
    assert!(status["trial"].is_null() && status["previous"].is_null());
    // The rollback took v1's files from the state folder's `previous/`: every download of
    // the run was v2's (its tree and the 3 files it changed), none of v1's.
    let v1 = repo.rev("v1.0.0");
    let fetched = downloads(&server);
    assert_eq!(fetched.len(), 4, "{fetched:#?}");
    assert!(
        (server.stats().log.iter()).all(|r| !r.path.contains(&v1)),
        "the rollback made no request: {:#?}",
        server.stats().log
    );

    // The next run asks the channel, sees v2 again, and downloads nothing.
    server.reset_stats();
    let out = device.ota_expect(&["update"], 0);
    assert!(
        out.contains("skipped v2.0.0") && out.contains("health_failed"),
        "{out}"
    );
    assert_eq!(downloads(&server), Vec::<String>::new(), "no tree, no file");
    assert_eq!(server.stats().raw_requests, 0);
    assert!(
        device.last_error().is_none(),
        "a successful update clears the error; the rejected list keeps the rollback"
    );
    let out = device.ota_expect(&["check"], 0);
    assert!(out.contains("failed its trial"), "{out}");
    let out = device.ota_expect(&["update", "--json"], 0);
    let json: Value =
        serde_json::from_str(&out[out.find('{').unwrap()..=out.rfind('}').unwrap()]).unwrap();
    assert_eq!(json["result"], "rejected");
    assert_eq!(json["rejected"]["kind"], "health_failed");

    // A newer, healthy release installs.
    release(&mut repo, "v3.0.0", 0);
    let out = device.ota_expect(&["update"], 0);
    assert!(out.contains("v3.0.0 passed its trial: confirmed"), "{out}");
    assert_eq!(device.tree(), repo.snapshot("v3.0.0"));
    assert_eq!(
        rejected(&device),
        [("v2.0.0".to_owned(), "health_failed".to_owned())]
    );
    assert!(device.last_error().is_none());
}

#[test]
fn a_release_never_confirmed_is_rolled_back_after_its_deadline() {
    let mut repo = app_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    tables(&device, "[trial]\nconfirm_within_sec = 1\n");

    let out = device.ota_expect(&["update"], 0);
    assert!(out.contains("waiting for `ota confirm`"), "{out}");
    let out = device.ota_expect(&["confirm"], 0);
    assert!(out.contains("v1.0.0") && out.contains("confirmed"), "{out}");

    release(&mut repo, "v2.0.0", 0);
    let out = device.ota_expect(&["update"], 0);
    assert!(
        out.contains("v2.0.0 is on trial, waiting for `ota confirm` by"),
        "{out}"
    );
    assert_eq!(device.tree(), repo.snapshot("v2.0.0"));
    let trial = &status(&device)["trial"];
    assert_eq!(trial["state"], "pending");
    assert_eq!(trial["waiting_for"], serde_json::json!(["confirm"]));
    assert!(trial["confirm_deadline"].is_string(), "{trial}");
    let previous = &status(&device)["previous"];
    assert_eq!(previous["release"]["ref"], "v1.0.0");
    // v1's main.py, health.sh and lib/old.py, which v2 replaced or deleted.
    let kept = ["print('v1')\n", "echo healthy v1\nexit 0\n", "OLD = 1\n"];
    assert_eq!(
        previous["kept_bytes"],
        kept.iter().map(|k| k.len()).sum::<usize>()
    );

    // Nobody confirms. Past the deadline, the next run rolls back before any request.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    server.reset_stats();
    let out = device.ota_expect(&["update"], 1);
    assert!(
        out.contains("not_confirmed") && out.contains("rolled back"),
        "{out}"
    );
    assert_back_on_v1(&device, &repo, "not_confirmed");
    assert_eq!(
        server.stats().requests,
        0,
        "the trial was settled before the channel was asked, and the rollback used the \
         kept files: {:#?}",
        server.stats().log
    );
    server.reset_stats();
    let out = device.ota_expect(&["update"], 0);
    assert!(out.contains("skipped v2.0.0"), "{out}");
    assert_eq!(server.stats().raw_requests, 0);
}

#[test]
fn a_late_confirmation_rolls_back() {
    let mut repo = app_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    tables(&device, "[trial]\nconfirm_within_sec = 1\n");
    device.ota_expect(&["update"], 0);
    device.ota_expect(&["confirm"], 0);
    release(&mut repo, "v2.0.0", 0);
    device.ota_expect(&["update"], 0);

    std::thread::sleep(std::time::Duration::from_millis(2100));
    server.reset_stats();
    let out = device.ota_expect(&["confirm"], 1);
    assert_eq!(server.stats().requests, 0, "a rollback needs no network");
    assert!(
        out.contains("not_confirmed") && out.contains("rolled back"),
        "{out}"
    );
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));
    assert_eq!(device.last_error().unwrap()["kind"], "unhealthy");
    let out = device.ota_expect(&["confirm"], 0);
    assert!(out.contains("no release is on trial"), "{out}");
}

#[test]
fn boots_are_counted_and_one_too_many_rolls_back() {
    let mut repo = app_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    tables(&device, "[trial]\nboots = 2\nconfirm_within_sec = 3600\n");
    device.ota_expect(&["update"], 0);
    device.ota_expect(&["confirm"], 0);
    device.ota_expect(&["boot"], 0);
    let out = device.ota_expect(&["boot"], 0);
    assert!(out.contains("v1.0.0") && out.contains("confirmed"), "{out}");
    let out = device.ota_expect(&["boot"], 0);
    assert!(out.contains("no release is on trial"), "{out}");

    // v2 is never confirmed: the third boot on trial rolls it back, with no network.
    release(&mut repo, "v2.0.0", 0);
    device.ota_expect(&["update"], 0);
    for boot in 1..=2 {
        let out = device.ota_expect(&["boot"], 0);
        assert!(
            out.contains("waiting for `ota confirm`"),
            "boot {boot}: {out}"
        );
        assert_eq!(status(&device)["trial"]["boots"], boot);
    }
    assert_eq!(status(&device)["trial"]["boots_needed"], 2);
    server.reset_stats();
    let out = device.ota_expect(&["boot"], 1);
    assert_eq!(
        server.stats().requests,
        0,
        "a rollback at boot needs no network"
    );
    assert!(
        out.contains("too_many_boots") && out.contains("rolled back"),
        "{out}"
    );
    assert_back_on_v1(&device, &repo, "too_many_boots");

    // v3 is confirmed by the application and survives its two boots.
    release(&mut repo, "v3.0.0", 0);
    device.ota_expect(&["update"], 0);
    device.ota_expect(&["boot"], 0);
    let out = device.ota_expect(&["confirm"], 0);
    assert!(out.contains("waiting for 2 boots"), "{out}");
    let out = device.ota_expect(&["boot", "--json"], 0);
    let json: Value =
        serde_json::from_str(&out[out.find('{').unwrap()..=out.rfind('}').unwrap()]).unwrap();
    assert_eq!(json["trial"]["state"], "confirmed");
    assert_eq!(device.tree(), repo.snapshot("v3.0.0"));
    assert!(status(&device)["trial"].is_null());
    assert!(
        device.leftovers().is_empty(),
        "confirmed: nothing kept any more: {:?}",
        device.leftovers()
    );
}

#[test]
fn rollback_by_hand_then_force_reinstalls_the_rejected_release() {
    let mut repo = app_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    tables(&device, "[trial]\nconfirm_within_sec = 3600\n");
    device.ota_expect(&["update"], 0);
    let out = device.ota_expect(&["rollback"], 1);
    assert!(
        out.contains("nothing to roll back to") && out.contains("first release"),
        "{out}"
    );
    device.ota_expect(&["confirm"], 0);
    let out = device.ota_expect(&["rollback"], 1);
    assert!(
        out.contains("v1.0.0") && out.contains("is confirmed"),
        "{out}"
    );
    assert_eq!(device.last_error().unwrap()["kind"], "no_rollback_point");

    release(&mut repo, "v2.0.0", 0);
    device.ota_expect(&["update"], 0);
    server.reset_stats();
    let out = device.ota_expect(&["rollback"], 0);
    assert_eq!(server.stats().requests, 0, "a rollback needs no network");
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
    assert!(
        out.contains("rolled back v2.0.0") && out.contains("→ v1.0.0"),
        "{out}"
    );
    assert_back_on_v1(&device, &repo, "by_hand");
    assert!(
        device.last_error().is_none(),
        "a rollback by hand is a success"
    );

    let out = device.ota_expect(&["update"], 0);
    assert!(out.contains("skipped v2.0.0"), "{out}");
    let out = device.ota_expect(&["update", "--force"], 0);
    assert!(out.contains("v2.0.0 is on trial"), "{out}");
    assert_eq!(device.tree(), repo.snapshot("v2.0.0"));
    assert_eq!(rejected(&device), []);
}

#[test]
fn a_failing_before_update_command_changes_nothing() {
    let mut repo = app_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    device.ota_expect(&["update"], 0);
    let state = std::fs::read(device.target.join(".ota/state.json")).unwrap();
    tables(
        &device,
        "[before_update]\ncommand = \"echo stopping the app; exit 7\"\n",
    );

    release(&mut repo, "v2.0.0", 0);
    let out = device.ota_expect(&["update"], 1);
    assert!(
        out.contains("exit code 7") && out.contains("nothing changed"),
        "{out}"
    );
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));
    assert_eq!(
        std::fs::read(device.target.join(".ota/state.json")).unwrap(),
        state
    );
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
    let error = device.last_error().unwrap();
    assert_eq!(
        (error["phase"].as_str(), error["kind"].as_str()),
        (Some("before_update"), Some("hook_failed"))
    );

    device.edit_config("exit 7", "exit 0");
    device.ota_expect(&["update"], 0);
    assert_eq!(device.tree(), repo.snapshot("v2.0.0"));
}

#[test]
fn a_failing_after_update_command_fails_the_trial() {
    let mut repo = app_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    let script = device.home().join("after.sh");
    let log = device.home().join("after.log");
    let write_script = |code: i32| {
        let text = format!(
            "echo \"$OTA_PHASE $OTA_RELEASE ${{OTA_PREVIOUS:-none}}\" >> '{}'\nexit {code}\n",
            log.display()
        );
        std::fs::write(&script, text).unwrap();
    };
    write_script(0);
    tables(
        &device,
        &format!("[after_update]\ncommand = \"sh '{}'\"\n", script.display()),
    );
    device.ota_expect(&["update"], 0);

    write_script(3);
    release(&mut repo, "v2.0.0", 0);
    let out = device.ota_expect(&["update"], 1);
    assert!(
        out.contains("after_update_failed") && out.contains("exit code 3"),
        "{out}"
    );
    assert_back_on_v1(&device, &repo, "after_update_failed");
    // The after-update command ran for v1, for v2, and again once v1 was restored.
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "after_update v1.0.0 none\nafter_update v2.0.0 v1.0.0\nafter_rollback v1.0.0 v2.0.0\n"
    );
}

/// The order of what runs after an update and after a rollback: the `[after_update]`
/// command, `systemctl restart` (a recording `systemctl` first in `PATH`: never the real
/// one), then the health command; after the rollback, the command and the restart again for
/// the restored release.
#[test]
fn after_update_actions_run_before_the_health_command_and_again_after_a_rollback() {
    let mut repo = app_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    let bin = device.home().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = device.home().join("actions.log");
    let systemctl = bin.join("systemctl");
    let record = format!(
        "#!/bin/sh\necho \"systemctl $* ($OTA_PHASE)\" >> '{}'\n",
        log.display()
    );
    std::fs::write(&systemctl, record).unwrap();
    std::fs::set_permissions(
        &systemctl,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!("{}:/usr/bin:/bin", bin.display());
    // The recording systemctl is the one a hook finds.
    let found = std::process::Command::new("sh")
        .args(["-c", "command -v systemctl"])
        .env_clear()
        .env("PATH", &path)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&found.stdout).trim(),
        systemctl.to_str().unwrap()
    );
    tables(
        &device,
        &format!(
            "[trial]\nhealth_command = \"echo health $OTA_RELEASE >> '{log}'; sh health.sh\"\n\
             [after_update]\ncommand = \"echo command $OTA_PHASE $OTA_RELEASE >> '{log}'\"\n\
             restart = [\"app.service\"]\n",
            log = log.display()
        ),
    );

    device.ota_with_path(&["update"], &path, 0);
    release(&mut repo, "v2.0.0", 1);
    device.ota_with_path(&["update"], &path, 1);
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "command after_update v1.0.0\n\
         systemctl restart app.service (after_update)\n\
         health v1.0.0\n\
         command after_update v2.0.0\n\
         systemctl restart app.service (after_update)\n\
         health v2.0.0\n\
         command after_rollback v1.0.0\n\
         systemctl restart app.service (after_rollback)\n"
    );
}

/// A health result that never came (ota was killed while the health command ran, here
/// forged by dating the trial back): the next `ota update` runs the health command again,
/// asks the network nothing, and records the verdict.
#[test]
fn a_health_command_whose_run_was_interrupted_runs_again() {
    let mut repo = app_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    tables(&device, "[trial]\nconfirm_within_sec = 3600\n");
    device.ota_expect(&["update"], 0);
    device.ota_expect(&["confirm"], 0);
    release(&mut repo, "v2.0.0", 0);
    device.ota_expect(&["update"], 0);
    let out = device.ota_expect(&["status"], 0);
    assert!(
        out.contains("waiting for `ota confirm`") && out.contains("rollback to: v1.0.0"),
        "{out}"
    );

    // The health command is configured, and the trial began two hours ago without its
    // result (its deadline, recorded then, is still ahead).
    device.edit_config("[trial]\n", "[trial]\nhealth_command = \"sh health.sh\"\n");
    backdate_trial(&device);

    server.reset_stats();
    let out = device.ota_expect(&["update"], 0);
    assert!(
        out.contains("ran the after-update actions and the health command of v2.0.0 ")
            && out.contains(" again (the run after its update was interrupted)"),
        "{out}"
    );
    assert!(out.contains("waiting for `ota confirm`"), "{out}");
    assert_eq!(server.stats().requests, 0, "{:#?}", server.stats().log);
    assert_eq!(status(&device)["trial"]["health"], "passed");
    assert!(
        !device.leftovers().is_empty(),
        "v1's files are kept while v2 is on trial"
    );
    let out = device.ota_expect(&["confirm"], 0);
    assert!(out.contains("confirmed"), "{out}");
    assert_eq!(device.tree(), repo.snapshot("v2.0.0"));
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
}

/// With only an after-update action configured (no health command, no confirmation), ota
/// killed while the action runs must not leave the release confirmed without it: the next
/// `ota update` runs the action again, asks the network nothing, then confirms.
#[test]
fn after_update_actions_cut_short_by_a_kill_run_again_before_the_release_is_confirmed() {
    let mut repo = app_v1();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    let log = device.home().join("actions.log");
    // The action of v2's update kills ota (its parent) on its first run, as a power cut or
    // an OOM kill would at that moment; it finishes its own line first.
    let marker = device.home().join("killed-once");
    tables(
        &device,
        &format!(
            "[after_update]\ncommand = \"echo ran $OTA_RELEASE >> '{log}'; \
             if [ $OTA_RELEASE = v2.0.0 ] && [ ! -e '{marker}' ]; then touch '{marker}'; \
             kill -9 $PPID; fi\"\n",
            log = log.display(),
            marker = marker.display()
        ),
    );
    device.ota_expect(&["update"], 0);
    assert_eq!(
        status(&device)["trial"],
        Value::Null,
        "v1 confirmed at once"
    );
    release(&mut repo, "v2.0.0", 0);
    let out = device.ota(&["update"]);
    assert_eq!(out.status.code(), None, "ota was killed by its own action");
    assert_eq!(device.tree(), repo.snapshot("v2.0.0"));
    assert_eq!(status(&device)["trial"]["health"], "pending");

    // The interrupted run began two hours ago, so no other ota can still be running it.
    backdate_trial(&device);

    server.reset_stats();
    let out = device.ota_expect(&["update"], 0);
    assert!(out.contains("again"), "{out}");
    assert_eq!(server.stats().requests, 0, "{:#?}", server.stats().log);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "ran v1.0.0\nran v2.0.0\nran v2.0.0\n"
    );
    assert_eq!(status(&device)["trial"], Value::Null, "v2 confirmed now");
    assert_eq!(device.tree(), repo.snapshot("v2.0.0"));
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
}
