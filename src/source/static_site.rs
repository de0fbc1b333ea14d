//! A static site written by `ota publish`: any host that serves files (nginx, S3, a CDN,
//! GitHub Pages), with no API and no server of ours.
//!
//! The channel's `manifest.json` names the release and its files; nothing in it is used
//! before its `.minisig` verifies with a trusted key ([`crate::signed`]). An `ota-release/2`
//! manifest names its file list as an object, with change lists from recent releases: the
//! list kept from the last install (`file-list.json`, [`Source::kept_list`]) plus the
//! change from it gives the new list, whose digest the manifest signs, so an update reads
//! metadata in proportion to the change; without a kept list that fits, the whole list is
//! read. A poll is one
//! conditional request (`If-None-Match`, or `If-Modified-Since` for hosts without `ETag`):
//! a 304 is trusted only while the manifest it stands for has not expired, so a host that
//! answers 304 forever cannot freeze a device. File contents are objects named by their
//! SHA-256, stored as they are (resumed with `Range`) or compressed with zstd (gzip on
//! older sites): decoded here, never inflated past the declared size, restarted from zero
//! after a drop. A site written by `ota publish` also has a pack of each release (one gzip
//! tar, for installs) and binary patches to changed files ([`Source::open_patch`]).

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use flate2::read::GzDecoder;

use super::{Resolved, Source, SourceError, Validator};
use crate::config::{Channel, NetworkConfig, StaticConfig};
use crate::http::{
    Accept, Answer, Download, ErrorKind, Http, HttpError, NotTheObject, Quota, Usage,
};
use crate::manifest::{Entry, ObjectId, Sha256, TreeEntry};
use crate::signed::{
    self, ChangeList, ChangeRef, Encoding, ObjectRef, Refusal, ReleaseFile, ReleaseManifest,
    TrustedKeys,
};
use crate::state::ReleaseId;

/// A static site's release source.
pub struct StaticSite {
    http: Http,
    /// Base URL, no trailing slash.
    url: String,
    keys: TrustedKeys,
    /// The manifest verified last, with its files by path (for `tree` and `open`).
    verified: Mutex<Option<Arc<Verified>>>,
    /// The manifest URL of the channel resolved last (to verify it again after a 304).
    asked: Mutex<Option<String>>,
    /// What `file-list.json` held ([`Source::kept_list`]): not trusted before its digest
    /// matches one the manifest gives.
    kept: Mutex<Option<Vec<u8>>>,
}

/// A manifest whose signature, format, freshness and channel were checked.
struct Verified {
    manifest: ReleaseManifest,
    by_path: HashMap<String, usize>,
    /// An `ota-release/2` manifest's file list, once read (its digest checked): the bytes
    /// `file-list.json` keeps. `None` until then, and for an `ota-release/1` manifest.
    list: Option<Vec<u8>>,
}

impl Verified {
    fn file(&self, path: &str) -> Option<&ReleaseFile> {
        self.by_path.get(path).map(|&i| &self.manifest.files[i])
    }
}

/// A manifest and its signature as the host served them.
struct Fetched {
    answer: Answer,
    verified: Verified,
}

impl StaticSite {
    /// A source for the site of `config`.
    pub fn new(config: &StaticConfig, net: &NetworkConfig) -> StaticSite {
        StaticSite {
            // No token: a static site is public (its manifests are signed instead).
            http: Http::new(net, None, Vec::new()),
            url: config.url.trim_end_matches('/').to_owned(),
            keys: config.trust.keys.clone(),
            verified: Mutex::new(None),
            asked: Mutex::new(None),
            kept: Mutex::new(None),
        }
    }

