//! The power-loss safety proof of ota's transaction: every crash state of real updates,
//! recovered and checked (see `SAFETY.md`).
//!
//! - `sim`: the simulated filesystem and the power-loss model;
//! - `scenario`: the release pairs and the recorded runs (real updater, real GitHub source,
//!   real `ota_serve::Server` on 127.0.0.1);
//! - `enumerate`: crash states, recovery (crashed to depth 2) and the invariant;
//! - `sensitivity`: every fsync switched off in turn must be caught;
//! - `kill`: real `ota update` processes SIGKILLed on the real filesystem.
//!
//! A plain `main` (`harness = false`): it prints its figures and exits non-zero on a
//! violation. `OTA_CRASH_LONG=1` runs the long mode (more random subsets, thousands of kills).

#![allow(clippy::unwrap_used)]

mod enumerate;
mod kill;
mod scenario;
mod sensitivity;
mod sim;

use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use enumerate::{Enumerator, Knobs, Stats};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test` passes harness flags such as `--nocapture`; a filter argument that is not a
    // flag selects parts: `enumerate`, `sensitivity`, `kill`.
    let wanted: Vec<&str> = args[1..]
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    if args.iter().any(|a| a == "--list") {
        println!("crash: test");
        return ExitCode::SUCCESS;
    }
    let part = |name: &str| wanted.is_empty() || wanted.contains(&name);
    let long = std::env::var_os("OTA_CRASH_LONG").is_some_and(|v| v != "0");
    let started = Instant::now();
    let mut failed = false;

    if part("enumerate") || part("sensitivity") {
        let t = Instant::now();
        let scenarios = scenario::all();
        let prepared: Vec<scenario::Prepared> = scenarios.iter().map(scenario::prepare).collect();
        println!(
            "crash: {} scenarios recorded in {:.1}s (real Updater, GitHub source, ota_serve::Server on 127.0.0.1, simulated fs):",
            prepared.len(),
            t.elapsed().as_secs_f64()
        );
        for p in &prepared {
            println!(
                "  {:<34} {:>3} ops under test (of {}), commit point at op {}: {}",
                p.name,
                p.log.len() - p.crash_from,
                p.log.len(),
                p.commit_sync.map_or("-".to_owned(), |c| format!("#{c}")),
                p.result
            );
        }
        if part("enumerate") {
            failed |= !enumerate_all(&prepared, long);
        }
        if part("sensitivity") {
            failed |= !sensitivity::run(&prepared);
        }
    }
    if part("kill") {
        failed |= !kill::run(long);
    }
    println!(
        "crash: total time {:.1}s; {}",
        started.elapsed().as_secs_f64(),
        if failed { "FAILED" } else { "ok" }
    );
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Random subsets per scenario (at least 100,000 in total).
const RANDOM: usize = 10_000;
/// Fresh updates after recovered random states, per scenario.
const FRESH_RANDOM: usize = 30;

fn enumerate_all(prepared: &[scenario::Prepared], long: bool) -> bool {
    let t = Instant::now();
    let knobs = Knobs {
        drop_one: true,
        partial: true,
        random: if long { 10 * RANDOM } else { RANDOM },
        depth: 2,
        depth_other: 2,
        recovery_drop_one: true,
        disabled: Default::default(),
        recovery_disabled: None,
        stop_at_first: false,
        seed: 0x07a_c4a5,
    };
    let results: Mutex<Vec<(usize, Stats, Vec<sim::Tree>)>> = Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(p) = prepared.get(i) else { break };
                    let mut knobs = knobs.clone();
                    knobs.seed ^= i as u64;
                    let mut e = Enumerator::new(p, knobs);
                    e.run();
                    let stats = e.stats.clone();
                    let trees = std::mem::take(&mut e.recovered);
                    results.lock().unwrap().push((i, stats, trees));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| r.0);
    let enum_time = t.elapsed();

    // A fresh update after recovery: every prefix state and a sample of random ones.
    let t = Instant::now();
    let mut fresh_runs = 0;
    let mut fresh_failures = Vec::new();
    for (i, _, trees) in &results {
        let p = &prepared[*i];
        for tree in trees {
            fresh_runs += 1;
            if let Err(e) = fresh_update(p, tree) {
                fresh_failures.push(format!("{}: {e}", p.name));
            }
        }
        let mut rng = fastrand::Rng::with_seed(*i as u64);
        for _ in 0..FRESH_RANDOM {
            let Some(tree) = sensitivity::random_recovered(p, &mut rng) else {
                continue;
            };
            fresh_runs += 1;
            if let Err(e) = fresh_update(p, &tree) {
                fresh_failures.push(format!("{}: {e}", p.name));
            }
        }
    }
    let fresh_time = t.elapsed();

    println!();
    println!("crash: enumeration (power-loss model: see tests/crash/sim.rs and SAFETY.md)");
    println!(
        "{:<36} {:>5} {:>7} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>6} {:>5}",
        "scenario",
        "ops",
        "prefix",
        "dur-only",
        "reorder",
        "partial",
        "random",
        "rec-d1",
        "rec-d2",
        "total",
        "old/new",
        "viol"
    );
    let mut total = Stats::default();
    for (i, stats, _) in &results {
        let p = &prepared[*i];
        let f = |name: &str| stats.by_family.get(name).copied().unwrap_or(0);
        println!(
            "{:<36} {:>5} {:>7} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>6} {:>5}",
            p.name,
            p.log.len() - p.crash_from,
            f("prefix"),
            f("durable-only"),
            f("reorder (one op lost)"),
            f("partial write"),
            f("random subset"),
            stats.depth1,
            stats.depth2,
            stats.total(),
            format!("{}/{}", stats.ended_old, stats.ended_new),
            stats.violations.len()
        );
        total.add(stats);
    }
    let f = |name: &str| total.by_family.get(name).copied().unwrap_or(0);
    println!(
        "{:<36} {:>5} {:>7} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>6} {:>5}",
        "TOTAL",
        "",
        f("prefix"),
        f("durable-only"),
        f("reorder (one op lost)"),
        f("partial write"),
        f("random subset"),
        total.depth1,
        total.depth2,
        total.total(),
        "",
        total.violations.len()
    );
    println!(
        "crash: {} scenarios x crash states: {} states of the updates + {} recovery crashes at depth 1 + {} at depth 2 = {} checked ({} distinct recoveries run) in {:.1}s",
        prepared.len(),
        total.top(),
        total.depth1,
        total.depth2,
        total.total(),
        total.recoveries,
        enum_time.as_secs_f64()
    );
    println!(
        "crash: fresh update after recovery: {fresh_runs} runs, {} failed, in {:.1}s",
        fresh_failures.len(),
        fresh_time.as_secs_f64()
    );
    println!(
        "crash: violations = {}",
        total.violations.len() + fresh_failures.len()
    );
    for v in total.violations.iter().take(10) {
        println!("VIOLATION:\n{v}");
    }
    for v in fresh_failures.iter().take(10) {
        println!("FRESH UPDATE FAILED: {v}");
    }
    total.violations.is_empty() && fresh_failures.is_empty()
}

/// A fresh update from a recovered tree: it must install the newest release.
fn fresh_update(p: &scenario::Prepared, tree: &sim::Tree) -> Result<(), String> {
    let fs = sim::SimFs::new(tree.clone());
    if tree.ino_at(p.dirs.root()).is_none() {
        // What `Updater::prepare` does with std::fs, outside the seam.
        ota::fs::Fs::create_dir(&fs, p.dirs.root(), 0o755).map_err(|e| e.to_string())?;
    }
    // After a crash in a rollback, the update finishes the rollback (its error says so).
    match scenario::update(&p.config, &p.fresh_tag, fs.clone()) {
        Err(e) if !scenario::rolled_back(&e) => return Err(e.to_string()),
        _ => {}
    }
    let got = scenario::outcome_of("fresh", &fs.live(), &p.target, &p.dirs);
    if got.listing != p.fresh.listing {
        return Err(format!(
            "after a fresh update: {}",
            enumerate::diff(&p.fresh.listing, &got.listing)
        ));
    }
    if got.release != p.fresh.release {
        return Err("a fresh update left state.json naming another release".into());
    }
    Ok(())
}
