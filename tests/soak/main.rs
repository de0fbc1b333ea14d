//! The soak (see `docs/soak.md`): consecutive updates of one device among five releases,
//! with random network faults and random SIGKILLs followed by recovery, driving the real
//! `ota` binary against the real `ota-serve` server on 127.0.0.1 and the real filesystem.
//!
//! - `releases`: the five trees;
//! - `faults`: the random fault rules of a step (`ota-serve --fault` syntax);
//! - `device`: running, killing and reading back a device.
//!
//! Each step publishes one of the five releases as the latest (a new commit and tag, so
//! the server's latest release moves while it runs) and sets random fault rules, then runs
//! `ota update` as a device's timer would until it succeeds, at most `MAX_FAILED_RUNS`
//! failed runs. A run is SIGKILLed now and then at a random moment; the device then runs
//! `ota recover` (itself killed now and then), or leaves the recovery to the next
//! `ota update`. After every run that ended by itself the tree must be exactly the release
//! before the step or the wanted one, as `state.json` says, with no leftovers; after a
//! success, exactly the wanted one. Disk usage is taken after every step.
//!
//! A plain `main` (`harness = false`) that prints its figures and exits non-zero when a
//! criterion fails. `OTA_SOAK_UPDATES` (default 30) sets the number of updates,
//! `OTA_SOAK_SEED` the seed (printed at the start and with every failure).

#![allow(clippy::unwrap_used)]

mod device;
mod faults;
mod releases;

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ota_serve::{Options, Server};

use device::{Aim, Device, Phase, Run, Usage};
use releases::{COUNT, Entry, Listing};
use test_git::GitRepo;

/// Updates when `OTA_SOAK_UPDATES` is not set: what `cargo test` runs.
const DEFAULT_UPDATES: usize = 30;
/// The seed when `OTA_SOAK_SEED` is not set.
const DEFAULT_SEED: u64 = 0x50a4;
/// Failed runs (not killed) after which a step counts as a failed update.
const MAX_FAILED_RUNS: usize = 5;
/// Most SIGKILLs of `ota update` in one step.
const MAX_KILLS: usize = 2;
/// The chance that a run of `ota update` is SIGKILLed (while the step has kills left).
const KILL_CHANCE: f64 = 0.3;
/// The success rate the review asks for (OTA_OPTIMIZATION_PLAN.md, "Success Metrics").
const REQUIRED_SUCCESS: f64 = 0.999;
/// Largest spread of the disk usage after the updates that installed one same release.
const FLAT_SLACK: u64 = 4096;
/// Commit time of the first release; each step's release is a minute newer.
const EPOCH: i64 = 1_760_000_000;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        println!("soak: test");
        return ExitCode::SUCCESS;
    }
    // `cargo test NAME` passes NAME on: run only for no filter or one naming the soak, and
    // not with `--skip NAME` naming it.
    let (mut filters, mut skips) = (Vec::new(), Vec::new());
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        if arg == "--skip" {
            skips.extend(rest.next());
        } else if !arg.starts_with('-') {
            filters.push(arg);
        }
    }
    let names = |f: &&String| "soak".contains(f.as_str());
    if (!filters.is_empty() && !filters.iter().any(names)) || skips.iter().any(names) {
        return ExitCode::SUCCESS;
    }
    let updates = env_number("OTA_SOAK_UPDATES").map_or(DEFAULT_UPDATES, |n| n as usize);
    let seed = env_number("OTA_SOAK_SEED").unwrap_or(DEFAULT_SEED);
    println!(
        "soak: {updates} updates among {COUNT} releases, seed {seed} (OTA_SOAK_SEED={seed} OTA_SOAK_UPDATES={updates} repeats the choices), ota = {}",
        env!("CARGO_BIN_EXE_ota")
    );
    let started = Instant::now();
    let mut soak = Soak::new(seed);
    for step in 0..updates {
        soak.step(step);
        if (step + 1) % 100 == 0 || step + 1 == updates {
            let f = &soak.figures;
            println!(
                "soak: {}/{updates} updates: {} succeeded, {} failed, {} kills, {} violations, {:.0}s",
                step + 1,
                f.first_try + f.after_retries,
                f.failed,
                f.kills,
                soak.violations.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let ok = soak.report(updates, started.elapsed());
    if ok {
        ExitCode::SUCCESS
    } else {
        println!("soak: FAILED with seed {seed} (OTA_SOAK_SEED={seed} OTA_SOAK_UPDATES={updates})");
        ExitCode::FAILURE
    }
}

/// A whole number from the environment, decimal or `0x` hex.
fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={text:?} is not a whole number")))
}

/// How one update ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    FirstTry,
    AfterRetries,
    Failed,
}

