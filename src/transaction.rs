//! The journaled transaction that changes the target, and the recovery that finishes or
//! undoes one after a crash.
//!
//! # Protocol
//! 1. Every new file is written into `stage/<txid>/<slot>` (by `fetch`), verified.
//! 2. **Journal**: `journal.json` lists every operation below in order. One `syncfs` makes
//!    the staged files and the journal's temp file durable, then the journal is renamed into
//!    place and its folder fsynced. Nothing in the target has changed yet (invariants 1, 2).
//! 3. **Phase 1**: each file being replaced or deleted is checked again (`lstat`: the kind the
//!    plan saw) and renamed into `backup/<txid>/<slot>`; folders emptied by that are checked
//!    (still empty) and renamed into the backup whole (owner, mode, xattrs kept); folders the
//!    new files need are created. Then one `syncfs` (invariant 3).
//! 4. **Phase 2**: each staged file is renamed to its place in the target, never over
//!    anything (`RENAME_NOREPLACE`: a file that appeared meanwhile stops the update). One
//!    `syncfs`.
//! 5. **Commit**: `state.json` (the new release and owned files, tagged with the txid) is
//!    replaced atomically: write temp, fsync, rename, fsync folder (invariant 4).
//! 6. **Cleanup**: after a commit, displaced files ota did not own move from the backup to
//!    `kept/<txid>/<path>`, and displaced files and links of the release the new state rolls
//!    back to (a trial's rollback point, `Op::Displace::previous`) move to
//!    `previous/<blob id>` (then one `syncfs`, only if anything moved). Then the journal is
//!    removed, then the backups and the stage (what a crash leaves of them belongs to no
//!    journal and is swept). After a rollback the journal's removal is fsynced before the
//!    rest goes; after a commit it need not be. Last, `previous/` is swept
//!    ([`sweep_previous`]).
//!
//! A path changed under ota's feet (a different kind at a displaced path, a file where one
//! is placed, a link on the way, which the confined [`crate::fs::RealFs`] refuses to follow)
//! fails the update with [`ApplyError::UnsafePath`], and it is rolled back.
//!
//! Renames only go between the target and the state folder, which are on one filesystem, so
//! each is atomic. Phase 1 and phase 2 are separated by a barrier, so no crash can persist a
//! placement while losing the displacement it depends on. Durability costs three `syncfs`,
//! two folder fsyncs and one file fsync per update, whatever the number of files
//! (invariant 7). Each of them is needed: the crash enumeration (`tests/crash`) switches
//! each one off in turn and finds a crash that breaks the target.
//!
//! # Recovery
//! With a journal present: if `state.json` carries the journal's txid the update committed,
//! and recovery finishes step 6. Otherwise it undoes the operations in reverse order, in two
//! passes separated by a barrier like phases 2 and 1 (placed files back to the stage, then
//! displaced files and folders back from the backup, never over anything), and then does
//! step 6. Every undo step looks at where the file is now before moving it (a staged file is
//! either still in the stage or in the target; a displaced file either in the backup or
//! still in place), so running recovery again, or crashing inside it, is harmless
//! (invariant 5). Without a journal, anything left in `stage/` or `backup/` belongs to no
//! transaction and is removed; `kept/` is never swept.
//!
//! # The kept previous release
//! Which objects in `previous/` are valid is decided only by the committed `state.json`: the
//! blob ids of its trial's rollback point. Recovery (after finishing or undoing), each commit,
//! and whoever rewrites `state.json` to end a trial call [`sweep_previous`], which removes
//! every other object. Objects only ever enter `previous/` after a commit whose state needs
//! them, and leave after a state that does not, so a crash anywhere leaves every file of a
//! pending rollback point either in the target or in `previous/` (checked by the crash
//! enumeration).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fs::{self, FileKind, Fs};
use crate::manifest::{ObjectId, RelPath};
use crate::state::{Installed, ReleaseId, StateDir};

/// Largest journal ota writes and reads (one number both ways: see `limits`).
const JOURNAL_LIMIT: u64 = crate::limits::JOURNAL_BYTES;
/// Format version of `journal.json`.
const JOURNAL_FORMAT: u32 = 2;

/// One step of a transaction, with enough information to undo it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Op {
    /// Move what is at `path` into `backup/<txid>/<slot>`: a file or link being replaced or
    /// deleted, or a folder the deletes emptied (moved whole: owner, mode and xattrs stay).
    Displace {
        /// Path in the target.
        path: RelPath,
        /// Name inside the backup folder.
        slot: String,
        /// What the plan saw there. Checked again (`lstat`) just before the move: anything
        /// else means the path changed under ota's feet, and the update is rolled back.
        /// (Format-1 journals only displaced files.)
        #[serde(default = "file_kind")]
        kind: FileKind,
        /// A file ota does not own: after the commit it moves to `kept/<txid>/<path>`
        /// instead of being removed with the backup.
        #[serde(default)]
        keep: bool,
        /// A file or link of the release the new state rolls back to (its git blob id, from
        /// the owned manifest): after the commit it moves to `previous/<id>` instead of being
        /// removed with the backup, so that a rollback needs no download.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous: Option<ObjectId>,
    },
    /// Format 1 only (before emptied folders moved into the backup): the folder `path` was
    /// removed; undo recreates it with `mode`. Read so that an update interrupted before ota
    /// was upgraded can still be undone; never written.
    RemoveDir {
        /// Path in the target.
        path: RelPath,
        /// Its permission bits.
        mode: u32,
    },
    /// Create the folder `path` (mode 0755).
    CreateDir {
        /// Path in the target.
        path: RelPath,
    },
    /// Move `stage/<txid>/<slot>` to `path`, which must be free (`RENAME_NOREPLACE`).
    Place {
        /// Path in the target.
        path: RelPath,
        /// Name inside the stage folder.
        slot: String,
    },
}

