//! What goes on the wire: response bodies as hyper streams them ([`Body`]), the socket hyper
//! writes to ([`WireIo`]), and the byte-level faults, which can only be exact here.
//!
//! A body is streamed in chunks. When a request's fault plan touches its bytes (a [`Shape`]),
//! the body paces chunks through shared [`Link`]s (bandwidth), inverts flipped bytes, and cuts
//! its chunks so that every event (a stall, a reset or close, the declared end of a wrong
//! length) falls on a chunk boundary.
//!
//! Why the socket takes part: hyper buffers what it writes and throws its buffer away when a
//! connection fails, so a body that returned an error after its 1000th byte could lose some of
//! those bytes. Instead, just before it yields the chunk that ends at an event, the body *arms*
//! the connection's [`Wire`]. hyper calls [`WireIo`]'s `poll_flush` only once its own buffer is
//! empty, so when `WireIo` sees the armed event there, every byte before it is in the kernel:
//! - a reset waits until the kernel has also *transmitted* them (an RST discards unsent data;
//!   on Linux, `TCP_NOTSENT_LOWAT` 1 and `poll` tell when nothing is left unsent, up to
//!   [`DRAIN_LIMIT`]), sets `SO_LINGER` 0 and fails the flush: hyper drops the socket, and the
//!   close sends an RST;
//! - a clean close shuts the write side down (FIN) and fails the flush the same way;
//! - a stall's barrier just wakes the body, which then pauses (an async sleep) before going on.
//!
//! Events at offset 0 (a reset right after the head, a `HEAD` request) are armed before the
//! head is handed to hyper. The part of a body beyond a too-short declared `Content-Length`
//! cannot go through hyper, which frames by that length: `WireIo` writes it itself after
//! hyper's last byte, before the FIN of the `Connection: close` that goes with it.
//!
//! Everything waits with timers and wakers, never by blocking a thread. Bytes written here
//! still pass through `stats::CountingIo`, so the wire counters see exactly what left.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Frame, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::{HeaderMap, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::http::{self, Reply};
use crate::piped::Piped;
use crate::stats::{CountingIo, Meter};

/// Body chunk size: big enough to be cheap, small enough to interleave connections.
pub(crate) const CHUNK: usize = 64 * 1024;

/// The longest a reset waits for the kernel to transmit what precedes it (a client that has
/// stopped reading would otherwise hold it forever).
pub(crate) const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// How often a reset checks whether the kernel has transmitted everything.
const DRAIN_POLL: Duration = Duration::from_millis(1);

/// How a connection is ended by a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// RST: `SO_LINGER` 0, then close.
    Reset,
    /// FIN: shut down the write side, then close.
    Close,
}

/// What a fault plan does to the bytes of one response.
#[derive(Default)]
pub(crate) struct Shape {
    /// Bandwidth caps the body passes through.
    pub links: Vec<Arc<Link>>,
    /// Body offsets whose byte is inverted.
    pub flips: Vec<u64>,
    /// `(after, pause)`: stop for `pause` after `after` body bytes.
    pub stalls: Vec<(u64, Duration)>,
    /// End the connection after this many body bytes (or at the end of a shorter body).
    pub cut: Option<(u64, End)>,
    /// Declared `Content-Length` minus the true one.
    pub length_delta: i64,
}

impl Shape {
    /// Keeps the earlier cut (at the same offset, a reset).
    pub(crate) fn cut_at(&mut self, at: u64, end: End) {
        self.cut = Some(match self.cut {
            Some((old, old_end)) if old < at || (old == at && old_end == End::Reset) => {
                (old, old_end)
            }
            _ => (at, end),
        });
    }

    fn is_empty(&self) -> bool {
        self.links.is_empty()
            && self.flips.is_empty()
            && self.stalls.is_empty()
            && self.cut.is_none()
            && self.length_delta == 0
    }
}

