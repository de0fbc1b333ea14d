//! Source archives: `tarball/{ref}` answers 302 to `/codeload/…`, which answers the gzip tar
//! `git archive` makes, entries under `{owner}-{repo}-{7-hex commit}/`, as on GitHub.

use std::io::Write;
use std::process::{Command, Stdio};

use ota_serve::{Options, Server};

use crate::sample;
use crate::util::get;

/// The names in a gzip tar, listed by the `tar` CLI.
fn names(archive: &[u8]) -> Vec<String> {
    let mut tar = Command::new("tar")
        .args(["-tzf", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    tar.stdin.take().unwrap().write_all(archive).unwrap();
    let out = tar.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_tarball_redirects_to_the_archive_of_the_commit() {
    let s = sample();
    let mut options = Options::new(s.git.path());
    options.token = Some("secret".into());
    let server = Server::start(options).unwrap();
    let api = format!("{}/repos/acme/app", server.api_url());
    let auth = [("Authorization", "Bearer secret")];

    // A tag names its commit; the redirect goes to the full SHA, signed.
    let reply = get(&format!("{api}/tarball/v1.0.0"), &auth);
    assert_eq!(reply.status, 302);
    let location = reply.header("location").unwrap().to_owned();
    let prefix = format!(
        "{}/codeload/acme/app/legacy.tar.gz/{}?sig=",
        server.api_url(),
        s.c1
    );
    assert!(location.starts_with(&prefix), "{location}");

    // The redirect target needs no token (a client drops it across the redirect).
    let archive = get(&location, &[]);
    assert_eq!(archive.status, 200);
    assert_eq!(archive.header("content-type"), Some("application/x-gzip"));
    let names = names(&archive.body);
    let top = format!("acme-app-{}/", &s.c1[..7]);
    assert!(names.iter().all(|n| n.starts_with(&top)), "{names:?}");
    assert!(names.contains(&format!("{top}README.md")), "{names:?}");
    assert!(
        names.contains(&format!("{top}docs/guide/intro.md")),
        "{names:?}"
    );

    // Without the signature the token is needed; an unknown ref or commit is a 404.
    let bare = location.split('?').next().unwrap();
    assert_eq!(get(bare, &[]).status, 401);
    assert_eq!(get(bare, &auth).status, 200);
    assert_eq!(get(&format!("{api}/tarball/v1.0.0"), &[]).status, 401);
    assert_eq!(
        get(&format!("{api}/tarball/no-such-ref"), &auth).status,
        404
    );
    let unknown = format!(
        "{}/codeload/acme/app/legacy.tar.gz/{}",
        server.api_url(),
        "1".repeat(40)
    );
    assert_eq!(get(&unknown, &auth).status, 404);
}
