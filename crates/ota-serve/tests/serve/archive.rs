//! Source archives: `tarball/{ref}` answers 302 to `/codeload/…`, which answers the gzip tar
//! `git archive` makes, entries under `{owner}-{repo}-{7-hex commit}/`, as on GitHub.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ota_serve::{Options, Server};
use test_git::noise;

use crate::sample;
use crate::util::{GitRepo, get, serve};

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

/// The `git archive` processes of `repo` that are children of this test process (the server
/// runs in it): their PIDs, found by their command line in /proc.
fn archivers(repo: &Path) -> Vec<u32> {
    let me = std::process::id().to_string();
    let repo = repo.to_str().unwrap();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap() {
        let Ok(pid) = entry.unwrap().file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let (Ok(stat), Ok(cmdline)) = (
            std::fs::read_to_string(format!("/proc/{pid}/stat")),
            std::fs::read(format!("/proc/{pid}/cmdline")),
        ) else {
            continue; // gone meanwhile
        };
        // `pid (comm) state ppid …`; comm may hold spaces, so split after its `)`.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split(' ').nth(2));
        let args: Vec<_> = cmdline.split(|&b| b == 0).collect();
        if ppid == Some(&me) && args.contains(&&b"archive"[..]) && args.contains(&repo.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn an_archive_is_sent_as_git_makes_it_and_a_client_that_leaves_stops_git() {
    // 32 MiB that gzip cannot shrink: more than the pipe, the server's read-ahead and both
    // sockets' buffers hold, so git is still writing when the client below stops reading.
    let mut git = GitRepo::new();
    git.write("first.txt", b"first\n");
    git.write("noise.bin", noise(32 << 20, 7));
    let commit = git.commit("big");
    let server = serve(git.path());
    let path = format!("/codeload/acme/app/legacy.tar.gz/{commit}");
    let addr = server.addr();

    // A client that reads the head and a few KB of the body, then hangs up.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: test\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    let head_end = loop {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n")
            && got.len() >= at + 4 + 8192
        {
            break at;
        }
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // No length up front: the body is chunked, as codeload sends it.
    assert!(head.contains("\r\ntransfer-encoding: chunked"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    assert!(head.contains(&format!("\r\netag: \"{commit}\"")), "{head}");
    let running = archivers(git.path());
    assert_eq!(
        running.len(),
        1,
        "git archive is still writing: {running:?}"
    );

    drop(stream);
    // The server kills git and reaps it: its /proc entry goes (a zombie would keep one).
    let pid = running[0];
    let deadline = Instant::now() + Duration::from_secs(60);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            Instant::now() < deadline,
            "git archive {pid} is still there"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(archivers(git.path()).is_empty());

    // The next client gets the whole archive, and the stats count what each was sent.
    let whole = get(&format!("{}{path}", server.api_url()), &[]);
    assert_eq!(whole.status, 200);
    assert_eq!(
        names(&whole.body),
        ["", "first.txt", "noise.bin"].map(|name| format!("acme-app-{}/{name}", &commit[..7]))
    );
    let stats = server.stats();
    let [left, read] = &stats.log[..] else {
        panic!("{:#?}", stats.log)
    };
    assert!(
        (8192..whole.body.len() as u64).contains(&left.body_bytes),
        "{left:?}"
    );
    assert_eq!(read.body_bytes, whole.body.len() as u64);
    assert_eq!(read.content_length, None);
    assert_eq!(stats.file_body_bytes, left.body_bytes + read.body_bytes);
    assert!(archivers(git.path()).is_empty());

    // HEAD and a matching If-None-Match start git too (the reply is made before they are
    // applied), and stop it: no git is left running or unreaped.
    let url = format!("{}{path}", server.api_url());
    let head = crate::util::head(&url, &[]);
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        None,
        "the length is not known"
    );
    assert!(head.body.is_empty());
    let tag = format!("\"{commit}\"");
    assert_eq!(get(&url, &[("If-None-Match", &tag)]).status, 304);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !archivers(git.path()).is_empty() || git_zombies() > 0 {
        assert!(Instant::now() < deadline, "a git archive is left behind");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Children of this test process named `git` that have exited but were not reaped (other
/// tests' git commands pass through this state for an instant while they are waited for).
fn git_zombies() -> usize {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            let fields: Vec<_> = stat
                .rsplit_once(')')
                .map_or(vec![], |(_, rest)| rest.split(' ').collect());
            stat.contains("(git)")
                && fields.get(1) == Some(&"Z")
                && fields.get(2) == Some(&me.as_str())
        })
        .count()
}
