//! Fault injection: rules that make the server misbehave on purpose, so that clients can be
//! tested against dropped connections, stalls, 5xx, rate limits and hostile answers on real
//! sockets, and benchmarked behind a slow link.
//!
//! A [`Fault`] is a pattern over the request path and query, an [`Action`] and two counters
//! (`skip`, `times`). Give them to a server with [`Options::faults`](crate::Options::faults) or
//! [`Server::set_faults`](crate::Server::set_faults), or on the command line with
//! `ota-serve --fault SPEC` (see [`Fault`]'s `FromStr` for the syntax).
//!
//! This module only decides *which* faults a request gets. It is three parts: the rules
//! themselves ([`Fault`], [`Action`]); `spec`, their command-line syntax; and `rules`, which
//! matches them and keeps their counters, under one lock, in the order requests arrive, and
//! hands the server a plan. It does no I/O. Answers that replace the reply (a status, a rate
//! limit, a redirect, another body) are built by the `answers` module, with GitHub's shapes.
//! What a plan does to the bytes (pacing, flipping, stalling, cutting the connection) happens
//! in the `wire` module, where the body is produced and the socket written: only there can
//! "1000 body bytes, then an RST" be exact. Latency is waited by the server before it hands
//! the response head to hyper.
//!
//! # How several rules combine
//! Every rule whose pattern matches counts the request; one whose counters allow it applies.
//! Latencies add up, every bandwidth cap applies, the earliest cut (`reset-after`/`truncate`)
//! wins, every flip and stall applies, and `wrong-length` deltas add up. Of the rules that
//! replace the answer (`status`, `rate-limit`, `redirect`, `body`) only the first applies; the
//! others do not use up their `times` for that request. A `redirect` never applies to a request
//! already addressed to its target, so redirecting to the server's own alias does not loop.
//!
//! The control endpoint `/_ota/stats` is never faulted.

mod rules;
mod spec;

use std::fmt;
use std::time::Duration;

use humantime::format_duration;

pub(crate) use rules::{Answer, Plan, Rules};
pub use spec::ParseFaultError;

/// One fault-injection rule.
///
/// ```
/// use std::time::Duration;
/// use ota_serve::fault::{Action, Fault};
///
/// let parsed: Fault = "/raw/*=reset-after:1000,times=3".parse().unwrap();
/// assert_eq!(parsed, Fault::new("/raw/*", Action::ResetAfter(1000)).times(3));
/// let slow = Fault::new("*", Action::Latency(Duration::from_millis(50)));
/// assert_eq!(slow.to_string(), "*=latency:50ms");
/// ```
///
/// # Syntax
/// `PATTERN=ACTION[:VALUE][,PARAM:VALUE…][,skip=N][,times=N]`, for example:
///
/// | spec | action |
/// |---|---|
/// | `*=latency:50ms` | [`Action::Latency`] (humantime's syntax: `ns`, `us`, `ms`, `s`, `m`, `h`; `1.5s` and `1s 500ms` work) |
/// | `*=bandwidth:2000000` | [`Action::Bandwidth`], bytes per second |
/// | `/raw/*=reset-after:1000` | [`Action::ResetAfter`] |
/// | `/raw/*=truncate:1000` | [`Action::Truncate`] |
/// | `/raw/*=flip-byte:5` | [`Action::FlipByte`] |
/// | `/raw/*=stall:100,pause:30s` | [`Action::Stall`] |
/// | `/raw/*=status:503` | [`Action::Status`] (400–599) |
/// | `*=rate-limit:429,reset-in:2s,retry-after:1s` | [`Action::RateLimit`] (403 or 429; `reset-in` defaults to 60s, no `retry-after` unless given) |
/// | `/raw/*=wrong-length:-10` | [`Action::WrongLength`] |
/// | `/raw/*=redirect:localhost:8080` | [`Action::Redirect`] |
/// | `*/git/trees/*=body:@/path/file.json` | [`Action::Body`] (the file is read when parsed; the type comes from the extension, or `type:MIME`) |
///
/// The pattern is everything before the first `=` that is followed by an action name, so
/// patterns may contain `=` (`*?per_page=1=status:500`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Matched against the request path and query as sent (still percent-encoded); `*`
    /// matches any run of characters, everything else itself.
    pub pattern: String,
    /// What to do.
    pub action: Action,
    /// Let the first `skip` matching requests through unharmed.
    pub skip: u32,
    /// Then fault this many requests (`None`: every one after).
    pub times: Option<u32>,
}

impl Fault {
    /// A rule that faults every request matching `pattern`.
    pub fn new(pattern: impl Into<String>, action: Action) -> Fault {
        Fault {
            pattern: pattern.into(),
            action,
            skip: 0,
            times: None,
        }
    }

    /// Lets the first `n` matching requests through unharmed.
    #[must_use]
    pub fn skip(mut self, n: u32) -> Fault {
        self.skip = n;
        self
    }

