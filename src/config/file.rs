//! The config file as written: every key of the new format, read by serde. This is the one
//! place that lists the keys; the "did you mean" hints read the lists from these structs.

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// The whole file (new format). Every key is optional here; [`super::validate`] decides what
/// is required and fills the defaults. A number's type gives its range.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(super) struct File {
    pub target_dir: Option<String>,
    pub channel: Option<String>,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub allow: Option<Vec<String>>,
    pub ignore: Option<Vec<String>>,
    pub state_dir: Option<String>,
    pub source: Source,
    pub network: Network,
    pub limits: Limits,
    pub trial: Trial,
    pub before_update: BeforeUpdate,
    pub after_update: AfterUpdate,
    pub guards: Guards,
    pub schedule: Schedule,
    pub report: Report,
    pub device: Device,
}

/// `[source]`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(super) struct Source {
    pub kind: Option<String>,
    pub owner: Option<String>,
    pub repo: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<String>,
    pub api_url: Option<String>,
    pub raw_url: Option<String>,
    pub url: Option<String>,
    pub public_key: Option<OneOrMany>,
    pub public_key_file: Option<OneOrMany>,
    pub allow_downgrade: Option<bool>,
    pub manifest_key: Option<String>,
    pub manifest_key_file: Option<String>,
}

/// A key that takes one string or a list of them.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged, expecting = "a string or a list of strings")]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

/// `[network]`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(super) struct Network {
    pub connect_timeout_sec: Option<Ranged<1, 3600>>,
    pub http_timeout_sec: Option<Ranged<1, 3600>>,
    pub retries: Option<Ranged<0, 100>>,
    pub backoff_sec: Option<Ranged<0, 3600>>,
    pub max_backoff_sec: Option<Ranged<0, 3600>>,
    pub max_wait_sec: Option<Ranged<0, 3600>>,
    pub update_timeout_sec: Option<Ranged<1, 86_400>>,
    pub parallel: Option<Ranged<1, 64>>,
    pub user_agent: Option<String>,
}

/// `[limits]`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(super) struct Limits {
    pub max_tree_kb: Option<Ranged<1, 32_768>>,
    pub max_tree_files: Option<Ranged<1, 10_000_000>>,
}

/// `[trial]`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(super) struct Trial {
    pub health_command: Option<String>,
    pub health_timeout_sec: Option<Ranged<1, 86_400>>,
    pub confirm_within_sec: Option<Ranged<0, 31_536_000>>,
    pub boots: Option<Ranged<0, 100>>,
}

/// `[before_update]`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(super) struct BeforeUpdate {
    pub command: Option<String>,
    pub timeout_sec: Option<Ranged<1, 86_400>>,
}

/// `[after_update]`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(super) struct AfterUpdate {
    pub restart: Option<Vec<String>>,
    pub reboot: Option<bool>,
    pub command: Option<String>,
    pub timeout_sec: Option<Ranged<1, 86_400>>,
    pub post_update: Option<std::collections::BTreeMap<String, String>>,
}

/// `[guards]`: bytes up to 1 EiB, a percentage.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(super) struct Guards {
    pub min_free_storage: Option<Ranged<0, MAX_BYTES>>,
    pub min_free_mem: Option<Ranged<0, MAX_BYTES>>,
    pub min_battery_percent: Option<Ranged<0, 100>>,
}

/// The largest byte count a `[guards]` key takes: 1 EiB.
pub(super) const MAX_BYTES: u64 = 1 << 60;

/// `[schedule]`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(super) struct Schedule {
    pub min_interval_sec: Option<Ranged<0, 31_536_000>>,
    pub window_start_hour: Option<Ranged<0, 23>>,
    pub window_end_hour: Option<Ranged<0, 24>>,
    pub random_delay_sec: Option<Ranged<0, 86_400>>,
    pub rollout_percent: Option<Ranged<0, 100>>,
    pub device_id: Option<String>,
    pub max_crashes_before_delay: Option<Ranged<0, 1000>>,
    pub max_delay_sec: Option<Ranged<1, 31_536_000>>,
}

