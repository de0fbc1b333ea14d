//! What ota tells the device while it runs (issue 10, items 3–5), through the real `ota`
//! binary against `ota-serve` on loopback: systemd's `NOTIFY_SOCKET` (a real unix datagram
//! socket the test binds, by path and in the abstract namespace), a watchdog device (a
//! regular file and a FIFO stand in for `/dev/watchdog`) and a status LED (a folder stands
//! in for its sysfs folder). Hooks copy what the LED shows at their phase.

use std::fs;
use std::io::Read;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::util::{Device, exited, serve, small_app, tables};

/// Runs the real `ota` with this device's config and `env` added to its environment, and
/// reads what it sends to `socket` meanwhile (the socket's queue is short: ota would lose
/// messages if nobody read them). Returns its output and the messages, in order.
fn ota_notifying(
    device: &Device,
    args: &[&str],
    env: &[(&str, &str)],
    socket: &UnixDatagram,
) -> (Output, Vec<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ota"));
    cmd.args(args)
        .arg("--config")
        .arg(&device.config)
        .env_remove("OTA_TOKEN")
        .env_remove("OTA_CONFIG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env("RUST_LOG", "ota=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    let mut exited = false;
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => messages.push(String::from_utf8(buf[..n].to_vec()).unwrap()),
            // Nothing waiting: done once ota has exited and the queue is empty.
            Err(_) if exited => break,
            Err(_) => exited = child.try_wait().unwrap().is_some(),
        }
    }
    (child.wait_with_output().unwrap(), messages)
}

/// The `STATUS=` messages, in order.
fn statuses(messages: &[String]) -> Vec<&str> {
    let status = messages.iter().filter_map(|m| m.strip_prefix("STATUS="));
    status.collect()
}

#[test]
fn systemd_hears_ready_each_phase_and_keepalives_through_a_socket_path() {
    let repo = small_app();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    let socket_path = device.home().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let env = [
        ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
        // An hour: a keepalive at each phase change, none due in between. (At most ten
        // datagrams wait in a socket's queue: a test that sent more could lose some.)
        ("WATCHDOG_USEC", "3600000000"),
    ];
    let (out, messages) = ota_notifying(&device, &["update"], &env, &socket);
    exited(&out, &["update"], 0);
    assert_eq!(read(&device.target.join("main.py")), "print('v1')");

    assert_eq!(
        messages.first().map(String::as_str),
        Some("READY=1"),
        "{messages:?}"
    );
    assert_eq!(
        statuses(&messages),
        [
            "checking for a new release",
            "downloading a new release",
            "applying a new release",
            "idle"
        ],
        "{messages:?}"
    );
    let keepalives = messages.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert_eq!(keepalives, 3, "one at each phase: {messages:?}");
    assert_eq!(messages.iter().filter(|m| *m == "READY=1").count(), 1);
}

#[test]
fn a_failed_update_leaves_its_failure_as_status_on_an_abstract_socket() {
    let repo = small_app();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    tables(&device, "[before_update]\ncommand = \"exit 3\"\n");
    let name = format!("ota-test-notify-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    let env = [
        ("NOTIFY_SOCKET", &*format!("@{name}")),
        ("WATCHDOG_USEC", "1"),
        // The watchdog variables were meant for another process: no keepalives.
        ("WATCHDOG_PID", "1"),
    ];
    let (out, messages) = ota_notifying(&device, &["update"], &env, &socket);
    exited(&out, &["update"], 1);
    assert!(!device.target.join("main.py").exists());

    assert_eq!(
        messages.first().map(String::as_str),
        Some("READY=1"),
        "{messages:?}"
    );
    let statuses = statuses(&messages);
    assert_eq!(
        statuses.last().copied(),
        Some("the last command failed (see the log and `ota status`)"),
        "{messages:?}"
    );
    assert!(!statuses.contains(&"idle"), "{messages:?}");
    assert!(!messages.iter().any(|m| m == "WATCHDOG=1"), "{messages:?}");
}

/// A folder laid out like `/sys/class/leds/NAME`, with `trigger` showing `current`.
fn fake_led(dir: &Path, current: &str, brightness: &str) {
    fs::create_dir_all(dir).unwrap();
    let triggers = ["none", "mmc0", "timer", "heartbeat"].map(|t| match t == current {
        true => format!("[{t}]"),
        false => t.to_owned(),
    });
    fs::write(dir.join("trigger"), triggers.join(" ") + "\n").unwrap();
    fs::write(dir.join("brightness"), format!("{brightness}\n")).unwrap();
    fs::write(dir.join("max_brightness"), "255\n").unwrap();
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap().trim().to_owned()
}

