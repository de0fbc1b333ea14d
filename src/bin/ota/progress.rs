//! An update's progress for people: a bar on a terminal (files, bytes, rate, time left),
//! otherwise a log line every [`EVERY`], so that a long install is never silent.

use std::io::IsTerminal;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ota::Progress;

use crate::log::Stderr;
use crate::print::bytes;

/// How often a line is logged when there is no terminal to draw a bar on.
const EVERY: Duration = Duration::from_secs(10);

/// The callback for [`ota::Updater::on_progress`]. `quiet` (`-q`) hides the bar; the log
/// lines obey the log level.
pub fn reporter(stderr: Stderr, quiet: bool) -> impl Fn(Progress) + Send + Sync + 'static {
    let bar = !quiet && std::io::stderr().is_terminal();
    let shown = Mutex::new(Shown {
        started: None,
        logged: Instant::now(),
        bar: None,
    });
    move |p: Progress| {
        if p.files_total == 0 {
            return;
        }
        let mut shown = shown.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let started = match shown.started {
            Some(started) => started,
            None => {
                tracing::info!(
                    "downloading {} files, {}",
                    p.files_total,
                    bytes(p.bytes_total)
                );
                shown.started = Some(now);
                shown.logged = now;
                if bar {
                    let new = new_bar(p.bytes_total, stderr.colour());
                    stderr.show(new.clone());
                    shown.bar = Some(new);
                }
                now
            }
        };
        if let Some(bar) = &shown.bar {
            bar.set_message(format!("{}/{} files", p.files_done, p.files_total));
            bar.set_position(p.bytes_done);
            if p.files_done == p.files_total {
                stderr.clear_bar();
                shown.bar = None;
            }
        } else if !bar && now.duration_since(shown.logged) >= EVERY && p.files_done < p.files_total
        {
            shown.logged = now;
            tracing::info!("{}", line(&p, now.duration_since(started)));
        }
    }
}

/// What the reporter has shown so far.
struct Shown {
    /// When the first report came.
    started: Option<Instant>,
    /// When the last line was logged.
    logged: Instant,
    /// The bar, while it is drawn.
    bar: Option<ProgressBar>,
}

fn new_bar(total: u64, colour: bool) -> ProgressBar {
    const PARTS: &str =
        "{msg}, {decimal_bytes} of {decimal_total_bytes}, {decimal_bytes_per_sec}, {eta} left";
    let template = match colour {
        true => format!("{{bar:30.cyan/blue}} {PARTS}"),
        false => format!("{{bar:30}} {PARTS}"),
    };
    let style = ProgressStyle::with_template(&template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()).with_style(style)
}

/// `downloaded 120/6477 files, 12.0 MB of 45.0 MB (26%), 1.2 MB/s, about 28s left`.
fn line(p: &Progress, elapsed: Duration) -> String {
    let percent = match p.bytes_total {
        0 => 100,
        total => p.bytes_done.saturating_mul(100) / total,
    };
    let rate = p.bytes_done as f64 / elapsed.as_secs_f64().max(0.001);
    let left = match rate > 0.0 {
        true => {
            let secs = p.bytes_total.saturating_sub(p.bytes_done) as f64 / rate;
            format!(", about {}s left", secs.ceil() as u64)
        }
        false => String::new(),
    };
    format!(
        "downloaded {}/{} files, {} of {} ({percent}%), {}/s{left}",
        p.files_done,
        p.files_total,
        bytes(p.bytes_done),
        bytes(p.bytes_total),
        bytes(rate as u64),
    )
}
