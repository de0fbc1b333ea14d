//! Crash states from a recorded run, recovery on each, recovery crashed on each of its own
//! operations (to depth 2), and the invariant checked after the final recovery.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ota::Recovery;
use ota::testing::recover;

use crate::scenario::{Prepared, Side};
use crate::sim::{Crash, Data, Durability, Op, Rec, SimFs, Tree, materialize, volatile_files};

/// Which crash states to generate, and which syncs to switch off.
#[derive(Clone, Debug)]
pub struct Knobs {
    /// Every state that loses one non-durable op of the run while later ones persist.
    pub drop_one: bool,
    /// Files with non-durable data: lost, torn, zeros, garbage.
    pub partial: bool,
    /// Seeded random subsets of non-durable effects.
    pub random: usize,
    /// Recovery crash depth below prefix and durable-only states of the run (2: a crash in
    /// the recovery of a crashed recovery).
    pub depth: u32,
    /// Recovery crash depth below the other families.
    pub depth_other: u32,
    /// At recovery crash level 1, also lose one non-durable op of the recovery.
    pub recovery_drop_one: bool,
    /// Syncs of the recorded run (by index) that do nothing.
    pub disabled: BTreeSet<usize>,
    /// Syncs of every recovery with this label do nothing.
    pub recovery_disabled: Option<String>,
    /// Stop at the first violation.
    pub stop_at_first: bool,
    /// Random seed.
    pub seed: u64,
}

/// Counters of one enumeration.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Crash states of the recorded run, by family.
    pub by_family: BTreeMap<&'static str, u64>,
    /// Crash states inside a recovery (depth 1) and inside the recovery of a crashed
    /// recovery (depth 2).
    pub depth1: u64,
    pub depth2: u64,
    /// Recoveries actually run (states seen before are not run again).
    pub recoveries: u64,
    /// Final states found old / new.
    pub ended_old: u64,
    pub ended_new: u64,
    /// Violations (with the crash state that shows each).
    pub violations: Vec<String>,
}

impl Stats {
    /// Crash states of the run.
    pub fn top(&self) -> u64 {
        self.by_family.values().sum()
    }

    /// Every crash state checked.
    pub fn total(&self) -> u64 {
        self.top() + self.depth1 + self.depth2
    }

    pub fn add(&mut self, other: &Stats) {
        for (k, v) in &other.by_family {
            *self.by_family.entry(k).or_default() += v;
        }
        self.depth1 += other.depth1;
        self.depth2 += other.depth2;
        self.recoveries += other.recoveries;
        self.ended_old += other.ended_old;
        self.ended_new += other.ended_new;
        self.violations.extend(other.violations.iter().cloned());
    }
}

/// Names the protocol step of each sync in `log` (empty for other ops).
pub fn step_labels(log: &[Rec], recovery: bool) -> Vec<String> {
    let mut out = Vec::with_capacity(log.len());
    let mut last: Option<&Rec> = None;
    let mut journal_tmp = false;
    let mut journal_in = false;
    let mut barriers_after_journal = 0;
    let mut undo_barriers = 0;
    for rec in log {
        let name = |r: &Rec| {
            let to = r.path.rsplit(" -> ").next().unwrap_or(&r.path);
            to.rsplit('/').next().unwrap_or(to).to_owned()
        };
        let label = match &rec.op {
            Op::SyncFs if recovery => {
                undo_barriers += 1;
                format!("recovery: undo barrier {undo_barriers}")
            }
            Op::SyncFs if journal_tmp && !journal_in => {
                "journal barrier (staged files, journal bytes)".to_owned()
            }
            Op::SyncFs if journal_in => {
                barriers_after_journal += 1;
                match barriers_after_journal {
                    1 => "phase-1 barrier (displaced before placed)".to_owned(),
                    2 => "phase-2 barrier (placed before commit)".to_owned(),
                    3 => "kept barrier (kept/ and previous/ filled before the journal goes)"
                        .to_owned(),
                    n => format!("barrier {n} after the journal"),
                }
            }
            Op::SyncFs => "syncfs".to_owned(),
            Op::SyncFile { .. } => format!("{} bytes", name(rec)),
            Op::SyncDir { .. } => {
                let what = match last.map(|r| (&r.op, name(r))) {
                    Some((Op::Rename { .. }, n)) if n == "journal.json" => "journal rename",
                    Some((Op::Rename { .. }, n)) if n == "state.json" => {
                        "commit point: state.json rename"
                    }
                    Some((Op::Rename { .. }, n)) if n == "last_error.json" => {
                        "last_error.json rename"
                    }
                    Some((Op::Unlink { .. }, n)) if n == "journal.json" => "journal removal",
                    _ => "folder",
                };
                if recovery {
                    format!("recovery: {what}")
                } else {
                    what.to_owned()
                }
            }
            _ => String::new(),
        };
        match &rec.op {
            Op::Create { .. } if name(rec) == "journal.json.tmp" => journal_tmp = true,
            Op::Rename { .. } if name(rec) == "journal.json" => journal_in = true,
            Op::Unlink { .. } if name(rec) == "journal.json" => {
                journal_tmp = false;
                journal_in = false;
                barriers_after_journal = 0;
            }
            _ => {}
        }
        if !rec.op.is_sync() && !matches!(rec.op, Op::Write { .. } | Op::Chmod { .. }) {
            last = Some(rec);
        }
        out.push(label);
    }
    out
}

