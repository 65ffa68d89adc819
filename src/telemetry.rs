//! Logging: JSON lines to `<log_dir>/agentlab.log` (rotated daily, 7 kept) for the
//! service, to `<log_dir>/watchdog.log` for the watchdog (its own files, so the two
//! processes never interleave and the watchdog's lines never count as the service's
//! log advancing), and a compact human format on the terminal.
//!
//! Tokens never reach a log line: the Bot API client redacts them from errors, and
//! nothing logs a configuration value that holds a secret (secrets live only in
//! the environment).

use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::layer::Filter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Log files kept.
pub const LOG_FILES_KEPT: usize = 7;
/// Log lines waiting for the file writer's thread. The queue is allocated and
/// written through when logging starts, so it is resident memory for the
/// process's life: 8,192 lines (256 KiB) hold any burst the service logs, where
/// tracing-appender's default of 128,000 would hold 4 MiB. Lines beyond it (a
/// disk that stalls while the service logs on) are dropped, never waited for.
const LOG_LINES_BUFFERED: usize = 8_192;
/// Base name of the service's log files.
pub const LOG_FILE: &str = "agentlab.log";
/// Base name of the watchdog's log files.
pub const WATCHDOG_LOG_FILE: &str = "watchdog.log";

/// Target of the record of why a command failed. The terminal never shows it:
/// the edge prints the error there once (`error: ...`), and this record is for
/// the log files, which operators read.
pub const FAILURE_TARGET: &str = "agentlab::failure";

/// Keeps the background log writer alive; drop it last (flushes on drop):
/// anything logged after the drop never reaches the file.
pub struct TelemetryGuard {
    file: Option<WorkerGuard>,
}

impl TelemetryGuard {
    /// Whether log records go to files (not only to the terminal).
    pub fn writes_files(&self) -> bool {
        self.file.is_some()
    }
}

/// Records why the command failed, with its whole cause chain, in the log
/// files only (see [`FAILURE_TARGET`]).
pub fn record_failure(error: &anyhow::Error) {
    tracing::error!(target: FAILURE_TARGET, error = %format!("{error:#}"), "agentlab failed");
}

/// The terminal's filter: `RUST_LOG`, else `default_level`; never the failure
/// record, which the edge has printed already.
fn terminal_filter(default_level: &str) -> impl Filter<Registry> + use<> {
    let levels =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    levels.and(filter_fn(|meta| meta.target() != FAILURE_TARGET))
}

/// Colours only for a person at a terminal: a file or the journal that stderr
/// goes to (launchd, systemd, a pipe) gets plain text.
fn stderr_is_terminal() -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal()
}

/// Terminal logging only, at `default_level` unless `RUST_LOG` says otherwise.
pub fn init_terminal(default_level: &str) -> TelemetryGuard {
    let terminal = tracing_subscriber::fmt::layer()
        .compact()
        .with_ansi(stderr_is_terminal())
        .with_writer(std::io::stderr)
        .with_filter(terminal_filter(default_level));
    let _ = tracing_subscriber::registry().with(terminal).try_init();
    TelemetryGuard { file: None }
}

/// Terminal plus the service's daily-rotated JSON files ([`LOG_FILE`]) in `log_dir`.
/// Falls back to the terminal alone (with a warning) when the folder cannot be used.
pub fn init_service(log_dir: &Path, terminal_level: &str) -> TelemetryGuard {
    init_with_files(log_dir, LOG_FILE, terminal_level)
}

/// Terminal plus the watchdog's own daily-rotated JSON files ([`WATCHDOG_LOG_FILE`])
/// in `log_dir`, with the same fallback as [`init_service`]. It never creates
/// `log_dir`: it may run as root (systemd/agentlab-watchdog.service), and a
/// root-owned folder would lock the service out of its own log.
pub fn init_watchdog(log_dir: &Path, terminal_level: &str) -> TelemetryGuard {
    if log_dir.is_dir() {
        return init_with_files(log_dir, WATCHDOG_LOG_FILE, terminal_level);
    }
    let guard = init_terminal(terminal_level);
    tracing::warn!(dir = %log_dir.display(), "no log folder (yet); logging to the terminal only");
    guard
}

fn init_with_files(log_dir: &Path, file_prefix: &str, terminal_level: &str) -> TelemetryGuard {
    let appender = std::fs::create_dir_all(log_dir)
        .map_err(|e| e.to_string())
        .and_then(|_| {
            tracing_appender::rolling::Builder::new()
                .rotation(tracing_appender::rolling::Rotation::DAILY)
                .filename_prefix(file_prefix)
                .max_log_files(LOG_FILES_KEPT)
                .build(log_dir)
                .map_err(|e| e.to_string())
        });
    let terminal = tracing_subscriber::fmt::layer()
        .compact()
        .with_ansi(stderr_is_terminal())
        .with_writer(std::io::stderr)
        .with_filter(terminal_filter(terminal_level));
    match appender {
        Ok(appender) => {
            let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
                .buffered_lines_limit(LOG_LINES_BUFFERED)
                .finish(appender);
            let file = tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(writer.with_max_level(tracing::Level::INFO))
                .with_filter(EnvFilter::new("info"));
            let _ = tracing_subscriber::registry()
                .with(terminal)
                .with(file)
                .try_init();
            TelemetryGuard { file: Some(guard) }
        }
        Err(e) => {
            let _ = tracing_subscriber::registry().with(terminal).try_init();
            tracing::warn!(error = %e, dir = %log_dir.display(), "cannot write log files; logging to the terminal only");
            TelemetryGuard { file: None }
        }
    }
}
