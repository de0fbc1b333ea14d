//! What an update changes: a pure function of the installed manifest, the new manifest and
//! the local facts of a [`Survey`].
//!
//! Rules:
//! - a path whose content on disk already equals the release's is left alone (and becomes
//!   owned if it was not), so even a first install downloads only what is missing;
//! - a path that must change is staged from a local file that already has the right
//!   content when there is one (a moved or re-moded file), else from the kept previous
//!   release (`<state>/previous/<blob id>`, hard-linked: a rollback needs no network),
//!   otherwise downloaded;
//! - a file or link of the release a trial rolls back to that the update sets aside is
//!   stored in `previous/` at the commit (`Change::displaced`, [`Plan::ops`]);
//! - a file ota owned that the release drops is deleted, and folders that this empties are
//!   moved into the backup (and so removed at the commit); a plain file or link ota does not
//!   own at a path the release ships is displaced and kept under `<state>/kept/` (`Change::kept`);
//!   anything else ota does not own is never touched: where the release needs such a path
//!   (a folder with foreign files, a link to write through), the update is refused;
//! - free space is checked before the first byte is fetched: the staged bytes, rounded up
//!   per file to the filesystem block, plus a margin for the journal and state. A file
//!   hard-linked from `previous/` stages no new bytes; the objects kept there are already
//!   counted by the filesystem's free space.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::fs::FileKind;
use crate::manifest::{Entry, Kind, Manifest, ObjectId, RelPath};
use crate::state::RollbackPoint;
use crate::survey::{Local, Survey};
use crate::transaction::Op;

/// Room kept free beyond the staged files (journal, state, folder entries).
const MARGIN_BYTES: u64 = 1 << 20;
/// Journal and state bytes budgeted per release file.
const MARGIN_PER_FILE: u64 = 512;

/// What happens at one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing is there yet.
    Add,
    /// Something is there and is set aside (restorable) for the new content.
    Replace,
    /// An owned file the release no longer has.
    Delete,
}

/// Where the new content comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Downloaded from the source.
    Download,
    /// Copied from a local file expected to hold the same content (verified while
    /// copying; a mismatch falls back to a download).
    Copy(RelPath),
    /// Taken from the kept previous release, `<state>/previous/<blob id>`: hard-linked into
    /// the stage (copied if the exec bit differs), verified; a missing or damaged object
    /// falls back to a download.
    Previous(ObjectId),
}

/// How the files an update downloads travel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transfer {
    /// One request per file (each resumable with `Range`).
    #[default]
    Files,
    /// One archive of the whole release (GitHub's `tarball`), read once as it streams; the
    /// files it lacks, or holds with other bytes than the tree's, are then downloaded one by
    /// one.
    Archive {
        /// The most uncompressed bytes the archive may take: the release's files, each
        /// rounded up to tar's 512-byte blocks, plus headers. A longer archive is cut there.
        tar_bytes: u64,
    },
}

impl Transfer {
    /// `files` or `archive`, as `--json` and the log show it.
    pub fn name(self) -> &'static str {
        match self {
            Transfer::Files => "files",
            Transfer::Archive { .. } => "archive",
        }
    }
}

/// Bytes an archive must save to be worth one request saved: a request and its answer's
/// headers cost about 1 KiB on the wire, and each costs a round trip (loopback figures in
/// BENCHMARKS.md, "Installs as one archive").
const REQUEST_BYTES: u64 = 4 << 10;
/// Fewest downloads that take the archive: below, its two requests save nothing.
const ARCHIVE_MIN_FILES: usize = 8;
/// Tar bytes budgeted per file beyond its content: a 512-byte header, a pax header for long
/// names or big sizes (1 KiB), and the padding of its last block (at most 511).
const TAR_PER_FILE: u64 = 2 << 10;

/// One changed path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The path.
    pub path: RelPath,
    /// What happens there.
    pub action: Action,
    /// The new content (`None` for a delete).
    pub entry: Option<Entry>,
    /// Where the new content comes from (`None` for a delete).
    pub origin: Option<Origin>,
    /// What is at the path now and is set aside (`None` for an add).
    pub occupant: Option<FileKind>,
    /// Whether the occupant is a file or link ota does not own: it is kept (moved under
    /// `<state_dir>/kept/`) when the update commits, instead of being removed.
    pub kept: bool,
    /// The git blob id ota installed at this path (from the owned manifest), when the
    /// occupant set aside is that file or link: if the new state's rollback point has that
    /// content, the occupant is stored under `previous/` at the commit.
    pub displaced: Option<ObjectId>,
}

