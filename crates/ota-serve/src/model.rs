//! GitHub's JSON shapes, built from what `git`, `releases` and `assets` read.
//!
//! Field names and nesting follow recorded GitHub responses (see the shared fixtures). Every
//! URL is built from [`Links`], i.e. from the `Host` the client used, so a client following a
//! URL from a response comes back to this server however it addressed it.

use base64::Engine;
use gix::objs::Kind;
use gix::objs::tree::EntryKind;
use serde::Serialize;

use crate::assets::AssetFile;
use crate::git::{CommitInfo, ObjectId, Person, RefInfo, TagInfo, TreeListing};
use crate::http::{encode_path, encode_segment};
use crate::releases::Release;

/// Builds the URLs of one repository as the client addressed the server.
#[derive(Debug, Clone)]
pub(crate) struct Links {
    /// `http://host:port`
    pub base: String,
    pub owner: String,
    pub name: String,
}

impl Links {
    /// `http://host/repos/{o}/{r}`
    pub(crate) fn api(&self) -> String {
        format!(
            "{}/repos/{}/{}",
            self.base,
            encode_segment(&self.owner),
            encode_segment(&self.name)
        )
    }

    /// `http://host/{o}/{r}` (github.com's HTML pages; only downloads are served there).
    pub(crate) fn html(&self) -> String {
        format!(
            "{}/{}/{}",
            self.base,
            encode_segment(&self.owner),
            encode_segment(&self.name)
        )
    }

    /// Where `browser_download_url` points.
    pub(crate) fn download(&self, tag: &str, name: &str) -> String {
        format!(
            "{}/releases/download/{}/{}",
            self.html(),
            encode_segment(tag),
            encode_segment(name)
        )
    }

    fn object_url(&self, kind: Kind, id: &ObjectId) -> String {
        let collection = match kind {
            Kind::Commit => "commits",
            Kind::Tag => "tags",
            Kind::Tree => "trees",
            Kind::Blob => "blobs",
        };
        format!("{}/git/{collection}/{id}", self.api())
    }

    fn owner_user(&self) -> User {
        User {
            login: self.owner.clone(),
            id: 1,
            node_id: node_id("User", &self.owner),
            avatar_url: String::new(),
            gravatar_id: "",
            url: format!("{}/users/{}", self.base, encode_segment(&self.owner)),
            html_url: format!("{}/{}", self.base, encode_segment(&self.owner)),
            kind: "User",
            site_admin: false,
        }
    }
}

/// An opaque GitHub-style `node_id`.
fn node_id(kind: &str, key: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{kind}:{key}"))
}

/// ISO-8601 UTC with a `Z`, like every GitHub date. Dates outside 1970..=9999 (which a git
/// commit can claim) are clamped to that range.
pub(crate) fn iso8601(secs: i64) -> String {
    const LAST_SECOND_OF_9999: u64 = 253_402_300_799;
    let secs = u64::try_from(secs).unwrap_or(0).min(LAST_SECOND_OF_9999);
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Commit => "commit",
        Kind::Tag => "tag",
        Kind::Tree => "tree",
        Kind::Blob => "blob",
    }
}

#[derive(Serialize)]
pub(crate) struct User {
    login: String,
    id: u64,
    node_id: String,
    avatar_url: String,
    gravatar_id: &'static str,
    url: String,
    html_url: String,
    #[serde(rename = "type")]
    kind: &'static str,
    site_admin: bool,
}

#[derive(Serialize)]
pub(crate) struct Repository {
    id: u64,
    node_id: String,
    name: String,
    full_name: String,
    private: bool,
    owner: User,
    html_url: String,
    description: Option<String>,
    fork: bool,
    url: String,
    default_branch: String,
    visibility: &'static str,
}

pub(crate) fn repository(links: &Links, default_branch: String, private: bool) -> Repository {
    let full_name = format!("{}/{}", links.owner, links.name);
    Repository {
        id: crate::releases::stable_id("repo", &full_name),
        node_id: node_id("Repository", &full_name),
        name: links.name.clone(),
        full_name,
        private,
        owner: links.owner_user(),
        html_url: links.html(),
        description: None,
        fork: false,
        url: links.api(),
        default_branch,
        visibility: if private { "private" } else { "public" },
    }
}

#[derive(Serialize)]
pub(crate) struct ReleaseJson {
    url: String,
    assets_url: String,
    upload_url: String,
    html_url: String,
    id: u64,
    author: User,
    node_id: String,
    tag_name: String,
    target_commitish: String,
    name: String,
    draft: bool,
    prerelease: bool,
    created_at: String,
    published_at: String,
    assets: Vec<AssetJson>,
    tarball_url: String,
    zipball_url: String,
    body: String,
}

