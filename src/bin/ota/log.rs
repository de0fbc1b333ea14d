//! Logs on standard error, every line in one format (`warning: …`, `error: …`), in colour
//! only on a terminal, and around the progress bar when one is drawn.

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex, PoisonError};

use indicatif::ProgressBar;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// Standard error, shared by the log and the progress bar: a line is written with the bar
/// taken off the screen and drawn again after it, so neither garbles the other.
#[derive(Clone, Default)]
pub struct Stderr {
    bar: Arc<Mutex<Option<ProgressBar>>>,
    colour: bool,
}

impl Stderr {
    /// Whether lines are coloured.
    pub fn colour(&self) -> bool {
        self.colour
    }

    /// Draws `bar` under the log lines from now on.
    pub fn show(&self, bar: ProgressBar) {
        let old = self
            .bar
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(bar);
        if let Some(old) = old {
            old.finish_and_clear();
        }
    }

    /// Takes the bar off the screen for good.
    pub fn clear_bar(&self) {
        let bar = self
            .bar
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
    }

    /// Writes `bytes` (whole lines). A log that cannot be written is no reason to stop an
    /// update, so failures are dropped.
    pub fn write(&self, bytes: &[u8]) {
        let bar = self
            .bar
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let write = || {
            let _ = io::stderr().lock().write_all(bytes);
        };
        match bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }

    /// Writes the line that ends a failed command, whatever the log filter says.
    pub fn error(&self, message: &str) {
        let line = format!("{}{message}\n", Label(Level::ERROR, self.colour));
        self.write(line.as_bytes());
    }
}

/// One log line being formatted; written out whole when dropped.
pub struct Line {
    buf: Vec<u8>,
    to: Stderr,
}

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.to.write(&self.buf);
        }
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            buf: Vec::new(),
            to: self.clone(),
        }
    }
}

/// Colour only for a person at a terminal: not into pipes and files, not when `NO_COLOR`
/// is set (<https://no-color.org>), not on a `TERM=dumb` terminal.
fn colour_wanted() -> bool {
    io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}

/// Starts the log: `-q` errors only, default info, `-v` debug, `-vv` trace; `RUST_LOG`
/// overrides. Returns standard error for the progress bar and the final error line.
pub fn init(verbose: u8, quiet: bool) -> Stderr {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "ota=info",
        (false, 1) => "ota=debug",
        _ => "trace",
    };
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // At trace level the HTTP client dumps the raw bytes it sends, `Authorization` header
    // included (its debug level redacts headers). The token must never reach a log, whatever
    // RUST_LOG asks for: hold the client at debug when anything asks for trace.
    if filter
        .max_level_hint()
        .is_none_or(|level| level >= LevelFilter::TRACE)
    {
        for clamp in ["ureq=debug", "ureq_proto=debug"] {
            if let Ok(directive) = clamp.parse() {
                filter = filter.add_directive(directive);
            }
        }
    }
    let stderr = Stderr {
        bar: Arc::default(),
        colour: colour_wanted(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(stderr.clone())
        .with_ansi(stderr.colour)
        .event_format(Format)
        .init();
    stderr
}

/// `warning: message key=value`: the shape of every line on standard error.
struct Format;

impl<S, N> FormatEvent<S, N> for Format
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let colour = writer.has_ansi_escapes();
        write!(writer, "{}", Label(*event.metadata().level(), colour))?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// A line's level: `error: `, `warning: `, `info: `…, coloured when asked.
struct Label(Level, bool);

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, colour) = match self.0 {
            Level::ERROR => ("error", "1;31"),
            Level::WARN => ("warning", "1;33"),
            Level::INFO => ("info", "1;32"),
            Level::DEBUG => ("debug", "1;34"),
            Level::TRACE => ("trace", "1;35"),
        };
        match self.1 {
            true => write!(f, "\x1b[{colour}m{name}\x1b[0m: "),
            false => write!(f, "{name}: "),
        }
    }
}
