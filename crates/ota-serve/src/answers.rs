//! Replies a fault puts in place of the real one, in GitHub's shapes: its JSON error for a
//! status, its rate-limit answer, a redirect, or a replaced body.

use std::net::IpAddr;

use hyper::StatusCode;
use hyper::header::{self, HeaderValue};

use crate::fault::Answer;
use crate::http::{self, Reply, Req};
use crate::ratelimit;

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
        } => {
            // GitHub names the user, or the address of an anonymous client.
            let who = if req.headers.contains_key(header::AUTHORIZATION) {
                "user ID 1".to_string()
            } else {
                peer.to_string()
            };
            ratelimit::exceeded(sendable(*status), *reset_in, *retry_after, &who)
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_statuses_are_sent_as_500() {
        assert_eq!(sendable(42), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(sendable(101), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(sendable(503), StatusCode::SERVICE_UNAVAILABLE);
    }
}
