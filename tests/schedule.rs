//! `[schedule]`: a deferred run makes no request and exits 0; `--now` and `--force` run.

use crate::util::{Device, GitRepo, serve};

fn two_releases() -> GitRepo {
    let mut repo = GitRepo::new();
    repo.write("main.py", "v = 1\n");
    repo.commit("v1");
    repo.tag("v1.0.0");
    repo
}

fn add_schedule(device: &Device, lines: &str) {
    let text = std::fs::read_to_string(&device.config).unwrap();
    std::fs::write(&device.config, format!("{text}\n[schedule]\n{lines}\n")).unwrap();
}

fn json(out: &str) -> serde_json::Value {
    let start = out.find('{').unwrap();
    let end = out.rfind('}').unwrap();
    serde_json::from_str(&out[start..=end]).unwrap()
}

#[test]
fn within_the_interval_an_update_is_deferred_without_a_request_and_now_runs_it() {
    let mut repo = two_releases();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    add_schedule(&device, "min_interval_sec = 3600");
    device.ota_expect(&["update"], 0);
    assert_eq!(
        std::fs::read_to_string(device.target.join("main.py")).unwrap(),
        "v = 1\n"
    );

    repo.write("main.py", "v = 2\n");
    repo.commit("v2");
    repo.tag("v2.0.0");
    server.reset_stats();
    let out = device.ota_expect(&["update"], 0);
    assert!(
        out.contains("deferred") && out.contains("min_interval_sec"),
        "{out}"
    );
    let out = device.ota_expect(&["update", "--json"], 0);
    let value = json(&out);
    assert_eq!(value["result"], "deferred", "{out}");
    assert_eq!(value["reason"], "interval", "{out}");
    assert!(value["next_allowed"].is_string(), "{out}");
    assert_eq!(server.stats().requests, 0, "a deferred run asks nothing");
    assert_eq!(
        std::fs::read_to_string(device.target.join("main.py")).unwrap(),
        "v = 1\n"
    );

    let status = json(&device.ota_expect(&["status", "--json"], 0));
    assert_eq!(status["schedule"]["reason"], "interval", "{status}");
    assert_eq!(status["schedule"]["safe_mode"], false, "{status}");
    let out = device.ota_expect(&["status"], 0);
    assert!(out.contains("schedule:    checked less than"), "{out}");

    device.ota_expect(&["update", "--now"], 0);
    assert_eq!(
        std::fs::read_to_string(device.target.join("main.py")).unwrap(),
        "v = 2\n"
    );
}

#[test]
fn outside_the_window_an_update_waits_for_the_next_opening() {
    let repo = two_releases();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    // A one-hour window that opens in two hours' time (local time, as ota reads it).
    let hour = jiff::ZonedDateTime::now().hour();
    let (start, end) = ((hour + 2) % 24, (hour + 3) % 24);
    let end = if end == 0 { 24 } else { end };
    add_schedule(
        &device,
        &format!("window_start_hour = {start}\nwindow_end_hour = {end}"),
    );
    let out = device.ota_expect(&["update"], 0);
    assert!(out.contains("outside the update window"), "{out}");
    assert_eq!(server.stats().requests, 0);
    assert!(!device.target.join("main.py").exists());
    let out = device.ota_expect(&["update", "--now"], 0);
    assert!(device.target.join("main.py").exists(), "{out}");
}

