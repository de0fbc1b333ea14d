//! GitHub's primary rate-limit bookkeeping for `/repos` responses.
//!
//! Clients read `x-ratelimit-*` headers to pace themselves, so the server sends them like
//! GitHub: a budget per hour, the number used in the current window and when it resets. The
//! budget is generous and never enforced: an exhausted budget (403/429 with
//! `x-ratelimit-remaining: 0`) is a fault a test asks for (`fault::Action::RateLimit`, whose
//! answer advertises the same [`DEFAULT_LIMIT`]). Like GitHub, an authenticated request
//! answered 304 is not charged.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::header::{self, HeaderValue};
use hyper::{HeaderMap, StatusCode};

use crate::http::{self, Reply};

/// Requests per hour the server advertises. Far above GitHub's 5,000 so that benchmarks never
/// see a client throttle itself.
pub(crate) const DEFAULT_LIMIT: u64 = 1_000_000;

const WINDOW_SECS: u64 = 3600;

pub(crate) struct RateLimiter {
    limit: u64,
    window: Mutex<Window>,
}

struct Window {
    start: u64,
    used: u64,
}

/// The state of the budget after a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quota {
    pub limit: u64,
    pub remaining: u64,
    pub used: u64,
    /// When the window resets, in UTC epoch seconds.
    pub reset: u64,
}

impl RateLimiter {
    pub(crate) fn new(limit: u64) -> RateLimiter {
        RateLimiter {
            limit,
            window: Mutex::new(Window {
                start: now(),
                used: 0,
            }),
        }
    }

    /// Charges one request (if `charge`) and returns the budget after it.
    pub(crate) fn charge(&self, charge: bool) -> Quota {
        let now = now();
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if now >= window.start + WINDOW_SECS {
            window.start = now;
            window.used = 0;
        }
        if charge {
            window.used += 1;
        }
        Quota {
            limit: self.limit,
            remaining: self.limit.saturating_sub(window.used),
            used: window.used,
            reset: window.start + WINDOW_SECS,
        }
    }
}

impl Quota {
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in [
            ("x-ratelimit-limit", self.limit),
            ("x-ratelimit-remaining", self.remaining),
            ("x-ratelimit-used", self.used),
            ("x-ratelimit-reset", self.reset),
        ] {
            headers.insert(name, HeaderValue::from(value));
        }
        headers.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
    }
}

/// GitHub's answer to a client over its primary rate limit: `status` (403 or 429), its
/// "API rate limit exceeded for {who}" JSON, `x-ratelimit-remaining: 0` with the reset
/// `reset_in` from now, and `retry-after` (whole seconds, rounded up) if given.
pub(crate) fn exceeded(
    status: StatusCode,
    reset_in: Duration,
    retry_after: Option<Duration>,
    who: &str,
) -> Reply {
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
    let quota = Quota {
        limit: DEFAULT_LIMIT,
        remaining: 0,
        used: DEFAULT_LIMIT,
        reset,
    };
    quota.apply(&mut reply.headers);
    if let Some(retry) = retry_after {
        let secs = retry.as_secs() + u64::from(retry.subsec_nanos() > 0);
        reply
            .headers
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    reply
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
