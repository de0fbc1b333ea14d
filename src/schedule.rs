//! When an update may run: the minimum interval between checks, the update window in local
//! time, the safe-mode backoff after repeated failures, the phased rollout, and the wait
//! for the network on a device that just booted.
//!
//! Every decision is a pure function of `now` (and of what the state folder recorded), so
//! that tests give explicit times; only [`wait_for_network`] and [`random_delay`] touch the
//! clock or the system.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use sha1::{Digest, Sha1};

/// The first delay of safe mode, doubled after each further failure up to `max_delay_sec`.
pub const SAFE_MODE_FIRST_DELAY: u64 = 60;

/// The hours of the day (local time) in which an update may start: from `start` (included)
/// to `end` (excluded, 24 = midnight), across midnight when `end` < `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// First hour of the window, 0–23.
    pub start: u8,
    /// The hour the window closes, 1–24 (`end` != `start`).
    pub end: u8,
}

impl Window {
    /// Whether `hour` (0–23) lies in the window.
    pub fn contains(self, hour: u8) -> bool {
        let end = self.end % 24;
        if self.start < end {
            (self.start..end).contains(&hour)
        } else {
            // Across midnight (or the whole day, for 0–24).
            hour >= self.start || hour < end
        }
    }

    /// `None` when `now` is in the window; otherwise the next time the window opens.
    pub fn next_open(self, now: &jiff::ZonedDateTime) -> Option<jiff::ZonedDateTime> {
        let hour = u8::try_from(now.hour()).unwrap_or(0);
        if self.contains(hour) {
            return None;
        }
        let start = i8::try_from(self.start).unwrap_or(0);
        let mut open = now.date().at(start, 0, 0, 0);
        if open <= now.datetime() {
            open = open.tomorrow().ok()?;
        }
        let open = open.to_zoned_datetime(now.time_zone().clone()).ok()?;
        Some(open)
    }
}

/// Why a run does not start now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// `min_interval_sec` has not passed since the last check.
    Interval,
    /// Outside the update window.
    Window,
    /// Safe mode: the last updates failed `max_crashes_before_delay` times in a row.
    SafeMode,
    /// This device is not in the rollout cohort of the release.
    Rollout,
}

impl Reason {
    /// A stable machine-readable name: `interval`, `window`, `safe_mode`, `rollout`.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Interval => "interval",
            Reason::Window => "window",
            Reason::SafeMode => "safe_mode",
            Reason::Rollout => "rollout",
        }
    }
}

/// A run that waits: why, and the earliest time (Unix seconds) it may start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deferred {
    /// Why.
    pub reason: Reason,
    /// The earliest time the run may start, in seconds since the Unix epoch (`None`: no
    /// time is known, e.g. a rollout that waits for the fleet owner to widen it).
    pub until: Option<u64>,
    /// The whole story, for a person.
    pub message: String,
}

impl fmt::Display for Deferred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What the state folder recorded that the schedule depends on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// When the source was last asked (Unix seconds; `cache.json`'s `last_check`).
    pub last_check: Option<u64>,
    /// When the last update failed (Unix seconds) and how many failed in a row
    /// (`last_error.json`).
    pub failures: Option<(u64, u32)>,
}

/// Whether an update may start at `now` (`local`: the same instant in local time): `None`,
/// or why not and until when. Safe mode first, then the window, then the interval.
pub fn decide(
    config: &crate::config::ScheduleConfig,
    local: &jiff::ZonedDateTime,
    history: History,
) -> Option<Deferred> {
    let now = u64::try_from(local.timestamp().as_second()).unwrap_or(0);
    let shown = |until: u64| {
        let ts = jiff::Timestamp::from_second(i64::try_from(until).unwrap_or(i64::MAX)).ok();
        ts.map(|ts| ts.to_zoned_datetime(local.time_zone().clone()))
            .map_or_else(
                || until.to_string(),
                |t| t.strftime("%Y-%m-%d %H:%M:%S %Z").to_string(),
            )
    };
    if let Some((last, consecutive)) = history.failures
        && let Some(until) = safe_mode_wait(
            now,
            last,
            consecutive,
            config.max_crashes_before_delay,
            config.max_delay,
        )
    {
        return Some(Deferred {
            reason: Reason::SafeMode,
            until: Some(until),
            message: format!(
                "safe mode: the last {consecutive} updates failed in a row, so the next one \
                 waits until {} (`max_crashes_before_delay`, `max_delay_sec`); `ota update \
                 --force` tries now",
                shown(until)
            ),
        });
    }
    if let Some(window) = config.window
        && let Some(open) = window.next_open(local)
    {
        let until = u64::try_from(open.timestamp().as_second()).unwrap_or(0);
        return Some(Deferred {
            reason: Reason::Window,
            until: Some(until),
            message: format!(
                "outside the update window ({:02}:00–{:02}:00 local time): the next update \
                 may start at {}; `ota update --now` runs now",
                window.start,
                window.end,
                shown(until)
            ),
        });
    }
    if let Some(until) = interval_wait(now, history.last_check, config.min_interval) {
        return Some(Deferred {
            reason: Reason::Interval,
            until: Some(until),
            message: format!(
                "checked less than `min_interval_sec` ({} s) ago: the next update may start at \
                 {}; `ota update --now` runs now",
                config.min_interval,
                shown(until)
            ),
        });
    }
    None
}

