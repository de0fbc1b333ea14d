//! Fault injection on the wire: every action against a real server on 127.0.0.1, seen by a
//! real client (ureq) or a raw socket where exact bytes, the kind of break (RST or FIN) or the
//! declared length matter. Timing is only ever asserted as a lower bound. Every test ends by
//! checking that the server still serves correctly.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ota_serve::fault::{Action, Fault};
use ota_serve::fixture::{FileSpec, RepoWriter};
use ota_serve::{Options, Server};

use crate::util::{Resp, get, head};

const BIG: &str = "/raw/o/r/main/big.bin";
const SMALL: &str = "/raw/o/r/main/small.txt";
const LATEST: &str = "/repos/o/r/releases/latest";
const SMALL_TEXT: &[u8] = b"The quick brown fox jumps over the lazy dog.\n";

/// 1 MiB that is not periodic in any small period.
fn big() -> &'static [u8] {
    static BIG: OnceLock<Vec<u8>> = OnceLock::new();
    BIG.get_or_init(|| {
        (0..1usize << 20)
            .map(|i| ((i % 251) ^ (i >> 12)) as u8)
            .collect()
    })
}

/// A bare repository with `big.bin`, `small.txt` and a release `v1.0.0`, shared by every test
/// (servers only read it). Written once per build directory, since writing it takes longer
/// than most tests.
fn repo() -> &'static Path {
    static REPO: OnceLock<PathBuf> = OnceLock::new();
    REPO.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ota-serve-faults-v1");
        if dir.join("ready").exists() {
            return dir.join("repo");
        }
        let building = dir.with_extension(std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&building);
        std::fs::create_dir_all(building.join("repo")).unwrap();
        let mut writer = RepoWriter::init(&building.join("repo"), true).unwrap();
        let mut files = BTreeMap::new();
        let file = |bytes: &[u8]| FileSpec::File {
            bytes: bytes.to_vec(),
            exec: false,
        };
        files.insert("big.bin".to_string(), file(big()));
        files.insert("small.txt".to_string(), file(SMALL_TEXT));
        let commit = writer
            .commit("main", &files, "files", 1_700_000_000)
            .unwrap();
        writer
            .tag_annotated("v1.0.0", &commit, "First", 1_700_000_000)
            .unwrap();
        std::fs::write(building.join("ready"), b"").unwrap();
        // Another test process may have won the race; its copy is the same.
        if !dir.join("ready").exists() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        if std::fs::rename(&building, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&building);
        }
        dir.join("repo")
    })
}

/// A server over the shared repository.
struct Fixture {
    server: Server,
    big: &'static [u8],
}

impl Fixture {
    fn new(faults: Vec<Fault>) -> Fixture {
        let mut options = Options::new(repo());
        options.faults = faults;
        Fixture {
            server: Server::start(options).unwrap(),
            big: big(),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.api_url())
    }

    fn get(&self, path: &str) -> Resp {
        get(&self.url(path), &[])
    }

    /// The request log entry of the last request.
    fn last_faults(&self) -> Vec<String> {
        self.server.stats().log.last().unwrap().faults.clone()
    }

    /// Clears the faults and checks that files and the API are served correctly, on new
    /// connections and on a kept-alive one.
    fn assert_healthy(&self) {
        self.server.clear_faults();
        let file = self.get(BIG);
        assert_eq!(file.status, 200);
        assert!(file.body == self.big, "big.bin is served intact");
        assert_eq!(self.get(LATEST).json()["tag_name"], "v1.0.0");
        let mut conn = KeepAlive::open(self.addr());
        for _ in 0..2 {
            let (head, body) = conn.get(SMALL);
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert_eq!(body, SMALL_TEXT);
        }
    }
}

/// How a raw exchange ended.
#[derive(Debug, PartialEq, Eq)]
enum Break {
    /// FIN: a clean close.
    Eof,
    /// RST.
    Reset,
    /// Nothing more within the read timeout: the connection is still open.
    Open,
}