/// What the soak counts.
#[derive(Default)]
struct Figures {
    first_try: usize,
    after_retries: usize,
    failed: usize,
    update_runs: usize,
    recover_runs: usize,
    failed_runs: usize,
    error_kinds: BTreeMap<String, usize>,
    hung: usize,
    kills: usize,
    killed_in: BTreeMap<Phase, usize>,
    finished_before_kill: usize,
    recover_killed: usize,
    recovered: BTreeMap<&'static str, usize>,
    /// Recoveries left to the next `ota update`, by what they had to do.
    left_to_update: BTreeMap<&'static str, usize>,
    trees_checked: usize,
    mixed: usize,
    leftovers: usize,
    state_disagrees: usize,
    disk: Vec<(usize, Usage)>,
    requests: u64,
    faulted_requests: u64,
    wire_bytes: u64,
    body_bytes: u64,
    fault_rules: usize,
}

struct Soak {
    seed: u64,
    _dir: tempfile::TempDir,
    repo: GitRepo,
    server: Server,
    device: Device,
    listings: Vec<Listing>,
    /// The git tree of each release.
    trees: Vec<String>,
    /// Every published tag and the release it holds.
    tags: HashMap<String, usize>,
    /// The release installed now (checked after every step).
    installed: usize,
    published: String,
    /// A running average of an unkilled, successful `ota update` (aims the kills).
    typical: Duration,
    figures: Figures,
    violations: Vec<String>,
    /// `OTA_SOAK_VERBOSE`: a line per step.
    verbose: bool,
}

impl Soak {
    /// The repository, the server, and a device with release 0 installed.
    fn new(seed: u64) -> Soak {
        let listings: Vec<Listing> = (0..COUNT).map(releases::release).collect();
        for a in 0..COUNT {
            for b in 0..a {
                assert!(
                    listings[a] != listings[b],
                    "releases {a} and {b} are the same"
                );
            }
        }
        let repo = GitRepo::new();
        let trees = listings
            .iter()
            .enumerate()
            .map(|(k, listing)| commit_tree(&repo, k, listing))
            .collect();
        let mut options = Options::new(repo.path());
        options.owner = Some("acme".into());
        options.name = Some("app".into());
        let server = Server::start(options).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let device = Device::new(
            &dir.path().join("device"),
            &server.api_url(),
            &server.raw_url(),
        );
        let mut soak = Soak {
            seed,
            _dir: dir,
            repo,
            server,
            device,
            listings,
            trees,
            tags: HashMap::new(),
            installed: 0,
            published: String::new(),
            typical: Duration::from_millis(150),
            figures: Figures::default(),
            violations: Vec::new(),
            verbose: std::env::var_os("OTA_SOAK_VERBOSE").is_some_and(|v| v != "0"),
        };
        let tag = soak.publish(0, 0);
        match soak.device.run("update", None, &tag) {
            Run::Exited { ok: true, .. } => {}
            Run::Exited { stderr, .. } => panic!("the first install failed: {stderr}"),
            _ => panic!("the first install hung"),
        }
        assert!(soak.device.tree().unwrap() == soak.listings[0]);
        soak.server.reset_stats();
        soak
    }

