//! The GitHub answers a device parses: a release (`releases/latest`, `releases/tags/…`) and
//! a file tree (`git/trees/…`), the tree then turned into the release's manifest with a
//! filter, exactly as an update does. Every input is tried as both.
#![no_main]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use ota::Manifest;
use ota::config::{Config, Format, SourceConfig};
use ota::source::GitHub;

/// A config with a filter, and a client for it (never contacted: nothing here sends).
static CONFIG: LazyLock<Config> = LazyLock::new(|| {
    let text = r#"
        target_dir = "/srv/app"
        ignore = ["*.md", "tests/", "docs/**/*.png"]
        [source]
        owner = "acme"
        repo = "app"
        api_url = "http://127.0.0.1:9"
        raw_url = "http://127.0.0.1:9/raw"
    "#;
    Config::parse(text, Format::Toml, Path::new("/srv"), &|_| None).expect("valid config")
});
static GITHUB: LazyLock<GitHub> = LazyLock::new(|| {
    #[allow(unreachable_patterns)]
    let gh = match &CONFIG.source {
        SourceConfig::Github(gh) => gh,
        _ => unreachable!("the config names GitHub"),
    };
    GitHub::new(gh, &CONFIG.network)
});

fuzz_target!(|data: &[u8]| {
    let _ = ota::testing::parse_release(&GITHUB, data);

    let Ok((manifest, _warnings)) = ota::testing::parse_tree(&GITHUB, data, &CONFIG.filter) else {
        return;
    };
    let entries = manifest.entries();
    // Sorted, unique.
    for pair in entries.windows(2) {
        assert!(pair[0].path < pair[1].path, "not sorted: {pair:?}");
    }
    let paths: BTreeSet<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    let mut total = 0u64;
    for entry in entries {
        let path = entry.path.as_str();
        // Every path is one the path validation accepts, outside `.ota`, and included.
        assert_eq!(
            ota::testing::rel_path(path, &[".ota"]).as_ref(),
            Ok(&entry.path)
        );
        assert!(CONFIG.filter.includes(path), "{path} is filtered out");
        // No path lies inside another (a file cannot be a folder).
        for (i, _) in path.match_indices('/') {
            assert!(!paths.contains(&path[..i]), "{path} lies inside a file");
        }
        total = total.checked_add(entry.size).expect("sizes fit in 64 bits");
    }
    assert_eq!(manifest.total_bytes(), total);
    // What state.json stores reads back the same.
    let json = serde_json::to_vec(&manifest).expect("a manifest serialises");
    let back: Manifest = serde_json::from_slice(&json).expect("a manifest reads back");
    assert_eq!(back, manifest);
});
