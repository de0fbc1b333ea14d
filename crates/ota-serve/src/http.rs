//! HTTP mechanics shared by every endpoint: the request as handlers see it, the reply they
//! build, and the rules applied to every reply in one place ([`finish`]): ETag and
//! `If-None-Match` (304), `Range`/`If-Range` (206/416), gzip, `Content-Length`, and HEAD.
//!
//! Handlers only say *what* the representation is (status, body, ETag, whether ranges and
//! gzip make sense); they cannot forget a conditional header or get a 304 wrong, because none
//! of them implements one.

use std::io::{Seek, SeekFrom, Write};

use bytes::Bytes;
use headers::{ETag, HeaderMapExt, IfNoneMatch, IfRange};
use http_range_header::RangeUnsatisfiableError;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, StatusCode};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::stats::RequestClass;

/// The parts of a request the handlers use. Owned, so it can move to a blocking thread.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub method: Method,
    /// The path as sent, still percent-encoded.
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    /// The authority the client addressed (`Host`), used to build URLs in responses.
    pub host: String,
}

impl Req {
    pub(crate) fn header(&self, name: HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `http://host`, the base of every URL the server hands out.
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.host)
    }

    pub(crate) fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }

    /// The decoded value of the first query parameter `key` (`Some("")` for a bare `?key`).
    pub(crate) fn query_param(&self, key: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }

    /// Whether the `Accept` header lists any of `media_types` (parameters ignored).
    pub(crate) fn accepts_any(&self, media_types: &[&str]) -> bool {
        self.headers.get_all(header::ACCEPT).iter().any(|value| {
            value.to_str().is_ok_and(|value| {
                value.split(',').any(|item| {
                    let media = item.split(';').next().unwrap_or_default().trim();
                    media_types.iter().any(|m| media.eq_ignore_ascii_case(m))
                })
            })
        })
    }
}

/// A response body as handlers produce it.
#[derive(Debug)]
pub(crate) enum Body {
    Empty,
    Bytes(Bytes),
    /// `len` bytes of `file` from its current position (streamed, never loaded whole).
    File {
        file: std::fs::File,
        len: u64,
    },
    /// A child process's output, sent as it is written: its length is known only at the end,
    /// so it goes without `Content-Length` (chunked), and without ranges or gzip.
    Stream(crate::piped::Piped),
}

impl Body {
    /// The length, if known before the body is sent (not for [`Body::Stream`]).
    pub(crate) fn len(&self) -> Option<u64> {
        match self {
            Body::Empty => Some(0),
            Body::Bytes(b) => Some(b.len() as u64),
            Body::File { len, .. } => Some(*len),
            Body::Stream(_) => None,
        }
    }
}

/// A finished or unfinished reply: status, headers, body and what [`finish`] may do with it.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Body,
    pub class: RequestClass,
    /// Strong validator of the full 200 representation (hex, without quotes).
    pub etag: Option<String>,
    /// Whether `Range` requests are honoured.
    pub ranges: bool,
    /// Whether the body may be gzip-encoded when the client allows it.
    pub gzip: bool,
}

impl Reply {
    pub(crate) fn new(status: StatusCode) -> Reply {
        Reply {
            status,
            headers: HeaderMap::new(),
            body: Body::Empty,
            class: RequestClass::Other,
            etag: None,
            ranges: false,
            gzip: false,
        }
    }