    /// Publishes release `k` as the latest: a new commit of its tree, newer than every
    /// other, tagged `v{n}.0.{k}`. The previous tag is deleted, so the repository holds one
    /// release (the server reads refs afresh on every request).
    fn publish(&mut self, n: usize, k: usize) -> String {
        let tag = format!("v{n}.0.{k}");
        let time = EPOCH + 60 * n as i64;
        let commit = self
            .repo
            .run_at(time, &["commit-tree", &self.trees[k], "-m", &tag]);
        self.repo.run(&["tag", &tag, &commit]);
        if !self.published.is_empty() {
            self.repo.run(&["tag", "-d", &self.published]);
        }
        self.published.clone_from(&tag);
        self.tags.insert(tag.clone(), k);
        tag
    }

    /// One update: publish, fault, run until success, check.
    fn step(&mut self, step: usize) {
        let mut rng = fastrand::Rng::with_seed(
            self.seed ^ (step as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        let k = rng.usize(0..COUNT);
        let before = self.installed;
        let step_started = Instant::now();
        let tag = self.publish(step + 1, k);
        let published_in = step_started.elapsed();
        let specs = faults::pick(&mut rng);
        self.figures.fault_rules += specs.len();
        self.server.set_faults(faults::parse(&specs));
        let context = format!(
            "seed {}, step {step}: release {before} -> {k} ({tag}), faults {specs:?}",
            self.seed
        );

        let (mut kills, mut failed_runs, mut runs) = (0, 0, 0);
        let outcome = loop {
            runs += 1;
            let aim = (kills < MAX_KILLS && rng.f64() < KILL_CHANCE).then(|| self.aim(&mut rng));
            self.figures.update_runs += 1;
            let started = Instant::now();
            match self.device.run("update", aim, &tag) {
                Run::Killed { phase, at } => {
                    kills += 1;
                    let what = format!("{context}; run {runs} killed at {at:?} ({phase:?})");
                    self.after_kill(&mut rng, phase, &[before, k], &tag, &what);
                }
                Run::Exited { ok, stdout, stderr } => {
                    if aim.is_some() {
                        self.figures.finished_before_kill += 1;
                    }
                    let what = format!(
                        "{context}; run {runs} exited ({})",
                        if ok { "ok" } else { "error" }
                    );
                    if ok {
                        if aim.is_none() {
                            self.typical = (self.typical * 4 + started.elapsed()) / 5;
                        }
                        self.check(&[k], &what);
                        if self.device.installed_tag().as_deref() != Some(tag.as_str()) {
                            self.figures.state_disagrees += 1;
                            self.violation(format!(
                                "{what}: succeeded ({}), but state.json names {:?}",
                                stdout.trim(),
                                self.device.installed_tag()
                            ));
                        }
                        break if runs == 1 {
                            Outcome::FirstTry
                        } else {
                            Outcome::AfterRetries
                        };
                    }
                    self.check(&[before, k], &what);
                    self.figures.failed_runs += 1;
                    failed_runs += 1;
                    let kind = match self.device.last_error_kind() {
                        Some(kind) => kind,
                        None => {
                            self.violation(format!(
                                "{what}: failed without last_error.json: {stderr}"
                            ));
                            "none".to_owned()
                        }
                    };
                    *self.figures.error_kinds.entry(kind).or_default() += 1;
                    if failed_runs >= MAX_FAILED_RUNS {
                        let last = stderr.lines().last().unwrap_or_default().to_owned();
                        self.violation(format!(
                            "{context}: still failing after {failed_runs} failed runs; last error: {last}"
                        ));
                        break Outcome::Failed;
                    }
                }
                Run::Hung => {
                    self.figures.hung += 1;
                    self.violation(format!("{context}; run {runs}: ota update hung"));
                    break Outcome::Failed;
                }
            }
        };
        match outcome {
            Outcome::FirstTry => self.figures.first_try += 1,
            Outcome::AfterRetries => self.figures.after_retries += 1,
            Outcome::Failed => self.figures.failed += 1,
        }
        // What is installed now, for the next step (a failed step leaves either).
        if let Ok(tree) = self.device.tree()
            && let Some(i) = self.listings.iter().position(|l| *l == tree)
        {
            self.installed = i;
        }
        if outcome != Outcome::Failed {
            self.figures.disk.push((k, self.device.usage()));
        }
        let stats = self.server.stats();
        self.figures.requests += stats.requests;
        self.figures.faulted_requests +=
            stats.log.iter().filter(|r| !r.faults.is_empty()).count() as u64;
        self.figures.wire_bytes += stats.wire_bytes_out;
        self.figures.body_bytes += stats.body_bytes;
        self.server.reset_stats();
        self.server.clear_faults();
        if self.verbose {
            println!(
                "soak: step {step}: {before} -> {k} ({tag}): {outcome:?} after {runs} runs, {kills} kills, {:.0} ms (publishing {:.0} ms); faults {specs:?}",
                step_started.elapsed().as_secs_f64() * 1e3,
                published_in.as_secs_f64() * 1e3
            );
        }
    }

    /// After a SIGKILL of `ota update` installing `allowed[1]` over `allowed[0]`: `ota
    /// recover` at once (as at boot), checked, or the recovery left to the next run.
    fn after_kill(
        &mut self,
        rng: &mut fastrand::Rng,
        phase: Phase,
        allowed: &[usize; 2],
        tag: &str,
        what: &str,
    ) {
        self.figures.kills += 1;
        *self.figures.killed_in.entry(phase).or_default() += 1;
        // What recovery must do, judged from the disk.
        let left = self.device.leftovers();
        let expected = if left.iter().any(|l| l == "journal.json") {
            if phase == Phase::Committed {
                "completed"
            } else {
                "rolled back"
            }
        } else if !left.is_empty() {
            "swept"
        } else {
            "nothing to do"
        };
        if !rng.bool() {
            // The next run's own recovery does it.
            *self.figures.left_to_update.entry(expected).or_default() += 1;
            return;
        }
        let what = format!("{what}, then `ota recover`");
        if let Some((how, recover_killed)) = self.recover(rng, tag, &what)
            && !recover_killed
            && how != expected
        {
            self.violation(format!(
                "{what}: recovery {how}, expected {expected} (state folder held {left:?})"
            ));
        }
        // After the commit, only the new release will do.
        let allowed = if phase == Phase::Committed {
            &allowed[1..]
        } else {
            &allowed[..]
        };
        self.check(allowed, &what);
    }

    /// A random moment to SIGKILL `ota update`: anywhere in a typical run, or just after
    /// the journal appears (the swap), or just after the commit (the cleanup).
    fn aim(&self, rng: &mut fastrand::Rng) -> Aim {
        let within = |rng: &mut fastrand::Rng, d: Duration| {
            Duration::from_micros(rng.u64(0..=d.as_micros() as u64))
        };
        match rng.u8(0..10) {
            0..=4 => Aim::Start(within(rng, self.typical * 6 / 5)),
            5..=7 => Aim::Journal(within(rng, Duration::from_millis(4))),
            _ => Aim::Commit(within(rng, Duration::from_millis(2))),
        }
    }

    /// `ota recover` after a power cut, itself cut now and then (then run again). Returns
    /// what the last run did, and whether an earlier one was killed.
    fn recover(
        &mut self,
        rng: &mut fastrand::Rng,
        tag: &str,
        what: &str,
    ) -> Option<(&'static str, bool)> {
        let mut killed = false;
        // Only the first run may be cut: the second must then finish the job.
        for first in [true, false] {
            self.figures.recover_runs += 1;
            let aim = (first && rng.u8(0..8) == 0)
                .then(|| Aim::Start(Duration::from_micros(rng.u64(0..4000))));
            match self.device.run("recover", aim, tag) {
                Run::Killed { .. } => {
                    self.figures.recover_killed += 1;
                    killed = true;
                }
                Run::Exited {
                    ok: true, stdout, ..
                } => {
                    let how = if stdout.starts_with("undid") {
                        "rolled back"
                    } else if stdout.starts_with("finished") {
                        "completed"
                    } else if stdout.starts_with("removed leftovers") {
                        "swept"
                    } else {
                        "nothing to do"
                    };
                    *self.figures.recovered.entry(how).or_default() += 1;
                    return Some((how, killed));
                }
                Run::Exited { stderr, .. } => {
                    self.violation(format!("{what}: ota recover failed: {stderr}"));
                    return None;
                }
                Run::Hung => {
                    self.figures.hung += 1;
                    self.violation(format!("{what}: ota recover hung"));
                    return None;
                }
            }
        }
        unreachable!("the second run of ota recover is never killed")
    }

    /// The tree must be exactly one of the `allowed` releases, the one `state.json` names,
    /// and the state folder must hold no leftovers.
    fn check(&mut self, allowed: &[usize], what: &str) {
        self.figures.trees_checked += 1;
        let tree = self.device.tree();
        let found = tree
            .as_ref()
            .ok()
            .and_then(|t| allowed.iter().copied().find(|&i| self.listings[i] == *t));
        match (&tree, found) {
            (_, Some(i)) => {
                let named = self.device.installed_tag();
                let named_release = named.as_ref().and_then(|t| self.tags.get(t)).copied();
                if named_release.is_none_or(|n| self.listings[n] != self.listings[i]) {
                    self.figures.state_disagrees += 1;
                    self.violation(format!(
                        "{what}: release {i} on disk, but state.json names {named:?}"
                    ));
                }
            }
            (Err(e), None) => {
                self.figures.mixed += 1;
                self.violation(format!("{what}: mixed tree: {e}"));
            }
            (Ok(t), None) => {
                self.figures.mixed += 1;
                let last = *allowed.last().unwrap();
                self.violation(format!(
                    "{what}: mixed tree, none of releases {allowed:?}; against release {last}: {}",
                    releases::diff(&self.listings[last], t)
                ));
            }
        }
        let left = self.device.leftovers();
        if !left.is_empty() {
            self.figures.leftovers += 1;
            self.violation(format!("{what}: leftovers in the state folder: {left:?}"));
        }
    }

    /// Records a violation and prints it at once (the figures come at the end).
    fn violation(&mut self, message: String) {
        println!("soak: VIOLATION: {message}");
        self.violations.push(message);
    }

    /// Prints the figures; true if every criterion holds.
    fn report(&self, updates: usize, wall: Duration) -> bool {
        let f = &self.figures;
        let succeeded = f.first_try + f.after_retries;
        let rate = succeeded as f64 / updates.max(1) as f64;
        println!(
            "soak: updates attempted {updates}: succeeded first try {}, after retries {}, total {succeeded} ({:.2}%, required {:.1}%); failed {}",
            f.first_try,
            f.after_retries,
            rate * 100.0,
            REQUIRED_SUCCESS * 100.0,
            f.failed
        );
        let kinds: Vec<String> = f
            .error_kinds
            .iter()
            .map(|(k, n)| format!("{k} x{n}"))
            .collect();
        println!(
            "soak: ota runs: update {}, recover {}; updates that exited with an error {} ({}); hung {}",
            f.update_runs,
            f.recover_runs,
            f.failed_runs,
            if kinds.is_empty() {
                "-".to_owned()
            } else {
                kinds.join(", ")
            },
            f.hung
        );
        println!(
            "soak: SIGKILLs of ota update {}: while downloading {}, in the swap {}, after the commit {}; aimed but finished first {}; ota recover killed {}",
            f.kills,
            count(&f.killed_in, &Phase::Download),
            count(&f.killed_in, &Phase::Swap),
            count(&f.killed_in, &Phase::Committed),
            f.finished_before_kill,
            f.recover_killed
        );
        let by = |m: &BTreeMap<&str, usize>| {
            format!(
                "{} (rolled back {}, completed {}, swept {}, nothing to do {})",
                m.values().sum::<usize>(),
                count(m, &"rolled back"),
                count(m, &"completed"),
                count(m, &"swept"),
                count(m, &"nothing to do")
            )
        };
        println!(
            "soak: recoveries: by ota recover {}; left to the next ota update {}",
            by(&f.recovered),
            by(&f.left_to_update)
        );
        println!(
            "soak: trees checked {}: mixed trees {}, leftovers {}, state.json disagreeing {}",
            f.trees_checked, f.mixed, f.leftovers, f.state_disagrees
        );
        let (flat, spread) = self.disk_report();
        println!(
            "soak: server: {} requests ({} faulted, {} fault rules), {} bytes sent ({} body bytes)",
            f.requests, f.faulted_requests, f.fault_rules, f.wire_bytes, f.body_bytes
        );
        println!(
            "soak: wall time {:.1}s ({:.0} ms per update)",
            wall.as_secs_f64(),
            wall.as_secs_f64() * 1e3 / updates.max(1) as f64
        );
        let mut failed = Vec::new();
        if rate < REQUIRED_SUCCESS {
            failed.push(format!(
                "success {:.2}% < {:.1}%",
                rate * 100.0,
                REQUIRED_SUCCESS * 100.0
            ));
        }
        if f.mixed > 0 {
            failed.push(format!("{} mixed trees", f.mixed));
        }
        if f.leftovers > 0 {
            failed.push(format!("{} leftovers", f.leftovers));
        }
        if f.state_disagrees > 0 {
            failed.push(format!("state.json disagreed {} times", f.state_disagrees));
        }
        if !flat {
            failed.push(format!(
                "disk not flat: {spread} bytes between updates to one release"
            ));
        }
        if f.hung > 0 {
            failed.push(format!("{} hung runs", f.hung));
        }
        if failed.is_empty() && self.violations.is_empty() {
            println!("soak: ok");
            true
        } else {
            println!("soak: criteria failed: {}", failed.join("; "));
            false
        }
    }

    /// Prints min/max/last disk usage; flat if the updates to any one release left the
    /// same usage within [`FLAT_SLACK`] bytes. Returns (flat, largest spread).
    fn disk_report(&self) -> (bool, u64) {
        let disk = &self.figures.disk;
        let Some(last) = disk.last() else {
            return (true, 0);
        };
        let bytes = disk.iter().map(|(_, u)| u.bytes);
        let alloc = disk.iter().map(|(_, u)| u.allocated);
        let mut spread = 0;
        for k in 0..COUNT {
            let of_k: Vec<u64> = disk
                .iter()
                .filter(|(r, _)| *r == k)
                .map(|(_, u)| u.bytes)
                .collect();
            if let (Some(lo), Some(hi)) = (of_k.iter().min(), of_k.iter().max()) {
                spread = spread.max(hi - lo);
            }
        }
        let releases: Vec<String> = self
            .listings
            .iter()
            .map(|l| releases::bytes(l).to_string())
            .collect();
        println!(
            "soak: disk (target + state folder, after each update): bytes min {} max {} last {}; allocated min {} max {} last {}; releases' own bytes {}; largest spread for one release {spread} bytes",
            bytes.clone().min().unwrap(),
            bytes.max().unwrap(),
            last.1.bytes,
            alloc.clone().min().unwrap(),
            alloc.max().unwrap(),
            last.1.allocated,
            releases.join("/")
        );
        (spread <= FLAT_SLACK, spread)
    }
}

fn count<K: Ord>(counts: &BTreeMap<K, usize>, key: &K) -> usize {
    counts.get(key).copied().unwrap_or(0)
}

/// Commits release `k` on the repository's branch (at the epoch) and returns its tree id.
fn commit_tree(repo: &GitRepo, k: usize, listing: &Listing) -> String {
    for entry in std::fs::read_dir(repo.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n != ".git") {
            if path.is_dir() && !path.is_symlink() {
                std::fs::remove_dir_all(&path).unwrap();
            } else {
                std::fs::remove_file(&path).unwrap();
            }
        }
    }
    for (path, entry) in listing {
        match entry {
            Entry::File { bytes, exec: false } => repo.write(path, bytes),
            Entry::File { bytes, exec: true } => repo.write_exec(path, bytes),
            Entry::Link(to) => repo.symlink(path, to),
        };
    }
    repo.commit_all(&format!("release {k}"), EPOCH - 600);
    repo.rev("HEAD^{tree}")
}
