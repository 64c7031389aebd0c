//! How a run talks to its user and learns it should stop: log lines on stderr, a progress
//! display, and the flag SIGINT/SIGTERM set.

use std::io::IsTerminal;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

/// The exit status of a run stopped by SIGINT/SIGTERM (128 + SIGINT, as shells report it).
pub const INTERRUPTED_EXIT: u8 = 130;

/// Set by SIGINT/SIGTERM; long loops check it between steps.
pub fn interrupted() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| {
        let f = Arc::new(AtomicBool::new(false));
        let g = f.clone();
        let _ = ctrlc::set_handler(move || {
            if g.swap(true, std::sync::atomic::Ordering::SeqCst) {
                // A second Ctrl-C: stop now.
                std::process::exit(INTERRUPTED_EXIT as i32);
            }
        });
        f
    })
    .clone()
}

#[derive(Clone, Copy)]
pub struct Log {
    pub quiet: bool,
}

impl Log {
    pub fn info(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", msg.as_ref());
        }
    }
    pub fn warn(&self, msg: impl AsRef<str>) {
        eprintln!("warning: {}", msg.as_ref());
    }
}

/// A progress display: a bar on a terminal, periodic plain lines otherwise, nothing when quiet.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    plain: bool,
    total: u64,
    label: String,
    start: std::time::Instant,
    last: std::time::Instant,
}

impl Progress {
    pub fn new(quiet: bool, total: u64, label: &str, unit: &str) -> Self {
        let tty = std::io::stderr().is_terminal();
        let bar = (!quiet && tty).then(|| {
            let b = indicatif::ProgressBar::new(total);
            let style = indicatif::ProgressStyle::with_template(&format!(
                "{label} {{bar:40}} {{pos}}/{{len}} {unit} [{{elapsed_precise}}<{{eta_precise}}, {{per_sec}}]"
            ))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            b.set_style(style);
            b
        });
        let now = std::time::Instant::now();
        Self {
            bar,
            plain: !quiet && !tty,
            total,
            label: label.to_string(),
            start: now,
            last: now,
        }
    }

    pub fn set(&mut self, done: u64) {
        if let Some(b) = &self.bar {
            b.set_position(done);
        } else if self.plain && (self.last.elapsed().as_secs_f64() >= 10.0 || done == self.total) {
            self.last = std::time::Instant::now();
            let rate = done as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
            let eta = if rate > 0.0 {
                (self.total - done.min(self.total)) as f64 / rate
            } else {
                0.0
            };
            eprintln!(
                "{} {done}/{} ({rate:.1}/s, eta {eta:.0}s)",
                self.label, self.total
            );
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
