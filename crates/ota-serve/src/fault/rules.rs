//! Matching requests against the live rules: counters (`skip`, `times`) under one lock, in
//! the order requests arrive, and the plan of what to do to one request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::{Action, Fault};
use crate::wire::{End, Link, Shape};

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
}
