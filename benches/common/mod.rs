//! The benchmark scenarios, shared by `benches/update.rs` and `benches/versus.rs`: each a
//! release (v1) and an update to it (v2), with deterministic content so that runs compare.
//! See BENCHMARKS.md.

use std::collections::BTreeMap;

use ota_serve::fixture::FileSpec;

/// One benchmark scenario: a release and an update to it.
pub struct Scenario {
    pub name: &'static str,
    pub v1: BTreeMap<String, FileSpec>,
    pub v2: BTreeMap<String, FileSpec>,
}

/// Deterministic pseudo-random bytes (xorshift), so runs are comparable.
struct Bytes(u64);

impl Bytes {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Source-like text: words from a small vocabulary, compressible like code.
    fn text(&mut self, len: usize) -> Vec<u8> {
        const WORDS: [&str; 16] = [
            "def ",
            "return ",
            "self",
            ".value",
            " = ",
            "(x)",
            "\n    ",
            "if ",
            "else:",
            "import ",
            "sensor",
            "_read",
            "for i in ",
            "range(10)",
            ": ",
            "# note\n",
        ];
        let mut out = Vec::with_capacity(len + 16);
        while out.len() < len {
            out.extend_from_slice(WORDS[(self.next() % 16) as usize].as_bytes());
        }
        out.truncate(len);
        out
    }

    /// Incompressible bytes, like a compiled binary or an image.
    fn binary(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

fn file(bytes: Vec<u8>) -> FileSpec {
    FileSpec::File { bytes, exec: false }
}

/// 50 source files, ~400 KB; v2 edits 2, adds 1, deletes 1.
fn small() -> Scenario {
    let mut rng = Bytes(0x5eed);
    let mut v1 = BTreeMap::new();
    for i in 0..50 {
        let len = 4_000 + (rng.next() % 8_000) as usize;
        v1.insert(format!("app/module_{i:02}.py"), file(rng.text(len)));
    }
    let mut v2 = v1.clone();
    for i in [3, 17] {
        v2.insert(format!("app/module_{i:02}.py"), file(rng.text(9_000)));
    }
    v2.insert("app/module_new.py".into(), file(rng.text(6_000)));
    v2.remove("app/module_40.py");
    Scenario {
        name: "small",
        v1,
        v2,
    }
}

/// 1,000 files, ~60 MB including three 4 MiB binaries; v2 edits 10, adds 2, deletes 2.
fn large() -> Scenario {
    let mut rng = Bytes(0xb16);
    let mut v1 = BTreeMap::new();
    for i in 0..997 {
        let len = 20_000 + (rng.next() % 56_000) as usize;
        v1.insert(
            format!("pkg/d{:02}/file_{i:04}.py", i % 40),
            file(rng.text(len)),
        );
    }
    for name in ["firmware.bin", "model.bin", "assets.bin"] {
        v1.insert(format!("bin/{name}"), file(rng.binary(4 << 20)));
    }
    let mut v2 = v1.clone();
    for i in (0..997).step_by(100) {
        v2.insert(
            format!("pkg/d{:02}/file_{i:04}.py", i % 40),
            file(rng.text(30_000)),
        );
    }
    v2.insert("pkg/new/a.py".into(), file(rng.text(10_000)));
    v2.insert("pkg/new/b.py".into(), file(rng.text(10_000)));
    v2.remove("pkg/d01/file_0001.py");
    v2.remove("pkg/d02/file_0002.py");
    Scenario {
        name: "large",
        v1,
        v2,
    }
}

pub fn total(files: &BTreeMap<String, FileSpec>) -> u64 {
    files
        .values()
        .map(|f| match f {
            FileSpec::File { bytes, .. } => bytes.len() as u64,
            _ => 0,
        })
        .sum()
}

/// Bytes of the files that v2 adds or changes.
pub fn changed(s: &Scenario) -> u64 {
    s.v2.iter()
        .filter(|(path, spec)| s.v1.get(*path).is_none_or(|old| !same(old, spec)))
        .map(|(_, spec)| match spec {
            FileSpec::File { bytes, .. } => bytes.len() as u64,
            _ => 0,
        })
        .sum()
}

fn same(a: &FileSpec, b: &FileSpec) -> bool {
    match (a, b) {
        (FileSpec::File { bytes: x, exec: e }, FileSpec::File { bytes: y, exec: f }) => {
            x == y && e == f
        }
        _ => false,
    }
}

pub const V1_TIME: i64 = 1_767_225_600;
pub const V2_TIME: i64 = V1_TIME + 60;

pub fn scenario(name: &str) -> Scenario {
    if name == "small" { small() } else { large() }
}
