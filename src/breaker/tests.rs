//! The breaker state machine under a manual clock: every trigger, timer and
//! concurrency invariant of [`super::machine`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use super::machine::bounded_reason;
use super::*;
use crate::clock::{Clock, ManualClock};

const WALL_START: u64 = 1_700_000_000_000;
const NAME: &str = "BOT-001/agent";

type Recorded = Arc<Mutex<Vec<(Transition, BreakerSnapshot)>>>;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn breaker_with(settings: BreakerSettings) -> (CircuitBreaker, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(WALL_START));
    (CircuitBreaker::new(NAME, settings, clock.clone()), clock)
}

fn default_breaker() -> (CircuitBreaker, Arc<ManualClock>) {
    breaker_with(BreakerSettings::default())
}

/// Only the consecutive-failure trigger can fire.
fn consecutive_only() -> BreakerSettings {
    BreakerSettings {
        min_calls: u32::MAX,
        ..Default::default()
    }
}

/// Only the failure-rate trigger can fire.
fn rate_only() -> BreakerSettings {
    BreakerSettings {
        failure_threshold: u32::MAX,
        ..Default::default()
    }
}

fn fail(breaker: &CircuitBreaker, times: u32) {
    for _ in 0..times {
        breaker
            .try_acquire()
            .expect("call admitted")
            .failure("boom");
    }
}

fn succeed(breaker: &CircuitBreaker, times: u32) {
    for _ in 0..times {
        breaker.try_acquire().expect("call admitted").success();
    }
}

/// A default breaker opened by five failures at wall time `WALL_START`.
fn opened_breaker() -> (CircuitBreaker, Arc<ManualClock>) {
    let (breaker, clock) = default_breaker();
    fail(&breaker, 5);
    assert_eq!(breaker.state(), State::Open);
    (breaker, clock)
}

fn retry_after_ms(breaker: &CircuitBreaker) -> u64 {
    breaker
        .try_acquire()
        .expect_err("call rejected")
        .retry_after_ms
}

fn last_reason(breaker: &CircuitBreaker) -> String {
    breaker
        .snapshot()
        .last_transition
        .expect("a transition happened")
        .reason
}

fn recorder() -> (TransitionObserver, Recorded) {
    let seen: Recorded = Arc::default();
    let sink = Arc::clone(&seen);
    let observer: TransitionObserver = Arc::new(move |transition, snapshot| {
        sink.lock()
            .expect("recorder lock")
            .push((transition.clone(), snapshot.clone()));
    });
    (observer, seen)
}

fn steps(seen: &Recorded) -> Vec<(State, State)> {
    let seen = seen.lock().expect("recorder lock");
    seen.iter().map(|(t, _)| (t.from, t.to)).collect()
}

fn restored(snapshot: BreakerSnapshot, clock: &Arc<ManualClock>) -> CircuitBreaker {
    CircuitBreaker::restore(NAME, BreakerSettings::default(), clock.clone(), snapshot)
}

// --- settings ------------------------------------------------------------------

#[test]
fn defaults_match_the_design_doc() {
    let s = BreakerSettings::default();
    assert_eq!(
        (s.failure_threshold, s.failure_rate, s.window_s, s.min_calls),
        (5, 0.5, 60, 10)
    );
    assert_eq!(
        (
            s.recovery_timeout_s,
            s.max_recovery_timeout_s,
            s.success_threshold
        ),
        (30, 600, 2)
    );
    assert_eq!((s.half_open_max_calls, s.probe_timeout_s), (1, 60));
    assert_eq!(s.validate(), Ok(()));
}

