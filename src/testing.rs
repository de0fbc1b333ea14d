//! Internals the crash and integration tests drive directly. Not part of the API: hidden
//! from the documentation and free to change with any release.

pub use crate::state::StateDir;
pub use crate::transaction::recover;

use std::collections::BTreeMap;
use std::path::Path;

use crate::Filter;
use crate::manifest::{self, Manifest, RelPath};
use crate::source::GitHub;

// Entry points for the fuzz targets (fuzz/): each takes untrusted bytes and runs the real
// parser, nothing more; the targets check the properties of what comes out. Errors are
// returned as their messages, which also exercises their formatting.

/// A release answer's tag, draft and prerelease flags, as `GitHub` reads them.
pub fn parse_release(github: &GitHub, body: &[u8]) -> Result<(String, bool, bool), String> {
    github
        .parse_release(body.to_vec())
        .map_err(|e| e.to_string())
}

/// A tree answer turned into the release's manifest, as an update does: the tree parsed by
/// `GitHub`, then every path validated and `filter` applied, with `.ota` reserved. Also
/// returns the warnings (skipped submodules).
pub fn parse_tree(
    github: &GitHub,
    body: &[u8],
    filter: &Filter,
) -> Result<(Manifest, Vec<String>), String> {
    let tree = github
        .parse_tree(body.to_vec())
        .map_err(|e| e.to_string())?;
    let reserved = [RelPath::new(".ota", &[]).map_err(|e| e.to_string())?];
    manifest::from_tree(tree, filter, &reserved, &[]).map_err(|e| e.to_string())
}

/// A release path validated against `reserved` top-level folders.
pub fn rel_path(path: &str, reserved: &[&str]) -> Result<RelPath, String> {
    let reserved = reserved
        .iter()
        .map(|r| RelPath::new(r, &[]))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    RelPath::new(path, &reserved).map_err(|e| e.to_string())
}

/// Checks a release's symlinks (`links`: link path → target) as an update does: each is
/// resolved through the others and must stay inside the target and outside `reserved`.
pub fn check_links(links: &[(RelPath, String)], reserved: &[&str]) -> Result<(), String> {
    let reserved = reserved
        .iter()
        .map(|r| RelPath::new(r, &[]))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let links: BTreeMap<RelPath, String> = links.iter().cloned().collect();
    manifest::check_links(&links, &reserved).map_err(|e| e.to_string())
}

/// A `journal.json` as recovery reads it, written back as ota writes it.
pub fn parse_journal(bytes: &[u8]) -> Result<String, String> {
    let journal = crate::transaction::parse_journal(Path::new("journal.json"), bytes)
        .map_err(|e| e.to_string())?;
    serde_json::to_string(&journal).map_err(|e| e.to_string())
}
