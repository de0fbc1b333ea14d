//! The GitHub REST API and raw file hosting (and compatible hosts).
//!
//! Requests per update, when the channel moved:
//! - stable: `releases/latest` (or `releases/tags/{tag}`), `commits/tags/{tag}` with the
//!   sha media type (the tag peeled to its commit, annotated or not, in one request), and
//!   `git/trees/{commit}?recursive=1`: three metadata requests;
//! - developer: `commits/{branch}` (sha media type) and the tree: two.
//!
//! A check that finds nothing new costs the first request only. Files are fetched by
//! commit SHA, never by a moving branch name, from raw hosting; a private repository whose
//! raw host refuses the token falls back to the blob API. Symlinks are read through the blob
//! API, which returns the link itself rather than what it points to.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use super::{Resolved, Source, SourceError, Validator};
use crate::config::{Channel, GithubConfig, Limits, NetworkConfig};
use crate::http::{Accept, Answer, Download, ErrorKind, Http, HttpError, Quota, Usage, host_of};
use crate::manifest::{Entry, Kind, ObjectId, TreeEntry};
use crate::state::ReleaseId;

/// Largest release JSON accepted (releases carry notes and asset lists).
const RELEASE_LIMIT: u64 = 4 << 20;
/// Largest tree JSON accepted (GitHub truncates trees at 7 MB).
const TREE_LIMIT: u64 = 32 << 20;
/// Largest small answer (a SHA, a ref).
const SMALL_LIMIT: u64 = 64 << 10;
/// Deepest chain of tags pointing at tags that is followed.
const MAX_TAG_DEPTH: usize = 8;

/// Characters left as they are in a URL path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A GitHub (or compatible) repository.
pub struct GitHub {
    http: Http,
    owner: String,
    repo: String,
    /// `{api_url}/repos/{owner}/{repo}`.
    api: String,
    /// `{raw_url}/{owner}/{repo}`.
    raw: String,
    /// Set once raw hosting answered 404 with a token: use the blob API from then on.
    blobs_only: AtomicBool,
    has_token: bool,
    /// The config's limits on the tree (`max_tree_kb`, `max_tree_files`).
    limits: Limits,
}

impl GitHub {
    /// A client for the repository in `config`.
    pub fn new(config: &GithubConfig, net: &NetworkConfig) -> GitHub {
        let hosts = [&config.api_url, &config.raw_url]
            .iter()
            .filter_map(|u| host_of(u).map(str::to_owned))
            .collect();
        let owner = encode(&config.owner);
        let repo = encode(&config.repo);
        GitHub {
            http: Http::new(net, config.token.clone(), hosts),
            api: format!("{}/repos/{owner}/{repo}", config.api_url),
            raw: format!("{}/{owner}/{repo}", config.raw_url),
            owner: config.owner.clone(),
            repo: config.repo.clone(),
            blobs_only: AtomicBool::new(false),
            has_token: config.token.is_some(),
            limits: Limits::default(),
        }
    }

    /// Refuses trees over the config's limits (none by default).
    pub fn with_limits(mut self, limits: &Limits) -> GitHub {
        self.limits = limits.clone();
        self
    }

    fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.repo)
    }

    fn http_error(&self, what: impl Into<String>) -> impl FnOnce(HttpError) -> SourceError {
        let what = what.into();
        move |source| SourceError::Http { what, source }
    }

    fn protocol(&self, what: &str, message: impl Into<String>) -> SourceError {
        SourceError::Protocol {
            what: what.to_owned(),
            message: message.into(),
        }
    }

    /// `missing` (a release, tag or branch that is not there), or, when the repository
    /// itself is not there, that: GitHub answers 404 to both, and to a private repository
    /// asked without a token. Costs one request, on this error path only.
    fn unless_no_repo(&self, missing: SourceError) -> SourceError {
        match self.http.get(&self.api, Accept::Json, RELEASE_LIMIT, None) {
            Err(e) if e.kind == ErrorKind::NotFound => SourceError::RepoNotFound {
                repo: self.full_name(),
                url: self.api.clone(),
                has_token: self.has_token,
            },
            _ => missing,
        }
    }

    /// The published release with `tag`, or the latest: its tag name, or `Unchanged` when a
    /// conditional request with `cached` was answered 304.
    fn release_tag(
        &self,
        tag: Option<&str>,
        cached: Option<&Validator>,
    ) -> Result<Asked, SourceError> {
        let url = match tag {
            Some(t) => format!("{}/releases/tags/{}", self.api, encode(t)),
            None => format!("{}/releases/latest", self.api),
        };
        let what = format!("looking up the release of {}", self.full_name());
        let cached = cached.filter(|c| c.url == url);
        let answer = self
            .http
            .get(
                &url,
                Accept::Json,
                RELEASE_LIMIT,
                cached.map(|c| c.etag.as_str()),
            )
            .map_err(|e| match (e.kind == ErrorKind::NotFound, tag) {
                (true, Some(t)) => self.unless_no_repo(SourceError::TagNotFound {
                    repo: self.full_name(),
                    tag: t.to_owned(),
                }),
                (true, None) => self.unless_no_repo(SourceError::NoRelease {
                    repo: self.full_name(),
                }),
                _ => SourceError::Http {
                    what: what.clone(),
                    source: e,
                },
            })?;
        let answer = match (answer, cached) {
            (Some(answer), _) => answer,
            (None, Some(cached)) => return Ok(Asked::Unchanged(cached.clone())),
            (None, None) => {
                return Err(self.protocol(&what, "304 Not Modified to an unconditional request"));
            }
        };
        let release: ReleaseJson = answer.json(&url).map_err(self.http_error(what.clone()))?;
        // `releases/latest` never answers a draft or prerelease, but a pinned tag can.
        if release.draft {
            return Err(self.protocol(&what, format!("release {} is a draft", release.tag_name)));
        }
        if tag.is_none() && release.prerelease {
            return Err(self.protocol(
                &what,
                format!("release {} is a prerelease", release.tag_name),
            ));
        }
        Ok(Asked::Answer {
            value: release.tag_name,
            url,
            etag: answer.etag,
        })
    }

    /// `commits/{reference}` with the sha media type: the commit a ref points at (`None`
    /// when the ref does not exist), or `Unchanged` after a 304 to `cached`.
    fn commit_of(
        &self,
        reference: &str,
        cached: Option<&Validator>,
    ) -> Result<Option<Asked<ObjectId>>, HttpError> {
        let url = format!("{}/commits/{}", self.api, encode_path(reference));
        let cached = cached.filter(|c| c.url == url);
        match self.http.get(
            &url,
            Accept::Sha,
            SMALL_LIMIT,
            cached.map(|c| c.etag.as_str()),
        ) {
            Ok(None) => match cached {
                Some(cached) => Ok(Some(Asked::Unchanged(cached.clone()))),
                None => Err(HttpError::new(
                    &url,
                    ErrorKind::BadBody("304 Not Modified to an unconditional request".into()),
                )),
            },
            Ok(Some(answer)) => {
                let text = String::from_utf8_lossy(&answer.body);
                let commit = ObjectId::from_hex(text.trim()).ok_or_else(|| {
                    HttpError::new(
                        &url,
                        ErrorKind::BadBody(format!("not a commit SHA: {:?}", truncate(&text))),
                    )
                })?;
                Ok(Some(Asked::Answer {
                    value: commit,
                    url,
                    etag: answer.etag,
                }))
            }
            Err(e)
                if matches!(
                    e.kind,
                    ErrorKind::NotFound | ErrorKind::Status { status: 422, .. }
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Peels a tag to its commit through `git/ref/tags` and `git/tags`, for hosts whose
    /// commits endpoint does not take `tags/{tag}`.
    fn peel_tag(&self, tag: &str) -> Result<ObjectId, SourceError> {
        let what = format!("resolving tag {tag} of {}", self.full_name());
        let url = format!("{}/git/ref/tags/{}", self.api, encode_path(tag));
        let reference: RefJson = self
            .http
            .get_json(&url, SMALL_LIMIT)
            .map_err(self.http_error(what.clone()))?;
        let mut object = reference.object;
        for _ in 0..MAX_TAG_DEPTH {
            match object.kind.as_str() {
                "commit" => {
                    return ObjectId::from_hex(&object.sha)
                        .ok_or_else(|| self.protocol(&what, format!("bad SHA {:?}", object.sha)));
                }
                "tag" => {
                    let url = format!("{}/git/tags/{}", self.api, encode(&object.sha));
                    let tag: TagJson = self
                        .http
                        .get_json(&url, SMALL_LIMIT)
                        .map_err(self.http_error(what.clone()))?;
                    object = tag.object;
                }
                other => {
                    return Err(
                        self.protocol(&what, format!("the tag points at a {other}, not a commit"))
                    );
                }
            }
        }
        Err(self.protocol(&what, "tag chain too deep"))
    }

    fn tree_json(&self, sha: &str, recursive: bool) -> Result<TreeJson, SourceError> {
        let url = format!(
            "{}/git/trees/{}{}",
            self.api,
            encode(sha),
            if recursive { "?recursive=1" } else { "" }
        );
        let what = format!("reading the file tree of {}", self.full_name());
        let answer = self
            .http
            .get(&url, Accept::Json, TREE_LIMIT, None)
            .map_err(self.http_error(what.clone()))?
            .ok_or_else(|| self.protocol(&what, "304 Not Modified to an unconditional request"))?;
        let size = answer.body.len() as u64;
        if let Some(limit) = self.limits.max_tree_kb.filter(|kb| size > kb * 1024) {
            return Err(self.protocol(
                &what,
                format!(
                    "the tree response is {} KiB ({size} bytes), more than the limit of {limit} \
                     KiB set by `max_tree_kb` (`max_tree_size_kb` in the original format); \
                     raise the limit, or remove it for none",
                    size.div_ceil(1024)
                ),
            ));
        }
        answer.json(&url).map_err(self.http_error(what))
    }

    /// Collects `tree` into `out` under `prefix`; a truncated listing is completed by
    /// walking its sub-trees one by one.
    fn collect(
        &self,
        tree: TreeJson,
        prefix: &str,
        out: &mut Vec<TreeEntry>,
        depth: usize,
    ) -> Result<(), SourceError> {
        let what = format!("reading the file tree of {}", self.full_name());
        if depth > 64 {
            return Err(self.protocol(&what, "tree nested too deeply"));
        }
        if !tree.truncated {
            for raw in tree.tree {
                out.push(self.entry(&what, prefix, raw)?);
            }
            return Ok(());
        }
        // Truncated: list this level alone, then each sub-tree.
        let level = self.tree_json(&tree.sha, false)?;
        for raw in level.tree {
            let entry = self.entry(&what, prefix, raw)?;
            if entry.mode == 0o040000 {
                let sub = self.tree_json(&entry.id.to_hex(), true)?;
                let sub_prefix = format!("{}/", entry.path);
                out.push(entry);
                self.collect(sub, &sub_prefix, out, depth + 1)?;
            } else {
                out.push(entry);
            }
        }
        Ok(())
    }

    fn entry(
        &self,
        what: &str,
        prefix: &str,
        raw: TreeEntryJson,
    ) -> Result<TreeEntry, SourceError> {
        let mode = u32::from_str_radix(&raw.mode, 8).map_err(|_| {
            self.protocol(what, format!("bad mode {:?} for {:?}", raw.mode, raw.path))
        })?;
        let id = ObjectId::from_hex(&raw.sha).ok_or_else(|| {
            self.protocol(what, format!("bad SHA {:?} for {:?}", raw.sha, raw.path))
        })?;
        Ok(TreeEntry {
            path: format!("{prefix}{}", raw.path),
            mode,
            id,
            size: raw.size,
            sha256: None,
        })
    }

    fn blob_url(&self, entry: &Entry) -> String {
        format!("{}/git/blobs/{}", self.api, entry.blob)
    }
}

impl Source for GitHub {
    fn resolve(
        &self,
        channel: &Channel,
        known: Option<&ReleaseId>,
        cached: Option<&Validator>,
    ) -> Result<Resolved, SourceError> {
        match channel {
            Channel::Stable { tag } => {
                let (tag_name, url, etag) = match self.release_tag(tag.as_deref(), cached)? {
                    Asked::Unchanged(cached) => return Ok(unchanged(cached)),
                    Asked::Answer { value, url, etag } => (value, url, etag),
                };
                let release = match known {
                    Some(k) if k.channel == "stable" && k.ref_name == tag_name => k.clone(),
                    _ => {
                        let what = format!("resolving tag {tag_name} of {}", self.full_name());
                        let commit = match self
                            .commit_of(&format!("tags/{tag_name}"), None)
                            .map_err(self.http_error(what))?
                        {
                            Some(Asked::Answer { value, .. }) => value,
                            _ => self.peel_tag(&tag_name)?,
                        };
                        ReleaseId::new("stable", tag_name, commit)
                    }
                };
                Ok(resolved(release, url, etag))
            }
            Channel::Named { name } => Err(self.protocol(
                "choosing the release",
                format!(
                    "channel {name:?} is a channel of a static site; a GitHub source follows \
                     \"stable\" or \"developer\""
                ),
            )),
            Channel::Developer { branch } => {
                let what = format!("looking up branch {branch} of {}", self.full_name());
                match self
                    .commit_of(branch, cached)
                    .map_err(self.http_error(what))?
                {
                    Some(Asked::Unchanged(cached)) => Ok(unchanged(cached)),
                    Some(Asked::Answer { value, url, etag }) => Ok(resolved(
                        ReleaseId::new("developer", branch.clone(), value),
                        url,
                        etag,
                    )),
                    None => Err(self.unless_no_repo(SourceError::BranchNotFound {
                        repo: self.full_name(),
                        branch: branch.clone(),
                    })),
                }
            }
        }
    }

    fn tree(&self, commit: &ObjectId) -> Result<Vec<TreeEntry>, SourceError> {
        let tree = self.tree_json(&commit.to_hex(), true)?;
        let mut out = Vec::new();
        self.collect(tree, "", &mut out, 0)?;
        let files = out.iter().filter(|entry| entry.mode != 0o040000).count() as u64;
        if let Some(limit) = self.limits.max_tree_files.filter(|max| files > *max) {
            return Err(self.protocol(
                &format!("reading the file tree of {}", self.full_name()),
                format!(
                    "the release holds {files} files, more than the limit of {limit} set by \
                     `max_tree_files`; raise the limit, or remove it for none"
                ),
            ));
        }
        Ok(out)
    }

    fn open(
        &self,
        commit: &ObjectId,
        entry: &Entry,
        offset: u64,
        validator: Option<&str>,
    ) -> Result<Download, SourceError> {
        let what = format!("downloading {}", entry.path);
        if entry.kind == Kind::Symlink || self.blobs_only.load(Ordering::Relaxed) {
            return self
                .http
                .download(&self.blob_url(entry), Accept::RawBlob, offset, validator)
                .map_err(self.http_error(what));
        }
        let url = format!(
            "{}/{}/{}",
            self.raw,
            commit,
            encode_path(entry.path.as_str())
        );
        match self.http.download(&url, Accept::Bytes, offset, validator) {
            Err(e) if e.kind == ErrorKind::NotFound && self.has_token => {
                tracing::info!(
                    "raw hosting has no {}; using the blob API (private repository?)",
                    entry.path
                );
                self.blobs_only.store(true, Ordering::Relaxed);
                self.http
                    .download(&self.blob_url(entry), Accept::RawBlob, offset, validator)
                    .map_err(self.http_error(what))
            }
            other => other.map_err(self.http_error(what)),
        }
    }

    fn name(&self) -> String {
        self.full_name()
    }

    fn usage(&self) -> Usage {
        self.http.usage()
    }

    fn quota(&self) -> Quota {
        self.http.quota()
    }

    fn start_operation(&self, deadline: Instant) {
        self.http.start_operation(deadline);
    }
}

/// The answer to a possibly conditional request.
enum Asked<T = String> {
    /// 304: what this validator named still holds.
    Unchanged(Validator),
    /// A fresh answer.
    Answer {
        value: T,
        url: String,
        etag: Option<String>,
    },
}

/// The parsing halves of `release_tag` and `tree`, on a body already received: the fuzz
/// targets (`ota::testing`) drive them without a network.
impl GitHub {
    /// The tag, draft and prerelease flags of a release answer.
    pub(crate) fn parse_release(&self, body: Vec<u8>) -> Result<(String, bool, bool), SourceError> {
        let release: ReleaseJson = answer(body)
            .json(&self.api)
            .map_err(self.http_error("parsing a release"))?;
        Ok((release.tag_name, release.draft, release.prerelease))
    }

    /// The entries of a tree answer, as `tree` collects them (a truncated answer's
    /// sub-trees are not fetched: its own entries are taken as complete).
    pub(crate) fn parse_tree(&self, body: Vec<u8>) -> Result<Vec<TreeEntry>, SourceError> {
        let mut tree: TreeJson = answer(body)
            .json(&self.api)
            .map_err(self.http_error("parsing a tree"))?;
        tree.truncated = false;
        let mut out = Vec::new();
        self.collect(tree, "", &mut out, 0)?;
        Ok(out)
    }
}

fn answer(body: Vec<u8>) -> Answer {
    Answer {
        body,
        etag: None,
        last_modified: None,
        content_type: Some("application/json".to_owned()),
    }
}

/// The release a validator named, after a 304 to it.
fn unchanged(cached: Validator) -> Resolved {
    Resolved {
        release: cached.release.clone(),
        validator: Some(cached),
    }
}

fn resolved(release: ReleaseId, url: String, etag: Option<String>) -> Resolved {
    let validator = etag.map(|etag| Validator {
        url,
        etag,
        last_modified: None,
        expires: None,
        release: release.clone(),
    });
    Resolved { release, validator }
}

/// Percent-encodes one path segment.
fn encode(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}

/// Percent-encodes each `/`-separated segment of a path, keeping the slashes.
fn encode_path(path: &str) -> String {
    path.split('/').map(encode).collect::<Vec<_>>().join("/")
}

fn truncate(text: &str) -> String {
    text.chars().take(80).collect()
}

#[derive(Deserialize)]
struct ReleaseJson {
    tag_name: String,
    #[serde(default)]
    draft: bool,
    #[serde(default)]
    prerelease: bool,
}

#[derive(Deserialize)]
struct ObjectJson {
    sha: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct RefJson {
    object: ObjectJson,
}

#[derive(Deserialize)]
struct TagJson {
    object: ObjectJson,
}

#[derive(Deserialize)]
struct TreeJson {
    sha: String,
    #[serde(default)]
    truncated: bool,
    tree: Vec<TreeEntryJson>,
}

#[derive(Deserialize)]
struct TreeEntryJson {
    path: String,
    mode: String,
    sha: String,
    size: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_github_release_json_parses() {
        let text = include_str!("../../tests/fixtures/release-by-tag.json");
        let release: ReleaseJson = serde_json::from_str(text).unwrap();
        assert_eq!(release.tag_name, "v1.0.0");
        assert!(!release.draft && !release.prerelease);
    }

    #[test]
    fn paths_are_encoded_per_segment() {
        assert_eq!(encode_path("a b/c+d/ü"), "a%20b/c%2Bd/%C3%BC");
        assert_eq!(encode("tags/v1"), "tags%2Fv1");
    }
}