/// Describes a crash state of `log`.
pub fn describe(log: &[Rec], crash: &Crash) -> String {
    let mut s = match crash.k {
        0 => "before the first op".to_owned(),
        k => format!("after op #{} `{}`", k - 1, log[k - 1].describe()),
    };
    if !crash.lost.is_empty() {
        let lost: Vec<String> = crash
            .lost
            .iter()
            .take(6)
            .map(|&i| format!("#{i} `{}`", log[i].describe()))
            .collect();
        let more = crash.lost.len().saturating_sub(6);
        s += &format!(", lost {}", lost.join(", "));
        if more > 0 {
            s += &format!(" and {more} more");
        }
    }
    for (ino, how) in &crash.data {
        let path = log
            .iter()
            .find_map(|r| match r.op {
                Op::Create { ino: i, .. } if i == *ino => Some(r.path.clone()),
                _ => None,
            })
            .unwrap_or_else(|| format!("inode {ino}"));
        s += &format!(", data of {path}: {how:?}");
    }
    s
}

/// What a crash point demands of the recovered disk, beyond old-or-new.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Must {
    /// The update had committed (its commit point's folder fsync had returned).
    pub new: bool,
    /// A failure had been recorded durably in `last_error.json`.
    pub error: bool,
}

impl Must {
    /// The demands of a crash after `k` operations of `p`'s run.
    pub fn at(p: &Prepared, k: usize) -> Must {
        Must {
            new: p.commit_sync.is_some_and(|c| k > c),
            error: p.error_sync.is_some_and(|c| k > c),
        }
    }
}

/// Runs the enumeration of one prepared scenario.
pub struct Enumerator<'a> {
    p: &'a Prepared,
    knobs: Knobs,
    memo: HashMap<(u128, Must), u32>,
    trail: Vec<String>,
    pub stats: Stats,
    /// Recovered trees of prefix states (for fresh updates), by digest.
    pub recovered: Vec<Tree>,
}

/// The durable-only state after `k` ops: every non-durable op and byte lost.
fn durable_only(log: &[Rec], dur: &Durability, k: usize) -> Crash {
    Crash {
        k,
        lost: dur.volatile(k).into_iter().collect(),
        data: volatile_files(log, dur, k)
            .into_iter()
            .map(|i| (i, Data::Lost))
            .collect(),
    }
}

