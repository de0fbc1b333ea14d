//! The REST API under /repos/{owner}/{repo}/.

use base64::Engine;
use ota_serve::{Options, Server};
use serde_json::Value;

use crate::util::{T0, get, head, raw_http, serve};
use crate::{SUBMODULE_SHA, sample};

const ISO_T0: &str = "2023-11-14T22:13:20Z";
const ISO_T0_10: &str = "2023-11-14T22:13:30Z";

fn tags_of(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|r| r["tag_name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn repository_reports_default_branch() {
    let s = sample();
    let server = serve(s.git.path());
    let r = get(&format!("{}/repos/acme/app", server.api_url()), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    let v = r.json();
    assert_eq!(v["name"], "app");
    assert_eq!(v["full_name"], "acme/app");
    assert_eq!(v["default_branch"], "main");
    assert_eq!(v["private"], false);
}

#[test]
fn releases_are_version_tags_newest_first() {
    let s = sample();
    let server = serve(s.git.path());
    let api = format!("{}/repos/acme/app", server.api_url());
    let r = get(&format!("{api}/releases"), &[]);
    assert_eq!(r.status, 200);
    let list = r.json();
    // Same commit time everywhere: the version decides; `nightly` is not a release.
    assert_eq!(
        tags_of(&list),
        ["v2.0.0-rc.1", "v1.1.1", "v1.1.0", "v1.0.0"]
    );

    let rel = &list[2];
    assert_eq!(rel["tag_name"], "v1.1.0");
    assert_eq!(rel["name"], "v1.1.0");
    assert_eq!(rel["target_commitish"], s.c2.as_str());
    assert_eq!(rel["body"], "Release 1.1");
    assert_eq!(rel["draft"], false);
    assert_eq!(rel["prerelease"], false);
    assert_eq!(rel["created_at"], ISO_T0, "commit date");
    assert_eq!(rel["published_at"], ISO_T0_10, "tagger date");
    let id = rel["id"].as_u64().unwrap();
    assert!(id > 0 && id < 1 << 53);
    assert_eq!(rel["url"], format!("{api}/releases/{id}").as_str());
    assert_eq!(
        rel["assets_url"],
        format!("{api}/releases/{id}/assets").as_str()
    );
    assert_eq!(
        rel["upload_url"],
        format!("{api}/releases/{id}/assets{{?name,label}}").as_str()
    );
    assert_eq!(rel["tarball_url"], format!("{api}/tarball/v1.1.0").as_str());
    assert_eq!(rel["zipball_url"], format!("{api}/zipball/v1.1.0").as_str());
    assert_eq!(
        rel["html_url"],
        format!("{}/acme/app/releases/tag/v1.1.0", server.api_url()).as_str()
    );
    assert!(rel["node_id"].is_string());
    assert_eq!(rel["author"]["login"], "acme");
    assert_eq!(rel["assets"], serde_json::json!([]));

    let light = &list[3];
    assert_eq!(light["tag_name"], "v1.0.0");
    assert_eq!(light["body"], "");
    assert_eq!(light["published_at"], ISO_T0);
    assert_eq!(light["target_commitish"], s.c1.as_str());

    let pre = &list[0];
    assert_eq!(pre["prerelease"], true);
    assert_eq!(pre["target_commitish"], s.c3.as_str());

    let tag_of_tag = &list[1];
    assert_eq!(
        tag_of_tag["target_commitish"],
        s.c2.as_str(),
        "peeled through two tags"
    );
}

#[test]
fn latest_skips_prereleases_and_pins_work() {
    let s = sample();
    let server = serve(s.git.path());
    let api = format!("{}/repos/acme/app", server.api_url());
    let latest = get(&format!("{api}/releases/latest"), &[]).json();
    assert_eq!(latest["tag_name"], "v1.1.1");

    let pre = get(&format!("{api}/releases/tags/v2.0.0-rc.1"), &[]);
    assert_eq!(pre.status, 200);
    assert_eq!(pre.json()["prerelease"], true);

    let pinned = get(&format!("{api}/releases/tags/v1.0.0"), &[]).json();
    assert_eq!(pinned["target_commitish"], s.c1.as_str());
    let id = pinned["id"].as_u64().unwrap();
    let by_id = get(&format!("{api}/releases/{id}"), &[]).json();
    assert_eq!(by_id["tag_name"], "v1.0.0");
    assert_eq!(
        get(&format!("{api}/releases/{id}/assets"), &[]).json(),
        serde_json::json!([])
    );

    for missing in [
        "releases/tags/nightly",
        "releases/tags/v9.9.9",
        "releases/12345",
        "releases/x",
    ] {
        let r = get(&format!("{api}/{missing}"), &[]);
        assert_eq!(r.status, 404, "{missing}");
        assert_eq!(r.json()["message"], "Not Found");
        assert!(r.json()["documentation_url"].is_string());
    }
}

#[test]
fn latest_is_by_commit_date_not_version() {
    let git = crate::util::GitRepo::new();
    git.write("f", b"1");
    git.commit_all("one", T0);
    git.run(&["tag", "v2.0.0"]);
    git.write("f", b"2");
    git.commit_all("hotfix", T0 + 60);
    git.run(&["tag", "v1.0.1"]);
    git.write("f", b"3");
    git.commit_all("pre", T0 + 120);
    git.run(&["tag", "-a", "v3.0.0-beta", "-m", "prerelease"]);
    // Same second, versions compare numerically: v1.10 > v1.9 > v1.2.
    git.write("f", b"4");
    git.commit_all("same second", T0 + 180);
    for tag in ["v1.2", "v1.10", "v1.9"] {
        git.run(&["tag", tag]);
    }
    let server = serve(git.path());
    let api = format!("{}/repos/o/r", server.api_url());
    let list = get(&format!("{api}/releases"), &[]).json();
    assert_eq!(
        tags_of(&list),
        ["v1.10", "v1.9", "v1.2", "v3.0.0-beta", "v1.0.1", "v2.0.0"]
    );
    assert_eq!(
        get(&format!("{api}/releases/latest"), &[]).json()["tag_name"],
        "v1.10"
    );
}

#[test]
fn a_semver_pre_release_part_makes_a_prerelease() {
    let git = crate::util::GitRepo::new();
    git.write("f", b"1");
    git.commit_all("one", T0);
    git.run(&["tag", "v1.0.0"]);
    // Newer commits, tagged without the word "prerelease" anywhere.
    for (i, tag) in ["v2.0.0-rc1", "v2.0.0-preview", "v2.0.0-beta.2+build.7"]
        .into_iter()
        .enumerate()
    {
        git.write("f", tag.as_bytes());
        git.commit_all(tag, T0 + 60 * (i as i64 + 1));
        if i == 1 {
            git.run(&["tag", "-a", tag, "-m", "Release candidate"]);
        } else {
            git.run(&["tag", tag]);
        }
    }
    git.write("f", b"build metadata only");
    git.commit_all("final", T0 + 600);
    git.run(&["tag", "v2.0.0+build.8"]);
    let server = serve(git.path());
    let api = format!("{}/repos/o/r", server.api_url());
    let list = get(&format!("{api}/releases"), &[]).json();
    let flags: Vec<(String, bool)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["tag_name"].as_str().unwrap().to_string(),
                r["prerelease"].as_bool().unwrap(),
            )
        })
        .collect();
    let flag = |tag: &str| flags.iter().find(|(t, _)| t == tag).unwrap().1;
    assert!(flag("v2.0.0-rc1"));
    assert!(flag("v2.0.0-preview"));
    assert!(flag("v2.0.0-beta.2+build.7"));
    assert!(
        !flag("v2.0.0+build.8"),
        "build metadata is not a pre-release"
    );
    assert!(!flag("v1.0.0"));
    assert_eq!(
        get(&format!("{api}/releases/latest"), &[]).json()["tag_name"],
        "v2.0.0+build.8"
    );
    // Without the final release, latest skips every pre-release back to v1.0.0.
    git.run(&["tag", "-d", "v2.0.0+build.8"]);
    assert_eq!(
        get(&format!("{api}/releases/latest"), &[]).json()["tag_name"],
        "v1.0.0"
    );
}

