//! Base URLs (`api_url`, `raw_url`): the rules a base URL must follow, where plain HTTP is
//! safe enough, and where a host serves raw files.

use std::net::Ipv4Addr;

use url::{Host, ParseError, Url};

/// GitHub's own hosts: the defaults of `api_url` and `raw_url`.
pub(super) const GITHUB_API: &str = "https://api.github.com";
pub(super) const GITHUB_RAW: &str = "https://raw.githubusercontent.com";

/// Parses an `http(s)://host[:port][/path]` base URL with the `url` crate, which lowercases
/// the scheme and host and drops a default port, plus the rules of a base URL: no
/// credentials, query or fragment. The error says why it is not one (without the URL).
pub(super) fn parse(text: &str) -> Result<Url, String> {
    // The url crate would drop spaces and tabs silently, and read `https:///x` as host `x`.
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains a space or a control character".to_owned());
    }
    let after_scheme = text.split_once("://").map(|(_, rest)| rest);
    let url = match Url::parse(text) {
        _ if after_scheme.is_some_and(|rest| rest.starts_with('/')) => Err(ParseError::EmptyHost),
        result => result,
    };
    let url = url.map_err(|e| match e {
        ParseError::RelativeUrlWithoutBase => "does not start with https:// (or http://)",
        ParseError::EmptyHost => "has no host",
        ParseError::InvalidPort => "has a port that is not a number from 1 to 65535",
        ParseError::InvalidIpv6Address => {
            "has something in brackets that is not an IPv6 address, or no closing `]`"
        }
        _ => "is not a valid URL: its host name is not valid",
    })?;
    let host = url.host_str().unwrap_or_default();
    let why = if !matches!(url.scheme(), "https" | "http") {
        format!(
            "uses the scheme {:?}; ota speaks only https:// and http://",
            url.scheme()
        )
    } else if host.is_empty() {
        "has no host".to_owned()
    } else if url.query().is_some() || url.fragment().is_some() {
        "has a query or fragment (`?…` or `#…`), which a base URL cannot have; remove it".into()
    } else if !url.username().is_empty() || url.password().is_some() {
        "holds credentials before an `@`; remove them and give the token in `token`, \
         `token_file` or OTA_TOKEN"
            .to_owned()
    } else if url.port() == Some(0) {
        "has the port 0; a port is a number from 1 to 65535".to_owned()
    } else if matches!(url.host(), Some(Host::Domain(_)))
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        format!("has the host {host:?}, which is not a valid host name")
    } else {
        return Ok(url);
    };
    Err(why)
}

/// A checked base URL as ota stores it: no trailing `/`.
pub(super) fn normalized(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

/// Where a host whose API is at `api` (normalised) serves raw files, when that is certain:
/// GitHub's own, GitHub Enterprise (`https://HOST/api/v3` → `https://HOST/raw`) and
/// `ota-serve` (the API at the host's root, raw files under `/raw`).
pub(super) fn raw_for(api: &str) -> Option<String> {
    let after_scheme = api.split_once("://").map_or(api, |(_, rest)| rest);
    if api == GITHUB_API {
        Some(GITHUB_RAW.to_owned())
    } else if let Some(host) = api.strip_suffix("/api/v3") {
        Some(format!("{host}/raw"))
    } else {
        (!after_scheme.contains('/')).then(|| format!("{api}/raw"))
    }
}

/// Whether plain HTTP to this URL's host stays on the machine or the local network (the
/// reference lists what counts as local).
pub(super) fn is_local(url: &Url) -> bool {
    let v4 = |ip: Ipv4Addr| ip.is_loopback() || ip.is_private() || ip.is_link_local();
    match url.host() {
        Some(Host::Ipv4(ip)) => v4(ip),
        Some(Host::Ipv6(ip)) => {
            ip.is_loopback()
                || ip.is_unique_local()
                || ip.is_unicast_link_local()
                || ip.to_ipv4_mapped().is_some_and(v4)
        }
        Some(Host::Domain(name)) => {
            let name = name.trim_end_matches('.');
            !name.contains('.')
                || [".localhost", ".local", ".lan", ".internal", ".home.arpa"]
                    .iter()
                    .any(|suffix| name.ends_with(suffix))
        }
        None => false,
    }
}