fn file_kind() -> FileKind {
    FileKind::File
}

/// Contents of `journal.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Journal {
    /// Format version.
    pub format: u32,
    /// The transaction.
    pub txid: String,
    /// The release being installed (for `ota status`).
    pub release: ReleaseId,
    /// The operations, in the order they are done.
    pub ops: Vec<Op>,
}

/// What recovery found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Nothing was pending.
    Clean,
    /// Leftovers of an interrupted download (no journal) were removed.
    SweptLeftovers,
    /// An update had committed; its cleanup was finished.
    Completed(ReleaseId),
    /// An update had not committed; the old tree was restored.
    RolledBack(ReleaseId),
}

/// A transaction in progress: a stage folder being filled, then applied.
pub(crate) struct Transaction<'a> {
    fs: &'a dyn Fs,
    target: &'a Path,
    dirs: &'a StateDir,
    txid: String,
}

impl<'a> Transaction<'a> {
    /// Opens a transaction: creates `stage/<txid>`. Recovery must have run first.
    pub(crate) fn begin(
        fs: &'a dyn Fs,
        target: &'a Path,
        dirs: &'a StateDir,
    ) -> Result<Transaction<'a>, ApplyError> {
        let txid = new_txid();
        for dir in [
            dirs.root().to_owned(),
            dirs.stage_root(),
            dirs.backup_root(),
            dirs.stage(&txid),
        ] {
            ensure_dir(fs, &dir, 0o755)?;
        }
        Ok(Transaction {
            fs,
            target,
            dirs,
            txid,
        })
    }

    /// Where the staged file for `slot` is written.
    pub(crate) fn stage_path(&self, slot: &str) -> PathBuf {
        self.dirs.stage(&self.txid).join(slot)
    }

    /// Where the file ota does not own at `path` is kept if this transaction commits.
    pub(crate) fn kept_path(&self, path: &RelPath) -> PathBuf {
        self.dirs.kept(&self.txid).join(path.as_str())
    }

    /// Gives up before anything in the target changed: removes the stage.
    pub(crate) fn abort(self) -> Result<(), ApplyError> {
        let stage = self.dirs.stage(&self.txid);
        fs::remove_tree(self.fs, &stage).map_err(|e| ApplyError::io("remove", &stage, e))
    }

    /// Runs the protocol from step 2 (see module docs). `installed` is the new `state.json`;
    /// its `txid` is set here. On an error before the commit, the target is rolled back to
    /// the old tree; if that also fails the journal stays for the next recovery.
    pub(crate) fn commit(self, ops: Vec<Op>, mut installed: Installed) -> Result<(), ApplyError> {
        installed.txid = self.txid.clone();
        let journal = Journal {
            format: JOURNAL_FORMAT,
            txid: self.txid.clone(),
            release: installed.release.clone(),
            ops,
        };
        let ctx = Ctx {
            fs: self.fs,
            target: self.target,
            dirs: self.dirs,
        };
        // Until the commit, any failure restores the old tree. (If the journal itself did not
        // land, the undo finds every file where it was and only removes the stage.)
        if let Err(cause) = ctx.write_journal(&journal).and_then(|()| ctx.run(&journal)) {
            return Err(match ctx.undo(&journal) {
                Ok(()) => cause,
                Err(rollback) => ApplyError::RollbackFailed {
                    cause: Box::new(cause),
                    rollback: Box::new(rollback),
                },
            });
        }
        if let Err(e) = ctx.dirs.write_installed(ctx.fs, &installed) {
            // The rename inside may or may not have happened: let recovery decide from what
            // `state.json` now says, exactly as after a crash at this point.
            return Err(match recover(ctx.fs, ctx.target, ctx.dirs) {
                Ok(_) => ApplyError::State(e),
                Err(rollback) => ApplyError::RollbackFailed {
                    cause: Box::new(ApplyError::State(e)),
                    rollback: Box::new(rollback),
                },
            });
        }
        // Committed: the new release is in place. What is left is removed by the next
        // command's recovery.
        if let Err(e) = ctx.finish(&journal, Cleanup::Committed) {
            tracing::warn!("update committed, but cleaning up failed: {e}");
        } else if let Err(e) = sweep_previous(ctx.fs, ctx.dirs) {
            tracing::warn!("update committed, but removing the kept release failed: {e}");
        }
        Ok(())
    }
}