#[test]
fn latest_is_404_without_releases() {
    let git = crate::util::GitRepo::new();
    git.write("f", b"1");
    git.commit_all("one", T0);
    git.run(&["tag", "-a", "v1.0.0-rc1", "-m", "PRERELEASE"]);
    let server = serve(git.path());
    let api = format!("{}/repos/o/r", server.api_url());
    assert_eq!(get(&format!("{api}/releases/latest"), &[]).status, 404);
    assert_eq!(
        tags_of(&get(&format!("{api}/releases"), &[]).json()),
        ["v1.0.0-rc1"]
    );
}

#[test]
fn releases_paginate_with_link_headers() {
    let s = sample();
    let server = serve(s.git.path());
    let api = format!("{}/repos/acme/app", server.api_url());
    let first = get(&format!("{api}/releases?per_page=2"), &[]);
    assert_eq!(tags_of(&first.json()), ["v2.0.0-rc.1", "v1.1.1"]);
    let link = first.header("link").unwrap();
    assert!(
        link.contains(&format!("<{api}/releases?per_page=2&page=2>; rel=\"next\"")),
        "{link}"
    );
    assert!(
        link.contains(&format!("<{api}/releases?per_page=2&page=2>; rel=\"last\"")),
        "{link}"
    );
    assert!(!link.contains("prev"));

    let second = get(&format!("{api}/releases?per_page=2&page=2"), &[]);
    assert_eq!(tags_of(&second.json()), ["v1.1.0", "v1.0.0"]);
    let link = second.header("link").unwrap();
    assert!(link.contains("page=1>; rel=\"prev\""), "{link}");
    assert!(link.contains("page=1>; rel=\"first\""), "{link}");
    assert!(!link.contains("next"));

    assert_eq!(
        tags_of(&get(&format!("{api}/releases?per_page=2&page=3"), &[]).json()).len(),
        0
    );
    assert_eq!(
        tags_of(&get(&format!("{api}/releases?per_page=1000"), &[]).json()).len(),
        4
    );
    assert!(
        get(&format!("{api}/releases"), &[])
            .header("link")
            .is_none()
    );
}

