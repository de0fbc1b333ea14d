//! Resource guards (issue 10, item 7): an update is deferred (exit 75, nothing downloaded,
//! nothing changed, not counted as a failure) while memory, battery or storage run low.
//! Free memory and the battery are read from folders standing in for `/proc` and `/sys`.

use std::fs;
use std::path::Path;
use std::process::Command;

use ota_serve::Server;
use serde_json::Value;
use tempfile::TempDir;

use crate::util::{Device, GitRepo, exited, serve};

/// A folder standing in for both `/proc` and `/sys`.
struct Machine {
    dir: TempDir,
}

impl Machine {
    fn new() -> Machine {
        Machine {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn mem_available_kb(&self, kb: u64) {
        let meminfo = format!("MemTotal: 4000000 kB\nMemFree: 100 kB\nMemAvailable: {kb} kB\n");
        fs::write(self.dir.path().join("meminfo"), meminfo).unwrap();
    }

    /// Writes `/sys/class/power_supply/NAME` with `attrs`.
    fn supply(&self, name: &str, attrs: &[(&str, &str)]) {
        let dir = self.dir.path().join("class/power_supply").join(name);
        fs::create_dir_all(&dir).unwrap();
        for (attr, value) in attrs {
            fs::write(dir.join(attr), format!("{value}\n")).unwrap();
        }
    }

    /// Runs `ota ARGS --config …` reading this machine's `/proc` and `/sys`.
    fn ota(&self, device: &Device, args: &[&str], code: i32) -> String {
        let root: &Path = self.dir.path();
        let out = Command::new(env!("CARGO_BIN_EXE_ota"))
            .args(args)
            .arg("--config")
            .arg(&device.config)
            .env_remove("OTA_TOKEN")
            .env_remove("OTA_CONFIG")
            .env("RUST_LOG", "ota=debug")
            .env("OTA_TEST_PROC_ROOT", root)
            .env("OTA_TEST_SYS_ROOT", root)
            .output()
            .unwrap();
        exited(&out, args, code)
    }
}

/// The JSON object in `out`.
fn json(out: &str) -> Value {
    serde_json::from_str(&out[out.find('{').unwrap()..=out.rfind('}').unwrap()]).unwrap()
}

fn guards(device: &Device, lines: &str) {
    let text = fs::read_to_string(&device.config).unwrap();
    fs::write(&device.config, format!("{text}\n[guards]\n{lines}\n")).unwrap();
}

/// A device with v1.0.0 installed; the channel then names v2.0.0.
fn device_behind() -> (GitRepo, Server, Device) {
    let mut repo = GitRepo::new();
    repo.write("main.py", "print(1)\n");
    repo.commit("v1");
    repo.tag("v1.0.0");
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    device.ota_expect(&["update"], 0);
    repo.write("main.py", "print(2)\n");
    repo.write("lib/util.py", "x = 2\n");
    repo.commit("v2");
    repo.tag("v2.0.0");
    (repo, server, device)
}

#[test]
fn low_memory_and_low_battery_defer_the_update_until_they_recover() {
    let (_repo, server, device) = device_behind();
    // A real failure first (a repository that does not exist): on record, counted once.
    device.edit_config("repo = \"app\"", "repo = \"nope\"");
    device.ota_expect(&["update"], 1);
    device.edit_config("repo = \"nope\"", "repo = \"app\"");
    assert_eq!(device.last_error().unwrap()["consecutive"], 1);
    let failure = device.last_error().unwrap();

    let machine = Machine::new();
    machine.mem_available_kb(1000);
    machine.supply("AC", &[("type", "Mains"), ("online", "0")]);
    machine.supply("BAT0", &[("type", "Battery"), ("capacity", "15")]);
    guards(&device, "min_free_mem = 2000000\nmin_battery_percent = 20");
    let before = device.tree();

    server.reset_stats();
    let out = machine.ota(&device, &["update"], 75);
    let stats = server.stats();
    assert!(
        out.contains("1024000 bytes of memory are available")
            && out.contains("min_free_mem = 2000000")
            && out.contains("update deferred, nothing was changed"),
        "{out}"
    );
    assert_eq!(stats.raw_requests + stats.asset_requests, 0, "no download");
    assert_eq!(device.tree(), before, "nothing changed");
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
    assert_eq!(
        device.last_error().unwrap(),
        failure,
        "a deferral is not a failure: the record (and its count) stays as it was"
    );

    // Memory back, battery still low: deferred again, for the battery, with the numbers.
    machine.mem_available_kb(3000);
    let out = machine.ota(&device, &["update", "--json"], 75);
    assert!(
        out.contains("battery is at 15%") && out.contains("= 20%"),
        "{out}"
    );
    assert_eq!(json(&out)["error"]["kind"], "low_battery", "{out}");
    assert_eq!(json(&out)["error"]["phase"], "guards", "{out}");
    let stats = server.stats();
    assert_eq!(stats.raw_requests + stats.asset_requests, 0, "no download");
    assert_eq!(device.tree(), before);
    assert_eq!(device.last_error().unwrap(), failure);

    // `ota status` shows what the guards saw.
    let status = json(&machine.ota(&device, &["status", "--json"], 0));
    assert_eq!(status["free_memory"], 3000 * 1024);
    assert_eq!(status["battery"]["percent"], 15);
    assert_eq!(status["battery"]["on_mains"], false);
    assert!(status["free_storage"].as_u64().unwrap() > 0, "{status}");
    let text = machine.ota(&device, &["status"], 0);
    assert!(text.contains("battery:     15%, on battery"), "{text}");

    // On mains power the battery guard does not apply: the update goes through.
    machine.supply("AC", &[("type", "Mains"), ("online", "1")]);
    machine.ota(&device, &["update"], 0);
    assert_eq!(
        fs::read_to_string(device.target.join("main.py")).unwrap(),
        "print(2)\n"
    );
    assert!(device.last_error().is_none(), "a success clears the record");
    let status = json(&machine.ota(&device, &["status", "--json"], 0));
    assert_eq!(status["battery"]["on_mains"], true);
}

#[test]
fn a_huge_min_free_storage_defers_once_the_plan_is_known_before_any_download() {
    let (_repo, server, device) = device_behind();
    guards(&device, "min_free_storage = 1000000000000000");
    let before = device.tree();

    server.reset_stats();
    let out = device.ota_expect(&["update"], 75);
    let stats = server.stats();
    assert!(
        out.contains("min_free_storage keeps 1000000000000000 more free")
            && out.contains("bytes free"),
        "{out}"
    );
    assert_eq!(stats.raw_requests + stats.asset_requests, 0, "no download");
    assert!(
        stats.api_requests > 0,
        "the release was resolved and planned"
    );
    assert_eq!(device.tree(), before, "nothing changed");
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
    assert!(device.last_error().is_none(), "not recorded as a failure");
    let out = device.ota_expect(&["update", "--json"], 75);
    assert_eq!(json(&out)["error"]["kind"], "low_storage", "{out}");

    // A dry run says the same; without the guard the update installs.
    device.ota_expect(&["update", "--dry-run"], 75);
    device.edit_config(
        "min_free_storage = 1000000000000000",
        "min_free_storage = 0",
    );
    device.ota_expect(&["update"], 0);
    assert_eq!(
        fs::read_to_string(device.target.join("lib/util.py")).unwrap(),
        "x = 2\n"
    );
}

#[test]
fn the_library_reads_its_stand_in_roots_and_tells_a_deferral_from_a_failure() {
    let (_repo, server, device) = device_behind();
    let machine = Machine::new();
    machine.mem_available_kb(500);
    guards(&device, "min_free_mem = 1000000");
    let root = machine.dir.path();
    let updater =
        ota::Updater::new(device.load_config()).with_resources(ota::Resources::new(root, root));

    let status = updater.status().unwrap();
    assert_eq!(status.resources.free_memory, Some(500 * 1024));
    assert_eq!(status.resources.battery, None, "no power_supply folder");
    server.reset_stats();
    let error = updater.update(ota::UpdateOptions::default()).unwrap_err();
    assert!(error.deferred(), "{error}");
    assert_eq!((error.phase(), error.kind()), ("guards", "low_memory"));
    assert_eq!(server.stats().raw_requests, 0);
    assert!(device.last_error().is_none());
}