/// A link of limited bandwidth shared by every response of a bandwidth rule: a token bucket
/// without burst. Each chunk reserves the link for its transmission time and is handed on at
/// the end of that time, so no more than `rate × t` bytes pass in any time `t`.
pub(crate) struct Link {
    rate: u64,
    /// When the link is free again.
    free_at: Mutex<Option<Instant>>,
}

impl Link {
    /// A link of `rate` bytes per second (0 counts as 1).
    pub(crate) fn new(rate: u64) -> Link {
        Link {
            rate: rate.max(1),
            free_at: Mutex::new(None),
        }
    }

    /// Reserves the link for `n` bytes from `now` or whenever it is next free; returns when
    /// the last of them has passed.
    pub(crate) fn reserve(&self, n: u64, now: Instant) -> Instant {
        let mut free_at = self.free_at.lock().unwrap_or_else(|e| e.into_inner());
        let start = free_at.map_or(now, |free| free.max(now));
        let nanos = u128::from(n) * 1_000_000_000 / u128::from(self.rate);
        let took = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        let end = start.checked_add(took).unwrap_or(start);
        *free_at = Some(end);
        end
    }

    /// The largest chunk to send at once: a twentieth of a second's worth, so pacing is smooth.
    fn slice(&self) -> usize {
        usize::try_from(self.rate / 20)
            .unwrap_or(CHUNK)
            .clamp(1, CHUNK)
    }
}

/// The per-connection state shared by the connection's response bodies and its [`WireIo`].
#[derive(Default)]
pub(crate) struct Wire {
    state: Mutex<WireState>,
    answered: AtomicBool,
}

#[derive(Default)]
struct WireState {
    armed: Option<Arm>,
    /// Barriers passed so far.
    passed: u64,
    /// Bytes to write after hyper's last one, before the FIN.
    tail: Option<Tail>,
}

/// What [`WireIo`] does at its next flush.
enum Arm {
    /// Tell the body that its bytes are in the kernel.
    Barrier,
    /// End the connection.
    End(End),
}

/// The rest of a body beyond its declared length.
struct Tail {
    body: ReplyBody,
    /// Body offset of the tail's first byte.
    offset: u64,
    flips: Vec<u64>,
    /// Read but not yet written.
    pending: Bytes,
}

impl Wire {
    pub(crate) fn new() -> Arc<Wire> {
        Arc::new(Wire::default())
    }

    fn lock(&self) -> MutexGuard<'_, WireState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this is the connection's first response (true once).
    pub(crate) fn first_response(&self) -> bool {
        !self.answered.swap(true, Ordering::Relaxed)
    }

    fn arm_end(&self, end: End) {
        self.lock().armed = Some(Arm::End(end));
    }

    /// Arms a barrier; it has passed once [`Wire::passed`] of the returned number is true.
    fn arm_barrier(&self) -> u64 {
        let mut state = self.lock();
        state.armed = Some(Arm::Barrier);
        state.passed + 1
    }

    fn passed(&self, barrier: u64) -> bool {
        self.lock().passed >= barrier
    }

    fn set_tail(&self, tail: Tail) {
        self.lock().tail = Some(tail);
    }
}

/// A response body streamed in chunks of at most [`CHUNK`] bytes.
pub(crate) enum ReplyBody {
    Empty,
    Bytes(Bytes),
    File {
        file: tokio::fs::File,
        remaining: u64,
        buf: Vec<u8>,
    },
    /// A child's output; `pending` is what is left of its last chunk.
    Stream {
        piped: Piped,
        pending: Bytes,
    },
}

impl ReplyBody {
    fn new(body: http::Body) -> ReplyBody {
        match body {
            http::Body::Empty => ReplyBody::Empty,
            http::Body::Bytes(bytes) => ReplyBody::Bytes(bytes),
            http::Body::File { file, len } => ReplyBody::File {
                file: tokio::fs::File::from_std(file),
                remaining: len,
                buf: Vec::new(),
            },
            http::Body::Stream(piped) => ReplyBody::Stream {
                piped,
                pending: Bytes::new(),
            },
        }
    }

