//! A minimal stderr logger for the `log` crate. The level comes from
//! `CELLVM_LOG` (error, warn, info, debug, trace; default warn).

use log::{LevelFilter, Log, Metadata, Record};

struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            eprintln!(
                "cellvm: {}: {}",
                record.level().as_str().to_ascii_lowercase(),
                record.args()
            );
        }
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

/// Installs the logger; `verbose` raises the default level to debug.
pub fn init(verbose: bool) {
    let level = std::env::var("CELLVM_LOG")
        .ok()
        .and_then(|v| v.parse::<LevelFilter>().ok())
        .unwrap_or(if verbose {
            LevelFilter::Debug
        } else {
            LevelFilter::Warn
        });
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}