#[test]
fn settings_fill_missing_keys_with_defaults_and_reject_unknown_ones() {
    let empty: BreakerSettings = serde_json::from_str("{}").expect("empty table");
    assert_eq!(empty, BreakerSettings::default());
    let partial: BreakerSettings =
        serde_json::from_str(r#"{"failure_threshold": 3}"#).expect("partial table");
    let expected = BreakerSettings {
        failure_threshold: 3,
        ..Default::default()
    };
    assert_eq!(partial, expected);
    let error = serde_json::from_str::<BreakerSettings>(r#"{"failure_treshold": 3}"#)
        .expect_err("a misspelt key is rejected");
    assert!(error.to_string().contains("failure_treshold"), "{error}");
}

#[test]
fn validate_names_the_bad_field() {
    let d = BreakerSettings::default;
    let cases = [
        (
            BreakerSettings {
                failure_threshold: 0,
                ..d()
            },
            "failure_threshold",
        ),
        (
            BreakerSettings {
                failure_rate: 0.0,
                ..d()
            },
            "failure_rate",
        ),
        (
            BreakerSettings {
                failure_rate: 1.5,
                ..d()
            },
            "failure_rate",
        ),
        (
            BreakerSettings {
                failure_rate: f64::NAN,
                ..d()
            },
            "failure_rate",
        ),
        (BreakerSettings { window_s: 0, ..d() }, "window_s"),
        (
            BreakerSettings {
                min_calls: 0,
                ..d()
            },
            "min_calls",
        ),
        (
            BreakerSettings {
                recovery_timeout_s: 0,
                ..d()
            },
            "recovery_timeout_s",
        ),
        (
            BreakerSettings {
                max_recovery_timeout_s: 10,
                ..d()
            },
            "max_recovery_timeout_s",
        ),
        (
            BreakerSettings {
                success_threshold: 0,
                ..d()
            },
            "success_threshold",
        ),
        (
            BreakerSettings {
                half_open_max_calls: 0,
                ..d()
            },
            "half_open_max_calls",
        ),
        (
            BreakerSettings {
                probe_timeout_s: 0,
                ..d()
            },
            "probe_timeout_s",
        ),
    ];
    for (settings, field) in cases {
        let error = settings.validate().expect_err(field);
        assert_eq!(error.field, field, "{error}");
        assert!(error.to_string().starts_with(field), "{field}: {error}");
    }
    assert_eq!(
        BreakerSettings {
            failure_rate: 1.0,
            ..d()
        }
        .validate(),
        Ok(())
    );
}

#[test]
fn invalid_settings_are_clamped_instead_of_panicking() {
    let settings = BreakerSettings {
        failure_threshold: 0,
        failure_rate: f64::NAN,
        window_s: 0,
        min_calls: 0,
        recovery_timeout_s: 0,
        max_recovery_timeout_s: 0,
        success_threshold: 0,
        half_open_max_calls: 0,
        probe_timeout_s: 0,
    };
    let (breaker, clock) = breaker_with(settings);
    fail(&breaker, 1);
    assert_eq!(retry_after_ms(&breaker), 1_000);
    clock.advance(secs(1));
    succeed(&breaker, 1);
    assert_eq!(breaker.state(), State::Closed);
}

#[test]
fn state_serializes_in_snake_case_and_displays_in_capitals() {
    let cases = [
        (State::Closed, "\"closed\"", "CLOSED"),
        (State::Open, "\"open\"", "OPEN"),
        (State::HalfOpen, "\"half_open\"", "HALF_OPEN"),
    ];
    for (state, json, shown) in cases {
        assert_eq!(serde_json::to_string(&state).expect("serialize"), json);
        assert_eq!(
            serde_json::from_str::<State>(json).expect("deserialize"),
            state
        );
        assert_eq!(state.to_string(), shown);
        assert_eq!(format!("\"{}\"", state.as_str()), json);
    }
}

// --- closed → open -------------------------------------------------------------

#[test]
fn a_new_breaker_is_closed_and_admits_calls() {
    let (breaker, _) = default_breaker();
    assert_eq!(breaker.state(), State::Closed);
    let permit = breaker.try_acquire().expect("closed admits");
    assert!(!permit.is_probe());
    permit.success();
    assert!(breaker.can_execute());
}

#[test]
fn five_consecutive_failures_open_the_breaker() {
    let (breaker, _) = breaker_with(consecutive_only());
    fail(&breaker, 4);
    assert_eq!(breaker.state(), State::Closed);
    breaker
        .try_acquire()
        .expect("call admitted")
        .failure("agent exited with 1");
    assert_eq!(breaker.state(), State::Open);
    let transition = breaker.snapshot().last_transition.expect("transition");
    assert_eq!(
        (transition.from, transition.to),
        (State::Closed, State::Open)
    );
    assert_eq!(
        transition.reason,
        "5 consecutive failures (last: agent exited with 1)"
    );
    assert_eq!(transition.at_wall_ms, WALL_START);
}

#[test]
fn a_success_resets_the_consecutive_failure_count() {
    let (breaker, _) = breaker_with(consecutive_only());
    fail(&breaker, 4);
    succeed(&breaker, 1);
    fail(&breaker, 4);
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.snapshot().consecutive_failures, 4);
    fail(&breaker, 1);
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn a_fifty_percent_flaky_dependency_opens_by_rate_without_five_consecutive_failures() {
    let (breaker, clock) = default_breaker();
    for _ in 0..5 {
        fail(&breaker, 1);
        clock.advance(secs(1));
        succeed(&breaker, 1);
        clock.advance(secs(1));
    }
    // 5 failures in 10 calls: the rate is reached, but only a failure evaluates it.
    assert_eq!(breaker.state(), State::Closed);
    fail(&breaker, 1);
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(
        last_reason(&breaker),
        "failure rate 0.55 over 60s (11 calls)"
    );
    assert_eq!(breaker.snapshot().consecutive_failures, 1);
}

#[test]
fn a_failure_rate_exactly_at_the_threshold_opens() {
    let (breaker, _) = default_breaker();
    for _ in 0..4 {
        succeed(&breaker, 1);
        fail(&breaker, 1);
    }
    succeed(&breaker, 1);
    assert_eq!(breaker.state(), State::Closed);
    fail(&breaker, 1);
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(
        last_reason(&breaker),
        "failure rate 0.50 over 60s (10 calls)"
    );
}

#[test]
fn low_volume_below_min_calls_never_opens_by_rate() {
    let (breaker, _) = default_breaker();
    fail(&breaker, 4);
    succeed(&breaker, 1);
    fail(&breaker, 4);
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.state, State::Closed);
    assert_eq!((snapshot.window_calls, snapshot.window_failures), (9, 8));
}

#[test]
fn a_failure_rate_below_the_threshold_does_not_open() {
    let (breaker, _) = default_breaker();
    for _ in 0..10 {
        fail(&breaker, 1);
        succeed(&breaker, 2);
    }
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.state, State::Closed);
    assert_eq!((snapshot.window_calls, snapshot.window_failures), (30, 10));
}

