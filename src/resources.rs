//! The device's resources: free memory (`/proc/meminfo`) and the battery
//! (`/sys/class/power_supply`), read before an update, and the `[guards]` that refuse one
//! when they run low. (Free storage is the target filesystem's, read through the `Fs` seam
//! like the plan's own space check.)
//!
//! The procfs and sysfs roots are injectable ([`Resources::new`]) so that tests point them
//! at a folder standing in for `/proc` and `/sys`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::Guards;

/// Where the device's resources are read: `/proc` and `/sys` on a real device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resources {
    proc_root: PathBuf,
    sys_root: PathBuf,
}

impl Default for Resources {
    fn default() -> Self {
        Resources::system()
    }
}

/// The battery as the operating system reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Battery {
    /// Charge, 0–100 (the lowest, when the device has several batteries).
    pub percent: u8,
    /// Whether a mains or USB supply is online (then the battery guard does not apply).
    pub on_mains: bool,
}

/// What [`Resources`] read at one moment (`None`: not known, or no battery).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// Bytes free on the target's filesystem (for an unprivileged writer).
    pub free_storage: Option<u64>,
    /// `MemAvailable` of `/proc/meminfo`, in bytes.
    pub free_memory: Option<u64>,
    /// The battery, if the device has one.
    pub battery: Option<Battery>,
}

/// An update refused by a `[guards]` limit. Nothing was changed, and the refusal is not a
/// failure: it does not count toward the consecutive failures of `last_error.json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GuardError {
    /// Free storage below the update's need plus `min_free_storage`.
    #[error(
        "update deferred, nothing was changed: the target's filesystem has {free} bytes free, \
         but the update needs {needed} and [guards] min_free_storage keeps {min} more free \
         ({} in all). Free some space (or lower min_free_storage); the next `ota update` \
         tries again",
        needed.saturating_add(*min)
    )]
    LowStorage {
        /// Bytes free.
        free: u64,
        /// Bytes the update needs (the plan's `space_needed`).
        needed: u64,
        /// `min_free_storage`.
        min: u64,
    },
    /// `MemAvailable` below `min_free_mem`.
    #[error(
        "update deferred, nothing was changed: {available} bytes of memory are available \
         (MemAvailable), below [guards] min_free_mem = {min}. The next `ota update` tries \
         again; stop what uses the memory (or lower min_free_mem) to update sooner"
    )]
    LowMemory {
        /// `MemAvailable`, in bytes.
        available: u64,
        /// `min_free_mem`.
        min: u64,
    },
    /// The battery below `min_battery_percent`, not on mains power.
    #[error(
        "update deferred, nothing was changed: the battery is at {percent}% and not charging \
         from mains or USB, below [guards] min_battery_percent = {min}%. Connect power (or \
         lower min_battery_percent); the next `ota update` tries again"
    )]
    LowBattery {
        /// The battery's charge.
        percent: u8,
        /// `min_battery_percent`.
        min: u8,
    },
}

impl GuardError {
    /// The stable kind: `low_storage`, `low_memory`, `low_battery`.
    pub fn kind(&self) -> &'static str {
        match self {
            GuardError::LowStorage { .. } => "low_storage",
            GuardError::LowMemory { .. } => "low_memory",
            GuardError::LowBattery { .. } => "low_battery",
        }
    }
}

impl Resources {
    /// The real device: `/proc` and `/sys`.
    pub fn system() -> Resources {
        Resources::new("/proc", "/sys")
    }

    /// Resources read under `proc_root` (for `meminfo`) and `sys_root` (for
    /// `class/power_supply`): a test's folders standing in for `/proc` and `/sys`.
    pub fn new(proc_root: impl Into<PathBuf>, sys_root: impl Into<PathBuf>) -> Resources {
        Resources {
            proc_root: proc_root.into(),
            sys_root: sys_root.into(),
        }
    }

    /// `MemAvailable`, in bytes; `None` when `/proc/meminfo` has no such line.
    pub fn free_memory(&self) -> io::Result<Option<u64>> {
        let text = fs::read_to_string(self.proc_root.join("meminfo"))?;
        Ok(mem_available(&text))
    }

    /// The battery: `None` without one. A device with no `power_supply` folder has none.
    pub fn battery(&self) -> io::Result<Option<Battery>> {
        let dir = self.sys_root.join("class/power_supply");
        let entries = match fs::read_dir(&dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            other => other?,
        };
        let mut supplies = Vec::new();
        for entry in entries {
            // Each supply is a symlink to its device's folder: follow it.
            supplies.push(Supply::read(&entry?.path()));
        }
        Ok(battery_of(&supplies))
    }

