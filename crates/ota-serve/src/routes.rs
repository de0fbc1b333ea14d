//! Request dispatch: which handler answers a path, and the checks every request passes first
//! (method, `User-Agent`, owner/repo name, token), plus the rate-limit headers of `/repos`.
//!
//! Handlers (`api`, `raw`) run on a blocking thread with the shared [`App`] state. Whatever
//! they return goes through `http::finish`, so every reply gets the same conditional, range
//! and HEAD treatment.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hyper::header;
use hyper::{Method, StatusCode};

use crate::assets::AssetStore;
use crate::git::{self, ObjectId};
use crate::http::{self, Fail, Reply, Req};
use crate::model::Links;
use crate::ratelimit::{self, RateLimiter};
use crate::stats::{Recorder, RequestClass};
use crate::{Error, Options, api, archive, fault, raw};

/// GitHub's answer to a request without `User-Agent`.
const NO_USER_AGENT: &str = "Request forbidden by administrative rules. Please make sure your request has a User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). Check https://developer.github.com for other possible causes.\n";

/// Most raw-file ETags remembered; the cache is cleared when full.
const MAX_CACHED_ETAGS: usize = 100_000;

/// State shared by all requests.
pub(crate) struct App {
    pub repo: gix::ThreadSafeRepository,
    /// Where the repository is on disk (`git archive` runs there).
    pub repo_path: std::path::PathBuf,
    pub owner: Option<String>,
    pub name: Option<String>,
    pub token: Option<String>,
    pub max_tree_entries: usize,
    pub redirect_assets: bool,
    pub assets: Option<AssetStore>,
    pub stats: Arc<Recorder>,
    pub rate: RateLimiter,
    pub faults: fault::Rules,
    /// Signs redirect targets of assets, so they work without the token (like GitHub's
    /// pre-signed storage URLs).
    secret: String,
    raw_etags: Mutex<HashMap<ObjectId, String>>,
}

impl App {
    /// Opens the repository and the assets directory; fails on either.
    pub(crate) fn new(options: &Options) -> Result<App, Error> {
        let repo = git::open(&options.repo)?;
        // Make sure a thread-local handle can actually read it (HEAD, refs), so a broken
        // repository fails at start-up rather than at the first request.
        git::Repo::new(&repo).default_branch()?;
        let assets = options.assets.as_deref().map(AssetStore::new).transpose()?;
        Ok(App {
            repo,
            repo_path: options.repo.clone(),
            owner: options.owner.clone(),
            name: options.name.clone(),
            token: options.token.clone(),
            max_tree_entries: options.max_tree_entries.unwrap_or(GITHUB_TREE_LIMIT),
            redirect_assets: options.redirect_assets,
            assets,
            stats: Arc::new(Recorder::default()),
            rate: RateLimiter::new(ratelimit::DEFAULT_LIMIT),
            faults: fault::Rules::new(options.faults.clone()),
            secret: random_secret()?,
            raw_etags: Mutex::new(HashMap::new()),
        })
    }

    /// The `sig` query value that makes a download URL of `tag`/`name` work without a token.
    pub(crate) fn download_signature(&self, tag: &str, name: &str) -> String {
        http::sha256_hex(format!("{}\0{tag}\0{name}", self.secret).as_bytes())[..32].to_string()
    }

    /// The ETag of a raw file: SHA-256 of its content, cached by blob id.
    pub(crate) fn raw_etag(&self, id: ObjectId, data: &[u8]) -> String {
        if let Some(tag) = self
            .raw_etags
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return tag.clone();
        }
        let tag = http::sha256_hex(data);
        let mut cache = self.raw_etags.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED_ETAGS {
            cache.clear();
        }
        cache.insert(id, tag.clone());
        tag
    }

    /// Passes a request that carries the configured token (every request when there is
    /// none); otherwise GitHub's 401: "Requires authentication" without an `Authorization`
    /// header, "Bad credentials" with a wrong one.
    pub(crate) fn check_token(&self, req: &Req) -> Result<(), Fail> {
        if self.authorized(req) {
            return Ok(());
        }
        let message = if req.headers.contains_key(header::AUTHORIZATION) {
            "Bad credentials"
        } else {
            "Requires authentication"
        };
        Err(Fail::Status(StatusCode::UNAUTHORIZED, message.to_string()))
    }

    /// Whether the request carries the configured token (always true without one).
    pub(crate) fn authorized(&self, req: &Req) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        req.header(header::AUTHORIZATION).is_some_and(|value| {
            let (scheme, given) = value.trim().split_once(' ').unwrap_or(("", ""));
            (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
                && constant_time_eq(given.trim().as_bytes(), token.as_bytes())
        })
    }
}

/// GitHub's limit on entries in one recursive tree response.
pub(crate) const GITHUB_TREE_LIMIT: usize = 100_000;

/// Which handler a path belongs to; segments are still percent-encoded.
enum Route<'a> {
    /// `/repos/{owner}/{repo}/…`
    Api {
        owner: &'a str,
        repo: &'a str,
        rest: &'a [&'a str],
    },
    /// `/raw/{owner}/{repo}/{ref…}/{path…}`
    Raw {
        owner: &'a str,
        repo: &'a str,
        rest: &'a [&'a str],
    },
    /// `/codeload/{owner}/{repo}/legacy.tar.gz/{commit}`: a source archive (see `archive`).
    Codeload {
        owner: &'a str,
        repo: &'a str,
        commit: &'a str,
    },
    /// `/{owner}/{repo}/releases/download/{tag}/{name}`
    Download {
        owner: &'a str,
        repo: &'a str,
        tag: &'a str,
        name: &'a str,
    },
    Unknown,
}

