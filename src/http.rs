//! The HTTP client: one place that speaks HTTP, for the sources.
//!
//! It owns the connection pool (keep-alive), TLS (rustls with the bundled Mozilla roots;
//! certificate verification is always on), the request headers GitHub expects, the token
//! (sent only to the configured hosts, never to a redirect target, never printed), retries
//! with capped exponential backoff and full jitter, rate-limit waits, bounded response
//! sizes, and the request/byte counters that `ota` reports.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use ureq::http::{HeaderMap, StatusCode};

use crate::config::{NetworkConfig, Token};

/// The API version GitHub documents for these endpoints.
const API_VERSION: &str = "2022-11-28";
/// Wait after a secondary rate limit that gives no `retry-after` (GitHub: at least a minute).
const SECONDARY_LIMIT_WAIT: Duration = Duration::from_secs(60);
/// Largest error body read to extract a message.
const ERROR_BODY_LIMIT: u64 = 64 << 10;

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Accept {
    /// `application/vnd.github+json`.
    Json,
    /// `application/vnd.github.sha`: a bare commit SHA.
    Sha,
    /// `application/vnd.github.raw+json`: raw blob bytes from the API.
    RawBlob,
    /// Any bytes (raw file hosting).
    Bytes,
    /// `application/octet-stream`: a release asset's bytes from the API.
    Octet,
}

impl Accept {
    fn header(self) -> &'static str {
        match self {
            Accept::Json => "application/vnd.github+json",
            Accept::Sha => "application/vnd.github.sha",
            Accept::RawBlob => "application/vnd.github.raw+json",
            Accept::Bytes => "*/*",
            Accept::Octet => "application/octet-stream",
        }
    }
}

/// Which counter a request adds to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// Metadata: releases, refs, commits, trees.
    Api,
    /// File content.
    File,
}

/// Requests and bytes used so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Metadata requests sent (each retry counts).
    pub api_requests: u64,
    /// Metadata body bytes received.
    pub api_bytes: u64,
    /// File requests sent (each retry and resume counts).
    pub file_requests: u64,
    /// File body bytes received.
    pub file_bytes: u64,
    /// Retries made after a failed attempt.
    pub retries: u64,
}

impl Usage {
    /// What was used after `earlier` was taken from the same counters.
    pub fn since(&self, earlier: &Usage) -> Usage {
        Usage {
            api_requests: self.api_requests.saturating_sub(earlier.api_requests),
            api_bytes: self.api_bytes.saturating_sub(earlier.api_bytes),
            file_requests: self.file_requests.saturating_sub(earlier.file_requests),
            file_bytes: self.file_bytes.saturating_sub(earlier.file_bytes),
            retries: self.retries.saturating_sub(earlier.retries),
        }
    }
}

/// The last rate-limit headers seen from the API.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Quota {
    /// `x-ratelimit-limit`.
    pub limit: Option<u64>,
    /// `x-ratelimit-remaining`.
    pub remaining: Option<u64>,
    /// `x-ratelimit-reset` (Unix seconds).
    pub reset: Option<u64>,
}

#[derive(Default)]
struct Counters {
    api_requests: AtomicU64,
    api_bytes: AtomicU64,
    file_requests: AtomicU64,
    file_bytes: AtomicU64,
    retries: AtomicU64,
}

/// A small answer, read whole.
pub(crate) struct Answer {
    /// The body.
    pub body: Vec<u8>,
    /// Its `ETag`, for a later conditional request.
    pub etag: Option<String>,
    /// Its `Last-Modified`, for a later conditional request to a host that sends no `ETag`.
    pub last_modified: Option<String>,
    /// Its `Content-Type`.
    pub content_type: Option<String>,
}

impl Answer {
    /// Parses the body as JSON; the error says what arrived instead.
    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            let start: String = String::from_utf8_lossy(&self.body[..self.body.len().min(60)])
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            HttpError::new(
                url,
                ErrorKind::BadJson(format!(
                    "{e}; got {} bytes of {} starting {start:?}",
                    self.body.len(),
                    self.content_type.as_deref().unwrap_or("no content type"),
                )),
            )
        })
    }
}

