//! Peak memory of `ota::delta`: builds and applies an `OTADELTA` patch for a 4 MiB and a
//! 1 GiB file (temporary files on disk) and prints one markdown row per size.
//!
//! ```sh
//! cargo run --release --example delta_memory            # 4 MiB and 1 GiB
//! cargo run --release --example delta_memory -- 64      # sizes in MiB
//! ```
//!
//! Each step runs in its own process (this program, run again), which prints its peak
//! resident memory (`VmHWM`), so that one step's peak does not hide the next one's. The
//! files hold pseudo-random bytes; the new file is the old one with 1,000 bytes inserted at
//! a third, 4 KiB overwritten at two thirds and 10 KB appended.

#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use sha2::Digest;

const MIB: u64 = 1 << 20;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("diff") => return step_diff(&args[1], &args[2], &args[3]),
        Some("apply") => return step_apply(&args[1], &args[2], &args[3], &args[4], &args[5]),
        _ => {}
    }
    let sizes: Vec<u64> = match args.is_empty() {
        true => vec![4, 1024],
        false => args
            .iter()
            .map(|a| a.parse().expect("sizes in MiB"))
            .collect(),
    };
    println!("| file | patch | diff: peak RSS, time | apply: peak RSS, time |");
    println!("|---|---|---|---|");
    for mib in sizes {
        let dir = tempfile::tempdir().unwrap();
        let (old, new, patch, out) = (
            dir.path().join("old"),
            dir.path().join("new"),
            dir.path().join("patch"),
            dir.path().join("out"),
        );
        let (size, sha256) = make_files(&old, &new, mib * MIB);
        let (diff_rss, diff_time) = child(&["diff", s(&old), s(&new), s(&patch)]);
        let (apply_rss, apply_time) = child(&[
            "apply",
            s(&old),
            s(&patch),
            s(&out),
            &size.to_string(),
            &sha256,
        ]);
        let patch_len = std::fs::metadata(&patch).unwrap().len();
        println!(
            "| {mib} MiB | {patch_len} B | {:.1} MiB, {diff_time:.1} s | {:.1} MiB, {apply_time:.1} s |",
            diff_rss as f64 / 1024.0,
            apply_rss as f64 / 1024.0
        );
    }
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Runs this program with `args`; its peak RSS (KiB) and wall time (s).
fn child(args: &[&str]) -> (u64, f64) {
    let started = Instant::now();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rss = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (rss, started.elapsed().as_secs_f64())
}

/// Peak resident memory of this process, in KiB.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn step_diff(old: &str, new: &str, patch: &str) {
    let mut old = File::open(old).unwrap();
    let mut new = BufReader::new(File::open(new).unwrap());
    let out = BufWriter::new(File::create(patch).unwrap());
    ota::delta::write_original(&mut old, &mut new, out).unwrap();
    println!("{}", peak_rss());
}

fn step_apply(old: &str, patch: &str, out: &str, size: &str, sha256: &str) {
    let mut old = File::open(old).unwrap();
    let patch = File::open(patch).unwrap();
    let mut out = BufWriter::new(File::create(out).unwrap());
    let mut digest = [0u8; 32];
    hex::decode_to_slice(sha256, &mut digest).unwrap();
    let expected = ota::delta::Expected {
        size: size.parse().unwrap(),
        sha256: digest,
    };
    ota::delta::apply(&mut old, patch, &mut out, &expected).unwrap();
    println!("{}", peak_rss());
}

/// Writes `len` pseudo-random bytes to `old`, and the edited copy to `new`, 1 MiB at a time;
/// returns the new file's size and SHA-256.
fn make_files(old: &Path, new: &Path, len: u64) -> (u64, String) {
    let mut rng = fastrand::Rng::with_seed(len);
    let mut old_out = BufWriter::new(File::create(old).unwrap());
    let mut new_out = BufWriter::new(File::create(new).unwrap());
    let mut sha256 = sha2::Sha256::new();
    let mut written = 0u64;
    let mut put = |bytes: &[u8], out: &mut BufWriter<File>| {
        out.write_all(bytes).unwrap();
        sha256.update(bytes);
        written += bytes.len() as u64;
    };
    let (insert_at, overwrite_at) = (len / 3, len / 3 * 2);
    let mut chunk = vec![0u8; MIB as usize];
    let mut at = 0u64;
    while at < len {
        let n = chunk.len().min((len - at) as usize);
        rng.fill(&mut chunk[..n]);
        old_out.write_all(&chunk[..n]).unwrap();
        let mut edited = chunk[..n].to_vec();
        if (at..at + n as u64).contains(&overwrite_at) {
            let from = (overwrite_at - at) as usize;
            let to = (from + 4096).min(n);
            rng.fill(&mut edited[from..to]);
        }
        if (at..at + n as u64).contains(&insert_at) {
            let from = (insert_at - at) as usize;
            let mut inserted = vec![0u8; 1000];
            rng.fill(&mut inserted);
            edited.splice(from..from, inserted);
        }
        put(&edited, &mut new_out);
        at += n as u64;
    }
    let mut tail = vec![0u8; 10_000];
    rng.fill(&mut tail);
    put(&tail, &mut new_out);
    old_out.flush().unwrap();
    new_out.flush().unwrap();
    drop(new_out);
    (written, hex::encode(sha256.finalize()))
}
