//! `ota-serve demo`, the README's first command: the real binary, start to end.

use std::process::Command;

#[test]
fn the_demo_installs_v1_then_updates_to_v2_and_prints_each_step() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ota-serve"))
        .args(["demo", "--dir"])
        .arg(dir.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in 1..=8 {
        assert!(
            stdout.contains(&format!("\n{step}. ")),
            "step {step}:\n{stdout}"
        );
    }
    assert!(stdout.contains("installed v1.0.0"), "{stdout}");
    assert!(stdout.contains("update available: v2.0.0"), "{stdout}");
    assert!(
        stdout.contains("updated v1.0.0 (stable) → v2.0.0 (stable)"),
        "{stdout}"
    );
    assert!(stdout.contains("up to date: v2.0.0"), "{stdout}");

    // The device folder holds v2 exactly: edited, added, deleted, and `tests/` ignored.
    let app = dir.path().join("device/app");
    let main = std::fs::read_to_string(app.join("main.py")).unwrap();
    assert!(main.contains("display.show"), "{main}");
    assert!(app.join("lib/display.py").is_file());
    assert!(!app.join("assets/logo.txt").exists());
    assert!(!app.join("tests").exists());
    assert_eq!(
        std::fs::read_link(app.join("current")).unwrap(),
        std::path::Path::new("main.py")
    );
}
