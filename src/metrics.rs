//! The Prometheus textfile (`[report] metrics_file`): what a fleet owner scrapes, through
//! node_exporter's textfile collector, to see from afar what each device did.
//!
//! The file is rendered whole from what the state folder holds after a command, and
//! replaced atomically (a temporary file in the same folder, then a rename), so that the
//! collector never reads half a file. The temporary file's name starts with `.` and does
//! not end in `.prom`: the collector skips it.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::Path;

use crate::state::{Counters, Installed};

/// What the metrics say, gathered after a command.
pub(crate) struct Snapshot<'a> {
    /// What `state.json` holds, if anything is installed.
    pub installed: Option<&'a Installed>,
    /// The counters of `metrics.json`, this command's figures included.
    pub counters: &'a Counters,
    /// When the source was last asked (seconds since the Unix epoch).
    pub last_check: Option<u64>,
    /// Failures in a row of the commands that change the target (`last_error.json`).
    pub consecutive_failures: u32,
    /// The API's last `x-ratelimit-remaining`, if it sent one.
    pub rate_limit_remaining: Option<u64>,
}

/// The exposition text (Prometheus text format 0.0.4), every metric with HELP and TYPE.
pub(crate) fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let one = |value: u64| vec![(String::new(), value)];
    let maybe = |value: Option<u64>| value.map(one).unwrap_or_default();
    let release = s.installed.map(|i| {
        let labels = format!(
            "{{release=\"{}\",commit=\"{}\",channel=\"{}\"}}",
            escape(&i.release.ref_name),
            i.release.commit.to_hex(),
            escape(&i.release.channel)
        );
        (labels, 1)
    });
    metric(
        "ota_release_info",
        "gauge",
        "The installed release (tag or branch), its commit and channel; absent before the first install.",
        &release.into_iter().collect::<Vec<_>>(),
    );
    metric(
        "ota_last_check_timestamp_seconds",
        "gauge",
        "When ota last asked the source for the channel's release (Unix time).",
        &maybe(s.last_check),
    );
    metric(
        "ota_last_success_timestamp_seconds",
        "gauge",
        "When an ota command that checks or changes last ended without an error (Unix time).",
        &maybe(s.counters.last_success),
    );
    metric(
        "ota_update_available",
        "gauge",
        "1 when the last check found a release to install, else 0.",
        &one(u64::from(s.counters.update_available)),
    );
    metric(
        "ota_consecutive_failures",
        "gauge",
        "Failed update, recover and trial commands in a row (0 after a success).",
        &one(u64::from(s.consecutive_failures)),
    );
    let trial = s.installed.is_some_and(|i| i.trial.is_some());
    metric(
        "ota_trial",
        "gauge",
        "1 while the installed release is on trial (not confirmed yet), else 0.",
        &one(u64::from(trial)),
    );
    let rejected = s.installed.map_or(0, |i| i.rejected.len() as u64);
    metric(
        "ota_rejected_releases",
        "gauge",
        "Releases rolled back here that ota does not install again (the last 10).",
        &one(rejected),
    );
    metric(
        "ota_download_bytes_total",
        "counter",
        "Response body bytes received from the source, metadata and files.",
        &one(s.counters.bytes),
    );
    metric(
        "ota_requests_total",
        "counter",
        "HTTP requests sent to the source, retries and resumes included.",
        &one(s.counters.requests),
    );
    metric(
        "ota_rate_limit_remaining",
        "gauge",
        "Requests left in the API's rate-limit window, as last reported; absent if never reported.",
        &maybe(s.rate_limit_remaining),
    );
    out
}

/// A label value as the text format writes it: `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Replaces `path` with `text` atomically: a temporary file in the same folder (readable by
/// all, as the collector may run as another user), then a rename.
pub(crate) fn write(path: &Path, text: &str) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut file = tempfile::Builder::new()
        .prefix(".ota-metrics-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    // Set after creation, so that a strict umask (systemd's `UMask=`) does not hide it.
    let readable = std::os::unix::fs::PermissionsExt::from_mode(0o644);
    file.as_file().set_permissions(readable)?;
    file.write_all(text.as_bytes())?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("a\nb"), "a\\nb");
    }

    #[test]
    fn unknown_values_are_left_out() {
        let counters = Counters::default();
        let text = render(&Snapshot {
            installed: None,
            counters: &counters,
            last_check: None,
            consecutive_failures: 0,
            rate_limit_remaining: None,
        });
        assert!(
            text.contains("# TYPE ota_release_info gauge\n# HELP ota_last_check_timestamp_seconds"),
            "{text}"
        );
        assert!(!text.contains("\nota_rate_limit_remaining "), "{text}");
        assert!(text.contains("\nota_requests_total 0\n"), "{text}");
    }
}