/// Finishes or undoes an interrupted transaction; see the module docs.
pub fn recover(fs: &dyn Fs, target: &Path, dirs: &StateDir) -> Result<Recovery, ApplyError> {
    let ctx = Ctx { fs, target, dirs };
    let journal_path = dirs.journal_file();
    let mut swept = ctx.remove_temp_files()?;
    let outcome = match fs
        .metadata(&journal_path)
        .map_err(|e| ApplyError::io("inspect", &journal_path, e))?
    {
        None => None,
        Some(_) => {
            let journal = ctx.read_journal()?;
            let installed = dirs.read_installed(fs).map_err(ApplyError::State)?;
            if installed.is_some_and(|s| s.txid == journal.txid) {
                ctx.finish(&journal, Cleanup::Committed)?;
                Some(Recovery::Completed(journal.release))
            } else {
                ctx.undo(&journal)?;
                Some(Recovery::RolledBack(journal.release))
            }
        }
    };
    swept |= ctx.sweep()?;
    // Decided by the state.json now committed, whatever the journal did.
    swept |= match sweep_previous(fs, dirs) {
        // A damaged state.json is reported by the command that reads it; without it, nothing
        // says which objects are garbage, so none is removed.
        Err(ApplyError::State(e)) => {
            tracing::warn!("kept previous release not checked: {e}");
            false
        }
        other => other?,
    };
    Ok(match outcome {
        Some(done) => done,
        None if swept => Recovery::SweptLeftovers,
        None => Recovery::Clean,
    })
}

/// Reads the open journal, if any (for `ota status`).
pub(crate) fn pending(
    fs: &dyn Fs,
    target: &Path,
    dirs: &StateDir,
) -> Result<Option<Journal>, ApplyError> {
    let ctx = Ctx { fs, target, dirs };
    let path = dirs.journal_file();
    match fs
        .metadata(&path)
        .map_err(|e| ApplyError::io("inspect", &path, e))?
    {
        None => Ok(None),
        Some(_) => ctx.read_journal().map(Some),
    }
}

/// Parses the bytes of the journal at `path` (the fuzz targets drive this directly).
pub(crate) fn parse_journal(path: &Path, bytes: &[u8]) -> Result<Journal, ApplyError> {
    let journal: Journal =
        serde_json::from_slice(bytes).map_err(|e| ApplyError::JournalDamaged {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    // Format 1 (older ota) is a subset of 2 plus `RemoveDir`: still recoverable.
    if !(1..=JOURNAL_FORMAT).contains(&journal.format) {
        return Err(ApplyError::JournalDamaged {
            path: path.to_owned(),
            message: format!("unknown format {}", journal.format),
        });
    }
    if let Some(name) = foreign_name(&journal) {
        return Err(ApplyError::JournalDamaged {
            path: path.to_owned(),
            message: format!("{name:?} is not a name ota gives"),
        });
    }
    Ok(journal)
}

/// Why a transaction's leftovers are being removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cleanup {
    /// `state.json` names the transaction.
    Committed,
    /// The old tree was restored.
    RolledBack,
}

/// The pieces every step needs.
struct Ctx<'a> {
    fs: &'a dyn Fs,
    target: &'a Path,
    dirs: &'a StateDir,
}