    /// A 200 with `bytes`, validated by the SHA-256 of the bytes.
    pub(crate) fn bytes(content_type: &'static str, bytes: impl Into<Bytes>) -> Reply {
        let bytes = bytes.into();
        let etag = sha256_hex(&bytes);
        Reply::new(StatusCode::OK)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::Bytes(bytes))
            .etag(etag)
    }

    /// A 200 with `value` as JSON, like GitHub's API answers.
    pub(crate) fn json<T: Serialize + ?Sized>(value: &T) -> Reply {
        Reply::json_status(StatusCode::OK, value)
    }

    pub(crate) fn json_status<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => {
                let mut reply = Reply::bytes(JSON, body);
                reply.status = status;
                if status != StatusCode::OK {
                    reply.etag = None;
                }
                reply
            }
            Err(err) => Reply::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot encode the response: {err}"),
            ),
        }
    }

    /// GitHub's error shape: `{"message": …, "documentation_url": …, "status": "404"}`.
    pub(crate) fn error(status: StatusCode, message: &str) -> Reply {
        #[derive(Serialize)]
        struct ErrorBody<'a> {
            message: &'a str,
            documentation_url: &'static str,
            status: String,
        }
        let body = ErrorBody {
            message,
            documentation_url: "https://docs.github.com/rest",
            status: status.as_u16().to_string(),
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        Reply::new(status)
            .header(header::CONTENT_TYPE, JSON)
            .body(Body::Bytes(bytes.into()))
    }

    pub(crate) fn not_found() -> Reply {
        Reply::error(StatusCode::NOT_FOUND, "Not Found")
    }

    pub(crate) fn redirect(location: &str) -> Reply {
        let mut reply = Reply::new(StatusCode::FOUND);
        if let Ok(value) = HeaderValue::from_str(location) {
            reply.headers.insert(header::LOCATION, value);
        }
        reply
    }

    pub(crate) fn header(mut self, name: HeaderName, value: &str) -> Reply {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.headers.insert(name, value);
        }
        self
    }

    pub(crate) fn body(mut self, body: Body) -> Reply {
        self.body = body;
        self
    }

    pub(crate) fn etag(mut self, etag: String) -> Reply {
        self.etag = Some(etag);
        self
    }

    pub(crate) fn ranges(mut self) -> Reply {
        self.ranges = true;
        self
    }

    pub(crate) fn gzip(mut self) -> Reply {
        self.gzip = true;
        self
    }
}

/// How a handler failed; turned into GitHub's error JSON.
#[derive(Debug)]
pub(crate) enum Fail {
    NotFound,
    Status(StatusCode, String),
    Internal(crate::Error),
}

impl From<crate::Error> for Fail {
    fn from(err: crate::Error) -> Fail {
        Fail::Internal(err)
    }
}

impl Fail {
    pub(crate) fn into_reply(self) -> Reply {
        match self {
            Fail::NotFound => Reply::not_found(),
            Fail::Status(status, message) => Reply::error(status, &message),
            Fail::Internal(err) => {
                let message = crate::error::chain(&err);
                tracing::error!("internal error: {message}");
                Reply::error(StatusCode::INTERNAL_SERVER_ERROR, &message)
            }
        }
    }
}

pub(crate) const JSON: &str = "application/json; charset=utf-8";

/// Applies conditional requests, ranges, compression, `Content-Length` and HEAD to `reply`.
/// This is the only place those rules live.
pub(crate) fn finish(req: &Req, mut reply: Reply) -> Reply {
    if reply.status == StatusCode::OK {
        if let Some(tag) = reply.etag.clone() {
            set(&mut reply.headers, header::ETAG, &quote(&tag, false));
            if if_none_match_hits(req, &tag) {
                return not_modified(reply);
            }
        }
        if reply.ranges {
            set(&mut reply.headers, header::ACCEPT_RANGES, "bytes");
            // A body of unknown length is sent whole (RFC 9110 lets a server ignore `Range`).
            if let Some(range) = req.header(header::RANGE)
                && let Some(len) = reply.body.len()
                && if_range_allows(req, reply.etag.as_deref())
            {
                match parse_range(range, len) {
                    Range::Ignore => {}
                    Range::Unsatisfiable => {
                        let mut out = Reply::new(StatusCode::RANGE_NOT_SATISFIABLE);
                        out.class = reply.class;
                        out.headers = reply.headers;
                        out.headers.remove(header::ETAG);
                        out.headers.remove(header::CONTENT_TYPE);
                        set(
                            &mut out.headers,
                            header::CONTENT_RANGE,
                            &format!("bytes */{len}"),
                        );
                        return finish_length(req, out);
                    }
                    Range::Bytes(start, end) => {
                        match slice(reply.body, start, end) {
                            Ok(body) => reply.body = body,
                            Err(err) => {
                                return Fail::Internal(crate::Error::io("seeking in a file")(err))
                                    .into_reply();
                            }
                        }
                        reply.status = StatusCode::PARTIAL_CONTENT;
                        let range = format!("bytes {start}-{end}/{len}");
                        set(&mut reply.headers, header::CONTENT_RANGE, &range);
                        return finish_length(req, reply);
                    }
                }
            }
        }
        if reply.gzip {
            set(&mut reply.headers, header::VARY, "Accept-Encoding");
            if accepts_gzip(req)
                && let Body::Bytes(bytes) = &reply.body
                && !bytes.is_empty()
            {
                match gzip(bytes) {
                    Ok(compressed) => {
                        reply.body = Body::Bytes(compressed.into());
                        set(&mut reply.headers, header::CONTENT_ENCODING, "gzip");
                        // Another representation of the same content: weak, like
                        // raw.githubusercontent.com (so it can never satisfy If-Range).
                        if let Some(tag) = &reply.etag {
                            set(&mut reply.headers, header::ETAG, &quote(tag, true));
                        }
                    }
                    Err(err) => tracing::warn!("gzip failed, sending identity: {err}"),
                }
            }
        }
    }
    finish_length(req, reply)
}