/// `config` with only its safe-mode settings: no window, interval or rollout.
pub fn only_safe_mode(config: &crate::config::ScheduleConfig) -> crate::config::ScheduleConfig {
    crate::config::ScheduleConfig {
        max_crashes_before_delay: config.max_crashes_before_delay,
        max_delay: config.max_delay,
        ..Default::default()
    }
}

/// `None` when `min_interval` seconds have passed since `last_check`; otherwise when they
/// will have.
pub fn interval_wait(now: u64, last_check: Option<u64>, min_interval: u64) -> Option<u64> {
    let next = last_check?.saturating_add(min_interval);
    (min_interval > 0 && next > now).then_some(next)
}

/// The safe-mode delay after `consecutive` failures in a row: none below `max_crashes`
/// (0: safe mode off), then [`SAFE_MODE_FIRST_DELAY`] seconds, doubled after each further
/// failure, at most `max_delay`.
pub fn safe_mode_delay(consecutive: u32, max_crashes: u32, max_delay: u64) -> Option<u64> {
    if max_crashes == 0 || consecutive < max_crashes {
        return None;
    }
    let doublings = (consecutive - max_crashes).min(32);
    Some(
        SAFE_MODE_FIRST_DELAY
            .saturating_mul(1 << doublings)
            .min(max_delay),
    )
}

/// `None` when no safe-mode delay holds at `now`; otherwise when it ends. `last_failure`:
/// the time of the last failure (Unix seconds).
pub fn safe_mode_wait(
    now: u64,
    last_failure: u64,
    consecutive: u32,
    max_crashes: u32,
    max_delay: u64,
) -> Option<u64> {
    let delay = safe_mode_delay(consecutive, max_crashes, max_delay)?;
    let until = last_failure.saturating_add(delay);
    (until > now).then_some(until)
}

/// The device's rollout bucket for a release, 0–99: the first 4 bytes of
/// `sha1("<device id>:<commit>")` (the commit in lowercase hex) as a big-endian number,
/// modulo 100. A fleet owner computes it with
/// `printf '%s:%s' "$ID" "$COMMIT" | sha1sum | cut -c1-8` (in hex), then `% 100`.
pub fn rollout_bucket(device_id: &str, commit: &str) -> u8 {
    let digest = Sha1::digest(format!("{device_id}:{commit}").as_bytes());
    let first = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    u8::try_from(first % 100).unwrap_or(0)
}

/// Whether the device takes the release at `percent` (0–100): its bucket is under the
/// percentage, so a higher percentage keeps every device a lower one took.
pub fn in_rollout(device_id: &str, commit: &str, percent: u8) -> bool {
    rollout_bucket(device_id, commit) < percent
}

/// The device id: `configured`, or the first line of `<root>/etc/machine-id`.
pub fn device_id(configured: Option<&str>, root: &Path) -> Result<String, String> {
    if let Some(id) = configured {
        return Ok(id.to_owned());
    }
    let path = root.join("etc/machine-id");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read the device id from {}: {e}; set `device_id` under `[schedule]`",
            path.display()
        )
    })?;
    let id = text.lines().next().unwrap_or("").trim();
    if id.is_empty() {
        return Err(format!(
            "{} is empty; set `device_id` under `[schedule]`",
            path.display()
        ));
    }
    Ok(id.to_owned())
}

/// A random delay of at most `max` seconds, before the first request, so that a fleet
/// started by the same timer does not ask the server all at once.
pub fn random_delay(max: u64) -> Duration {
    match max {
        0 => Duration::ZERO,
        max => Duration::from_millis(fastrand::u64(0..=max.saturating_mul(1000))),
    }
}