impl Ctx<'_> {
    fn at(&self, path: &RelPath) -> PathBuf {
        self.target.join(path.as_str())
    }

    fn staged(&self, txid: &str, slot: &str) -> PathBuf {
        self.dirs.stage(txid).join(slot)
    }

    fn backed_up(&self, txid: &str, slot: &str) -> PathBuf {
        self.dirs.backup(txid).join(slot)
    }

    fn exists(&self, path: &Path) -> Result<Option<fs::Meta>, ApplyError> {
        self.fs
            .metadata(path)
            .map_err(|e| ApplyError::io("inspect", path, e))
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<(), ApplyError> {
        self.fs
            .rename(from, to)
            .map_err(|source| ApplyError::rename(from, to, source))
    }

    /// Makes everything written so far durable: one `syncfs` for the whole filesystem.
    fn barrier(&self) -> Result<(), ApplyError> {
        self.fs
            .sync_fs(self.target)
            .map_err(|e| ApplyError::io("sync", self.target, e))
    }

    fn write_journal(&self, journal: &Journal) -> Result<(), ApplyError> {
        let path = self.dirs.journal_file();
        let tmp = fs::tmp_path(&path);
        let bytes =
            serde_json::to_vec(journal).map_err(|e| ApplyError::io("encode", &path, e.into()))?;
        if bytes.len() as u64 > JOURNAL_LIMIT {
            let message = format!(
                "{} bytes, more than the {JOURNAL_LIMIT} ota reads",
                bytes.len()
            );
            return Err(ApplyError::io("write", &path, io::Error::other(message)));
        }
        let io = |e| ApplyError::io("write", &path, e);
        ensure_dir(self.fs, &self.dirs.backup(&journal.txid), 0o755)?;
        let mut file = self.fs.create(&tmp, false).map_err(io)?;
        std::io::Write::write_all(&mut file, &bytes).map_err(io)?;
        drop(file);
        // One barrier covers the staged files, their folder and the journal's bytes.
        self.barrier()?;
        self.rename(&tmp, &path)?;
        self.fs.sync_dir(self.dirs.root()).map_err(io)
    }

    fn read_journal(&self) -> Result<Journal, ApplyError> {
        let path = self.dirs.journal_file();
        let bytes = fs::read_small(self.fs, &path, JOURNAL_LIMIT)
            .map_err(|e| ApplyError::io("read", &path, e))?;
        parse_journal(&path, &bytes)
    }

    /// Phases 1 and 2 with their barriers.
    fn run(&self, journal: &Journal) -> Result<(), ApplyError> {
        let txid = &journal.txid;
        let (phase1, phase2): (Vec<&Op>, Vec<&Op>) = journal
            .ops
            .iter()
            .partition(|op| !matches!(op, Op::Place { .. }));
        for op in phase1 {
            match op {
                Op::Displace {
                    path, slot, kind, ..
                } => {
                    let at = self.at(path);
                    self.recheck(&at, *kind)?;
                    self.rename_noreplace(&at, &self.backed_up(txid, slot))?
                }
                Op::CreateDir { path } => {
                    let at = self.at(path);
                    match self.fs.create_dir(&at, 0o755) {
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            return Err(ApplyError::UnsafePath {
                                path: at,
                                reason: "something appeared at this path while ota was \
                                         working; it was left untouched"
                                    .into(),
                            });
                        }
                        other => other.map_err(|e| ApplyError::io("create folder", &at, e))?,
                    }
                }
                Op::RemoveDir { path, .. } => {
                    let at = self.at(path);
                    self.fs
                        .remove_dir(&at)
                        .map_err(|e| ApplyError::io("remove folder", &at, e))?
                }
                Op::Place { .. } => unreachable!("partitioned out"),
            }
        }
        self.barrier()?;
        for op in phase2 {
            if let Op::Place { path, slot } = op {
                let at = self.at(path);
                match self.fs.rename_noreplace(&self.staged(txid, slot), &at) {
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        return Err(ApplyError::UnsafePath {
                            path: at,
                            reason: "something appeared at this path while ota was working; it was left untouched"
                                .into(),
                        });
                    }
                    other => other.map_err(|e| ApplyError::io("place", &at, e))?,
                }
            }
        }
        self.barrier()
    }

    /// Checks, just before it moves, that what is at `at` is still what the plan saw: a
    /// `kind` (and, for a folder, an empty one). Anything else was changed under ota's feet.
    fn recheck(&self, at: &Path, kind: FileKind) -> Result<(), ApplyError> {
        let unsafe_path = |reason: String| ApplyError::UnsafePath {
            path: at.to_owned(),
            reason,
        };
        let now = self.exists(at)?.map(|m| m.kind);
        if now != Some(kind) {
            let name = |k: Option<FileKind>| match k {
                None => "nothing",
                Some(FileKind::File) => "a file",
                Some(FileKind::Dir) => "a folder",
                Some(FileKind::Symlink) => "a symbolic link",
                Some(FileKind::Other) => "a device, socket or fifo",
            };
            return Err(unsafe_path(format!(
                "it was {} when the update was planned and is now {}; ota left it alone",
                name(Some(kind)),
                name(now)
            )));
        }
        if kind == FileKind::Dir && !self.list(at)?.is_empty() {
            return Err(unsafe_path(
                "this folder was emptied by the update but now holds new files; ota left it alone"
                    .into(),
            ));
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> Result<Vec<std::ffi::OsString>, ApplyError> {
        self.fs
            .read_dir(dir)
            .map_err(|e| ApplyError::io("list", dir, e))
    }

    fn rename_noreplace(&self, from: &Path, to: &Path) -> Result<(), ApplyError> {
        self.fs
            .rename_noreplace(from, to)
            .map_err(|source| ApplyError::rename(from, to, source))
    }

    /// Undoes `journal`'s operations in reverse order, then cleans up. Idempotent.
    ///
    /// Two passes with a barrier between them, mirroring phases 2 and 1: placed files go
    /// back to the stage (and created folders are removed), then displaced files and folders
    /// come back from the backup. Without the barrier a crash could persist a restore over
    /// the path while losing the move that had emptied it; the next recovery would then take
    /// the restored original for the placed file, move it into the stage and delete it.
    fn undo(&self, journal: &Journal) -> Result<(), ApplyError> {
        let txid = &journal.txid;
        let unplace = |op: &&Op| matches!(op, Op::Place { .. } | Op::CreateDir { .. });
        for op in journal.ops.iter().rev().filter(unplace) {
            self.undo_one(txid, op)?;
        }
        self.barrier()?;
        for op in journal.ops.iter().rev().filter(|op| !unplace(op)) {
            self.undo_one(txid, op)?;
        }
        self.barrier()?;
        self.finish(journal, Cleanup::RolledBack)
    }

    /// Undoes one operation if it had happened (see [`Ctx::undo`]).
    fn undo_one(&self, txid: &str, op: &Op) -> Result<(), ApplyError> {
        match op {
            Op::Place { path, slot } => {
                let staged = self.staged(txid, slot);
                let at = self.at(path);
                if self.exists(&staged)?.is_none() && self.exists(&at)?.is_some() {
                    self.rename_noreplace(&at, &staged)?;
                }
            }
            Op::CreateDir { path } => {
                let at = self.at(path);
                let is_empty_dir = match self.exists(&at)? {
                    Some(m) if m.kind == FileKind::Dir => self.list(&at)?.is_empty(),
                    _ => false,
                };
                if is_empty_dir {
                    self.fs
                        .remove_dir(&at)
                        .map_err(|e| ApplyError::io("remove folder", &at, e))?;
                }
            }
            Op::RemoveDir { path, mode } => {
                let at = self.at(path);
                if self.exists(&at)?.is_none() {
                    self.fs
                        .create_dir(&at, *mode)
                        .map_err(|e| ApplyError::io("recreate folder", &at, e))?;
                }
            }
            Op::Displace { path, slot, .. } => {
                let backup = self.backed_up(txid, slot);
                let at = self.at(path);
                if self.exists(&backup)?.is_some() {
                    let blocked = || ApplyError::RestoreBlocked {
                        path: at.clone(),
                        backup: backup.clone(),
                    };
                    if self.exists(&at)?.is_some() {
                        return Err(blocked());
                    }
                    match self.fs.rename_noreplace(&backup, &at) {
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            return Err(blocked());
                        }
                        other => other.map_err(|e| ApplyError::rename(&backup, &at, e))?,
                    }
                }
            }
        }
        Ok(())
    }

    /// Step 6: keeps what must be kept, removes the journal, then the transaction's backup
    /// and stage folders.
    ///
    /// After a commit, the displaced files ota does not own (and any folder that something
    /// filled after ota emptied it) move from the backup to `kept/<txid>/<path>`, made
    /// durable by a barrier before the journal goes: without the journal, recovery would
    /// sweep the backup and them with it.
    ///
    /// The journal must go before the rest. Undoing a `Place` reads "staged file gone,
    /// something at the path" as "placed", so a journal that outlives any staged file would
    /// make the next recovery move whatever is at that path now (after a rollback: the
    /// restored original) into the stage and delete it. Without a journal, recovery sweeps
    /// what is left here.
    ///
    /// After a rollback the journal's removal is made durable before anything else goes.
    /// After a commit it needs no fsync: a journal that comes back after a crash names the
    /// txid `state.json` carries, and recovery only finishes this cleanup again (the next
    /// update's journal barrier makes the removal durable anyway).
    fn finish(&self, journal: &Journal, cleanup: Cleanup) -> Result<(), ApplyError> {
        let txid = &journal.txid;
        if cleanup == Cleanup::Committed {
            let kept = self.keep_displaced(journal)?;
            let stored = self.store_previous(journal)?;
            if kept || stored {
                self.barrier()?;
            }
        }
        let journal_file = self.dirs.journal_file();
        if self.exists(&journal_file)?.is_some() {
            self.fs
                .remove_file(&journal_file)
                .map_err(|e| ApplyError::io("remove", &journal_file, e))?;
        }
        if cleanup == Cleanup::RolledBack {
            self.fs
                .sync_dir(self.dirs.root())
                .map_err(|e| ApplyError::io("sync", self.dirs.root(), e))?;
        }
        for dir in [self.dirs.backup(txid), self.dirs.stage(txid)] {
            fs::remove_tree(self.fs, &dir).map_err(|e| ApplyError::io("remove", &dir, e))?;
        }
        Ok(())
    }

    /// Moves what the committed transaction must not destroy from the backup into
    /// `kept/<txid>/`; whether anything moved. Idempotent: what already moved is not in the
    /// backup any more.
    fn keep_displaced(&self, journal: &Journal) -> Result<bool, ApplyError> {
        let mut moved = false;
        for op in &journal.ops {
            let Op::Displace {
                path,
                slot,
                kind,
                keep,
                ..
            } = op
            else {
                continue;
            };
            let backup = self.backed_up(&journal.txid, slot);
            let Some(meta) = self.exists(&backup)? else {
                continue;
            };
            let filled_folder = *kind == FileKind::Dir
                && meta.kind == FileKind::Dir
                && !self.list(&backup)?.is_empty();
            if !keep && !filled_folder {
                continue;
            }
            let base = self.dirs.kept(&journal.txid);
            for dir in [self.dirs.kept_root(), base.clone()] {
                ensure_dir(self.fs, &dir, 0o700)?;
            }
            for parent in path.ancestors() {
                ensure_dir(self.fs, &base.join(parent.as_str()), 0o700)?;
            }
            let to = base.join(path.as_str());
            self.rename_noreplace(&backup, &to)?;
            tracing::warn!(
                "{} was not installed by ota: it was replaced by the release's and kept as {}",
                path,
                to.display()
            );
            moved = true;
        }
        Ok(moved)
    }

    /// Moves the displaced files and links of the release the committed state rolls back to
    /// (`Op::Displace::previous`) from the backup into `previous/<blob id>`; whether anything
    /// moved. An id already stored (the same content at two paths, or stored by an earlier
    /// update of the same trial) leaves the duplicate in the backup, removed with it; so does
    /// anything of another kind than the plan saw. Idempotent: what already moved is not in
    /// the backup any more.
    fn store_previous(&self, journal: &Journal) -> Result<bool, ApplyError> {
        let mut moved = false;
        let root = self.dirs.previous_root();
        for op in &journal.ops {
            let Op::Displace {
                slot,
                kind,
                previous: Some(id),
                ..
            } = op
            else {
                continue;
            };
            let backup = self.backed_up(&journal.txid, slot);
            let is_object =
                |k: FileKind| k == *kind && matches!(k, FileKind::File | FileKind::Symlink);
            if !self.exists(&backup)?.is_some_and(|m| is_object(m.kind)) {
                continue;
            }
            ensure_dir(self.fs, &root, 0o700)?;
            let to = root.join(id.to_hex());
            match self.fs.rename_noreplace(&backup, &to) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                other => other.map_err(|e| ApplyError::rename(&backup, &to, e))?,
            }
            moved = true;
        }
        Ok(moved)
    }

    /// Removes the temporary files a crash can leave in the state folder (from
    /// `fs::write_atomic`: `state.json.tmp`, `journal.json.tmp`, …): only those names, so a
    /// file ota did not create is never deleted. A folder under such a name is left alone.
    fn remove_temp_files(&self) -> Result<bool, ApplyError> {
        let mut removed = false;
        for tmp in self.dirs.temp_files() {
            match self.exists(&tmp)? {
                Some(m) if m.kind != FileKind::Dir => match self.fs.remove_file(&tmp) {
                    Ok(()) => removed = true,
                    // Another thread of the same program, writing metrics or the error
                    // history outside the lock, renamed it in the meantime.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(ApplyError::io("remove", &tmp, e)),
                },
                _ => {}
            }
        }
        Ok(removed)
    }

    /// Removes the transactions left under `stage/` and `backup/`: called when no journal is
    /// open, so none of them is in use. Only names ota gives a transaction ([`is_txid`]) are
    /// removed; anything else there is not ota's and stays.
    fn sweep(&self) -> Result<bool, ApplyError> {
        let mut removed = false;
        for root in [self.dirs.stage_root(), self.dirs.backup_root()] {
            if self.exists(&root)?.is_none() {
                continue;
            }
            for name in self
                .fs
                .read_dir(&root)
                .map_err(|e| ApplyError::io("list", &root, e))?
            {
                if !name.to_str().is_some_and(is_txid) {
                    tracing::debug!("leaving {}: not ota's", root.join(&name).display());
                    continue;
                }
                let path = root.join(name);
                fs::remove_tree(self.fs, &path).map_err(|e| ApplyError::io("remove", &path, e))?;
                removed = true;
            }
        }
        Ok(removed)
    }
}