#[test]
fn refs_tell_lightweight_from_annotated() {
    let s = sample();
    let server = serve(s.git.path());
    let api = format!("{}/repos/acme/app", server.api_url());

    let main = get(&format!("{api}/git/ref/heads/main"), &[]).json();
    assert_eq!(main["ref"], "refs/heads/main");
    assert_eq!(main["url"], format!("{api}/git/refs/heads/main").as_str());
    assert_eq!(main["object"]["sha"], s.c3.as_str());
    assert_eq!(main["object"]["type"], "commit");
    assert_eq!(
        main["object"]["url"],
        format!("{api}/git/commits/{}", s.c3).as_str()
    );

    let feature = get(&format!("{api}/git/ref/heads/feature/x"), &[]).json();
    assert_eq!(feature["object"]["sha"], s.feature.as_str());

    let light = get(&format!("{api}/git/ref/tags/v1.0.0"), &[]).json();
    assert_eq!(light["object"]["type"], "commit");
    assert_eq!(light["object"]["sha"], s.c1.as_str());

    let annotated = get(&format!("{api}/git/ref/tags/v1.1.0"), &[]).json();
    let tag_sha = s.git.rev("refs/tags/v1.1.0");
    assert_ne!(tag_sha, s.c2);
    assert_eq!(annotated["object"]["type"], "tag");
    assert_eq!(annotated["object"]["sha"], tag_sha.as_str());
    assert_eq!(
        annotated["object"]["url"],
        format!("{api}/git/tags/{tag_sha}").as_str()
    );

    let tag = get(&format!("{api}/git/tags/{tag_sha}"), &[]).json();
    assert_eq!(tag["sha"], tag_sha.as_str());
    assert_eq!(tag["tag"], "v1.1.0");
    assert_eq!(tag["message"], "Release 1.1\n");
    assert_eq!(tag["tagger"]["name"], "Test User");
    assert_eq!(tag["tagger"]["email"], "test@ota.invalid");
    assert_eq!(tag["tagger"]["date"], ISO_T0_10);
    assert_eq!(tag["object"]["type"], "commit");
    assert_eq!(tag["object"]["sha"], s.c2.as_str());
    assert_eq!(tag["verification"]["verified"], false);

    // A tag of a tag: the client loops until it reaches a commit.
    let mut object = get(&format!("{api}/git/ref/tags/v1.1.1"), &[]).json()["object"].clone();
    let mut hops = 0;
    while object["type"] == "tag" {
        object = get(object["url"].as_str().unwrap(), &[]).json()["object"].clone();
        hops += 1;
    }
    assert_eq!(hops, 2);
    assert_eq!(object["sha"], s.c2.as_str());

    for missing in [
        "git/ref/heads/nope",
        "git/ref/tags/v0",
        "git/ref/heads",
        "git/ref/heads/../main",
        &format!("git/tags/{}", s.c2),
        "git/tags/abc",
    ] {
        assert_eq!(
            get(&format!("{api}/{missing}"), &[]).status,
            404,
            "{missing}"
        );
    }

    let matching = get(&format!("{api}/git/matching-refs/tags/v1"), &[]).json();
    let names: Vec<_> = matching
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ref"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["refs/tags/v1.0.0", "refs/tags/v1.1.0", "refs/tags/v1.1.1"]
    );
    assert_eq!(
        get(&format!("{api}/git/matching-refs/tags/zzz"), &[]).json(),
        serde_json::json!([])
    );
    let heads = get(&format!("{api}/git/refs/heads"), &[]).json();
    assert_eq!(heads.as_array().unwrap().len(), 2);
    assert_eq!(
        get(&format!("{api}/git/refs/heads/main"), &[]).json()["object"]["sha"],
        s.c3.as_str()
    );
}

