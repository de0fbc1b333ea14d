//! ota side by side with rsync and git, in one run, on loopback. See BENCHMARKS.md.
//!
//! ```sh
//! cargo bench --bench versus                      # small and large scenarios
//! cargo bench --bench versus -- --scenario large
//! ```
//!
//! Each scenario of `benches/update.rs` (v1, then the update to v2) is served four ways at
//! once, and four clients each install v1 into an empty folder, update to v2, and check
//! again (no-op):
//!
//! - `ota (github)`: the real `ota` binary against `ota-serve` (the GitHub API and raw host);
//! - `ota (static)`: the real `ota` binary against a site written by `ota publish`, served
//!   by nginx;
//! - `rsync -az --delete` against an rsync daemon;
//! - `git` against `git daemon` (clone; fetch + checkout; fetch).
//!
//! Every server sits behind the same counting TCP proxy (`tests/util/proxy.rs`), which gives
//! one measure for all four: connections, HTTP requests, and bytes each way (headers and
//! protocol overhead included). Each client runs under GNU `time`, whose `%M` is the peak
//! RSS (`ru_maxrss`) of the client or of the largest process it waited for (git and rsync
//! fork helpers). Wall time is the client's, start to exit.
//!
//! The last column sets each ota row against the targets of issue 12 (large scenario, same
//! run as rsync).

#![allow(clippy::unwrap_used)]

mod common;
#[allow(dead_code)]
#[path = "../tests/util/nginx.rs"]
mod nginx;
#[allow(dead_code)]
#[path = "../tests/util/proxy.rs"]
mod proxy;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use ota_serve::fixture::{FileSpec, RepoWriter};
use ota_serve::{Options, Server};

use common::{Scenario, V1_TIME, V2_TIME, changed, scenario, total};
use nginx::{Nginx, free_port, wait_for};
use proxy::{Proxy, Totals};

/// The four clients, in the order of the table.
const CLIENTS: [&str; 4] = ["ota (github)", "ota (static)", "rsync -az", "git"];
const STEPS: [&str; 3] = ["install", "update", "no-op"];

/// One measured step of one client.
struct Row {
    scenario: &'static str,
    step: &'static str,
    client: &'static str,
    /// What went through the proxy during the step.
    wire: Totals,
    wall: f64,
    /// Peak RSS in KiB (`ru_maxrss`).
    rss_kib: u64,
}

/// What running one or more client commands cost.
#[derive(Default)]
struct Cost {
    wall: f64,
    rss_kib: u64,
}

/// Runs `program args` under GNU time: its wall time and peak RSS. Panics if it fails.
fn measure(dir: &Path, program: &str, args: &[&str], cost: &mut Cost) {
    let rss_file = dir.join("rss");
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(&rss_file)
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    cost.wall += started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = fs::read_to_string(&rss_file).unwrap();
    let kib: u64 = text.lines().last().unwrap().trim().parse().unwrap();
    cost.rss_kib = cost.rss_kib.max(kib);
}

fn minus(after: &Totals, before: &Totals) -> Totals {
    Totals {
        connections: after.connections - before.connections,
        requests: after.requests - before.requests,
        up: after.up - before.up,
        down: after.down - before.down,
    }
}

/// A server process (rsync or git daemon), killed on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_daemon(program: &str, args: &[String], port: u16, log: &Path) -> Daemon {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} is installed: {e}"));
    wait_for(port, program, &|| {
        fs::read_to_string(log).unwrap_or_default()
    });
    Daemon(child)
}

