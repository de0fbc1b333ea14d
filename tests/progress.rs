//! Progress: the library's callback counts every file and byte it stages; the binary shows
//! it as a bar on a terminal and as a log line every ~10 s elsewhere.

use std::sync::{Arc, Mutex};

use ota::{Outcome, Progress, UpdateOptions, Updater};
use ota_serve::fault::{Action, Fault};

use crate::util::{Device, GitRepo, Node, noise, on_a_terminal, serve};

/// v1.0.0: a 300 KB file and `small` small ones.
fn release(small: usize) -> GitRepo {
    let mut repo = GitRepo::new();
    repo.write("data/big.bin", noise(300_000, 1));
    for i in 0..small {
        repo.write(&format!("lib/m{i}.py"), format!("N = {i}\n"));
    }
    repo.symlink("link", "data/big.bin");
    repo.commit("v1");
    repo.tag("v1.0.0");
    repo
}

#[test]
fn the_progress_callback_counts_every_file_and_byte_once() {
    let repo = release(20);
    let server = serve(repo.path());
    // Two drops in the big file: resumed bytes are not counted twice.
    server.set_faults(vec![
        Fault::new("*/big.bin", Action::ResetAfter(40_000)).times(2),
    ]);
    let device = Device::new(&server, "");
    let seen: Arc<Mutex<Vec<Progress>>> = Arc::default();
    let mut updater = Updater::new(device.load_config());
    let log = Arc::clone(&seen);
    updater.on_progress(move |p| log.lock().unwrap().push(p));
    let outcome = updater.update(UpdateOptions::default()).unwrap();
    let Outcome::Updated(report) = outcome else {
        panic!("installed: {outcome:?}");
    };
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));

    let seen = seen.lock().unwrap();
    let files = repo.snapshot("v1.0.0");
    let size: u64 = files
        .values()
        .map(|n| match n {
            Node::File(bytes, _) => bytes.len() as u64,
            Node::Link(target) => target.len() as u64,
        })
        .sum();
    let first = seen.first().expect("progress was reported");
    assert_eq!((first.files_done, first.bytes_done), (0, 0));
    assert_eq!(first.files_total, files.len());
    assert_eq!(first.bytes_total, size);
    assert_eq!(size, report.plan.download_bytes + report.plan.copy_bytes);
    let last = seen.last().unwrap();
    assert_eq!(last.files_done, report.downloaded + report.copied);
    assert_eq!(last.files_done, last.files_total);
    assert_eq!(last.bytes_done, size, "every byte staged, counted once");
    for pair in seen.windows(2) {
        assert!(
            pair[1].files_done >= pair[0].files_done && pair[1].bytes_done >= pair[0].bytes_done,
            "reports come in order: {pair:?}"
        );
    }
    assert!(
        seen.len() > files.len() + 2,
        "the big file reports as it arrives, not only at its end ({} reports)",
        seen.len()
    );
    assert_eq!(
        seen.iter()
            .filter(|p| p.files_done == last.files_total)
            .count(),
        1,
        "the last file ends the reports"
    );
}

#[test]
fn a_long_download_logs_progress_lines_when_not_on_a_terminal() {
    let repo = release(1);
    let server = serve(repo.path());
    // 300 KB at 25 KB/s takes at least 12 s: longer than the 10 s between lines.
    server.set_faults(vec![Fault::new("*/big.bin", Action::Bandwidth(25_000))]);
    let device = Device::new(&server, "");
    let out = device.ota_logging(&["update"], "ota=info");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("info: downloading 3 files, 300.0 KB"),
        "{stderr}"
    );
    let line = stderr
        .lines()
        .find(|l| l.starts_with("info: downloaded "))
        .unwrap_or_else(|| panic!("a progress line: {stderr}"));
    assert!(
        line.contains("/3 files, ") && line.contains(" of 300.0 KB (") && line.contains("/s"),
        "{line}"
    );
    assert!(
        !stderr.contains('\x1b'),
        "no bar drawn into a pipe: {stderr:?}"
    );
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));
}

#[test]
fn on_a_terminal_a_bar_shows_files_and_bytes_and_quiet_hides_it() {
    let repo = release(1);
    let server = serve(repo.path());
    // At least 2 s for the big file: the bar is drawn several times.
    server.set_faults(vec![Fault::new("*/big.bin", Action::Bandwidth(150_000))]);
    let device = Device::new(&server, "");
    let Some(screen) = on_a_terminal(&device, "update", &[]) else {
        return;
    };
    assert!(
        screen.contains("/3 files, ")
            && screen.contains(" of 300.02 kB, ")
            && screen.contains(" left"),
        "a bar with files, bytes, rate and time left: {screen:?}"
    );
    // Log lines are whole: the bar is taken off the screen around them.
    assert!(
        screen.contains("info\x1b[0m: downloading 3 files"),
        "{screen:?}"
    );
    assert!(
        screen.contains("info\x1b[0m: installed v1.0.0"),
        "{screen:?}"
    );
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));

    let quiet = Device::new(&server, "");
    let screen = on_a_terminal(&quiet, "update -q", &[]).unwrap();
    assert!(!screen.contains("/3 files"), "-q: no bar: {screen:?}");
    assert_eq!(quiet.tree(), repo.snapshot("v1.0.0"));
}
