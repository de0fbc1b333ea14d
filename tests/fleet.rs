//! The fleet simulation (docs/fleet.md): N simulated devices, each its own library
//! `Updater` with its own target and state, poll one static site on the real nginx through
//! a counting proxy: a first install, a no-op poll each, then one update. It asserts the
//! requests and bytes of each poll and that no request went to a GitHub API path, and prints
//! the figures.
//!
//! ```sh
//! cargo test --test integration fleet -- --nocapture             # 1,000 devices
//! OTA_FLEET_DEVICES=5000 cargo test --test integration fleet -- --nocapture
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};

use ota::config::{Config, Format};
use ota::{Outcome, UpdateOptions, Updater};

use crate::util::Node;
use crate::util::nginx::Nginx;
use crate::util::proxy::{Proxy, Totals};
use crate::util::site::{Keys, Release, Site};

/// Devices polling at once (threads); each runs its polls one after the other.
const THREADS: usize = 16;

fn devices() -> usize {
    std::env::var("OTA_FLEET_DEVICES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000)
}

/// One device: its folder and config (a new `Updater` per poll, as a timer runs `ota`).
struct Device {
    _dir: tempfile::TempDir,
    config: Config,
}

impl Device {
    fn new(url: &str, key: &str) -> Device {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "target_dir = \"app\"\n[source]\nkind = \"static\"\nurl = \"{url}\"\n\
             public_key = \"{key}\"\n[network]\nretries = 2\nbackoff_sec = 0\n"
        );
        let config = Config::parse(&text, Format::Toml, dir.path(), &|_| None).unwrap();
        Device { _dir: dir, config }
    }

    fn poll(&self) -> Outcome {
        Updater::new(self.config.clone())
            .update(UpdateOptions::default())
            .unwrap()
    }
}

/// Runs one poll on every device, `THREADS` at a time; returns what went through the proxy
/// and how many devices changed their files.
fn poll_all(fleet: &[Device], proxy: &Proxy) -> (Totals, usize) {
    let before = proxy.totals();
    let next = AtomicUsize::new(0);
    let updated = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                while let Some(device) = fleet.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if let Outcome::Updated(_) = device.poll() {
                        updated.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    // The proxy counts as bytes arrive; every device's poll has returned by now.
    let after = proxy.totals();
    let delta = Totals {
        connections: after.connections - before.connections,
        requests: after.requests - before.requests,
        up: after.up - before.up,
        down: after.down - before.down,
    };
    (delta, updated.into_inner())
}

fn print(name: &str, n: usize, t: &Totals) {
    let n = n as f64;
    println!(
        "fleet {name:>8}: {:>6} requests ({:.2}/poll), {:>10} bytes ({:.0}/poll: {:.0} up, {:.0} down), {} connections",
        t.requests,
        t.requests as f64 / n,
        t.bytes(),
        t.bytes() as f64 / n,
        t.up as f64 / n,
        t.down as f64 / n,
        t.connections
    );
}

#[test]
fn a_thousand_devices_poll_a_static_site() {
    let n = devices();
    let keys = Keys::new();
    let site = Site::new();
    let v1 = Release::new(
        "v1.0.0",
        1,
        &[("main.py", "print('v1')\n"), ("lib/util.py", "U = 1\n")],
    );
    site.publish(&keys, &v1);
    let nginx = Nginx::serve(site.root());
    let proxy = Proxy::to(nginx.port());
    let fleet: Vec<Device> = (0..n)
        .map(|_| Device::new(&proxy.url(), &keys.public()))
        .collect();

    let (install, installed) = poll_all(&fleet, &proxy);
    print("install", n, &install);
    assert_eq!(installed, n);
    // Manifest, signature and two objects.
    assert_eq!(install.requests, 4 * n as u64);

    let (noop, changed) = poll_all(&fleet, &proxy);
    print("no-op", n, &noop);
    assert_eq!(changed, 0);
    assert_eq!(noop.requests, n as u64, "one request per no-op poll");
    assert!(
        noop.bytes() <= 1024 * n as u64,
        "a no-op poll took {} bytes",
        noop.bytes() / n as u64
    );

    let mut v2 = v1.clone();
    v2.name = "v2.0.0".into();
    v2.counter = 2;
    v2.files.insert("main.py".into(), b"print('v2')\n".to_vec());
    site.publish(&keys, &v2);
    let (update, updated) = poll_all(&fleet, &proxy);
    print("update", n, &update);
    assert_eq!(updated, n);
    // Manifest, signature and the one changed object.
    assert_eq!(update.requests, 3 * n as u64);

    let requests = proxy.requests();
    assert!(
        !requests
            .iter()
            .any(|r| r.contains("/repos/") || r.contains("/git/")),
        "a GitHub API path was asked"
    );
    // Every device holds v2.
    for device in [&fleet[0], &fleet[n / 2], &fleet[n - 1]] {
        let files = crate::util::read_tree(&device.config.target_dir);
        assert_eq!(
            files.get("main.py"),
            Some(&Node::File(b"print('v2')\n".to_vec(), false))
        );
    }
}