/// `git ls-tree -r -t -l` as (mode, type, sha, size, path), in git's order.
fn git_ls_tree(
    git: &crate::util::GitRepo,
    treeish: &str,
    recursive: bool,
) -> Vec<(String, String, String, Option<u64>, String)> {
    let mut args = vec!["ls-tree", "-l", "--full-tree"];
    if recursive {
        args.extend(["-r", "-t"]);
    }
    args.push(treeish);
    git.run(&args)
        .lines()
        .map(|line| {
            let (meta, path) = line.split_once('\t').unwrap();
            let parts: Vec<&str> = meta.split_whitespace().collect();
            (
                parts[0].to_string(),
                parts[1].to_string(),
                parts[2].to_string(),
                parts[3].parse().ok(),
                path.trim_matches('"').to_string(),
            )
        })
        .collect()
}

fn entries(tree: &Value) -> Vec<(String, String, String, Option<u64>, String)> {
    tree["tree"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["mode"].as_str().unwrap().to_string(),
                e["type"].as_str().unwrap().to_string(),
                e["sha"].as_str().unwrap().to_string(),
                e["size"].as_u64(),
                e["path"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn trees_match_git_ls_tree() {
    let s = sample();
    let server = serve(s.git.path());
    let api = format!("{}/repos/acme/app", server.api_url());
    let tree_sha = s.git.rev(&format!("{}^{{tree}}", s.c1));

    let flat = get(&format!("{api}/git/trees/{}", s.c1), &[]).json();
    assert_eq!(flat["sha"], tree_sha.as_str());
    assert_eq!(flat["url"], format!("{api}/git/trees/{tree_sha}").as_str());
    assert_eq!(flat["truncated"], false);
    assert_eq!(entries(&flat), git_ls_tree(&s.git, &s.c1, false));

    let full = get(&format!("{api}/git/trees/{tree_sha}?recursive=1"), &[]).json();
    let expected = git_ls_tree(&s.git, &s.c1, true);
    assert_eq!(entries(&full), expected);
    let modes: Vec<_> = expected
        .iter()
        .map(|e| (e.4.as_str(), e.0.as_str(), e.1.as_str()))
        .collect();
    for wanted in [
        ("bin", "040000", "tree"),
        ("bin/run.sh", "100755", "blob"),
        ("empty.txt", "100644", "blob"),
        ("link", "120000", "blob"),
        ("docs/guide/intro.md", "100644", "blob"),
        ("vendor/sub", "160000", "commit"),
    ] {
        assert!(modes.contains(&wanted), "{wanted:?} in {modes:?}");
    }
    let by_path = |p: &str| {
        full["tree"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == p)
            .unwrap()
            .clone()
    };
    assert_eq!(by_path("empty.txt")["size"], 0);
    assert_eq!(by_path("link")["size"], 9);
    assert!(by_path("docs")["size"].is_null());
    assert_eq!(by_path("vendor/sub")["sha"], SUBMODULE_SHA);
    assert!(by_path("vendor/sub").get("size").is_none());
    assert_eq!(
        by_path("README.md")["url"],
        format!(
            "{api}/git/blobs/{}",
            by_path("README.md")["sha"].as_str().unwrap()
        )
        .as_str()
    );

    // Any value of `recursive` turns it on; a ref name works like a SHA.
    let zero = get(&format!("{api}/git/trees/v1.0.0?recursive=0"), &[]).json();
    assert_eq!(entries(&zero), expected);
    let by_branch = get(&format!("{api}/git/trees/feature/x"), &[]).json();
    assert_eq!(entries(&by_branch), git_ls_tree(&s.git, "feature/x", false));
    assert_eq!(get(&format!("{api}/git/trees/nope"), &[]).status, 404);
}

#[test]
fn big_trees_are_truncated() {
    let s = sample();
    let mut options = Options::new(s.git.path());
    options.max_tree_entries = Some(5);
    let server = Server::start(options).unwrap();
    let api = format!("{}/repos/acme/app", server.api_url());
    let full = get(&format!("{api}/git/trees/{}?recursive=1", s.c1), &[]).json();
    assert_eq!(full["truncated"], true);
    let expected = git_ls_tree(&s.git, &s.c1, true);
    assert_eq!(entries(&full), expected[..5].to_vec());
    // Sub-trees can be walked one at a time.
    let flat = get(&format!("{api}/git/trees/{}", s.c1), &[]).json();
    assert_eq!(flat["truncated"], false);
    assert_eq!(entries(&flat), git_ls_tree(&s.git, &s.c1, false));
}

#[test]
fn blobs_in_base64_or_raw() {
    let s = sample();
    let server = serve(s.git.path());
    let api = format!("{}/repos/acme/app", server.api_url());
    let big: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
    s.git.write("big.bin", &big);
    let sha = s.git.run(&["hash-object", "-w", "big.bin"]);

    let json = get(&format!("{api}/git/blobs/{sha}"), &[]).json();
    assert_eq!(json["sha"], sha.as_str());
    assert_eq!(json["size"], 1000);
    assert_eq!(json["encoding"], "base64");
    assert_eq!(json["url"], format!("{api}/git/blobs/{sha}").as_str());
    let content = json["content"].as_str().unwrap();
    assert!(content.lines().all(|l| l.len() <= 60));
    assert!(content.contains('\n'));
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(content.replace('\n', ""))
        .unwrap();
    assert_eq!(decoded, big);

    for accept in [
        "application/vnd.github.raw+json",
        "application/vnd.github.raw",
    ] {
        let raw = get(&format!("{api}/git/blobs/{sha}"), &[("Accept", accept)]);
        assert_eq!(raw.status, 200);
        assert_eq!(raw.body, big);
    }
    assert_eq!(get(&format!("{api}/git/blobs/{}", s.c1), &[]).status, 404);
    assert_eq!(get(&format!("{api}/git/blobs/zz"), &[]).status, 404);
}

#[test]
fn commits_by_any_name_and_the_sha_media_type() {
    let s = sample();
    let server = serve(s.git.path());
    let api = format!("{}/repos/acme/app", server.api_url());
    let sha_accept = [("Accept", "application/vnd.github.sha")];
    for (name, expected) in [
        ("main", &s.c3),
        ("refs/heads/main", &s.c3),
        ("heads/main", &s.c3),
        ("HEAD", &s.c3),
        ("feature/x", &s.feature),
        ("feature%2Fx", &s.feature),
        ("refs%2Fheads%2Ffeature%2Fx", &s.feature),
        ("v1.1.0", &s.c2),
        ("v1.1.1", &s.c2),
        ("v1.0.0", &s.c1),
        (s.c1.as_str(), &s.c1),
        (&s.c1[..7], &s.c1),
    ] {
        let r = get(&format!("{api}/commits/{name}"), &sha_accept);
        assert_eq!(r.status, 200, "{name}");
        assert_eq!(r.text(), *expected, "{name}");
        assert_eq!(r.header("etag"), Some(format!("\"{expected}\"").as_str()));
    }
    let r = get(
        &format!("{api}/commits/main"),
        &[sha_accept[0], ("If-None-Match", &format!("\"{}\"", s.c3))],
    );
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(format!("\"{}\"", s.c3).as_str()));
    let moved = get(
        &format!("{api}/commits/main"),
        &[sha_accept[0], ("If-None-Match", &format!("\"{}\"", s.c2))],
    );
    assert_eq!(moved.status, 200);

    let missing = get(&format!("{api}/commits/nope"), &[]);
    assert_eq!(missing.status, 422);
    assert_eq!(missing.json()["message"], "No commit found for SHA: nope");
    assert_eq!(get(&format!("{api}/commits/nope"), &sha_accept).status, 422);

    let json = get(&format!("{api}/commits/{}", s.c2), &[]).json();
    assert_eq!(json["sha"], s.c2.as_str());
    assert_eq!(json["url"], format!("{api}/commits/{}", s.c2).as_str());
    assert_eq!(json["commit"]["message"], "second");
    assert_eq!(json["commit"]["author"]["name"], "Test User");
    assert_eq!(json["commit"]["committer"]["date"], ISO_T0);
    let tree = s.git.rev(&format!("{}^{{tree}}", s.c2));
    assert_eq!(json["commit"]["tree"]["sha"], tree.as_str());
    assert_eq!(json["parents"][0]["sha"], s.c1.as_str());
    assert_eq!(json["parents"].as_array().unwrap().len(), 1);

    let git_commit = get(&format!("{api}/git/commits/{}", s.c1), &[]).json();
    assert_eq!(git_commit["message"], "first");
    assert_eq!(git_commit["parents"], serde_json::json!([]));
}

#[test]
fn json_responses_have_etags_and_answer_304() {
    let s = sample();
    let server = serve(s.git.path());
    let url = format!("{}/repos/acme/app/releases/latest", server.api_url());
    let first = get(&url, &[]);
    let etag = first.header("etag").unwrap().to_string();
    assert!(etag.starts_with('"') && etag.len() == 66, "{etag}");
    assert_eq!(get(&url, &[]).header("etag"), Some(etag.as_str()), "stable");
    for inm in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"x\", {etag}"),
        "*".to_string(),
    ] {
        let r = get(&url, &[("If-None-Match", &inm)]);
        assert_eq!(r.status, 304, "{inm}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some(etag.as_str()));
    }
    assert_eq!(get(&url, &[("If-None-Match", "\"other\"")]).status, 200);
}

#[test]
fn head_answers_headers_only() {
    let s = sample();
    let server = serve(s.git.path());
    let url = format!("{}/repos/acme/app/releases", server.api_url());
    let full = get(&url, &[]);
    let h = head(&url, &[]);
    assert_eq!(h.status, 200);
    assert!(h.body.is_empty());
    assert_eq!(
        h.header("content-length").unwrap(),
        full.body.len().to_string()
    );
    assert_eq!(h.header("etag"), full.header("etag"));
}

#[test]
fn rate_limit_headers_on_api_only() {
    let s = sample();
    let server = serve(s.git.path());
    let a = get(
        &format!("{}/repos/acme/app/releases", server.api_url()),
        &[],
    );
    let b = get(
        &format!("{}/repos/acme/app/releases/nope", server.api_url()),
        &[],
    );
    for r in [&a, &b] {
        assert!(
            r.header("x-ratelimit-limit")
                .unwrap()
                .parse::<u64>()
                .unwrap()
                >= 5000
        );
        assert!(r.header("x-ratelimit-remaining").is_some());
        assert!(
            r.header("x-ratelimit-reset")
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > 1_600_000_000
        );
        assert_eq!(r.header("x-ratelimit-resource"), Some("core"));
    }
    let used = |r: &crate::util::Resp| {
        r.header("x-ratelimit-used")
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(used(&b), used(&a) + 1);
    let raw = get(
        &format!("{}/acme/app/main/README.md", server.raw_url()),
        &[],
    );
    assert!(raw.header("x-ratelimit-limit").is_none());
}

#[test]
fn requests_without_user_agent_are_refused() {
    let s = sample();
    let server = serve(s.git.path());
    let addr = server.addr();
    let (status, text) = raw_http(
        addr,
        &format!(
            "GET /repos/acme/app/releases HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(status, 403);
    assert!(text.contains("User-Agent"));
    let (status, _) = raw_http(
        addr,
        &format!(
            "POST /repos/acme/app/releases HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(status, 405);
    let (status, _) = crate::util::raw_get(addr, "/nothing/here");
    assert_eq!(status, 404);
}

#[test]
fn token_makes_the_repository_private() {
    let s = sample();
    let mut options = Options::new(s.git.path());
    options.token = Some("s3cret".to_string());
    let server = Server::start(options).unwrap();
    let api = format!("{}/repos/acme/app", server.api_url());
    let raw = format!("{}/acme/app/main/README.md", server.raw_url());
    for url in [format!("{api}/releases/latest"), raw.clone(), api.clone()] {
        // GitHub's 401 and its JSON error shape.
        let none = get(&url, &[]);
        assert_eq!(none.status, 401, "{url}");
        assert_eq!(none.json()["message"], "Requires authentication", "{url}");
        assert_eq!(none.json()["status"], "401", "{url}");
        assert!(none.json()["documentation_url"].is_string(), "{url}");
        let wrong = get(&url, &[("Authorization", "Bearer wrong")]);
        assert_eq!(wrong.status, 401, "{url}");
        assert_eq!(wrong.json()["message"], "Bad credentials", "{url}");
        assert_eq!(
            get(&url, &[("Authorization", "Bearer s3cret")]).status,
            200,
            "{url}"
        );
        assert_eq!(
            get(&url, &[("Authorization", "token s3cret")]).status,
            200,
            "{url}"
        );
    }
    assert_eq!(
        get(&api, &[("Authorization", "token s3cret")]).json()["private"],
        true
    );
}

#[test]
fn owner_and_name_are_checked_when_configured() {
    let s = sample();
    let mut options = Options::new(s.git.path());
    options.owner = Some("Acme".to_string());
    options.name = Some("app".to_string());
    let server = Server::start(options).unwrap();
    let base = server.api_url();
    assert_eq!(
        get(&format!("{base}/repos/acme/app/releases/latest"), &[]).status,
        200
    );
    assert_eq!(
        get(&format!("{base}/repos/other/app/releases/latest"), &[]).status,
        404
    );
    assert_eq!(
        get(&format!("{base}/repos/acme/other/releases/latest"), &[]).status,
        404
    );
    assert_eq!(
        get(
            &format!("{}/other/app/main/README.md", server.raw_url()),
            &[]
        )
        .status,
        404
    );
    assert_eq!(
        get(
            &format!("{}/acme/app/main/README.md", server.raw_url()),
            &[]
        )
        .status,
        200
    );
    // URLs use the configured spelling.
    let repo = get(&format!("{base}/repos/acme/app"), &[]).json();
    assert_eq!(repo["full_name"], "Acme/app");
}

#[test]
fn urls_follow_the_host_the_client_used() {
    let s = sample();
    let server = serve(s.git.path());
    let port = server.addr().port();
    let r = get(
        &format!("http://localhost:{port}/repos/acme/app/releases/latest"),
        &[],
    );
    assert!(
        r.json()["url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("http://localhost:{port}/repos/acme/app/releases/"))
    );
    let r = get(
        &format!("{}/repos/acme/app/releases/latest", server.api_url()),
        &[],
    );
    assert!(
        r.json()["url"]
            .as_str()
            .unwrap()
            .starts_with(&server.api_url())
    );
}

#[test]
fn odd_host_headers_fall_back_to_the_socket_address() {
    let s = sample();
    let server = serve(s.git.path());
    let addr = server.addr();
    for request in [
        "GET /repos/o/r/releases/latest HTTP/1.1\r\nHost: evil>; rel=\"x\r\nUser-Agent: t\r\nConnection: close\r\n\r\n",
        "GET /repos/o/r/releases/latest HTTP/1.0\r\nUser-Agent: t\r\n\r\n",
    ] {
        let (status, text) = raw_http(addr, request);
        assert_eq!(status, 200, "{text}");
        let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
        let json: Value = serde_json::from_str(body).unwrap();
        assert!(
            json["url"]
                .as_str()
                .unwrap()
                .starts_with(&format!("http://{addr}/repos/o/r/releases/"))
        );
    }
}
