//! The GitHub REST API and raw file hosting (and compatible hosts).
//!
//! Requests per update, when the channel moved:
//! - stable: `releases/latest` (or `releases/tags/{tag}`), `commits/tags/{tag}` with the
//!   sha media type (the tag peeled to its commit, annotated or not, in one request), and
//!   `git/trees/{commit}?recursive=1`: three metadata requests (with `public_key`: the
//!   release only, plus its two manifest assets);
//! - developer: `commits/{branch}` (sha media type) and the tree: two.
//!
//! A check that finds nothing new costs the first request only. An update that downloads
//! most of the release reads it as one archive (`tarball/{commit}`, see
//! [`crate::plan::Transfer`]). Other files are fetched by
//! commit SHA, never by a moving branch name, from raw hosting; a private repository whose
//! raw host refuses the token falls back to the blob API. Symlinks are read through the blob
//! API, which returns the link itself rather than what it points to.
//!
//! A release's assets can say more than its tree (stable channel only; a branch has none):
//! - with `public_key` set, the release must carry `manifest.json` and
//!   `manifest.json.minisig` in ota's signed format ([`crate::signed`]): verified, fresh,
//!   naming this tag and the stable channel; the commit and the file list (with SHA-256)
//!   come from it, so the tag and tree requests are saved;
//! - without keys, a `manifest.json` in the original updater's format ([`crate::original`])
//!   is used when present (and required, signed, when `manifest_key` is set): the release's
//!   files are the ones it lists, each with its SHA-256.
//!
//! Assets are read through `browser_download_url` without a token (github.com's download
//! host does not count against the API rate limit), and through the asset API `url` with
//! `Accept: application/octet-stream` with one (private repositories); a redirect to the
//! storage host never carries the token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use super::static_site::still_fresh;
use super::{Refusal, Resolved, Source, SourceError, Validator};
use crate::config::{Channel, GithubConfig, Limits, NetworkConfig, Token};
use crate::http::{Accept, Answer, Download, ErrorKind, Http, HttpError, Quota, Usage, host_of};
use crate::manifest::{Entry, Kind, ObjectId, TreeEntry};
use crate::original::OriginalManifest;
use crate::signed::{self, ReleaseManifest, TrustedKeys};
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
    /// `public_key`: when not empty, releases must carry a signed manifest.
    keys: TrustedKeys,
    /// `manifest_key`: the HMAC key of the original manifest.
    manifest_key: Option<Token>,
    /// What the assets of the last release resolved said, by commit, for `tree`.
    described: Mutex<HashMap<ObjectId, Described>>,
    /// The tag of the last release resolved without reading its assets (after a 304, or
    /// the installed release), by commit: `tree` reads the release again.
    unseen: Mutex<HashMap<ObjectId, String>>,
}

/// What a release's assets say about its files.
#[derive(Clone, Debug)]
enum Described {
    /// Nothing: the git tree is the release.
    Tree,
    /// A verified signed manifest.
    Signed(Box<ReleaseManifest>),
    /// The original updater's manifest (its signature checked when a key is set).
    Original(Box<OriginalManifest>),
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
            keys: config.trust.keys.clone(),
            manifest_key: config.manifest_key.clone(),
            described: Mutex::new(HashMap::new()),
            unseen: Mutex::new(HashMap::new()),
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

