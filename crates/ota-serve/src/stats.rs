//! Counting what the server did, so tests and benchmarks can assert on traffic: how many
//! requests of each class, how many body bytes, how many 304s, and the real bytes on the socket.
//!
//! Request counts and body bytes are recorded per request after the reply is built; the bytes
//! of a body whose length is not known then (a streamed archive) are added as they are handed
//! to the connection ([`Meter`]). Wire bytes are counted by [`CountingIo`], a wrapper around
//! each accepted `TcpStream`, so they include headers, chunking and anything a client sent
//! that was never answered. Requests to the control endpoint `/_ota/stats` are not counted:
//! their connection is marked and its bytes from that request on are left out (see
//! [`ConnCounters::exclude_from_now`]).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most request records kept in [`Stats::log`]; older ones are dropped first, so a long-running
/// mirror does not grow without bound. Counters are never dropped.
pub const MAX_LOG_RECORDS: usize = 100_000;

/// What kind of resource a request asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum RequestClass {
    /// The REST API under `/repos/` (JSON, including the SHA media type and raw blobs).
    Api,
    /// Raw file hosting under `/raw/`.
    Raw,
    /// Release asset bytes: `/{o}/{r}/releases/download/…` and
    /// `/repos/{o}/{r}/releases/assets/{id}` asked for as `application/octet-stream`, and
    /// source archives (`/codeload/…`, where `tarball/{ref}` redirects).
    Asset,
    /// Anything else (unknown paths).
    Other,
}

/// A snapshot of the server's counters since start or the last reset.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// Requests answered (any class, any status).
    pub requests: u64,
    /// Requests of class [`RequestClass::Api`].
    pub api_requests: u64,
    /// Requests of class [`RequestClass::Raw`].
    pub raw_requests: u64,
    /// Requests of class [`RequestClass::Asset`].
    pub asset_requests: u64,
    /// Requests answered `304 Not Modified`.
    pub not_modified: u64,
    /// Response body bytes of all requests (after gzip; 0 for HEAD and 304).
    pub body_bytes: u64,
    /// Response body bytes of API requests.
    pub api_body_bytes: u64,
    /// Response body bytes of raw and asset requests.
    pub file_body_bytes: u64,
    /// Bytes read from client sockets, headers included.
    pub wire_bytes_in: u64,
    /// Bytes written to client sockets, headers included.
    pub wire_bytes_out: u64,
    /// The most recent requests, oldest first (at most [`MAX_LOG_RECORDS`]).
    pub log: Vec<RequestRecord>,
}

/// One answered request.
#[derive(Clone, Debug, Serialize)]
pub struct RequestRecord {
    /// `GET` or `HEAD` (or whatever was refused).
    pub method: String,
    /// The path as sent, with the query string.
    pub path: String,
    /// The status answered.
    pub status: u16,
    /// What kind of resource was asked for.
    pub class: RequestClass,
    /// Response body bytes (after gzip; 0 for HEAD and 304). With faults: the body answered,
    /// up to a `reset-after`/`truncate` cut. A source archive is sent as `git archive` makes
    /// it, its length unknown beforehand: its bytes are counted as they are handed to the
    /// connection, so this grows while it is sent (and stops where a client that went away
    /// left it). What really crossed the socket is in [`Stats::wire_bytes_out`].
    pub body_bytes: u64,
    /// Whether the request carried an `Authorization` header (valid or not).
    pub authorized: bool,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// The `If-None-Match` header, if any.
    pub if_none_match: Option<String>,
    /// The faults applied to this request, in the CLI's syntax without pattern and counters
    /// (e.g. `reset-after:1000`, `latency:50ms`); empty if none.
    pub faults: Vec<String>,
    /// The `Content-Length` the response head declared, if any: after a `wrong-length`
    /// fault, not the body's length (proof that the fault took effect).
    pub content_length: Option<u64>,
}

#[derive(Default)]
struct Counters {
    requests: u64,
    api_requests: u64,
    raw_requests: u64,
    asset_requests: u64,
    not_modified: u64,
    body_bytes: u64,
    api_body_bytes: u64,
    file_body_bytes: u64,
    log: VecDeque<RequestRecord>,
    /// Resets so far: a [`Meter`] from before the last one no longer counts.
    generation: u64,
}

impl Counters {
    fn add_body_bytes(&mut self, class: RequestClass, n: u64) {
        self.body_bytes += n;
        match class {
            RequestClass::Api => self.api_body_bytes += n,
            RequestClass::Raw | RequestClass::Asset => self.file_body_bytes += n,
            RequestClass::Other => {}
        }
    }
}

/// Counts the bytes of a body whose length was not known when its request was recorded (a
/// streamed archive) as they are handed to the connection, in its record and the totals.
pub(crate) struct Meter {
    recorder: Arc<Recorder>,
    generation: u64,
    /// The record's number among those since the last reset.
    seq: u64,
    class: RequestClass,
}

