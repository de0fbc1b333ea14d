//! A hostile or broken server: releases whose file list must be refused whole, before a
//! single byte lands in the target.

use crate::util::{Device, GitRepo, Raw, serve};

/// Installs a good v1.0.0, then serves `entries` as v2.0.0 and expects the update to be
/// refused with an error naming `needle` (the first bad entry: a folder's own entry comes
/// before the files in it), the tree untouched and nothing left behind.
fn refused(entries: &[Raw], needle: &str) {
    let mut repo = GitRepo::new();
    repo.write("main.py", "print(1)\n");
    repo.commit("good");
    repo.tag("v1.0.0");
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    device.ota_expect(&["update"], 0);
    let before = device.tree();

    let tree = repo.raw_tree(entries);
    repo.commit_raw(&tree, "v2.0.0");
    let out = device.ota_expect(&["update"], 1);
    assert!(out.contains(needle), "the error names {needle:?}:\n{out}");
    assert_eq!(device.tree(), before, "nothing was written");
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
    assert_eq!(device.last_error().unwrap()["kind"], "invalid_release");
    assert!(!device.home().join("x").exists() && !device.home().join("escaped").exists());
}

const F: &str = "100644";

#[test]
fn a_parent_folder_component_is_refused() {
    refused(
        &[
            Raw::Blob(F, "main.py", b"print(2)\n"),
            Raw::Tree("..", vec![Raw::Blob(F, "escaped", b"pwned\n")]),
        ],
        "\"..\"",
    );
}

#[test]
fn a_path_into_the_state_folder_is_refused() {
    refused(
        &[
            Raw::Blob(F, "main.py", b"print(2)\n"),
            Raw::Tree(".ota", vec![Raw::Blob(F, "state.json", b"{}")]),
        ],
        "\".ota\"",
    );
}

#[test]
fn a_backslash_is_refused() {
    refused(&[Raw::Blob(F, "a\\b", b"x\n")], "backslash");
}

#[test]
fn an_empty_component_is_refused() {
    refused(
        &[Raw::Tree(
            "a",
            vec![Raw::Tree("", vec![Raw::Blob(F, "b", b"x\n")])],
        )],
        "\"a/\" has an empty component",
    );
}

#[test]
fn an_absolute_path_is_refused() {
    refused(
        &[Raw::Tree(
            "",
            vec![Raw::Tree("etc", vec![Raw::Blob(F, "x", b"x\n")])],
        )],
        "\"\" is empty",
    );
}

#[test]
fn a_duplicate_path_is_refused() {
    refused(
        &[
            Raw::Blob(F, "twice", b"one\n"),
            Raw::Blob(F, "twice", b"two\n"),
        ],
        "twice",
    );
}

#[test]
fn a_dot_component_is_refused() {
    refused(&[Raw::Tree(".", vec![Raw::Blob(F, "x", b"x\n")])], "\".\"");
}

/// A NUL cannot be stored in a git tree, so a hostile server makes one up: the tree answer
/// itself is replaced.
#[test]
fn a_nul_in_a_path_is_refused() {
    use ota_serve::fault::{Action, Fault};
    let mut repo = GitRepo::new();
    repo.write("main.py", "print(1)\n");
    repo.commit("good");
    repo.tag("v1.0.0");
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    device.ota_expect(&["update"], 0);
    let before = device.tree();

    repo.write("main.py", "print(2)\n");
    repo.commit("v2");
    repo.tag("v2.0.0");
    let blob = repo.run(&["rev-parse", "v2.0.0:main.py"]);
    let tree = format!(
        r#"{{"sha":"{0}","truncated":false,"tree":[
            {{"path":"main.py","mode":"100644","type":"blob","sha":"{1}","size":9}},
            {{"path":"evil\u0000.py","mode":"100644","type":"blob","sha":"{1}","size":9}}]}}"#,
        "0".repeat(40),
        blob.trim()
    );
    server.set_faults(vec![Fault::new(
        "*/git/trees/*",
        Action::Body {
            bytes: tree.into_bytes(),
            content_type: "application/json".into(),
        },
    )]);
    let out = device.ota_expect(&["update"], 1);
    assert!(out.contains("NUL"), "{out}");
    assert_eq!(device.tree(), before);
    assert!(device.leftovers().is_empty());
    assert_eq!(device.last_error().unwrap()["kind"], "invalid_release");
}

/// Declared sizes come from the network: sizes whose sum or block-rounded size does not
/// fit in 64 bits are refused with a message, before anything is downloaded.
#[test]
fn declared_sizes_that_overflow_are_refused() {
    use ota_serve::fault::{Action, Fault};
    let mut repo = GitRepo::new();
    repo.write("a.py", "a\n").write("b.py", "b\n");
    repo.commit("v1");
    repo.tag("v1.0.0");
    let blob = repo.run(&["rev-parse", "v1.0.0:a.py"]);
    let server = serve(repo.path());
    let tree = |sizes: &[u64]| {
        let entries: Vec<String> = sizes
            .iter()
            .enumerate()
            .map(|(i, size)| {
                format!(
                    r#"{{"path":"f{i}.py","mode":"100644","type":"blob","sha":"{}","size":{size}}}"#,
                    blob.trim()
                )
            })
            .collect();
        format!(
            r#"{{"sha":"{}","truncated":false,"tree":[{}]}}"#,
            "0".repeat(40),
            entries.join(",")
        )
    };
    for (sizes, needle) in [
        (vec![1 << 63, 1 << 63], "sizes add up to more than"),
        (vec![u64::MAX - 1], "not enough free space"),
    ] {
        let device = Device::new(&server, "");
        server.set_faults(vec![Fault::new(
            "*/git/trees/*",
            Action::Body {
                bytes: tree(&sizes).into_bytes(),
                content_type: "application/json".into(),
            },
        )]);
        server.reset_stats();
        let out = device.ota_expect(&["update"], 1);
        assert!(out.contains(needle), "{sizes:?}: {out}");
        assert!(device.tree().is_empty(), "{sizes:?}");
        assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
        assert_eq!(server.stats().raw_requests, 0, "nothing was downloaded");
    }
}