    fn http_error(what: &str) -> impl FnOnce(HttpError) -> SourceError + '_ {
        move |source| SourceError::Http {
            what: what.to_owned(),
            source,
        }
    }

    /// An HTTP error of `what`, reading the site file `object` that holds `holds`: a 404
    /// is a refusal (the site is incomplete), anything else the HTTP error.
    fn object_error<'a>(
        what: &'a str,
        holds: &'a str,
        object: &'a str,
    ) -> impl Fn(HttpError) -> SourceError + 'a {
        move |e| match e.kind {
            ErrorKind::NotFound => Self::refused(
                what,
                Refusal::MissingObject {
                    path: holds.to_owned(),
                    object: object.to_owned(),
                },
            ),
            _ => Self::http_error(what)(e),
        }
    }

    fn refused(what: &str, refusal: Refusal) -> SourceError {
        SourceError::Refused {
            what: what.to_owned(),
            refusal,
        }
    }

    /// Fetches `url` (conditionally on `cached`) and its signature, and verifies them: a bad
    /// signature is fetched once more, both files unconditionally, before it is refused (a
    /// publisher replaces the manifest and its signature one after the other).
    /// `Ok(None)` is a 304 to `cached`.
    fn fetch_manifest(
        &self,
        url: &str,
        channel: &str,
        cached: Option<&Validator>,
    ) -> Result<Option<Fetched>, SourceError> {
        let what = format!("reading the release manifest of {}", self.url);
        let mut condition = cached;
        let mut retried = false;
        loop {
            let etag = condition.map(|c| c.etag.as_str()).filter(|e| !e.is_empty());
            let since = condition.and_then(|c| c.last_modified.as_deref());
            let answer = self
                .http
                .get_if(
                    url,
                    Accept::Bytes,
                    signed::MAX_MANIFEST_BYTES,
                    etag,
                    since.filter(|_| etag.is_none()),
                )
                .map_err(Self::http_error(&what))?;
            let Some(answer) = answer else {
                if condition.is_some() {
                    return Ok(None);
                }
                return Err(SourceError::Protocol {
                    what,
                    message: "304 Not Modified to an unconditional request".into(),
                });
            };
            let signature_url = format!("{url}.minisig");
            let signature = match self.http.get(
                &signature_url,
                Accept::Bytes,
                signed::MAX_SIGNATURE_BYTES,
                None,
            ) {
                Ok(Some(signature)) => signature.body,
                Ok(None) => {
                    return Err(SourceError::Protocol {
                        what,
                        message: "304 Not Modified to an unconditional request".into(),
                    });
                }
                Err(e) if e.kind == ErrorKind::NotFound => {
                    return Err(Self::refused(&what, Refusal::MissingSignature));
                }
                Err(e) => return Err(Self::http_error(&what)(e)),
            };
            match signed::verify(&self.keys, &answer.body, &signature) {
                Ok(()) => {}
                Err(Refusal::BadSignature(why)) if !retried => {
                    tracing::info!(
                        "the signature of {url} does not verify ({why}); fetching both again \
                         in case the site was being published"
                    );
                    condition = None;
                    retried = true;
                    continue;
                }
                Err(refusal) => return Err(Self::refused(&what, refusal)),
            }
            let verified = check(&answer.body, channel).map_err(|r| Self::refused(&what, r))?;
            return Ok(Some(Fetched { answer, verified }));
        }
    }

    /// The verified manifest of `commit`: the one in memory, or the channel's manifest
    /// fetched and verified again (after a 304, nothing is in memory).
    fn manifest_of(&self, commit: &ObjectId) -> Result<Arc<Verified>, SourceError> {
        let what = format!("reading the release manifest of {}", self.url);
        if let Some(v) = self.verified().filter(|v| v.manifest.commit == *commit) {
            return Ok(v);
        }
        let asked = self
            .asked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(url) = asked else {
            return Err(SourceError::Protocol {
                what,
                message: format!("release {commit} was never resolved from this site"),
            });
        };
        let channel = channel_of(&self.url, &url);
        let fetched =
            self.fetch_manifest(&url, &channel, None)?
                .ok_or_else(|| SourceError::Protocol {
                    what: what.clone(),
                    message: "304 Not Modified to an unconditional request".into(),
                })?;
        let verified = Arc::new(fetched.verified);
        if verified.manifest.commit != *commit {
            return Err(SourceError::Protocol {
                what,
                message: format!(
                    "the site moved on to release {} ({}) while this device was updating to \
                     {commit}; run the update again",
                    verified.manifest.release, verified.manifest.commit
                ),
            });
        }
        *self.verified.lock().unwrap_or_else(PoisonError::into_inner) = Some(verified.clone());
        Ok(verified)
    }

    /// The verified manifest of `commit` with its files: an `ota-release/2` manifest's file
    /// list is read once ([`StaticSite::file_list`]).
    fn files_of(&self, commit: &ObjectId) -> Result<Arc<Verified>, SourceError> {
        let verified = self.manifest_of(commit)?;
        let Some(list) = verified.manifest.file_list else {
            return Ok(verified);
        };
        if verified.list.is_some() {
            return Ok(verified);
        }
        let what = format!("reading the file list of {}", self.url);
        let bytes = self.file_list(&verified.manifest, &list)?;
        let files: Vec<ReleaseFile> = serde_json::from_slice(&bytes).map_err(|e| {
            Self::refused(
                &what,
                Refusal::BadManifest(format!("its file list is unreadable: {e}")),
            )
        })?;
        let manifest = ReleaseManifest {
            files,
            ..verified.manifest.clone()
        };
        let mut with_files = index(manifest).map_err(|r| Self::refused(&what, r))?;
        with_files.list = Some(bytes);
        let with_files = Arc::new(with_files);
        *self.verified.lock().unwrap_or_else(PoisonError::into_inner) = Some(with_files.clone());
        Ok(with_files)
    }

    /// The bytes of the file list `list` of `manifest`, their digest checked: the kept list
    /// when it is that list, else the kept list with the manifest's change from it applied,
    /// else the whole list from the site.
    fn file_list(
        &self,
        manifest: &ReleaseManifest,
        list: &ObjectRef,
    ) -> Result<Vec<u8>, SourceError> {
        let kept = self
            .kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(kept) = kept {
            let held = Sha256::of(&kept);
            if held == list.sha256 {
                tracing::debug!("the file list kept from the last install is this release's");
                return Ok(kept);
            }
            if let Some(change) = manifest.changes.iter().find(|c| c.from == held) {
                match self.apply_change(change, kept, list) {
                    Ok(bytes) => return Ok(bytes),
                    Err(e) => tracing::info!("{e}; reading the whole file list"),
                }
            }
        }
        self.metadata(list, "the file list")
    }

    /// The kept list `kept` with the change list of `change` applied, checked to be `list`.
    fn apply_change(
        &self,
        change: &ChangeRef,
        kept: Vec<u8>,
        list: &ObjectRef,
    ) -> Result<Vec<u8>, SourceError> {
        let what = format!("reading the change list of {}", self.url);
        let bad = |message: String| Self::refused(&what, Refusal::BadManifest(message));
        let changes = self.metadata(&change.object, "a change list")?;
        let changes = ChangeList::parse(&changes).map_err(|r| Self::refused(&what, r))?;
        if changes.from != change.from || changes.to != list.sha256 {
            return Err(bad(
                "the change list is not the one between the kept file list and this \
                 release's"
                    .into(),
            ));
        }
        let old: Vec<ReleaseFile> = serde_json::from_slice(&kept)
            .map_err(|e| bad(format!("the kept file list is unreadable: {e}")))?;
        let bytes = changes.apply(old);
        if Sha256::of(&bytes) != list.sha256 {
            return Err(bad(
                "the kept file list with the change applied differs from this release's".into(),
            ));
        }
        tracing::debug!(
            "file list: {} changed and {} deleted paths applied to the kept one",
            changes.files.len(),
            changes.deleted.len()
        );
        Ok(bytes)
    }

    /// A metadata object (`what`: the file list, a change list), read whole, decoded and
    /// checked against the size and SHA-256 the signed manifest gives.
    fn metadata(&self, object: &ObjectRef, what: &str) -> Result<Vec<u8>, SourceError> {
        let path = signed::object_path(&object.sha256, object.encoding);
        let context = format!("reading {what} of {}", self.url);
        let refused = |refusal| Self::refused(&context, refusal);
        let stored = object.stored_size.unwrap_or(object.size);
        if object.size.max(stored) > signed::MAX_MANIFEST_BYTES {
            return Err(refused(Refusal::BadManifest(format!(
                "{what} is {} bytes, more than the {} bytes read",
                object.size.max(stored),
                signed::MAX_MANIFEST_BYTES
            ))));
        }
        let url = format!("{}/{path}", self.url);
        let answer = self
            .http
            .get(&url, Accept::Bytes, stored, None)
            .map_err(Self::object_error(&context, what, &path))?
            .ok_or_else(|| SourceError::Protocol {
                what: context.clone(),
                message: "304 Not Modified to an unconditional request".into(),
            })?;
        let bytes = match object.encoding {
            Encoding::Identity => answer.body,
            encoding => {
                let mut out = Vec::new();
                Inflate::new(encoding, &answer.body[..])
                    .and_then(|decoded| decoded.take(object.size + 1).read_to_end(&mut out))
                    .map_err(|e| {
                        refused(Refusal::BadManifest(format!(
                            "{what} does not decompress: {e}"
                        )))
                    })?;
                out
            }
        };
        if bytes.len() as u64 != object.size || Sha256::of(&bytes) != object.sha256 {
            return Err(refused(Refusal::BadManifest(format!(
                "{what} ({path}) is not what the signed manifest names: its size or SHA-256 \
                 differs"
            ))));
        }
        Ok(bytes)
    }

    fn verified(&self) -> Option<Arc<Verified>> {
        self.verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Parses a manifest whose signature verified, and refuses it when it is expired, for
/// another channel, or lists a path twice.
fn check(bytes: &[u8], channel: &str) -> Result<Verified, Refusal> {
    let manifest = ReleaseManifest::parse(bytes)?;
    manifest.check_fresh(jiff::Timestamp::now())?;
    if manifest.channel != channel {
        return Err(Refusal::BadManifest(format!(
            "it is the manifest of channel {:?}, and this device follows {channel:?}: the site \
             serves one channel's manifest in place of another's",
            manifest.channel
        )));
    }
    if manifest.rollout_percent.is_some_and(|p| p > 100) {
        return Err(Refusal::BadManifest(
            "its rollout_percent is over 100".into(),
        ));
    }
    let metadata = (manifest.file_list.iter()).chain(manifest.changes.iter().map(|c| &c.object));
    for object in metadata {
        if !object.encoding.is_identity() && object.stored_size.is_none() {
            return Err(Refusal::BadManifest(
                "its file list or a change list is stored compressed but its stored_size is \
                 missing"
                    .into(),
            ));
        }
    }
    index(manifest)
}

/// A manifest with its files indexed by path; refuses a path listed twice, or a compressed
/// object without its stored size.
fn index(manifest: ReleaseManifest) -> Result<Verified, Refusal> {
    let mut by_path = HashMap::with_capacity(manifest.files.len());
    for (i, file) in manifest.files.iter().enumerate() {
        if !file.encoding.is_identity() && file.stored_size.is_none() {
            return Err(Refusal::BadManifest(format!(
                "{:?} is stored compressed but its stored_size is missing",
                file.path
            )));
        }
        if by_path.insert(file.path.clone(), i).is_some() {
            return Err(Refusal::BadManifest(format!(
                "it lists {:?} twice",
                file.path
            )));
        }
    }
    Ok(Verified {
        manifest,
        by_path,
        list: None,
    })
}

/// The channel whose manifest `url` is, on the site at `base`.
fn channel_of(base: &str, url: &str) -> String {
    url.strip_prefix(base)
        .and_then(|p| p.strip_prefix("/channels/"))
        .and_then(|p| p.strip_suffix("/manifest.json"))
        .unwrap_or("stable")
        .to_owned()
}

fn release_of(manifest: &ReleaseManifest) -> ReleaseId {
    let mut release = ReleaseId::new(&manifest.channel, &manifest.release, manifest.commit);
    release.counter = Some(manifest.counter);
    release.rollout_percent = manifest.rollout_percent;
    release
}

/// Whether a cached answer may still stand for the release: before its manifest expires
/// (also the GitHub source's rule for a release with a signed manifest).
pub(super) fn still_fresh(cached: &Validator) -> bool {
    cached
        .expires
        .as_deref()
        .and_then(|e| e.parse::<jiff::Timestamp>().ok())
        .is_some_and(|expires| expires > jiff::Timestamp::now())
}

impl Source for StaticSite {
    fn resolve(
        &self,
        channel: &Channel,
        _known: Option<&ReleaseId>,
        cached: Option<&Validator>,
    ) -> Result<Resolved, SourceError> {
        if let Channel::Developer { .. } = channel {
            return Err(SourceError::Protocol {
                what: "choosing the release".into(),
                message: "a static site has no \"developer\" channel (it serves published \
                          releases only): use \"stable\" or a channel given to `ota publish`"
                    .into(),
            });
        }
        let name = channel.name();
        let url = format!("{}/{}", self.url, signed::manifest_path(name));
        *self.asked.lock().unwrap_or_else(PoisonError::into_inner) = Some(url.clone());
        // A 304 stands for the cached release only until its manifest expires; after that
        // the manifest is fetched again, and refused if the host has nothing newer.
        let cached = cached.filter(|c| c.url == url && still_fresh(c));
        let fetched = match (self.fetch_manifest(&url, name, cached)?, cached) {
            (Some(fetched), _) => fetched,
            (None, Some(cached)) => {
                return Ok(Resolved {
                    release: cached.release.clone(),
                    validator: Some(cached.clone()),
                });
            }
            (None, None) => {
                return Err(SourceError::Protocol {
                    what: format!("reading the release manifest of {}", self.url),
                    message: "304 Not Modified to an unconditional request".into(),
                });
            }
        };
        let release = release_of(&fetched.verified.manifest);
        let validator = match (&fetched.answer.etag, &fetched.answer.last_modified) {
            (None, None) => None,
            (etag, last_modified) => Some(Validator {
                url,
                etag: etag.clone().unwrap_or_default(),
                last_modified: last_modified.clone(),
                expires: Some(fetched.verified.manifest.expires.clone()),
                release: release.clone(),
            }),
        };
        *self.verified.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Arc::new(fetched.verified));
        Ok(Resolved { release, validator })
    }

    fn tree(&self, commit: &ObjectId) -> Result<Vec<TreeEntry>, SourceError> {
        Ok(self.files_of(commit)?.manifest.tree())
    }

    /// A site written by `ota publish` has a pack of each release (`packs/…`), named in
    /// the manifest resolved last.
    fn has_archive(&self) -> bool {
        self.verified()
            .is_some_and(|v| v.manifest.file_list.is_some() && v.manifest.pack_size.is_some())
    }

    /// The release's pack, read at most its signed size (each entry is verified by the
    /// fetcher against the file list, like any download).
    fn open_archive(&self, commit: &ObjectId) -> Result<Option<Download>, SourceError> {
        let verified = self.manifest_of(commit)?;
        let (Some(list), Some(size)) = (verified.manifest.file_list, verified.manifest.pack_size)
        else {
            return Ok(None);
        };
        let path = signed::pack_path(&list.sha256);
        let what = format!(
            "downloading the pack of release {}",
            verified.manifest.release
        );
        let url = format!("{}/{path}", self.url);
        let body = self
            .http
            .download(&url, Accept::Bytes, 0, None)
            .map_err(Self::object_error(&what, "the release's pack", &path))?;
        Ok(Some(Download {
            offset: 0,
            validator: None,
            reader: Box::new(Bounded {
                inner: body.reader,
                left: size,
                what: "the pack is larger than its signed size",
            }),
        }))
    }

    fn patch_sources(&self, commit: &ObjectId, entry: &Entry) -> Vec<Sha256> {
        let Some(verified) = self.verified().filter(|v| v.manifest.commit == *commit) else {
            return Vec::new();
        };
        let Some(file) = verified.file(entry.path.as_str()) else {
            return Vec::new();
        };
        (verified.manifest.patches.iter())
            .filter(|p| p.to == file.sha256)
            .map(|p| p.from)
            .collect()
    }

    fn open_patch(
        &self,
        commit: &ObjectId,
        entry: &Entry,
        from: &Sha256,
    ) -> Result<Download, SourceError> {
        let what = format!("downloading the patch of {}", entry.path);
        let verified = self.files_of(commit)?;
        let patch = (verified.file(entry.path.as_str()))
            .and_then(|file| {
                (verified.manifest.patches.iter()).find(|p| p.to == file.sha256 && p.from == *from)
            })
            .ok_or_else(|| SourceError::Protocol {
                what: what.clone(),
                message: "the release's manifest names no such patch".into(),
            })?;
        let url = format!(
            "{}/{}",
            self.url,
            signed::patch_path(&patch.from, &patch.to)
        );
        let body = self
            .http
            .download(&url, Accept::Bytes, 0, None)
            .map_err(Self::http_error(&what))?;
        let compressed = Bounded {
            inner: body.reader,
            left: patch.size,
            what: "the patch is larger than its signed size",
        };
        decoded(Encoding::Zstd, compressed, &what)
    }

    fn kept_list(&self, list: Vec<u8>) {
        *self.kept.lock().unwrap_or_else(PoisonError::into_inner) = Some(list);
    }

    fn list_to_keep(&self, commit: &ObjectId) -> Option<Vec<u8>> {
        let verified = self.verified().filter(|v| v.manifest.commit == *commit)?;
        verified.list.clone()
    }

    fn open(
        &self,
        commit: &ObjectId,
        entry: &Entry,
        offset: u64,
        validator: Option<&str>,
    ) -> Result<Download, SourceError> {
        let what = format!("downloading {}", entry.path);
        let verified = self.files_of(commit)?;
        let Some(file) = verified.file(entry.path.as_str()) else {
            return Err(SourceError::Protocol {
                what,
                message: "the release's manifest does not list it".into(),
            });
        };
        let object = signed::object_path(&file.sha256, file.encoding);
        let url = format!("{}/{object}", self.url);
        let missing = Self::object_error(&what, entry.path.as_str(), &object);
        match file.encoding {
            Encoding::Identity => self
                .http
                .download(&url, Accept::Bytes, offset, validator)
                .map_err(missing),
            encoding => {
                // A compressed stream cannot resume mid-way: always from the start.
                let body = self
                    .http
                    .download(&url, Accept::Bytes, 0, None)
                    .map_err(missing)?;
                let compressed = Bounded {
                    inner: body.reader,
                    // Checked present when the manifest was verified.
                    left: file.stored_size.unwrap_or(0),
                    what: "the compressed object is larger than its declared stored_size",
                };
                // The fetcher reads at most `size + 1` decoded bytes and calls one more an
                // integrity error, so a zip bomb is never inflated past the declared size.
                decoded(encoding, compressed, &what)
            }
        }
    }

    fn name(&self) -> String {
        self.url.clone()
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

/// A download of `compressed` decoded from `encoding` (it cannot resume mid-way: it starts
/// at 0, with no validator).
fn decoded<R: Read + Send + 'static>(
    encoding: Encoding,
    compressed: R,
    what: &str,
) -> Result<Download, SourceError> {
    let reader = Inflate::new(encoding, compressed).map_err(|e| SourceError::Protocol {
        what: what.to_owned(),
        message: format!("cannot decompress: {e}"),
    })?;
    Ok(Download {
        offset: 0,
        validator: None,
        reader: Box::new(reader),
    })
}

/// A compressed object's content. Once the decoder is at the end of its one frame, the
/// HTTP body is read to its end: the connection goes back to the pool for the next object
/// only then (measured: without it, a 1,000-file install opened 997 connections).
///
/// An error of the body (a dropped connection, a body past its signed size) comes out as
/// it is; an error of the decoder itself (bytes that do not decode, a frame that asks for a
/// larger window) is [`NotTheObject`]: asking again would bring the same bytes.
enum Inflate<R: Read> {
    Gzip(GzDecoder<Watched<R>>),
    Zstd(zstd::Decoder<'static, io::BufReader<Watched<R>>>),
}

impl<R: Read> Inflate<R> {
    /// The decoder of `encoding` over `body`; identity is not an encoding to decode.
    fn new(encoding: Encoding, body: R) -> io::Result<Inflate<R>> {
        let body = Watched {
            inner: body,
            failed: false,
        };
        match encoding {
            Encoding::Gzip => Ok(Inflate::Gzip(GzDecoder::new(body))),
            Encoding::Zstd => {
                let mut decoder = zstd::Decoder::new(body)?.single_frame();
                // A frame asking for a larger window is refused: a hostile host cannot
                // make a device allocate more than this to decode.
                decoder.window_log_max(signed::ZSTD_WINDOW_LOG)?;
                Ok(Inflate::Zstd(decoder))
            }
            Encoding::Identity => Err(io::Error::other("an identity object is not decoded")),
        }
    }

    fn body(&mut self) -> &mut Watched<R> {
        match self {
            Inflate::Gzip(decoder) => decoder.get_mut(),
            Inflate::Zstd(decoder) => decoder.get_mut().get_mut(),
        }
    }

    fn decode(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self {
            Inflate::Gzip(decoder) => decoder.read(buf)?,
            Inflate::Zstd(decoder) => decoder.read(buf)?,
        };
        if n == 0 && !buf.is_empty() {
            match self {
                Inflate::Gzip(decoder) => io::copy(decoder.get_mut(), &mut io::sink())?,
                Inflate::Zstd(decoder) => io::copy(decoder.get_mut(), &mut io::sink())?,
            };
        }
        Ok(n)
    }
}

impl<R: Read> Read for Inflate<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.decode(buf).map_err(|e| match self.body().failed {
            true => e,
            false => NotTheObject::error(format!("the object does not decode: {e}")),
        })
    }
}

