//! Proof that the enumeration is sharp: each fsync of the transaction, switched off alone,
//! must make it report a violation. An fsync whose removal nothing catches is redundant or
//! shows a hole in the model; either way this check fails until that is resolved.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::enumerate::{Enumerator, Knobs, step_labels};
use crate::scenario::Prepared;
use crate::sim::{Crash, Data, Durability, SimFs, Tree, materialize, volatile_files};

/// One fsync switched off.
#[derive(Clone)]
struct Job {
    scenario: usize,
    /// Index in the recorded run, or `None` for a recovery step (all its occurrences).
    index: Option<usize>,
    step: String,
    what: String,
}

fn knobs(disabled: BTreeSet<usize>, recovery: Option<String>, seed: u64) -> Knobs {
    Knobs {
        drop_one: true,
        partial: true,
        random: 500,
        depth: if recovery.is_some() { 2 } else { 1 },
        depth_other: 1,
        recovery_drop_one: recovery.is_some(),
        disabled,
        recovery_disabled: recovery,
        stop_at_first: true,
        seed,
    }
}

/// Runs the check; prints the table; false if some fsync is never needed.
pub fn run(prepared: &[Prepared]) -> bool {
    let t = Instant::now();
    let mut jobs = Vec::new();
    let mut recovery_steps: BTreeSet<String> = BTreeSet::new();
    for (i, p) in prepared.iter().enumerate() {
        let labels = step_labels(&p.log, false);
        for (s, (rec, label)) in p.log.iter().zip(labels).enumerate().skip(p.crash_from) {
            if rec.op.is_sync() {
                jobs.push(Job {
                    scenario: i,
                    index: Some(s),
                    step: label,
                    what: rec.describe(),
                });
            }
        }
        recovery_steps.extend(recovery_labels(p));
    }
    for step in &recovery_steps {
        for (i, _) in prepared.iter().enumerate() {
            jobs.push(Job {
                scenario: i,
                index: None,
                step: step.clone(),
                what: "every recovery".to_owned(),
            });
        }
    }
    let results: Mutex<Vec<(usize, Option<String>)>> = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(n) else { break };
                    let p = &prepared[job.scenario];
                    let knobs = match job.index {
                        Some(s) => knobs(BTreeSet::from([s]), None, n as u64),
                        None => knobs(BTreeSet::new(), Some(job.step.clone()), n as u64),
                    };
                    let mut e = Enumerator::new(p, knobs);
                    e.run();
                    let caught = e.stats.violations.first().cloned();
                    results.lock().unwrap().push((n, caught));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| r.0);

    println!();
    println!("crash: sensitivity: each fsync switched off alone; the crash state that catches it");
    let mut by_step: BTreeMap<String, (usize, usize, Option<String>)> = BTreeMap::new();
    for (n, caught) in &results {
        let job = &jobs[*n];
        let p = &prepared[job.scenario];
        let at = job
            .index
            .map(|s| format!("#{s}"))
            .unwrap_or_else(|| "all".into());
        let row = by_step.entry(job.step.clone()).or_default();
        row.1 += 1;
        match caught {
            Some(v) => {
                row.0 += 1;
                println!("  {:<34} {:>5} {:<48} {}", p.name, at, job.step, job.what);
                for line in v.lines() {
                    println!("        {line}");
                }
                if row.2.is_none() {
                    row.2 = Some(format!("{}: {}", p.name, v.lines().next().unwrap_or("")));
                }
            }
            None => println!(
                "  {:<34} {:>5} {:<48} {} -- not needed in this scenario",
                p.name, at, job.step, job.what
            ),
        }
    }
    println!();
    println!(
        "crash: sensitivity summary (per protocol step: scenarios where its removal is caught)"
    );
    let mut ok = true;
    for (step, (caught, all, _)) in &by_step {
        let verdict = if *caught > 0 {
            "needed"
        } else {
            "NEVER CAUGHT"
        };
        ok &= *caught > 0;
        println!("  {step:<52} caught in {caught:>2}/{all:<2} {verdict}");
    }
    println!(
        "crash: sensitivity: {} fsync removals tried in {:.1}s; {}",
        jobs.len(),
        t.elapsed().as_secs_f64(),
        if ok {
            "every fsync is needed"
        } else {
            "SOME FSYNC IS NEVER NEEDED"
        }
    );
    ok
}

/// Labels of the syncs recoveries make, over the prefix states of `p`.
fn recovery_labels(p: &Prepared) -> BTreeSet<String> {
    let dur = Durability::of(&p.log, &BTreeSet::new());
    let mut out = BTreeSet::new();
    for k in p.crash_from..=p.log.len() {
        let tree = materialize(&p.base, &p.log, &dur, &Crash::prefix(k));
        let fs = SimFs::new(tree);
        if ota::testing::recover(&fs, &p.target, &p.dirs).is_ok() {
            let log = fs.log();
            for (i, l) in step_labels(&log, true).into_iter().enumerate() {
                if log[i].op.is_sync() {
                    out.insert(l);
                }
            }
        }
    }
    out
}

/// A random crash state of `p`, recovered; `None` if recovery failed (the enumeration
/// reports that).
pub fn random_recovered(p: &Prepared, rng: &mut fastrand::Rng) -> Option<Tree> {
    let dur = Durability::of(&p.log, &BTreeSet::new());
    let k = rng.usize(p.crash_from..=p.log.len());
    let keep = rng.f64();
    let lost = dur
        .volatile(k)
        .into_iter()
        .filter(|_| rng.f64() >= keep)
        .collect();
    let data = volatile_files(&p.log, &dur, k)
        .into_iter()
        .map(|ino| (ino, Data::ALL[rng.usize(0..4)]))
        .collect();
    let tree = materialize(&p.base, &p.log, &dur, &Crash { k, lost, data });
    let fs = SimFs::new(tree);
    ota::testing::recover(&fs, &p.target, &p.dirs).ok()?;
    Some(fs.live())
}
