//! Where releases come from.
//!
//! A [`Source`] answers three questions: which commit does the channel point at now, what
//! files does that commit hold, and what are the bytes of one file (from an offset, to
//! resume). Everything it returns is untrusted: `manifest` validates the tree and `fetch`
//! verifies every byte against the tree's blob ids. [`GitHub`] speaks the GitHub REST API
//! and raw hosting (and compatible hosts, such as `ota-serve`).

mod github;
mod static_site;

use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use self::github::GitHub;
pub use self::static_site::StaticSite;
pub use crate::http::{Download, HttpError};
pub use crate::manifest::TreeEntry;

use crate::config::Channel;
use crate::http::{Quota, Usage};
use crate::manifest::{Entry, ObjectId, Sha256};
use crate::state::ReleaseId;

pub use crate::signed::Refusal;

/// A release host.
pub trait Source: Send + Sync {
    /// Which release the channel points at now, in as few requests as possible:
    /// - `cached` is the validator of the last answer; when its URL is the one to ask, the
    ///   request is conditional, and a 304 returns the release it named (one request, which
    ///   GitHub does not count against the rate limit when authenticated);
    /// - `known` is the installed release: when the channel still names its tag, it is
    ///   returned without looking up the commit again (release tags are taken not to move;
    ///   `ota update --force` passes `None` for both to look again).
    fn resolve(
        &self,
        channel: &Channel,
        known: Option<&ReleaseId>,
        cached: Option<&Validator>,
    ) -> Result<Resolved, SourceError>;
    /// The full tree of `commit` (every entry, unfiltered, unvalidated).
    fn tree(&self, commit: &ObjectId) -> Result<Vec<TreeEntry>, SourceError>;
    /// The bytes of `entry` at `commit`, from `offset`; a resume passes the `validator` of
    /// the first answer so the server can refuse a range of a different representation.
    fn open(
        &self,
        commit: &ObjectId,
        entry: &Entry,
        offset: u64,
        validator: Option<&str>,
    ) -> Result<Download, SourceError>;
    /// Told what `file-list.json` holds (the list [`Source::list_to_keep`] gave at the last
    /// install), before the release's tree is asked for: unverified bytes, which a source
    /// uses only if they match a digest its signed manifest gives. The default ignores it.
    fn kept_list(&self, _list: Vec<u8>) {}
    /// The file list of `commit` to keep in `file-list.json` once it is installed, so the
    /// next update reads only the change from it (the static source's `ota-release/2`
    /// manifests); `None` (the default): nothing to keep.
    fn list_to_keep(&self, _commit: &ObjectId) -> Option<Vec<u8>> {
        None
    }
    /// The SHA-256s of old contents from which a patch makes `entry` of `commit` (the static
    /// source: the patches its signed manifest names); empty (the default): none.
    fn patch_sources(&self, _commit: &ObjectId, _entry: &Entry) -> Vec<Sha256> {
        Vec::new()
    }
    /// The `OTADELTA` patch that makes `entry` from the old content `from`, decompressed;
    /// untrusted like every byte: the result is checked against the entry's SHA-256.
    fn open_patch(
        &self,
        commit: &ObjectId,
        entry: &Entry,
        from: &Sha256,
    ) -> Result<Download, SourceError> {
        let _ = (commit, from);
        Err(SourceError::Protocol {
            what: format!("patching {}", entry.path),
            message: "this source has no patches".into(),
        })
    }
    /// Whether [`Source::open_archive`] can send a release as one archive (no request made).
    /// The default: it cannot.
    fn has_archive(&self) -> bool {
        false
    }
    /// The whole tree of `commit` as one gzip tar whose entries sit under one top folder
    /// (GitHub's `tarball`); `Ok(None)` when this source has no archives (the default).
    /// Untrusted like every byte: `fetch` verifies each entry it takes against the tree.
    fn open_archive(&self, commit: &ObjectId) -> Result<Option<Download>, SourceError> {
        let _ = commit;
        Ok(None)
    }
    /// A short name of what is followed, e.g. `acme/app`.
    fn name(&self) -> String;
    /// Requests and bytes used so far.
    fn usage(&self) -> Usage;
    /// The last rate-limit state seen, if the host reports one.
    fn quota(&self) -> Quota;
    /// Starts an operation (one check or update) that must end by `deadline`: requests,
    /// waits and downloads after it fail instead of going on. The default ignores it.
    fn start_operation(&self, deadline: Instant) {
        let _ = deadline;
    }
}

/// What `resolve` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The release the channel points at.
    pub release: ReleaseId,
    /// What to send next time to ask "has it changed?" conditionally.
    pub validator: Option<Validator>,
}

/// The `ETag` (or `Last-Modified`) of a channel's answer, and the release that answer named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validator {
    /// The URL asked.
    pub url: String,
    /// Its `ETag`; empty when the host sent none (then `last_modified` is the validator).
    #[serde(default)]
    pub etag: String,
    /// Its `Last-Modified`, for hosts that send no `ETag` (a static site only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// When the signed manifest behind the answer expires (RFC 3339; a static site only):
    /// a 304 is trusted only before then, so a host cannot freeze a device on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// The release it named.
    pub release: ReleaseId,
}

/// A source that could not answer.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The repository does not exist, or is private and the token (if any) cannot read it.
    #[error("{}", repo_not_found(repo, url, *has_token))]
    RepoNotFound {
        /// `owner/repo`.
        repo: String,
        /// The API URL asked.
        url: String,
        /// Whether a token was sent.
        has_token: bool,
    },
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
    /// The release is refused: unsigned, badly signed, by a key not trusted, expired, older
    /// than the installed one, or incomplete (see [`Refusal`]).
    #[error("{what}: {refusal}")]
    Refused {
        /// What ota was asking for.
        what: String,
        /// Why it is refused.
        #[source]
        refusal: Refusal,
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

fn repo_not_found(repo: &str, url: &str, has_token: bool) -> String {
    let private = match has_token {
        true => "if it is private, check that the token can read it",
        false => {
            "if it is private, set a token that can read it (`token` or `token_file` in \
             [source], or the OTA_TOKEN environment variable)"
        }
    };
    format!(
        "repository {repo} was not found ({url} answered 404): check `owner` and `repo` (and \
         `api_url`) in the config; {private}"
    )
}
