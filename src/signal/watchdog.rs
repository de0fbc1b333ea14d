//! A hardware watchdog through the Linux watchdog device API: opening the device starts
//! it, any write feeds it, and writing the magic character `V` before closing stops it (a
//! process that dies without it leaves the watchdog running, and the device reboots).
//!
//! ota does not set the timeout (that takes an ioctl): the system's own setting holds, and
//! `watchdog_timeout_ms` only tells ota how often to feed it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What a feed writes. Anything but `V` will do.
const FEED: &[u8] = b"\0";

/// The magic character: the close that follows it stops the watchdog.
const MAGIC_CLOSE: &[u8] = b"V";

/// An open watchdog device.
pub(super) struct Watchdog {
    file: File,
    path: PathBuf,
}

impl Watchdog {
    /// Opens (so starts) the watchdog at `path`; never creates a file there.
    pub(super) fn open(path: &Path) -> Result<Watchdog, String> {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| format!("cannot open the watchdog {} ({e})", path.display()))?;
        let path = path.to_owned();
        Ok(Watchdog { file, path })
    }

    /// Feeds it; a failure only warns (the device may reboot: that is the watchdog's job).
    pub(super) fn feed(&mut self) {
        if let Err(e) = self.file.write_all(FEED) {
            tracing::warn!("could not feed the watchdog {}: {e}", self.path.display());
        }
    }

    /// Writes the magic character and closes it, so that it stops and does not fire.
    pub(super) fn close(mut self) {
        if let Err(e) = self
            .file
            .write_all(MAGIC_CLOSE)
            .and_then(|()| self.file.flush())
        {
            tracing::warn!(
                "could not stop the watchdog {} ({e}): it may reboot the device unless \
                 something else feeds it",
                self.path.display()
            );
        }
    }
}
