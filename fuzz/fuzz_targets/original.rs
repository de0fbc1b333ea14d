//! The original updater's `manifest.json`, as a release asset delivers it: parsed, its
//! canonical form (what the HMAC covers) rebuilt, its signature checked with a key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota::original::{OriginalManifest, canonical};

fuzz_target!(|data: &[u8]| {
    let Ok(manifest) = OriginalManifest::parse(data) else {
        return;
    };
    // The signed bytes are ASCII JSON that reads back as the same value, and are canonical.
    let signed = manifest.signed_bytes();
    assert!(signed.is_ascii(), "ensure_ascii");
    let value: serde_json::Value = serde_json::from_slice(signed).expect("canonical is JSON");
    assert_eq!(canonical(&value).expect("canonical again"), signed);
    // Paths are unique and valid; post_update is a plain name.
    let mut paths: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    paths.sort_unstable();
    assert!(
        paths.windows(2).all(|p| p[0] != p[1]),
        "a path listed twice"
    );
    for path in paths
        .iter()
        .copied()
        .chain(manifest.deletes.iter().map(String::as_str))
    {
        assert!(ota::testing::rel_path(path, &[]).is_ok(), "{path:?}");
    }
    if let Some(name) = &manifest.post_update {
        assert!(ota::original::check_post_update(name).is_ok());
    }
    let _ = manifest.verify(b"fuzz-key");
});
