//! Which tags are releases, and how release versions compare.
//!
//! GitHub has release objects; a plain git repository only has tags. We treat every tag whose
//! name looks like a version (`v1.2.0`, `2.0`, `v3.0.0-rc.1`) as a published release. Version
//! order is only a tie-break (releases are ordered by commit date like GitHub does), but it
//! matters: tests create several commits within one second.

use std::cmp::Ordering;

/// A parsed version tag: `v?` + dot-separated numbers + optional `-pre` and `+build` parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Version {
    numbers: Vec<u64>,
    pre: Option<String>,
}

impl Version {
    /// Parses a tag name; `None` if the tag is not a version (so not a release).
    pub(crate) fn parse(tag: &str) -> Option<Version> {
        let rest = tag.strip_prefix('v').unwrap_or(tag);
        let core_end = rest.find(['-', '+']).unwrap_or(rest.len());
        let (core, suffix) = rest.split_at(core_end);
        let mut numbers = Vec::new();
        for part in core.split('.') {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            numbers.push(part.parse().ok()?);
        }
        // The suffix becomes part of a directory name (assets live in DIR/<tag>/), so keep it
        // to characters that cannot form a path or look like an option.
        let suffix_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-+._~".contains(&b))
        };
        let pre = match suffix.as_bytes().first() {
            None => None,
            Some(b'-') => {
                let body = &suffix[1..];
                let pre = body.split('+').next().unwrap_or_default();
                if !suffix_ok(body) || pre.is_empty() {
                    return None;
                }
                Some(pre.to_string())
            }
            Some(_) => {
                // `+build`: metadata, ignored for precedence.
                if !suffix_ok(&suffix[1..]) {
                    return None;
                }
                None
            }
        };
        Some(Version { numbers, pre })
    }

    /// Whether the version has a pre-release part (`-rc.1`, `-rc1`, `-beta`, `-preview`):
    /// such a release is a prerelease, as GitHub marks it (see `releases`).
    pub(crate) fn is_pre(&self) -> bool {
        self.pre.is_some()
    }
}

impl Ord for Version {
    /// Numeric component-wise (missing components count as 0, so `1.0 == 1.0.0`), then a
    /// pre-release sorts below the plain version, then pre-release identifiers compare like
    /// semver (numeric ones numerically, and below alphanumeric ones).
    fn cmp(&self, other: &Self) -> Ordering {
        let len = self.numbers.len().max(other.numbers.len());
        for i in 0..len {
            let a = self.numbers.get(i).copied().unwrap_or(0);
            let b = other.numbers.get(i).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Equal => {}
                unequal => return unequal,
            }
        }
        match (&self.pre, &other.pre) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) => compare_pre(a, b),
        }
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn compare_pre(a: &str, b: &str) -> Ordering {
    let mut left = a.split('.');
    let mut right = b.split('.');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let ord = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(x), Ok(y)) => x.cmp(&y),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    (Err(_), Err(_)) => x.cmp(y),
                };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn recognises_version_tags() {
        for tag in [
            "v1.2.0",
            "2.0",
            "v3.0.0-rc.1",
            "1",
            "v10.0+build.5",
            "1.0-beta+exp.sha.5114f85",
        ] {
            assert!(Version::parse(tag).is_some(), "{tag}");
        }
        for tag in [
            "",
            "v",
            "latest",
            "release-1.0",
            "v1.",
            "v.1",
            "1..2",
            "v1.0-",
            "v1.0+",
            "V1.0",
            "v1.0-a/b",
            "1.x",
            "v99999999999999999999999",
        ] {
            assert!(Version::parse(tag).is_none(), "{tag}");
        }
        assert!(v("v3.0.0-rc.1").is_pre());
        assert!(!v("v3.0.0+build").is_pre());
    }

    #[test]
    fn orders_numerically_with_prereleases_below() {
        assert!(v("v1.10") > v("v1.9"));
        assert!(v("v2.0") > v("v1.99.99"));
        assert!(v("v1.0.0") > v("v1.0.0-rc.1"));
        assert!(v("v1.0.0-rc.2") > v("v1.0.0-rc.1"));
        assert!(v("v1.0.0-rc.10") > v("v1.0.0-rc.9"));
        assert!(v("v1.0.0-beta") > v("v1.0.0-alpha.5"));
        assert!(v("v1.0.0-alpha.1") > v("v1.0.0-alpha"));
        assert_eq!(v("1.0").cmp(&v("v1.0.0")), Ordering::Equal);
        assert_eq!(v("1.0+a").cmp(&v("1.0+b")), Ordering::Equal);
    }
}
