//! ota as a library inside a long-lived program: one `Updater`, many operations.

use std::time::Duration;

use ota::{Check, Outcome, UpdateOptions, UpdateReason, Updater};
use ota_serve::Server;

use crate::util::{Device, GitRepo, serve};

/// A repository with release v1.0.0 (two files), served, and a device following it.
fn release_v1() -> (GitRepo, Server, Device) {
    let mut repo = GitRepo::new();
    repo.write("main.py", "print(1)\n").write("lib/a.py", "A\n");
    repo.commit("v1");
    repo.tag("v1.0.0");
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    (repo, server, device)
}

/// `update_timeout_sec` bounds each operation, not the `Updater`'s life: a daemon that
/// built its updater long ago still checks and updates. (No timing is measured: with the
/// old whole-life deadline, every call below failed with "took longer than
/// update_timeout_sec".)
#[test]
fn one_updater_serves_operation_after_operation_past_its_timeout() {
    let (mut repo, _server, device) = release_v1();
    device.configure("network", "update_timeout_sec = 1");
    let updater = Updater::new(device.load_config());

    std::thread::sleep(Duration::from_millis(1500));
    match updater.check().expect("a check after the timeout") {
        Check::Available {
            installed: None,
            available,
            reason: UpdateReason::FirstInstall,
        } => assert_eq!(available.ref_name, "v1.0.0"),
        other => panic!("{other:?}"),
    }
    let Outcome::Updated(first) = updater.update(UpdateOptions::default()).unwrap() else {
        panic!("the first update installs");
    };
    assert_eq!(first.from, None);
    assert_eq!(first.usage.file_requests, 2);
    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));

    repo.write("main.py", "print(2)\n");
    repo.commit("v2");
    repo.tag("v2.0.0");
    std::thread::sleep(Duration::from_millis(1500));
    let Outcome::Updated(second) = updater.update(UpdateOptions::default()).unwrap() else {
        panic!("the second update installs");
    };
    assert_eq!(second.reason, Some(UpdateReason::NewRelease));
    assert_eq!(device.tree(), repo.snapshot("v2.0.0"));
    // Each report counts its own operation only.
    assert_eq!(second.usage.file_requests, 1, "{:?}", second.usage);

    std::thread::sleep(Duration::from_millis(1500));
    let Outcome::UpToDate(third) = updater.update(UpdateOptions::default()).unwrap() else {
        panic!("up to date");
    };
    assert_eq!(third.usage.api_requests, 1, "{:?}", third.usage);
    assert_eq!(third.usage.file_requests, 0);
}

/// Updates from several threads of one program take turns: each installs or finds the
/// release up to date, and each report counts its own requests only.
#[test]
fn updates_from_several_threads_take_turns_and_count_their_own_requests() {
    let (repo, _server, device) = release_v1();
    let updater = Updater::new(device.load_config());

    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| updater.update(UpdateOptions::default()).unwrap()))
            .collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    });

    assert_eq!(device.tree(), repo.snapshot("v1.0.0"));
    let installs: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Updated(report) => Some(report),
            _ => None,
        })
        .collect();
    assert_eq!(
        installs.len(),
        1,
        "exactly one thread installs: {outcomes:?}"
    );
    assert_eq!(
        installs[0].usage.file_requests, 2,
        "{:?}",
        installs[0].usage
    );
    for outcome in &outcomes {
        if let Outcome::UpToDate(report) = outcome {
            assert_eq!(report.usage.file_requests, 0, "{:?}", report.usage);
            assert_eq!(report.usage.api_requests, 1, "{:?}", report.usage);
        }
    }
}
