//! The original MicroPython updater's flat `ota_config.json`, mapped onto the new format.
//!
//! Each key of the original is one line of [`Original`]: a key ota acts on, with the
//! new-format key it sets; a key whose value ota translates (`mapped`, handled in
//! [`Original::into_file`]), with how the new format writes it; or a key ota does not act on,
//! with why (the warning). Switching a key from "warn" to "act" is moving its line from one
//! list to another.

use super::ConfigError;
use super::error::closest;
use super::file::{File, MAX_BYTES, Ranged};

/// A key that ota does not act on: only whether it was written (even as `null`) matters.
#[derive(Debug, Default)]
struct Seen(bool);

impl<'de> serde::Deserialize<'de> for Seen {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Seen, D::Error> {
        // A `Value`, not serde's `IgnoredAny`: that would count as an ignored (unknown) key.
        serde_json::Value::deserialize(deserializer).map(|_| Seen(true))
    }
}

macro_rules! original_format {
    (
        acted { $($key:ident: $ty:ty => $($path:ident).+,)* }
        mapped { $($mapped:ident: $mapped_ty:ty => $new_way:expr,)* }
        unused { $($($unused:ident)|+: $why:expr,)* }
    ) => {
        /// The original's keys. Comment keys (`_…`, `//…`) are not fields: serde skips them
        /// and `read` does not count them as unknown.
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(default)]
        pub(super) struct Original {
            $($key: Option<$ty>,)*
            $($mapped: Option<$mapped_ty>,)*
            $($($unused: Seen,)+)*
        }

        impl Original {
            /// Sets the new format's keys from the acted-on keys; returns a warning for each
            /// key ota does not act on.
            fn fill(self, file: &mut File) -> Vec<String> {
                $(if let Some(value) = self.$key {
                    file.$($path).+ = Some(value);
                })*
                let unused = [$($((stringify!($unused), self.$unused.0, $why),)+)*];
                let unused = unused.into_iter().filter(|(_, seen, _)| *seen);
                unused.map(|(key, _, why)| format!("`{key}` is not used: {why}")).collect()
            }

            /// The new format's key for `key`, if it is a key of the original ota acts on.
            pub(super) fn new_name(key: &str) -> Option<&'static str> {
                [$((stringify!($key), stringify!($($path).+)),)*]
                    .into_iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, new)| new)
            }

            /// How the new format writes what `key` of the original does, if `key` is one
            /// whose value ota translates.
            pub(super) fn new_way(key: &str) -> Option<&'static str> {
                [$((stringify!($mapped), $new_way),)*]
                    .into_iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, way)| way)
            }

            /// Why ota does not act on `key`, if it is such a key of the original.
            pub(super) fn why_unused(key: &str) -> Option<&'static str> {
                let unused = [$($((stringify!($unused), $why),)+)*];
                unused.into_iter().find(|(k, _)| *k == key).map(|(_, why)| why)
            }
        }
    };
}