#[test]
fn calls_older_than_the_window_stop_counting() {
    let (breaker, clock) = breaker_with(rate_only());
    fail(&breaker, 9);
    clock.advance(secs(60));
    fail(&breaker, 1);
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.snapshot().window_calls, 1);
}

#[test]
fn calls_inside_the_window_still_count() {
    let (breaker, clock) = breaker_with(rate_only());
    fail(&breaker, 9);
    clock.advance(Duration::from_millis(59_999));
    fail(&breaker, 1);
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(
        last_reason(&breaker),
        "failure rate 1.00 over 60s (10 calls)"
    );
}

#[test]
fn the_window_slides_one_bucket_at_a_time() {
    let (breaker, clock) = breaker_with(rate_only());
    succeed(&breaker, 4);
    clock.advance(secs(30));
    succeed(&breaker, 3);
    clock.advance(secs(30));
    assert_eq!(breaker.snapshot().window_calls, 3);
    clock.advance(secs(30));
    assert_eq!(breaker.snapshot().window_calls, 0);
}

#[test]
fn a_long_window_uses_coarser_buckets_but_never_holds_a_call_too_long() {
    let settings = BreakerSettings {
        window_s: 3_600,
        ..rate_only()
    };
    let (breaker, clock) = breaker_with(settings);
    succeed(&breaker, 2);
    clock.advance(secs(3_599));
    assert_eq!(breaker.snapshot().window_calls, 2);
    clock.advance(secs(1));
    assert_eq!(breaker.snapshot().window_calls, 0);
}

// --- open → half-open → closed / open ----------------------------------------------

#[test]
fn an_open_breaker_rejects_with_the_time_until_the_next_probe() {
    let (breaker, clock) = opened_breaker();
    let rejected = breaker.try_acquire().expect_err("open rejects");
    assert_eq!(rejected.state, State::Open);
    assert_eq!(rejected.retry_after(), secs(30));
    assert_eq!(&*rejected.breaker, NAME);
    assert_eq!(
        rejected.to_string(),
        "circuit breaker BOT-001/agent is OPEN; next probe in 30000 ms"
    );
    clock.advance(secs(10));
    assert_eq!(retry_after_ms(&breaker), 20_000);
    assert!(!breaker.can_execute());
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.totals.rejected, 3);
    assert_eq!(snapshot.opened_at_wall_ms, Some(WALL_START));
    assert_eq!(snapshot.open_until_wall_ms, Some(WALL_START + 30_000));
}