    /// Free memory and the battery now (free storage is the caller's: `None` here). What
    /// cannot be read is `None`, with a warning.
    pub fn snapshot(&self) -> Snapshot {
        let free_memory = self.free_memory().unwrap_or_else(|e| {
            tracing::warn!(
                "cannot read {}: {e}",
                self.proc_root.join("meminfo").display()
            );
            None
        });
        let battery = self.battery().unwrap_or_else(|e| {
            let dir = self.sys_root.join("class/power_supply");
            tracing::warn!("cannot read {}: {e}", dir.display());
            None
        });
        Snapshot {
            free_storage: None,
            free_memory,
            battery,
        }
    }

    /// Checks free memory and the battery against `guards` (before anything is
    /// downloaded). A value that cannot be read does not refuse the update (a warning says
    /// so): the guard cannot judge it.
    pub fn check_device(&self, guards: &Guards) -> Result<(), GuardError> {
        if guards.min_free_mem == 0 && guards.min_battery_percent == 0 {
            return Ok(());
        }
        let now = self.snapshot();
        if guards.min_free_mem > 0 {
            match now.free_memory {
                Some(available) if available < guards.min_free_mem => {
                    return Err(GuardError::LowMemory {
                        available,
                        min: guards.min_free_mem,
                    });
                }
                Some(_) => {}
                None => tracing::warn!("MemAvailable is unknown: min_free_mem not checked"),
            }
        }
        if let Some(b) = now.battery
            && !b.on_mains
            && b.percent < guards.min_battery_percent
        {
            return Err(GuardError::LowBattery {
                percent: b.percent,
                min: guards.min_battery_percent,
            });
        }
        Ok(())
    }
}

/// Checks the free storage against the update's need and `min_free_storage`.
pub(crate) fn check_storage(guards: &Guards, free: u64, needed: u64) -> Result<(), GuardError> {
    let min = guards.min_free_storage;
    match min > 0 && free < needed.saturating_add(min) {
        true => Err(GuardError::LowStorage { free, needed, min }),
        false => Ok(()),
    }
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes (the kernel writes it in KiB).
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?;
    let mut words = line.split_whitespace();
    let number: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => number.checked_mul(1024),
        None => Some(number),
        Some(_) => None,
    }
}

/// One folder of `/sys/class/power_supply`, as far as the guards care.
#[derive(Debug, Default, PartialEq, Eq)]
struct Supply {
    /// `type`: `Battery`, `Mains`, `USB`, `UPS`…
    kind: String,
    /// `online` (mains, USB): 1 when power comes in.
    online: bool,
    /// `capacity` (battery): 0–100.
    capacity: Option<u8>,
    /// `present` is 0 (a battery slot with no battery in it).
    absent: bool,
    /// `scope` is `Device`: the battery of a peripheral (a wireless mouse), not the system's.
    peripheral: bool,
}

impl Supply {
    /// Reads the attributes of the supply folder `dir`; a missing or unreadable one is
    /// left at its default (the supply then does not count).
    fn read(dir: &Path) -> Supply {
        let attr = |name: &str| {
            fs::read_to_string(dir.join(name))
                .ok()
                .map(|s| s.trim().to_owned())
        };
        Supply {
            kind: attr("type").unwrap_or_default(),
            online: attr("online").is_some_and(|v| v == "1"),
            capacity: attr("capacity")
                .and_then(|v| v.parse::<u8>().ok())
                .map(|c| c.min(100)),
            absent: attr("present").is_some_and(|v| v == "0"),
            peripheral: attr("scope").is_some_and(|v| v == "Device"),
        }
    }

    /// Mains or USB power (the kernel names USB chargers `USB` or `USB_…`).
    fn is_mains(&self) -> bool {
        self.kind == "Mains" || self.kind == "USB" || self.kind.starts_with("USB_")
    }
}

