//! What a fleet owner sees from afar (`[report]`, issue 10): the Prometheus textfile the real
//! `ota` binary writes after each command, parsed with `prometheus-parse`, and the bounded
//! history of errors in `ota status`.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::util::{Device, serve, small_app, tables};

/// One sample of the metrics file: its labels and value.
type Sample = (BTreeMap<String, String>, f64);

/// The metrics file, parsed with a Prometheus parser: each metric's samples, and which
/// metrics carry HELP text and a TYPE.
fn metrics(path: &Path) -> (BTreeMap<String, Vec<Sample>>, BTreeMap<String, String>) {
    let text = std::fs::read_to_string(path).unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let mut samples: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    for s in scrape.samples {
        let value = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            other => panic!("{} is {other:?}", s.metric),
        };
        let labels = s.labels.iter().map(|(k, v)| (k.clone(), v.clone()));
        (samples.entry(s.metric).or_default()).push((labels.collect(), value));
    }
    // Every metric ota writes has a TYPE line (the parser keeps TYPE through the values'
    // kinds) and HELP text.
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(
            scrape.docs.contains_key(name),
            "no HELP for {name}:\n{text}"
        );
    }
    (samples, scrape.docs.into_iter().collect())
}

/// The one value of an unlabelled metric (`None`: absent).
fn value(samples: &BTreeMap<String, Vec<Sample>>, name: &str) -> Option<f64> {
    let list = samples.get(name)?;
    assert_eq!(list.len(), 1, "{name}: {list:?}");
    Some(list[0].1)
}

/// `ota status --json`, parsed.
fn status(device: &Device) -> Value {
    json(&device.ota_expect(&["status", "--json"], 0))
}

/// The JSON object in a command's output (stdout, then the log on stderr).
fn json(out: &str) -> Value {
    let start = out.find('{').unwrap();
    let end = out.rfind('}').unwrap();
    serde_json::from_str(&out[start..=end]).unwrap()
}

const LISTED: [&str; 10] = [
    "ota_release_info",
    "ota_last_check_timestamp_seconds",
    "ota_last_success_timestamp_seconds",
    "ota_update_available",
    "ota_consecutive_failures",
    "ota_trial",
    "ota_rejected_releases",
    "ota_download_bytes_total",
    "ota_requests_total",
    "ota_rate_limit_remaining",
];

#[test]
fn the_metrics_file_tells_what_each_command_did() {
    let mut repo = small_app();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    let textfile = device.home().join("textfile");
    std::fs::create_dir(&textfile).unwrap();
    let prom = textfile.join("ota.prom");
    tables(
        &device,
        &format!("[report]\nmetrics_file = {prom:?}\n[trial]\nconfirm_within_sec = 3600\n"),
    );

    // A check before anything is installed: an update waits; nothing is installed.
    device.ota_expect(&["check"], 100);
    let (m, docs) = metrics(&prom);
    for name in LISTED {
        assert!(docs.contains_key(name), "no HELP for {name}: {docs:?}");
    }
    assert_eq!(value(&m, "ota_update_available"), Some(1.0));
    assert_eq!(m.get("ota_release_info"), None);
    assert_eq!(
        value(&m, "ota_requests_total"),
        Some(server.stats().requests as f64)
    );

    // That check created nothing, not even the state folder, so the counters in it begin
    // with the first update.
    let first = server.stats();

    // The first install: on trial until `ota confirm`.
    let out = device.ota_expect(&["update", "--json"], 0);
    let report = json(&out);
    let usage = &report["usage"];
    let (m, _) = metrics(&prom);
    let info = &m["ota_release_info"];
    let commit = repo.rev("v1.0.0");
    let labels = [
        ("channel", "stable"),
        ("commit", commit.as_str()),
        ("release", "v1.0.0"),
    ];
    let labels = labels.map(|(k, v)| (k.to_owned(), v.to_owned())).into();
    assert_eq!(info, &[(labels, 1.0)]);
    assert_eq!(value(&m, "ota_update_available"), Some(0.0));
    assert_eq!(value(&m, "ota_trial"), Some(1.0));
    assert_eq!(value(&m, "ota_consecutive_failures"), Some(0.0));
    assert_eq!(value(&m, "ota_rejected_releases"), Some(0.0));
    // Requests as the server saw them; the bytes of the bodies ota read (the server also
    // counts the bodies of error answers, which ota does not read).
    let stats = server.stats();
    let requests = stats.requests - first.requests;
    let count = |key: &str| usage[key].as_u64().unwrap();
    let bytes = count("api_bytes") + count("file_bytes");
    assert_eq!(requests, count("api_requests") + count("file_requests"));
    assert_eq!(value(&m, "ota_requests_total"), Some(requests as f64));
    assert_eq!(value(&m, "ota_download_bytes_total"), Some(bytes as f64));
    assert!(bytes > 0 && bytes <= stats.body_bytes - first.body_bytes);
    let s = status(&device);
    assert_eq!(s["requests_total"], requests);
    assert_eq!(s["download_bytes_total"], bytes);
    assert_eq!(
        value(&m, "ota_rate_limit_remaining"),
        s["rate_limit"]["remaining"].as_f64()
    );
    let checked = value(&m, "ota_last_check_timestamp_seconds").unwrap();
    let succeeded = value(&m, "ota_last_success_timestamp_seconds").unwrap();
    assert!(
        checked > 1.7e9 && succeeded >= checked,
        "{checked} {succeeded}"
    );

    device.ota_expect(&["confirm"], 0);
    let (m, _) = metrics(&prom);
    assert_eq!(value(&m, "ota_trial"), Some(0.0));

    // v2.0.0, on trial, rolled back by hand: v1.0.0 again, and one release rejected.
    repo.write("main.py", "print('v2')\n");
    repo.commit("v2");
    repo.tag("v2.0.0");
    device.ota_expect(&["update"], 0);
    let (m, _) = metrics(&prom);
    assert_eq!(m["ota_release_info"][0].0["release"], "v2.0.0");
    assert_eq!(value(&m, "ota_trial"), Some(1.0));
    device.ota_expect(&["rollback"], 0);
    let (m, _) = metrics(&prom);
    assert_eq!(m["ota_release_info"][0].0["release"], "v1.0.0");
    assert_eq!(value(&m, "ota_trial"), Some(0.0));
    assert_eq!(value(&m, "ota_rejected_releases"), Some(1.0));
    let succeeded = value(&m, "ota_last_success_timestamp_seconds").unwrap();

    // Two failed updates in a row (the repository is gone from the server's point of
    // view): counted, and the requests they sent too.
    device.edit_config("repo = \"app\"", "repo = \"gone\"");
    device.ota_expect(&["update"], 1);
    device.ota_expect(&["update"], 1);
    let (m, _) = metrics(&prom);
    assert_eq!(value(&m, "ota_consecutive_failures"), Some(2.0));
    assert_eq!(
        value(&m, "ota_last_success_timestamp_seconds"),
        Some(succeeded)
    );
    let requests = server.stats().requests - first.requests;
    assert_eq!(value(&m, "ota_requests_total"), Some(requests as f64));
    assert_eq!(m["ota_release_info"].len(), 1, "still v1.0.0 installed");

    // Written atomically: nothing but the metrics file is left in the collector's folder.
    let names: Vec<_> = std::fs::read_dir(&textfile)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["ota.prom"]);
    // Readable by node_exporter, which may run as another user.
    let mode = std::os::unix::fs::PermissionsExt::mode(&prom.metadata().unwrap().permissions());
    assert_eq!(mode & 0o777, 0o644);
}

