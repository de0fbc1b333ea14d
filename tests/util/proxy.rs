//! A counting proxy on loopback: forwards every TCP connection to a server and counts the
//! bytes each way and the HTTP requests (with their request lines), per connection.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

/// What went through one connection.
#[derive(Clone, Debug, Default)]
pub struct Connection {
    /// Bytes from the client to the server (requests, headers included).
    pub up: u64,
    /// Bytes from the server to the client (answers, headers included).
    pub down: u64,
    /// The request lines sent, e.g. `GET /manifest.json HTTP/1.1`.
    pub requests: Vec<String>,
}

/// Totals over a set of connections.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub connections: u64,
    pub requests: u64,
    pub up: u64,
    pub down: u64,
}

impl Totals {
    pub fn bytes(&self) -> u64 {
        self.up + self.down
    }
}

/// A running proxy.
pub struct Proxy {
    port: u16,
    connections: Arc<Mutex<Vec<Arc<Mutex<Connection>>>>>,
}

impl Proxy {
    /// Forwards connections made to the proxy's port to `127.0.0.1:upstream`.
    pub fn to(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections: Arc<Mutex<Vec<Arc<Mutex<Connection>>>>> = Arc::default();
        let all = Arc::clone(&connections);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let seen = Arc::new(Mutex::new(Connection::default()));
                all.lock().unwrap().push(Arc::clone(&seen));
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let up = Arc::clone(&seen);
                thread::spawn(move || pump(client, server, &up, true));
                thread::spawn(move || pump(s2, c2, &seen, false));
            }
        });
        Proxy { port, connections }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A snapshot of every connection so far.
    pub fn connections(&self) -> Vec<Connection> {
        let all = self.connections.lock().unwrap();
        all.iter().map(|c| c.lock().unwrap().clone()).collect()
    }

    /// Every request line so far.
    pub fn requests(&self) -> Vec<String> {
        self.connections()
            .into_iter()
            .flat_map(|c| c.requests)
            .collect()
    }

    /// Totals so far.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for c in self.connections() {
            t.connections += 1;
            t.requests += c.requests.len() as u64;
            t.up += c.up;
            t.down += c.down;
        }
        t
    }
}

/// Copies `from` into `to`, counting; on the client side, cuts the stream into request
/// heads (GET requests have no body) to record each request line.
fn pump(mut from: TcpStream, mut to: TcpStream, seen: &Mutex<Connection>, upstream: bool) {
    let mut buf = [0u8; 16 * 1024];
    let mut head = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        {
            let mut seen = seen.lock().unwrap();
            if upstream {
                seen.up += n as u64;
                head.extend_from_slice(&buf[..n]);
                while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    let text = String::from_utf8_lossy(&head[..end]).into_owned();
                    seen.requests
                        .push(text.lines().next().unwrap_or_default().to_owned());
                    head.drain(..end + 4);
                }
            } else {
                seen.down += n as u64;
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
