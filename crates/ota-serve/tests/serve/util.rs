//! Test helpers: git repositories built with the real `git` CLI (`test_git`, shared with ota's
//! tests: an independent writer, so reader bugs are not mirrored), a small HTTP client, and
//! raw-socket requests for what a well-behaved client library refuses to send.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use ota_serve::{Options, Server};

pub use test_git::{GitRepo, T0};

/// Starts a server on the repository at `path` with default options.
pub fn serve(path: &Path) -> Server {
    Server::start(Options::new(path)).unwrap()
}

/// A response read completely.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!("not JSON ({err}): {}", String::from_utf8_lossy(&self.body))
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        // Never ask for compression implicitly: if ureq's `gzip` feature is on (feature
        // unification in a workspace build), it would also decompress behind our back.
        // Tests that want gzip send the header themselves over a raw socket.
        .accept_encoding("")
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn read(mut response: ureq::http::Response<ureq::Body>) -> Resp {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let body = response
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .unwrap();
    Resp {
        status,
        headers,
        body,
    }
}

/// `GET url` with extra headers (ureq adds a `User-Agent`).
pub fn get(url: &str, headers: &[(&str, &str)]) -> Resp {
    let mut request = agent().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    read(request.call().unwrap())
}

/// `HEAD url` with extra headers.
pub fn head(url: &str, headers: &[(&str, &str)]) -> Resp {
    let mut request = agent().head(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    read(request.call().unwrap())
}

/// Sends `request` verbatim on a fresh connection and returns the status and everything the
/// server sent (head and body). The request should say `Connection: close`.
pub fn raw_http(addr: SocketAddr, request: &str) -> (u16, String) {
    let text = String::from_utf8_lossy(&exchange(addr, request)).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Writes `request` on a fresh connection and reads until the server closes it.
fn exchange(addr: SocketAddr, request: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).unwrap();
    out
}

/// A response read from a raw socket, bytes untouched.
pub struct RawResp {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// `GET path` with extra header lines over a raw socket; the body is returned as sent.
pub fn raw_get_bytes(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawResp {
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: test\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let out = exchange(addr, &request);
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(out[..split].to_vec()).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    RawResp {
        status,
        head,
        body: out[split + 4..].to_vec(),
    }
}

/// `GET path` over a raw socket with a User-Agent, without any client-side normalisation.
pub fn raw_get(addr: SocketAddr, path: &str) -> (u16, String) {
    raw_http(
        addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: test\r\nConnection: close\r\n\r\n"
        ),
    )
}