/// A response whose body is streamed.
pub struct Download {
    /// Offset in the file where this body starts: the offset asked for, or 0 when the
    /// server ignored the range and sent the whole file.
    pub offset: u64,
    /// The response's strong `ETag`, to guard a resume with `If-Range`.
    pub validator: Option<String>,
    /// The body (already decompressed). An error that is [`NotTheObject`] says the bytes
    /// are wrong, not that the connection failed: asking again would bring the same bytes.
    pub reader: Box<dyn Read + Send>,
}

/// What a [`Download`]'s reader fails with when the bytes that arrived cannot be the object
/// (they do not decode, or run past the size the release declares), as opposed to a
/// dropped connection, which is worth resuming.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct NotTheObject(pub String);

impl NotTheObject {
    /// The error a reader returns.
    pub(crate) fn error(message: impl Into<String>) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, NotTheObject(message.into()))
    }

    /// Whether `error` says the bytes are not the object.
    pub(crate) fn is(error: &io::Error) -> bool {
        error.get_ref().is_some_and(|e| e.is::<NotTheObject>())
    }
}

/// The client. Cheap to share between download threads.
pub(crate) struct Http {
    agent: ureq::Agent,
    token: Option<Token>,
    /// Hosts (`host[:port]`) that may receive the token.
    token_hosts: Vec<String>,
    net: NetworkConfig,
    /// When the current operation must end (see [`Http::start_operation`]).
    deadline: Mutex<Option<Instant>>,
    counters: Arc<Counters>,
    quota: Mutex<Quota>,
}

impl Http {
    /// A client for `net`; `token` goes only to requests whose host is in `token_hosts`.
    pub(crate) fn new(net: &NetworkConfig, token: Option<Token>, token_hosts: Vec<String>) -> Http {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(net.user_agent.as_str())
            .timeout_connect(Some(net.connect_timeout))
            .timeout_recv_response(Some(net.http_timeout))
            .timeout_per_read(Some(net.http_timeout))
            .max_redirects(5)
            .max_idle_connections_per_host(net.parallel.max(1) * 2)
            .build();
        Http {
            agent: ureq::Agent::new_with_config(config),
            token,
            token_hosts,
            net: net.clone(),
            deadline: Mutex::new(None),
            counters: Arc::default(),
            quota: Mutex::new(Quota::default()),
        }
    }

    /// Starts an operation (one check or update): requests, waits and body reads fail once
    /// `deadline` has passed. Each operation gets its own, so a long-lived client (a daemon
    /// embedding ota) is not bound by the deadline of its first operation.
    pub(crate) fn start_operation(&self, deadline: Instant) {
        if let Ok(mut d) = self.deadline.lock() {
            *d = Some(deadline);
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.deadline.lock().ok().and_then(|d| *d)
    }

    /// Requests and bytes used so far.
    pub(crate) fn usage(&self) -> Usage {
        let c = &self.counters;
        Usage {
            api_requests: c.api_requests.load(Ordering::Relaxed),
            api_bytes: c.api_bytes.load(Ordering::Relaxed),
            file_requests: c.file_requests.load(Ordering::Relaxed),
            file_bytes: c.file_bytes.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
        }
    }

    /// The last rate-limit state the API reported.
    pub(crate) fn quota(&self) -> Quota {
        self.quota.lock().map(|q| q.clone()).unwrap_or_default()
    }

    /// GETs `url` and parses a JSON body of at most `limit` bytes.
    pub(crate) fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        limit: u64,
    ) -> Result<T, HttpError> {
        let answer = self
            .get(url, Accept::Json, limit, None)?
            .ok_or_else(|| not_modified(url))?;
        answer.json(url)
    }

    /// GETs a small metadata body, conditionally when `etag` is given: `Ok(None)` means the
    /// server answered 304 Not Modified (GitHub does not count an authenticated 304 against
    /// the rate limit).
    pub(crate) fn get(
        &self,
        url: &str,
        accept: Accept,
        limit: u64,
        etag: Option<&str>,
    ) -> Result<Option<Answer>, HttpError> {
        self.get_if(url, accept, limit, etag, None)
    }