impl Change {
    /// The stage and backup slot name of this change (its index in the plan).
    pub(crate) fn slot(index: usize) -> String {
        index.to_string()
    }
}

/// The decided update.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Changed paths, sorted by path; the index of each is its slot.
    pub changes: Vec<Change>,
    /// Folders to create, parents first.
    pub create_dirs: Vec<RelPath>,
    /// Folders emptied by deletes, children first, with their modes: moved into the backup
    /// (whole, so owner, mode and xattrs survive a rollback) and removed with it at the end.
    pub remove_dirs: Vec<(RelPath, u32)>,
    /// Release files already in place and owned.
    pub unchanged: usize,
    /// Release files already in place but not owned before: they become owned.
    pub adopted: usize,
    /// Bytes to download.
    pub download_bytes: u64,
    /// Bytes copied from local files.
    pub copy_bytes: u64,
    /// Bytes taken from the kept previous release (`previous/`).
    pub previous_bytes: u64,
    /// Bytes of free space required (staged files rounded to blocks, plus margin).
    pub space_needed: u64,
    /// How the files to download travel: one by one, or in one archive of the release
    /// ([`Plan::choose_transfer`]).
    pub transfer: Transfer,
    /// Things the user should know (e.g. an owned file replaced by a folder, left alone).
    pub warnings: Vec<String>,
}

impl Plan {
    /// Whether the update changes no path.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.create_dirs.is_empty() && self.remove_dirs.is_empty()
    }

    /// Count of changes with `action`.
    pub fn count(&self, action: Action) -> usize {
        self.changes.iter().filter(|c| c.action == action).count()
    }

    /// Chooses how the files to download travel, when the source can send the release as
    /// one archive of `release_bytes` in `release_files` files (the whole tree, filtered out
    /// files included): the archive when it carries no more than the files one by one,
    /// counting each request it saves as [`REQUEST_BYTES`]:
    /// `release_bytes <= bytes + requests × REQUEST_BYTES`, for at least
    /// [`ARCHIVE_MIN_FILES`] requests. So a first install takes the archive, and an update
    /// that changes a few files of a large release does not. `held` is what an unfinished
    /// update left in `downloads/` (length by blob id): one by one, a file held whole costs
    /// no request and a partial one only its missing bytes, so an install stopped most of
    /// the way through finishes file by file instead of reading the archive again.
    pub(crate) fn choose_transfer(
        &mut self,
        release_bytes: u64,
        release_files: u64,
        held: &BTreeMap<ObjectId, u64>,
    ) {
        let missing: Vec<u64> = (self.changes.iter())
            .filter(|c| c.origin == Some(Origin::Download))
            .filter_map(|c| c.entry.as_ref())
            .filter(|e| e.kind != Kind::Symlink)
            .map(|e| e.size - held.get(&e.blob).copied().unwrap_or(0).min(e.size))
            .filter(|&missing| missing > 0)
            .collect();
        let bytes = missing.iter().fold(0u64, |sum, n| sum.saturating_add(*n));
        let saved = (missing.len() as u64).saturating_mul(REQUEST_BYTES);
        self.transfer = if missing.len() >= ARCHIVE_MIN_FILES
            && release_bytes <= bytes.saturating_add(saved)
        {
            let blocks = release_bytes.saturating_add(release_files.saturating_mul(TAR_PER_FILE));
            Transfer::Archive {
                tar_bytes: blocks.saturating_add(MARGIN_BYTES),
            }
        } else {
            Transfer::Files
        };
    }

    /// The transaction's operations in order (see `transaction`). `rollback_to` is the
    /// release the new state rolls back to, if any: the displaced files and links that hold
    /// one of its contents are stored under `previous/` at the commit.
    pub(crate) fn ops(&self, rollback_to: Option<&RollbackPoint>) -> Vec<Op> {
        let wanted: BTreeSet<ObjectId> = rollback_to
            .map(|r| r.files.entries().iter().map(|e| e.blob).collect())
            .unwrap_or_default();
        let mut ops = Vec::new();
        for (i, c) in self.changes.iter().enumerate() {
            if matches!(c.action, Action::Replace | Action::Delete) {
                ops.push(Op::Displace {
                    path: c.path.clone(),
                    slot: Change::slot(i),
                    kind: c.occupant.unwrap_or(FileKind::File),
                    keep: c.kept,
                    previous: c.displaced.filter(|id| wanted.contains(id)),
                });
            }
        }
        // Emptied folders move into the backup whole (owner, mode and xattrs stay with them).
        for (i, (path, _mode)) in self.remove_dirs.iter().enumerate() {
            ops.push(Op::Displace {
                path: path.clone(),
                slot: format!("dir{i}"),
                kind: FileKind::Dir,
                keep: false,
                previous: None,
            });
        }
        for path in &self.create_dirs {
            ops.push(Op::CreateDir { path: path.clone() });
        }
        for (i, c) in self.changes.iter().enumerate() {
            if matches!(c.action, Action::Add | Action::Replace) {
                ops.push(Op::Place {
                    path: c.path.clone(),
                    slot: Change::slot(i),
                });
            }
        }
        ops
    }
}

