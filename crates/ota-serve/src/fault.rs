//! Fault injection: rules that make the server misbehave on purpose, so that clients can be
//! tested against dropped connections, stalls, 5xx, rate limits and hostile answers on real
//! sockets, and benchmarked behind a slow link.
//!
//! A [`Fault`] is a pattern over the request path and query, an [`Action`] and two counters
//! (`skip`, `times`). Give them to a server with [`Options::faults`](crate::Options::faults) or
//! [`Server::set_faults`](crate::Server::set_faults), or on the command line with
//! `ota serve --fault SPEC` (see [`Fault`]'s `FromStr` for the syntax).
//!
//! This module only decides *which* faults a request gets: it matches the rules and keeps their
//! counters, under one lock, in the order requests arrive, and hands the server a plan. It does
//! no I/O. Answers that replace the reply (a status, a rate limit, a redirect, another body)
//! are built here too, since they are plain replies. What a plan does to the bytes (pacing,
//! flipping, stalling, cutting the connection) happens in the `wire` module, where the body is
//! produced and the socket written: only there can "1000 body bytes, then an RST" be exact.
//! Latency is waited by the server before it hands the response head to hyper.
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

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::StatusCode;
use hyper::header::{self, HeaderValue};

use crate::http::{self, Reply, Req};
use crate::ratelimit;
use crate::wire::{End, Link, Shape};

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
/// | `*=latency:50ms` | [`Action::Latency`] (units `ns`, `us`, `ms`, `s`, `m`, `h`; `1.5s` works) |
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
    fn replaces_answer(&self) -> bool {
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
            Action::Latency(d) => write!(f, "latency:{}", DisplayDuration(*d)),
            Action::Bandwidth(rate) => write!(f, "bandwidth:{rate}"),
            Action::ResetAfter(n) => write!(f, "reset-after:{n}"),
            Action::Truncate(n) => write!(f, "truncate:{n}"),
            Action::FlipByte(n) => write!(f, "flip-byte:{n}"),
            Action::Stall { after, pause } => {
                write!(f, "stall:{after},pause:{}", DisplayDuration(*pause))
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
                    DisplayDuration(*reset_in)
                )?;
                if let Some(retry) = retry_after {
                    write!(f, ",retry-after:{}", DisplayDuration(*retry))?;
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

/// A duration in the CLI's syntax, in the largest unit that shows it exactly.
struct DisplayDuration(Duration);

impl fmt::Display for DisplayDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        for (unit, size) in [("h", 3_600_000_000_000u128), ("m", 60_000_000_000)] {
            if nanos >= size && nanos.is_multiple_of(size) {
                return write!(f, "{}{unit}", nanos / size);
            }
        }
        for (unit, size) in [("s", 1_000_000_000u128), ("ms", 1_000_000), ("us", 1_000)] {
            if nanos.is_multiple_of(size) {
                return write!(f, "{}{unit}", nanos / size);
            }
        }
        write!(f, "{nanos}ns")
    }
}

/// Why a fault spec does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid fault `{spec}`: {reason}")]
pub struct ParseFaultError {
    spec: String,
    reason: String,
}

impl ParseFaultError {
    /// What is wrong, without the spec.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// The action names of the CLI syntax.
const ACTIONS: &[&str] = &[
    "latency",
    "bandwidth",
    "reset-after",
    "truncate",
    "flip-byte",
    "stall",
    "status",
    "rate-limit",
    "wrong-length",
    "redirect",
    "body",
];

impl FromStr for Fault {
    type Err = ParseFaultError;