    /// [`Http::get`], conditional on `etag` (`If-None-Match`) or, when there is none, on
    /// `last_modified` (`If-Modified-Since`: hosts that send no `ETag`).
    pub(crate) fn get_if(
        &self,
        url: &str,
        accept: Accept,
        limit: u64,
        etag: Option<&str>,
        last_modified: Option<&str>,
    ) -> Result<Option<Answer>, HttpError> {
        let condition: Vec<(&str, &str)> = match (etag, last_modified) {
            (Some(e), _) => vec![("If-None-Match", e)],
            (None, Some(time)) => vec![("If-Modified-Since", time)],
            (None, None) => Vec::new(),
        };
        self.with_retries(url, |attempt_url| {
            let response = self.send(attempt_url, accept, Class::Api, &condition)?;
            if response.status() == StatusCode::NOT_MODIFIED {
                return Ok(None);
            }
            let etag = header_str(response.headers(), "etag");
            let last_modified = header_str(response.headers(), "last-modified");
            let content_type = header_str(response.headers(), "content-type");
            let mut body = Vec::new();
            response
                .into_body()
                .into_reader()
                .take(limit + 1)
                .read_to_end(&mut body)
                .map_err(|e| HttpError::new(url, ErrorKind::Transport(e.to_string())))?;
            self.counters
                .api_bytes
                .fetch_add(body.len() as u64, Ordering::Relaxed);
            if body.len() as u64 > limit {
                return Err(HttpError::new(url, ErrorKind::TooLarge(limit)));
            }
            Ok(Some(Answer {
                body,
                etag,
                last_modified,
                content_type,
            }))
        })
    }

    /// Opens a file body from `offset` (a `Range` request when > 0, guarded by `If-Range`
    /// with the validator of the first response when it had a strong one), with retries for
    /// the request itself. Errors while reading the body are the caller's to retry (resume).
    pub(crate) fn download(
        &self,
        url: &str,
        accept: Accept,
        offset: u64,
        if_range: Option<&str>,
    ) -> Result<Download, HttpError> {
        self.with_retries(url, |attempt_url| {
            let range = format!("bytes={offset}-");
            let mut headers: Vec<(&str, &str)> = Vec::new();
            if offset > 0 {
                // A range counts bytes of the encoded body: ask for no encoding.
                headers.push(("Range", &range));
                headers.push(("Accept-Encoding", "identity"));
                if let Some(validator) = if_range {
                    headers.push(("If-Range", validator));
                }
            }
            let response = self.send(attempt_url, accept, Class::File, &headers)?;
            if response.status() == StatusCode::NOT_MODIFIED {
                return Err(not_modified(url));
            }
            let start = if response.status() == StatusCode::PARTIAL_CONTENT {
                content_range_start(response.headers()).ok_or_else(|| {
                    HttpError::new(
                        url,
                        ErrorKind::BadBody("206 without a valid Content-Range".into()),
                    )
                })?
            } else {
                0
            };
            if start != 0 && start != offset {
                return Err(HttpError::new(
                    url,
                    ErrorKind::BadBody(format!("asked for bytes from {offset}, got from {start}")),
                ));
            }
            // Only a strong validator may guard a range (RFC 9110, If-Range).
            let validator = header_str(response.headers(), "etag").filter(|e| !e.starts_with("W/"));
            let reader = Counted {
                inner: response.into_body().into_reader(),
                counters: Arc::clone(&self.counters),
                deadline: self.deadline(),
            };
            Ok(Download {
                offset: start,
                validator,
                reader: Box::new(reader),
            })
        })
    }