/// Decides the update; see the module docs.
pub(crate) fn plan(
    installed: &Manifest,
    target: &Manifest,
    survey: &Survey,
) -> Result<Plan, PlanError> {
    let mut plan = Plan::default();
    // Paths whose current occupant leaves during the transaction.
    let mut leaving: BTreeSet<RelPath> = BTreeSet::new();
    let mut changes: BTreeMap<RelPath, Change> = BTreeMap::new();

    for old in installed.entries() {
        if target.get(&old.path).is_some() {
            continue;
        }
        match survey.local(&old.path) {
            Local::Absent => {}
            local @ (Local::File { .. } | Local::Symlink { .. }) => {
                leaving.insert(old.path.clone());
                changes.insert(
                    old.path.clone(),
                    Change {
                        path: old.path.clone(),
                        action: Action::Delete,
                        entry: None,
                        origin: None,
                        occupant: local.kind(),
                        kept: false,
                        displaced: displaced(old, local),
                    },
                );
            }
            Local::Dir { .. } | Local::Other => plan.warnings.push(format!(
                "{} was installed by ota as a file but is now something else; left in place",
                old.path
            )),
        }
    }

    // Folders emptied by the deletes go too, deepest first, unless the release needs them.
    let needed: BTreeSet<RelPath> = target
        .entries()
        .iter()
        .flat_map(|e| e.path.ancestors())
        .collect();
    let mut listed: Vec<(&RelPath, &Vec<String>)> = survey.listings.iter().collect();
    listed.sort_by_key(|(dir, _)| std::cmp::Reverse(dir.depth()));
    for (dir, names) in listed {
        if needed.contains(dir) {
            continue;
        }
        let all_leaving = names.iter().all(|name| {
            RelPath::new(&format!("{dir}/{name}"), &[]).is_ok_and(|p| leaving.contains(&p))
        });
        if all_leaving {
            let Local::Dir { mode } = survey.local(dir) else {
                continue;
            };
            leaving.insert(dir.clone());
            plan.remove_dirs.push((dir.clone(), *mode));
        }
    }

    let copies = local_copies(installed, survey);
    for entry in target.entries() {
        let local = survey.local(&entry.path);
        let owned = installed.get(&entry.path);
        let trusted = owned.is_some_and(|o| o.same_content(entry));
        if local.holds(entry.kind, entry.size, entry.blob, trusted) {
            if owned.is_some() {
                plan.unchanged += 1;
            } else {
                plan.adopted += 1;
            }
            continue;
        }
        let action = match local {
            Local::Absent => Action::Add,
            Local::File { .. } | Local::Symlink { .. } => {
                leaving.insert(entry.path.clone());
                Action::Replace
            }
            Local::Dir { .. } if leaving.contains(&entry.path) => Action::Add,
            Local::Dir { .. } => {
                return Err(PlanError::Conflict {
                    path: entry.path.clone(),
                    reason: "is a folder holding files ota does not own".into(),
                });
            }
            Local::Other => {
                return Err(PlanError::Conflict {
                    path: entry.path.clone(),
                    reason: "is a device, socket or fifo".into(),
                });
            }
        };
        let origin = match copies.get(&(entry.blob, entry.kind == Kind::Symlink)) {
            Some(from) => Origin::Copy(from.clone()),
            None if survey.stored(entry).is_some() => Origin::Previous(entry.blob),
            None => Origin::Download,
        };
        changes.insert(
            entry.path.clone(),
            Change {
                path: entry.path.clone(),
                action,
                entry: Some(entry.clone()),
                origin: Some(origin),
                occupant: local.kind(),
                kept: action == Action::Replace && owned.is_none(),
                displaced: owned.and_then(|o| displaced(o, local)),
            },
        );
    }

    // Folders the new files need.
    let mut create: BTreeSet<RelPath> = BTreeSet::new();
    for change in changes.values().filter(|c| c.action != Action::Delete) {
        for dir in change.path.ancestors() {
            match survey.local(&dir) {
                Local::Dir { .. } if !leaving.contains(&dir) => {}
                Local::Absent | Local::Dir { .. } => {
                    create.insert(dir);
                }
                Local::File { .. } | Local::Symlink { .. } if leaving.contains(&dir) => {
                    create.insert(dir);
                }
                Local::Symlink { .. } => {
                    return Err(PlanError::Conflict {
                        path: change.path.clone(),
                        reason: format!(
                            "lies under {dir}, a symbolic link ota does not own; ota never writes through links"
                        ),
                    });
                }
                Local::File { .. } | Local::Other => {
                    return Err(PlanError::Conflict {
                        path: change.path.clone(),
                        reason: format!(
                            "needs the folder {dir}, but a file ota does not own is there"
                        ),
                    });
                }
            }
        }
    }
    plan.create_dirs = create.into_iter().collect();
    plan.changes = changes.into_values().collect();

    // Sizes come from the network. Their sum fits in 64 bits (the manifest checks), but
    // rounding up to blocks may not: saturate, so that an absurd size asks for all the
    // space there is and is refused as such.
    let block = survey.space.block_size.max(1);
    let mut staged = 0u64;
    // Each object of `previous/` is hard-linked once (`fetch`); a second path with the same
    // content gets a copy.
    let mut linked: BTreeSet<ObjectId> = BTreeSet::new();
    for change in &plan.changes {
        let (Some(entry), Some(origin)) = (&change.entry, &change.origin) else {
            continue;
        };
        match origin {
            Origin::Download => {
                plan.download_bytes = plan.download_bytes.saturating_add(entry.size)
            }
            Origin::Copy(_) => plan.copy_bytes = plan.copy_bytes.saturating_add(entry.size),
            Origin::Previous(_) => {
                plan.previous_bytes = plan.previous_bytes.saturating_add(entry.size)
            }
        }
        let linkable = matches!(origin, Origin::Previous(_))
            && survey
                .stored(entry)
                .is_some_and(|l| l.holds(entry.kind, entry.size, entry.blob, true));
        let hard_link = linkable && linked.insert(entry.blob);
        if entry.kind != Kind::Symlink && !hard_link {
            staged = staged.saturating_add(entry.size.div_ceil(block).saturating_mul(block));
        }
    }
    plan.space_needed = staged
        .saturating_add(MARGIN_BYTES)
        .saturating_add(MARGIN_PER_FILE.saturating_mul(target.len() as u64));
    if survey.space.available < plan.space_needed {
        return Err(PlanError::NoSpace {
            needed: plan.space_needed,
            available: survey.space.available,
        });
    }
    Ok(plan)
}