/// Everything a raw socket received for one request: head, body bytes, and how it ended.
#[derive(Debug)]
struct Wired {
    head: String,
    body: Vec<u8>,
    end: Break,
}

impl Wired {
    fn status(&self) -> u16 {
        self.head.split(' ').nth(1).unwrap().parse().unwrap()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn content_length(&self) -> u64 {
        self.header("content-length").unwrap().parse().unwrap()
    }
}

fn request(method: &str, path: &str, addr: SocketAddr, close: bool) -> String {
    let close = if close { "Connection: close\r\n" } else { "" };
    format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: faults\r\n{close}\r\n")
}

/// Reads until the peer closes, resets, or sends nothing for `idle`.
fn read_all(stream: &mut TcpStream, idle: Duration) -> (Vec<u8>, Break) {
    stream.set_read_timeout(Some(idle)).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (out, Break::Eof),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (out, Break::Reset),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (out, Break::Open);
            }
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

fn split(bytes: Vec<u8>, end: Break) -> Wired {
    let at = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete head in {:?}", String::from_utf8_lossy(&bytes)));
    Wired {
        head: String::from_utf8(bytes[..at].to_vec()).unwrap(),
        body: bytes[at + 4..].to_vec(),
        end,
    }
}

/// One request on a fresh raw connection, read until it ends. With `close`, the request asks
/// for `Connection: close`; without, any close or reset comes from the server on its own.
fn raw(addr: SocketAddr, method: &str, path: &str, close: bool) -> Wired {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(request(method, path, addr, close).as_bytes())
        .unwrap();
    let idle = if close { 10 } else { 2 };
    let (bytes, end) = read_all(&mut stream, Duration::from_secs(idle));
    split(bytes, end)
}

/// A kept-alive raw connection that reads responses by their `Content-Length`.
struct KeepAlive {
    stream: TcpStream,
    addr: SocketAddr,
    buffered: Vec<u8>,
}

impl KeepAlive {
    fn open(addr: SocketAddr) -> KeepAlive {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        KeepAlive {
            stream,
            addr,
            buffered: Vec::new(),
        }
    }

    fn fill(&mut self) {
        let mut buf = [0; 16 * 1024];
        let n = self.stream.read(&mut buf).unwrap();
        assert!(n > 0, "the server closed a kept-alive connection");
        self.buffered.extend_from_slice(&buf[..n]);
    }

    /// `GET path`; returns the head and the body.
    fn get(&mut self, path: &str) -> (String, Vec<u8>) {
        let request = request("GET", path, self.addr, false);
        self.stream.write_all(request.as_bytes()).unwrap();
        let at = loop {
            if let Some(at) = self.buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            self.fill();
        };
        let head = String::from_utf8(self.buffered[..at].to_vec()).unwrap();
        self.buffered.drain(..at + 4);
        let wired = Wired {
            head,
            body: Vec::new(),
            end: Break::Open,
        };
        let len = usize::try_from(wired.content_length()).unwrap();
        while self.buffered.len() < len {
            self.fill();
        }
        let body = self.buffered.drain(..len).collect();
        (wired.head, body)
    }
}

#[test]
fn reset_after_sends_exactly_n_body_bytes_then_an_rst() {
    let f = Fixture::new(vec!["/raw/*=reset-after:1000,times=1".parse().unwrap()]);
    f.server.reset_stats();
    let wired = raw(f.addr(), "GET", BIG, false);
    assert_eq!(wired.status(), 200);
    assert_eq!(
        wired.content_length(),
        1 << 20,
        "the true length is declared"
    );
    assert_eq!(wired.body.len(), 1000);
    assert_eq!(wired.body, f.big[..1000]);
    assert_eq!(wired.end, Break::Reset);
    let stats = f.server.stats();
    assert_eq!(stats.log[0].faults, ["reset-after:1000"]);
    assert_eq!(stats.log[0].body_bytes, 1000);
    assert_eq!(
        stats.wire_bytes_out,
        wired.head.len() as u64 + 4 + 1000,
        "the counters see exactly what crossed the socket"
    );
    f.assert_healthy();
}

#[test]
fn a_reset_waits_until_a_slow_reader_has_every_byte_before_it() {
    let f = Fixture::new(vec!["/raw/*=reset-after:900000,times=1".parse().unwrap()]);
    let mut stream = TcpStream::connect(f.addr()).unwrap();
    stream
        .write_all(request("GET", BIG, f.addr(), false).as_bytes())
        .unwrap();
    // Let the server fill the socket buffers while nothing is read, then read slowly: an RST
    // sent as soon as the bytes were handed to the kernel would discard the unsent ones.
    thread::sleep(Duration::from_millis(300));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0; 4096];
    let end = loop {
        match stream.read(&mut buf) {
            Ok(0) => break Break::Eof,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break Break::Reset,
            Err(e) => panic!("read failed: {e}"),
        }
    };
    let wired = split(out, end);
    assert_eq!(wired.body.len(), 900_000);
    assert!(wired.body == f.big[..900_000]);
    assert_eq!(wired.end, Break::Reset);
    f.assert_healthy();
}

