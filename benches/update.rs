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

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ota_serve::fault::{Action, Fault};
use ota_serve::fixture::RepoWriter;
use ota_serve::{Options, Server, Stats};

use common::{Scenario, V1_TIME, V2_TIME, changed, scenario, total};

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
