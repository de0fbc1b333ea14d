//! The command-line syntax of a fault: `PATTERN=ACTION[:VALUE][,PARAM:VALUE…][,skip=N][,times=N]`
//! (see [`Fault`]), parsed into a rule with a message that says what is wrong.

use std::str::FromStr;
use std::time::Duration;

use hyper::header::HeaderValue;

use super::{Action, Fault};
use crate::http;

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

/// `50ms`, `2s`, `1.5s`, `1m`: humantime's syntax, a number and a unit (`ns`, `us`, `ms`,
/// `s`, `m`, `h`, …).
fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| {
        format!(
            "invalid duration `{text}` ({err}): expected a number and a unit (ns, us, ms, s, m, h), like `50ms`"
        )
    })
}

#[cfg(test)]
mod tests {
    use humantime::format_duration;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
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
        assert_eq!(duration("1s 500ms").unwrap(), ms(1500));
        for d in [
            ms(50),
            ms(1500),
            Duration::from_secs(120),
            Duration::from_nanos(3),
        ] {
            assert_eq!(duration(&format_duration(d).to_string()).unwrap(), d);
        }
    }
}