/// `[report]`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(super) struct Report {
    pub metrics_file: Option<String>,
    pub error_history_limit: Option<Ranged<0, 1000>>,
}

/// `[device]`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(super) struct Device {
    pub watchdog_device: Option<String>,
    pub watchdog_timeout_ms: Option<Ranged<100, 3_600_000>>,
    pub led: Option<String>,
}

/// The keys of a table of the new format, if `name` is one.
pub(super) fn table(name: &str) -> Option<&'static [&'static str]> {
    match name {
        "source" => Some(fields::<Source>()),
        "network" => Some(fields::<Network>()),
        "limits" => Some(fields::<Limits>()),
        "trial" => Some(fields::<Trial>()),
        "before_update" => Some(fields::<BeforeUpdate>()),
        "after_update" => Some(fields::<AfterUpdate>()),
        "guards" => Some(fields::<Guards>()),
        "schedule" => Some(fields::<Schedule>()),
        "report" => Some(fields::<Report>()),
        "device" => Some(fields::<Device>()),
        _ => None,
    }
}

/// Every key of the new format, dotted (`source.owner`), in the order of the structs.
pub(super) fn all_keys() -> Vec<String> {
    let keys = fields::<File>().iter().map(|&key| match table(key) {
        Some(inner) => inner.iter().map(|k| format!("{key}.{k}")).collect(),
        None => vec![key.to_owned()],
    });
    keys.flatten().collect()
}

/// The keys a struct reads, as serde's derive declares them.
pub(super) fn fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    serde_aux::serde_introspection::serde_introspect::<T>()
}

/// A whole number from `LO` to `HI`, as a key's type: the range is declared with the key. A
/// number out of range, or with a fraction, is an error that gives the number and the range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Ranged<const LO: u64, const HI: u64>(pub u64);

/// How a string that holds a number shows in a type error ([`super::error`] reads it back,
/// to suggest dropping the quotes).
pub(super) const QUOTED_NUMBER: &str = "string holding a number";

impl<'de, const LO: u64, const HI: u64> Deserialize<'de> for Ranged<LO, HI> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RangedVisitor::<LO, HI>)
    }
}

struct RangedVisitor<const LO: u64, const HI: u64>;

impl<const LO: u64, const HI: u64> RangedVisitor<LO, HI> {
    fn check<E: de::Error>(n: i128) -> Result<Ranged<LO, HI>, E> {
        let ranged = u64::try_from(n)
            .ok()
            .filter(|n| (LO..=HI).contains(n))
            .map(Ranged);
        ranged.ok_or_else(|| E::custom(format!("is {n}, but it must be between {LO} and {HI}")))
    }
}

impl<const LO: u64, const HI: u64> Visitor<'_> for RangedVisitor<LO, HI> {
    type Value = Ranged<LO, HI>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Self::check(v.into())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Self::check(v.into())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Err(E::custom(format!(
            "is {v}, but it must be a whole number between {LO} and {HI}"
        )))
    }

    /// Never puts the string in the error: it may be the token in the wrong place.
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let numeric = v.trim().parse::<i64>().is_ok();
        let found = if numeric { QUOTED_NUMBER } else { "string" };
        Err(E::invalid_type(de::Unexpected::Other(found), &self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_lists_come_from_the_structs() {
        assert_eq!(fields::<Limits>(), ["max_tree_kb", "max_tree_files"]);
        let keys = all_keys();
        assert!(keys.contains(&"source.owner".to_owned()), "{keys:?}");
        assert!(keys.contains(&"network.parallel".to_owned()), "{keys:?}");
        assert!(keys.contains(&"target_dir".to_owned()), "{keys:?}");
        assert!(!keys.contains(&"source".to_owned()), "{keys:?}");
    }
}