#[test]
fn the_led_shows_each_phase_and_the_watchdog_is_fed_then_stopped() {
    let repo = small_app();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    let led = device.home().join("leds/ACT");
    fake_led(&led, "none", "1");
    let watchdog = device.home().join("watchdog");
    fs::write(&watchdog, "").unwrap();
    let seen = device.home().join("seen");
    fs::create_dir(&seen).unwrap();
    // Each hook copies what the LED shows at its phase.
    let copy = |phase: &str, files: &[&str]| {
        let copies = files.iter().map(|f| {
            format!(
                "cp {} {}",
                led.join(f).display(),
                seen.join(format!("{phase}.{f}")).display()
            )
        });
        copies.collect::<Vec<_>>().join(" && ")
    };
    tables(
        &device,
        &format!(
            "[device]\nwatchdog_device = {watchdog:?}\nled = {led:?}\n\
             [before_update]\ncommand = {:?}\n[trial]\nhealth_command = {:?}\n",
            copy("applying", &["trigger", "brightness"]),
            copy("trial", &["trigger", "delay_on", "delay_off"]),
        ),
    );
    device.ota_expect(&["update"], 0);
    assert_eq!(read(&device.target.join("main.py")), "print('v1')");

    assert_eq!(read(&seen.join("applying.trigger")), "none");
    assert_eq!(read(&seen.join("applying.brightness")), "255");
    assert_eq!(read(&seen.join("trial.trigger")), "timer");
    assert_eq!(read(&seen.join("trial.delay_on")), "50");
    assert_eq!(read(&seen.join("trial.delay_off")), "950");
    // Given back: the trigger it had, and (with trigger `none`) its brightness.
    assert_eq!(read(&led.join("trigger")), "none");
    assert_eq!(read(&led.join("brightness")), "1");

    // Fed at each phase (checking, downloading, applying, trial), then the magic 'V'.
    let bytes = fs::read(&watchdog).unwrap();
    let (last, feeds) = bytes.split_last().unwrap();
    assert_eq!(*last, b'V', "{bytes:?}");
    assert!(
        feeds.len() >= 4 && feeds.iter().all(|b| *b == 0),
        "{bytes:?}"
    );
}

#[test]
fn after_a_failure_the_led_gets_its_own_trigger_back() {
    let repo = small_app();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    let led = device.home().join("leds/ACT");
    fake_led(&led, "mmc0", "0");
    tables(
        &device,
        &format!("[device]\nled = {led:?}\n[before_update]\ncommand = \"exit 3\"\n"),
    );
    device.ota_expect(&["update"], 1);
    assert_eq!(read(&led.join("trigger")), "mmc0");
    // Its brightness belongs to the trigger: the last ota wrote stays in the stand-in.
    assert_eq!(read(&led.join("delay_on")), "1000");
}

#[test]
fn a_watchdog_fifo_reads_feeds_then_the_magic_character() {
    let repo = small_app();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    let fifo = device.home().join("watchdog.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    tables(
        &device,
        &format!("[device]\nwatchdog_device = {fifo:?}\nwatchdog_timeout_ms = 15000\n"),
    );
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            fs::File::open(fifo)
                .unwrap()
                .read_to_end(&mut bytes)
                .unwrap();
            bytes
        })
    };
    device.ota_expect(&["update"], 0);
    let bytes = reader.join().unwrap();
    let (last, feeds) = bytes.split_last().unwrap();
    assert_eq!(*last, b'V', "{bytes:?}");
    assert!(
        feeds.len() >= 3 && feeds.iter().all(|b| *b == 0),
        "{bytes:?}"
    );
    assert!(device.target.join("main.py").exists());
}

#[test]
fn a_missing_watchdog_or_led_only_warns() {
    let repo = small_app();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    let watchdog = device.home().join("no-watchdog");
    let led = device.home().join("no-led");
    tables(
        &device,
        &format!("[device]\nwatchdog_device = {watchdog:?}\nled = {led:?}\n"),
    );
    let out = device.ota_expect(&["update"], 0);
    assert!(out.contains("cannot open the watchdog"), "{out}");
    assert!(out.contains("cannot read the LED's"), "{out}");
    assert!(device.target.join("main.py").exists());
    // Never created in the device's place.
    assert!(!watchdog.exists() && !led.exists());
}