#[test]
fn reset_after_zero_resets_right_after_the_head_also_for_head_requests() {
    let f = Fixture::new(vec![Fault::new("*", Action::ResetAfter(0)).times(2)]);
    let wired = raw(f.addr(), "GET", LATEST, false);
    assert_eq!(wired.status(), 200);
    assert!(wired.content_length() > 0);
    assert_eq!(wired.body, b"");
    assert_eq!(wired.end, Break::Reset);

    let wired = raw(f.addr(), "HEAD", BIG, false);
    assert_eq!(wired.status(), 200);
    assert_eq!(wired.content_length(), 1 << 20);
    assert_eq!(wired.body, b"");
    assert_eq!(wired.end, Break::Reset);
    f.assert_healthy();
}

#[test]
fn truncate_closes_cleanly_after_n_bytes_also_for_json() {
    let f = Fixture::new(Vec::new());
    let whole = f.get(LATEST).body;
    f.server.set_faults(vec![
        "/raw/*=truncate:70000,times=1".parse().unwrap(),
        "*/releases/latest=truncate:10,times=1".parse().unwrap(),
    ]);
    let wired = raw(f.addr(), "GET", BIG, false);
    assert_eq!(wired.content_length(), 1 << 20);
    assert_eq!(wired.body, f.big[..70_000], "crosses a 64 KiB chunk");
    assert_eq!(wired.end, Break::Eof, "FIN, not RST");

    let wired = raw(f.addr(), "GET", LATEST, false);
    assert_eq!(wired.content_length(), whole.len() as u64);
    assert_eq!(wired.body, whole[..10]);
    assert_eq!(wired.end, Break::Eof);
    assert_eq!(f.last_faults(), ["truncate:10"]);
    f.assert_healthy();
}

#[test]
fn a_cut_past_the_end_of_the_body_ends_the_connection_after_it() {
    let f = Fixture::new(vec![
        Fault::new(SMALL, Action::ResetAfter(1 << 30)).times(1),
    ]);
    let wired = raw(f.addr(), "GET", SMALL, false);
    assert_eq!(wired.body, SMALL_TEXT);
    assert_eq!(wired.end, Break::Reset);
    f.assert_healthy();
}

#[test]
fn flip_byte_inverts_exactly_one_byte() {
    let f = Fixture::new(vec![
        Fault::new(SMALL, Action::FlipByte(5)),
        Fault::new(BIG, Action::FlipByte(100_000)),
        Fault::new(BIG, Action::FlipByte(1 << 20)),
    ]);
    let small = f.get(SMALL).body;
    let mut want = SMALL_TEXT.to_vec();
    want[5] = !want[5];
    assert_eq!(small, want);

    // In a later chunk; the flip past the end changes nothing.
    let body = f.get(BIG).body;
    let mut want = f.big.to_vec();
    want[100_000] = !want[100_000];
    assert!(body == want);
    assert_eq!(f.last_faults(), ["flip-byte:100000", "flip-byte:1048576"]);
    f.assert_healthy();
}

