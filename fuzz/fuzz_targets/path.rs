//! Release path validation (`RelPath`) and the symlink check. The input is a path, then
//! optionally lines `link=target`: the release's symlinks, checked together as an update
//! does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota::RelPath;

/// Top-level folders no release path may enter: ota's own, and a state folder configured
/// inside the target.
const RESERVED: [&str; 2] = [".ota", "var/ota"];

/// Where `link -> target` leads through `links`, resolved independently of ota's resolver
/// and with far more hops allowed: `None` if it is absolute, climbs out or does not end.
fn resolve(link: &str, target: &str, links: &[(RelPath, String)]) -> Option<Vec<String>> {
    let mut dir: Vec<String> = link.split('/').map(str::to_owned).collect();
    dir.pop();
    let mut pending: Vec<String> = target.rsplit('/').map(str::to_owned).collect();
    let mut hops = 0;
    if target.starts_with('/') {
        return None;
    }
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                dir.pop()?;
                continue;
            }
            _ => dir.push(part),
        }
        let here = dir.join("/");
        if let Some((_, next)) = links.iter().find(|(l, _)| l.as_str() == here) {
            hops += 1;
            if hops > 1000 || next.starts_with('/') {
                return None;
            }
            dir.pop();
            pending.extend(next.rsplit('/').map(str::to_owned));
        }
    }
    Some(dir)
}

fuzz_target!(|data: &[u8]| {
    // Paths reach ota as JSON strings: always UTF-8.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, link_target) = match text.split_once('\n') {
        Some((path, target)) => (path, Some(target)),
        None => (text, None),
    };
    let Ok(rel) = ota::testing::rel_path(path, &RESERVED) else {
        return;
    };
    let s = rel.as_str();
    assert_eq!(s, path);
    assert!(!s.is_empty() && s.len() <= 4096, "{s:?}");
    assert!(!s.starts_with('/'), "absolute: {s:?}");
    assert!(!s.contains(['\0', '\\']), "{s:?}");
    assert!(!s.chars().any(char::is_control), "{s:?}");
    for part in s.split('/') {
        assert!(!matches!(part, "" | "." | ".."), "{s:?}");
        assert!(part.len() <= 255, "{s:?}");
    }
    // In any casing: on a case-insensitive filesystem `.OTA` is `.ota`.
    let lower = s.to_lowercase();
    for r in RESERVED {
        assert!(
            lower != r && !lower.starts_with(&format!("{r}/")),
            "inside {r}: {s:?}"
        );
    }
    // A path read back from state.json is the same path.
    let json = serde_json::to_string(&rel).expect("serialises");
    let back: RelPath = serde_json::from_str(&json).expect("reads back");
    assert_eq!(back, rel);

    let Some(lines) = link_target else { return };
    let mut links = Vec::new();
    for line in lines.split('\n') {
        let Some((link, target)) = line.split_once('=') else {
            return;
        };
        // As in a release: every path, links included, is validated first.
        let Ok(link) = ota::testing::rel_path(link, &RESERVED) else {
            return;
        };
        // A release holds one entry per path.
        if links.iter().any(|(l, _)| *l == link) {
            return;
        }
        links.push((link, target.to_owned()));
    }
    if ota::testing::check_links(&links, &RESERVED).is_ok() {
        // Every accepted link ends inside the target, outside the reserved folders.
        for (link, target) in &links {
            let end = resolve(link.as_str(), target, &links)
                .unwrap_or_else(|| panic!("{link} -> {target:?} accepted but leaves"));
            let end = end.join("/").to_lowercase();
            for r in RESERVED {
                assert!(
                    end != r && !end.starts_with(&format!("{r}/")),
                    "{link} -> {target:?} ends in {r}"
                );
            }
        }
    }
});