/// The blob id of the owned `entry` when `local`, the occupant about to be set aside, is
/// of its kind (a file for a file, a link for a link); its content is verified when it is
/// used (`fetch`).
fn displaced(entry: &Entry, local: &Local) -> Option<ObjectId> {
    let same_kind = match local {
        Local::File { len, blob, .. } => {
            entry.kind != Kind::Symlink
                && *len == entry.size
                && blob.is_none_or(|b| b == entry.blob)
        }
        Local::Symlink { blob } => entry.kind == Kind::Symlink && *blob == entry.blob,
        _ => false,
    };
    same_kind.then_some(entry.blob)
}

/// Local files known to hold a given content: (blob, is symlink) → path. Hashed files count;
/// owned files whose type and size match what ota installed are trusted.
fn local_copies(installed: &Manifest, survey: &Survey) -> HashMap<(ObjectId, bool), RelPath> {
    let mut copies = HashMap::new();
    for (path, local) in &survey.paths {
        match local {
            Local::File { blob: Some(b), .. } => {
                copies.insert((*b, false), path.clone());
            }
            Local::Symlink { blob } => {
                copies.insert((*blob, true), path.clone());
            }
            _ => {}
        }
    }
    for old in installed.entries() {
        if old.kind != Kind::Symlink
            && matches!(survey.local(&old.path), Local::File { len, .. } if *len == old.size)
        {
            copies.entry((old.blob, false)).or_insert(old.path.clone());
        }
    }
    copies
}