    /// The published release with `tag`, or the latest, or `Unchanged` when a conditional
    /// request with `cached` was answered 304.
    fn release_tag(
        &self,
        tag: Option<&str>,
        cached: Option<&Validator>,
    ) -> Result<Asked<ReleaseJson>, SourceError> {
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
            value: release,
            url,
            etag: answer.etag,
        })
    }

    /// The bytes of the asset `name` of `release`, `None` when it has none. Without a token
    /// through `browser_download_url` (not counted against the API rate limit), with one
    /// through the asset API (private repositories).
    fn asset(
        &self,
        release: &ReleaseJson,
        name: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, SourceError> {
        let Some(asset) = release.assets.iter().find(|a| a.name == name) else {
            return Ok(None);
        };
        let what = format!("downloading asset {name} of release {}", release.tag_name);
        let (url, accept) = match (&asset.browser_download_url, self.has_token) {
            (Some(url), false) => (url.as_str(), Accept::Bytes),
            _ => (asset.url.as_str(), Accept::Octet),
        };
        let answer = self
            .http
            .get(url, accept, limit, None)
            .map_err(self.http_error(what.clone()))?
            .ok_or_else(|| self.protocol(&what, "304 Not Modified to an unconditional request"))?;
        Ok(Some(answer.body))
    }

    /// What the assets of `release` say about its files, checked: with keys, its signed
    /// manifest (required); else its original manifest, if any (required with
    /// `manifest_key`).
    fn describe(&self, release: &ReleaseJson) -> Result<Described, SourceError> {
        let tag = &release.tag_name;
        let what = match self.keys.is_empty() {
            true => format!(
                "checking the manifest.json of release {tag} of {}",
                self.full_name()
            ),
            false => format!(
                "checking the signed manifest of release {tag} of {}",
                self.full_name()
            ),
        };
        let refused = |refusal| SourceError::Refused {
            what: what.clone(),
            refusal,
        };
        let manifest_name = signed::manifest_path("stable");
        if !self.keys.is_empty() {
            let signature_name = format!("{manifest_name}.minisig");
            let manifest = self.asset(release, &manifest_name, signed::MAX_MANIFEST_BYTES)?;
            let signature = self.asset(release, &signature_name, signed::MAX_SIGNATURE_BYTES)?;
            let (Some(manifest), Some(signature)) = (manifest, signature) else {
                return Err(refused(Refusal::MissingSignature));
            };
            signed::verify(&self.keys, &manifest, &signature).map_err(refused)?;
            let manifest = ReleaseManifest::parse(&manifest).map_err(refused)?;
            if manifest.format != signed::FORMAT {
                return Err(refused(Refusal::BadManifest(format!(
                    "it is a static site's `manifest.json` ({}), whose file list is an object \
                     of that site; a GitHub release carries the release record instead, which \
                     lists the files: upload `releases/<counter>.json` and its `.minisig` from \
                     the site `ota publish` wrote, as `manifest.json` and \
                     `manifest.json.minisig`",
                    manifest.format
                ))));
            }
            manifest
                .check_fresh(jiff::Timestamp::now())
                .map_err(refused)?;
            if manifest.release != *tag || manifest.channel != "stable" {
                return Err(refused(Refusal::BadManifest(format!(
                    "it is signed for release {:?} of channel {:?}, but was found on release \
                     {tag:?} of the stable channel (a signed manifest copied onto another \
                     release?)",
                    manifest.release, manifest.channel
                ))));
            }
            return Ok(Described::Signed(Box::new(manifest)));
        }
        let bytes = self.asset(release, &manifest_name, crate::original::MAX_MANIFEST_BYTES)?;
        let Some(bytes) = bytes else {
            if self.manifest_key.is_some() {
                return Err(SourceError::Refused {
                    what: format!(
                        "release {tag} of {} has no `manifest.json` asset, and `manifest_key` is \
                         set (upload the original manifest, e.g. from `ota publish --format \
                         original`, or remove `manifest_key`)",
                        self.full_name()
                    ),
                    refusal: Refusal::MissingSignature,
                });
            }
            return Ok(Described::Tree);
        };
        let manifest = OriginalManifest::parse(&bytes).map_err(refused)?;
        if let Some(key) = &self.manifest_key {
            manifest.verify(key.expose().as_bytes()).map_err(refused)?;
        }
        if let Some(version) = &manifest.version {
            tracing::info!("release {tag}: manifest.json says version {version:?}");
        }
        Ok(Described::Original(Box::new(manifest)))
    }

    /// What the assets of the release of `commit` say; after a 304 they were not read, so
    /// the release is asked again, unconditionally.
    fn described(&self, commit: &ObjectId) -> Result<Described, SourceError> {
        if let Some(d) = lock(&self.described).get(commit) {
            return Ok(d.clone());
        }
        let Some(tag) = lock(&self.unseen).get(commit).cloned() else {
            // Not resolved by this client: no assets known (a developer channel, or a
            // caller that asks for a tree directly).
            return Ok(Described::Tree);
        };
        let Asked::Answer { value: release, .. } = self.release_tag(Some(&tag), None)? else {
            // `release_tag` turns a 304 to an unconditional request into an error.
            return Err(self.protocol("looking up the release", "304 to an unconditional request"));
        };
        let described = self.describe(&release)?;
        if let Described::Signed(m) = &described
            && m.commit != *commit
        {
            return Err(self.protocol(
                &format!("checking release {tag} of {}", self.full_name()),
                "its signed manifest changed since it was checked; run ota again",
            ));
        }
        lock(&self.described).insert(*commit, described.clone());
        Ok(described)
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

    /// The git tree of `commit`, every entry.
    fn git_tree(&self, commit: &ObjectId) -> Result<Vec<TreeEntry>, SourceError> {
        let tree = self.tree_json(&commit.to_hex(), true)?;
        let mut out = Vec::new();
        self.collect(tree, "", &mut out, 0)?;
        Ok(out)
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
                // Only the release resolved last is asked for its tree.
                lock(&self.described).clear();
                lock(&self.unseen).clear();
                // With keys, a 304 stands for the cached release only until its signed manifest
                // expires: a host cannot freeze a device on it by answering 304 forever.
                let fresh = cached.filter(|c| self.keys.is_empty() || still_fresh(c));
                let (found, url, etag) = match self.release_tag(tag.as_deref(), fresh)? {
                    Asked::Unchanged(cached) => {
                        let release = &cached.release;
                        lock(&self.unseen).insert(release.commit, release.ref_name.clone());
                        return Ok(unchanged(cached));
                    }
                    Asked::Answer { value, url, etag } => (value, url, etag),
                };
                // The installed release (release tags are taken not to move): its manifest
                // is read again only if its files are asked for, or, when signed, once the
                // manifest read last has expired. The release's answer changes with every
                // download of its assets (their download counts), so this path, not a 304,
                // is what keeps a check of a signed release at one request.
                let signed_until = fresh.filter(|c| Some(&c.release) == known);
                if let Some(k) = known
                    && (self.keys.is_empty() || signed_until.is_some())
                    && k.channel == "stable"
                    && k.ref_name == found.tag_name
                {
                    lock(&self.unseen).insert(k.commit, found.tag_name);
                    let mut resolved = resolved(k.clone(), url, etag);
                    if let Some(v) = &mut resolved.validator {
                        v.expires = signed_until.and_then(|c| c.expires.clone());
                    }
                    return Ok(resolved);
                }
                let described = self.describe(&found)?;
                let tag_name = found.tag_name;
                let mut release = match &described {
                    Described::Signed(m) => {
                        let mut id = ReleaseId::new("stable", tag_name, m.commit);
                        id.counter = Some(m.counter);
                        id.rollout_percent = m.rollout_percent;
                        id
                    }
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
                if let Described::Original(m) = &described {
                    release.post_update = m.post_update.clone();
                }
                let mut resolved = resolved(release, url, etag);
                if let (Described::Signed(m), Some(v)) = (&described, &mut resolved.validator) {
                    v.expires = Some(m.expires.clone());
                }
                lock(&self.described).insert(resolved.release.commit, described);
                Ok(resolved)
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
        let out = match self.described(commit)? {
            Described::Signed(manifest) => manifest.tree(),
            Described::Tree => self.git_tree(commit)?,
            Described::Original(manifest) => {
                let tree = self.git_tree(commit)?;
                original_tree(tree, &manifest).map_err(|refusal| SourceError::Refused {
                    what: format!("checking the manifest.json of {}", self.full_name()),
                    refusal,
                })?
            }
        };
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

    fn has_archive(&self) -> bool {
        true
    }

    /// `GET {api}/tarball/{commit}`: one API request, redirected to the archive host
    /// (codeload), which the token does not follow.
    fn open_archive(&self, commit: &ObjectId) -> Result<Option<Download>, SourceError> {
        let what = format!("downloading the archive of {}", self.full_name());
        let url = format!("{}/tarball/{commit}", self.api);
        self.http
            .download(&url, Accept::Json, 0, None)
            .map(Some)
            .map_err(self.http_error(what))
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The git tree cut down to the files the original manifest lists, each with its SHA-256.
/// Every listed file must be a blob of the tree with the listed size; a file of the tree the
/// manifest does not list is not installed. `deletes` needs nothing here: ota removes the
/// files it installed that a release no longer has, and never a file it did not install.
fn original_tree(
    tree: Vec<TreeEntry>,
    manifest: &OriginalManifest,
) -> Result<Vec<TreeEntry>, Refusal> {
    let mut listed: HashMap<&str, &crate::original::OriginalFile> = manifest
        .files
        .iter()
        .map(|f| (f.path.as_str(), f))
        .collect();
    let mut out = Vec::with_capacity(tree.len());
    let mut unlisted = Vec::new();
    for mut entry in tree {
        let is_blob = matches!(entry.mode & 0o170000, 0o100000 | 0o120000);
        if !is_blob {
            out.push(entry);
            continue;
        }
        let Some(file) = listed.remove(entry.path.as_str()) else {
            unlisted.push(entry.path);
            continue;
        };
        if entry.size != Some(file.size) {
            return Err(Refusal::BadManifest(format!(
                "it lists {} with {} bytes, but the release's tree has {} bytes",
                file.path,
                file.size,
                entry.size.map_or("no size".to_owned(), |s| s.to_string())
            )));
        }
        entry.sha256 = Some(file.sha256);
        out.push(entry);
    }
    if let Some(path) = listed.keys().min() {
        return Err(Refusal::BadManifest(format!(
            "it lists {path}, which is not a file of the release's tree"
        )));
    }
    if !unlisted.is_empty() {
        let shown: Vec<&str> = unlisted.iter().take(5).map(String::as_str).collect();
        tracing::warn!(
            "{} file(s) of the release are not in its manifest.json and are not installed: \
             {}{}",
            unlisted.len(),
            shown.join(", "),
            if unlisted.len() > shown.len() {
                ", …"
            } else {
                ""
            }
        );
    }
    for path in &manifest.deletes {
        tracing::info!(
            "manifest.json deletes {path}: ota removes it if it installed it (a file the \
             release no longer has); a file ota did not install is left alone"
        );
    }
    Ok(out)
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
    #[serde(default)]
    assets: Vec<AssetJson>,
}

/// One asset of a release.
#[derive(Deserialize)]
struct AssetJson {
    name: String,
    /// The asset API URL (`Accept: application/octet-stream` for the bytes).
    url: String,
    /// The public download URL.
    browser_download_url: Option<String>,
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
        assert!(release.assets.is_empty(), "this release has none");
        let text = include_str!("../../tests/fixtures/release-assets-list.json");
        let assets: Vec<AssetJson> = serde_json::from_str(text).unwrap();
        assert_eq!(assets[0].name, "test-upload.txt");
        assert!(assets[0].url.ends_with("/releases/assets/1000"));
        assert!(assets[0].browser_download_url.is_some());
    }

    fn entry(path: &str, mode: u32, size: Option<u64>) -> TreeEntry {
        TreeEntry {
            path: path.to_owned(),
            mode,
            id: ObjectId::from_hex(&"1".repeat(40)).unwrap(),
            size,
            sha256: None,
        }
    }

    fn original(json: &str) -> OriginalManifest {
        OriginalManifest::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn the_original_manifest_chooses_the_files_of_the_tree() {
        let sha = "ab".repeat(32);
        let tree = vec![
            entry("lib", 0o040000, None),
            entry("lib/a.py", 0o100644, Some(3)),
            entry("run", 0o100755, Some(5)),
            entry("notes.txt", 0o100644, Some(9)),
        ];
        let m = original(&format!(
            r#"{{"files":[{{"path":"lib/a.py","size":3,"sha256":"{sha}"}},
                          {{"path":"run","size":5,"sha256":"{sha}"}}]}}"#
        ));
        let out = original_tree(tree.clone(), &m).unwrap();
        let paths: Vec<&str> = out.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["lib", "lib/a.py", "run"], "notes.txt is not listed");
        assert!(
            out[1..]
                .iter()
                .all(|e| e.sha256.map(|s| s.to_hex()) == Some(sha.clone()))
        );

        let wrong_size = original(&format!(
            r#"{{"files":[{{"path":"run","size":6,"sha256":"{sha}"}}]}}"#
        ));
        let e = original_tree(tree.clone(), &wrong_size).unwrap_err();
        assert!(e.to_string().contains("run with 6 bytes"), "{e}");
        for absent in ["missing.py", "lib"] {
            let m = original(&format!(
                r#"{{"files":[{{"path":"{absent}","size":0,"sha256":"{sha}"}}]}}"#
            ));
            let e = original_tree(tree.clone(), &m).unwrap_err();
            assert!(
                e.to_string().contains("not a file of the release's tree"),
                "{e}"
            );
        }
    }

    #[test]
    fn paths_are_encoded_per_segment() {
        assert_eq!(encode_path("a b/c+d/ü"), "a%20b/c%2Bd/%C3%BC");
        assert_eq!(encode("tags/v1"), "tags%2Fv1");
    }
}
