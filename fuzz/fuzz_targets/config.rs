//! Config loading: the TOML format, its JSON twin and the original updater's flat JSON
//! (detected as `Config::load` detects them), validated with a token in the environment.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ota::config::{Config, Format, SourceConfig};

const ENV_TOKEN: &str = "env-token-0123456789";

fn env(name: &str) -> Option<String> {
    (name == "OTA_TOKEN").then(|| ENV_TOKEN.to_owned())
}

fuzz_target!(|data: &[u8]| {
    // Config::load refuses a file that is not UTF-8 before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let format = Format::detect(Path::new("ota.conf"), text);
    let base = Path::new("/srv/device/etc");
    let parsed = Config::parse(text, format, base, &env);
    // Parsing is a function of the text.
    let again = Config::parse(text, format, base, &env);
    assert_eq!(format!("{parsed:?}"), format!("{again:?}"));
    let Ok(config) = parsed else { return };

    assert!(config.target_dir.is_absolute(), "{:?}", config.target_dir);
    assert!(config.state_dir.is_absolute(), "{:?}", config.state_dir);
    assert_ne!(config.target_dir, Path::new("/"));
    assert_ne!(config.state_dir, config.target_dir);
    assert!(
        !config.target_dir.starts_with(&config.state_dir),
        "the state folder {:?} holds the target {:?}",
        config.state_dir,
        config.target_dir
    );
    // The token never shows in what gets logged.
    #[allow(unreachable_patterns)]
    let token = match &config.source {
        SourceConfig::Github(gh) => gh.token.as_ref().map(|t| t.expose().to_owned()),
        _ => None,
    };
    if let Some(token) = token.filter(|t| t.len() >= 8) {
        assert!(!format!("{config:?}").contains(&token), "token in Debug");
        for warning in &config.warnings {
            assert!(!warning.contains(&token), "token in a warning: {warning}");
        }
    }
});
