//! The REST API under `/repos/{owner}/{repo}/`: repository, releases, assets, refs, tags,
//! commits, trees and blobs, in GitHub's shapes (see `model`).
//!
//! Each handler reads what it needs through `git`/`releases`/`assets` and returns a [`Reply`];
//! conditional requests and HEAD are applied afterwards by `http::finish`.

use hyper::StatusCode;
use hyper::header::{self, HeaderValue};

use crate::git::Repo;
use crate::http::{Fail, Reply, Req};
use crate::model::{self, Links};
use crate::releases::{self, Release};
use crate::routes::{App, other_host};
use crate::{archive, assets::AssetFile, raw};

const SHA_MEDIA_TYPES: &[&str] = &[
    "application/vnd.github.sha",
    "application/vnd.github.v3.sha",
];
const RAW_MEDIA_TYPES: &[&str] = &[
    "application/vnd.github.raw",
    "application/vnd.github.raw+json",
    "application/vnd.github.v3.raw",
];

/// Whether the client asks for the bytes of an asset rather than its JSON.
pub(crate) fn wants_octet_stream(req: &Req) -> bool {
    req.accepts_any(&["application/octet-stream"])
}

/// Dispatches `rest`, the decoded path segments after `/repos/{owner}/{repo}`.
pub(crate) fn handle(app: &App, req: &Req, links: &Links, rest: &[String]) -> Result<Reply, Fail> {
    let repo = Repo::new(&app.repo);
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let reply = match rest.as_slice() {
        [] => repository(app, &repo, links)?,
        ["releases"] => list_releases(app, &repo, req, links)?,
        ["releases", "latest"] => one_release(app, links, releases::latest(&repo)?)?,
        ["releases", "tags", tag @ ..] if !tag.is_empty() => {
            one_release(app, links, releases::by_tag(&repo, &tag.join("/"))?)?
        }
        ["releases", "assets", id] => asset(app, &repo, req, links, id)?,
        ["releases", id] => one_release(app, links, release_by_id(&repo, id)?)?,
        ["releases", id, "assets"] => {
            let release = release_by_id(&repo, id)?.ok_or(Fail::NotFound)?;
            Reply::json(&asset_list(app, links, &release)?)
        }
        ["git", "ref", name @ ..] if !name.is_empty() => {
            let found = repo.find_ref(&format!("refs/{}", name.join("/")))?;
            Reply::json(&model::reference(links, &found.ok_or(Fail::NotFound)?))
        }
        ["git", "refs", name @ ..] => legacy_refs(&repo, links, &name.join("/"))?,
        ["git", "matching-refs", prefix @ ..] => {
            let found = repo.refs_with_prefix(&format!("refs/{}", prefix.join("/")))?;
            let list: Vec<_> = found.iter().map(|r| model::reference(links, r)).collect();
            Reply::json(&list)
        }
        ["git", "tags", sha] => {
            let id = repo.parse_id(sha).ok_or(Fail::NotFound)?;
            Reply::json(&model::tag(links, &repo.tag(id)?.ok_or(Fail::NotFound)?))
        }
        ["git", "commits", sha] => {
            let id = repo.parse_id(sha).ok_or(Fail::NotFound)?;
            Reply::json(&model::git_commit(
                links,
                &repo.commit(id)?.ok_or(Fail::NotFound)?,
            ))
        }
        ["git", "trees", name @ ..] if !name.is_empty() => {
            tree(app, &repo, req, links, &name.join("/"))?
        }
        ["git", "blobs", sha] => blob(&repo, req, links, sha)?,
        ["commits", name @ ..] if !name.is_empty() => commit(&repo, req, links, &name.join("/"))?,
        ["tarball", name @ ..] if !name.is_empty() => {
            return archive::redirect(app, links, &name.join("/"));
        }
        _ => return Err(Fail::NotFound),
    };
    Ok(with_api_cache_headers(reply))
}

fn with_api_cache_headers(mut reply: Reply) -> Reply {
    if reply.status == StatusCode::OK && !reply.headers.contains_key(header::CACHE_CONTROL) {
        reply.headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, max-age=60, s-maxage=60"),
        );
        reply.headers.insert(
            header::VARY,
            HeaderValue::from_static("Accept, Authorization, Accept-Encoding"),
        );
    }
    reply
}

fn repository(app: &App, repo: &Repo, links: &Links) -> Result<Reply, Fail> {
    let default_branch = repo.default_branch()?.unwrap_or_else(|| "main".to_string());
    Ok(Reply::json(&model::repository(
        links,
        default_branch,
        app.token.is_some(),
    )))
}

fn asset_list(app: &App, links: &Links, release: &Release) -> Result<Vec<model::AssetJson>, Fail> {
    let Some(store) = &app.assets else {
        return Ok(Vec::new());
    };
    Ok(store
        .list(&release.tag)?
        .iter()
        .map(|a| model::asset(links, a, store.download_count(a.id)))
        .collect())
}

fn one_release(app: &App, links: &Links, release: Option<Release>) -> Result<Reply, Fail> {
    let release = release.ok_or(Fail::NotFound)?;
    let assets = asset_list(app, links, &release)?;
    Ok(Reply::json(&model::release(links, &release, assets)))
}

fn release_by_id(repo: &Repo, id: &str) -> Result<Option<Release>, Fail> {
    let Ok(id) = id.parse::<u64>() else {
        return Ok(None);
    };
    Ok(releases::all(repo)?.into_iter().find(|r| r.id == id))
}