#[test]
fn stall_sends_n_bytes_then_nothing_for_the_pause_then_the_rest() {
    let pause = Duration::from_millis(250);
    let f = Fixture::new(vec![
        Fault::new(BIG, Action::Stall { after: 1000, pause }).times(1),
    ]);
    let mut stream = TcpStream::connect(f.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let asked = Instant::now();
    stream
        .write_all(request("GET", BIG, f.addr(), true).as_bytes())
        .unwrap();
    // Read byte by byte up to the 1000th body byte, then time the next one.
    let mut got = Vec::new();
    let mut byte = [0u8];
    while !got.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        got.push(byte[0]);
    }
    let mut first = vec![0; 1000];
    stream.read_exact(&mut first).unwrap();
    assert_eq!(first, f.big[..1000]);
    stream.read_exact(&mut byte).unwrap();
    assert!(
        asked.elapsed() >= pause,
        "byte 1001 came after {:?}",
        asked.elapsed()
    );
    let (rest, end) = read_all(&mut stream, Duration::from_secs(10));
    assert_eq!(end, Break::Eof);
    let mut body = first;
    body.push(byte[0]);
    body.extend(rest);
    assert!(body == f.big, "then the rest, intact");
    f.assert_healthy();
}

#[test]
fn a_client_that_leaves_during_a_stall_does_not_hurt_the_server() {
    let f = Fixture::new(vec![
        Fault::new(
            BIG,
            Action::Stall {
                after: 10,
                pause: Duration::from_millis(100),
            },
        )
        .times(1),
    ]);
    let mut stream = TcpStream::connect(f.addr()).unwrap();
    stream
        .write_all(request("GET", BIG, f.addr(), false).as_bytes())
        .unwrap();
    let mut some = [0; 100];
    let _ = stream.read(&mut some).unwrap();
    drop(stream);
    thread::sleep(Duration::from_millis(200));
    f.assert_healthy();
}

#[test]
fn status_answers_githubs_json_error_and_counts_skip_and_times() {
    let f = Fixture::new(vec!["/raw/*=status:503,skip=1,times=2".parse().unwrap()]);
    let statuses: Vec<u16> = (0..4).map(|_| f.get(SMALL).status).collect();
    assert_eq!(statuses, [200, 503, 503, 200]);

    f.server
        .set_faults(vec![Fault::new("*", Action::Status(502))]);
    let api = f.get(LATEST);
    assert_eq!(api.status, 502);
    assert!(
        api.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let json = api.json();
    assert_eq!(json["message"], "Bad Gateway");
    assert_eq!(json["status"], "502");
    assert!(
        json["documentation_url"]
            .as_str()
            .unwrap()
            .starts_with("https://docs.github.com")
    );
    assert_eq!(
        api.header("content-length").unwrap(),
        api.body.len().to_string()
    );
    let headed = head(&f.url(BIG), &[]);
    assert_eq!(headed.status, 502);
    assert!(headed.body.is_empty());
    assert_eq!(f.last_faults(), ["status:502"]);
    assert_eq!(f.server.stats().log.last().unwrap().status, 502);
    f.assert_healthy();
}

#[test]
fn rate_limits_answer_like_github() {
    let f = Fixture::new(vec![
        "*=rate-limit:429,reset-in:2s,retry-after:1s,times=1"
            .parse()
            .unwrap(),
    ]);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let limited = f.get(LATEST);
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("x-ratelimit-remaining"), Some("0"));
    let limit = limited.header("x-ratelimit-limit").unwrap();
    assert_eq!(limited.header("x-ratelimit-used"), Some(limit));
    assert_eq!(limited.header("x-ratelimit-resource"), Some("core"));
    let reset: u64 = limited
        .header("x-ratelimit-reset")
        .unwrap()
        .parse()
        .unwrap();
    assert!(reset >= now + 2, "reset {reset} is not 2 s after {now}");
    assert_eq!(limited.header("retry-after"), Some("1"));
    let message = limited.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.starts_with("API rate limit exceeded for 127.0.0.1."),
        "{message}"
    );
    assert_eq!(f.get(LATEST).status, 200, "times=1");

    f.server.set_faults(vec![Fault::new(
        "/repos/*",
        Action::RateLimit {
            status: 403,
            reset_in: Duration::from_secs(60),
            retry_after: None,
        },
    )]);
    let forbidden = get(&f.url(LATEST), &[("Authorization", "Bearer x")]);
    assert_eq!(forbidden.status, 403);
    assert_eq!(forbidden.header("retry-after"), None);
    assert_eq!(forbidden.header("x-ratelimit-remaining"), Some("0"));
    assert!(
        forbidden.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("API rate limit exceeded for user ID")
    );
    assert_eq!(f.get(SMALL).status, 200, "raw files are not under /repos");
    f.assert_healthy();
}