    /// Runs `attempt` until it succeeds, fails for good, or retries run out.
    fn with_retries<T>(
        &self,
        url: &str,
        mut attempt: impl FnMut(&str) -> Result<T, HttpError>,
    ) -> Result<T, HttpError> {
        let mut tries = 0u32;
        loop {
            self.check_deadline(url)?;
            match attempt(url) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let Some(delay) = self.retry_delay(&e, tries)? else {
                        return Err(e);
                    };
                    tries += 1;
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        "{e}; retry {tries}/{} in {:.1}s",
                        self.net.retries,
                        delay.as_secs_f64()
                    );
                    self.sleep(url, delay)?;
                }
            }
        }
    }

    /// How long to wait before retrying after `error` (the `tries`-th failure), or `None`
    /// when it must not be retried.
    fn retry_delay(&self, error: &HttpError, tries: u32) -> Result<Option<Duration>, HttpError> {
        if tries >= self.net.retries {
            return Ok(None);
        }
        match &error.kind {
            ErrorKind::RateLimited { wait, .. } => match wait {
                Some(wait) if *wait <= self.net.max_wait => Ok(Some(*wait)),
                _ => Ok(None),
            },
            kind if kind.is_transient() => Ok(Some(backoff(&self.net, tries))),
            _ => Ok(None),
        }
    }

    /// Sleeps unless that would pass the update's deadline.
    pub(crate) fn sleep(&self, url: &str, delay: Duration) -> Result<(), HttpError> {
        if let Some(deadline) = self.deadline()
            && Instant::now() + delay > deadline
        {
            return Err(HttpError::new(
                url,
                ErrorKind::Deadline(self.net.update_timeout),
            ));
        }
        std::thread::sleep(delay);
        Ok(())
    }

    fn check_deadline(&self, url: &str) -> Result<(), HttpError> {
        match self.deadline() {
            Some(d) if Instant::now() >= d => Err(HttpError::new(
                url,
                ErrorKind::Deadline(self.net.update_timeout),
            )),
            _ => Ok(()),
        }
    }

    /// Sends one GET and sorts the answer: 2xx passes, everything else becomes an error.
    fn send(
        &self,
        url: &str,
        accept: Accept,
        class: Class,
        extra: &[(&str, &str)],
    ) -> Result<ureq::http::Response<ureq::Body>, HttpError> {
        let mut request = self
            .agent
            .get(url)
            .header("Accept", accept.header())
            .header("X-GitHub-Api-Version", API_VERSION);
        if let Some(token) = &self.token
            && self
                .token_hosts
                .iter()
                .any(|h| host_of(url) == Some(h.as_str()))
        {
            request = request.header("Authorization", format!("Bearer {}", token.expose()));
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        match class {
            Class::Api => &self.counters.api_requests,
            Class::File => &self.counters.file_requests,
        }
        .fetch_add(1, Ordering::Relaxed);
        tracing::debug!("GET {url}");
        let response = request
            .call()
            .map_err(|e| HttpError::new(url, ErrorKind::Transport(describe(&e))))?;
        self.note_quota(response.headers());
        let status = response.status();
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            return Ok(response);
        }
        Err(self.status_error(url, response))
    }

    fn note_quota(&self, headers: &HeaderMap) {
        let num = |name: &str| header_u64(headers, name);
        if let Some(remaining) = num("x-ratelimit-remaining")
            && let Ok(mut quota) = self.quota.lock()
        {
            *quota = Quota {
                limit: num("x-ratelimit-limit"),
                remaining: Some(remaining),
                reset: num("x-ratelimit-reset"),
            };
        }
    }

    fn status_error(&self, url: &str, response: ureq::http::Response<ureq::Body>) -> HttpError {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        // Best effort: the message helps the user; a broken error body changes nothing.
        let _ = response
            .into_body()
            .into_reader()
            .take(ERROR_BODY_LIMIT)
            .read_to_end(&mut body);
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_owned));
        let remaining = header_u64(&headers, "x-ratelimit-remaining");
        let retry_after = header_u64(&headers, "retry-after").map(Duration::from_secs);
        let reset = header_u64(&headers, "x-ratelimit-reset");
        let secondary = message
            .as_deref()
            .is_some_and(|m| m.to_ascii_lowercase().contains("rate limit"));
        let kind = if (status == 403 || status == 429)
            && (remaining == Some(0) || retry_after.is_some() || secondary)
        {
            // GitHub: honour retry-after; else wait for the reset; a secondary limit that
            // gives neither asks for at least a minute.
            let wait = retry_after
                .or_else(|| {
                    reset.map(|r| {
                        Duration::from_secs(r.saturating_sub(crate::state::unix_now()) + 1)
                    })
                })
                .or(Some(SECONDARY_LIMIT_WAIT));
            ErrorKind::RateLimited { reset, wait }
        } else if status == 404 {
            ErrorKind::NotFound
        } else {
            ErrorKind::Status { status, message }
        };
        HttpError::new(url, kind)
    }
}

/// Full-jitter exponential backoff before retry number `tries + 1`: uniform in
/// `[0, min(max_backoff, backoff * 2^tries)]`, so that a fleet behind one NAT spreads out.
pub(crate) fn backoff(net: &NetworkConfig, tries: u32) -> Duration {
    let ceiling = net
        .backoff
        .saturating_mul(1u32 << tries.min(20))
        .min(net.max_backoff);
    ceiling.mul_f64(fastrand::f64())
}

