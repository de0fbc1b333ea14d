//! The server over time and under load: new tags appear at once, bare repositories, many
//! concurrent clients.

use std::thread;

use ota_serve::{Options, Server};

use crate::sample;
use crate::util::{T0, get, serve};

#[test]
fn tags_and_commits_pushed_while_running_appear_at_once() {
    let s = sample();
    let server = serve(s.git.path());
    let api = format!("{}/repos/acme/app", server.api_url());
    assert_eq!(get(&format!("{api}/releases/tags/v3.0.0"), &[]).status, 404);
    let sha = [("Accept", "application/vnd.github.sha")];
    assert_eq!(get(&format!("{api}/commits/main"), &sha).text(), s.c3);

    s.git.write("README.md", b"hello v4\n");
    let c4 = s.git.commit_all("fourth", T0 + 100);
    s.git.run(&["tag", "-a", "v3.0.0", "-m", "Release 3"]);

    assert_eq!(get(&format!("{api}/commits/main"), &sha).text(), c4);
    let release = get(&format!("{api}/releases/tags/v3.0.0"), &[]);
    assert_eq!(release.status, 200);
    assert_eq!(
        get(&format!("{api}/releases/latest"), &[]).json()["tag_name"],
        "v3.0.0"
    );
    assert_eq!(
        get(
            &format!("{}/acme/app/v3.0.0/README.md", server.raw_url()),
            &[]
        )
        .text(),
        "hello v4\n"
    );

    // Packing refs and objects while serving changes nothing visible.
    s.git.run(&["gc", "-q", "--prune=now"]);
    assert_eq!(get(&format!("{api}/commits/main"), &sha).text(), c4);
    assert_eq!(
        get(&format!("{api}/git/ref/tags/v1.0.0"), &[]).json()["object"]["sha"],
        s.c1.as_str()
    );
    assert_eq!(
        get(
            &format!("{}/acme/app/v1.0.0/README.md", server.raw_url()),
            &[]
        )
        .text(),
        "hello\n"
    );
}

#[test]
fn bare_repositories_serve_the_same() {
    let s = sample();
    let (_dir, bare) = s.git.bare_clone();
    let server = serve(&bare);
    let api = format!("{}/repos/acme/app", server.api_url());
    assert_eq!(
        get(&format!("{api}/releases/latest"), &[]).json()["tag_name"],
        "v1.1.1"
    );
    assert_eq!(get(&api, &[]).json()["default_branch"], "main");
    assert_eq!(
        get(
            &format!("{}/acme/app/feature/x/feature.txt", server.raw_url()),
            &[]
        )
        .text(),
        "feature\n"
    );
    let git_dir = s.git.path().join(".git");
    let via_git_dir = serve(&git_dir);
    assert_eq!(
        get(
            &format!("{}/acme/app/main/README.md", via_git_dir.raw_url()),
            &[]
        )
        .text(),
        "hello v3\n"
    );
}

#[test]
fn start_fails_fast_on_a_bad_repository() {
    let dir = tempfile::tempdir().unwrap();
    let err = Server::start(Options::new(dir.path().join("missing"))).unwrap_err();
    assert!(matches!(err, ota_serve::Error::OpenRepo { .. }), "{err}");
    let err = Server::start(Options::new(dir.path())).unwrap_err();
    assert!(matches!(err, ota_serve::Error::OpenRepo { .. }), "{err}");

    let s = sample();
    let mut options = Options::new(s.git.path());
    options.assets = Some(dir.path().join("no-assets"));
    assert!(matches!(
        Server::start(options).unwrap_err(),
        ota_serve::Error::Assets { .. }
    ));

    let first = serve(s.git.path());
    let mut options = Options::new(s.git.path());
    options.addr = first.addr();
    assert!(matches!(
        Server::start(options).unwrap_err(),
        ota_serve::Error::Bind { .. }
    ));
}

#[test]
fn concurrent_clients_get_correct_bodies() {
    let s = sample();
    let big: Vec<u8> = (0..600_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    s.git.write("big.bin", &big);
    s.git.commit_all("big", T0);
    let server = serve(s.git.path());
    let api = server.api_url();
    let raw = server.raw_url();
    let expected_tree = get(&format!("{api}/repos/o/r/git/trees/main?recursive=1"), &[]).body;
    let threads: Vec<_> = (0..32)
        .map(|i| {
            let (api, raw, big, tree) =
                (api.clone(), raw.clone(), big.clone(), expected_tree.clone());
            let c1 = s.c1.clone();
            thread::spawn(move || {
                for round in 0..4 {
                    match (i + round) % 4 {
                        0 => assert_eq!(get(&format!("{raw}/o/r/main/big.bin"), &[]).body, big),
                        1 => assert_eq!(
                            get(&format!("{raw}/o/r/{c1}/README.md"), &[]).text(),
                            "hello\n"
                        ),
                        2 => assert_eq!(
                            get(&format!("{api}/repos/o/r/git/trees/main?recursive=1"), &[]).body,
                            tree
                        ),
                        _ => {
                            let start = i * 1000;
                            let r = get(
                                &format!("{raw}/o/r/main/big.bin"),
                                &[("Range", &format!("bytes={start}-{}", start + 999))],
                            );
                            assert_eq!(r.body, big[start..start + 1000]);
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(server.stats().requests, 32 * 4 + 1);
}

#[test]
fn idle_and_slow_connections_do_not_block_others() {
    use std::io::Write;
    let s = sample();
    let server = serve(s.git.path());
    let mut idle: Vec<std::net::TcpStream> = (0..64)
        .map(|_| std::net::TcpStream::connect(server.addr()).unwrap())
        .collect();
    for (i, conn) in idle.iter_mut().enumerate() {
        if i % 2 == 0 {
            // Half a request head, never finished.
            conn.write_all(b"GET /repos/o/r HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
        }
    }
    let r = get(&format!("{}/o/r/main/README.md", server.raw_url()), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello v3\n");
    drop(idle);
    // Dropping the server with idle keep-alive connections open does not hang.
    let _kept = std::net::TcpStream::connect(server.addr()).unwrap();
    server.shutdown();
}