fn finish_length(req: &Req, mut reply: Reply) -> Reply {
    // Without a known length hyper sends the body chunked (HEAD: says nothing of its length).
    match reply.body.len() {
        Some(len) => set(&mut reply.headers, header::CONTENT_LENGTH, &len.to_string()),
        None => {
            reply.headers.remove(header::CONTENT_LENGTH);
        }
    }
    if req.method == Method::HEAD {
        // Same headers, no body; hyper keeps our Content-Length for HEAD.
        reply.body = Body::Empty;
    }
    reply
}

fn not_modified(reply: Reply) -> Reply {
    let mut out = Reply::new(StatusCode::NOT_MODIFIED);
    out.class = reply.class;
    out.headers = reply.headers;
    out.headers.remove(header::CONTENT_TYPE);
    out.headers.remove(header::CONTENT_LENGTH);
    out.headers.remove(header::CONTENT_DISPOSITION);
    if reply.gzip {
        set(&mut out.headers, header::VARY, "Accept-Encoding");
    }
    out
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

fn quote(tag: &str, weak: bool) -> String {
    if weak {
        format!("W/\"{tag}\"")
    } else {
        format!("\"{tag}\"")
    }
}

/// The strong entity tag `"tag"`.
fn strong_etag(tag: &str) -> Option<ETag> {
    quote(tag, false).parse().ok()
}

/// `If-None-Match` (a list of entity tags compared weakly, or `*`) lists `tag`.
fn if_none_match_hits(req: &Req, tag: &str) -> bool {
    match (req.headers.typed_get::<IfNoneMatch>(), strong_etag(tag)) {
        (Some(condition), Some(etag)) => !condition.precondition_passes(&etag),
        _ => false,
    }
}

/// `If-Range` lets the range through only if it is the strong, current ETag. A date or any
/// other validator means "send it all" (we send no `Last-Modified`).
fn if_range_allows(req: &Req, etag: Option<&str>) -> bool {
    if !req.headers.contains_key(header::IF_RANGE) {
        return true;
    }
    let current = etag.and_then(strong_etag);
    match (req.headers.typed_get::<IfRange>(), current) {
        (Some(condition), Some(current)) => !condition.is_modified(Some(&current), None),
        _ => false,
    }
}

/// The outcome of reading a `Range` header against a body of a known length.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Range {
    /// Not a single byte range we understand: serve the whole body (RFC 9110 allows this).
    Ignore,
    /// 416.
    Unsatisfiable,
    /// 206 with bytes `start..=end`.
    Bytes(u64, u64),
}

/// Reads `Range` against a body of `len` bytes. Only a single range is served; several, or
/// anything malformed, get the whole body.
pub(crate) fn parse_range(header: &str, len: u64) -> Range {
    let ranges = http_range_header::parse_range_header(header.trim())
        .and_then(|parsed| parsed.validate(len));
    match ranges.as_deref() {
        Ok([range]) => Range::Bytes(*range.start(), *range.end()),
        Ok(_) => Range::Ignore,
        Err(RangeUnsatisfiableError::Unsatisfiable) => Range::Unsatisfiable,
        Err(_) => Range::Ignore,
    }
}