#[test]
fn the_recovery_timeout_moves_open_to_half_open() {
    let (breaker, clock) = opened_breaker();
    clock.advance(Duration::from_millis(29_999));
    assert_eq!(breaker.state(), State::Open);
    clock.advance(Duration::from_millis(1));
    assert_eq!(breaker.state(), State::HalfOpen);
    assert_eq!(last_reason(&breaker), "recovery timeout elapsed");
    let probe = breaker.try_acquire().expect("half-open admits a probe");
    assert!(probe.is_probe());
    let rejected = breaker.try_acquire().expect_err("one probe at a time");
    assert_eq!(rejected.state, State::HalfOpen);
    assert_eq!(rejected.retry_after_ms, 60_000);
    probe.success();
}

#[test]
fn success_threshold_probe_successes_close_the_breaker() {
    let (breaker, clock) = opened_breaker();
    clock.advance(secs(30));
    succeed(&breaker, 1);
    assert_eq!(breaker.state(), State::HalfOpen);
    assert_eq!(breaker.snapshot().half_open_successes, 1);
    succeed(&breaker, 1);
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(last_reason(&breaker), "2 successes in half-open");
    let s = breaker.snapshot();
    assert_eq!(
        (s.consecutive_failures, s.window_calls, s.consecutive_opens),
        (0, 0, 0)
    );
    assert_eq!((s.opened_at_wall_ms, s.open_until_wall_ms), (None, None));
}

#[test]
fn each_probe_failure_doubles_the_open_period_up_to_the_cap() {
    let (breaker, clock) = opened_breaker();
    let mut periods_s = vec![retry_after_ms(&breaker) / 1_000];
    for _ in 0..6 {
        clock.advance(secs(*periods_s.last().expect("a period")));
        breaker
            .try_acquire()
            .expect("probe admitted")
            .failure("still down");
        periods_s.push(retry_after_ms(&breaker) / 1_000);
    }
    assert_eq!(periods_s, [30, 60, 120, 240, 480, 600, 600]);
    assert_eq!(last_reason(&breaker), "probe failed: still down");
    assert_eq!(breaker.snapshot().consecutive_opens, 7);
}

#[test]
fn closing_resets_the_open_period_to_the_recovery_timeout() {
    let (breaker, clock) = opened_breaker();
    clock.advance(secs(30));
    fail(&breaker, 1);
    clock.advance(secs(60));
    succeed(&breaker, 2);
    assert_eq!(breaker.state(), State::Closed);
    fail(&breaker, 5);
    assert_eq!(retry_after_ms(&breaker), 30_000);
}

#[test]
fn ignored_calls_count_as_neither_success_nor_failure() {
    let (breaker, _) = default_breaker();
    fail(&breaker, 4);
    for _ in 0..3 {
        breaker.try_acquire().expect("call admitted").ignore();
    }
    let s = breaker.snapshot();
    assert_eq!(
        (s.consecutive_failures, s.window_calls, s.totals.ignored),
        (4, 4, 3)
    );
    fail(&breaker, 1);
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn an_ignored_probe_frees_its_slot_without_counting() {
    let (breaker, clock) = opened_breaker();
    clock.advance(secs(30));
    breaker.try_acquire().expect("probe admitted").ignore();
    let s = breaker.snapshot();
    assert_eq!(
        (s.state, s.half_open_successes, s.probes_in_flight),
        (State::HalfOpen, 0, 0)
    );
    succeed(&breaker, 2);
    assert_eq!(breaker.state(), State::Closed);
}

#[test]
fn dropping_an_unresolved_permit_counts_as_ignore() {
    let (breaker, clock) = opened_breaker();
    clock.advance(secs(30));
    drop(breaker.try_acquire().expect("probe admitted"));
    let s = breaker.snapshot();
    assert_eq!(
        (s.state, s.probes_in_flight, s.totals.ignored),
        (State::HalfOpen, 0, 1)
    );
    assert!(breaker.try_acquire().is_ok());
}

#[test]
fn a_hung_probe_reopens_the_breaker_after_the_probe_timeout() {
    let (breaker, clock) = opened_breaker();
    clock.advance(secs(30));
    let hung = breaker.try_acquire().expect("probe admitted");
    clock.advance(secs(59));
    assert_eq!(breaker.state(), State::HalfOpen);
    clock.advance(secs(1));
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(last_reason(&breaker), "probe timed out");
    assert_eq!(retry_after_ms(&breaker), 60_000);
    // The late answer is counted but cannot end the new open period.
    hung.success();
    let s = breaker.snapshot();
    assert_eq!(s.state, State::Open);
    assert_eq!((s.totals.probe_timeouts, s.totals.successes), (1, 1));
}

#[test]
fn tick_fires_timers_when_no_call_arrives() {
    let (observer, seen) = recorder();
    let (breaker, clock) = opened_breaker();
    let breaker = breaker.with_observer(observer);
    clock.advance(secs(30));
    breaker.tick();
    assert_eq!(steps(&seen), [(State::Open, State::HalfOpen)]);
    let _hung = breaker.try_acquire().expect("probe admitted");
    clock.advance(secs(60));
    breaker.tick();
    assert_eq!(
        steps(&seen),
        [
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Open)
        ]
    );
}