fn id(flag: &str) -> String {
    let out = Command::new("id").arg(flag).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Writes `files` into `root` (a plain folder, as the rsync daemon serves it), each with
/// the modification time `mtime`; only the paths that differ from `old`, and removes the
/// paths that `files` no longer has.
fn write_tree(
    root: &Path,
    files: &BTreeMap<String, FileSpec>,
    old: Option<&BTreeMap<String, FileSpec>>,
    mtime: i64,
) {
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(mtime as u64);
    for (path, spec) in files {
        if old.is_some_and(|old| old.get(path) == Some(spec)) {
            continue;
        }
        let FileSpec::File { bytes, .. } = spec else {
            continue;
        };
        let full = root.join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(&full, bytes).unwrap();
        fs::File::options()
            .write(true)
            .open(&full)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }
    for path in old.into_iter().flat_map(|o| o.keys()) {
        if !files.contains_key(path) {
            fs::remove_file(root.join(path)).unwrap();
        }
    }
}

/// One scenario served four ways, and the four clients' folders.
struct Stage {
    dir: tempfile::TempDir,
    repo: RepoWriter,
    ota_bin: &'static str,
    key: PathBuf,
    site: PathBuf,
    github: Proxy,
    stat: Proxy,
    rsync: Proxy,
    git: Proxy,
    _servers: (Server, Nginx, Daemon, Daemon),
}

impl Stage {
    fn new(scenario: &Scenario) -> Stage {
        let ota_bin = env!("CARGO_BIN_EXE_ota");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();

        // The git repository: ota-serve and git daemon serve it as it is.
        let repo_dir = d.join("repo.git");
        let mut repo = RepoWriter::init(&repo_dir, true).unwrap();
        let c1 = repo.commit("main", &scenario.v1, "v1", V1_TIME).unwrap();
        repo.tag_lightweight("v1.0.0", &c1).unwrap();
        repo.set_head("main").unwrap();
        let server = Server::start(Options::new(&repo_dir)).unwrap();
        let serve_port: u16 = server
            .api_url()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();

        // The static site, written by `ota publish`, served by nginx.
        run(ota_bin, &["keygen", "--out", &s(&d.join("keys"))]);
        let key = d.join("keys/ota.key");
        let site = d.join("site");
        let nginx = Nginx::serve(&site_dir(&site));

        // The rsync daemon's module: the files of v1 in a plain folder.
        let tree = d.join("tree");
        write_tree(&tree, &scenario.v1, None, V1_TIME);
        let rsync_port = free_port();
        let conf = d.join("rsyncd.conf");
        fs::write(
            &conf,
            format!(
                "use chroot = no\nuid = {}\ngid = {}\npid file = {}\n[app]\npath = {}\nread only = yes\n",
                id("-u"),
                id("-g"),
                s(&d.join("rsyncd.pid")),
                s(&tree)
            ),
        )
        .unwrap();
        let rsyncd = spawn_daemon(
            "rsync",
            &[
                "--daemon".into(),
                "--no-detach".into(),
                "--address=127.0.0.1".into(),
                format!("--port={rsync_port}"),
                format!("--config={}", s(&conf)),
            ],
            rsync_port,
            &d.join("rsyncd.log"),
        );

        let git_port = free_port();
        let gitd = spawn_daemon(
            "git",
            &[
                "daemon".into(),
                "--export-all".into(),
                "--reuseaddr".into(),
                "--listen=127.0.0.1".into(),
                format!("--port={git_port}"),
                format!("--base-path={}", s(d)),
                s(d),
            ],
            git_port,
            &d.join("git-daemon.log"),
        );

        let stage = Stage {
            repo,
            ota_bin,
            key,
            site,
            github: Proxy::to(serve_port),
            stat: Proxy::to(nginx.port()),
            rsync: Proxy::to(rsync_port),
            git: Proxy::to(git_port),
            _servers: (server, nginx, rsyncd, gitd),
            dir,
        };
        stage.publish("v1.0.0");
        stage
    }

    fn publish(&self, tag: &str) {
        run(
            self.ota_bin,
            &[
                "publish",
                "--key",
                &s(&self.key),
                "--out",
                &s(&site_dir(&self.site)),
                "--repo",
                &s(&self.dir.path().join("repo.git")),
                "--ref",
                tag,
                "--no-password",
            ],
        );
    }

    /// Publishes v2.0.0 everywhere: a tag in the repository, a release on the site, the new
    /// files in the rsync module.
    fn publish_v2(&mut self, scenario: &Scenario) {
        let c2 = self
            .repo
            .commit("main", &scenario.v2, "v2", V2_TIME)
            .unwrap();
        self.repo
            .tag_annotated("v2.0.0", &c2, "v2", V2_TIME)
            .unwrap();
        self.publish("v2.0.0");
        write_tree(
            &self.dir.path().join("tree"),
            &scenario.v2,
            Some(&scenario.v1),
            V2_TIME,
        );
    }

    /// The client's folder: `<tmp>/<client>/app` (and its ota config beside it).
    fn device(&self, client: &str) -> PathBuf {
        let name: String = client
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        self.dir.path().join(name)
    }

    /// Writes the ota configs of both ota clients (once).
    fn configs(&self) {
        let public = fs::read_to_string(self.dir.path().join("keys/ota.pub")).unwrap();
        let public = public.lines().nth(1).unwrap().trim().to_owned();
        let gh = self.device(CLIENTS[0]);
        fs::create_dir_all(&gh).unwrap();
        fs::write(
            gh.join("ota.toml"),
            format!(
                "target_dir = {:?}\n[source]\nowner = \"bench\"\nrepo = \"app\"\n\
                 api_url = \"http://127.0.0.1:{p}\"\nraw_url = \"http://127.0.0.1:{p}/raw\"\n\
                 [network]\nparallel = 4\n",
                gh.join("app"),
                p = port(&self.github)
            ),
        )
        .unwrap();
        let st = self.device(CLIENTS[1]);
        fs::create_dir_all(&st).unwrap();
        fs::write(
            st.join("ota.toml"),
            format!(
                "target_dir = {:?}\n[source]\nkind = \"static\"\nurl = \"http://127.0.0.1:{}\"\n\
                 public_key = \"{public}\"\n[network]\nparallel = 4\n",
                st.join("app"),
                port(&self.stat)
            ),
        )
        .unwrap();
        fs::create_dir_all(self.device(CLIENTS[2])).unwrap();
        fs::create_dir_all(self.device(CLIENTS[3])).unwrap();
    }

    /// Runs one step of one client and measures it.
    fn step(&self, scenario: &'static str, step: &'static str, client: &'static str) -> Row {
        let dev = self.device(client);
        let app = s(&dev.join("app"));
        let proxy = self.proxy(client);
        let before = proxy.totals();
        let mut cost = Cost::default();
        match client {
            "ota (github)" | "ota (static)" => {
                let config = s(&dev.join("ota.toml"));
                measure(
                    &dev,
                    self.ota_bin,
                    &["update", "-q", "--config", &config],
                    &mut cost,
                );
            }
            "rsync -az" => {
                let url = format!("rsync://127.0.0.1:{}/app/", port(proxy));
                measure(
                    &dev,
                    "rsync",
                    &["-az", "--delete", &url, &format!("{app}/")],
                    &mut cost,
                );
            }
            _ => {
                let url = format!("git://127.0.0.1:{}/repo.git", port(proxy));
                match step {
                    "install" => measure(
                        &dev,
                        "git",
                        &["clone", "-q", "--branch", "v1.0.0", &url, &app],
                        &mut cost,
                    ),
                    _ => {
                        measure(
                            &dev,
                            "git",
                            &["-C", &app, "fetch", "-q", "--tags", "origin"],
                            &mut cost,
                        );
                        if step == "update" {
                            measure(
                                &dev,
                                "git",
                                &["-C", &app, "checkout", "-q", "v2.0.0"],
                                &mut cost,
                            );
                        }
                    }
                }
            }
        }
        // The client has exited; let the proxy's threads count the last bytes and close.
        std::thread::sleep(Duration::from_millis(200));
        Row {
            scenario,
            step,
            client,
            wire: minus(&proxy.totals(), &before),
            wall: cost.wall,
            rss_kib: cost.rss_kib,
        }
    }

    fn proxy(&self, client: &str) -> &Proxy {
        match client {
            "ota (github)" => &self.github,
            "ota (static)" => &self.stat,
            "rsync -az" => &self.rsync,
            _ => &self.git,
        }
    }
}

/// nginx serves the site folder (created before nginx starts).
fn site_dir(site: &Path) -> PathBuf {
    fs::create_dir_all(site).unwrap();
    site.to_path_buf()
}

/// The proxy's port, from its URL.
fn port(proxy: &Proxy) -> u16 {
    proxy.url().rsplit(':').next().unwrap().parse().unwrap()
}

fn s(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

/// Runs a setup command (not measured); panics if it fails.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The issue-12 targets an ota row is measured against, and whether today's figures meet
/// them. The byte and wall targets hold on the large scenario, against rsync in the same
/// run; peak RSS ≤ 16 MiB holds throughout.
fn targets(row: &Row, rsync: &Row) -> String {
    if !row.client.starts_with("ota") {
        return "—".into();
    }
    let mut out = Vec::new();
    let bytes = row.wire.bytes() as f64 / rsync.wire.bytes().max(1) as f64;
    let verdict = |ok: bool| if ok { "**met**" } else { "not met" };
    if row.scenario == "large" {
        match (row.client, row.step) {
            ("ota (github)", "install") => {
                out.push(format!(
                    "≤ 10 requests: {} ({})",
                    verdict(row.wire.requests <= 10),
                    row.wire.requests
                ));
                out.push(format!(
                    "≤ 1.1× rsync's bytes: {} ({bytes:.2}×)",
                    verdict(bytes <= 1.1)
                ));
                out.push(format!(
                    "wall ≤ rsync's: {} ({:.2}×)",
                    verdict(row.wall <= rsync.wall),
                    row.wall / rsync.wall
                ));
            }
            ("ota (static)", "install") => out.push(format!(
                "≤ 1.1× rsync's bytes: {} ({bytes:.2}×)",
                verdict(bytes <= 1.1)
            )),
            ("ota (static)", "update") => out.push(format!(
                "≤ rsync's bytes: {} ({bytes:.2}×)",
                verdict(bytes <= 1.0)
            )),
            _ => {}
        }
    }
    out.push(format!(
        "peak RSS ≤ 16 MiB: {}",
        verdict(row.rss_kib <= 16 * 1024)
    ));
    out.join("; ")
}

fn print_rows(rows: &[Row]) {
    println!(
        "| scenario | step | client | connections | HTTP requests | bytes down | bytes up | wire bytes (both ways) | wall (s) | peak RSS (MiB) | issue 12 target: today |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        let rsync = rows
            .iter()
            .find(|o| o.scenario == r.scenario && o.step == r.step && o.client == "rsync -az")
            .unwrap();
        let requests = if r.client.starts_with("ota") {
            r.wire.requests.to_string()
        } else {
            "—".into()
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.3} | {:.1} | {} |",
            r.scenario,
            r.step,
            r.client,
            r.wire.connections,
            requests,
            r.wire.down,
            r.wire.up,
            r.wire.bytes(),
            r.wall,
            r.rss_kib as f64 / 1024.0,
            targets(r, rsync),
        );
    }
}

fn main() {
    let mut names = vec!["small", "large"];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--scenario" {
            names = vec![if args.next().unwrap() == "small" {
                "small"
            } else {
                "large"
            }];
        } // `cargo bench` passes `--bench`.
    }
    let mut rows = Vec::new();
    for name in names {
        let scenario = scenario(name);
        let mut stage = Stage::new(&scenario);
        stage.configs();
        println!(
            "{}: {} files, {} bytes; v2 changes {} bytes",
            scenario.name,
            scenario.v1.len(),
            total(&scenario.v1),
            changed(&scenario),
        );
        for step in STEPS {
            if step == "update" {
                stage.publish_v2(&scenario);
            }
            for client in CLIENTS {
                rows.push(stage.step(scenario.name, step, client));
            }
        }
    }
    println!();
    print_rows(&rows);
}
