//! A GitHub-compatible HTTP server over a local git repository.
//!
//! `ota` updates devices from GitHub releases and branches. This crate answers the same
//! requests from a git repository on disk, so that `ota` can be tested without the network,
//! demonstrated with `ota-serve demo`, and fed from a LAN mirror in air-gapped fleets. It shares no
//! code with the client, so it catches client bugs rather than mirroring them.
//!
//! What it serves (GitHub's JSON shapes, URLs built from the request's `Host`):
//! - the REST API under `/repos/{owner}/{repo}/`: releases (one per version tag), release
//!   assets (files in `DIR/{tag}/{name}`), refs, tags, commits (with the `sha` media type),
//!   trees (recursive, truncatable) and blobs;
//! - raw files under `/raw/{owner}/{repo}/{ref}/{path}` with `Range` and gzip;
//! - source archives: `/repos/{owner}/{repo}/tarball/{ref}` redirects to a gzip tar made by
//!   `git archive` (`/codeload/…`), as GitHub's redirect to codeload;
//! - ETags and `If-None-Match` on everything, rate-limit headers on `/repos`, a token check
//!   that answers GitHub's 401 without the token, and request statistics for benchmarks
//!   (also as JSON at `/_ota/stats`);
//! - [`fault`] injection on purpose, on the real socket: latency, a shared bandwidth cap,
//!   resets and truncations after N bytes, stalls, flipped bytes, 5xx and rate-limit answers,
//!   a wrong `Content-Length`, redirects and replaced bodies, per path pattern.
//!
//! [`fixture::RepoWriter`] writes repositories (commits, tags, HEAD) without the `git` CLI,
//! for the demo and benchmarks.
//!
//! # Modules
//! - `server`: runtime, accept loop, connections, the delivery seam;
//! - [`fault`]: fault rules, their syntax (`spec`), matching and counters (`rules`);
//! - `answers`: the GitHub-shaped replies a fault puts in place of the real one;
//! - `wire`: response bodies and the socket under hyper, where faults touch bytes;
//! - `routes`: dispatch and the checks every request passes (method, User-Agent, names, token);
//! - `api`, `raw`, `archive`: the endpoints; `model`: GitHub's JSON shapes;
//! - `piped`: a child process's output as a body, sent while it is written (archives);
//! - `http`: conditional requests, ranges, gzip, HEAD — applied to every reply in one place;
//! - `git`: reading refs and objects; `releases`, `version`, `assets`: releases from tags;
//! - `stats`: counters and socket byte counting; `ratelimit`: the `x-ratelimit-*` budget;
//! - [`fixture`]: writing repositories.
//!
//! # Example
//! ```
//! use std::collections::BTreeMap;
//! use ota_serve::fixture::{FileSpec, RepoWriter};
//! use ota_serve::{Options, Server};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let mut writer = RepoWriter::init(dir.path(), true)?;
//! let mut files = BTreeMap::new();
//! files.insert("app/run.sh".to_string(), FileSpec::File { bytes: b"#!/bin/sh\n".to_vec(), exec: true });
//! let commit = writer.commit("main", &files, "first", 1_700_000_000)?;
//! writer.tag_annotated("v1.0.0", &commit, "First release", 1_700_000_000)?;
//!
//! let server = Server::start(Options::new(dir.path()))?;
//! // A client would now GET {api_url}/repos/any/name/releases/latest, then
//! // {raw_url}/any/name/v1.0.0/app/run.sh.
//! assert!(server.api_url().starts_with("http://127.0.0.1:"));
//! assert_eq!(server.stats().requests, 0);
//! server.shutdown();
//! # Ok(()) }
//! ```

mod answers;
mod api;
mod archive;
mod assets;
mod error;
pub mod fault;
pub mod fixture;
mod git;
mod http;
mod model;
mod piped;
mod ratelimit;
mod raw;
mod releases;
mod routes;
mod server;
mod stats;
mod version;
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use error::Error;
pub use server::{Server, run};
pub use stats::{MAX_LOG_RECORDS, RequestClass, RequestRecord, Stats};

/// How to run a server.
#[derive(Clone)]
pub struct Options {
    /// A git repository, bare or with a work tree.
    pub repo: PathBuf,
    /// Where to listen, e.g. `127.0.0.1:0` for an ephemeral port.
    pub addr: SocketAddr,
    /// Release assets: `DIR/{tag}/{name}`. `None`: releases have no assets.
    pub assets: Option<PathBuf>,
    /// If set, `/repos/{owner}/…`, `/raw/{owner}/…` and downloads must use this owner
    /// (compared case-insensitively, like GitHub), else 404. If not, any owner is accepted.
    pub owner: Option<String>,
    /// The same for the repository name.
    pub name: Option<String>,
    /// If set, every API, raw and download request must carry `Authorization: Bearer <token>`
    /// or `token <token>`, else it gets GitHub's 401 JSON error ("Requires authentication",
    /// or "Bad credentials" for a wrong token), and the repository reports `private: true`.
    pub token: Option<String>,
    /// If set, a recursive tree with more entries answers `truncated: true` with a partial
    /// list. If not, GitHub's own limit of 100,000 entries applies.
    pub max_tree_entries: Option<usize>,
    /// If set, `GET releases/assets/{id}` with `Accept: application/octet-stream` answers 302
    /// to the download URL on another host name (`localhost` ↔ `127.0.0.1`) instead of 200,
    /// like GitHub's redirect to its storage host.
    pub redirect_assets: bool,
    /// Fault-injection rules (see [`fault`]); they can be replaced while running with
    /// [`Server::set_faults`].
    pub faults: Vec<fault::Fault>,
}

impl std::fmt::Debug for Options {
    /// Like a derived `Debug`, but the token is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("repo", &self.repo)
            .field("addr", &self.addr)
            .field("assets", &self.assets)
            .field("owner", &self.owner)
            .field("name", &self.name)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("max_tree_entries", &self.max_tree_entries)
            .field("redirect_assets", &self.redirect_assets)
            .field("faults", &self.faults)
            .finish()
    }
}

impl Options {
    /// Options for serving `repo` on an ephemeral loopback port, everything else off.
    pub fn new(repo: impl Into<PathBuf>) -> Options {
        Options {
            repo: repo.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            assets: None,
            owner: None,
            name: None,
            token: None,
            max_tree_entries: None,
            redirect_assets: false,
            faults: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let mut options = Options::new("/repo");
        options.token = Some("hunter2".to_string());
        let shown = format!("{options:?}");
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("redacted"));
    }
}