original_format! {
    acted {
        target_dir: String => target_dir,
        owner: String => source.owner,
        repo: String => source.repo,
        token: String => source.token,
        manifest_key: String => source.manifest_key,
        channel: String => channel,
        branch: String => branch,
        allow: Vec<String> => allow,
        ignore: Vec<String> => ignore,
        connect_timeout_sec: Ranged<1, 3600> => network.connect_timeout_sec,
        http_timeout_sec: Ranged<1, 3600> => network.http_timeout_sec,
        retries: Ranged<0, 100> => network.retries,
        // After `retries`, so that it wins when both are set.
        http_retries: Ranged<0, 100> => network.retries,
        backoff_sec: Ranged<0, 3600> => network.backoff_sec,
        max_backoff_sec: Ranged<0, 3600> => network.max_backoff_sec,
        user_agent: String => network.user_agent,
        max_tree_size_kb: Ranged<1, 32_768> => limits.max_tree_kb,
        max_tree_files: Ranged<1, 10_000_000> => limits.max_tree_files,
        min_free_storage: Ranged<0, MAX_BYTES> => guards.min_free_storage,
        min_free_mem: Ranged<0, MAX_BYTES> => guards.min_free_mem,
        min_battery_percent: Ranged<0, 100> => guards.min_battery_percent,
        min_update_interval_sec: Ranged<0, 31_536_000> => schedule.min_interval_sec,
        update_window_start_hour: Ranged<0, 23> => schedule.window_start_hour,
        update_window_end_hour: Ranged<0, 24> => schedule.window_end_hour,
        rollout_percent: Ranged<0, 100> => schedule.rollout_percent,
        max_crashes_before_delay: Ranged<0, 1000> => schedule.max_crashes_before_delay,
        error_history_limit: Ranged<0, 1000> => report.error_history_limit,
        watchdog_timeout_ms: Ranged<100, 3_600_000> => device.watchdog_timeout_ms,
    }
    mapped {
        reset_mode: String => "`reboot = true` under `[after_update]` for \"hard\", the \
            application's systemd units in `restart` under `[after_update]` for \"soft\", \
            nothing for \"none\"",
    }
    unused {
        chunk: "ota streams every download through its own fixed-size buffer",
        stage_dir: "ota stages under state_dir (`<target_dir>/.ota/stage` by default) so that \
            renames stay on one filesystem",
        backup_dir: "ota keeps the displaced files under state_dir (`<target_dir>/.ota/backup` \
            by default), on the target's filesystem",
        force: "run `ota update --force` to reinstall",
        debug: "run ota with `-v` or set `RUST_LOG=ota=debug`",
        ssid: "ota uses the system's network connection; configure Wi-Fi in the operating system",
        password: "ota uses the system's network connection; configure Wi-Fi in the operating \
            system and remove the password from this file",
        cellular_enabled | lora_enabled: "ota uses the system's network connection, whatever \
            the link; configure the modem or the radio in the operating system",
        battery_adc_pin | battery_divider_ratio | battery_v_min | battery_v_max: "ota reads no \
            hardware pins; it reads the battery level from the operating system \
            (/sys/class/power_supply) for `min_battery_percent`",
        min_cpu_mhz: "ota does not set the CPU clock; the operating system manages it",
        enable_delta_updates: "ota has no binary deltas yet (a later version adds them); it \
            already downloads only the files that changed",
        delete_patterns: "ota deletes the files it installed that a new release no longer \
            has, and never touches files it did not install; remove other files yourself",
        status_led_pin: "ota reads no hardware pins; name the LED's sysfs folder in `led` \
            under `[device]` (new format, e.g. \"/sys/class/leds/ACT\") to have ota show its \
            phase on it",
        max_update_attempts: "ota retries each request `retries` times; run it again later \
            (from a timer) to retry a whole update",
        retry_backoff_sec | file_backoff_sec: "every request, downloads included, backs off \
            from `backoff_sec` up to `max_backoff_sec`",
        file_retries: "each download is retried `retries` times like every request",
        log_file: "ota logs to standard error; redirect it, or read it from the system journal",
        progress_callback: "ota logs its progress (more with `-v`)",
    }
}

impl Original {
    /// The new-format file this one means, and a warning for each key ota does not act on.
    /// `target_dir` defaults to the config's folder (the caller's job). A leading `/` in a
    /// pattern is dropped, as the original does: there, `/lib/` is the folder `lib`.
    pub(super) fn into_file(mut self) -> Result<(File, Vec<String>), ConfigError> {
        let mut file = File::default();
        let reset_mode = self.reset_mode.take();
        let mut warnings = self.fill(&mut file);
        if let Some(warning) = reset(reset_mode.as_deref(), &mut file)? {
            warnings.push(warning);
        }
        for list in [&mut file.allow, &mut file.ignore].into_iter().flatten() {
            for pattern in list.iter_mut() {
                if let Some(relative) = pattern.strip_prefix('/') {
                    *pattern = relative.trim_start_matches('/').to_owned();
                }
            }
        }
        Ok((file, warnings))
    }
}

/// The original's `reset_mode`, what it did after an update: `hard` reset the board (here:
/// reboot), `soft` restarted the MicroPython interpreter, so the application (here: its
/// systemd units, which ota cannot guess: a warning says how to name them), `none` nothing.
fn reset(mode: Option<&str>, file: &mut File) -> Result<Option<String>, ConfigError> {
    match mode {
        None | Some("none") => Ok(None),
        Some("hard") => {
            file.after_update.reboot = Some(true);
            Ok(None)
        }
        Some("soft") => Ok(Some(
            "`reset_mode` \"soft\" restarted the application in the original updater, but ota \
             cannot tell which systemd units run it, so nothing is restarted after an update: \
             move to the new format and list them in `restart` under `[after_update]` (e.g. \
             `restart = [\"app.service\"]`), or set `reset_mode` to \"hard\" to reboot"
                .to_owned(),
        )),
        Some(other) => {
            let modes = ["hard", "soft", "none"];
            let suggestion = closest(other, &modes)
                .map(|c| format!("; did you mean \"{c}\"?"))
                .unwrap_or_default();
            Err(ConfigError::invalid(
                "reset_mode",
                format!(
                    "`reset_mode` is {other:?}, but it must be \"hard\" (reboot after an \
                     update), \"soft\" (restart the application: see `[after_update]` in the \
                     new format) or \"none\"{suggestion}"
                ),
            ))
        }
    }
}
