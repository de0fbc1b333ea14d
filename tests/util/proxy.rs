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
    cut: Arc<Mutex<Option<Cut>>>,
}

/// A connection drop to make once: the answer to the first request whose line contains
/// `path` is cut after `after` bytes.
struct Cut {
    path: String,
    after: u64,
}

/// Shared by the two directions of one connection.
#[derive(Default)]
struct Armed {
    /// Bytes still forwarded to the client before the connection is cut.
    left: Option<u64>,
}

impl Proxy {
    /// Once: cuts the connection answering the first request for `path` after `after`
    /// bytes of the answer (headers included) reached the client.
    pub fn cut_once(&self, path: &str, after: u64) {
        *self.cut.lock().unwrap() = Some(Cut {
            path: path.to_owned(),
            after,
        });
    }

    /// Forwards connections made to the proxy's port to `127.0.0.1:upstream`.
    pub fn to(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections: Arc<Mutex<Vec<Arc<Mutex<Connection>>>>> = Arc::default();
        let all = Arc::clone(&connections);
        let cut: Arc<Mutex<Option<Cut>>> = Arc::default();
        let cuts = Arc::clone(&cut);
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
                let armed = Arc::new(Mutex::new(Armed::default()));
                let (a2, cuts2) = (Arc::clone(&armed), Arc::clone(&cuts));
                thread::spawn(move || pump(client, server, &up, true, &armed, &cuts2));
                let no_cut = Arc::default();
                thread::spawn(move || pump(s2, c2, &seen, false, &a2, &no_cut));
            }
        });
        Proxy {
            port,
            connections,
            cut,
        }
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
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    seen: &Mutex<Connection>,
    upstream: bool,
    armed: &Mutex<Armed>,
    cut: &Mutex<Option<Cut>>,
) {
    let mut buf = [0u8; 16 * 1024];
    let mut head = Vec::new();
    loop {
        let mut n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut cut_now = false;
        {
            let mut seen = seen.lock().unwrap();
            if upstream {
                seen.up += n as u64;
                head.extend_from_slice(&buf[..n]);
                while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    let text = String::from_utf8_lossy(&head[..end]).into_owned();
                    let line = text.lines().next().unwrap_or_default().to_owned();
                    let mut cut = cut.lock().unwrap();
                    if cut.as_ref().is_some_and(|c| line.contains(&c.path)) {
                        armed.lock().unwrap().left = cut.take().map(|c| c.after);
                    }
                    seen.requests.push(line);
                    head.drain(..end + 4);
                }
            } else {
                let mut armed = armed.lock().unwrap();
                if let Some(left) = armed.left.as_mut() {
                    if (n as u64) >= *left {
                        n = *left as usize;
                        cut_now = true;
                    }
                    *left -= n as u64;
                }
                seen.down += n as u64;
            }
        }
        if to.write_all(&buf[..n]).is_err() || cut_now {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