/// Removes every object under `previous/` that the committed `state.json` does not need: all
/// of them unless it names a release on trial with a rollback point, else those whose blob id
/// is not one of that rollback point's files. Only files and links named by 40 lowercase hex
/// digits are removed; anything else there is not ota's and stays. Whether anything was
/// removed.
///
/// Called by recovery, after each commit, and by whoever rewrites `state.json` so that a
/// trial ends (confirmed, or rolled back by hand): after the write, so that a crash in
/// between leaves objects that the next recovery removes, never a trial without its store.
/// Needs no fsync: an object that comes back after a crash is removed again.
pub(crate) fn sweep_previous(fs: &dyn Fs, dirs: &StateDir) -> Result<bool, ApplyError> {
    let root = dirs.previous_root();
    let listed = fs
        .metadata(&root)
        .map_err(|e| ApplyError::io("inspect", &root, e))?;
    if !listed.is_some_and(|m| m.kind == FileKind::Dir) {
        return Ok(false);
    }
    let installed = dirs.read_installed(fs).map_err(ApplyError::State)?;
    let wanted: BTreeSet<ObjectId> = installed
        .and_then(|i| i.trial)
        .and_then(|t| t.rollback_to)
        .map(|r| r.files.entries().iter().map(|e| e.blob).collect())
        .unwrap_or_default();
    let mut removed = false;
    for name in fs
        .read_dir(&root)
        .map_err(|e| ApplyError::io("list", &root, e))?
    {
        let path = root.join(&name);
        let Some(id) = name.to_str().and_then(object_name) else {
            tracing::debug!("leaving {}: not ota's", path.display());
            continue;
        };
        if wanted.contains(&id) {
            continue;
        }
        let meta = fs
            .metadata(&path)
            .map_err(|e| ApplyError::io("inspect", &path, e))?;
        if meta.is_some_and(|m| matches!(m.kind, FileKind::File | FileKind::Symlink)) {
            fs.remove_file(&path)
                .map_err(|e| ApplyError::io("remove", &path, e))?;
            removed = true;
        }
    }
    Ok(removed)
}

