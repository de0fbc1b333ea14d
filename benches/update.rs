//! The update benchmark: requests, bytes, wall time and peak memory of install, update and
//! no-op, against `ota-serve` on loopback. See BENCHMARKS.md.
//!
//! ```sh
//! cargo bench --bench update                      # small and large scenarios
//! cargo bench --bench update -- --scenario large --parallel 1
//! cargo bench --bench update -- --latency-ms 50                      # sequential vs parallel
//! cargo bench --bench update -- --latency-ms 50 --bandwidth 2000000  # and a 2 MB/s link
//! ```
//!
//! Each step runs the real `ota` binary (release build) as a child process; the server's
//! counters give requests and bytes (bodies and raw socket bytes), the child's `--json`
//! report gives its peak RSS.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ota_serve::fault::{Action, Fault};
use ota_serve::fixture::{FileSpec, RepoWriter};
use ota_serve::{Options, Server, Stats};

/// One benchmark scenario: a release and an update to it.
struct Scenario {
    name: &'static str,
    v1: BTreeMap<String, FileSpec>,
    v2: BTreeMap<String, FileSpec>,
}

/// Deterministic pseudo-random bytes (xorshift), so runs are comparable.
struct Bytes(u64);

impl Bytes {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Source-like text: words from a small vocabulary, compressible like code.
    fn text(&mut self, len: usize) -> Vec<u8> {
        const WORDS: [&str; 16] = [
            "def ",
            "return ",
            "self",
            ".value",
            " = ",
            "(x)",
            "\n    ",
            "if ",
            "else:",
            "import ",
            "sensor",
            "_read",
            "for i in ",
            "range(10)",
            ": ",
            "# note\n",
        ];
        let mut out = Vec::with_capacity(len + 16);
        while out.len() < len {
            out.extend_from_slice(WORDS[(self.next() % 16) as usize].as_bytes());
        }
        out.truncate(len);
        out
    }