    /// Faults only `n` requests (after the skipped ones).
    #[must_use]
    pub fn times(mut self, n: u32) -> Fault {
        self.times = Some(n);
        self
    }
}

/// What a [`Fault`] does to a request it applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Wait this long before sending the response head (a round trip). The first response on
    /// a new connection waits twice as long (the TCP handshake). Measured from the request's
    /// arrival, so it is a lower bound on the time to the first response byte.
    Latency(Duration),
    /// Cap response body bytes per second. The cap is shared by every connection the rule
    /// applies to, like a link (not per flow): a token bucket without burst, so no more than
    /// `rate × t` bytes ever pass in time `t`. 0 counts as 1.
    Bandwidth(u64),
    /// Send the head (with the true `Content-Length`) and this many body bytes (at most the
    /// whole body), then reset the connection (RST).
    ResetAfter(u64),
    /// Send the head (with the true `Content-Length`) and this many body bytes (at most the
    /// whole body), then close the connection cleanly (FIN).
    Truncate(u64),
    /// Invert the body byte at this offset (no effect if the body is shorter).
    FlipByte(u64),
    /// Send `after` body bytes, then nothing for `pause`, then the rest (no effect if the body
    /// is not longer than `after`). A client that leaves meanwhile gets its connection closed.
    Stall {
        /// Body bytes sent before the pause.
        after: u64,
        /// How long nothing is sent.
        pause: Duration,
    },
    /// Answer this status instead, with GitHub's JSON error body.
    Status(u16),
    /// Answer like GitHub's primary rate limit: `status` (403 or 429) with
    /// `x-ratelimit-remaining: 0`, `x-ratelimit-reset` at now + `reset_in` (epoch seconds),
    /// the other `x-ratelimit-*` headers, `retry-after` if given, and GitHub's
    /// "API rate limit exceeded" message.
    RateLimit {
        /// 403 or 429.
        status: u16,
        /// When the budget resets, from now.
        reset_in: Duration,
        /// `retry-after` (whole seconds, rounded up), if any.
        retry_after: Option<Duration>,
    },
    /// Declare `Content-Length` = true length + delta and send the true body. Negative: the
    /// rest of the body follows the declared end on the wire, and the connection closes after
    /// it (`Connection: close`); a client stops early. Positive: the connection closes (FIN)
    /// after the true body, before the declared end. A `HEAD` only gets the header.
    WrongLength(i64),
    /// Answer 302 to the same path and query on another authority `host:port` (the server's
    /// own alias `localhost:PORT`, or a second server). Requests already addressed to `to` are
    /// not redirected.
    Redirect {
        /// `host:port`.
        to: String,
    },
    /// Replace the body entirely (a hostile JSON tree, an HTML page where JSON is expected).
    /// The status is kept, except that 206, 304 and 416 become 200.
    Body {
        /// The new body.
        bytes: Vec<u8>,
        /// Its `Content-Type`.
        content_type: String,
    },
}

impl Action {
    /// Whether this action replaces the answer (only the first such rule applies).
    pub(crate) fn replaces_answer(&self) -> bool {
        matches!(
            self,
            Action::Status(_)
                | Action::RateLimit { .. }
                | Action::Redirect { .. }
                | Action::Body { .. }
        )
    }
}

impl fmt::Display for Fault {
    /// The CLI form (`PATTERN=ACTION…`); see [`Action`]'s `Display` for `body`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.pattern, self.action)?;
        if self.skip > 0 {
            write!(f, ",skip={}", self.skip)?;
        }
        if let Some(times) = self.times {
            write!(f, ",times={times}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Action {
    /// The CLI form, e.g. `reset-after:1000`, `stall:100,pause:30s`. A body shows its size
    /// and type (`body:<12 bytes>,type:text/html`), which does not parse back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Latency(d) => write!(f, "latency:{}", format_duration(*d)),
            Action::Bandwidth(rate) => write!(f, "bandwidth:{rate}"),
            Action::ResetAfter(n) => write!(f, "reset-after:{n}"),
            Action::Truncate(n) => write!(f, "truncate:{n}"),
            Action::FlipByte(n) => write!(f, "flip-byte:{n}"),
            Action::Stall { after, pause } => {
                write!(f, "stall:{after},pause:{}", format_duration(*pause))
            }
            Action::Status(code) => write!(f, "status:{code}"),
            Action::RateLimit {
                status,
                reset_in,
                retry_after,
            } => {
                write!(
                    f,
                    "rate-limit:{status},reset-in:{}",
                    format_duration(*reset_in)
                )?;
                if let Some(retry) = retry_after {
                    write!(f, ",retry-after:{}", format_duration(*retry))?;
                }
                Ok(())
            }
            Action::WrongLength(delta) => write!(f, "wrong-length:{delta}"),
            Action::Redirect { to } => write!(f, "redirect:{to}"),
            Action::Body {
                bytes,
                content_type,
            } => write!(f, "body:<{} bytes>,type:{content_type}", bytes.len()),
        }
    }
}
