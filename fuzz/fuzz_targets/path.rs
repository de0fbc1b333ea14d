//! Release path validation (`RelPath`) and the symlink check. The input is a path, then
//! optionally a newline and a symlink target for a link at that path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota::RelPath;

/// Top-level folders no release path may enter: ota's own, and a state folder configured
/// inside the target.
const RESERVED: [&str; 2] = [".ota", "var/ota"];

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
    for r in RESERVED {
        assert!(
            s != r && !s.starts_with(&format!("{r}/")),
            "inside {r}: {s:?}"
        );
    }
    // A path read back from state.json is the same path.
    let json = serde_json::to_string(&rel).expect("serialises");
    let back: RelPath = serde_json::from_str(&json).expect("reads back");
    assert_eq!(back, rel);

    let Some(target) = link_target else { return };
    // Names ending in `.ln` are the release's other symlinks.
    let is_symlink = |p: &str| p.ends_with(".ln");
    if ota::testing::check_symlink(&rel, target, &is_symlink).is_ok() {
        // An accepted link never climbs above the target, read lexically.
        assert!(!target.is_empty() && !target.starts_with('/') && !target.contains('\0'));
        let mut depth = s.matches('/').count();
        for part in target.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    depth = depth
                        .checked_sub(1)
                        .unwrap_or_else(|| panic!("{s} -> {target:?} leaves the target"))
                }
                _ => depth += 1,
            }
        }
    }
});
