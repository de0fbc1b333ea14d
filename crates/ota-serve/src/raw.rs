//! File bytes: raw hosting (`/raw/{owner}/{repo}/{ref}/{path}`, like
//! raw.githubusercontent.com) and release asset downloads.
//!
//! Both support `Range` and ETags (applied in `http::finish`); raw files are also gzipped when
//! the client allows it. Paths come from the network, so every segment is decoded and checked
//! (`..`, `.`, empty and embedded `/` are refused) before it is looked up, and lookups only
//! ever walk git trees: there is no file system path to escape from.

use hyper::header;
use hyper::{Method, StatusCode};

use crate::assets::AssetFile;
use crate::git::{PathObject, Repo};
use crate::http::{self, Body, Fail, Reply, Req};
use crate::releases;
use crate::routes::App;

/// The most `/`-separated components a ref in a raw URL may have.
const MAX_REF_DEPTH: usize = 16;

/// `rest` is the still-encoded path after `/raw/{owner}/{repo}/`: a ref (which may itself
/// contain `/`), then the file path. Like GitHub, the longest prefix that names a ref wins.
pub(crate) fn raw(app: &App, rest: &[&str]) -> Result<Reply, Fail> {
    let mut segments = Vec::with_capacity(rest.len());
    for segment in rest {
        let decoded = http::percent_decode(segment).ok_or(Fail::NotFound)?;
        if decoded.is_empty() || decoded == "." || decoded == ".." || decoded.contains('\0') {
            return Err(Fail::NotFound);
        }
        segments.push(decoded);
    }
    if segments.len() < 2 {
        return Err(Fail::NotFound);
    }
    let repo = Repo::new(&app.repo);
    // Longest ref first; a ref name deeper than MAX_REF_DEPTH components is not tried, which
    // bounds the lookups a single request can cause.
    for split in (1..segments.len().min(MAX_REF_DEPTH + 1)).rev() {
        let Some(commit) = repo.resolve_commit(&segments[..split].join("/"))? else {
            continue;
        };
        let path = &segments[split..];
        // `%2F` inside a file path segment would smuggle a separator past the checks above.
        if path.iter().any(|p| p.contains('/')) {
            return Err(Fail::NotFound);
        }
        return match repo.lookup_path(commit, path)? {
            Some(PathObject::Blob(id)) => {
                let data = repo.blob(id)?.ok_or(Fail::NotFound)?;
                let etag = app.raw_etag(id, &data);
                let content_type = if std::str::from_utf8(&data).is_ok() {
                    "text/plain; charset=utf-8"
                } else {
                    "application/octet-stream"
                };
                Ok(Reply::new(StatusCode::OK)
                    .header(header::CONTENT_TYPE, content_type)
                    .header(header::CACHE_CONTROL, "max-age=300")
                    .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
                    .body(Body::Bytes(data.into()))
                    .etag(etag)
                    .ranges()
                    .gzip())
            }
            // Directories and submodules have no raw bytes.
            _ => Err(Fail::NotFound),
        };
    }
    Err(Fail::NotFound)
}

/// `GET /{owner}/{repo}/releases/download/{tag}/{name}`, where `browser_download_url` points
/// and where asset redirects go.
///
/// A redirect target carries `?sig=…` and then needs no token, like GitHub's pre-signed
/// storage URLs; like that storage it refuses a request that *also* carries `Authorization`
/// (400), which catches clients that forward credentials across a redirect. Without `sig` the
/// usual token check applies.
pub(crate) fn download(app: &App, req: &Req, tag: &str, name: &str) -> Result<Reply, Fail> {
    match req.query_param("sig") {
        Some(sig) => {
            if sig != app.download_signature(tag, name) {
                return Err(Fail::Status(
                    StatusCode::FORBIDDEN,
                    "Request signature does not match".to_string(),
                ));
            }
            if req.headers.contains_key(header::AUTHORIZATION) {
                return Err(Fail::Status(
                    StatusCode::BAD_REQUEST,
                    "Only one auth mechanism allowed; only the signature query parameter or the \
                     Authorization header should be specified"
                        .to_string(),
                ));
            }
        }
        None => app.check_token(req)?,
    }
    let store = app.assets.as_ref().ok_or(Fail::NotFound)?;
    let repo = Repo::new(&app.repo);
    if releases::by_tag(&repo, tag)?.is_none() {
        return Err(Fail::NotFound);
    }
    let asset = store.find(tag, name)?.ok_or(Fail::NotFound)?;
    serve_asset(app, req, &asset)
}

/// The bytes of `asset`, streamed from its file.
pub(crate) fn serve_asset(app: &App, req: &Req, asset: &AssetFile) -> Result<Reply, Fail> {
    let open = || format!("opening {}", asset.path.display());
    let file = std::fs::File::open(&asset.path).map_err(crate::Error::io(open()))?;
    let len = file.metadata().map_err(crate::Error::io(open()))?.len();
    if req.method == Method::GET
        && let Some(store) = &app.assets
    {
        store.count_download(asset.id);
    }
    let disposition = format!("attachment; filename={}", http::encode_segment(&asset.name));
    Ok(Reply::new(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_DISPOSITION, &disposition)
        .body(Body::File { file, len })
        .etag(asset.sha256.clone())
        .ranges())
}