#[test]
fn outcomes_admitted_before_opening_do_not_move_half_open() {
    let (breaker, clock) = default_breaker();
    let early_failure = breaker.try_acquire().expect("call admitted");
    let early_success = breaker.try_acquire().expect("call admitted");
    fail(&breaker, 5);
    clock.advance(secs(30));
    assert_eq!(breaker.state(), State::HalfOpen);
    early_success.success();
    early_failure.failure("late");
    let s = breaker.snapshot();
    assert_eq!((s.state, s.half_open_successes), (State::HalfOpen, 0));
    assert_eq!((s.totals.successes, s.totals.failures), (1, 6));
}

#[test]
fn outcomes_from_an_earlier_closed_period_do_not_count_in_the_next_one() {
    let (breaker, clock) = default_breaker();
    let early = breaker.try_acquire().expect("call admitted");
    fail(&breaker, 5);
    clock.advance(secs(30));
    succeed(&breaker, 2);
    assert_eq!(breaker.state(), State::Closed);
    early.failure("late");
    assert_eq!(breaker.snapshot().consecutive_failures, 0);
}

#[test]
fn a_probe_from_an_earlier_half_open_period_does_not_count_in_the_next_one() {
    let settings = BreakerSettings {
        half_open_max_calls: 2,
        ..Default::default()
    };
    let (breaker, clock) = breaker_with(settings);
    fail(&breaker, 5);
    clock.advance(secs(30));
    let failing = breaker.try_acquire().expect("probe admitted");
    let late = breaker.try_acquire().expect("second probe admitted");
    failing.failure("down");
    clock.advance(secs(60));
    assert_eq!(breaker.state(), State::HalfOpen);
    late.success();
    let s = breaker.snapshot();
    assert_eq!((s.state, s.half_open_successes), (State::HalfOpen, 0));
}

// --- callers without permits -------------------------------------------------------

#[test]
fn callers_without_permits_drive_a_full_cycle() {
    let (breaker, clock) = default_breaker();
    for _ in 0..100 {
        assert!(breaker.can_execute(), "closed reserves nothing");
    }
    for _ in 0..5 {
        breaker.record_failure("telegram 502");
    }
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(
        last_reason(&breaker),
        "5 consecutive failures (last: telegram 502)"
    );
    assert!(!breaker.can_execute());
    clock.advance(secs(30));
    assert!(breaker.can_execute(), "takes the probe slot");
    assert!(!breaker.can_execute(), "the slot is taken");
    breaker.record_success();
    assert!(breaker.can_execute(), "record_success freed the slot");
    breaker.record_success();
    assert_eq!(breaker.state(), State::Closed);
}

#[test]
fn a_probe_slot_taken_by_can_execute_times_out_if_nothing_is_recorded() {
    let (breaker, clock) = opened_breaker();
    clock.advance(secs(30));
    assert!(breaker.can_execute());
    assert!(!breaker.can_execute());
    clock.advance(secs(60));
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(last_reason(&breaker), "probe timed out");
}

#[test]
fn outcomes_recorded_while_open_only_change_the_totals() {
    let (breaker, _) = opened_breaker();
    breaker.record_success();
    breaker.record_failure("still sending");
    let s = breaker.snapshot();
    assert_eq!((s.state, s.consecutive_opens), (State::Open, 1));
    assert_eq!((s.totals.successes, s.totals.failures), (1, 6));
    assert_eq!(retry_after_ms(&breaker), 30_000);
}

#[test]
fn totals_count_every_reported_outcome() {
    let (breaker, _) = default_breaker();
    succeed(&breaker, 2);
    breaker.try_acquire().expect("call admitted").ignore();
    fail(&breaker, 5);
    assert!(breaker.try_acquire().is_err());
    breaker.record_success();
    let expected = OutcomeTotals {
        successes: 3,
        failures: 5,
        rejected: 1,
        ignored: 1,
        probe_timeouts: 0,
    };
    assert_eq!(breaker.snapshot().totals, expected);
}