#[test]
fn a_short_declared_length_is_followed_by_the_true_body_and_a_close() {
    let f = Fixture::new(vec![Fault::new(SMALL, Action::WrongLength(-10))]);
    let wired = raw(f.addr(), "GET", SMALL, false);
    assert_eq!(wired.content_length(), SMALL_TEXT.len() as u64 - 10);
    assert_eq!(wired.body, SMALL_TEXT, "the whole body is on the wire");
    assert_eq!(wired.header("connection"), Some("close"));
    assert_eq!(wired.end, Break::Eof);
    // A client that trusts the header stops early.
    assert_eq!(f.get(SMALL).body, SMALL_TEXT[..SMALL_TEXT.len() - 10]);
    // HEAD: only the header.
    let wired = raw(f.addr(), "HEAD", SMALL, true);
    assert_eq!(wired.content_length(), SMALL_TEXT.len() as u64 - 10);
    assert_eq!(wired.body, b"");

    // A file body whose tail spans several chunks.
    f.server
        .set_faults(vec![Fault::new(BIG, Action::WrongLength(-300_000))]);
    let wired = raw(f.addr(), "GET", BIG, false);
    assert_eq!(wired.content_length(), (1 << 20) - 300_000);
    assert!(wired.body == f.big);
    assert_eq!(wired.end, Break::Eof);
    f.assert_healthy();
}

#[test]
fn a_long_declared_length_is_cut_short_by_a_close() {
    let f = Fixture::new(vec![Fault::new(SMALL, Action::WrongLength(10))]);
    let wired = raw(f.addr(), "GET", SMALL, false);
    assert_eq!(wired.content_length(), SMALL_TEXT.len() as u64 + 10);
    assert_eq!(wired.body, SMALL_TEXT);
    assert_eq!(wired.end, Break::Eof, "FIN before the declared end");

    f.server.clear_faults();
    let whole = f.get(LATEST).body;
    f.server
        .set_faults(vec![Fault::new("*", Action::WrongLength(5))]);
    let wired = raw(f.addr(), "GET", LATEST, false);
    assert_eq!(wired.content_length(), whole.len() as u64 + 5);
    assert_eq!(wired.body, whole);
    assert_eq!(wired.end, Break::Eof);
    f.assert_healthy();
}