/// `GET releases` with GitHub's pagination: `per_page` (default 30, at most 100), `page`
/// (from 1), and a `Link` header with `prev`/`next`/`last`/`first`.
fn list_releases(app: &App, repo: &Repo, req: &Req, links: &Links) -> Result<Reply, Fail> {
    let number = |key| {
        req.query_param(key)
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
    };
    let per_page = number("per_page").unwrap_or(30).min(100);
    let page = number("page").unwrap_or(1);
    let all = releases::all(repo)?;
    let last = all.len().div_ceil(per_page).max(1);
    let mut list = Vec::new();
    for release in all
        .iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
    {
        list.push(model::release(
            links,
            release,
            asset_list(app, links, release)?,
        ));
    }
    let mut reply = Reply::json(&list);
    let url = |n: usize| format!("<{}/releases?per_page={per_page}&page={n}>", links.api());
    let mut parts = Vec::new();
    if page > 1 {
        parts.push(format!("{}; rel=\"prev\"", url((page - 1).min(last))));
    }
    if page < last {
        parts.push(format!("{}; rel=\"next\"", url(page + 1)));
        parts.push(format!("{}; rel=\"last\"", url(last)));
    }
    if page > 1 {
        parts.push(format!("{}; rel=\"first\"", url(1)));
    }
    if !parts.is_empty()
        && let Ok(value) = HeaderValue::from_str(&parts.join(", "))
    {
        reply.headers.insert(header::LINK, value);
    }
    Ok(reply)
}

/// `GET releases/assets/{id}`: JSON, or with `Accept: application/octet-stream` the bytes
/// (or, with `redirect_assets`, a 302 to the download URL on another host name).
fn asset(app: &App, repo: &Repo, req: &Req, links: &Links, id: &str) -> Result<Reply, Fail> {
    let id: u64 = id.parse().map_err(|_| Fail::NotFound)?;
    let store = app.assets.as_ref().ok_or(Fail::NotFound)?;
    let mut found: Option<AssetFile> = None;
    for release in releases::all(repo)? {
        if let Some(asset) = store.list(&release.tag)?.into_iter().find(|a| a.id == id) {
            found = Some(asset);
            break;
        }
    }
    let asset = found.ok_or(Fail::NotFound)?;
    if !wants_octet_stream(req) {
        return Ok(Reply::json(&model::asset(
            links,
            &asset,
            store.download_count(asset.id),
        )));
    }
    if app.redirect_assets {
        let other = Links {
            base: format!("http://{}", other_host(&req.host)),
            ..links.clone()
        };
        let location = format!(
            "{}?sig={}",
            other.download(&asset.tag, &asset.name),
            app.download_signature(&asset.tag, &asset.name)
        );
        return Ok(Reply::redirect(&location));
    }
    raw::serve_asset(app, req, &asset)
}

/// `git/refs/{name}` (the older endpoint): the ref itself if `name` is one, else the refs
/// below it as an array, else 404.
fn legacy_refs(repo: &Repo, links: &Links, name: &str) -> Result<Reply, Fail> {
    if !name.is_empty()
        && let Some(found) = repo.find_ref(&format!("refs/{name}"))?
    {
        return Ok(Reply::json(&model::reference(links, &found)));
    }
    let prefix = if name.is_empty() {
        "refs/".to_string()
    } else {
        format!("refs/{}/", name.trim_end_matches('/'))
    };
    let found = repo.refs_with_prefix(&prefix)?;
    if found.is_empty() {
        return Err(Fail::NotFound);
    }
    let list: Vec<_> = found.iter().map(|r| model::reference(links, r)).collect();
    Ok(Reply::json(&list))
}

/// `git/trees/{sha}`: a tree SHA, a commit SHA or a ref name; `?recursive=<any>` lists all
/// entries below it, up to the configured limit.
fn tree(app: &App, repo: &Repo, req: &Req, links: &Links, name: &str) -> Result<Reply, Fail> {
    let object = repo.resolve(name)?.ok_or(Fail::NotFound)?;
    let tree = repo.peel_to_tree(object)?.ok_or(Fail::NotFound)?;
    let recursive = req.query_param("recursive").is_some();
    let limit = if recursive {
        app.max_tree_entries
    } else {
        usize::MAX
    };
    let listing = repo.tree_listing(tree, recursive, limit)?;
    Ok(Reply::json(&model::tree(links, &tree, &listing)))
}

/// `git/blobs/{sha}`: base64 JSON, or the raw bytes with a `raw` media type.
fn blob(repo: &Repo, req: &Req, links: &Links, sha: &str) -> Result<Reply, Fail> {
    let id = repo.parse_id(sha).ok_or(Fail::NotFound)?;
    let data = repo.blob(id)?.ok_or(Fail::NotFound)?;
    if req.accepts_any(RAW_MEDIA_TYPES) {
        return Ok(Reply::bytes("application/vnd.github.raw", data));
    }
    Ok(Reply::json(&model::blob(links, &id, &data)))
}

/// `commits/{ref}`: JSON, or with the `sha` media type the bare SHA (ETag = the SHA, so a
/// client can poll with `If-None-Match` and get 304 until the branch moves).
fn commit(repo: &Repo, req: &Req, links: &Links, name: &str) -> Result<Reply, Fail> {
    let Some(id) = repo.resolve_commit(name)? else {
        return Err(Fail::Status(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("No commit found for SHA: {name}"),
        ));
    };
    if req.accepts_any(SHA_MEDIA_TYPES) {
        let sha = id.to_string();
        return Ok(Reply::new(StatusCode::OK)
            .header(
                header::CONTENT_TYPE,
                "application/vnd.github.sha; charset=utf-8",
            )
            .body(crate::http::Body::Bytes(sha.clone().into()))
            .etag(sha));
    }
    let info = repo.commit(id)?.ok_or(Fail::NotFound)?;
    Ok(Reply::json(&model::commit(links, &info)))
}
