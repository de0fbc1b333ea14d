//! Random network faults for one step, written in `ota-serve --fault` syntax (so a failing
//! step's faults can be replayed by hand) and parsed by ota-serve itself.
//!
//! Every rule that breaks requests has a `times` limit: a device that keeps retrying gets
//! through, as it would once a flaky link recovers. Some are more than one run's retries
//! (`retries = 2`, so three attempts per request) can absorb, so the update fails and the
//! next run retries it.

use ota_serve::fault::Fault;

/// One to three rules, or none on a quarter of the steps.
pub fn pick(rng: &mut fastrand::Rng) -> Vec<String> {
    if rng.u8(0..4) == 0 {
        return Vec::new();
    }
    let n = rng.usize(1..=3);
    (0..n).map(|_| one(rng)).collect()
}

fn one(rng: &mut fastrand::Rng) -> String {
    let skip = rng.u32(0..8);
    let times = rng.u32(1..=4);
    match rng.u32(0..100) {
        // A connection reset in the middle of a body (a large file's, often).
        0..=19 => format!(
            "/raw/*=reset-after:{},skip={skip},times={times}",
            rng.u64(0..1_500_000)
        ),
        // A body cut short with a clean close.
        20..=31 => format!(
            "/raw/*=truncate:{},skip={skip},times={times}",
            rng.u64(0..1_500_000)
        ),
        // Server errors on downloads and on the API.
        32..=43 => format!(
            "/raw/*=status:{},skip={skip},times={times}",
            [500, 502, 503][rng.usize(0..3)]
        ),
        44..=53 => format!(
            "/repos/*=status:{},skip={},times={}",
            [500, 502, 503][rng.usize(0..3)],
            rng.u32(0..3),
            rng.u32(1..=3)
        ),
        // A reset before or while the API answers.
        54..=60 => format!("/repos/*=reset-after:{},times=1", rng.u64(0..400)),
        // A corrupted byte: the hash check must catch it.
        61..=67 => format!(
            "/raw/*=flip-byte:{},skip={skip},times=1",
            rng.u64(0..50_000)
        ),
        // A Content-Length that lies.
        68..=72 => format!(
            "/raw/*=wrong-length:{},skip={skip},times=1",
            [-100, -1, 1, 100][rng.usize(0..4)]
        ),
        // A stall longer than `http_timeout_sec` (1 s).
        73..=77 => format!(
            "/raw/*=stall:{},pause:2s,skip={skip},times=1",
            rng.u64(0..1_000_000)
        ),
        // A rate limit with a short reset.
        78..=81 => "/repos/*=rate-limit:429,reset-in:1s,retry-after:1s,times=1".to_owned(),
        // Latency on everything.
        82..=89 => format!("*=latency:{}ms", rng.u64(1..=20)),
        // A slow link: downloads take long enough for kills to land in them.
        _ => format!("/raw/*=bandwidth:{}", rng.u64(8_000_000..=40_000_000)),
    }
}

/// The rules, parsed as `ota-serve --fault` would.
pub fn parse(specs: &[String]) -> Vec<Fault> {
    specs
        .iter()
        .map(|s| s.parse().unwrap_or_else(|e| panic!("{e}")))
        .collect()
}