    /// Incompressible bytes, like a compiled binary or an image.
    fn binary(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

fn file(bytes: Vec<u8>) -> FileSpec {
    FileSpec::File { bytes, exec: false }
}

/// 50 source files, ~400 KB; v2 edits 2, adds 1, deletes 1.
fn small() -> Scenario {
    let mut rng = Bytes(0x5eed);
    let mut v1 = BTreeMap::new();
    for i in 0..50 {
        let len = 4_000 + (rng.next() % 8_000) as usize;
        v1.insert(format!("app/module_{i:02}.py"), file(rng.text(len)));
    }
    let mut v2 = v1.clone();
    for i in [3, 17] {
        v2.insert(format!("app/module_{i:02}.py"), file(rng.text(9_000)));
    }
    v2.insert("app/module_new.py".into(), file(rng.text(6_000)));
    v2.remove("app/module_40.py");
    Scenario {
        name: "small",
        v1,
        v2,
    }
}

/// 1,000 files, ~60 MB including three 4 MiB binaries; v2 edits 10, adds 2, deletes 2.
fn large() -> Scenario {
    let mut rng = Bytes(0xb16);
    let mut v1 = BTreeMap::new();
    for i in 0..997 {
        let len = 20_000 + (rng.next() % 56_000) as usize;
        v1.insert(
            format!("pkg/d{:02}/file_{i:04}.py", i % 40),
            file(rng.text(len)),
        );
    }
    for name in ["firmware.bin", "model.bin", "assets.bin"] {
        v1.insert(format!("bin/{name}"), file(rng.binary(4 << 20)));
    }
    let mut v2 = v1.clone();
    for i in (0..997).step_by(100) {
        v2.insert(
            format!("pkg/d{:02}/file_{i:04}.py", i % 40),
            file(rng.text(30_000)),
        );
    }
    v2.insert("pkg/new/a.py".into(), file(rng.text(10_000)));
    v2.insert("pkg/new/b.py".into(), file(rng.text(10_000)));
    v2.remove("pkg/d01/file_0001.py");
    v2.remove("pkg/d02/file_0002.py");
    Scenario {
        name: "large",
        v1,
        v2,
    }
}

fn total(files: &BTreeMap<String, FileSpec>) -> u64 {
    files
        .values()
        .map(|f| match f {
            FileSpec::File { bytes, .. } => bytes.len() as u64,
            _ => 0,
        })
        .sum()
}

/// Bytes of the files that v2 adds or changes.
fn changed(s: &Scenario) -> u64 {
    s.v2.iter()
        .filter(|(path, spec)| s.v1.get(*path).is_none_or(|old| !same(old, spec)))
        .map(|(_, spec)| match spec {
            FileSpec::File { bytes, .. } => bytes.len() as u64,
            _ => 0,
        })
        .sum()
}

fn same(a: &FileSpec, b: &FileSpec) -> bool {
    match (a, b) {
        (FileSpec::File { bytes: x, exec: e }, FileSpec::File { bytes: y, exec: f }) => {
            x == y && e == f
        }
        _ => false,
    }
}

/// One measured step.
struct Row {
    scenario: &'static str,
    step: &'static str,
    stats: Stats,
    wall: f64,
    peak_rss: Option<u64>,
    /// File bytes the client received after decoding (= the files' sizes).
    decoded_file_bytes: u64,
}

fn run_ota(config: &Path, server: &Server, scenario: &'static str, step: &'static str) -> Row {
    server.reset_stats();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_ota"))
        .args(["update", "--json", "-q", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let wall = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "ota update failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Row {
        scenario,
        step,
        stats: server.stats(),
        wall,
        peak_rss: report["peak_rss_bytes"].as_u64(),
        decoded_file_bytes: report["usage"]["file_bytes"].as_u64().unwrap_or(0),
    }
}

/// A scenario's two releases in a fresh bare repository, served on loopback.
struct Bench {
    dir: tempfile::TempDir,
    repo: RepoWriter,
    server: Server,
}

impl Bench {
    fn new(scenario: &Scenario) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let repo_dir = dir.path().join("repo.git");
        let mut repo = RepoWriter::init(&repo_dir, true).unwrap();
        let c1 = repo.commit("main", &scenario.v1, "v1", V1_TIME).unwrap();
        repo.tag_lightweight("v1.0.0", &c1).unwrap();
        repo.set_head("main").unwrap();
        let server = Server::start(Options::new(&repo_dir)).unwrap();
        Bench { dir, repo, server }
    }

    /// A fresh device folder and its config; returns the config's path.
    fn device(&self, name: &str, parallel: usize) -> std::path::PathBuf {
        let root = self.dir.path().join(name);
        std::fs::create_dir_all(&root).unwrap();
        let config = root.join("ota.toml");
        std::fs::write(
            &config,
            format!(
                "target_dir = {:?}\n[source]\nowner = \"bench\"\nrepo = \"app\"\napi_url = \"{}\"\nraw_url = \"{}\"\n[network]\nparallel = {parallel}\n",
                root.join("app"),
                self.server.api_url(),
                self.server.raw_url()
            ),
        )
        .unwrap();
        config
    }

    /// Publishes v2.0.0 (once).
    fn publish_v2(&mut self, scenario: &Scenario) {
        let c2 = self
            .repo
            .commit("main", &scenario.v2, "v2", V2_TIME)
            .unwrap();
        self.repo
            .tag_annotated("v2.0.0", &c2, "v2", V2_TIME)
            .unwrap();
    }
}

const V1_TIME: i64 = 1_767_225_600;
const V2_TIME: i64 = V1_TIME + 60;

fn scenario(name: &str) -> Scenario {
    if name == "small" { small() } else { large() }
}

fn print_rows(rows: &[Row]) {
    println!(
        "| scenario | step | API requests | API bytes | file requests | file bytes (wire body) | file bytes (decoded) | wire bytes (in+out) | wall (s) | peak RSS (MiB) |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let s = &r.stats;
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.3} | {} |",
            r.scenario,
            r.step,
            s.api_requests,
            s.api_body_bytes,
            s.raw_requests + s.asset_requests,
            s.file_body_bytes,
            r.decoded_file_bytes,
            s.wire_bytes_in + s.wire_bytes_out,
            r.wall,
            r.peak_rss
                .map(|b| format!("{:.1}", b as f64 / (1 << 20) as f64))
                .unwrap_or_else(|| "n/a".into()),
        );
    }
}

