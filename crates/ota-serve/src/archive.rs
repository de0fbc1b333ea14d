//! Source archives, as GitHub serves them: `GET /repos/{o}/{r}/tarball/{ref}` answers 302 to
//! `/codeload/{o}/{r}/legacy.tar.gz/{commit}` on the same server (GitHub: to
//! codeload.github.com), which answers a gzip tar whose entries sit under
//! `{owner}-{repo}-{7-hex commit}/`.
//!
//! The archive is made by `git archive`, like GitHub's, so `export-subst` and
//! `export-ignore` in the tree's `.gitattributes` change it exactly as they do there: a
//! client that verifies entries against the tree's blob ids meets the same differences.
//! It is sent as git writes it, like codeload's (chunked, no `Content-Length`: see `piped`),
//! at gzip level 3 rather than git's default 6 (`GZIP_LEVEL`).
//! The redirect target carries `?sig=…` and then needs no token (a client drops the
//! `Authorization` header across a redirect; GitHub adds a `token` query instead).

use std::process::Command;

use hyper::StatusCode;
use hyper::header;

use crate::git::Repo;
use crate::http::{Body, Fail, Reply, Req};
use crate::model::Links;
use crate::piped::Piped;
use crate::routes::App;

/// `GET /repos/{o}/{r}/tarball/{ref}`: 302 to the archive of the commit `reference` names.
pub(crate) fn redirect(app: &App, links: &Links, reference: &str) -> Result<Reply, Fail> {
    let repo = Repo::new(&app.repo);
    let commit = repo.resolve_commit(reference)?.ok_or(Fail::NotFound)?;
    let location = format!(
        "{}/codeload/{}/{}/legacy.tar.gz/{commit}?sig={}",
        links.base,
        links.owner,
        links.name,
        app.download_signature("codeload", &commit.to_string()),
    );
    Ok(Reply::redirect(&location))
}

/// `GET /codeload/{o}/{r}/legacy.tar.gz/{commit}`: the gzip tar of `commit` (a full SHA),
/// with a valid `sig` or the token.
pub(crate) fn serve(app: &App, req: &Req, links: &Links, commit: &str) -> Result<Reply, Fail> {
    let signed = req
        .query_param("sig")
        .is_some_and(|sig| sig == app.download_signature("codeload", commit));
    if !signed {
        app.check_token(req)?;
    }
    let repo = Repo::new(&app.repo);
    let id = repo.parse_id(commit).ok_or(Fail::NotFound)?;
    if commit.len() != 40 || repo.peel_to_commit(id)? != Some(id) {
        return Err(Fail::NotFound);
    }
    let hex = id.to_string();
    let top = format!("{}-{}-{}", links.owner, links.name, &hex[..7]);
    let body = git_archive(&app.repo_path, &top, &hex)?;
    let filename = format!("attachment; filename={top}.tar.gz");
    Ok(Reply::new(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-gzip")
        .header(header::CONTENT_DISPOSITION, &filename)
        .body(body)
        .etag(hex))
}

/// The gzip level of archives. git's default (6) made the client wait on the compression: on
/// the 61 MB tree of the large benchmark, 1.6 s of CPU for 20.9 MB, against 0.8 s for
/// 22.2 MB at 3 (about rsync's 22.1 MB for the same files) and 0.65 s for 24.1 MB at 1 (over
/// 1.1× rsync's bytes). See BENCHMARKS.md, "Installs as one archive".
const GZIP_LEVEL: &str = "-3";

/// Starts `git archive` and answers its output as git writes it, like codeload: the client
/// reads the first entries while git still compresses the rest. A git that fails before its
/// first byte is a 500; after it, the body breaks off (see `piped`).
fn git_archive(repo: &std::path::Path, top: &str, commit: &str) -> Result<Body, Fail> {
    let what = format!("archiving {commit} of {}", repo.display());
    let mut command = Command::new("git");
    command
        .arg("-C")
        .arg(repo)
        .args(["archive", "--format=tar.gz"])
        .arg(GZIP_LEVEL)
        .arg(format!("--prefix={top}/"))
        .arg(commit);
    let piped = Piped::spawn(command, what.clone())
        .map_err(crate::Error::io(format!("{what}: running git")))?;
    let piped = piped
        .first()
        .map_err(crate::Error::io("git archive failed"))?;
    Ok(Body::Stream(piped))
}
