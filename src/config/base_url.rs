//! Base URLs (`api_url`, `raw_url`): the rules a base URL must follow, where plain HTTP is
//! safe enough, and where a host serves raw files.

use std::net::Ipv4Addr;

/// GitHub's own hosts: the defaults of `api_url` and `raw_url`.
pub(super) const GITHUB_API: &str = "https://api.github.com";
pub(super) const GITHUB_RAW: &str = "https://raw.githubusercontent.com";

/// A checked base URL.
pub(super) struct BaseUrl {
    /// `https` or `http`.
    pub scheme: String,
    /// The host, without brackets.
    pub host: String,
    /// Whether the host is on the machine or the local network.
    pub local: bool,
    /// `scheme://host[:port][/path]`: lower-case scheme and host, no default port, no
    /// trailing `/`.
    pub normalized: String,
}

/// Parses and checks a base URL; the error says why it is not one (without the URL).
pub(super) fn parse(text: &str) -> Result<BaseUrl, String> {
    let url = parse_url(text)?;
    let host = url.host_str().unwrap_or_default();
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let path = url.path().trim_end_matches('/');
    Ok(BaseUrl {
        scheme: url.scheme().to_owned(),
        host: host.trim_matches(['[', ']']).to_owned(),
        local: url.host().is_some_and(|host| is_local_host(&host)),
        normalized: format!("{}://{host}{port}{path}", url.scheme()),
    })
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
    } else if !after_scheme.contains('/') {
        Some(format!("{api}/raw"))
    } else {
        None
    }
}

/// Parses an `http(s)://host[:port][/path]` base URL with the `url` crate, plus the rules of
/// a base URL: no credentials, query or fragment. The error says why it is not one.
fn parse_url(text: &str) -> Result<url::Url, String> {
    use url::ParseError as E;
    // The url crate would drop spaces and tabs silently, and read `https:///x` as host `x`.
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains a space or a control character".to_owned());
    }
    if text
        .split_once("://")
        .is_some_and(|(_, rest)| rest.starts_with('/'))
    {
        return Err("has no host".to_owned());
    }
    let url = url::Url::parse(text).map_err(|e| {
        match e {
            E::RelativeUrlWithoutBase => "does not start with https:// (or http://)",
            E::EmptyHost => "has no host",
            E::InvalidPort => "has a port that is not a number from 1 to 65535",
            E::InvalidIpv6Address => {
                "has something in brackets that is not an IPv6 address, or no closing `]`"
            }
            _ => "is not a valid URL: its host name is not valid",
        }
        .to_owned()
    })?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!(
            "uses the scheme {:?}; ota speaks only https:// and http://",
            url.scheme()
        ));
    }
    let host = url.host_str().unwrap_or_default();
    if host.is_empty() {
        Err("has no host".to_owned())
    } else if url.query().is_some() || url.fragment().is_some() {
        Err(
            "has a query or fragment (`?…` or `#…`), which a base URL cannot have; remove it"
                .to_owned(),
        )
    } else if !url.username().is_empty() || url.password().is_some() {
        Err(
            "holds credentials before an `@`; remove them and give the token in `token`, \
             `token_file` or OTA_TOKEN"
                .to_owned(),
        )
    } else if url.port() == Some(0) {
        Err("has the port 0; a port is a number from 1 to 65535".to_owned())
    } else if matches!(url.host(), Some(url::Host::Domain(_)))
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        Err(format!(
            "has the host {host:?}, which is not a valid host name"
        ))
    } else {
        Ok(url)
    }
}

/// Whether plain HTTP to this host stays on the machine or the local network: loopback,
/// private and link-local addresses, `localhost`, single-label names and the local-only
/// domains `.local`, `.lan`, `.internal`, `.home.arpa`, `.localhost`.
fn is_local_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Ipv4(ip) => is_local_v4(*ip),
        url::Host::Ipv6(ip) => {
            ip.is_loopback()
                || ip.is_unique_local()
                || ip.is_unicast_link_local()
                || ip.to_ipv4_mapped().is_some_and(is_local_v4)
        }
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.');
            name == "localhost"
                || !name.contains('.')
                || [".localhost", ".local", ".lan", ".internal", ".home.arpa"]
                    .iter()
                    .any(|suffix| name.ends_with(suffix))
        }
    }
}

fn is_local_v4(ip: Ipv4Addr) -> bool {
    ip.is_loopback() || ip.is_private() || ip.is_link_local()
}