#[test]
fn long_or_empty_failure_reasons_are_bounded() {
    let (breaker, _) = breaker_with(consecutive_only());
    fail(&breaker, 4);
    breaker
        .try_acquire()
        .expect("call admitted")
        .failure(&"x".repeat(10_000));
    let expected = format!("5 consecutive failures (last: {})", "x".repeat(200));
    assert_eq!(last_reason(&breaker), expected);
    assert_eq!(bounded_reason("  \n"), "unspecified");
    assert_eq!(bounded_reason(&"é".repeat(300)), "é".repeat(200));
}

// --- concurrency ---------------------------------------------------------------

/// Opens a breaker, lets its open period elapse unnoticed, then has 64 threads race
/// `try_acquire`; every granted permit is held until all racers are done.
fn permits_granted_at_the_half_open_edge(max_calls: u32) -> usize {
    const RACERS: usize = 64;
    let settings = BreakerSettings {
        half_open_max_calls: max_calls,
        ..Default::default()
    };
    let (breaker, clock) = breaker_with(settings);
    fail(&breaker, 5);
    clock.advance(secs(30));
    let barrier = Barrier::new(RACERS);
    thread::scope(|scope| {
        let racers: Vec<_> = (0..RACERS)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    breaker.try_acquire().ok()
                })
            })
            .collect();
        let granted: Vec<Permit> = racers
            .into_iter()
            .filter_map(|racer| racer.join().expect("racer panicked"))
            .collect();
        granted.len()
    })
}

#[test]
fn racing_threads_at_the_half_open_edge_get_exactly_max_calls_permits() {
    for max_calls in [1, 3] {
        for _ in 0..200 {
            let granted = permits_granted_at_the_half_open_edge(max_calls);
            assert_eq!(granted, max_calls as usize);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_tokio_tasks_at_the_half_open_edge_get_exactly_max_calls_permits() {
    const RACERS: usize = 64;
    for max_calls in [1_u32, 3] {
        for _ in 0..50 {
            let settings = BreakerSettings {
                half_open_max_calls: max_calls,
                ..Default::default()
            };
            let (breaker, clock) = breaker_with(settings);
            fail(&breaker, 5);
            clock.advance(secs(30));
            let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
            let racers: Vec<_> = (0..RACERS)
                .map(|_| {
                    let (breaker, barrier) = (breaker.clone(), Arc::clone(&barrier));
                    tokio::spawn(async move {
                        barrier.wait().await;
                        breaker.try_acquire().ok()
                    })
                })
                .collect();
            let mut granted = Vec::new();
            for racer in racers {
                granted.extend(racer.await.expect("racer panicked"));
            }
            assert_eq!(granted.len(), max_calls as usize);
        }
    }
}

#[test]
fn probes_in_flight_never_exceed_the_limit_under_churn() {
    let settings = BreakerSettings {
        half_open_max_calls: 3,
        success_threshold: u32::MAX,
        ..Default::default()
    };
    let (breaker, clock) = breaker_with(settings);
    fail(&breaker, 5);
    clock.advance(secs(30));
    let in_flight = AtomicUsize::new(0);
    let peak = AtomicUsize::new(0);
    let granted = AtomicUsize::new(0);
    thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for round in 0..2_000 {
                    let Ok(permit) = breaker.try_acquire() else {
                        continue;
                    };
                    let holders = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(holders, Ordering::SeqCst);
                    granted.fetch_add(1, Ordering::SeqCst);
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    if round % 2 == 0 {
                        permit.ignore();
                    } else {
                        permit.success();
                    }
                }
            });
        }
    });
    assert!(peak.load(Ordering::SeqCst) <= 3);
    assert!(granted.load(Ordering::SeqCst) > 3);
    assert_eq!(breaker.state(), State::HalfOpen);
}

#[test]
fn permits_and_breakers_can_move_between_threads_and_tasks() {
    fn assert_send_sync_static<T: Send + Sync + 'static>() {}
    assert_send_sync_static::<Permit>();
    assert_send_sync_static::<CircuitBreaker>();
    assert_send_sync_static::<Rejected>();
}

// --- snapshot and restore ------------------------------------------------------