#[test]
fn a_metrics_file_that_cannot_be_written_only_warns() {
    let repo = small_app();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    let prom = device.home().join("no-such-folder/ota.prom");
    tables(&device, &format!("[report]\nmetrics_file = {prom:?}\n"));
    let out = device.ota_expect(&["update"], 0);
    assert!(out.contains("could not write the metrics file"), "{out}");
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));
}

#[test]
fn the_error_history_keeps_exactly_the_last_n() {
    let repo = small_app();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    tables(&device, "[report]\nerror_history_limit = 3\n");
    device.edit_config("repo = \"app\"", "repo = \"gone\"");
    for _ in 0..5 {
        device.ota_expect(&["update"], 1);
    }
    let s = status(&device);
    let errors = s["errors"].as_array().unwrap();
    let consecutive: Vec<_> = errors.iter().map(|e| e["consecutive"].clone()).collect();
    assert_eq!(consecutive, [3, 4, 5], "the last three, oldest first");
    assert!(errors.iter().all(|e| e["kind"] == s["last_error"]["kind"]));
    let text = device.ota_expect(&["status"], 0);
    assert!(
        text.contains("errors:      the last 3, oldest first"),
        "{text}"
    );

    // A success clears the last error but keeps the history.
    device.edit_config("repo = \"gone\"", "repo = \"app\"");
    device.ota_expect(&["update"], 0);
    let s = status(&device);
    assert_eq!(s["last_error"], Value::Null);
    assert_eq!(s["errors"].as_array().unwrap().len(), 3);
}

#[test]
fn an_error_history_limit_of_zero_keeps_none() {
    let repo = small_app();
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    tables(&device, "[report]\nerror_history_limit = 0\n");
    device.edit_config("repo = \"app\"", "repo = \"gone\"");
    device.ota_expect(&["update"], 1);
    assert!(device.last_error().is_some());
    assert!(!device.target.join(".ota/errors.json").exists());
    assert_eq!(status(&device)["errors"], Value::Array(Vec::new()));
}

#[test]
fn the_original_formats_error_history_limit_is_acted_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ota_config.json");
    let text = r#"{"owner": "acme", "repo": "app", "error_history_limit": 3}"#;
    std::fs::write(&path, text).unwrap();
    let config = ota::config::Config::load(&path).unwrap();
    assert_eq!(config.report.error_history_limit, 3);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    std::fs::write(&path, text.replace('3', "1001")).unwrap();
    let error = ota::config::Config::load(&path).unwrap_err().to_string();
    assert!(
        error.contains("error_history_limit") && error.contains("1000"),
        "{error}"
    );
}
