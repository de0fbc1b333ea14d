//! `ota publish --format original --deltas --from REF`: the original updater's `.deltas/`,
//! applied by an independent reader of its format (`tests/fixtures/original_delta.py`).

use std::path::Path;
use std::process::Command;

use crate::util::{GitRepo, noise};

/// Runs the real `ota publish` with `args`; returns its status and stdout + stderr.
fn ota_publish(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ota"))
        .arg("publish")
        .args(args)
        .env_remove("OTA_HMAC_KEY")
        .output()
        .unwrap();
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), shown)
}

/// Applies `delta` to `old` with the Python reader; its output, or its refusal.
fn python_apply(old: &[u8], delta: &Path) -> Result<Vec<u8>, String> {
    let dir = tempfile::tempdir().unwrap();
    let (old_path, out_path) = (dir.path().join("old"), dir.path().join("out"));
    std::fs::write(&old_path, old).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/original_delta.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&old_path)
        .arg(delta)
        .arg(&out_path)
        .output()
        .expect("python3 runs (.ci/run installs it)");
    match out.status.success() {
        true => Ok(std::fs::read(out_path).unwrap()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// The names in `dir/.deltas`, sorted.
fn deltas(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join(".deltas"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn text(lines: std::ops::Range<u32>) -> String {
    lines
        .map(|i| format!("def handler_{i}(event):\n    return {i} * event\n\n"))
        .collect()
}

#[test]
fn deltas_of_changed_files_rebuild_the_new_release_with_an_independent_reader() {
    let mut repo = GitRepo::new();
    let big = noise(300_000, 1);
    repo.write("main.py", "print('v1')\n")
        .write("assets/model.bin", &big)
        .write("lib/util.py", text(0..400))
        .write("same.txt", "unchanged\n")
        .write(
            "a/b.dat",
            "one side of a name clash, version 1\n".repeat(50),
        )
        .write(
            "a_b.dat",
            "the other side of the clash, version 1\n".repeat(50),
        );
    repo.commit("v1");
    repo.tag("v1");
    // v2: a few bytes inserted and changed in the middle of the large file, lines added to
    // the text, the small file rewritten, a file added.
    let mut big2 = big.clone();
    big2.splice(150_000..150_000, noise(100, 2));
    big2[250_000] ^= 0xff;
    repo.write("main.py", "print('v2')\n")
        .write("assets/model.bin", &big2)
        .write("lib/util.py", text(0..200) + "# v2\n" + &text(200..420))
        .write("new.txt", "only in v2\n")
        .write(
            "a/b.dat",
            "one side of a name clash, version 2\n".repeat(50),
        )
        .write(
            "a_b.dat",
            "the other side of the clash, version 2\n".repeat(50),
        );
    repo.commit("v2");
    repo.tag("v2");

    let out = tempfile::tempdir().unwrap();
    let repo_path = repo.path().to_str().unwrap().to_owned();
    let repo_path = repo_path.as_str();
    let out_path = out.path().to_str().unwrap();
    let (ok, shown) = ota_publish(&[
        "--format", "original", "--deltas", "--from", "v1", "--repo", repo_path, "--ref", "v2",
        "--out", out_path,
    ]);
    assert!(ok, "{shown}");
    assert!(shown.contains("wrote 2 deltas"), "{shown}");
    assert!(shown.contains("1 changed files have none"), "{shown}");
    assert!(shown.contains("no delta for a/b.dat, a_b.dat"), "{shown}");

    // Only the changed files whose patch is smaller: not main.py (12 bytes rewritten), not
    // the unchanged or new files, not the two paths the original names alike.
    assert_eq!(
        deltas(out.path()),
        ["assets_model.bin.delta", "lib_util.py.delta"]
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("manifest.json")).unwrap()).unwrap();
    for (path, old, new) in [
        ("assets/model.bin", big.clone(), big2.clone()),
        (
            "lib/util.py",
            text(0..400).into_bytes(),
            (text(0..200) + "# v2\n" + &text(200..420)).into_bytes(),
        ),
    ] {
        let delta = out
            .path()
            .join(".deltas")
            .join(ota::publish::delta_name(path));
        let size = std::fs::metadata(&delta).unwrap().len();
        let made = python_apply(&old, &delta).unwrap();
        assert!(made == new, "{path}: the delta does not make v2's file");
        // What the original updater checks the result against: the manifest's sha256.
        let listed = manifest["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == path)
            .unwrap();
        assert_eq!(
            listed["sha256"].as_str().unwrap(),
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&made))
        );
        assert!(size < new.len() as u64 / 10, "{path}: {size} bytes");
    }

    // The next release: deltas from v2; the patches made for v1 are removed.
    repo.write("lib/util.py", text(0..420) + "# v3\n");
    repo.commit("v3");
    repo.tag("v3");
    let (ok, shown) = ota_publish(&[
        "--format", "original", "--deltas", "--from", "v2", "--repo", repo_path, "--ref", "v3",
        "--out", out_path, "--json",
    ]);
    assert!(ok, "{shown}");
    let summary: serde_json::Value = serde_json::from_str(&shown).unwrap();
    let deltas_made = &summary["deltas"];
    assert_eq!(
        (
            &deltas_made["written"],
            &deltas_made["removed"],
            &deltas_made["not_smaller"]
        ),
        (&1.into(), &1.into(), &0.into()),
        "{shown}"
    );
    assert_eq!(deltas(out.path()), ["lib_util.py.delta"]);
    let made = python_apply(
        (text(0..200) + "# v2\n" + &text(200..420)).as_bytes(),
        &out.path().join(".deltas/lib_util.py.delta"),
    )
    .unwrap();
    assert_eq!(made, (text(0..420) + "# v3\n").into_bytes());
}

#[test]
fn the_independent_reader_refuses_a_copy_longer_than_4096() {
    // What the original's own generator writes for a long unchanged run: one copy, refused.
    let dir = tempfile::tempdir().unwrap();
    let delta = dir.path().join("long.delta");
    std::fs::write(&delta, b"OTADELTA\x01\x01\x00\x81\x20\xff").unwrap();
    let refused = python_apply(&[0u8; 5000], &delta).unwrap_err();
    assert!(refused.contains("copy of 4097 bytes"), "{refused}");
}

#[test]
fn deltas_need_the_original_format_and_a_release_to_start_from() {
    let repo = crate::util::small_app();
    let out = tempfile::tempdir().unwrap();
    let (repo_path, out_path) = (repo.path().to_str().unwrap(), out.path().to_str().unwrap());
    let (ok, shown) = ota_publish(&[
        "--format", "original", "--deltas", "--repo", repo_path, "--ref", "HEAD", "--out", out_path,
    ]);
    assert!(!ok && shown.contains("--from"), "{shown}");
    let (ok, shown) = ota_publish(&[
        "--key", "none", "--deltas", "--from", "HEAD", "--repo", repo_path, "--ref", "HEAD",
        "--out", out_path,
    ]);
    assert!(
        !ok && shown.contains("use it with --format original"),
        "{shown}"
    );
    let (ok, shown) = ota_publish(&[
        "--format",
        "original",
        "--deltas",
        "--from",
        "no-such-tag",
        "--repo",
        repo_path,
        "--ref",
        "HEAD",
        "--out",
        out_path,
    ]);
    assert!(!ok && shown.contains("no-such-tag"), "{shown}");
    assert!(!out.path().join("manifest.json").exists());
}
