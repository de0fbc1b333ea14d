//! A status LED through its sysfs folder (`/sys/class/leds/NAME`): `trigger` lists the
//! kernel's triggers with the current one in brackets (`none [mmc0] timer`), `timer`
//! blinks it with `delay_on`/`delay_off` in milliseconds, and `none` leaves it to
//! `brightness` (0 to `max_brightness`).

use std::fs;
use std::path::{Path, PathBuf};

use super::Stage;

/// How the LED looks.
enum Pattern {
    /// Blinking: milliseconds on, milliseconds off.
    Blink(u32, u32),
    /// Lit, steadily.
    On,
}

impl Pattern {
    fn of(stage: Stage) -> Pattern {
        match stage {
            Stage::Checking => Pattern::Blink(500, 500),
            Stage::Downloading => Pattern::Blink(100, 100),
            Stage::Applying => Pattern::On,
            Stage::Trial => Pattern::Blink(50, 950),
            Stage::Error => Pattern::Blink(1000, 200),
        }
    }
}

/// An LED taken over for a command: what it showed before, to give it back.
pub(super) struct Led {
    dir: PathBuf,
    trigger: String,
    brightness: String,
    max_brightness: String,
    /// Whether the kernel offers the `timer` trigger (else a blink shows as steady light).
    timer: bool,
}

impl Led {
    /// Reads the LED's current trigger and brightness.
    pub(super) fn take(dir: &Path) -> Result<Led, String> {
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read_to_string(&path)
                .map(|text| text.trim().to_owned())
                .map_err(|e| format!("cannot read the LED's {} ({e})", path.display()))
        };
        let triggers = read("trigger")?;
        let Some(trigger) = current(&triggers) else {
            return Err(format!(
                "the LED's {} has no current trigger in brackets (is {:?} an LED's sysfs \
                 folder?)",
                dir.join("trigger").display(),
                dir.display()
            ));
        };
        let timer = triggers
            .split_whitespace()
            .any(|t| t.trim_matches(['[', ']']) == "timer");
        Ok(Led {
            dir: dir.to_owned(),
            trigger: trigger.to_owned(),
            brightness: read("brightness")?,
            max_brightness: read("max_brightness").unwrap_or_else(|_| "1".to_owned()),
            timer,
        })
    }

    /// Shows `stage`'s pattern.
    pub(super) fn show(&self, stage: Stage) {
        match Pattern::of(stage) {
            Pattern::Blink(on, off) if self.timer => {
                self.write("trigger", "timer");
                self.write("delay_on", &on.to_string());
                self.write("delay_off", &off.to_string());
            }
            Pattern::Blink(..) | Pattern::On => {
                self.write("trigger", "none");
                self.write("brightness", &self.max_brightness);
            }
        }
    }

    /// Gives the LED back its trigger, and its brightness when it had none (with a trigger,
    /// writing the brightness would turn the trigger off).
    pub(super) fn restore(self) {
        self.write("trigger", &self.trigger);
        if self.trigger == "none" {
            self.write("brightness", &self.brightness);
        }
    }

    fn write(&self, name: &str, value: &str) {
        let path = self.dir.join(name);
        if let Err(e) = fs::write(&path, value) {
            tracing::warn!(
                "could not set the LED's {} to {value:?}: {e}",
                path.display()
            );
        }
    }
}

/// The current trigger: the one in brackets.
fn current(triggers: &str) -> Option<&str> {
    let word = triggers.split_whitespace().find(|t| t.starts_with('['))?;
    word.strip_prefix('[')?.strip_suffix(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_trigger_is_the_one_in_brackets() {
        assert_eq!(current("none [mmc0] timer heartbeat"), Some("mmc0"));
        assert_eq!(current("[none] timer"), Some("none"));
        assert_eq!(current("none timer"), None);
    }
}