/// A body that remembers whether its last read failed.
struct Watched<R> {
    inner: R,
    failed: bool,
}

impl<R: Read> Read for Watched<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf);
        self.failed = read.is_err();
        read
    }
}

/// A reader that fails once more than `left` bytes come through: a compressed object is
/// never read or inflated past what the signed manifest declares.
struct Bounded<R> {
    inner: R,
    left: u64,
    what: &'static str,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Ask for one byte more than allowed, to tell "ends here" from "goes on".
        let room = usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX);
        let len = buf.len().min(room);
        let n = self.inner.read(&mut buf[..len])?;
        if n as u64 > self.left {
            return Err(NotTheObject::error(self.what));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_is_read_back_from_the_manifest_url() {
        let base = "http://h/app";
        assert_eq!(channel_of(base, "http://h/app/manifest.json"), "stable");
        assert_eq!(
            channel_of(base, "http://h/app/channels/beta/manifest.json"),
            "beta"
        );
    }

    fn manifest(channel: &str, expires: &str, files: Vec<ReleaseFile>) -> Vec<u8> {
        serde_json::to_vec(&ReleaseManifest {
            format: signed::FORMAT.into(),
            channel: channel.into(),
            release: "v1".into(),
            commit: ObjectId::for_blob(b"commit"),
            counter: 1,
            created: "2026-01-01T00:00:00Z".into(),
            expires: expires.into(),
            rollout_percent: None,
            files,
            file_list: None,
            changes: Vec::new(),
            pack_size: None,
            patches: Vec::new(),
        })
        .unwrap()
    }

    fn file(path: &str, encoding: Encoding, stored_size: Option<u64>) -> ReleaseFile {
        ReleaseFile {
            path: path.into(),
            kind: crate::manifest::Kind::File,
            size: 3,
            blob: ObjectId::for_blob(b"abc"),
            sha256: crate::manifest::Sha256::of(b"abc"),
            encoding,
            stored_size,
        }
    }

    #[test]
    fn a_verified_manifest_is_checked_for_expiry_channel_and_consistency() {
        let later = "2999-01-01T00:00:00Z";
        let one = || vec![file("a", Encoding::Identity, None)];
        assert!(check(&manifest("stable", later, one()), "stable").is_ok());
        let kind = |bytes: Vec<u8>, channel: &str| check(&bytes, channel).err().map(|r| r.kind());
        assert_eq!(
            kind(manifest("stable", "2000-01-01T00:00:00Z", one()), "stable"),
            Some("expired")
        );
        assert_eq!(
            kind(manifest("beta", later, one()), "stable"),
            Some("bad_manifest")
        );
        let twice = vec![
            file("a", Encoding::Identity, None),
            file("a", Encoding::Identity, None),
        ];
        assert_eq!(
            kind(manifest("stable", later, twice), "stable"),
            Some("bad_manifest")
        );
        let no_stored_size = vec![file("a", Encoding::Gzip, None)];
        assert_eq!(
            kind(manifest("stable", later, no_stored_size), "stable"),
            Some("bad_manifest")
        );
        assert_eq!(kind(b"<html>".to_vec(), "stable"), Some("bad_manifest"));
    }

    #[test]
    fn a_bounded_reader_stops_past_its_limit() {
        let mut ok = Bounded {
            inner: &b"abc"[..],
            left: 3,
            what: "too long",
        };
        let mut out = Vec::new();
        assert_eq!(ok.read_to_end(&mut out).unwrap(), 3);
        let mut over = Bounded {
            inner: &b"abcd"[..],
            left: 3,
            what: "too long",
        };
        let error = over.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(error.to_string(), "too long");
        assert!(NotTheObject::is(&error));
    }

    /// A body that sends its bytes, then fails as a dropped connection does.
    struct Dropped(io::Cursor<Vec<u8>>);

    impl Read for Dropped {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.0.read(buf)? {
                0 => Err(io::ErrorKind::ConnectionReset.into()),
                n => Ok(n),
            }
        }
    }

    #[test]
    fn bytes_that_do_not_decode_are_not_the_object_and_a_dropped_body_is_not_blamed() {
        for encoding in [Encoding::Gzip, Encoding::Zstd] {
            let garbage = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xff, 0xff, 0xff];
            let mut bad = Inflate::new(encoding, &garbage[..]).unwrap();
            let error = bad.read_to_end(&mut Vec::new()).unwrap_err();
            assert!(NotTheObject::is(&error), "{encoding:?}: {error}");

            // The first half of a valid stream, then the connection drops.
            let mut whole = match encoding {
                Encoding::Gzip => {
                    let mut e = flate2::write::GzEncoder::new(Vec::new(), Default::default());
                    std::io::Write::write_all(&mut e, &[7u8; 100_000]).unwrap();
                    e.finish().unwrap()
                }
                _ => zstd::encode_all(&[7u8; 100_000][..], 3).unwrap(),
            };
            whole.truncate(whole.len() / 2);
            let mut cut = Inflate::new(encoding, Dropped(io::Cursor::new(whole))).unwrap();
            let error = cut.read_to_end(&mut Vec::new()).unwrap_err();
            assert!(!NotTheObject::is(&error), "{encoding:?}: {error}");
            assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
        }
    }
}