    /// What is left to yield, if known (not for a stream).
    fn remaining(&self) -> Option<u64> {
        match self {
            ReplyBody::Empty => Some(0),
            ReplyBody::Bytes(bytes) => Some(bytes.len() as u64),
            ReplyBody::File { remaining, .. } => Some(*remaining),
            ReplyBody::Stream { .. } => None,
        }
    }

    fn is_done(&self) -> bool {
        match self {
            ReplyBody::Stream { piped, pending } => pending.is_empty() && piped.is_done(),
            _ => self.remaining() == Some(0),
        }
    }

    /// The next chunk of at most `max` (≥ 1) bytes; `None` at the end.
    fn poll_chunk(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<Option<io::Result<Bytes>>> {
        let max = max.clamp(1, CHUNK);
        match self {
            ReplyBody::Empty => Poll::Ready(None),
            ReplyBody::Bytes(bytes) => {
                if bytes.is_empty() {
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Ok(bytes.split_to(bytes.len().min(max)))))
            }
            ReplyBody::File {
                file,
                remaining,
                buf,
            } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let want = usize::try_from(*remaining).unwrap_or(max).min(max);
                buf.resize(want, 0);
                let mut read_buf = ReadBuf::new(&mut buf[..want]);
                match Pin::new(file).poll_read(cx, &mut read_buf) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Err(err)) => Poll::Ready(Some(Err(err))),
                    Poll::Ready(Ok(())) => {
                        let n = read_buf.filled().len();
                        if n == 0 {
                            // The file shrank since its length was taken.
                            return Poll::Ready(Some(Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "asset file is shorter than announced",
                            ))));
                        }
                        *remaining -= n as u64;
                        Poll::Ready(Some(Ok(Bytes::copy_from_slice(read_buf.filled()))))
                    }
                }
            }
            ReplyBody::Stream { piped, pending } => {
                if pending.is_empty() {
                    match ready!(piped.poll_chunk(cx)) {
                        Some(Ok(chunk)) => *pending = chunk,
                        end => return Poll::Ready(end),
                    }
                }
                Poll::Ready(Some(Ok(pending.split_to(pending.len().min(max)))))
            }
        }
    }
}

/// Inverts the bytes of `chunk` (which starts at body offset `start`) listed in `flips`.
fn flip(chunk: Bytes, start: u64, flips: &[u64]) -> Bytes {
    let end = start + chunk.len() as u64;
    let mut hits = flips
        .iter()
        .filter(|&&at| at >= start && at < end)
        .peekable();
    if hits.peek().is_none() {
        return chunk;
    }
    let mut bytes = BytesMut::from(&chunk[..]);
    for &at in hits {
        if let Some(b) = usize::try_from(at - start)
            .ok()
            .and_then(|i| bytes.get_mut(i))
        {
            *b = !*b;
        }
    }
    bytes.freeze()
}

/// The body of every response: a [`ReplyBody`], shaped by faults if any apply.
pub(crate) struct Body {
    inner: ReplyBody,
    shaping: Option<Box<Shaping>>,
    /// Counts the bytes yielded, for a body whose length was not known when it was recorded.
    meter: Option<Meter>,
}

impl Body {
    pub(crate) fn meter(&mut self, meter: Meter) {
        self.meter = Some(meter);
    }
}

/// A body's fault state.
struct Shaping {
    wire: Arc<Wire>,
    /// Body bytes yielded so far.
    sent: u64,
    flips: Vec<u64>,
    /// Sorted, each before the cut and the tail.
    stalls: VecDeque<(u64, Duration)>,
    /// At an offset > 0 (0 is armed with the head).
    cut: Option<(u64, End)>,
    /// Where the declared length ends and the tail begins (> 0).
    tail_at: Option<u64>,
    links: Vec<Arc<Link>>,
    /// Largest chunk while paced.
    slice: usize,
    /// Whether the size hint may say the true length (not with a wrong length).
    exact: bool,
    step: Step,
}