#[test]
fn redirect_sends_the_same_path_and_query_to_another_authority() {
    let f = Fixture::new(Vec::new());
    let port = f.addr().port();
    f.server.set_faults(vec![
        format!("/raw/*=redirect:localhost:{port}").parse().unwrap(),
    ]);
    let path = format!("{SMALL}?x=1");
    let moved = f.get(&path);
    assert_eq!(moved.status, 302);
    let location = format!("http://localhost:{port}{path}");
    assert_eq!(moved.header("location"), Some(location.as_str()));
    assert_eq!(f.last_faults(), [format!("redirect:localhost:{port}")]);

    // At the alias (Host: localhost:PORT, still on 127.0.0.1), the rule does not apply.
    let mut stream = TcpStream::connect(f.addr()).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nUser-Agent: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let (bytes, _) = read_all(&mut stream, Duration::from_secs(10));
    let wired = split(bytes, Break::Eof);
    assert_eq!(wired.status(), 200);
    assert_eq!(wired.body, SMALL_TEXT);

    // To a second server, followed by a client.
    let second = Fixture::new(Vec::new());
    f.server.set_faults(vec![Fault::new(
        "/raw/*",
        Action::Redirect {
            to: second.addr().to_string(),
        },
    )]);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .max_redirects(1)
        .accept_encoding("")
        .build()
        .into();
    let body = agent
        .get(f.url(BIG))
        .call()
        .unwrap()
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .unwrap();
    assert!(body == second.big);
    assert_eq!(second.server.stats().requests, 1);
    f.assert_healthy();
}

#[test]
fn body_replaces_the_answer_for_api_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("portal.html");
    let html = "<html><body>Log in to the Wi-Fi</body></html>";
    std::fs::write(&page, html).unwrap();
    let f = Fixture::new(vec![
        format!("*/releases/latest=body:@{},times=1", page.display())
            .parse()
            .unwrap(),
    ]);
    let portal = f.get(LATEST);
    assert_eq!(portal.status, 200);
    assert_eq!(
        portal.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(portal.text(), html);
    assert_eq!(portal.header("etag"), None);
    assert_eq!(
        portal.header("content-length"),
        Some(html.len().to_string().as_str())
    );

    let hostile = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    f.server.set_faults(vec![Fault::new(
        "/raw/*",
        Action::Body {
            bytes: hostile.clone().into_bytes(),
            content_type: "application/json".to_string(),
        },
    )]);
    // Even a 206 becomes a 200 with the new body.
    let ranged = get(&f.url(BIG), &[("Range", "bytes=0-9")]);
    assert_eq!(ranged.status, 200);
    assert_eq!(ranged.header("content-range"), None);
    assert_eq!(ranged.text(), hostile);
    let headed = head(&f.url(BIG), &[]);
    assert_eq!(
        headed.header("content-length"),
        Some(hostile.len().to_string().as_str())
    );
    assert!(headed.body.is_empty());
    f.assert_healthy();
}

#[test]
fn latency_delays_the_head_and_twice_on_a_new_connection() {
    let delay = Duration::from_millis(100);
    let f = Fixture::new(vec![Fault::new(SMALL, Action::Latency(delay))]);
    let mut conn = KeepAlive::open(f.addr());
    let started = Instant::now();
    let (_, body) = conn.get(SMALL);
    assert_eq!(body, SMALL_TEXT);
    assert!(
        started.elapsed() >= delay * 2,
        "first response after {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let (_, body) = conn.get(SMALL);
    assert_eq!(body, SMALL_TEXT);
    assert!(
        started.elapsed() >= delay,
        "second response after {:?}",
        started.elapsed()
    );
    // HEAD and JSON too.
    f.server
        .set_faults(vec!["*=latency:100ms".parse().unwrap()]);
    let started = Instant::now();
    assert_eq!(head(&f.url(LATEST), &[]).status, 200);
    assert!(started.elapsed() >= delay);
    assert_eq!(f.last_faults(), ["latency:100ms"]);
    f.assert_healthy();
}

#[test]
fn bandwidth_caps_a_download_and_is_shared_by_connections() {
    let rate = 8_000_000u64;
    let f = Fixture::new(vec![Fault::new(BIG, Action::Bandwidth(rate))]);
    let started = Instant::now();
    let body = f.get(BIG).body;
    let elapsed = started.elapsed();
    assert!(body == f.big);
    let floor = Duration::from_secs_f64((1 << 20) as f64 / rate as f64);
    assert!(elapsed >= floor, "1 MiB at 8 MB/s took {elapsed:?}");

    // Two downloads at once share the link: together they take twice as long.
    let started = Instant::now();
    let url = f.url(BIG);
    let downloads: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            thread::spawn(move || get(&url, &[]).body.len())
        })
        .collect();
    for download in downloads {
        assert_eq!(download.join().unwrap(), 1 << 20);
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= floor * 2, "2 MiB at 8 MB/s took {elapsed:?}");
    f.assert_healthy();
}

