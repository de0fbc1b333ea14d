//! Where releases come from.
//!
//! A [`Source`] answers three questions: which commit does the channel point at now, what
//! files does that commit hold, and what are the bytes of one file (from an offset, to
//! resume). Everything it returns is untrusted: `manifest` validates the tree and `fetch`
//! verifies every byte against the tree's blob ids. [`github::GitHub`] speaks the GitHub
//! REST API and raw hosting (and compatible hosts, such as `ota serve`).

pub mod github;

use crate::config::Channel;
use crate::http::{Download, HttpError, Quota, Usage};
use crate::manifest::{Entry, ObjectId, TreeEntry};
use crate::state::ReleaseId;

/// A release host.
pub trait Source: Send + Sync {
    /// Which release the channel points at now. `known` is the installed release: when the
    /// channel still names it (same tag), the source may return it without looking further,
    /// so that an up-to-date check costs one request. Release tags are taken not to move;
    /// `ota update --force` passes `None` to look again.
    fn resolve(
        &self,
        channel: &Channel,
        known: Option<&ReleaseId>,
    ) -> Result<ReleaseId, SourceError>;
    /// The full tree of `commit` (every entry, unfiltered, unvalidated).
    fn tree(&self, commit: &ObjectId) -> Result<Vec<TreeEntry>, SourceError>;
    /// The bytes of `entry` at `commit`, from `offset`.
    fn open(&self, commit: &ObjectId, entry: &Entry, offset: u64) -> Result<Download, SourceError>;
    /// A short name of what is followed, e.g. `acme/app`.
    fn name(&self) -> String;
    /// Requests and bytes used so far.
    fn usage(&self) -> Usage;
    /// The last rate-limit state seen, if the host reports one.
    fn quota(&self) -> Quota;
}

/// A source that could not answer.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The repository has no published release.
    #[error(
        "{repo} has no published release (drafts and prereleases do not count); publish one, or follow a branch with channel = \"developer\""
    )]
    NoRelease {
        /// `owner/repo`.
        repo: String,
    },
    /// The pinned tag has no published release.
    #[error("{repo} has no published release with tag {tag:?}; check `tag` in the config")]
    TagNotFound {
        /// `owner/repo`.
        repo: String,
        /// The tag.
        tag: String,
    },
    /// The branch does not exist.
    #[error("{repo} has no branch {branch:?}; check `branch` in the config")]
    BranchNotFound {
        /// `owner/repo`.
        repo: String,
        /// The branch.
        branch: String,
    },
    /// A request failed.
    #[error("{what}: {source}")]
    Http {
        /// What ota was asking for.
        what: String,
        /// The failure.
        #[source]
        source: HttpError,
    },
    /// The host answered something that breaks the protocol.
    #[error("{what}: {message}")]
    Protocol {
        /// What ota was asking for.
        what: String,
        /// What is wrong with the answer.
        message: String,
    },
}

impl SourceError {
    /// The HTTP failure underneath, if any.
    pub fn http(&self) -> Option<&HttpError> {
        match self {
            SourceError::Http { source, .. } => Some(source),
            _ => None,
        }
    }
}