/// An update that cannot be applied as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The release needs a path occupied by something ota must not touch.
    #[error("cannot install {path}: it {reason}. Move it away or add it to `ignore`, then retry")]
    Conflict {
        /// The release path.
        path: RelPath,
        /// What is in the way.
        reason: String,
    },
    /// Not enough free space.
    #[error(
        "not enough free space: the update needs {needed} bytes on the target's filesystem, {available} are free. Free some space, then retry"
    )]
    NoSpace {
        /// Bytes required.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::Space;

    fn p(s: &str) -> RelPath {
        RelPath::new(s, &[]).unwrap()
    }

    fn file(path: &str, content: &str) -> Entry {
        Entry {
            path: p(path),
            kind: Kind::File,
            size: content.len() as u64,
            blob: ObjectId::for_blob(content.as_bytes()),
            sha256: None,
        }
    }

    fn manifest(entries: &[Entry]) -> Manifest {
        Manifest::new(entries.to_vec()).unwrap()
    }

    /// A survey of a disk that holds exactly `on_disk` (hashed) plus folders.
    fn disk(on_disk: &[(&str, &str)], dirs: &[&str]) -> Survey {
        let mut paths = BTreeMap::new();
        for (path, content) in on_disk {
            paths.insert(
                p(path),
                Local::File {
                    len: content.len() as u64,
                    executable: false,
                    blob: Some(ObjectId::for_blob(content.as_bytes())),
                },
            );
        }
        let mut listings = BTreeMap::new();
        for dir in dirs {
            paths.insert(p(dir), Local::Dir { mode: 0o755 });
            let names = paths
                .keys()
                .filter(|k| k.parent().as_ref() == Some(&p(dir)))
                .map(|k| k.as_str().rsplit('/').next().unwrap().to_owned())
                .collect();
            listings.insert(p(dir), names);
        }
        Survey {
            paths,
            listings,
            store: BTreeMap::new(),
            space: Space {
                available: u64::MAX,
                block_size: 4096,
            },
            downloads: BTreeMap::new(),
        }
    }

    #[test]
    fn the_archive_is_chosen_when_it_carries_no_more_than_the_files_one_by_one() {
        let contents: Vec<String> = (0..20).map(|i| format!("{i:0>10000}")).collect();
        let files: Vec<Entry> = (contents.iter().enumerate())
            .map(|(i, c)| file(&format!("f{i}"), c))
            .collect();
        let target = manifest(&files);
        let release = 20 * 10_000;
        let chosen = |on_disk: &[(&str, &str)], release_bytes: u64| {
            let mut plan = plan(&Manifest::default(), &target, &disk(on_disk, &[])).unwrap();
            plan.choose_transfer(release_bytes, 20, &BTreeMap::new());
            plan.transfer
        };
        // A first install: the archive, read at most the release plus tar's headers.
        let tar_bytes = release + 20 * TAR_PER_FILE + MARGIN_BYTES;
        assert_eq!(chosen(&[], release), Transfer::Archive { tar_bytes });
        // Filtered-out files make the archive carry more: 100 KB more than 20 requests save.
        assert_eq!(chosen(&[], release + 100_000), Transfer::Files);
        // Twelve of twenty already in place: eight downloads of 10 KB (112 KB with the
        // requests saved) against an archive of 200 KB.
        let present: Vec<(String, &str)> = (0..13)
            .map(|i| (format!("f{i}"), contents[i].as_str()))
            .collect();
        let present: Vec<(&str, &str)> = present.iter().map(|(p, c)| (p.as_str(), *c)).collect();
        assert_eq!(chosen(&present[..12], release), Transfer::Files);
        // Fewer than eight downloads never take it, however small the release.
        assert_eq!(chosen(&present, 0), Transfer::Files);
        // An install stopped after 13 files left them in `downloads/` (and half of the
        // 14th): the seven left, by themselves, carry less than the archive.
        let held = |n: usize| -> BTreeMap<ObjectId, u64> {
            let mut held: BTreeMap<ObjectId, u64> = (contents[..n].iter())
                .map(|c| (ObjectId::for_blob(c.as_bytes()), c.len() as u64))
                .collect();
            held.insert(ObjectId::for_blob(contents[n].as_bytes()), 5_000);
            held
        };
        let mut install = plan(&Manifest::default(), &target, &disk(&[], &[])).unwrap();
        install.choose_transfer(release, 20, &held(13));
        assert_eq!(install.transfer, Transfer::Files);
        // Stopped after two files: the archive still pays.
        install.choose_transfer(release, 20, &held(2));
        assert_eq!(install.transfer, Transfer::Archive { tar_bytes });
    }

    #[test]
    fn first_install_downloads_only_what_differs() {
        let target = manifest(&[file("a", "1"), file("b", "2"), file("d/c", "3")]);
        let survey = disk(&[("a", "1"), ("b", "old")], &[]);
        let plan = plan(&Manifest::default(), &target, &survey).unwrap();
        assert_eq!(plan.adopted, 1);
        assert_eq!(plan.count(Action::Replace), 1);
        assert_eq!(plan.count(Action::Add), 1);
        assert_eq!(plan.create_dirs, vec![p("d")]);
        assert_eq!(plan.download_bytes, 2);
    }

    #[test]
    fn deletes_remove_emptied_folders_but_never_foreign_files() {
        let installed = manifest(&[file("keep", "k"), file("d/e/x", "x"), file("f/y", "y")]);
        let target = manifest(&[file("keep", "k")]);
        // f holds a file ota does not own: f stays.
        let survey = disk(
            &[("keep", "k"), ("d/e/x", "x"), ("f/y", "y"), ("f/mine", "m")],
            &["d/e", "d", "f"],
        );
        let plan = plan(&installed, &target, &survey).unwrap();
        assert_eq!(plan.count(Action::Delete), 2);
        assert_eq!(plan.remove_dirs, vec![(p("d/e"), 0o755), (p("d"), 0o755)]);
        assert_eq!(plan.unchanged, 1);
        assert_eq!(plan.download_bytes, 0);
    }

    #[test]
    fn a_moved_file_is_copied_not_downloaded() {
        let installed = manifest(&[file("old/name", "content")]);
        let target = manifest(&[file("new/name", "content")]);
        let survey = disk(&[("old/name", "content")], &["old"]);
        let plan = plan(&installed, &target, &survey).unwrap();
        let add = plan
            .changes
            .iter()
            .find(|c| c.action == Action::Add)
            .unwrap();
        assert_eq!(add.origin, Some(Origin::Copy(p("old/name"))));
        assert_eq!(plan.download_bytes, 0);
        assert_eq!(plan.copy_bytes, 7);
    }

    /// A rollback point's content kept under `previous/` is staged from there at no space
    /// cost (a hard link); a file it sets aside is marked for keeping only when the rollback
    /// point has that content.
    #[test]
    fn kept_content_is_linked_not_downloaded_and_displaced_files_are_kept() {
        let installed = manifest(&[file("a", "v2"), file("b", "b1")]);
        let target = manifest(&[file("a", "v1"), file("c", "new")]);
        let mut survey = disk(&[("a", "v2"), ("b", "b1")], &[]);
        survey.paths.insert(
            p("a"),
            Local::File {
                len: 2,
                executable: false,
                blob: None,
            },
        );
        let v1 = ObjectId::for_blob(b"v1");
        survey.store.insert(
            v1,
            Local::File {
                len: 2,
                executable: false,
                blob: Some(v1),
            },
        );
        survey.space.available = 4096 + MARGIN_BYTES + 2 * MARGIN_PER_FILE;
        let plan = plan(&installed, &target, &survey).unwrap();
        let a = plan.changes.iter().find(|c| c.path == p("a")).unwrap();
        assert_eq!(a.origin, Some(Origin::Previous(v1)));
        assert_eq!((plan.previous_bytes, plan.download_bytes), (2, 3));
        assert_eq!(
            plan.space_needed, survey.space.available,
            "only c is staged"
        );
        // The rollback point had b's content, not a's v2.
        let rollback_to = RollbackPoint {
            release: crate::state::ReleaseId::new("stable", "v1", v1),
            source: String::new(),
            filter: String::new(),
            installed_at: String::new(),
            previous: None,
            files: manifest(&[file("a", "v1"), file("b", "b1")]),
        };
        let previous: Vec<_> = (plan.ops(Some(&rollback_to)).into_iter())
            .filter_map(|op| match op {
                Op::Displace { path, previous, .. } => Some((path, previous)),
                _ => None,
            })
            .collect();
        let b1 = ObjectId::for_blob(b"b1");
        assert_eq!(previous, vec![(p("a"), None), (p("b"), Some(b1))]);
        assert!(plan.ops(None).iter().all(|op| !matches!(
            op,
            Op::Displace {
                previous: Some(_),
                ..
            }
        )));
    }

    #[test]
    fn a_folder_of_foreign_files_blocks_a_file() {
        let target = manifest(&[file("d", "x")]);
        let survey = disk(&[("d/theirs", "t")], &["d"]);
        let err = plan(&Manifest::default(), &target, &survey).unwrap_err();
        assert!(matches!(err, PlanError::Conflict { .. }), "{err}");
    }

    #[test]
    fn a_file_turning_into_a_folder_is_displaced_first() {
        let installed = manifest(&[file("d", "x")]);
        let target = manifest(&[file("d/inner", "y")]);
        let survey = disk(&[("d", "x")], &[]);
        let plan = plan(&installed, &target, &survey).unwrap();
        assert_eq!(plan.create_dirs, vec![p("d")]);
        let ops = plan.ops(None);
        assert!(matches!(&ops[0], Op::Displace { path, .. } if *path == p("d")));
        assert!(matches!(&ops[1], Op::CreateDir { path } if *path == p("d")));
        assert!(matches!(&ops[2], Op::Place { path, .. } if *path == p("d/inner")));
    }

    #[test]
    fn writing_through_a_foreign_link_is_refused() {
        let target = manifest(&[file("link/x", "x")]);
        let mut survey = disk(&[], &[]);
        survey.paths.insert(
            p("link"),
            Local::Symlink {
                blob: ObjectId::for_blob(b"/etc"),
            },
        );
        assert!(plan(&Manifest::default(), &target, &survey).is_err());
    }

    #[test]
    fn space_is_checked_in_blocks() {
        let target = manifest(&[file("a", "1"), file("b", "2")]);
        let mut survey = disk(&[], &[]);
        survey.space.available = 2 * 4096 + MARGIN_BYTES + 2 * MARGIN_PER_FILE - 1;
        let err = plan(&Manifest::default(), &target, &survey).unwrap_err();
        assert!(matches!(err, PlanError::NoSpace { .. }));
        survey.space.available += 1;
        assert!(plan(&Manifest::default(), &target, &survey).is_ok());
    }

    /// Sizes come from the network: one that overflows when rounded up to a block asks for
    /// all the space there is, and is refused as such.
    #[test]
    fn a_size_that_overflows_in_blocks_is_refused_for_space() {
        let mut huge = file("a", "1");
        huge.size = u64::MAX - 1;
        let target = manifest(&[huge]);
        let mut survey = disk(&[], &[]);
        survey.space.available = 1 << 40;
        let err = plan(&Manifest::default(), &target, &survey).unwrap_err();
        assert_eq!(
            err,
            PlanError::NoSpace {
                needed: u64::MAX,
                available: 1 << 40
            }
        );
    }
}