enum Step {
    /// Read and yield chunks.
    Stream,
    /// A paced chunk, yielded when the link has carried it.
    Hold {
        chunk: Bytes,
        until: Pin<Box<Sleep>>,
    },
    /// Wait until the bytes before a stall are in the kernel, then pause.
    Barrier {
        barrier: u64,
        pause: Duration,
    },
    Pause(Pin<Box<Sleep>>),
    /// The connection is being ended by `WireIo`; yield nothing more.
    Ended,
    /// Nothing more to yield (the rest went to the tail).
    Done,
}

/// The response for `reply` with `shape` applied; `wire` is the connection's.
pub(crate) fn respond(reply: Reply, shape: Shape, wire: &Arc<Wire>) -> Response<Body> {
    if shape.is_empty() {
        return plain(reply);
    }
    let Reply {
        status,
        mut headers,
        body,
        ..
    } = reply;
    let mut inner = ReplyBody::new(body);
    // `None` for a stream: a cut beyond its end happens at its end (see `Shaping::poll_frame`).
    let len = inner.remaining();
    let mut cut = shape
        .cut
        .map(|(at, end)| (len.map_or(at, |len| at.min(len)), end));
    let mut tail_at = None;
    let mut exact = true;
    if shape.length_delta != 0
        && let Some(true_len) = content_length(&headers)
    {
        let declared = true_len.saturating_add_signed(shape.length_delta);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(declared));
        exact = false;
        // Only when the body is sent (not for HEAD): the bytes around the declared end.
        if len == Some(true_len) {
            if declared < true_len {
                tail_at = Some(declared);
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            } else {
                let mut with_close = Shape {
                    cut,
                    ..Shape::default()
                };
                with_close.cut_at(true_len, End::Close);
                cut = with_close.cut;
            }
        }
    }
    let before = |at: u64| cut.is_none_or(|(c, _)| at < c) && tail_at.is_none_or(|t| at < t);
    let mut stalls: Vec<(u64, Duration)> = shape
        .stalls
        .into_iter()
        .filter(|&(after, _)| len.is_none_or(|len| after < len) && before(after))
        .collect();
    stalls.sort_by_key(|&(after, _)| after);
    // Stalls at the same offset add up.
    let mut stalls = stalls
        .into_iter()
        .fold(VecDeque::new(), |mut merged, (after, pause)| {
            match merged.back_mut() {
                Some((at, total)) if *at == after => {
                    *total = Duration::saturating_add(*total, pause)
                }
                _ => merged.push_back((after, pause)),
            }
            merged
        });
    let slice = shape.links.iter().map(|l| l.slice()).min().unwrap_or(CHUNK);
    let mut step = Step::Stream;
    // Events at offset 0 happen right after the head.
    if let Some((0, end)) = cut {
        wire.arm_end(end);
        step = Step::Ended;
        cut = None;
    } else if tail_at == Some(0) {
        wire.set_tail(Tail {
            body: std::mem::replace(&mut inner, ReplyBody::Empty),
            offset: 0,
            flips: shape.flips.clone(),
            pending: Bytes::new(),
        });
        step = Step::Done;
        tail_at = None;
    } else if let Some(&(0, pause)) = stalls.front() {
        stalls.pop_front();
        step = Step::Barrier {
            barrier: wire.arm_barrier(),
            pause,
        };
    }
    let mut response = Response::new(Body {
        inner,
        meter: None,
        shaping: Some(Box::new(Shaping {
            wire: Arc::clone(wire),
            sent: 0,
            flips: shape.flips,
            stalls,
            cut,
            tail_at,
            links: shape.links,
            slice,
            exact,
            step,
        })),
    });
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The response for `reply`, untouched.
pub(crate) fn plain(reply: Reply) -> Response<Body> {
    let mut response = Response::new(Body {
        inner: ReplyBody::new(reply.body),
        shaping: None,
        meter: None,
    });
    *response.status_mut() = reply.status;
    *response.headers_mut() = reply.headers;
    response
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

impl Shaping {
    /// The next offset where something happens.
    fn next_event(&self) -> Option<u64> {
        [
            self.cut.map(|(at, _)| at),
            self.tail_at,
            self.stalls.front().map(|&(at, _)| at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Accounts for `chunk` being yielded, arming whatever happens where it ends.
    fn emit(&mut self, chunk: Bytes, inner: &mut ReplyBody) -> Bytes {
        let end = self.sent + chunk.len() as u64;
        self.sent = end;
        if let Some((at, kind)) = self.cut
            && at == end
        {
            self.wire.arm_end(kind);
            self.step = Step::Ended;
        } else if self.tail_at == Some(end) {
            self.wire.set_tail(Tail {
                body: std::mem::replace(inner, ReplyBody::Empty),
                offset: end,
                flips: std::mem::take(&mut self.flips),
                pending: Bytes::new(),
            });
            self.step = Step::Done;
        } else if let Some(&(at, pause)) = self.stalls.front()
            && at == end
        {
            self.stalls.pop_front();
            self.step = Step::Barrier {
                barrier: self.wire.arm_barrier(),
                pause,
            };
        }
        chunk
    }

    fn poll_frame(
        &mut self,
        inner: &mut ReplyBody,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            match &mut self.step {
                // `WireIo` is failing hyper's flush; hyper will drop this body.
                Step::Ended => return Poll::Pending,
                Step::Done => return Poll::Ready(None),
                Step::Barrier { barrier, pause } => {
                    // Woken by `WireIo::poll_flush`, which hyper calls after this returns.
                    if !self.wire.passed(*barrier) {
                        return Poll::Pending;
                    }
                    self.step = Step::Pause(Box::pin(tokio::time::sleep(*pause)));
                }
                Step::Pause(sleep) => {
                    ready!(sleep.as_mut().poll(cx));
                    self.step = Step::Stream;
                }
                Step::Hold { until, .. } => {
                    ready!(until.as_mut().poll(cx));
                    if let Step::Hold { chunk, .. } =
                        std::mem::replace(&mut self.step, Step::Stream)
                    {
                        return Poll::Ready(Some(Ok(self.emit(chunk, inner))));
                    }
                }
                Step::Stream => {
                    let mut max = if self.links.is_empty() {
                        CHUNK
                    } else {
                        self.slice
                    };
                    if let Some(at) = self.next_event() {
                        let until_event = at.saturating_sub(self.sent);
                        max = max.min(usize::try_from(until_event).unwrap_or(CHUNK));
                    }
                    let chunk = match ready!(inner.poll_chunk(cx, max)) {
                        None => {
                            // Only a stream (whose length was unknown) can end before its
                            // cut: the connection ends after the end of the body, as after
                            // the last byte of a shorter body of known length.
                            if let Some((_, end)) = self.cut.take() {
                                self.wire.arm_end(end);
                            }
                            return Poll::Ready(None);
                        }
                        Some(Err(err)) => return Poll::Ready(Some(Err(err))),
                        Some(Ok(chunk)) => flip(chunk, self.sent, &self.flips),
                    };
                    if !self.links.is_empty() {
                        let now = Instant::now();
                        let n = chunk.len() as u64;
                        let until = self
                            .links
                            .iter()
                            .map(|link| link.reserve(n, now))
                            .max()
                            .unwrap_or(now);
                        self.step = Step::Hold {
                            chunk,
                            until: Box::pin(tokio::time::sleep_until(until)),
                        };
                        continue;
                    }
                    return Poll::Ready(Some(Ok(self.emit(chunk, inner))));
                }
            }
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let chunk = match &mut this.shaping {
            None => this.inner.poll_chunk(cx, CHUNK),
            Some(shaping) => shaping.poll_frame(&mut this.inner, cx),
        };
        if let (Poll::Ready(Some(Ok(chunk))), Some(meter)) = (&chunk, &this.meter) {
            meter.add(chunk.len() as u64);
        }
        chunk.map(|c| c.map(|c| c.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        match &self.shaping {
            // A pending cut still has to be armed at the end of a stream.
            Some(shaping) if shaping.cut.is_some() && self.inner.remaining().is_none() => false,
            None => self.inner.is_done(),
            Some(shaping) => match shaping.step {
                Step::Done => true,
                Step::Stream => self.inner.is_done(),
                _ => false,
            },
        }
    }

    fn size_hint(&self) -> SizeHint {
        let held = match self.shaping.as_deref() {
            Some(shaping) if !shaping.exact => return SizeHint::default(),
            Some(Shaping {
                step: Step::Hold { chunk, .. },
                ..
            }) => chunk.len() as u64,
            _ => 0,
        };
        match self.inner.remaining() {
            Some(remaining) => SizeHint::with_exact(remaining + held),
            None => SizeHint::default(),
        }
    }
}

/// The socket under hyper: passes bytes through (counted by [`CountingIo`]) and carries out
/// what a body armed in the connection's [`Wire`] (see the module docs).
pub(crate) struct WireIo {
    io: CountingIo<TcpStream>,
    wire: Arc<Wire>,
    /// A connection end in progress.
    ending: Option<Ending>,
    /// The end is done: every call fails, so that hyper lets go of the socket.
    ended: bool,
    tail: Option<Tail>,
}

struct Ending {
    end: End,
    deadline: Instant,
    prepared: bool,
    timer: Option<Pin<Box<Sleep>>>,
}

fn ended_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection ended by a fault",
    )
}

impl WireIo {
    pub(crate) fn new(io: CountingIo<TcpStream>, wire: Arc<Wire>) -> WireIo {
        WireIo {
            io,
            wire,
            ending: None,
            ended: false,
            tail: None,
        }
    }

    /// Carries out the end in progress; `Ready` once the socket may be dropped.
    fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(ending) = self.ending.as_mut() else {
            return Poll::Ready(());
        };
        match ending.end {
            End::Close => {
                if let Err(err) = ready!(Pin::new(&mut self.io).poll_shutdown(cx)) {
                    tracing::debug!("fault: shutting down the socket failed: {err}");
                }
            }
            End::Reset => {
                let stream = self.io.get_ref();
                if !ending.prepared {
                    ending.prepared = true;
                    ending.deadline = Instant::now() + DRAIN_LIMIT;
                    drain::prepare(stream);
                }
                while !drain::done(stream) && Instant::now() < ending.deadline {
                    let timer = ending
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(DRAIN_POLL)));
                    ready!(timer.as_mut().poll(cx));
                    ending.timer = None;
                }
                if let Err(err) = stream.set_zero_linger() {
                    tracing::debug!("fault: cannot set SO_LINGER 0 for a reset: {err}");
                }
            }
        }
        Poll::Ready(())
    }

    /// Writes the tail of a body whose declared length was too short.
    fn poll_tail(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.tail.is_none() {
            self.tail = self.wire.lock().tail.take();
        }
        let Some(tail) = self.tail.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        loop {
            if tail.pending.is_empty() {
                match ready!(tail.body.poll_chunk(cx, CHUNK)) {
                    None => break,
                    Some(Err(err)) => {
                        self.tail = None;
                        return Poll::Ready(Err(err));
                    }
                    Some(Ok(chunk)) => {
                        let start = tail.offset;
                        tail.offset += chunk.len() as u64;
                        tail.pending = flip(chunk, start, &tail.flips);
                    }
                }
            }
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &tail.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            tail.pending.advance(n);
        }
        self.tail = None;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for WireIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.ended {
            return Poll::Ready(Err(ended_error()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for WireIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.ended {
            return Poll::Ready(Err(ended_error()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.ended {
            return Poll::Ready(Err(ended_error()));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    /// hyper calls this once its own buffer is empty: everything it was given is in the
    /// kernel, so an armed event can happen now.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(Err(ended_error()));
        }
        ready!(Pin::new(&mut this.io).poll_flush(cx))?;
        if this.ending.is_none() {
            let mut state = this.wire.lock();
            match state.armed.take() {
                None => return Poll::Ready(Ok(())),
                Some(Arm::Barrier) => {
                    state.passed += 1;
                    // The body waits for this in the same task.
                    cx.waker().wake_by_ref();
                    return Poll::Ready(Ok(()));
                }
                Some(Arm::End(end)) => {
                    this.ending = Some(Ending {
                        end,
                        deadline: Instant::now(),
                        prepared: false,
                        timer: None,
                    });
                }
            }
        }
        ready!(this.poll_end(cx));
        this.ending = None;
        this.ended = true;
        Poll::Ready(Err(ended_error()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.ended {
            return Poll::Ready(Ok(()));
        }
        ready!(self.poll_tail(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Waiting until the kernel has transmitted everything written, before a reset discards it.
#[cfg(any(target_os = "linux", target_os = "android"))]
mod drain {
    use rustix::event::{PollFd, PollFlags, Timespec};
    use tokio::net::TcpStream;

    /// With `TCP_NOTSENT_LOWAT` 1, TCP reports the socket writable only when no byte is left
    /// unsent.
    pub(super) fn prepare(stream: &TcpStream) {
        if let Err(err) = socket2::SockRef::from(stream).set_tcp_notsent_lowat(1) {
            tracing::debug!("fault: cannot set TCP_NOTSENT_LOWAT: {err}");
        }
    }

    /// Whether nothing is left to transmit (or the peer is gone, or we cannot tell).
    pub(super) fn done(stream: &TcpStream) -> bool {
        let mut fds = [PollFd::new(stream, PollFlags::OUT)];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match rustix::event::poll(&mut fds, Some(&zero)) {
            Ok(_) => fds[0]
                .revents()
                .intersects(PollFlags::OUT | PollFlags::ERR | PollFlags::HUP),
            Err(_) => true,
        }
    }
}

/// Elsewhere a reset does not wait (the bytes before it may be lost if the peer is slow).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod drain {
    use tokio::net::TcpStream;

    pub(super) fn prepare(_stream: &TcpStream) {}

    pub(super) fn done(_stream: &TcpStream) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_pace_without_burst_and_are_shared() {
        let link = Link::new(1000);
        let t0 = Instant::now();
        assert_eq!(link.reserve(100, t0), t0 + Duration::from_millis(100));
        // A second flow queues behind the first.
        assert_eq!(link.reserve(500, t0), t0 + Duration::from_millis(600));
        // After idling, no credit has built up.
        let later = t0 + Duration::from_secs(5);
        assert_eq!(link.reserve(1, later), later + Duration::from_millis(1));
        assert_eq!(Link::new(0).reserve(1, t0), t0 + Duration::from_secs(1));
        assert_eq!(Link::new(1).slice(), 1);
        assert_eq!(Link::new(2_000_000).slice(), CHUNK);
        assert_eq!(Link::new(100_000).slice(), 5000);
    }

    #[test]
    fn flips_invert_only_bytes_in_the_chunk() {
        let chunk = Bytes::from_static(b"abcdef");
        assert_eq!(flip(chunk.clone(), 10, &[9, 16]), chunk);
        let flipped = flip(chunk, 10, &[10, 15]);
        assert_eq!(flipped[0], !b'a');
        assert_eq!(&flipped[1..5], b"bcde");
        assert_eq!(flipped[5], !b'f');
    }

    #[test]
    fn the_earliest_cut_wins() {
        let mut shape = Shape::default();
        shape.cut_at(50, End::Close);
        shape.cut_at(80, End::Reset);
        assert_eq!(shape.cut, Some((50, End::Close)));
        shape.cut_at(50, End::Reset);
        assert_eq!(shape.cut, Some((50, End::Reset)));
        shape.cut_at(50, End::Close);
        assert_eq!(shape.cut, Some((50, End::Reset)));
        shape.cut_at(3, End::Close);
        assert_eq!(shape.cut, Some((3, End::Close)));
    }
}
