//! Availability: the service's up intervals, restarts with their causes, and
//! uptime % over 24 h, 7 days and 30 days.
//!
//! A run begins at its `service_started` event and ends at its `service_stopped`
//! event (clean: exit 0 or a restart with exit 42), or — when the process died
//! without one (a crash, SIGKILL, power loss) — at the last heartbeat it wrote; the
//! next start detects that and records a `service_crashed` event carrying the
//! heartbeat, so the history stays answerable after later heartbeats overwrite it.
//! Invariants: intervals never overlap (a run ends no later than the next start);
//! the current run is up until now; uptime % is measured from the first recorded
//! start when the service is younger than the window.

use serde::Serialize;

use crate::storage::Event;

const HOUR_MS: u64 = 3_600_000;
/// Exit code of a restart asked for by an admin.
const RESTART_EXIT: i64 = crate::shutdown::RESTART_EXIT_CODE as i64;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndCause {
    /// Clean stop (exit 0).
    CleanStop,
    /// A restart asked for (exit 42).
    Restart,
    /// Stopped cleanly with another exit code.
    ExitCode,
    /// No stop was recorded: a crash or a kill.
    CrashOrKill,
    /// Still running.
    Running,
}

/// One run of the service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpInterval {
    /// Start, unix ms.
    pub start_ms: u64,
    /// End (the stop, the last heartbeat, or now), unix ms.
    pub end_ms: u64,
    /// How it ended.
    pub cause: EndCause,
    /// The exit code, when a stop was recorded.
    pub exit_code: Option<i64>,
}

/// Uptime over the standard windows, with the restarts in the longest one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AvailabilityReport {
    /// Uptime %, last 24 h.
    pub uptime_24h: f64,
    /// Uptime %, last 7 days.
    pub uptime_7d: f64,
    /// Uptime %, last 30 days.
    pub uptime_30d: f64,
    /// Runs that ended in the last 30 days (each is a restart or a stop), newest first.
    pub restarts: Vec<UpInterval>,
    /// The current run's start.
    pub current_start_ms: u64,
}

/// The run left without a stop event before `current_start_ms`, if any:
/// `(its start, the last heartbeat that belongs to it)`.
pub(crate) fn detect_crash(
    events: &[Event],
    current_start_ms: u64,
    last_heartbeat_ms: Option<u64>,
) -> Option<(u64, u64)> {
    let mut previous_start = None;
    let mut stopped = false;
    for event in events.iter().filter(|e| e.at_ms < current_start_ms) {
        match event.kind.as_str() {
            "service_started" => {
                previous_start = Some(event.at_ms);
                stopped = false;
            }
            "service_stopped" => stopped = true,
            "service_crashed" => stopped = true,
            _ => {}
        }
    }
    let start = previous_start.filter(|_| !stopped)?;
    let end = last_heartbeat_ms
        .filter(|h| *h >= start && *h < current_start_ms)
        .unwrap_or(start);
    Some((start, end))
}