/// The objects under `previous/`: blob id → what is there (file or link) and its size.
/// Names that are not 40 lowercase hex digits, and folders, are not objects. Empty when
/// the folder does not exist.
pub(crate) fn previous_objects(
    fs: &dyn Fs,
    dirs: &StateDir,
) -> io::Result<BTreeMap<ObjectId, fs::Meta>> {
    let root = dirs.previous_root();
    let mut out = BTreeMap::new();
    if !fs.metadata(&root)?.is_some_and(|m| m.kind == FileKind::Dir) {
        return Ok(out);
    }
    for name in fs.read_dir(&root)? {
        let Some(id) = name.to_str().and_then(object_name) else {
            continue;
        };
        if let Some(meta) = fs.metadata(&root.join(&name))?
            && matches!(meta.kind, FileKind::File | FileKind::Symlink)
        {
            out.insert(id, meta);
        }
    }
    Ok(out)
}

/// The blob id an object under `previous/` (or a file under `downloads/`) is named by:
/// exactly 40 lowercase hex digits.
pub(crate) fn object_name(name: &str) -> Option<ObjectId> {
    let ours = name.len() == 40 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    ours.then(|| ObjectId::from_hex(name)).flatten()
}

/// Every file and link kept under `kept/` (absolute paths, sorted; never through a link).
pub(crate) fn kept_files(fs: &dyn Fs, dirs: &StateDir) -> io::Result<Vec<PathBuf>> {
    fn walk(fs: &dyn Fs, dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
        for name in fs.read_dir(dir)? {
            let path = dir.join(name);
            match fs.metadata(&path)? {
                Some(m) if m.kind == FileKind::Dir => walk(fs, &path, out)?,
                Some(_) => out.push(path),
                None => {}
            }
        }
        Ok(())
    }
    let root = dirs.kept_root();
    let mut out = Vec::new();
    if fs.metadata(&root)?.is_some_and(|m| m.kind == FileKind::Dir) {
        walk(fs, &root, &mut out)?;
    }
    out.sort();
    Ok(out)
}