/// Counts file body bytes as they are read, and stops a body that outlives the update's
/// deadline (a trickle that never stalls long enough for the read timeout).
struct Counted<R> {
    inner: R,
    counters: Arc<Counters>,
    deadline: Option<Instant>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the update's deadline (update_timeout_sec) passed",
            ));
        }
        let n = self.inner.read(buf)?;
        self.counters
            .file_bytes
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn not_modified(url: &str) -> HttpError {
    HttpError::new(
        url,
        ErrorKind::BadBody("304 Not Modified to an unconditional request".into()),
    )
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    Some(headers.get(name)?.to_str().ok()?.to_owned())
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// First byte of a `Content-Range: bytes START-END/LEN` header.
fn content_range_start(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get("content-range")?.to_str().ok()?;
    let range = value.strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}

/// `host[:port]` of an `http(s)://` URL.
pub(crate) fn host_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    Some(authority.rsplit_once('@').map_or(authority, |(_, h)| h))
}

fn describe(error: &ureq::Error) -> String {
    match error {
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::HostNotFound => "host not found (check the URL and DNS)".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        other => other.to_string(),
    }
}

/// A request that failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("GET {url}: {kind}")]
pub struct HttpError {
    /// The URL (never holds a secret).
    pub url: String,
    /// What went wrong.
    pub kind: ErrorKind,
}

impl HttpError {
    /// An error about `url`.
    pub fn new(url: &str, kind: ErrorKind) -> HttpError {
        HttpError {
            url: url.to_owned(),
            kind,
        }
    }
}

/// What went wrong with a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// 404.
    #[error("not found (404)")]
    NotFound,
    /// The rate limit is used up.
    #[error("{}", rate_limited(*reset))]
    RateLimited {
        /// When the quota resets (Unix seconds), if said.
        reset: Option<u64>,
        /// How long the server asked to wait, if said.
        wait: Option<Duration>,
    },
    /// Any other non-2xx answer.
    #[error("{}", status_message(*status, message.as_deref()))]
    Status {
        /// The status code.
        status: u16,
        /// GitHub's `message`, if any.
        message: Option<String>,
    },
    /// No answer: connection, TLS, timeout, reset.
    #[error("{0}")]
    Transport(String),
    /// A body larger than ota accepts for that request.
    #[error("response larger than {0} bytes; refusing it")]
    TooLarge(u64),
    /// JSON that does not parse or lacks fields.
    #[error("answer is not the JSON expected ({0})")]
    BadJson(String),
    /// A body that breaks the protocol.
    #[error("{0}")]
    BadBody(String),
    /// The whole-update deadline passed.
    #[error("the update took longer than update_timeout_sec ({}s); stopping", .0.as_secs())]
    Deadline(Duration),
}

fn status_message(status: u16, message: Option<&str>) -> String {
    let said = message.map(|m| format!(": {m}")).unwrap_or_default();
    let hint = match status {
        401 => {
            ". The host wants valid credentials: set a token that can read the repository \
             (`token` or `token_file` in [source], or the OTA_TOKEN environment variable), or \
             check the one set"
        }
        403 => {
            ". Access denied: a private repository needs a token that can read it (`token` or \
             `token_file` in [source], or the OTA_TOKEN environment variable); if one is set, \
             check its permissions"
        }
        _ => "",
    };
    format!("HTTP {status}{said}{hint}")
}

fn rate_limited(reset: Option<u64>) -> String {
    match reset {
        Some(reset) => format!(
            "rate limit exceeded; the quota resets at {} (set a token to get 5,000 requests per hour)",
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(reset))
        ),
        None => "rate limit exceeded (set a token to get 5,000 requests per hour)".into(),
    }
}

impl ErrorKind {
    /// Whether retrying the same request may succeed: no answer, 408, 429, 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            ErrorKind::Transport(_) => true,
            ErrorKind::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_extracted_without_credentials_or_paths() {
        assert_eq!(
            host_of("https://api.github.com/repos/a/b"),
            Some("api.github.com")
        );
        assert_eq!(
            host_of("http://127.0.0.1:8080/raw/x"),
            Some("127.0.0.1:8080")
        );
        assert_eq!(host_of("http://u:p@h:1?q"), Some("h:1"));
        assert_eq!(host_of("nope"), None);
    }
}