/// The system battery among `supplies` (the lowest charge of several), and whether mains
/// power is online.
fn battery_of(supplies: &[Supply]) -> Option<Battery> {
    let percent = supplies
        .iter()
        .filter(|s| s.kind == "Battery" && !s.absent && !s.peripheral)
        .filter_map(|s| s.capacity)
        .min()?;
    let on_mains = supplies.iter().any(|s| s.is_mains() && s.online);
    Some(Battery { percent, on_mains })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:        3884232 kB\nMemFree:          182652 kB\n\
                           MemAvailable:    2010932 kB\nBuffers:          101476 kB\n";

    #[test]
    fn mem_available_is_read_in_bytes() {
        assert_eq!(mem_available(MEMINFO), Some(2_010_932 * 1024));
        assert_eq!(mem_available("MemAvailable: 12\n"), Some(12));
        // Kernels before 3.14 have no MemAvailable; a garbled line is unknown, not zero.
        assert_eq!(mem_available("MemTotal: 1 kB\nMemFree: 1 kB\n"), None);
        assert_eq!(mem_available("MemAvailable: lots kB\n"), None);
        assert_eq!(mem_available("MemAvailable: 1 MB\n"), None);
        assert_eq!(mem_available("MemAvailable: 99999999999999999 kB\n"), None);
    }

    /// Writes a supply folder under `root/class/power_supply/NAME` with `attrs`.
    fn supply(root: &Path, name: &str, attrs: &[(&str, &str)]) {
        let dir = root.join("class/power_supply").join(name);
        fs::create_dir_all(&dir).unwrap();
        for (attr, value) in attrs {
            fs::write(dir.join(attr), format!("{value}\n")).unwrap();
        }
    }

    #[test]
    fn battery_and_mains_are_read_from_power_supply_folders() {
        let sys = tempfile::tempdir().unwrap();
        let res = Resources::new(sys.path(), sys.path());
        assert_eq!(res.battery().unwrap(), None, "no power_supply folder");
        supply(sys.path(), "AC", &[("type", "Mains"), ("online", "0")]);
        assert_eq!(res.battery().unwrap(), None, "mains only: no battery");
        supply(
            sys.path(),
            "BAT0",
            &[("type", "Battery"), ("capacity", "37")],
        );
        let on_battery = Battery {
            percent: 37,
            on_mains: false,
        };
        assert_eq!(res.battery().unwrap(), Some(on_battery));
        // A second battery: the lowest counts; an empty slot and a mouse's battery do not.
        supply(
            sys.path(),
            "BAT1",
            &[("type", "Battery"), ("capacity", "90")],
        );
        let slot = [("type", "Battery"), ("present", "0"), ("capacity", "0")];
        supply(sys.path(), "BAT2", &slot);
        let mouse = [("type", "Battery"), ("scope", "Device"), ("capacity", "5")];
        supply(sys.path(), "hid-mouse", &mouse);
        assert_eq!(res.battery().unwrap(), Some(on_battery));
        // A USB charger online means mains power.
        supply(sys.path(), "usb", &[("type", "USB"), ("online", "1")]);
        let charging = Battery {
            percent: 37,
            on_mains: true,
        };
        assert_eq!(res.battery().unwrap(), Some(charging));
    }

    #[test]
    fn guards_refuse_with_the_numbers() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("meminfo"), MEMINFO).unwrap();
        supply(
            dir.path(),
            "BAT0",
            &[("type", "Battery"), ("capacity", "15")],
        );
        let res = Resources::new(dir.path(), dir.path());
        let guards = |mem, battery| Guards {
            min_free_storage: 0,
            min_free_mem: mem,
            min_battery_percent: battery,
        };
        assert_eq!(res.check_device(&guards(0, 0)), Ok(()));
        assert_eq!(res.check_device(&guards(2_010_932 * 1024, 15)), Ok(()));
        let low_mem = res.check_device(&guards(3 << 30, 0)).unwrap_err();
        assert_eq!(low_mem.kind(), "low_memory");
        let text = low_mem.to_string();
        assert!(
            text.contains("2059194368 bytes") && text.contains("3221225472"),
            "{text}"
        );
        let low_battery = res.check_device(&guards(0, 20)).unwrap_err();
        assert_eq!(low_battery.kind(), "low_battery");
        assert!(low_battery.to_string().contains("15%"), "{low_battery}");
        // On mains power the battery guard does not apply.
        supply(dir.path(), "AC", &[("type", "Mains"), ("online", "1")]);
        assert_eq!(res.check_device(&guards(0, 20)), Ok(()));

        let storage = Guards {
            min_free_storage: 1000,
            ..guards(0, 0)
        };
        assert_eq!(check_storage(&storage, 6000, 5000), Ok(()));
        let low = check_storage(&storage, 5999, 5000).unwrap_err();
        assert_eq!(low.kind(), "low_storage");
        assert!(low.to_string().contains("5999 bytes free"), "{low}");
        assert_eq!(check_storage(&guards(0, 0), 0, 5000), Ok(()));
    }
}
