//! The five releases the soak moves between, and what a tree on disk holds.
//!
//! Any two of them differ in every way an update can change a tree: files added, edited and
//! deleted; files moved to another folder with the same content (staged from the local copy);
//! exec bits flipped; symlinks retargeted, added and removed, one to a folder; a file that
//! becomes a folder and back, a symlink that becomes a file and back; folders created and
//! emptied (nested ones too); and large incompressible files, added, replaced and deleted, so
//! that a fault or a SIGKILL can land in the middle of a download.

use std::collections::BTreeMap;

use test_git::noise;

/// How many releases there are.
pub const COUNT: usize = 5;

/// One path of a tree on disk (or in a release): a file with its exec bit, or a symlink.
#[derive(Clone, PartialEq, Eq)]
pub enum Entry {
    File { bytes: Vec<u8>, exec: bool },
    Link(String),
}

/// A whole tree: relative path to entry (folders are implied; the on-disk reader refuses an
/// empty one).
pub type Listing = BTreeMap<String, Entry>;

/// Release `r` (0..COUNT).
pub fn release(r: usize) -> Listing {
    let mut t = BTreeMap::new();
    let text = |s: String| Entry::File {
        bytes: s.into_bytes(),
        exec: false,
    };
    t.insert("README.md".to_owned(), text("soak fixture\n".repeat(10)));
    // Edits, deletes and re-adds.
    for i in 0..40 {
        if (i + 3 * r).is_multiple_of(7) {
            continue;
        }
        let body = if (i + r).is_multiple_of(4) {
            format!("module {i}, as edited in release {r}\n")
        } else {
            format!("module {i}\n")
        };
        t.insert(format!("lib/m{i:02}.py"), text(body.repeat(20)));
    }
    // Moves: the same content in another folder.
    for i in 0..30 {
        let folder = ["a", "b", "c"][(i + r) % 3];
        t.insert(
            format!("data/{folder}/item{i:02}.txt"),
            text(format!("item {i}\n").repeat(30)),
        );
    }
    // Exec bits.
    for i in 0..10 {
        t.insert(
            format!("bin/tool{i}"),
            Entry::File {
                bytes: format!("#!/bin/sh\necho tool {i}\n").into_bytes(),
                exec: (i + r).is_multiple_of(2),
            },
        );
    }
    // Symlinks: retargeted, to a folder, added and removed.
    t.insert("bin/latest".to_string(), Entry::Link(format!("tool{r}")));
    let current = if r.is_multiple_of(2) {
        "README.md"
    } else {
        "bin/tool1"
    };
    t.insert("current".to_owned(), Entry::Link(current.to_owned()));
    if r >= 2 {
        t.insert("datalink".to_owned(), Entry::Link("data/a".to_owned()));
    }
    // A file that becomes a folder, a symlink that becomes a file.
    if r.is_multiple_of(2) {
        t.insert("conf".to_owned(), text(format!("conf of release {r}\n")));
    } else {
        t.insert("conf/a.toml".to_owned(), text(format!("a = {r}\n")));
        t.insert("conf/b/c.toml".to_owned(), text("c = 1\n".to_owned()));
    }
    if r < 2 {
        t.insert("mode".to_owned(), Entry::Link("README.md".to_owned()));
    } else {
        t.insert("mode".to_owned(), text(format!("mode {r}\n")));
    }
    // Folders created and emptied.
    for i in 0..5 {
        t.insert(
            format!("plugins/p{r}/f{i}.py"),
            text(format!("plugin {r} file {i}\n")),
        );
    }
    if r.is_multiple_of(2) {
        t.insert(
            "deep/a/b/c/d/leaf.txt".to_owned(),
            text(format!("leaf {r}\n")),
        );
    }
    // Large files: one replaced in every release, one only in odd releases.
    t.insert(
        "assets/big.bin".to_owned(),
        Entry::File {
            bytes: noise(2 << 20, r as u64),
            exec: false,
        },
    );
    if r % 2 == 1 {
        t.insert(
            format!("assets/extra{r}.bin"),
            Entry::File {
                bytes: noise(768 << 10, 100 + r as u64),
                exec: false,
            },
        );
    }
    t
}

/// Bytes of a listing: file sizes plus symlink target lengths (what `lstat` reports).
pub fn bytes(listing: &Listing) -> u64 {
    listing
        .values()
        .map(|e| match e {
            Entry::File { bytes, .. } => bytes.len() as u64,
            Entry::Link(to) => to.len() as u64,
        })
        .sum()
}

/// The first paths where two listings differ, for a failure message.
pub fn diff(want: &Listing, got: &Listing) -> String {
    let mut out = Vec::new();
    for (path, entry) in want {
        match got.get(path) {
            None => out.push(format!("missing {path}")),
            Some(g) if g != entry => out.push(format!("differs {path}")),
            Some(_) => {}
        }
    }
    for path in got.keys() {
        if !want.contains_key(path) {
            out.push(format!("extra {path}"));
        }
    }
    let more = out.len().saturating_sub(6);
    out.truncate(6);
    if more > 0 {
        out.push(format!("{more} more"));
    }
    out.join(", ")
}