/// Install, update, no-op for each scenario on a clean loopback.
fn costs(names: &[&str], parallel: usize) {
    let mut rows = Vec::new();
    println!("parallel = {parallel}");
    for name in names {
        let scenario = scenario(name);
        let mut bench = Bench::new(&scenario);
        let config = bench.device("device", parallel);
        rows.push(run_ota(&config, &bench.server, scenario.name, "install"));
        bench.publish_v2(&scenario);
        rows.push(run_ota(&config, &bench.server, scenario.name, "update"));
        rows.push(run_ota(&config, &bench.server, scenario.name, "no-op"));
        println!(
            "{}: {} files, {} bytes; v2 changes {} bytes",
            scenario.name,
            scenario.v1.len(),
            total(&scenario.v1),
            changed(&scenario)
        );
    }
    println!();
    print_rows(&rows);
}

/// Wall time of install and update under an injected round-trip latency (and optionally a
/// shared bandwidth cap), sequential against parallel; and the no-op check's cost.
fn network(names: &[&str], latency: Duration, bandwidth: Option<u64>) {
    println!(
        "latency {} ms per request{}",
        latency.as_millis(),
        bandwidth.map_or(String::new(), |b| format!(", link capped at {b} bytes/s"))
    );
    println!(
        "\n| scenario | parallel | install (s) | update (s) | no-op requests | no-op wire bytes | no-op status |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|");
    for name in names {
        let scenario = scenario(name);
        let mut bench = Bench::new(&scenario);
        let mut faults = vec![Fault::new("*", Action::Latency(latency))];
        if let Some(rate) = bandwidth {
            faults.push(Fault::new("*", Action::Bandwidth(rate)));
        }
        bench.server.set_faults(faults);
        let devices: Vec<_> = [1, 4]
            .iter()
            .map(|&p| (p, bench.device(&format!("p{p}"), p)))
            .collect();
        let installs: Vec<Row> = devices
            .iter()
            .map(|(_, c)| run_ota(c, &bench.server, scenario.name, "install"))
            .collect();
        bench.publish_v2(&scenario);
        for ((parallel, config), install) in devices.iter().zip(installs) {
            let update = run_ota(config, &bench.server, scenario.name, "update");
            let noop = run_ota(config, &bench.server, scenario.name, "no-op");
            let status = noop.stats.log.first().map_or(0, |r| r.status);
            println!(
                "| {} | {} | {:.2} | {:.2} | {} | {} | {} |",
                scenario.name,
                parallel,
                install.wall,
                update.wall,
                noop.stats.requests,
                noop.stats.wire_bytes_in + noop.stats.wire_bytes_out,
                status
            );
        }
    }
}

fn main() {
    let mut names = vec!["small", "large"];
    let mut parallel = 4usize;
    let mut latency_ms: Option<u64> = None;
    let mut bandwidth: Option<u64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--scenario" => {
                names = vec![if args.next().unwrap() == "small" {
                    "small"
                } else {
                    "large"
                }]
            }
            "--parallel" => parallel = args.next().unwrap().parse().unwrap(),
            "--latency-ms" => latency_ms = Some(args.next().unwrap().parse().unwrap()),
            "--bandwidth" => bandwidth = Some(args.next().unwrap().parse().unwrap()),
            _ => {} // `cargo bench` passes `--bench`.
        }
    }
    match latency_ms {
        None => costs(&names, parallel),
        Some(ms) => network(&names, Duration::from_millis(ms), bandwidth),
    }
}