#[test]
fn repeated_failures_enter_safe_mode_which_force_or_a_new_release_ends() {
    let mut repo = two_releases();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    let text = std::fs::read_to_string(&device.config).unwrap();
    let text = format!("{text}\n[before_update]\ncommand = \"exit 3\"\n");
    std::fs::write(&device.config, text).unwrap();
    add_schedule(&device, "max_crashes_before_delay = 2\nmax_delay_sec = 600");
    device.ota_expect(&["update"], 1);
    device.ota_expect(&["update"], 1);
    assert_eq!(device.last_error().unwrap()["consecutive"], 2);

    server.reset_stats();
    for args in [&["update"][..], &["update", "--now"]] {
        let out = device.ota_expect(args, 0);
        assert!(
            out.contains("safe mode") && out.contains("--force"),
            "{out}"
        );
    }
    // Each run asks the channel once (is the failing release still the one?), no more.
    let stats = server.stats();
    assert_eq!(stats.requests, 2, "{:#?}", stats.log);
    let status = json(&device.ota_expect(&["status", "--json"], 0));
    assert_eq!(status["schedule"]["safe_mode"], true, "{status}");
    assert!(status["schedule"]["next_allowed"].is_string(), "{status}");

    // `--force` tries now (and fails again, at the same hook).
    device.ota_expect(&["update", "--force"], 1);
    assert_eq!(device.last_error().unwrap()["consecutive"], 3);

    // A new release is tried at once, and its failures are counted afresh.
    repo.write("main.py", "v = 2\n");
    repo.commit("v2");
    repo.tag("v2.0.0");
    device.ota_expect(&["update"], 1);
    let last = device.last_error().unwrap();
    assert_eq!(last["consecutive"], 1, "{last}");
    assert_eq!(last["release"]["ref"], "v2.0.0", "{last}");
}

#[test]
fn a_device_outside_the_rollout_keeps_its_release_until_the_percentage_covers_it() {
    let mut repo = two_releases();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    repo.write("main.py", "v = 2\n");
    let v2 = repo.commit("v2");
    let bucket = ota::schedule::rollout_bucket("pump-7", &v2);
    repo.run(&["reset", "-q", "--hard", "HEAD~1"]);
    add_schedule(
        &device,
        &format!("device_id = \"pump-7\"\nrollout_percent = {bucket}"),
    );
    // A first install takes the release whatever the rollout.
    device.ota_expect(&["update"], 0);
    assert_eq!(
        std::fs::read_to_string(device.target.join("main.py")).unwrap(),
        "v = 1\n"
    );

    repo.run(&["reset", "-q", "--hard", &v2]);
    repo.tag("v2.0.0");
    for args in [&["update"][..], &["update", "--now"]] {
        let out = device.ota_expect(args, 0);
        assert!(
            out.contains("deferred") && out.contains("rollout_percent"),
            "{out}"
        );
    }
    let out = device.ota_expect(&["update", "--dry-run"], 0);
    assert!(out.contains("deferred"), "{out}");
    // `check` reports the channel's release, whatever the rollout.
    device.ota_expect(&["check"], 100);
    let value = json(&device.ota_expect(&["update", "--json"], 0));
    assert_eq!(
        (&value["result"], &value["reason"]),
        (&"deferred".into(), &"rollout".into())
    );
    assert_eq!(
        std::fs::read_to_string(device.target.join("main.py")).unwrap(),
        "v = 1\n"
    );

    // The fleet owner widens the rollout by one point: this device is in.
    device.edit_config(
        &format!("rollout_percent = {bucket}"),
        &format!("rollout_percent = {}", bucket + 1),
    );
    device.ota_expect(&["update"], 0);
    assert_eq!(
        std::fs::read_to_string(device.target.join("main.py")).unwrap(),
        "v = 2\n"
    );
}

#[test]
fn the_window_is_in_the_local_time_of_tz() {
    let repo = two_releases();
    let server = serve(repo.path());
    // The hour now at UTC+12 (POSIX `TZ` writes it `XXX-12`): a window of that hour and
    // the next is open there (even if the hour turns meanwhile) and closed in UTC.
    let hour = (jiff::Timestamp::now().as_second() / 3600 + 12) % 24;
    let end = match (hour + 2) % 24 {
        0 => 24,
        end => end,
    };
    let run = |tz: &str| {
        let device = Device::new(&server, "");
        add_schedule(
            &device,
            &format!("window_start_hour = {hour}\nwindow_end_hour = {end}"),
        );
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ota"))
            .args(["update", "--config"])
            .arg(&device.config)
            .env("TZ", tz)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (device.target.join("main.py").exists(), text)
    };
    let (installed, out) = run("UTC0");
    assert!(
        !installed && out.contains("outside the update window"),
        "{out}"
    );
    let (installed, out) = run("XXX-12");
    assert!(installed, "{out}");
}