fn slice(body: Body, start: u64, end: u64) -> std::io::Result<Body> {
    let count = end - start + 1;
    Ok(match body {
        Body::Empty => Body::Empty,
        Body::Bytes(bytes) => {
            // start/end are within len, which came from this buffer, so these fit in usize.
            let start = usize::try_from(start)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let stop = usize::try_from(end + 1)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            Body::Bytes(bytes.slice(start..stop))
        }
        Body::File { mut file, .. } => {
            file.seek(SeekFrom::Current(i64::try_from(start).unwrap_or(i64::MAX)))?;
            Body::File { file, len: count }
        }
        // `finish` takes ranges of known lengths only.
        Body::Stream(_) => {
            return Err(std::io::Error::other("a range of a body of unknown length"));
        }
    })
}

/// Whether `Accept-Encoding` allows gzip (explicitly, or by `*`, with a non-zero q-value).
pub(crate) fn accepts_gzip(req: &Req) -> bool {
    let mut star = false;
    for value in req.headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or_default().trim();
            let q_zero = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                return !q_zero;
            }
            if coding == "*" {
                star = !q_zero;
            }
        }
    }
    star
}

fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 3 + 64),
        flate2::Compression::fast(),
    );
    encoder.write_all(bytes)?;
    encoder.finish()
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Decodes `%XX` escapes of one path segment; `None` for non-UTF-8. (A `%` without two hex
/// digits stays as it is.)
pub(crate) fn percent_decode(segment: &str) -> Option<String> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// What a path segment keeps unescaped besides letters and digits: RFC 3986's unreserved
/// characters and the sub-delimiters `pchar` allows, like GitHub's URLs.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'+')
    .remove(b'@')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':');

/// Percent-encodes one path segment for a URL the server hands out.
pub(crate) fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// Percent-encodes a `/`-separated path, keeping the slashes.
pub(crate) fn encode_path(s: &str) -> String {
    s.split('/')
        .map(encode_segment)
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-", 10), Range::Bytes(0, 9));
        assert_eq!(parse_range("bytes=3-5", 10), Range::Bytes(3, 5));
        assert_eq!(parse_range("bytes=3-50", 10), Range::Bytes(3, 9));
        assert_eq!(parse_range("bytes=-4", 10), Range::Bytes(6, 9));
        assert_eq!(parse_range("bytes=-40", 10), Range::Bytes(0, 9));
        assert_eq!(parse_range("bytes=10-", 10), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 10), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=-4", 0), Range::Ignore);
        assert_eq!(parse_range("bytes=5-3", 10), Range::Ignore);
        assert_eq!(parse_range("bytes=0-1,4-5", 10), Range::Ignore);
        assert_eq!(parse_range("items=0-1", 10), Range::Ignore);
        assert_eq!(parse_range("bytes=+1-2", 10), Range::Ignore);
        assert_eq!(parse_range("bytes=x-", 10), Range::Ignore);
    }

    fn req(headers: &[(&str, &str)]) -> Req {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        Req {
            method: Method::GET,
            path: "/".into(),
            query: None,
            headers: map,
            host: "h".into(),
        }
    }

    #[test]
    fn if_none_match_lists() {
        let hits = |value: &str| if_none_match_hits(&req(&[("if-none-match", value)]), "abc");
        assert!(hits("\"abc\""));
        assert!(hits("W/\"abc\""));
        assert!(hits("\"x\", W/\"abc\""));
        assert!(hits("*"));
        assert!(!hits("\"abd\""));
        assert!(!hits("abc"), "not an entity tag");
        assert!(!if_none_match_hits(&req(&[]), "abc"));
    }

    #[test]
    fn if_range_needs_the_current_strong_tag() {
        let allows = |value: &str| if_range_allows(&req(&[("if-range", value)]), Some("abc"));
        assert!(allows("\"abc\""));
        assert!(!allows("W/\"abc\""));
        assert!(!allows("\"abd\""));
        assert!(!allows("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert!(if_range_allows(&req(&[]), Some("abc")));
        assert!(!if_range_allows(&req(&[("if-range", "\"abc\"")]), None));
    }

    #[test]
    fn percent_coding() {
        assert_eq!(percent_decode("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(percent_decode("%e2%9c%93").as_deref(), Some("✓"));
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
        assert_eq!(encode_path("refs/heads/a b"), "refs/heads/a%20b");
    }
}
