//! The subcommands: argument handling, logging and output around the library's pieces.

pub mod bench;
pub mod eval;
pub mod misc;
pub mod shard;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// Exit codes (documented in the README).
pub mod exit {
    pub const RUNTIME: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const INPUT: u8 = 3;
    pub const CHECKPOINT: u8 = 4;
    pub const INTERRUPTED: u8 = 130;
}

/// An error that carries its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
pub struct Failure {
    pub code: u8,
    pub msg: String,
}

pub fn fail(code: u8, msg: impl Into<String>) -> anyhow::Error {
    Failure {
        code,
        msg: msg.into(),
    }
    .into()
}

/// The exit code for an error chain.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return f.code;
        }
        if cause.is::<crate::checkpoint::Error>() {
            return exit::CHECKPOINT;
        }
        if cause.is::<crate::dataset::Error>()
            || cause.is::<crate::preprocess::Error>()
            || cause.is::<crate::tokenizer::Error>()
        {
            return exit::INPUT;
        }
        if cause.is::<crate::device::Error>() {
            return exit::USAGE;
        }
    }
    exit::RUNTIME
}

/// Set by SIGINT/SIGTERM; long loops check it between steps.
pub fn interrupted() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| {
        let f = Arc::new(AtomicBool::new(false));
        let g = f.clone();
        let _ = ctrlc::set_handler(move || {
            if g.swap(true, Ordering::SeqCst) {
                // A second Ctrl-C: stop now.
                std::process::exit(exit::INTERRUPTED as i32);
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
