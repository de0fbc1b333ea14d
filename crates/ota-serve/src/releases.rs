//! Releases derived from tags.
//!
//! Every tag whose name is a version is a published release (see `version`). A release is a
//! prerelease when its version has a semver pre-release part (`v2.0.0-rc1`, `-beta`,
//! `-preview`), as GitHub marks such releases, or when its tag is annotated and the
//! annotation mentions `prerelease`. The latest release is never a prerelease. Releases are
//! ordered newest first by `created_at`, the committer date of the tagged commit (what GitHub
//! sorts by), then by version, then by name, so the order is total and stable even when many
//! commits share one second.

use sha2::{Digest, Sha256};

use crate::Error;
use crate::git::{ObjectId, Repo};
use crate::version::Version;

/// One release, as read from its tag.
#[derive(Debug, Clone)]
pub(crate) struct Release {
    pub tag: String,
    pub id: u64,
    /// The commit the tag peels to (`target_commitish`).
    pub commit: ObjectId,
    pub prerelease: bool,
    /// The annotation message without trailing whitespace, or empty for a lightweight tag.
    pub body: String,
    /// Committer date of the commit, epoch seconds.
    pub created_at: i64,
    /// Tagger date of an annotated tag, else the commit date.
    pub published_at: i64,
    version: Version,
}

/// All releases, newest first.
pub(crate) fn all(repo: &Repo) -> Result<Vec<Release>, Error> {
    let mut releases = Vec::new();
    for reference in repo.refs_with_prefix("refs/tags/")? {
        let Some(tag) = reference.name.strip_prefix("refs/tags/") else {
            continue;
        };
        if let Some(release) = release_for(repo, tag, reference.target)? {
            releases.push(release);
        }
    }
    releases.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| b.version.cmp(&a.version))
            .then_with(|| b.tag.cmp(&a.tag))
    });
    Ok(releases)
}

/// The release of tag `tag` (prereleases included); `None` if the tag is missing, is not a
/// version, or does not lead to a commit.
pub(crate) fn by_tag(repo: &Repo, tag: &str) -> Result<Option<Release>, Error> {
    if Version::parse(tag).is_none() {
        return Ok(None);
    }
    match repo.find_ref(&format!("refs/tags/{tag}"))? {
        Some(reference) => release_for(repo, tag, reference.target),
        None => Ok(None),
    }
}

/// The newest release that is not a prerelease.
pub(crate) fn latest(repo: &Repo) -> Result<Option<Release>, Error> {
    Ok(all(repo)?.into_iter().find(|r| !r.prerelease))
}

fn release_for(repo: &Repo, tag: &str, target: ObjectId) -> Result<Option<Release>, Error> {
    let Some(version) = Version::parse(tag) else {
        return Ok(None);
    };
    let annotation = repo.tag(target)?;
    let Some(commit_id) = repo.peel_to_commit(target)? else {
        return Ok(None);
    };
    let Some(commit) = repo.commit(commit_id)? else {
        return Ok(None);
    };
    let created_at = commit.committer.time;
    let published_at = annotation
        .as_ref()
        .and_then(|a| a.tagger.as_ref())
        .map_or(created_at, |t| t.time);
    let body = annotation
        .as_ref()
        .map(|a| a.message.trim_end().to_string())
        .unwrap_or_default();
    Ok(Some(Release {
        tag: tag.to_string(),
        id: release_id(tag),
        commit: commit_id,
        prerelease: version.is_pre() || is_prerelease_message(&body),
        body,
        created_at,
        published_at,
        version,
    }))
}

fn is_prerelease_message(message: &str) -> bool {
    message.to_ascii_lowercase().contains("prerelease")
}

/// A stable id for the release of `tag`.
pub(crate) fn release_id(tag: &str) -> u64 {
    stable_id("release", tag)
}

/// A stable, positive id below 2^53 (so JavaScript clients keep it exact) derived from
/// `namespace` and `key`.
pub(crate) fn stable_id(namespace: &str, key: &str) -> u64 {
    let digest = Sha256::new()
        .chain_update(namespace.as_bytes())
        .chain_update([0])
        .chain_update(key.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) & ((1 << 53) - 1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_small() {
        assert_eq!(release_id("v1.0.0"), release_id("v1.0.0"));
        assert_ne!(release_id("v1.0.0"), release_id("v1.0.1"));
        assert!(release_id("v1.0.0") < 1 << 53);
        assert!(release_id("v1.0.0") > 0);
    }

    #[test]
    fn prerelease_word() {
        assert!(is_prerelease_message("Prerelease of 2.0"));
        assert!(is_prerelease_message("this is a PRERELEASE"));
        assert!(!is_prerelease_message("Release 2.0"));
        assert!(!is_prerelease_message(""));
    }
}