/// The runs recorded by `events` (oldest first, any kinds mixed in), the
/// current one up to `now_ms`.
pub(crate) fn up_intervals(events: &[Event], now_ms: u64) -> Vec<UpInterval> {
    let mut runs: Vec<UpInterval> = Vec::new();
    let mut open: Option<u64> = None;
    for event in events {
        match event.kind.as_str() {
            "service_started" => {
                if let Some(start) = open.take() {
                    // A start with the previous run never closed (crash not yet
                    // recorded): that run lasted until this start at most; count
                    // none of it rather than guess.
                    runs.push(UpInterval {
                        start_ms: start,
                        end_ms: start,
                        cause: EndCause::CrashOrKill,
                        exit_code: None,
                    });
                }
                open = Some(event.at_ms);
            }
            "service_stopped" => {
                if let Some(start) = open.take() {
                    let code = payload_u64(event, "exit_code").map(|c| c as i64);
                    let cause = match code {
                        Some(0) | None => EndCause::CleanStop,
                        Some(RESTART_EXIT) => EndCause::Restart,
                        Some(_) => EndCause::ExitCode,
                    };
                    runs.push(UpInterval {
                        start_ms: start,
                        end_ms: event.at_ms.max(start),
                        cause,
                        exit_code: code,
                    });
                }
            }
            "service_crashed" => {
                let run_start = payload_u64(event, "run_started_ms");
                if let Some(start) = open.take_if(|s| run_start.is_none_or(|r| r == *s)) {
                    let heartbeat = payload_u64(event, "last_heartbeat_ms").unwrap_or(start);
                    runs.push(UpInterval {
                        start_ms: start,
                        end_ms: heartbeat.clamp(start, event.at_ms),
                        cause: EndCause::CrashOrKill,
                        exit_code: None,
                    });
                }
            }
            _ => {}
        }
    }
    if let Some(start) = open {
        runs.push(UpInterval {
            start_ms: start,
            end_ms: now_ms.max(start),
            cause: EndCause::Running,
            exit_code: None,
        });
    }
    runs
}

/// Uptime % of `[max(now - window, first start), now]`.
pub(crate) fn uptime_percent(runs: &[UpInterval], now_ms: u64, window_ms: u64) -> f64 {
    let Some(first) = runs.iter().map(|r| r.start_ms).min() else {
        return 0.0;
    };
    let from = now_ms.saturating_sub(window_ms).max(first);
    if now_ms <= from {
        return 100.0;
    }
    let up: u64 = runs
        .iter()
        .map(|r| r.end_ms.min(now_ms).saturating_sub(r.start_ms.max(from)))
        .sum();
    (up as f64 / (now_ms - from) as f64 * 100.0).min(100.0)
}

/// The availability report over the events of the last 30 days.
pub(crate) fn report(events: &[Event], now_ms: u64) -> AvailabilityReport {
    let runs = up_intervals(events, now_ms);
    let window_30d = 30 * 24 * HOUR_MS;
    let mut restarts: Vec<UpInterval> = runs
        .iter()
        .filter(|r| r.cause != EndCause::Running && r.end_ms + window_30d >= now_ms)
        .cloned()
        .collect();
    restarts.reverse();
    AvailabilityReport {
        uptime_24h: uptime_percent(&runs, now_ms, 24 * HOUR_MS),
        uptime_7d: uptime_percent(&runs, now_ms, 7 * 24 * HOUR_MS),
        uptime_30d: uptime_percent(&runs, now_ms, window_30d),
        current_start_ms: runs.last().map_or(now_ms, |r| r.start_ms),
        restarts,
    }
}

/// A period within a history range when no run of the service was up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DownPeriod {
    /// Start (the end of a run, or `from_ms`), unix ms.
    pub from_ms: u64,
    /// End (the next start), unix ms.
    pub to_ms: u64,
}

/// The periods of `[from_ms, to_ms]` between the ends and starts of `runs` (any
/// order), so charts do not draw a line across them.
pub(crate) fn down_periods(runs: &[UpInterval], from_ms: u64, to_ms: u64) -> Vec<DownPeriod> {
    let mut runs: Vec<&UpInterval> = runs.iter().collect();
    runs.sort_by_key(|r| r.start_ms);
    runs.windows(2)
        .filter_map(|pair| {
            let (down_from, down_to) = (pair[0].end_ms.max(from_ms), pair[1].start_ms.min(to_ms));
            (down_from < down_to).then_some(DownPeriod {
                from_ms: down_from,
                to_ms: down_to,
            })
        })
        .collect()
}