    /// Parses `PATTERN=ACTION[:VALUE][,PARAM:VALUE…][,skip=N][,times=N]` (see [`Fault`]).
    /// `body:@FILE` reads the file.
    fn from_str(spec: &str) -> Result<Fault, ParseFaultError> {
        parse(spec.trim()).map_err(|reason| ParseFaultError {
            spec: spec.to_string(),
            reason,
        })
    }
}

fn parse(spec: &str) -> Result<Fault, String> {
    let (pattern, rest) = split_rule(spec)?;
    if pattern.is_empty() {
        return Err("the pattern before `=` is empty (`*` matches every request)".to_string());
    }
    let mut items = rest.split(',');
    let head = items.next().unwrap_or_default();
    let (name, value) = head.split_once(':').unwrap_or((head, ""));
    let mut params: Vec<(&str, &str)> = Vec::new();
    let (mut skip, mut times) = (None, None);
    for item in items {
        let item = item.trim();
        let colon = item.find(':');
        let equals = item.find('=');
        match (colon, equals) {
            (_, Some(e)) if colon.is_none_or(|c| e < c) => {
                let (key, number) = (item[..e].trim(), item[e + 1..].trim());
                let slot = match key {
                    "skip" => &mut skip,
                    "times" => &mut times,
                    _ => {
                        return Err(format!(
                            "unknown option `{key}`; rule options are skip=N and times=N"
                        ));
                    }
                };
                if slot.is_some() {
                    return Err(format!("`{key}` is given twice"));
                }
                *slot = Some(count(key, number)?);
            }
            (Some(c), _) => {
                let key = item[..c].trim();
                if params.iter().any(|(k, _)| *k == key) {
                    return Err(format!("`{key}` is given twice"));
                }
                params.push((key, item[c + 1..].trim()));
            }
            _ => {
                return Err(format!(
                    "`{item}` is neither PARAM:VALUE nor skip=N or times=N"
                ));
            }
        }
    }
    if times == Some(0) {
        return Err("times=0 would never fault anything".to_string());
    }
    let action = parse_action(name, value.trim(), &params)?;
    Ok(Fault {
        pattern: pattern.to_string(),
        action,
        skip: skip.unwrap_or(0),
        times,
    })
}

/// Splits `PATTERN=ACTION…` at the first `=` that is followed by an action name.
fn split_rule(spec: &str) -> Result<(&str, &str), String> {
    let name_of = |rest: &str| {
        rest.split([':', ','])
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let mut first = None;
    for (i, _) in spec.match_indices('=') {
        let rest = &spec[i + 1..];
        if ACTIONS.contains(&name_of(rest).as_str()) {
            return Ok((&spec[..i], rest));
        }
        first.get_or_insert(rest);
    }
    match first {
        None => Err(
            "expected PATTERN=ACTION, for example `/raw/*=status:503` or `*=latency:50ms`"
                .to_string(),
        ),
        Some(rest) => Err(format!(
            "unknown action `{}`; expected one of: {}",
            name_of(rest),
            ACTIONS.join(", ")
        )),
    }
}

fn parse_action(name: &str, value: &str, params: &[(&str, &str)]) -> Result<Action, String> {
    let allowed: &[&str] = match name {
        "stall" => &["pause"],
        "rate-limit" => &["reset-in", "retry-after"],
        "body" => &["type"],
        _ => &[],
    };
    if let Some((key, _)) = params.iter().find(|(k, _)| !allowed.contains(k)) {
        return Err(if allowed.is_empty() {
            format!("`{name}` takes no parameter, got `{key}`")
        } else {
            format!(
                "unknown parameter `{key}` for `{name}`; expected {}",
                allowed.join(" or ")
            )
        });
    }
    let param = |key: &str| params.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let need = |what: &str, example: &str| {
        if value.is_empty() {
            Err(format!(
                "`{name}` needs {what}, for example `{name}:{example}`"
            ))
        } else {
            Ok(value)
        }
    };
    Ok(match name {
        "latency" => Action::Latency(duration(need("a duration", "50ms")?)?),
        "bandwidth" => {
            let rate = number(name, need("bytes per second", "2000000")?)?;
            if rate == 0 {
                return Err("`bandwidth` must be at least 1 byte per second".to_string());
            }
            Action::Bandwidth(rate)
        }
        "reset-after" => Action::ResetAfter(number(name, need("a byte count", "1000")?)?),
        "truncate" => Action::Truncate(number(name, need("a byte count", "1000")?)?),
        "flip-byte" => Action::FlipByte(number(name, need("a byte offset", "5")?)?),
        "stall" => {
            let after = number(name, need("a byte count", "100,pause:30s")?)?;
            let pause = param("pause")
                .ok_or("`stall` needs `pause:DURATION`, for example `stall:100,pause:30s`")?;
            Action::Stall {
                after,
                pause: duration(pause)?,
            }
        }
        "status" => {
            let code = status(need("a status", "503")?)?;
            if !(400..=599).contains(&code) {
                return Err(format!("`status` must be 400 to 599, got {code}"));
            }
            Action::Status(code)
        }
        "rate-limit" => {
            let code = status(need("a status, 403 or 429", "429")?)?;
            if code != 403 && code != 429 {
                return Err(format!("`rate-limit` answers 403 or 429, got {code}"));
            }
            Action::RateLimit {
                status: code,
                reset_in: param("reset-in").map_or(Ok(Duration::from_secs(60)), duration)?,
                retry_after: param("retry-after").map(duration).transpose()?,
            }
        }
        "wrong-length" => {
            let text = need("a length delta", "-10")?;
            let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
            let delta = (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| text.parse::<i64>().ok())
                .flatten()
                .ok_or_else(|| format!("`wrong-length` needs a whole number, got `{text}`"))?;
            if delta == 0 {
                return Err(
                    "`wrong-length:0` declares the true length; use a non-zero delta".to_string(),
                );
            }
            Action::WrongLength(delta)
        }
        "redirect" => {
            let to = need("host:port", "localhost:8080")?;
            let port_ok = to
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok
                || !to
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
            {
                return Err(format!("`redirect` needs host:port, got `{to}`"));
            }
            Action::Redirect { to: to.to_string() }
        }
        "body" => {
            let path = need("@FILE", "@/path/answer.json")?
                .strip_prefix('@')
                .ok_or_else(|| format!("`body` takes @FILE, got `{value}`"))?;
            let bytes = std::fs::read(path)
                .map_err(|err| format!("cannot read the body file `{path}`: {err}"))?;
            let content_type = match param("type") {
                Some(t) if HeaderValue::from_str(t).is_ok() && !t.is_empty() => t.to_string(),
                Some(t) => return Err(format!("`type:{t}` is not a valid Content-Type")),
                None => content_type_of(path).to_string(),
            };
            Action::Body {
                bytes,
                content_type,
            }
        }
        _ => {
            return Err(format!(
                "unknown action `{name}`; expected one of: {}",
                ACTIONS.join(", ")
            ));
        }
    })
}

fn content_type_of(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("json") => http::JSON,
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("txt") => "text/plain; charset=utf-8",
        Some("xml") => "application/xml",
        _ => "application/octet-stream",
    }
}

fn digits(text: &str) -> Option<u64> {
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

fn number(name: &str, text: &str) -> Result<u64, String> {
    digits(text).ok_or_else(|| format!("`{name}` needs a whole number, got `{text}`"))
}

fn count(key: &str, text: &str) -> Result<u32, String> {
    digits(text)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("`{key}` needs a whole number, got `{text}`"))
}

fn status(text: &str) -> Result<u16, String> {
    digits(text)
        .and_then(|n| u16::try_from(n).ok())
        .ok_or_else(|| format!("not a status code: `{text}`"))
}

/// `50ms`, `2s`, `1.5s`, `1m`: a decimal number and a unit (`ns`, `us`, `ms`, `s`, `m`, `h`).
fn duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || {
        format!(
            "invalid duration `{text}`: expected a number and a unit (ns, us, ms, s, m, h), like `50ms`"
        )
    };
    let unit_nanos: u128 = match unit {
        "ns" => 1,
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return Err(bad()),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
        || fraction.len() > 9
    {
        return Err(bad());
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let mut nanos = whole.checked_mul(unit_nanos).ok_or_else(bad)?;
    if !fraction.is_empty() {
        let scale = 10u128.pow(u32::try_from(fraction.len()).unwrap_or(9));
        let fraction: u128 = fraction.parse().map_err(|_| bad())?;
        nanos = nanos
            .checked_add(fraction * unit_nanos / scale)
            .ok_or_else(bad)?;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| bad())?;
    let sub = u32::try_from(nanos % 1_000_000_000).map_err(|_| bad())?;
    Ok(Duration::new(secs, sub))
}

/// Whether `text` matches `pattern`, where `*` matches any run of bytes (even empty).
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Where to resume after the last `*`: the pattern index after it, and the text index it
    // has swallowed up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi + 1, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((after, swallowed)) = star {
            pi = after;
            ti = swallowed + 1;
            star = Some((after, swallowed + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// The live rules and their counters.
pub(crate) struct Rules {
    rules: Mutex<Vec<Rule>>,
}

struct Rule {
    fault: Fault,
    /// Requests that matched the pattern (for `skip`).
    matched: u32,
    /// Requests the rule applied to (for `times`).
    applied: u32,
    /// The shared link of a bandwidth rule.
    link: Option<Arc<Link>>,
    /// The body of a body rule, cheap to clone per request.
    body: Option<Bytes>,
}

impl Rule {
    fn new(fault: Fault) -> Rule {
        let link = match fault.action {
            Action::Bandwidth(rate) => Some(Arc::new(Link::new(rate))),
            _ => None,
        };
        let body = match &fault.action {
            Action::Body { bytes, .. } => Some(Bytes::copy_from_slice(bytes)),
            _ => None,
        };
        Rule {
            fault,
            matched: 0,
            applied: 0,
            link,
            body,
        }
    }
}

/// What the rules decided for one request.
#[derive(Default)]
pub(crate) struct Plan {
    /// The applied faults, in rule order (for the request log).
    pub names: Vec<String>,
    /// Wait this long (twice on a connection's first response) before the head.
    pub latency: Duration,
    /// An answer that replaces the reply.
    pub answer: Option<Answer>,
    /// What to do to the bytes.
    pub shape: Shape,
}

/// An answer that replaces the reply.
pub(crate) enum Answer {
    Status(u16),
    RateLimit {
        status: u16,
        reset_in: Duration,
        retry_after: Option<Duration>,
    },
    Redirect(String),
    Body {
        bytes: Bytes,
        content_type: String,
    },
}

impl Rules {
    pub(crate) fn new(faults: Vec<Fault>) -> Rules {
        Rules {
            rules: Mutex::new(faults.into_iter().map(Rule::new).collect()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Rule>> {
        // Counters are plain numbers; a panic elsewhere cannot leave them unusable.
        self.rules.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the rules; counters start afresh.
    pub(crate) fn set(&self, faults: Vec<Fault>) {
        *self.lock() = faults.into_iter().map(Rule::new).collect();
    }

    /// Matches a request (path and query as sent, and the authority it was addressed to),
    /// counts it, and returns what to do to it.
    pub(crate) fn plan(&self, target: &str, host: &str) -> Plan {
        let mut plan = Plan::default();
        let mut rules = self.lock();
        for rule in rules.iter_mut() {
            if !glob(&rule.fault.pattern, target) {
                continue;
            }
            if let Action::Redirect { to } = &rule.fault.action
                && to.eq_ignore_ascii_case(host)
            {
                continue;
            }
            rule.matched = rule.matched.saturating_add(1);
            if rule.matched <= rule.fault.skip
                || rule.fault.times.is_some_and(|t| rule.applied >= t)
                || (rule.fault.action.replaces_answer() && plan.answer.is_some())
            {
                continue;
            }
            rule.applied = rule.applied.saturating_add(1);
            plan.add(rule);
        }
        plan
    }
}

impl Plan {
    fn add(&mut self, rule: &Rule) {
        self.names.push(rule.fault.action.to_string());
        let shape = &mut self.shape;
        match &rule.fault.action {
            Action::Latency(d) => self.latency = self.latency.saturating_add(*d),
            Action::Bandwidth(_) => shape.links.extend(rule.link.iter().cloned()),
            Action::ResetAfter(n) => shape.cut_at(*n, End::Reset),
            Action::Truncate(n) => shape.cut_at(*n, End::Close),
            Action::FlipByte(n) => shape.flips.push(*n),
            Action::Stall { after, pause } => shape.stalls.push((*after, *pause)),
            Action::WrongLength(delta) => {
                shape.length_delta = shape.length_delta.saturating_add(*delta);
            }
            Action::Status(code) => self.answer = Some(Answer::Status(*code)),
            Action::RateLimit {
                status,
                reset_in,
                retry_after,
            } => {
                self.answer = Some(Answer::RateLimit {
                    status: *status,
                    reset_in: *reset_in,
                    retry_after: *retry_after,
                });
            }
            Action::Redirect { to } => self.answer = Some(Answer::Redirect(to.clone())),
            Action::Body { content_type, .. } => {
                self.answer = Some(Answer::Body {
                    bytes: rule.body.clone().unwrap_or_default(),
                    content_type: content_type.clone(),
                });
            }
        }
    }
}

/// A status a reply can carry: codes hyper cannot send (or informational ones) become 500.
fn sendable(code: u16) -> StatusCode {
    StatusCode::from_u16(code)
        .ok()
        .filter(|s| s.as_u16() >= 200)
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The reply that `answer` puts in place of `reply` (whose class is kept). `peer` is named in
/// a rate-limit message, like GitHub does.
pub(crate) fn answer(answer: &Answer, req: &Req, reply: Reply, peer: IpAddr) -> Reply {
    let class = reply.class;
    let mut out = match answer {
        Answer::Status(code) => {
            let status = sendable(*code);
            Reply::error(status, status.canonical_reason().unwrap_or("Server Error"))
        }
        Answer::RateLimit {
            status,
            reset_in,
            retry_after,
        } => rate_limited(sendable(*status), *reset_in, *retry_after, req, peer),
        Answer::Redirect(to) => Reply::redirect(&format!("http://{to}{}", req.path_and_query())),
        Answer::Body {
            bytes,
            content_type,
        } => {
            let status = match reply.status {
                StatusCode::PARTIAL_CONTENT
                | StatusCode::NOT_MODIFIED
                | StatusCode::RANGE_NOT_SATISFIABLE => StatusCode::OK,
                other => other,
            };
            let mut out = Reply::new(status)
                .header(header::CONTENT_TYPE, content_type)
                .body(http::Body::Bytes(bytes.clone()));
            out.headers = reply.headers;
            for name in [
                header::CONTENT_TYPE,
                header::CONTENT_LENGTH,
                header::CONTENT_ENCODING,
                header::CONTENT_RANGE,
                header::CONTENT_DISPOSITION,
                header::ETAG,
            ] {
                out.headers.remove(name);
            }
            if let Ok(value) = HeaderValue::from_str(content_type) {
                out.headers.insert(header::CONTENT_TYPE, value);
            }
            out
        }
    };
    out.class = class;
    // Content-Length, and no body for HEAD (nothing else applies to a non-200 or an untagged
    // 200).
    http::finish(req, out)
}

fn rate_limited(
    status: StatusCode,
    reset_in: Duration,
    retry_after: Option<Duration>,
    req: &Req,
    peer: IpAddr,
) -> Reply {
    let who = if req.headers.contains_key(header::AUTHORIZATION) {
        "user ID 1".to_string()
    } else {
        peer.to_string()
    };
    let message = format!(
        "API rate limit exceeded for {who}. (But here's the good news: Authenticated requests \
         get a higher rate limit. Check out the documentation for more details.)"
    );
    let body = serde_json::json!({
        "message": message,
        "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
        "status": status.as_u16().to_string(),
    });
    let mut reply = Reply::new(status)
        .header(header::CONTENT_TYPE, http::JSON)
        .body(http::Body::Bytes(body.to_string().into()));
    let reset = SystemTime::now()
        .checked_add(reset_in)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
    let limit = ratelimit::DEFAULT_LIMIT;
    for (name, value) in [
        ("x-ratelimit-limit", limit),
        ("x-ratelimit-remaining", 0),
        ("x-ratelimit-used", limit),
        ("x-ratelimit-reset", reset),
    ] {
        reply.headers.insert(name, HeaderValue::from(value));
    }
    reply
        .headers
        .insert("x-ratelimit-resource", HeaderValue::from_static("core"));
    if let Some(retry) = retry_after {
        let secs = retry.as_secs() + u64::from(retry.subsec_nanos() > 0);
        reply
            .headers
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("*", "/raw/a/b?x=1"));
        assert!(glob("/raw/*", "/raw/o/r/main/f"));
        assert!(!glob("/raw/*", "/repos/o/r"));
        assert!(glob("*/releases/latest", "/repos/o/r/releases/latest"));
        assert!(!glob("*/releases/latest", "/repos/o/r/releases/latest?x"));
        assert!(glob(
            "*/git/trees/*",
            "/repos/o/r/git/trees/main?recursive=1"
        ));
        assert!(glob("/a*b*c", "/aXbYbZc"));
        assert!(!glob("/a*b*c", "/aXbYbZ"));
        assert!(glob("**x", "yyx"));
        assert!(glob("/exact", "/exact"));
        assert!(!glob("/exact", "/exactly"));
        assert!(!glob("", "/"));
        assert!(glob("a*a*a*a*b", &format!("{}b", "a".repeat(200))));
        assert!(!glob("a*a*a*a*b", &"a".repeat(200)));
    }

    #[test]
    fn every_cli_form_parses() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tree.json");
        std::fs::write(&file, b"{\"tree\":[]}").unwrap();
        let cases = [
            (
                "/raw/*=reset-after:1000,times=3".to_string(),
                Fault::new("/raw/*", Action::ResetAfter(1000)).times(3),
            ),
            (
                "*=latency:50ms".to_string(),
                Fault::new("*", Action::Latency(ms(50))),
            ),
            (
                "*=bandwidth:2000000".to_string(),
                Fault::new("*", Action::Bandwidth(2_000_000)),
            ),
            (
                format!("*/git/trees/*=body:@{}", file.display()),
                Fault::new(
                    "*/git/trees/*",
                    Action::Body {
                        bytes: b"{\"tree\":[]}".to_vec(),
                        content_type: http::JSON.to_string(),
                    },
                ),
            ),
            (
                "/raw/*=status:503,skip=1,times=2".to_string(),
                Fault::new("/raw/*", Action::Status(503)).skip(1).times(2),
            ),
            (
                "*=rate-limit:429,reset-in:2s,retry-after:1s".to_string(),
                Fault::new(
                    "*",
                    Action::RateLimit {
                        status: 429,
                        reset_in: ms(2000),
                        retry_after: Some(ms(1000)),
                    },
                ),
            ),
            (
                "*=rate-limit:403".to_string(),
                Fault::new(
                    "*",
                    Action::RateLimit {
                        status: 403,
                        reset_in: ms(60_000),
                        retry_after: None,
                    },
                ),
            ),
            (
                "/raw/*=redirect:localhost:8080".to_string(),
                Fault::new(
                    "/raw/*",
                    Action::Redirect {
                        to: "localhost:8080".to_string(),
                    },
                ),
            ),
            (
                "/raw/*=stall:100,pause:30s".to_string(),
                Fault::new(
                    "/raw/*",
                    Action::Stall {
                        after: 100,
                        pause: ms(30_000),
                    },
                ),
            ),
            (
                "/raw/*=flip-byte:5".to_string(),
                Fault::new("/raw/*", Action::FlipByte(5)),
            ),
            (
                "/raw/*=wrong-length:-10".to_string(),
                Fault::new("/raw/*", Action::WrongLength(-10)),
            ),
            (
                "/raw/*=wrong-length:+7".to_string(),
                Fault::new("/raw/*", Action::WrongLength(7)),
            ),
            (
                "/raw/*=truncate:0".to_string(),
                Fault::new("/raw/*", Action::Truncate(0)),
            ),
            (
                "*?per_page=1=status:500".to_string(),
                Fault::new("*?per_page=1", Action::Status(500)),
            ),
            (
                " *=latency:1.5s , times=1 ".to_string(),
                Fault::new("*", Action::Latency(ms(1500))).times(1),
            ),
        ];
        for (spec, want) in cases {
            let got: Fault = spec.parse().unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!(got, want, "{spec}");
            if !matches!(want.action, Action::Body { .. }) {
                // Display is the CLI form and parses back to the same rule.
                assert_eq!(want.to_string().parse::<Fault>().unwrap(), want);
            }
        }
        let typed: Fault = format!("*=body:@{},type:text/html", file.display())
            .parse()
            .unwrap();
        assert!(
            matches!(typed.action, Action::Body { ref content_type, .. } if content_type == "text/html")
        );
        assert_eq!(typed.action.to_string(), "body:<11 bytes>,type:text/html");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let cases = [
            ("", "expected PATTERN=ACTION"),
            ("/raw/*", "expected PATTERN=ACTION"),
            ("/raw/*=explode:1", "unknown action `explode`"),
            ("=status:500", "pattern before `=` is empty"),
            ("*=latency", "`latency` needs a duration"),
            ("*=latency:50", "invalid duration `50`"),
            ("*=latency:5 parsecs", "invalid duration"),
            ("*=latency:.s", "invalid duration"),
            ("*=latency:99999999999999999999h", "invalid duration"),
            ("*=bandwidth:0", "at least 1 byte per second"),
            ("*=bandwidth:fast", "needs a whole number, got `fast`"),
            ("*=reset-after:-1", "`reset-after` needs a whole number"),
            ("*=truncate:", "`truncate` needs a byte count"),
            ("*=flip-byte:x", "`flip-byte` needs a whole number"),
            ("*=stall:100", "`stall` needs `pause:DURATION`"),
            ("*=stall:100,pause:soon", "invalid duration `soon`"),
            (
                "*=stall:100,wait:1s",
                "unknown parameter `wait` for `stall`",
            ),
            ("*=status:200", "`status` must be 400 to 599, got 200"),
            ("*=status:99999", "not a status code"),
            (
                "*=rate-limit:500",
                "`rate-limit` answers 403 or 429, got 500",
            ),
            ("*=rate-limit", "`rate-limit` needs a status"),
            ("*=wrong-length:0", "non-zero delta"),
            ("*=wrong-length:ten", "`wrong-length` needs a whole number"),
            ("*=redirect:localhost", "`redirect` needs host:port"),
            ("*=redirect:a b:80", "`redirect` needs host:port"),
            ("*=body:/no/at/sign", "`body` takes @FILE"),
            ("*=body:@/does/not/exist.json", "cannot read the body file"),
            ("*=status:503,times=0", "times=0 would never fault"),
            ("*=status:503,times=x", "`times` needs a whole number"),
            ("*=status:503,skip=1,skip=2", "`skip` is given twice"),
            ("*=status:503,every=2", "unknown option `every`"),
            (
                "*=status:503,pause:1s",
                "`status` takes no parameter, got `pause`",
            ),
            ("*=status:503,oops", "`oops` is neither PARAM:VALUE"),
        ];
        for (spec, want) in cases {
            let err = spec.parse::<Fault>().unwrap_err();
            assert!(
                err.reason().contains(want),
                "{spec:?}: {err} does not contain {want:?}"
            );
            assert!(
                err.to_string()
                    .starts_with(&format!("invalid fault `{spec}`: "))
            );
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(duration("7ns").unwrap(), Duration::from_nanos(7));
        assert_eq!(duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(duration("0.25s").unwrap(), ms(250));
        assert_eq!(duration(".5ms").unwrap(), Duration::from_micros(500));
        assert!(duration("1.0000000001s").is_err());
        for d in [
            ms(50),
            ms(1500),
            Duration::from_secs(120),
            Duration::from_nanos(3),
        ] {
            assert_eq!(duration(&DisplayDuration(d).to_string()).unwrap(), d);
        }
    }

    #[test]
    fn skip_and_times_count_matching_requests() {
        let rules = Rules::new(vec![
            Fault::new("/raw/*", Action::Status(503)).skip(1).times(2),
        ]);
        let applied = |target: &str| rules.plan(target, "h").answer.is_some();
        assert!(!applied("/repos/x"), "does not match, not counted");
        assert!(!applied("/raw/a"), "skipped");
        assert!(applied("/raw/a"));
        assert!(applied("/raw/b"));
        assert!(!applied("/raw/a"), "used up");
        rules.set(vec![Fault::new("/raw/*", Action::Status(500)).times(1)]);
        assert!(applied("/raw/a"), "new rules count afresh");
        assert!(!applied("/raw/a"));
    }

    #[test]
    fn rules_combine_and_the_first_answer_wins() {
        let rules = Rules::new(vec![
            Fault::new("*", Action::Latency(ms(10))),
            Fault::new("*", Action::Latency(ms(5))),
            Fault::new("*", Action::Bandwidth(1000)),
            Fault::new("*", Action::Truncate(50)),
            Fault::new("*", Action::ResetAfter(20)),
            Fault::new("*", Action::Status(502)),
            Fault::new("*", Action::Status(504)).times(1),
            Fault::new("*", Action::WrongLength(3)),
            Fault::new("*", Action::WrongLength(-1)),
        ]);
        let plan = rules.plan("/x", "h");
        assert_eq!(plan.latency, ms(15));
        assert_eq!(plan.shape.links.len(), 1);
        assert_eq!(plan.shape.cut, Some((20, End::Reset)));
        assert_eq!(plan.shape.length_delta, 2);
        assert!(matches!(plan.answer, Some(Answer::Status(502))));
        assert_eq!(
            plan.names,
            [
                "latency:10ms",
                "latency:5ms",
                "bandwidth:1000",
                "truncate:50",
                "reset-after:20",
                "status:502",
                "wrong-length:3",
                "wrong-length:-1"
            ]
        );
        // The shadowed 504 kept its one turn.
        rules.set(vec![
            Fault::new("*", Action::Status(502)).times(1),
            Fault::new("*", Action::Status(504)).times(1),
        ]);
        assert!(matches!(
            rules.plan("/x", "h").answer,
            Some(Answer::Status(502))
        ));
        assert!(matches!(
            rules.plan("/x", "h").answer,
            Some(Answer::Status(504))
        ));
        assert!(rules.plan("/x", "h").answer.is_none());
    }

    #[test]
    fn a_redirect_skips_requests_already_at_its_target() {
        let rules = Rules::new(vec![Fault::new(
            "*",
            Action::Redirect {
                to: "localhost:9".to_string(),
            },
        )]);
        assert!(rules.plan("/x", "127.0.0.1:9").answer.is_some());
        assert!(rules.plan("/x", "LOCALHOST:9").answer.is_none());
    }

    #[test]
    fn odd_statuses_are_sent_as_500() {
        assert_eq!(sendable(42), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(sendable(101), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(sendable(503), StatusCode::SERVICE_UNAVAILABLE);
    }
}