impl<'a> Enumerator<'a> {
    pub fn new(p: &'a Prepared, knobs: Knobs) -> Enumerator<'a> {
        Enumerator {
            p,
            knobs,
            memo: HashMap::new(),
            trail: Vec::new(),
            stats: Stats::default(),
            recovered: Vec::new(),
        }
    }

    fn done(&self) -> bool {
        self.knobs.stop_at_first && !self.stats.violations.is_empty()
    }

    /// Every family over the recorded run.
    pub fn run(&mut self) {
        let p = self.p;
        let log = &p.log;
        let dur = Durability::of(log, &self.knobs.disabled);
        let n = log.len();
        let mut rng = fastrand::Rng::with_seed(self.knobs.seed);
        for k in p.crash_from..=n {
            let must = Must::at(p, k);
            let mut families: Vec<(&'static str, Crash, u32)> = vec![
                ("prefix", Crash::prefix(k), self.knobs.depth),
                ("durable-only", durable_only(log, &dur, k), self.knobs.depth),
            ];
            if self.knobs.drop_one {
                for i in dur.volatile(k) {
                    if matches!(log[i].op, Op::Write { .. }) {
                        continue; // torn data is the partial family's
                    }
                    let lost = BTreeSet::from([i]);
                    let crash = Crash {
                        k,
                        lost,
                        data: BTreeMap::new(),
                    };
                    families.push(("reorder (one op lost)", crash, self.knobs.depth_other));
                }
            }
            if self.knobs.partial {
                for ino in volatile_files(log, &dur, k) {
                    for how in Data::ALL {
                        let crash = Crash {
                            k,
                            lost: BTreeSet::new(),
                            data: BTreeMap::from([(ino, how)]),
                        };
                        families.push(("partial write", crash, self.knobs.depth_other));
                    }
                }
            }
            for (family, crash, depth) in families {
                self.top(family, &dur, &crash, must, depth);
                if self.done() {
                    return;
                }
            }
        }
        for _ in 0..self.knobs.random {
            let k = rng.usize(p.crash_from..=n);
            let must = Must::at(p, k);
            let keep = [0.1, 0.3, 0.5, 0.7, 0.9][rng.usize(0..5)];
            let lost = dur
                .volatile(k)
                .into_iter()
                .filter(|_| rng.f64() >= keep)
                .collect();
            let data = volatile_files(log, &dur, k)
                .into_iter()
                .filter_map(|ino| match rng.usize(0..6) {
                    n @ 0..=3 => Some((ino, Data::ALL[n])),
                    _ => None,
                })
                .collect();
            let crash = Crash { k, lost, data };
            self.top("random subset", &dur, &crash, must, self.knobs.depth_other);
            if self.done() {
                return;
            }
        }
    }

    fn top(
        &mut self,
        family: &'static str,
        dur: &Durability,
        crash: &Crash,
        must: Must,
        depth: u32,
    ) {
        *self.stats.by_family.entry(family).or_default() += 1;
        let tree = materialize(&self.p.base, &self.p.log, dur, crash);
        self.trail.push(format!(
            "{}: {family} crash {}{}",
            self.p.name,
            describe(&self.p.log, crash),
            if must.new { " (update committed)" } else { "" }
        ));
        let keep = family == "prefix";
        self.check(&tree, depth, must, keep);
        self.trail.pop();
    }

    /// Recovers `tree`, checks the result, then crashes the recovery at each of its
    /// operations down to `depth` more levels.
    fn check(&mut self, tree: &Tree, depth: u32, must: Must, keep: bool) {
        let key = (tree.digest(), must);
        if !keep && self.memo.get(&key).is_some_and(|&d| d >= depth) {
            return;
        }
        self.stats.recoveries += 1;
        let p = self.p;
        let fs = SimFs::new(tree.clone());
        let result = recover(&fs, &p.target, &p.dirs);
        if let Err(e) = result {
            self.violation(format!("recovery failed: {e}"));
            return;
        }
        let after = fs.live();
        if let Err(v) = self.verify(&after, must) {
            self.violation(v);
            return;
        }
        if keep {
            self.recovered.push(after.clone());
        }
        let again = SimFs::new(after.clone());
        match recover(&again, &p.target, &p.dirs) {
            Ok(Recovery::Clean) if again.log().is_empty() => {}
            other => {
                self.violation(format!(
                    "recovering again is not a no-op: {:?}, {} changes",
                    other.map_err(|e| e.to_string()),
                    again.log().len()
                ));
                return;
            }
        }
        if depth > 0 {
            let log = fs.log();
            let labels = step_labels(&log, true);
            let disabled: BTreeSet<usize> = match &self.knobs.recovery_disabled {
                Some(l) => (0..log.len()).filter(|&i| labels[i] == *l).collect(),
                None => BTreeSet::new(),
            };
            let dur = Durability::of(&log, &disabled);
            let level = if self.trail.len() == 1 { 1 } else { 2 };
            for j in 0..=log.len() {
                let mut states = vec![Crash::prefix(j), durable_only(&log, &dur, j)];
                if self.knobs.recovery_drop_one && level == 1 {
                    for i in dur.volatile(j) {
                        states.push(Crash {
                            k: j,
                            lost: BTreeSet::from([i]),
                            data: BTreeMap::new(),
                        });
                    }
                }
                for crash in states {
                    if level == 1 {
                        self.stats.depth1 += 1;
                    } else {
                        self.stats.depth2 += 1;
                    }
                    let t = materialize(tree, &log, &dur, &crash);
                    self.trail.push(format!(
                        "recovery {level} crashed {}",
                        describe(&log, &crash)
                    ));
                    self.check(&t, depth - 1, must, false);
                    self.trail.pop();
                    if self.done() {
                        return;
                    }
                }
            }
        }
        self.memo.insert(key, depth);
    }

    fn violation(&mut self, what: String) {
        let mut text = String::new();
        for (i, t) in self.trail.iter().enumerate() {
            text += &format!("{}{t}\n", "  ".repeat(i));
        }
        text += &format!("{}=> {what}", "  ".repeat(self.trail.len()));
        self.stats.violations.push(text);
    }

    /// The invariant after the final recovery.
    fn verify(&mut self, after: &Tree, must: Must) -> Result<(), String> {
        let p = self.p;
        let digest = after.digest_below(&p.target, &[".ota"]);
        let side: &Side = if p.new_allowed && digest == p.new.digest {
            &p.new
        } else if !must.new && digest == p.old.digest {
            &p.old
        } else {
            let listing = after.listing(&p.target, &[".ota"]);
            let want = if must.new {
                "new (committed)"
            } else {
                "old or new"
            };
            return Err(format!(
                "the target is not the {want} release: vs old {}; vs new {}",
                diff(&p.old.listing, &listing),
                diff(&p.new.listing, &listing)
            ));
        };
        if side.label == "new" {
            self.stats.ended_new += 1;
        } else {
            self.stats.ended_old += 1;
        }
        let fs = SimFs::new(after.clone());
        let installed = p
            .dirs
            .read_installed(&fs)
            .map_err(|e| format!("state.json unreadable: {e}"))?;
        let release = installed.as_ref().map(|i| i.release.clone());
        if release != side.release {
            return Err(format!(
                "the {} release is on disk but state.json names {:?}",
                side.label,
                release.map(|r| r.ref_name)
            ));
        }
        // Nothing of the user's is lost: what the release replaced is kept, exactly when the
        // update committed.
        let kept = crate::scenario::kept_files(after, &p.dirs);
        if kept != side.kept {
            return Err(format!(
                "kept files {:?}, expected {:?} ({} release)",
                kept.keys(),
                side.kept.keys(),
                side.label
            ));
        }
        let owned = crate::scenario::owned_paths(installed.as_ref());
        if owned != side.owned {
            return Err(format!(
                "state.json owns {owned:?}, expected {:?}",
                side.owned
            ));
        }
        check_previous(after, p, installed.as_ref())?;
        // `ota status` reads last_error.json: it must parse, and a failure recorded before
        // the crash must still be reported after it.
        let error = p
            .dirs
            .read_last_error(&fs)
            .map_err(|e| format!("last_error.json unreadable: {e}"))?;
        if must.error && error.is_none() {
            return Err("the failure recorded in last_error.json before the crash is gone".into());
        }
        for (path, _) in after.listing(p.dirs.root(), &[]) {
            let leftover = path == "journal.json"
                || path.ends_with(".tmp")
                || (path.starts_with("stage/") || path.starts_with("backup/"));
            if leftover {
                return Err(format!("left behind in the state folder: {path}"));
            }
            // Downloads kept for the next run: files named by a blob id, and none once the
            // update committed (they joined the stage before its journal).
            if let Some(name) = path.strip_prefix("downloads/") {
                if side.label == "new" {
                    return Err(format!("downloads/{name} left after the commit"));
                }
                let blob_id = name.len() == 40
                    && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                if !blob_id {
                    return Err(format!("downloads/ holds {name}, not a blob id"));
                }
            }
        }
        Ok(())
    }
}

/// While `state.json` says a release is on trial with a rollback point, every file of that
/// point is on the device: in the target with its content, or kept as `previous/<blob id>`
/// holding exactly that content (so a rollback needs no network). And `previous/` holds no
/// object the state does not need (recovery sweeps them).
fn check_previous(
    after: &Tree,
    p: &Prepared,
    installed: Option<&ota::Installed>,
) -> Result<(), String> {
    use crate::sim::Entry;
    let id_of = |e: &Entry| match e {
        Entry::File(bytes, _) => Some((ota::ObjectId::for_blob(bytes), false)),
        Entry::Link(target) => Some((ota::ObjectId::for_blob(target.as_bytes()), true)),
        Entry::Dir(_) => None,
    };
    let in_target: BTreeSet<(ota::ObjectId, bool)> = after
        .listing(&p.target, &[".ota"])
        .values()
        .filter_map(id_of)
        .collect();
    let mut kept = BTreeSet::new();
    for (name, entry) in after.listing(&p.dirs.root().join("previous"), &[]) {
        let Some((id, link)) = id_of(&entry) else {
            return Err(format!("previous/{name} is a folder"));
        };
        if id.to_hex() != name {
            return Err(format!("previous/{name} holds other content (blob {id})"));
        }
        kept.insert((id, link));
    }
    let rollback_to = installed
        .and_then(|i| i.trial.as_ref())
        .and_then(|t| t.rollback_to.as_ref());
    let needed: BTreeSet<ota::ObjectId> = rollback_to
        .map(|r| r.files.entries().iter().map(|e| e.blob).collect())
        .unwrap_or_default();
    if let Some((id, _)) = kept.iter().find(|(id, _)| !needed.contains(id)) {
        return Err(format!("previous/{id} is kept but no trial needs it"));
    }
    let Some(rollback_to) = rollback_to else {
        return Ok(());
    };
    for entry in rollback_to.files.entries() {
        let key = (entry.blob, entry.kind == ota::Kind::Symlink);
        if !in_target.contains(&key) && !kept.contains(&key) {
            return Err(format!(
                "{} of the rollback point {} is neither in the target nor kept in previous/",
                entry.path, rollback_to.release.ref_name
            ));
        }
    }
    Ok(())
}

/// The first differences between two listings.
pub fn diff(
    want: &BTreeMap<String, crate::sim::Entry>,
    got: &BTreeMap<String, crate::sim::Entry>,
) -> String {
    let mut out = Vec::new();
    for (p, e) in want {
        match got.get(p) {
            None => out.push(format!("missing {p}")),
            Some(g) if g != e => out.push(format!("{p} differs ({})", short(g))),
            _ => {}
        }
    }
    for p in got.keys() {
        if !want.contains_key(p) {
            out.push(format!("extra {p}"));
        }
    }
    let n = out.len();
    out.truncate(4);
    if n > 4 {
        out.push(format!("… {} more", n - 4));
    }
    out.join(", ")
}

fn short(e: &crate::sim::Entry) -> String {
    match e {
        crate::sim::Entry::Dir(m) => format!("folder {m:o}"),
        crate::sim::Entry::File(b, mode) => format!(
            "{} bytes, mode {mode:o}: {:?}",
            b.len(),
            String::from_utf8_lossy(&b[..b.len().min(24)])
        ),
        crate::sim::Entry::Link(t) => format!("-> {t}"),
    }
}