pub(crate) fn release(links: &Links, release: &Release, assets: Vec<AssetJson>) -> ReleaseJson {
    let url = format!("{}/releases/{}", links.api(), release.id);
    ReleaseJson {
        assets_url: format!("{url}/assets"),
        upload_url: format!("{url}/assets{{?name,label}}"),
        url,
        html_url: format!(
            "{}/releases/tag/{}",
            links.html(),
            encode_segment(&release.tag)
        ),
        id: release.id,
        author: links.owner_user(),
        node_id: node_id("Release", &release.id.to_string()),
        tag_name: release.tag.clone(),
        target_commitish: release.commit.to_string(),
        name: release.tag.clone(),
        draft: false,
        prerelease: release.prerelease,
        created_at: iso8601(release.created_at),
        published_at: iso8601(release.published_at),
        assets,
        tarball_url: format!("{}/tarball/{}", links.api(), encode_segment(&release.tag)),
        zipball_url: format!("{}/zipball/{}", links.api(), encode_segment(&release.tag)),
        body: release.body.clone(),
    }
}

#[derive(Serialize)]
pub(crate) struct AssetJson {
    url: String,
    id: u64,
    node_id: String,
    name: String,
    label: String,
    uploader: User,
    content_type: &'static str,
    state: &'static str,
    size: u64,
    digest: String,
    download_count: u64,
    created_at: String,
    updated_at: String,
    browser_download_url: String,
}

pub(crate) fn asset(links: &Links, asset: &AssetFile, download_count: u64) -> AssetJson {
    AssetJson {
        url: format!("{}/releases/assets/{}", links.api(), asset.id),
        id: asset.id,
        node_id: node_id("ReleaseAsset", &asset.id.to_string()),
        name: asset.name.clone(),
        label: String::new(),
        uploader: links.owner_user(),
        content_type: "application/octet-stream",
        state: "uploaded",
        size: asset.size,
        digest: format!("sha256:{}", asset.sha256),
        download_count,
        created_at: iso8601(asset.modified),
        updated_at: iso8601(asset.modified),
        browser_download_url: links.download(&asset.tag, &asset.name),
    }
}

#[derive(Serialize)]
pub(crate) struct ObjectRef {
    sha: String,
    #[serde(rename = "type")]
    kind: &'static str,
    url: String,
}

#[derive(Serialize)]
pub(crate) struct RefJson {
    #[serde(rename = "ref")]
    name: String,
    node_id: String,
    url: String,
    object: ObjectRef,
}

pub(crate) fn reference(links: &Links, r: &RefInfo) -> RefJson {
    RefJson {
        node_id: node_id("Ref", &r.name),
        url: format!("{}/git/{}", links.api(), encode_path(&r.name)),
        object: ObjectRef {
            sha: r.target.to_string(),
            kind: kind_name(r.kind),
            url: links.object_url(r.kind, &r.target),
        },
        name: r.name.clone(),
    }
}

#[derive(Serialize)]
pub(crate) struct GitPerson {
    name: String,
    email: String,
    date: String,
}

fn git_person(p: &Person) -> GitPerson {
    GitPerson {
        name: p.name.clone(),
        email: p.email.clone(),
        date: iso8601(p.time),
    }
}

#[derive(Serialize)]
pub(crate) struct Verification {
    verified: bool,
    reason: &'static str,
    signature: Option<String>,
    payload: Option<String>,
    verified_at: Option<String>,
}

fn unverified(signed: bool) -> Verification {
    Verification {
        verified: false,
        reason: if signed { "unknown_key" } else { "unsigned" },
        signature: None,
        payload: None,
        verified_at: None,
    }
}

#[derive(Serialize)]
pub(crate) struct TagJson {
    node_id: String,
    tag: String,
    sha: String,
    url: String,
    message: String,
    tagger: Option<GitPerson>,
    object: ObjectRef,
    verification: Verification,
}

pub(crate) fn tag(links: &Links, t: &TagInfo) -> TagJson {
    TagJson {
        node_id: node_id("Tag", &t.id.to_string()),
        tag: t.name.clone(),
        sha: t.id.to_string(),
        url: links.object_url(Kind::Tag, &t.id),
        message: t.message.clone(),
        tagger: t.tagger.as_ref().map(git_person),
        object: ObjectRef {
            sha: t.target.to_string(),
            kind: kind_name(t.target_kind),
            url: links.object_url(t.target_kind, &t.target),
        },
        verification: unverified(t.signed),
    }
}

#[derive(Serialize)]
pub(crate) struct ShaUrl {
    sha: String,
    url: String,
}

#[derive(Serialize)]
pub(crate) struct ParentJson {
    sha: String,
    url: String,
    html_url: String,
}

#[derive(Serialize)]
pub(crate) struct CommitDetail {
    author: GitPerson,
    committer: GitPerson,
    message: String,
    tree: ShaUrl,
    url: String,
    comment_count: u64,
    verification: Verification,
}

/// `GET /repos/{o}/{r}/commits/{ref}`
#[derive(Serialize)]
pub(crate) struct CommitJson {
    sha: String,
    node_id: String,
    commit: CommitDetail,
    url: String,
    html_url: String,
    comments_url: String,
    author: Option<User>,
    committer: Option<User>,
    parents: Vec<ParentJson>,
}

/// GitHub drops the trailing newline git stores after a message.
fn commit_message(message: &str) -> String {
    message.trim_end_matches('\n').to_string()
}