impl<'a> Route<'a> {
    fn parse(segments: &'a [&'a str]) -> Route<'a> {
        match segments {
            ["repos", owner, repo, rest @ ..] => Route::Api { owner, repo, rest },
            ["raw", owner, repo, rest @ ..] => Route::Raw { owner, repo, rest },
            ["codeload", owner, repo, "legacy.tar.gz", commit] => Route::Codeload {
                owner,
                repo,
                commit,
            },
            [owner, repo, "releases", "download", tag, name] => Route::Download {
                owner,
                repo,
                tag,
                name,
            },
            _ => Route::Unknown,
        }
    }

    fn class(&self, req: &Req) -> RequestClass {
        match self {
            Route::Api { rest, .. } => {
                if matches!(rest, ["releases", "assets", _]) && api::wants_octet_stream(req) {
                    RequestClass::Asset
                } else {
                    RequestClass::Api
                }
            }
            Route::Raw { .. } => RequestClass::Raw,
            Route::Download { .. } | Route::Codeload { .. } => RequestClass::Asset,
            Route::Unknown => RequestClass::Other,
        }
    }
}

/// Answers one request (on a blocking thread).
pub(crate) fn handle(app: &App, req: &Req) -> Reply {
    let path = req.path.strip_prefix('/').unwrap_or(&req.path);
    let segments: Vec<&str> = path.split('/').collect();
    let route = Route::parse(&segments);
    let mut reply = respond(app, req, &route).unwrap_or_else(Fail::into_reply);
    reply.class = route.class(req);
    let mut reply = http::finish(req, reply);
    if let Route::Api { .. } = route {
        // Like GitHub: a 304 to an authenticated request is free.
        let authenticated = req.headers.contains_key(header::AUTHORIZATION) && app.authorized(req);
        let free = reply.status == StatusCode::NOT_MODIFIED && authenticated;
        app.rate.charge(!free).apply(&mut reply.headers);
    }
    reply
}

fn respond(app: &App, req: &Req, route: &Route<'_>) -> Result<Reply, Fail> {
    if req.method != Method::GET && req.method != Method::HEAD {
        return Ok(
            Reply::error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
                .header(header::ALLOW, "GET, HEAD"),
        );
    }
    if !req.headers.contains_key(header::USER_AGENT) {
        return Ok(Reply::new(StatusCode::FORBIDDEN)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(http::Body::Bytes(NO_USER_AGENT.into())));
    }
    match *route {
        Route::Unknown => Err(Fail::NotFound),
        Route::Api { owner, repo, rest } => {
            let links = repo_links(app, req, owner, repo)?;
            app.check_token(req)?;
            let rest = decode_all(rest)?;
            api::handle(app, req, &links, &rest)
        }
        Route::Raw { owner, repo, rest } => {
            repo_links(app, req, owner, repo)?;
            app.check_token(req)?;
            raw::raw(app, rest)
        }
        Route::Codeload {
            owner,
            repo,
            commit,
        } => {
            let links = repo_links(app, req, owner, repo)?;
            archive::serve(app, req, &links, commit)
        }
        Route::Download {
            owner,
            repo,
            tag,
            name,
        } => {
            repo_links(app, req, owner, repo)?;
            let tag = http::percent_decode(tag).ok_or(Fail::NotFound)?;
            let name = http::percent_decode(name).ok_or(Fail::NotFound)?;
            raw::download(app, req, &tag, &name)
        }
    }
}

/// Checks `owner`/`repo` against the configured names (GitHub compares them case-insensitively)
/// and returns the repository's URL builder.
fn repo_links(app: &App, req: &Req, owner: &str, repo: &str) -> Result<Links, Fail> {
    let owner = http::percent_decode(owner).ok_or(Fail::NotFound)?;
    let repo = http::percent_decode(repo).ok_or(Fail::NotFound)?;
    if owner.is_empty() || repo.is_empty() {
        return Err(Fail::NotFound);
    }
    let check = |given: &str, expected: &Option<String>| {
        expected
            .as_deref()
            .is_none_or(|expected| given.eq_ignore_ascii_case(expected))
    };
    if !check(&owner, &app.owner) || !check(&repo, &app.name) {
        return Err(Fail::NotFound);
    }
    Ok(Links {
        base: req.base_url(),
        owner: app.owner.clone().unwrap_or(owner),
        name: app.name.clone().unwrap_or(repo),
    })
}

fn decode_all(segments: &[&str]) -> Result<Vec<String>, Fail> {
    segments
        .iter()
        .map(|s| http::percent_decode(s).ok_or(Fail::NotFound))
        .collect()
}

/// The same server under another host name: `127.0.0.1` ↔ `localhost` (and `[::1]` →
/// `localhost`), port kept. Other hosts have no known alias and are returned unchanged.
pub(crate) fn other_host(host: &str) -> String {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && !port.contains(']') => (name, Some(port)),
        _ => (host, None),
    };
    let other = match name {
        "127.0.0.1" | "[::1]" => "localhost",
        "localhost" => "127.0.0.1",
        _ => name,
    };
    match port {
        Some(port) => format!("{other}:{port}"),
        None => other.to_string(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 128 random bits per server start, from the operating system.
fn random_secret() -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|err| {
        Error::Runtime(std::io::Error::other(format!(
            "no random bytes from the operating system for signing download URLs: {err}"
        )))
    })?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_aliases() {
        assert_eq!(other_host("127.0.0.1:8080"), "localhost:8080");
        assert_eq!(other_host("localhost:8080"), "127.0.0.1:8080");
        assert_eq!(other_host("[::1]:8080"), "localhost:8080");
        assert_eq!(other_host("localhost"), "127.0.0.1");
        assert_eq!(other_host("mirror.lan:80"), "mirror.lan:80");
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
