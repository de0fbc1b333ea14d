//! The systemd units in contrib/systemd/ that run ota unattended: checked by systemd's own
//! `systemd-analyze verify`, with the built `ota` as their program. (The hooks themselves
//! are tested in src/hooks/tests.rs, where a test can hand them its own `PATH`.)

use std::fs;
use std::path::Path;
use std::process::Command;

const UNITS: [&str; 3] = ["ota.service", "ota.timer", "ota-boot.service"];

/// Where the README installs ota, as the units name it.
const INSTALLED: &str = "/usr/local/bin/ota";

fn unit_text(name: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd");
    fs::read_to_string(dir.join(name)).unwrap()
}

/// The `ExecStart=` lines of a unit.
fn exec_start(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|line| line.strip_prefix("ExecStart="))
        .collect()
}

#[test]
fn the_units_run_the_installed_ota() {
    assert_eq!(
        exec_start(&unit_text("ota.service")),
        [format!("{INSTALLED} update")]
    );
    assert_eq!(
        exec_start(&unit_text("ota-boot.service")),
        [format!("{INSTALLED} boot")]
    );
    let timer = unit_text("ota.timer");
    assert!(timer.contains("\nUnit=ota.service\n"), "{timer}");
    assert!(timer.contains("\nPersistent=true\n"), "{timer}");
    // The update waits for the boot check, and the boot check for the local filesystems.
    let service = unit_text("ota.service");
    assert!(service.contains("ota-boot.service"), "{service}");
    assert!(unit_text("ota-boot.service").contains("\nAfter=local-fs.target\n"));
}

#[test]
fn systemd_analyze_verify_accepts_the_units() {
    let found = Command::new("systemd-analyze").arg("--version").output();
    if !found.is_ok_and(|out| out.status.success()) {
        println!("note: systemd-analyze is not installed; the units were not verified");
        return;
    }
    // verify checks that ExecStart's program exists: point the copies at the built ota.
    let dir = tempfile::tempdir().unwrap();
    let ota = env!("CARGO_BIN_EXE_ota");
    let mut paths = Vec::new();
    for name in UNITS {
        let text = unit_text(name).replace(INSTALLED, ota);
        let path = dir.path().join(name);
        fs::write(&path, text).unwrap();
        paths.push(path);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    // verify only warns (exit 0) about an unknown key or section: none may concern ours.
    let ours: Vec<&str> = said
        .lines()
        .filter(|line| UNITS.iter().any(|unit| line.contains(unit)))
        .collect();
    assert!(ours.is_empty(), "{said}");

    // And it does catch a mistake, so a silent pass above means something.
    let bad = dir.path().join("ota.service");
    fs::write(
        &bad,
        unit_text("ota.service").replace("[Service]", "[Service]\nBogus=1"),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&bad)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("Unknown key 'Bogus'"), "{said}");
}