#[test]
fn a_closed_snapshot_round_trips_through_restore() {
    let (breaker, clock) = default_breaker();
    succeed(&breaker, 3);
    fail(&breaker, 3);
    breaker.try_acquire().expect("call admitted").ignore();
    let before = breaker.snapshot();
    assert_eq!(restored(before.clone(), &clock).snapshot(), before);
}

#[test]
fn a_stale_closed_snapshot_keeps_its_failure_streak_but_not_its_window() {
    let (breaker, clock) = default_breaker();
    fail(&breaker, 3);
    let saved = breaker.snapshot();
    clock.advance(secs(61));
    let s = restored(saved, &clock).snapshot();
    assert_eq!((s.consecutive_failures, s.window_calls), (3, 0));
}

#[test]
fn an_open_breaker_stays_open_across_a_restart() {
    let (breaker, clock) = opened_breaker();
    clock.advance(secs(10));
    let saved = breaker.snapshot();
    // A restart 5 s later: a fresh monotonic clock, the wall clock moved on.
    let after_restart = Arc::new(ManualClock::new(clock.wall_ms() + 5_000));
    let breaker = restored(saved.clone(), &after_restart);
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(retry_after_ms(&breaker), 15_000);
    let s = breaker.snapshot();
    assert_eq!(s.opened_at_wall_ms, saved.opened_at_wall_ms);
    assert_eq!(s.open_until_wall_ms, saved.open_until_wall_ms);
    assert_eq!(s.last_transition, saved.last_transition);
    assert_eq!(s.consecutive_failures, 5);
    after_restart.advance(secs(15));
    assert_eq!(breaker.state(), State::HalfOpen);
}

#[test]
fn a_wall_clock_jump_back_cannot_stretch_a_restored_open_period() {
    let (breaker, _) = opened_breaker();
    let saved = breaker.snapshot();
    let five_hours_earlier = Arc::new(ManualClock::new(WALL_START - 5 * 3_600_000));
    let breaker = restored(saved, &five_hours_earlier);
    assert_eq!(retry_after_ms(&breaker), 30_000);
}

#[test]
fn a_restored_open_period_is_clamped_to_the_period_of_its_open_count() {
    let (breaker, clock) = opened_breaker();
    clock.advance(secs(30));
    fail(&breaker, 1);
    clock.advance(secs(60));
    fail(&breaker, 1);
    let saved = breaker.snapshot();
    assert_eq!(saved.consecutive_opens, 3);
    let jumped_back = Arc::new(ManualClock::new(clock.wall_ms() - 5 * 3_600_000));
    let breaker = restored(saved, &jumped_back);
    assert_eq!(retry_after_ms(&breaker), 120_000);
}

#[test]
fn a_wall_clock_jump_forward_lets_a_restored_breaker_probe_at_once() {
    let (breaker, _) = opened_breaker();
    let saved = breaker.snapshot();
    let a_day_later = Arc::new(ManualClock::new(WALL_START + 86_400_000));
    assert_eq!(restored(saved, &a_day_later).state(), State::HalfOpen);
}

#[test]
fn a_half_open_snapshot_restores_as_open_with_the_recovery_timeout_elapsed() {
    let (breaker, clock) = opened_breaker();
    clock.advance(secs(30));
    let _in_flight = breaker.try_acquire().expect("probe admitted");
    let saved = breaker.snapshot();
    assert_eq!((saved.state, saved.probes_in_flight), (State::HalfOpen, 1));
    let (observer, seen) = recorder();
    let breaker = restored(saved, &clock).with_observer(observer);
    let probe = breaker.try_acquire().expect("a fresh probe is issued");
    assert!(probe.is_probe());
    assert_eq!(steps(&seen), [(State::Open, State::HalfOpen)]);
    assert_eq!(last_reason(&breaker), "recovery timeout elapsed");
    probe.failure("still down");
    assert_eq!(retry_after_ms(&breaker), 60_000, "the doubling continues");
}

