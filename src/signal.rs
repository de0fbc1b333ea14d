//! What ota is doing, told to the device: systemd (through `NOTIFY_SOCKET`), a hardware
//! watchdog and a status LED. Each is optional and each failure only warns: a device that
//! cannot be told must still be updated.
//!
//! The updater holds one [`Signals`], built from the config and the environment. Each
//! command calls [`Signals::begin`] and keeps the [`Session`] it returns for as long as it
//! runs: the watchdog is open and the LED shows the [`Stage`] meanwhile; when the session
//! ends (dropped, whatever the outcome), the watchdog is closed with its magic character
//! and the LED is given back its own trigger and brightness. In between the updater says
//! where it is ([`Signals::stage`]) and that it still makes progress ([`Signals::alive`],
//! from the download threads), which feeds the watchdogs no more often than they need.

mod led;
mod notify;
mod watchdog;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::config::DeviceConfig;

use led::Led;
use notify::Notify;
use watchdog::Watchdog;

/// How often a hardware watchdog is fed when `watchdog_timeout_ms` does not say.
const DEFAULT_FEED_INTERVAL: Duration = Duration::from_secs(1);

/// Where a command is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Asking the channel what is current (and recovering first).
    Checking,
    /// Staging the new release's files.
    Downloading,
    /// Running `[before_update]` and committing the staged files.
    Applying,
    /// The `[after_update]` actions and the health command of a new release.
    Trial,
    /// The command failed.
    Error,
}

impl Stage {
    /// The text systemd shows as the unit's status (`systemctl status`).
    fn status(self) -> &'static str {
        match self {
            Stage::Checking => "checking for a new release",
            Stage::Downloading => "downloading a new release",
            Stage::Applying => "applying a new release",
            Stage::Trial => "trying the new release",
            Stage::Error => "the last command failed (see the log and `ota status`)",
        }
    }
}

/// The STATUS= text once a command ended well.
const IDLE: &str = "idle";

/// The device's signals, as configured; see the module's doc.
pub(crate) struct Signals {
    config: DeviceConfig,
    notify: Option<Notify>,
    /// READY=1 is sent once, at the first command.
    ready: AtomicBool,
    live: Mutex<Live>,
}

/// What a running command holds open.
#[derive(Default)]
struct Live {
    watchdog: Option<Watchdog>,
    led: Option<Led>,
    failed: bool,
    /// When each watchdog was last fed: systemd's, the hardware one.
    notify_fed: Option<Instant>,
    watchdog_fed: Option<Instant>,
}

impl Signals {
    /// The signals of `config`'s `[device]`, and systemd's when `NOTIFY_SOCKET` is set.
    pub(crate) fn new(config: &DeviceConfig) -> Signals {
        Signals {
            config: config.clone(),
            notify: Notify::from_env(),
            ready: AtomicBool::new(false),
            live: Mutex::new(Live::default()),
        }
    }

    fn live(&self) -> MutexGuard<'_, Live> {
        // A poisoned lock only means a download thread panicked; the handles are still good.
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a command: opens the watchdog, takes the LED, tells systemd it is ready.
    pub(crate) fn begin(&self) -> Session<'_> {
        if let Some(notify) = &self.notify
            && !self.ready.swap(true, Ordering::Relaxed)
        {
            notify.send("READY=1");
        }
        let mut live = self.live();
        *live = Live::default();
        if let Some(path) = &self.config.watchdog_device {
            live.watchdog = Watchdog::open(path)
                .inspect_err(|e| tracing::warn!("{e}; ota runs without feeding it"))
                .ok();
        }
        if let Some(dir) = &self.config.led {
            live.led = Led::take(dir)
                .inspect_err(|e| tracing::warn!("{e}; ota runs without showing its phase"))
                .ok();
        }
        drop(live);
        self.stage(Stage::Checking);
        Session { signals: self }
    }

    /// The command is now at `stage` (a change of stage is progress too).
    pub(crate) fn stage(&self, stage: Stage) {
        let mut live = self.live();
        live.failed |= stage == Stage::Error;
        if let Some(notify) = &self.notify {
            notify.send(&format!("STATUS={}", stage.status()));
        }
        if let Some(led) = &live.led {
            led.show(stage);
        }
        self.feed(&mut live, true);
    }

    /// The command made progress: feeds each watchdog whose interval has passed.
    pub(crate) fn alive(&self) {
        let mut live = self.live();
        self.feed(&mut live, false);
    }

    fn feed(&self, live: &mut Live, now: bool) {
        let due = |last: Option<Instant>, every: Duration| {
            now || last.is_none_or(|last| last.elapsed() >= every)
        };
        if let Some(notify) = &self.notify
            && let Some(every) = notify.keepalive_interval()
            && due(live.notify_fed, every)
        {
            notify.send("WATCHDOG=1");
            live.notify_fed = Some(Instant::now());
        }
        let every = (self.config.watchdog_timeout).map_or(DEFAULT_FEED_INTERVAL, |t| t / 3);
        if due(live.watchdog_fed, every)
            && let Some(watchdog) = &mut live.watchdog
        {
            watchdog.feed();
            live.watchdog_fed = Some(Instant::now());
        }
    }

    /// Ends a command: closes the watchdog with its magic character (so that it does not
    /// fire), gives the LED back, and tells systemd the command is over.
    fn end(&self) {
        let mut live = self.live();
        if let Some(watchdog) = live.watchdog.take() {
            watchdog.close();
        }
        if let Some(led) = live.led.take() {
            led.restore();
        }
        if let Some(notify) = &self.notify
            && !live.failed
        {
            notify.send(&format!("STATUS={IDLE}"));
        }
    }
}

/// A command under way; ends the signals' session when dropped.
pub(crate) struct Session<'a> {
    signals: &'a Signals,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.signals.end();
    }
}