impl Meter {
    pub(crate) fn add(&self, n: u64) {
        let mut c = self.recorder.lock();
        if c.generation != self.generation {
            return;
        }
        c.add_body_bytes(self.class, n);
        // The log holds the last `log.len()` of the `requests` records.
        let first = c.requests - c.log.len() as u64;
        if let Some(index) = self.seq.checked_sub(first)
            && let Some(record) = usize::try_from(index).ok().and_then(|i| c.log.get_mut(i))
        {
            record.body_bytes += n;
        }
    }
}

/// The server-wide recorder, shared by all connections.
#[derive(Default)]
pub(crate) struct Recorder {
    counters: Mutex<Counters>,
    wire_in: AtomicU64,
    wire_out: AtomicU64,
}

impl Recorder {
    fn lock(&self) -> MutexGuard<'_, Counters> {
        // A panic while holding the lock cannot leave the counters inconsistent in a way that
        // matters; keep serving.
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an answered request; the [`Meter`] adds body bytes to it later (for a body of
    /// unknown length, recorded with none).
    pub(crate) fn record(self: &Arc<Self>, record: RequestRecord) -> Meter {
        let mut c = self.lock();
        let meter = Meter {
            recorder: Arc::clone(self),
            generation: c.generation,
            seq: c.requests,
            class: record.class,
        };
        c.requests += 1;
        c.add_body_bytes(record.class, record.body_bytes);
        if record.status == 304 {
            c.not_modified += 1;
        }
        match record.class {
            RequestClass::Api => c.api_requests += 1,
            RequestClass::Raw => c.raw_requests += 1,
            RequestClass::Asset => c.asset_requests += 1,
            RequestClass::Other => {}
        }
        if c.log.len() == MAX_LOG_RECORDS {
            c.log.pop_front();
        }
        c.log.push_back(record);
        meter
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let c = self.lock();
        Stats {
            requests: c.requests,
            api_requests: c.api_requests,
            raw_requests: c.raw_requests,
            asset_requests: c.asset_requests,
            not_modified: c.not_modified,
            body_bytes: c.body_bytes,
            api_body_bytes: c.api_body_bytes,
            file_body_bytes: c.file_body_bytes,
            wire_bytes_in: self.wire_in.load(Ordering::Relaxed),
            wire_bytes_out: self.wire_out.load(Ordering::Relaxed),
            log: c.log.iter().cloned().collect(),
        }
    }

    pub(crate) fn reset(&self) {
        let mut c = self.lock();
        *c = Counters {
            generation: c.generation + 1,
            ..Counters::default()
        };
        self.wire_in.store(0, Ordering::Relaxed);
        self.wire_out.store(0, Ordering::Relaxed);
    }

    /// Counters for a newly accepted connection.
    pub(crate) fn connection(self: &Arc<Self>) -> Arc<ConnCounters> {
        Arc::new(ConnCounters {
            recorder: Arc::clone(self),
            excluded: AtomicBool::new(false),
            read_since_write: AtomicU64::new(0),
        })
    }
}

/// Per-connection wire counting.
pub(crate) struct ConnCounters {
    recorder: Arc<Recorder>,
    excluded: AtomicBool,
    /// Bytes read since the last write: with a client that waits for each response (all
    /// HTTP/1.1 clients in practice), the bytes of the request being handled.
    read_since_write: AtomicU64,
}

impl ConnCounters {
    fn on_read(&self, n: u64) {
        if !self.excluded.load(Ordering::Relaxed) {
            self.read_since_write.fetch_add(n, Ordering::Relaxed);
            self.recorder.wire_in.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn on_write(&self, n: u64) {
        if !self.excluded.load(Ordering::Relaxed) {
            self.read_since_write.store(0, Ordering::Relaxed);
            self.recorder.wire_out.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Leaves this connection out of the wire counters from the request being handled on
    /// (whose bytes are taken back out). Used for the stats endpoint, whose reply closes the
    /// connection.
    pub(crate) fn exclude_from_now(&self) {
        if !self.excluded.swap(true, Ordering::Relaxed) {
            let n = self.read_since_write.swap(0, Ordering::Relaxed);
            let _ = self
                .recorder
                .wire_in
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    Some(v.saturating_sub(n))
                });
        }
    }
}

/// A socket wrapper that counts bytes in and out. Connection-level faults happen in
/// `wire::WireIo`, which wraps this one, so whatever a fault lets through is counted.
pub(crate) struct CountingIo<T> {
    inner: T,
    counters: Arc<ConnCounters>,
}

impl<T> CountingIo<T> {
    pub(crate) fn new(inner: T, counters: Arc<ConnCounters>) -> CountingIo<T> {
        CountingIo { inner, counters }
    }

    /// The wrapped socket (for socket options; bytes must go through the wrapper).
    pub(crate) fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CountingIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            self.counters.on_read((buf.filled().len() - before) as u64);
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CountingIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            self.counters.on_write(n as u64);
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = result {
            self.counters.on_write(n as u64);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