pub(crate) fn commit(links: &Links, c: &CommitInfo) -> CommitJson {
    let sha = c.id.to_string();
    CommitJson {
        node_id: node_id("Commit", &sha),
        commit: CommitDetail {
            author: git_person(&c.author),
            committer: git_person(&c.committer),
            message: commit_message(&c.message),
            tree: ShaUrl {
                sha: c.tree.to_string(),
                url: links.object_url(Kind::Tree, &c.tree),
            },
            url: links.object_url(Kind::Commit, &c.id),
            comment_count: 0,
            verification: unverified(false),
        },
        url: format!("{}/commits/{sha}", links.api()),
        html_url: format!("{}/commit/{sha}", links.html()),
        comments_url: format!("{}/commits/{sha}/comments", links.api()),
        author: None,
        committer: None,
        parents: c
            .parents
            .iter()
            .map(|p| ParentJson {
                sha: p.to_string(),
                url: format!("{}/commits/{p}", links.api()),
                html_url: format!("{}/commit/{p}", links.html()),
            })
            .collect(),
        sha,
    }
}

/// `GET /repos/{o}/{r}/git/commits/{sha}`
#[derive(Serialize)]
pub(crate) struct GitCommitJson {
    sha: String,
    node_id: String,
    url: String,
    html_url: String,
    author: GitPerson,
    committer: GitPerson,
    tree: ShaUrl,
    message: String,
    parents: Vec<ParentJson>,
    verification: Verification,
}

pub(crate) fn git_commit(links: &Links, c: &CommitInfo) -> GitCommitJson {
    let sha = c.id.to_string();
    GitCommitJson {
        node_id: node_id("Commit", &sha),
        url: links.object_url(Kind::Commit, &c.id),
        html_url: format!("{}/commit/{sha}", links.html()),
        author: git_person(&c.author),
        committer: git_person(&c.committer),
        tree: ShaUrl {
            sha: c.tree.to_string(),
            url: links.object_url(Kind::Tree, &c.tree),
        },
        message: commit_message(&c.message),
        parents: c
            .parents
            .iter()
            .map(|p| ParentJson {
                sha: p.to_string(),
                url: links.object_url(Kind::Commit, p),
                html_url: format!("{}/commit/{p}", links.html()),
            })
            .collect(),
        verification: unverified(false),
        sha,
    }
}

#[derive(Serialize)]
pub(crate) struct TreeEntryJson {
    path: String,
    mode: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    sha: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct TreeJson {
    sha: String,
    url: String,
    tree: Vec<TreeEntryJson>,
    truncated: bool,
}

pub(crate) fn tree(links: &Links, id: &ObjectId, listing: &TreeListing) -> TreeJson {
    let tree = listing
        .entries
        .iter()
        .map(|e| {
            let (mode, kind, object) = match e.kind {
                EntryKind::Tree => ("040000", "tree", Some(Kind::Tree)),
                EntryKind::Blob => ("100644", "blob", Some(Kind::Blob)),
                EntryKind::BlobExecutable => ("100755", "blob", Some(Kind::Blob)),
                EntryKind::Link => ("120000", "blob", Some(Kind::Blob)),
                // A submodule: a commit of another repository, so no URL here.
                EntryKind::Commit => ("160000", "commit", None),
            };
            TreeEntryJson {
                path: e.path.clone(),
                mode,
                kind,
                sha: e.id.to_string(),
                size: e.size,
                url: object.map(|k| links.object_url(k, &e.id)),
            }
        })
        .collect();
    TreeJson {
        sha: id.to_string(),
        url: links.object_url(Kind::Tree, id),
        tree,
        truncated: listing.truncated,
    }
}

#[derive(Serialize)]
pub(crate) struct BlobJson {
    sha: String,
    node_id: String,
    size: u64,
    url: String,
    content: String,
    encoding: &'static str,
}

pub(crate) fn blob(links: &Links, id: &ObjectId, data: &[u8]) -> BlobJson {
    BlobJson {
        sha: id.to_string(),
        node_id: node_id("Blob", &id.to_string()),
        size: data.len() as u64,
        url: links.object_url(Kind::Blob, id),
        content: base64_lines(data),
        encoding: "base64",
    }
}

/// Base64 with a newline after every 60 characters, as GitHub sends blob content.
pub(crate) fn base64_lines(data: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 60 + 1);
    for line in encoded.as_bytes().chunks(60) {
        // base64 output is ASCII, so any split is on a char boundary.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_507_651_200), "2017-10-10T16:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(-1), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(i64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(iso8601(4_102_444_800), "2100-01-01T00:00:00Z");
    }

    #[test]
    fn base64_wraps_at_60() {
        assert_eq!(base64_lines(b""), "");
        assert_eq!(base64_lines(b"hello\n"), "aGVsbG8K\n");
        let long = base64_lines(&[0u8; 100]);
        let lines: Vec<&str> = long.lines().collect();
        assert_eq!(lines[0].len(), 60);
        assert_eq!(lines.len(), 3);
        assert!(long.ends_with('\n'));
    }
}