/// Creates `dir` with `mode` unless it exists (its parent must exist).
fn ensure_dir(fs: &dyn Fs, dir: &Path, mode: u32) -> Result<(), ApplyError> {
    match fs
        .metadata(dir)
        .map_err(|e| ApplyError::io("inspect", dir, e))?
    {
        Some(m) if m.kind == FileKind::Dir => Ok(()),
        Some(_) => Err(ApplyError::io(
            "create folder",
            dir,
            io::Error::new(io::ErrorKind::AlreadyExists, "a file is in the way"),
        )),
        None => fs
            .create_dir(dir, mode)
            .map_err(|e| ApplyError::io("create folder", dir, e)),
    }
}

/// A fresh, sortable transaction id: time in nanoseconds and the process id.
fn new_txid() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos:x}-{:x}", std::process::id())
}

/// The first txid or slot of `journal` that ota would not have written, if any. Both become
/// path components inside the state folder: a journal that names `../x` must never make
/// recovery move or delete anything outside it.
fn foreign_name(journal: &Journal) -> Option<&str> {
    if !is_txid(&journal.txid) {
        return Some(&journal.txid);
    }
    journal.ops.iter().find_map(|op| match op {
        Op::Displace { slot, .. } | Op::Place { slot, .. } if !is_slot(slot) => Some(slot.as_str()),
        _ => None,
    })
}

/// Whether `name` has the form of a stage or backup slot: one plain path component.
fn is_slot(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.bytes().any(|b| b == b'/' || b == 0)
}

/// Whether `name` has the form [`new_txid`] gives: lowercase hex, `-`, lowercase hex.
pub(crate) fn is_txid(name: &str) -> bool {
    let hex = |s: &str| {
        (1..=32).contains(&s.len()) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    name.split_once('-')
        .is_some_and(|(time, pid)| hex(time) && hex(pid))
}

/// A failure while changing the target or recovering.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A filesystem call failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What ota was doing.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A rename failed.
    #[error("cannot move {} to {}: {source}", from.display(), to.display())]
    Rename {
        /// Source.
        from: PathBuf,
        /// Destination.
        to: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A path changed under ota's feet, or would lead outside the target (through a link).
    #[error(
        "{}: {reason}. The update was stopped; check what changed that path (ota never writes \
         through links or over files it did not expect), then run `ota update` again",
        path.display()
    )]
    UnsafePath {
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The journal cannot be read, so ota cannot know how to finish the update.
    #[error(
        "the update journal {} is damaged ({message}); ota cannot tell how far the interrupted update got. \
         Inspect the target, then remove the journal and run `ota update --force` to reinstall",
        path.display()
    )]
    JournalDamaged {
        /// The journal.
        path: PathBuf,
        /// Why it does not parse.
        message: String,
    },
    /// Undo found something at a path it must restore.
    #[error(
        "cannot restore {} from {}: something else is now at that path; move it away and run `ota recover`",
        path.display(), backup.display()
    )]
    RestoreBlocked {
        /// The path to restore.
        path: PathBuf,
        /// The backup waiting there.
        backup: PathBuf,
    },
    /// The update failed and so did the rollback; the journal remains for `ota recover`.
    #[error(
        "{cause}; rolling back also failed: {rollback}. The journal was kept: run `ota recover` once the cause is fixed"
    )]
    RollbackFailed {
        /// What made the update fail.
        cause: Box<ApplyError>,
        /// What made the rollback fail.
        rollback: Box<ApplyError>,
    },
    /// Writing `state.json` failed.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

