//! `GET /metrics`: the Prometheus text exposition format (version 0.0.4).
//!
//! Formatting only. Two kinds of metrics: the standard `process_*` ones, from the
//! process monitor's reader ([`ProcessFigures`]), and agentlab's own (tasks
//! by status, queue depth, task durations, breakers, cost, Telegram links, and
//! the latency histograms of every dependency call and HTTP route from
//! [`crate::metrics`]). Invariant: every counter and histogram only grows for the
//! life of the process (they count what this process saw, from
//! [`crate::metrics`]), so `rate()` and `histogram_quantile()` read them right.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::HttpContext;
use super::error::ApiError;
use crate::metrics::{LATENCY_BUCKETS_MS, TASK_DURATION_BUCKETS_S};
use crate::monitor::process::ProcessFigures;
use crate::storage::{TaskStatus, now_ms};

/// Content type of the text exposition format.
pub(crate) const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`
pub(crate) async fn metrics(State(api): State<AppState>) -> Result<Response, ApiError> {
    let text = render(&api.ctx)?;
    Ok(([(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], text).into_response())
}

/// The whole exposition.
pub(crate) fn render(ctx: &HttpContext) -> Result<String, ApiError> {
    let mut out = Exposition::default();
    let figures = ProcessFigures::read(Path::new("/proc"));
    process_metrics(&mut out, &figures, ctx.started.unix_ms());
    service_metrics(&mut out, ctx)?;
    call_metrics(&mut out);
    agent_stream_metrics(&mut out);
    warm_agent_metrics(&mut out, ctx);
    Ok(out.text)
}

/// The idle warm agent processes kept for the sessions' next prompts.
fn warm_agent_metrics(out: &mut Exposition, ctx: &HttpContext) {
    let (count, rss) = ctx.pool.warm_usage();
    out.family(
        "agentlab_agent_warm_processes",
        "gauge",
        "Idle agent processes kept open for their session's next prompt.",
    );
    out.sample("agentlab_agent_warm_processes", &[], count as f64);
    out.family(
        "agentlab_agent_warm_rss_bytes",
        "gauge",
        "Resident memory of the idle warm agent processes, in all.",
    );
    out.sample("agentlab_agent_warm_rss_bytes", &[], rss as f64);
}

/// What the agents printed that agentlab did not know ([`crate::worker::stream`]).
fn agent_stream_metrics(out: &mut Exposition) {
    out.family(
        "agentlab_agent_unknown_events_total",
        "counter",
        "Agent output events (or content blocks) of a type agentlab does not know, ignored.",
    );
    for (what, kind, count) in crate::metrics::unknown_agent_events() {
        out.sample(
            "agentlab_agent_unknown_events_total",
            &[("what", what), ("kind", &kind)],
            count as f64,
        );
    }
}

/// A text exposition under construction.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{key}=\"{}\"", escape_label(val));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", format_value(value));
    }

    /// A gauge or counter with one unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// The samples of one histogram series: `counts` per bucket (not cumulative,
    /// one more than `bounds` for +Inf).
    fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
        counts: &[u64],
        sum: f64,
    ) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (i, count) in counts.iter().enumerate() {
            cumulative += count;
            let le = bounds
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| format_value(*b));
            let mut with_le: Vec<(&str, &str)> = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, cumulative as f64);
        }
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, cumulative as f64);
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

/// The standard process metrics (see [`ProcessFigures::read`]); a figure the
/// platform does not tell is left out.
fn process_metrics(out: &mut Exposition, figures: &ProcessFigures, started_ms: u64) {
    if let Some(v) = figures.cpu_seconds {
        out.single(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            v,
        );
    }
    if let Some(v) = figures.resident_bytes {
        out.single(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            v,
        );
    }
    if let Some(v) = figures.virtual_bytes {
        out.single(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            v,
        );
    }
    if let Some(v) = figures.threads {
        out.single(
            "process_threads",
            "gauge",
            "Number of OS threads in the process.",
            v,
        );
    }
    out.single(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        figures.start_time_s.unwrap_or(started_ms as f64 / 1000.0),
    );
    if let Some(v) = figures.open_fds {
        out.single(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            v,
        );
    }
    if let Some(v) = figures.max_fds {
        out.single(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            v,
        );
    }
}

fn service_metrics(out: &mut Exposition, ctx: &HttpContext) -> Result<(), ApiError> {
    out.family(
        "agentlab_build_info",
        "gauge",
        "Always 1; the version is a label.",
    );
    out.sample(
        "agentlab_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    out.single(
        "agentlab_ready",
        "gauge",
        "1 once the start-up barrier has passed, 0 while starting or stopping.",
        f64::from(u8::from(ctx.is_ready())),
    );
    out.single(
        "agentlab_uptime_seconds",
        "gauge",
        "Seconds since the service started.",
        ctx.started.elapsed().as_secs_f64(),
    );

    out.family("agentlab_tasks", "gauge", "Tasks in the store by status.");
    for (status, count) in ctx.store.task_counts()? {
        out.sample(
            "agentlab_tasks",
            &[("status", status.as_str())],
            count as f64,
        );
    }
    out.single(
        "agentlab_queue_depth",
        "gauge",
        "Queued tasks, all bots.",
        ctx.store.queue_depth()? as f64,
    );
    out.family("agentlab_bot_queue_depth", "gauge", "Queued tasks per bot.");
    let depths = ctx.store.queue_depth_by_bot()?;
    for bot in &ctx.config.bots {
        let depth = depths
            .iter()
            .find(|(id, _)| id == &bot.id)
            .map_or(0, |(_, n)| *n);
        out.sample(
            "agentlab_bot_queue_depth",
            &[("bot_id", &bot.id)],
            depth as f64,
        );
    }
    out.single(
        "agentlab_workers",
        "gauge",
        "Configured agent workers.",
        ctx.pool.workers() as f64,
    );
    out.single(
        "agentlab_workers_busy",
        "gauge",
        "Agent runs in progress.",
        ctx.pool.busy() as f64,
    );

    task_durations(out);

    let now = now_ms();
    out.family(
        "agentlab_cost_today_usd",
        "gauge",
        "Agent cost of the current UTC day per bot, USD.",
    );
    for bot in &ctx.config.bots {
        out.sample(
            "agentlab_cost_today_usd",
            &[("bot_id", &bot.id)],
            ctx.store.cost_today(&bot.id, now)?.usd,
        );
    }

    out.family(
        "agentlab_circuit_breaker_state",
        "gauge",
        "1 for the state each (bot, dependency) breaker is in, 0 for the others.",
    );
    let snapshots = ctx.circuits.snapshots();
    for (bot_id, dependency, snapshot) in &snapshots {
        for state in ["closed", "open", "half_open"] {
            let value = f64::from(u8::from(snapshot.state.as_str() == state));
            out.sample(
                "agentlab_circuit_breaker_state",
                &[
                    ("bot_id", bot_id),
                    ("dependency", dependency.as_str()),
                    ("state", state),
                ],
                value,
            );
        }
    }
    out.family(
        "agentlab_circuit_breaker_consecutive_failures",
        "gauge",
        "Consecutive failures counted by each breaker.",
    );
    for (bot_id, dependency, snapshot) in &snapshots {
        out.sample(
            "agentlab_circuit_breaker_consecutive_failures",
            &[("bot_id", bot_id), ("dependency", dependency.as_str())],
            f64::from(snapshot.consecutive_failures),
        );
    }

    out.family(
        "agentlab_circuit_breaker_calls_total",
        "counter",
        "Calls each breaker saw since start (or restore), by outcome.",
    );
    for (bot_id, dependency, snapshot) in &snapshots {
        let t = &snapshot.totals;
        for (outcome, n) in [
            ("success", t.successes),
            ("failure", t.failures),
            ("rejected", t.rejected),
            ("ignored", t.ignored),
            ("probe_timeout", t.probe_timeouts),
        ] {
            out.sample(
                "agentlab_circuit_breaker_calls_total",
                &[
                    ("bot_id", bot_id),
                    ("dependency", dependency.as_str()),
                    ("outcome", outcome),
                ],
                n as f64,
            );
        }
    }
    out.family(
        "agentlab_circuit_breaker_transitions_total",
        "counter",
        "State transitions of each breaker since this process started.",
    );
    for (bot_id, dependency, _) in &snapshots {
        out.sample(
            "agentlab_circuit_breaker_transitions_total",
            &[("bot_id", bot_id), ("dependency", dependency.as_str())],
            ctx.circuits.transitions(bot_id, *dependency) as f64,
        );
    }

    out.family(
        "agentlab_telegram_last_poll_age_seconds",
        "gauge",
        "Seconds since each bot's last successful getUpdates (absent before the first).",
    );
    for (bot_id, link) in &ctx.links {
        let last = link.last_poll_ok_ms.load(Ordering::Relaxed);
        if last > 0 {
            out.sample(
                "agentlab_telegram_last_poll_age_seconds",
                &[("bot_id", bot_id)],
                now.saturating_sub(last) as f64 / 1000.0,
            );
        }
    }
    out.family(
        "agentlab_telegram_conflicts_total",
        "counter",
        "409 Conflict answers (another process polls the bot's token).",
    );
    for (bot_id, link) in &ctx.links {
        out.sample(
            "agentlab_telegram_conflicts_total",
            &[("bot_id", bot_id)],
            link.conflicts.load(Ordering::Relaxed) as f64,
        );
    }
    Ok(())
}

/// Run time of the tasks this process finished, by terminal status.
fn task_durations(out: &mut Exposition) {
    out.family(
        "agentlab_task_duration_seconds",
        "histogram",
        "Agent run time of the tasks finished since this process started.",
    );
    for status in [TaskStatus::Succeeded, TaskStatus::Failed] {
        let histogram = crate::metrics::task_duration_histogram(status.as_str());
        out.histogram(
            "agentlab_task_duration_seconds",
            &[("status", status.as_str())],
            &TASK_DURATION_BUCKETS_S,
            &histogram.buckets,
            histogram.sum_s,
        );
    }
}

/// Calls to the Telegram API, the agent and our own HTTP routes, from
/// [`crate::metrics`].
fn call_metrics(out: &mut Exposition) {
    let stats = crate::metrics::snapshot();
    let bounds_s: Vec<f64> = LATENCY_BUCKETS_MS.iter().map(|ms| ms / 1000.0).collect();
    out.family(
        "agentlab_call_duration_seconds",
        "histogram",
        "Latency of calls per dependency (telegram: the Bot API, http: our routes) and method; Telegram long polls (getUpdates) are not timed.",
    );
    for (dependency, method, s) in &stats {
        out.histogram(
            "agentlab_call_duration_seconds",
            &[("dependency", dependency), ("method", method)],
            &bounds_s,
            &s.buckets,
            s.latency_sum_ms / 1000.0,
        );
    }
    out.family(
        "agentlab_calls_total",
        "counter",
        "Calls per dependency and method, long polls included (the duration histogram leaves them out).",
    );
    for (dependency, method, s) in &stats {
        out.sample(
            "agentlab_calls_total",
            &[("dependency", dependency), ("method", method)],
            s.calls as f64,
        );
    }
    out.family(
        "agentlab_call_errors_total",
        "counter",
        "Failed calls per dependency and method (timeouts included).",
    );
    for (dependency, method, s) in &stats {
        out.sample(
            "agentlab_call_errors_total",
            &[("dependency", dependency), ("method", method)],
            s.errors as f64,
        );
    }
    out.family(
        "agentlab_call_timeouts_total",
        "counter",
        "Timed-out calls per dependency and method.",
    );
    for (dependency, method, s) in &stats {
        out.sample(
            "agentlab_call_timeouts_total",
            &[("dependency", dependency), ("method", method)],
            s.timeouts as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut out = Exposition::default();
        out.sample("m", &[("a", "x\"y\\z\nw")], 1.5);
        assert_eq!(out.text, "m{a=\"x\\\"y\\\\z\\nw\"} 1.5\n");
    }

    fn rendered(figures: &ProcessFigures) -> String {
        let mut out = Exposition::default();
        process_metrics(&mut out, figures, 0);
        out.text
    }

    #[test]
    fn process_metrics_show_the_figures_the_platform_tells() {
        let figures = ProcessFigures {
            cpu_seconds: Some(1.5),
            resident_bytes: Some(4096.0),
            virtual_bytes: None,
            threads: Some(3.0),
            start_time_s: None,
            open_fds: Some(7.0),
            max_fds: Some(1024.0),
        };
        let text = rendered(&figures);
        for line in [
            "process_cpu_seconds_total 1.5",
            "process_resident_memory_bytes 4096",
            "process_threads 3",
            "process_open_fds 7",
            "process_max_fds 1024",
            // Without the platform's start time, the service's own.
            "process_start_time_seconds 0",
        ] {
            assert!(
                text.contains(&format!("\n{line}\n")),
                "{line} missing:\n{text}"
            );
        }
        assert!(!text.contains("process_virtual_memory_bytes"), "{text}");
    }

    #[test]
    fn histograms_are_cumulative_with_inf() {
        let mut out = Exposition::default();
        out.histogram("h", &[], &[1.0, 2.0], &[1, 2, 3], 9.0);
        assert_eq!(
            out.text,
            "h_bucket{le=\"1\"} 1\nh_bucket{le=\"2\"} 3\nh_bucket{le=\"+Inf\"} 6\nh_sum 9\nh_count 6\n"
        );
    }
}