#[test]
fn snapshots_survive_a_json_round_trip() {
    let (breaker, clock) = opened_breaker();
    clock.advance(secs(30));
    let _probe = breaker.try_acquire().expect("probe admitted");
    let snapshot = breaker.snapshot();
    let json = serde_json::to_string(&snapshot).expect("serialize");
    assert!(json.contains(r#""state":"half_open""#), "{json}");
    let back: BreakerSnapshot = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, snapshot);
}

// --- observer ------------------------------------------------------------------

#[test]
fn the_observer_sees_each_transition_exactly_once_in_order() {
    let (observer, seen) = recorder();
    let (breaker, clock) = default_breaker();
    let breaker = breaker.with_observer(observer);
    fail(&breaker, 5);
    clock.advance(secs(30));
    breaker.tick();
    breaker.tick();
    fail(&breaker, 1);
    clock.advance(secs(60));
    assert_eq!(breaker.state(), State::HalfOpen);
    succeed(&breaker, 2);
    breaker.tick();
    let _ = breaker.snapshot();
    use State::{Closed, HalfOpen, Open};
    assert_eq!(
        steps(&seen),
        [
            (Closed, Open),
            (Open, HalfOpen),
            (HalfOpen, Open),
            (Open, HalfOpen),
            (HalfOpen, Closed)
        ]
    );
    for (transition, snapshot) in seen.lock().expect("recorder lock").iter() {
        assert_eq!(snapshot.state, transition.to);
        assert_eq!(snapshot.last_transition.as_ref(), Some(transition));
    }
}

#[test]
fn the_observer_may_call_back_into_the_breaker() {
    let seen: Arc<Mutex<Vec<(State, State)>>> = Arc::default();
    let handle: Arc<OnceLock<CircuitBreaker>> = Arc::default();
    let observer: TransitionObserver = {
        let (seen, handle) = (Arc::clone(&seen), Arc::clone(&handle));
        Arc::new(move |transition, _| {
            seen.lock()
                .expect("seen lock")
                .push((transition.from, transition.to));
            // Entering half-open, the observer itself runs a probe that fails.
            if transition.to == State::HalfOpen
                && let Some(breaker) = handle.get()
                && let Ok(probe) = breaker.try_acquire()
            {
                probe.failure("checked from the observer");
            }
        })
    };
    let (breaker, clock) = default_breaker();
    let breaker = breaker.with_observer(observer);
    handle.set(breaker.clone()).expect("handle set once");
    fail(&breaker, 5);
    clock.advance(secs(30));
    breaker.tick();
    let seen = seen.lock().expect("seen lock").clone();
    use State::{Closed, HalfOpen, Open};
    assert_eq!(seen, [(Closed, Open), (Open, HalfOpen), (HalfOpen, Open)]);
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn a_panicking_observer_does_not_break_the_breaker() {
    let calls = Arc::new(AtomicUsize::new(0));
    let observer: TransitionObserver = {
        let calls = Arc::clone(&calls);
        Arc::new(move |_, _| {
            calls.fetch_add(1, Ordering::SeqCst);
            panic!("observer bug (expected by this test)");
        })
    };
    let (breaker, clock) = default_breaker();
    let breaker = breaker.with_observer(observer);
    fail(&breaker, 5);
    assert_eq!(breaker.state(), State::Open);
    clock.advance(secs(30));
    assert_eq!(breaker.state(), State::HalfOpen);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn a_transition_from_another_thread_waits_for_the_observer_and_keeps_its_order() {
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let (entered, wait_entered) = std::sync::mpsc::channel();
    let (release, wait_release) = std::sync::mpsc::channel::<()>();
    let wait_release = Mutex::new(wait_release);
    let observer: TransitionObserver = {
        let log = Arc::clone(&log);
        Arc::new(move |transition, _| {
            let push = |line: String| log.lock().expect("log lock").push(line);
            push(format!("start {}", transition.to));
            if transition.to == State::Open {
                entered.send(()).expect("test waits for the observer");
                // Bounded, so a failing assertion below cannot hang the test.
                let wait = wait_release.lock().expect("release lock");
                let _ = wait.recv_timeout(secs(10));
            }
            push(format!("end {}", transition.to));
        })
    };
    let (breaker, clock) = default_breaker();
    let breaker = breaker.with_observer(observer);
    thread::scope(|scope| {
        let opener = scope.spawn(|| fail(&breaker, 5));
        wait_entered.recv().expect("observer entered");
        clock.advance(secs(30));
        // The state moves at once; the notice waits for the busy observer.
        assert_eq!(breaker.state(), State::HalfOpen);
        assert_eq!(*log.lock().expect("log lock"), ["start OPEN"]);
        release.send(()).expect("observer waiting");
        opener.join().expect("opener panicked");
    });
    let log = log.lock().expect("log lock");
    assert_eq!(
        *log,
        ["start OPEN", "end OPEN", "start HALF_OPEN", "end HALF_OPEN"]
    );
}