impl ApplyError {
    fn io(action: &'static str, path: &Path, source: io::Error) -> ApplyError {
        if fs::is_unsafe(&source) {
            return ApplyError::UnsafePath {
                path: path.to_owned(),
                reason: source.to_string(),
            };
        }
        ApplyError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }

    fn rename(from: &Path, to: &Path, source: io::Error) -> ApplyError {
        if fs::is_unsafe(&source) {
            return ApplyError::UnsafePath {
                path: from.to_owned(),
                reason: format!("cannot move it to {}: {source}", to.display()),
            };
        }
        ApplyError::Rename {
            from: from.to_owned(),
            to: to.to_owned(),
            source,
        }
    }

    /// Whether this is (or was caused by) a path changed under ota's feet.
    pub(crate) fn is_unsafe_path(&self) -> bool {
        match self {
            ApplyError::UnsafePath { .. } => true,
            ApplyError::RollbackFailed { cause, .. } => cause.is_unsafe_path(),
            _ => false,
        }
    }

    /// The underlying I/O error, if this is one (to tell "disk full" apart).
    pub(crate) fn io_error(&self) -> Option<&io::Error> {
        match self {
            ApplyError::Io { source, .. } | ApplyError::Rename { source, .. } => Some(source),
            ApplyError::RollbackFailed { cause, .. } => cause.io_error(),
            ApplyError::State(crate::state::StateError::Io { source, .. }) => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_format_1_journal_still_reads() {
        let text = r#"{"format":1,"txid":"t","release":{"channel":"stable","ref":"v1",
            "commit":"0123456789abcdef0123456789abcdef01234567"},"ops":[
            {"op":"displace","path":"a/x.txt","slot":"0"},
            {"op":"remove_dir","path":"a","mode":488},
            {"op":"place","path":"b.txt","slot":"1"}]}"#;
        let journal: Journal = serde_json::from_str(text).unwrap();
        assert_eq!(
            journal.ops[0],
            Op::Displace {
                path: RelPath::new("a/x.txt", &[]).unwrap(),
                slot: "0".into(),
                kind: FileKind::File,
                keep: false,
                previous: None,
            }
        );
        assert!(matches!(journal.ops[1], Op::RemoveDir { mode: 0o750, .. }));
    }

    /// `previous` is new in format 2 and optional: a format-2 journal written before it
    /// still reads, and one that names a blob id keeps it.
    #[test]
    fn a_displace_names_what_goes_to_previous_only_when_set() {
        let text = r#"{"format":2,"txid":"18edbb6833a8c162-5eee","release":{"channel":"stable",
            "ref":"v1","commit":"0123456789abcdef0123456789abcdef01234567"},"ops":[
            {"op":"displace","path":"a.txt","slot":"0","kind":"file","keep":false}]}"#;
        let mut journal = parse_journal(Path::new("journal.json"), text.as_bytes()).unwrap();
        assert!(matches!(
            journal.ops[0],
            Op::Displace { previous: None, .. }
        ));
        let id = ObjectId::for_blob(b"v1\n");
        if let Op::Displace { previous, .. } = &mut journal.ops[0] {
            *previous = Some(id);
        }
        let written = serde_json::to_string(&journal).unwrap();
        assert!(
            written.contains(&format!(r#""previous":"{id}""#)),
            "{written}"
        );
        let read = parse_journal(Path::new("journal.json"), written.as_bytes()).unwrap();
        assert_eq!(read, journal);
    }

    #[test]
    fn only_blob_ids_name_objects_in_previous() {
        let id = ObjectId::for_blob(b"x").to_hex();
        assert_eq!(object_name(&id), ObjectId::from_hex(&id));
        for name in [
            id.to_uppercase(),
            format!("{id}.tmp"),
            id[1..].to_owned(),
            "..".into(),
        ] {
            assert_eq!(object_name(&name), None, "{name}");
        }
    }

    /// Found by the `state` fuzz target: a slot or transaction id with a `/` or `..` let a
    /// crafted journal name paths outside `stage/` and `backup/`.
    #[test]
    fn a_journal_naming_a_path_outside_its_folders_is_damaged() {
        let journal = |txid: &str, slot: &str| {
            format!(
                r#"{{"format":1,"txid":"{txid}","release":{{"channel":"stable","ref":"v1",
                "commit":"8d12ae3ca32fc5d3478419b599612ae294476917"}},"ops":[{{"op":"place",
                "path":"app/a.py","slot":"{slot}"}}]}}"#
            )
        };
        let path = Path::new("journal.json");
        assert!(parse_journal(path, journal("18edbb6833a8c162-5eee", "0").as_bytes()).is_ok());
        for (txid, slot) in [
            ("t", "../../etc/passwd"),
            ("t", "0/a"),
            ("..", "0"),
            ("", "0"),
        ] {
            let err = parse_journal(path, journal(txid, slot).as_bytes()).unwrap_err();
            assert!(
                err.to_string().contains("is not a name ota gives"),
                "{txid:?} {slot:?}: {err}"
            );
        }
    }
}