fn payload_u64(event: &Event, key: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(&event.payload_json)
        .ok()?
        .get(key)?
        .as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(at_ms: u64, kind: &str, payload: serde_json::Value) -> Event {
        Event {
            at_ms,
            seq: 0,
            kind: kind.into(),
            bot_id: None,
            payload_json: payload.to_string(),
        }
    }

    #[test]
    fn down_periods_lie_between_runs_within_the_range() {
        let run = |start_ms, end_ms| UpInterval {
            start_ms,
            end_ms,
            cause: EndCause::CleanStop,
            exit_code: Some(0),
        };
        let runs = [run(500, 900), run(100, 200), run(300, 400)];
        let down = |from_ms, to_ms| DownPeriod { from_ms, to_ms };
        assert_eq!(
            down_periods(&runs, 0, 1_000),
            vec![down(200, 300), down(400, 500)]
        );
        assert_eq!(
            down_periods(&runs, 250, 450),
            vec![down(250, 300), down(400, 450)]
        );
        assert_eq!(down_periods(&runs, 600, 800), vec![]);
        assert_eq!(down_periods(&[run(0, 10), run(10, 20)], 0, 30), vec![]);
    }

    #[test]
    fn a_kill_minus_9_is_a_crash_and_its_gap_is_downtime() {
        let h = HOUR_MS;
        let t0 = 1_000 * h;
        // Run 1: started, heartbeats until t0 + 10 h, then SIGKILL (no stop event).
        let mut events = vec![event(t0, "service_started", serde_json::json!({}))];
        let restart_at = t0 + 12 * h;
        let crash = detect_crash(&events, restart_at, Some(t0 + 10 * h));
        assert_eq!(crash, Some((t0, t0 + 10 * h)));
        events.push(event(
            restart_at - 1,
            "service_crashed",
            serde_json::json!({"run_started_ms": t0, "last_heartbeat_ms": t0 + 10 * h}),
        ));
        events.push(event(restart_at, "service_started", serde_json::json!({})));
        let now = t0 + 24 * h;
        let r = report(&events, now);
        // 24 h window: up 10 h, down 2 h, up 12 h.
        assert!((r.uptime_24h - 22.0 / 24.0 * 100.0).abs() < 1e-9, "{r:?}");
        assert_eq!(r.restarts.len(), 1);
        assert_eq!(r.restarts[0].cause, EndCause::CrashOrKill);
        assert_eq!(r.restarts[0].end_ms, t0 + 10 * h);
        // The crash is recorded once: looking again at the same start finds the record.
        assert_eq!(detect_crash(&events, restart_at, Some(t0 + 10 * h)), None);
    }

    #[test]
    fn clean_stops_and_restarts_are_told_apart() {
        let h = HOUR_MS;
        let events = vec![
            event(0, "service_started", serde_json::json!({})),
            event(h, "service_stopped", serde_json::json!({"exit_code": 42})),
            event(h, "service_started", serde_json::json!({})),
            event(
                2 * h,
                "service_stopped",
                serde_json::json!({"exit_code": 0}),
            ),
            event(3 * h, "service_started", serde_json::json!({})),
        ];
        assert_eq!(detect_crash(&events, 3 * h, Some(2 * h)), None);
        let r = report(&events, 4 * h);
        let causes: Vec<EndCause> = r.restarts.iter().map(|r| r.cause).collect();
        assert_eq!(causes, vec![EndCause::CleanStop, EndCause::Restart]);
        // Up 1 h, restarted at once, up 1 h, down 1 h, up 1 h: 3 of 4 hours.
        assert!((r.uptime_24h - 75.0).abs() < 1e-9, "{r:?}");
        assert_eq!(r.current_start_ms, 3 * h);
    }

    #[test]
    fn a_crash_before_the_first_heartbeat_counts_no_uptime() {
        let events = vec![event(5_000, "service_started", serde_json::json!({}))];
        assert_eq!(detect_crash(&events, 9_000, None), Some((5_000, 5_000)));
        assert_eq!(
            detect_crash(&events, 9_000, Some(1_000)),
            Some((5_000, 5_000)),
            "an older heartbeat"
        );
    }
}