/// Whether a routing table in the format of `/proc/net/route` (IPv4) or
/// `/proc/net/ipv6_route` has a default route that is up.
pub fn has_default_route(ipv4: &str, ipv6: &str) -> bool {
    const RTF_UP: u32 = 1;
    let v4 = ipv4.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let flags = f.get(3).and_then(|x| u32::from_str_radix(x, 16).ok());
        f.get(1) == Some(&"00000000")
            && f.get(7) == Some(&"00000000")
            && flags.is_some_and(|fl| fl & RTF_UP != 0)
    });
    let v6 = ipv6.lines().any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let flags = f.get(8).and_then(|x| u32::from_str_radix(x, 16).ok());
        f.first().is_some_and(|d| d.chars().all(|c| c == '0'))
            && f.get(1) == Some(&"00")
            && f.get(9).is_some_and(|dev| *dev != "lo")
            && flags.is_some_and(|fl| fl & RTF_UP != 0)
    });
    v4 || v6
}

/// Whether `host` (of a URL) is this machine: no route and no resolution are needed.
pub fn is_local(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Waits, at most `max_wait`, for a default route (read under `proc_root`, normally `/`)
/// and for `host` to resolve, backing off from 1 s to 16 s between looks. Returns how long
/// it waited, or what was still missing at the end. A loopback host needs neither; an IP
/// literal needs no resolution.
pub fn wait_for_network(
    proc_root: &Path,
    host: &str,
    port: u16,
    max_wait: Duration,
) -> Result<Duration, String> {
    if is_local(host) {
        return Ok(Duration::ZERO);
    }
    let literal = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok();
    let started = std::time::Instant::now();
    let mut pause = Duration::from_secs(1);
    loop {
        let read = |p: &str| std::fs::read_to_string(proc_root.join(p)).unwrap_or_default();
        let missing = if !has_default_route(&read("proc/net/route"), &read("proc/net/ipv6_route")) {
            Some("no default route".to_owned())
        } else if !literal && std::net::ToSocketAddrs::to_socket_addrs(&(host, port)).is_err() {
            Some(format!("{host} does not resolve"))
        } else {
            None
        };
        let waited = started.elapsed();
        match missing {
            None => return Ok(waited),
            Some(why) if waited >= max_wait => {
                return Err(format!(
                    "the network is not up after {} s: {why}; check the device's connection \
                     and DNS",
                    waited.as_secs()
                ));
            }
            Some(why) => {
                tracing::info!("waiting for the network: {why}");
                std::thread::sleep(pause.min(max_wait.saturating_sub(waited)));
                pause = (pause * 2).min(Duration::from_secs(16));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hour: i8, minute: i8) -> jiff::ZonedDateTime {
        let tz = jiff::tz::TimeZone::fixed(jiff::tz::offset(2));
        jiff::civil::date(2026, 12, 3)
            .at(hour, minute, 0, 0)
            .to_zoned_datetime(tz)
            .expect("valid time")
    }

    #[test]
    fn decide_puts_safe_mode_then_window_then_interval() {
        let mut config = crate::config::ScheduleConfig::default();
        let now = at(12, 0);
        let unix = u64::try_from(now.timestamp().as_second()).expect("after 1970");
        assert_eq!(decide(&config, &now, History::default()), None);
        config.min_interval = 600;
        let recent = History {
            last_check: Some(unix - 60),
            failures: None,
        };
        let d = decide(&config, &now, recent).expect("interval");
        assert_eq!((d.reason, d.until), (Reason::Interval, Some(unix + 540)));
        config.window = Some(Window { start: 22, end: 4 });
        let d = decide(&config, &now, recent).expect("window");
        assert_eq!(
            (d.reason, d.until),
            (Reason::Window, Some(unix + 10 * 3600))
        );
        assert!(d.message.contains("22:00:00"), "{}", d.message);
        config.max_crashes_before_delay = 2;
        let failing = History {
            failures: Some((unix - 10, 3)),
            ..recent
        };
        let d = decide(&config, &now, failing).expect("safe mode");
        assert_eq!((d.reason, d.until), (Reason::SafeMode, Some(unix + 110)));
    }

    #[test]
    fn window_in_local_hours_wraps_midnight() {
        let night = Window { start: 22, end: 4 };
        assert!(night.contains(23) && night.contains(0) && night.contains(3));
        assert!(!night.contains(4) && !night.contains(12) && !night.contains(21));
        assert_eq!(night.next_open(&at(23, 30)), None);
        assert_eq!(night.next_open(&at(12, 5)), Some(at(22, 0)));
        let day = Window { start: 9, end: 17 };
        let next = day.next_open(&at(18, 0)).expect("closed at 18:00");
        assert_eq!((next.day(), next.hour(), next.minute()), (4, 9, 0));
        assert_eq!(next.offset(), jiff::tz::offset(2), "local time kept");
        assert!(Window { start: 0, end: 24 }.contains(23));
        assert!(!Window { start: 8, end: 24 }.contains(7));
        assert!(Window { start: 8, end: 24 }.contains(23));
    }

    #[test]
    fn interval_counts_from_the_last_check() {
        assert_eq!(interval_wait(1000, Some(900), 3600), Some(4500));
        assert_eq!(interval_wait(5000, Some(900), 3600), None);
        assert_eq!(interval_wait(1000, None, 3600), None, "never checked");
        assert_eq!(interval_wait(1000, Some(999), 0), None, "no interval");
    }

    #[test]
    fn safe_mode_backs_off_exponentially_up_to_the_cap() {
        assert_eq!(safe_mode_delay(2, 3, 3600), None);
        assert_eq!(safe_mode_delay(3, 3, 3600), Some(60));
        assert_eq!(safe_mode_delay(4, 3, 3600), Some(120));
        assert_eq!(safe_mode_delay(6, 3, 3600), Some(480));
        assert_eq!(safe_mode_delay(100, 3, 3600), Some(3600));
        assert_eq!(safe_mode_delay(100, 0, 3600), None, "0: off");
        assert_eq!(safe_mode_wait(1000, 990, 4, 3, 3600), Some(1110));
        assert_eq!(safe_mode_wait(2000, 990, 4, 3, 3600), None);
    }

    #[test]
    fn rollout_of_a_thousand_devices_widens_the_same_cohort() {
        let commit = "3f786850e387550fdab836ed7e6dc881de23001b";
        let ids: Vec<String> = (0..1000).map(|i| format!("device-{i:04}")).collect();
        let cohort = |percent| {
            let ids = ids.iter().filter(|id| in_rollout(id, commit, percent));
            ids.cloned().collect::<std::collections::BTreeSet<String>>()
        };
        let (ten, twenty) = (cohort(10), cohort(20));
        assert!(
            (80..=120).contains(&ten.len()),
            "{} of 1000 at 10%",
            ten.len()
        );
        assert!(
            (160..=240).contains(&twenty.len()),
            "{} at 20%",
            twenty.len()
        );
        assert!(
            ten.is_subset(&twenty),
            "raising the percentage keeps the cohort"
        );
        assert_eq!(cohort(0).len(), 0);
        assert_eq!(cohort(100).len(), 1000);
    }

    #[test]
    fn rollout_bucket_is_the_documented_formula() {
        // printf '%s:%s' device-0001 abc | sha1sum → the first 4 bytes of the digest.
        let digest = Sha1::digest(b"device-0001:abc");
        let first = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
        assert_eq!(u32::from(rollout_bucket("device-0001", "abc")), first % 100);
    }

    #[test]
    fn device_id_from_config_or_machine_id() {
        let root = tempfile::tempdir().expect("temp dir");
        assert!(device_id(None, root.path()).is_err());
        std::fs::create_dir(root.path().join("etc")).expect("mkdir");
        std::fs::write(root.path().join("etc/machine-id"), "abc123\n").expect("write");
        assert_eq!(device_id(None, root.path()).as_deref(), Ok("abc123"));
        assert_eq!(
            device_id(Some("pump-7"), root.path()).as_deref(),
            Ok("pump-7")
        );
    }

    #[test]
    fn default_route_from_proc_net() {
        let header = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n";
        let default = format!("{header}eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\n");
        let subnet = format!("{header}eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n");
        assert!(has_default_route(&default, ""));
        assert!(!has_default_route(&subnet, ""));
        assert!(!has_default_route(header, ""));
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
                  fe800000000000000000000000000001 00000400 00000000 00000000 00000003 wlan0\n";
        assert!(has_default_route(header, v6));
    }

    #[test]
    fn loopback_needs_no_network() {
        assert!(is_local("127.0.0.1") && is_local("[::1]") && is_local("localhost"));
        assert!(!is_local("api.github.com") && !is_local("10.0.0.1"));
        let empty = tempfile::tempdir().expect("temp dir");
        let waited = wait_for_network(empty.path(), "127.0.0.1", 80, Duration::ZERO);
        assert_eq!(waited, Ok(Duration::ZERO));
        let err = wait_for_network(empty.path(), "10.0.0.1", 80, Duration::ZERO);
        assert!(err.is_err_and(|e| e.contains("no default route")));
        // With a default route, an IP address needs no resolution.
        let net = empty.path().join("proc/net");
        std::fs::create_dir_all(&net).expect("mkdir");
        let route = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
                     eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\n";
        std::fs::write(net.join("route"), route).expect("write");
        let waited = wait_for_network(empty.path(), "10.0.0.1", 80, Duration::ZERO);
        assert!(waited.is_ok(), "{waited:?}");
    }
}