#[test]
fn slow_faults_hold_no_thread_so_64_clients_wait_together() {
    let f = Fixture::new(vec!["*=latency:600ms".parse().unwrap()]);
    let done = Arc::new(Mutex::new(0));
    let url = f.url(SMALL);
    let clients: Vec<_> = (0..64)
        .map(|_| {
            let (url, done) = (url.clone(), Arc::clone(&done));
            thread::spawn(move || {
                let resp = get(&url, &[]);
                *done.lock().unwrap() += 1;
                resp.body
            })
        })
        .collect();
    // Requests are logged before their latency is waited: all 64 are waiting at once, which
    // a server that slept on its two worker threads could not do.
    while f.server.stats().requests < 64 {
        assert_eq!(
            *done.lock().unwrap(),
            0,
            "a response came before all 64 were waiting"
        );
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(*done.lock().unwrap(), 0);
    for client in clients {
        assert_eq!(client.join().unwrap(), SMALL_TEXT);
    }
    f.assert_healthy();
}

#[test]
fn set_faults_replaces_live_rules_and_restarts_counters() {
    let f = Fixture::new(vec![Fault::new("*", Action::Status(500))]);
    assert_eq!(f.get(SMALL).status, 500);
    let once = vec![Fault::new("*", Action::Status(503)).times(1)];
    f.server.set_faults(once.clone());
    assert_eq!(f.get(SMALL).status, 503);
    assert_eq!(f.get(SMALL).status, 200);
    f.server.set_faults(once);
    assert_eq!(f.get(SMALL).status, 503, "counters start afresh");
    f.server.clear_faults();
    assert_eq!(f.get(SMALL).status, 200);
    assert_eq!(f.last_faults(), Vec::<String>::new());
    f.assert_healthy();
}

#[test]
fn latency_bandwidth_and_reset_combine_on_one_request() {
    let f = Fixture::new(vec![
        "*=latency:50ms".parse().unwrap(),
        "/raw/*=bandwidth:2000000".parse().unwrap(),
        "/raw/*=reset-after:300000,times=1".parse().unwrap(),
        // Only the first of two answers applies.
        "/raw/*=status:503,times=1".parse().unwrap(),
        "/raw/*=status:504,times=1".parse().unwrap(),
    ]);
    let started = Instant::now();
    let wired = raw(f.addr(), "GET", BIG, false);
    let elapsed = started.elapsed();
    assert_eq!(wired.status(), 503);
    // The 503's small JSON body is what gets paced and cut (it is shorter than 300000).
    assert_eq!(wired.end, Break::Reset);
    assert_eq!(wired.body.len() as u64, wired.content_length());
    assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
    assert_eq!(
        f.last_faults(),
        [
            "latency:50ms",
            "bandwidth:2000000",
            "reset-after:300000",
            "status:503"
        ]
    );
    // The shadowed 504 kept its turn for the next request.
    assert_eq!(raw(f.addr(), "GET", BIG, true).status(), 504);
    // Now the file itself is paced and cut.
    f.server.set_faults(vec![
        "*=latency:50ms".parse().unwrap(),
        "/raw/*=bandwidth:2000000".parse().unwrap(),
        "/raw/*=reset-after:300000,times=1".parse().unwrap(),
    ]);
    let started = Instant::now();
    let wired = raw(f.addr(), "GET", BIG, false);
    let elapsed = started.elapsed();
    assert_eq!(wired.status(), 200);
    assert_eq!(wired.body, f.big[..300_000]);
    assert_eq!(wired.end, Break::Reset);
    // Twice 50 ms (new connection), then 300000 bytes at 2 MB/s.
    assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
    f.assert_healthy();
}
