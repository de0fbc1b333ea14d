//! The running server: a tokio runtime on its own thread, an accept loop, hyper HTTP/1.1
//! connections with keep-alive, and the one place where a finished reply is handed to the
//! connection ([`deliver`]).
//!
//! Per request: the head is copied into a [`Req`], the fault rules decide what to do to it
//! (`fault::Rules::plan`, in arrival order), the git/file work runs on the blocking pool
//! (`routes::handle`), a fault may replace the answer, the outcome is recorded in the stats, a
//! fault's latency is waited (asynchronously), and [`deliver`] turns the reply into a hyper
//! response whose body is streamed and shaped by `wire::Body`. Each connection's socket is
//! `wire::WireIo` over `stats::CountingIo`, which carries out what a body arms (resets, clean
//! closes, stall barriers).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::fault::{self, Fault};
use crate::http::{self, Reply, Req};
use crate::routes::{self, App};
use crate::stats::{ConnCounters, CountingIo, RequestRecord, Stats};
use crate::wire::{self, Body, Wire, WireIo};
use crate::{Error, Options, answers};

/// A client has this long to send a complete request head (also the idle keep-alive limit).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The control endpoint for benchmarks (not counted in the stats).
const STATS_PATH: &str = "/_ota/stats";

/// A running server. Dropping it shuts it down and joins its thread.
pub struct Server {
    addr: SocketAddr,
    app: Arc<App>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Opens the repository, binds `options.addr` and serves on a background thread with its
    /// own runtime. Returns once the socket is listening; fails at once if the repository
    /// cannot be opened, the assets directory is unreadable or the address is taken.
    pub fn start(options: Options) -> Result<Server, Error> {
        let Listening {
            app,
            runtime,
            listener,
            addr,
        } = Listening::prepare(&options)?;
        let (shutdown, stop) = oneshot::channel();
        let served = Arc::clone(&app);
        let thread = std::thread::Builder::new()
            .name("ota-serve".to_string())
            .spawn(move || {
                runtime.block_on(accept_loop(listener, served, async {
                    let _ = stop.await;
                }));
                // Abandon connections still open (keep-alive clients); wait briefly for git
                // work already running on the blocking pool.
                runtime.shutdown_timeout(Duration::from_secs(2));
            })
            .map_err(Error::Runtime)?;
        Ok(Server {
            addr,
            app,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API base URL, e.g. `http://127.0.0.1:PORT`.
    pub fn api_url(&self) -> String {
        format!("http://{}", connectable(self.addr))
    }

    /// The raw-file base URL, e.g. `http://127.0.0.1:PORT/raw`.
    pub fn raw_url(&self) -> String {
        format!("{}/raw", self.api_url())
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.app.stats.snapshot()
    }

    /// Zeroes the counters and clears the request log.
    pub fn reset_stats(&self) {
        self.app.stats.reset();
    }

    /// Replaces the fault rules, for requests from now on (responses already being sent keep
    /// theirs). Counters of `skip` and `times` start afresh.
    pub fn set_faults(&self, faults: Vec<Fault>) {
        self.app.faults.set(faults);
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.app.faults.set(Vec::new());
    }

    /// Stops accepting, closes connections and joins the server thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the server thread panicked");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).finish()
    }
}

/// Serves in the foreground until Ctrl-C or SIGTERM (for `ota-serve`). Logs the URLs to put in
/// a client's configuration.
pub fn run(options: Options) -> Result<(), Error> {
    serve_until(&options, stop_signal(), |addr| {
        let api_url = format!("http://{}", connectable(addr));
        tracing::info!(
            "serving {} on {addr}: api_url = \"{api_url}\", raw_url = \"{api_url}/raw\"",
            options.repo.display()
        );
    })?;
    tracing::info!("stopped");
    Ok(())
}

/// `run` with a chosen stop condition; `listening` is called once the socket is bound.
pub(crate) fn serve_until(
    options: &Options,
    stop: impl Future<Output = ()>,
    listening: impl FnOnce(SocketAddr),
) -> Result<(), Error> {
    let Listening {
        app,
        runtime,
        listener,
        addr,
    } = Listening::prepare(options)?;
    listening(addr);
    runtime.block_on(accept_loop(listener, app, stop));
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

/// Everything checked and bound before the first request: the repository is open, the
/// assets directory readable, the socket listening.
struct Listening {
    app: Arc<App>,
    runtime: tokio::runtime::Runtime,
    listener: TcpListener,
    addr: SocketAddr,
}

impl Listening {
    fn prepare(options: &Options) -> Result<Listening, Error> {
        let app = Arc::new(App::new(options)?);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("ota-serve-worker")
            .build()
            .map_err(Error::Runtime)?;
        let bind_error = |source| Error::Bind {
            addr: options.addr,
            source,
        };
        let std_listener = std::net::TcpListener::bind(options.addr).map_err(bind_error)?;
        std_listener.set_nonblocking(true).map_err(bind_error)?;
        let addr = std_listener.local_addr().map_err(bind_error)?;
        let listener = {
            let _guard = runtime.enter();
            TcpListener::from_std(std_listener).map_err(bind_error)?
        };
        Ok(Listening {
            app,
            runtime,
            listener,
            addr,
        })
    }
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(err) => {
                tracing::warn!("cannot listen for SIGTERM ({err}); stop with Ctrl-C");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// An address a client can connect to: `0.0.0.0`/`::` become loopback.
fn connectable(addr: SocketAddr) -> SocketAddr {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

async fn accept_loop(listener: TcpListener, app: Arc<App>, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve_connection(stream, peer.ip(), Arc::clone(&app)));
                }
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// What a request handler knows about its connection.
struct Conn {
    counters: Arc<ConnCounters>,
    wire: Arc<Wire>,
    /// The client's address (named in rate-limit messages).
    peer: IpAddr,
    /// For requests without `Host` (HTTP/1.0): the address the client connected to.
    local: String,
}

async fn serve_connection(stream: tokio::net::TcpStream, peer: IpAddr, app: Arc<App>) {
    let local = stream
        .local_addr()
        .map_or_else(|_| "127.0.0.1".to_string(), |a| a.to_string());
    let conn = Arc::new(Conn {
        counters: app.stats.connection(),
        wire: Wire::new(),
        peer,
        local,
    });
    let io = TokioIo::new(WireIo::new(
        CountingIo::new(stream, Arc::clone(&conn.counters)),
        Arc::clone(&conn.wire),
    ));
    let service = service_fn(move |request| {
        let app = Arc::clone(&app);
        let conn = Arc::clone(&conn);
        async move { Ok::<_, Infallible>(handle(app, conn, request).await) }
    });
    let result = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true)
        .serve_connection(io, service)
        .await;
    if let Err(err) = result {
        tracing::debug!("connection ended: {err}");
    }
}

async fn handle(
    app: Arc<App>,
    conn: Arc<Conn>,
    request: hyper::Request<Incoming>,
) -> Response<Body> {
    let arrived = tokio::time::Instant::now();
    let (parts, _body) = request.into_parts();
    // The authority the client used: from an absolute URI, else `Host`, else the socket. It
    // goes into URLs and headers we send back, so anything but a plain host[:port] is ignored.
    let host = parts
        .uri
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            let host = parts.headers.get(header::HOST)?.to_str().ok()?;
            Some(host.to_string())
        })
        .filter(|h| plain_authority(h))
        .unwrap_or_else(|| conn.local.clone());
    let req = Req {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        host,
    };
    if req.path == STATS_PATH {
        conn.counters.exclude_from_now();
        return wire::plain(stats_reply(&app, &req));
    }
    let mut plan = app.faults.plan(&req.path_and_query(), &req.host);
    let mut record = RequestRecord {
        method: req.method.to_string(),
        path: req.path_and_query(),
        status: 0,
        class: crate::stats::RequestClass::Other,
        body_bytes: 0,
        authorized: req.headers.contains_key(header::AUTHORIZATION),
        range: req.header(header::RANGE).map(str::to_string),
        if_none_match: req.header(header::IF_NONE_MATCH).map(str::to_string),
        faults: Vec::new(),
        content_length: None,
    };
    let req = Arc::new(req);
    let (worker, request) = (Arc::clone(&app), Arc::clone(&req));
    let reply = match tokio::task::spawn_blocking(move || routes::handle(&worker, &request)).await {
        Ok(reply) => reply,
        Err(err) => {
            tracing::error!("request handler failed: {err}");
            Reply::error(StatusCode::INTERNAL_SERVER_ERROR, "Server Error")
        }
    };
    let reply = match &plan.answer {
        Some(answer) => answers::answer(answer, &req, reply, conn.peer),
        None => reply,
    };
    record.status = reply.status.as_u16();
    record.class = reply.class;
    // A body of unknown length (a streamed archive) is counted as it is sent, by its meter.
    let len = reply.body.len();
    record.body_bytes = match plan.shape.cut {
        Some((at, _)) => len.unwrap_or(0).min(at),
        None => len.unwrap_or(0),
    };
    record.faults = std::mem::take(&mut plan.names);
    let first = conn.wire.first_response();
    let latency = plan.latency;
    let mut response = deliver(reply, plan, &conn.wire);
    record.content_length = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let meter = app.stats.record(record);
    if len.is_none() {
        response.body_mut().meter(meter);
    }
    if !latency.is_zero() {
        // A round trip before the head; a new connection's handshake costs another.
        let wait = if first {
            latency.saturating_mul(2)
        } else {
            latency
        };
        if let Some(until) = arrived.checked_add(wait) {
            tokio::time::sleep_until(until).await;
        }
    }
    response
}

fn plain_authority(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
}

/// `GET /_ota/stats` (`?reset=1` to reset after reading). Closes the connection so that the
/// control traffic never mixes with counted traffic.
fn stats_reply(app: &App, req: &Req) -> Reply {
    let stats = app.stats.snapshot();
    if req.query_param("reset").is_some_and(|v| v != "0") {
        app.stats.reset();
    }
    let mut reply = Reply::json(&stats);
    reply.etag = None;
    let mut reply = http::finish(req, reply);
    reply
        .headers
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    reply
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    reply
}

/// The seam between "what to answer" and "what goes on the wire": every reply (except the
/// stats endpoint's) passes here exactly once, with its final status, headers and body (a
/// fault's replacement answer included) and what the faults do to its bytes.
fn deliver(reply: Reply, plan: fault::Plan, wire: &Arc<Wire>) -> Response<Body> {
    wire::respond(reply, plan.shape, wire)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::fixture::{FileSpec, RepoWriter};

    /// The foreground path of `run`, with a test-controlled stop instead of a signal.
    #[test]
    fn serve_until_serves_then_stops() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = RepoWriter::init(dir.path(), true).unwrap();
        let mut files = BTreeMap::new();
        let bytes = b"served\n".to_vec();
        files.insert("f".to_string(), FileSpec::File { bytes, exec: false });
        writer.commit("main", &files, "one", 1_700_000_000).unwrap();

        let (stop, stopped) = oneshot::channel::<()>();
        let (tell, told) = std::sync::mpsc::channel();
        let options = Options::new(dir.path());
        let thread = std::thread::spawn(move || {
            serve_until(
                &options,
                async {
                    let _ = stopped.await;
                },
                move |addr| tell.send(addr).unwrap(),
            )
        });
        let addr = told.recv().unwrap();
        let body = ureq::get(format!("http://{addr}/raw/o/r/main/f"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        assert_eq!(body, "served\n");
        stop.send(()).unwrap();
        thread.join().unwrap().unwrap();
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "no longer listening"
        );
    }
}
