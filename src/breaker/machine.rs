//! The state machine of one breaker: `Closed` → `Open` → `HalfOpen` → `Closed`,
//! its permits and its records (state, transition, snapshot); see [`super`] for the
//! invariants it keeps.

use std::cell::Cell;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::settings::{BreakerSettings, Limits};
use crate::clock::Clock;

/// Reasons longer than this (in chars) are cut before they are stored in a transition.
const MAX_REASON_CHARS: usize = 200;
/// The failure-rate window is a ring of at most this many time buckets.
const WINDOW_BUCKETS: u64 = 60;
/// Finest bucket granularity of the failure-rate window.
const MIN_BUCKET_MS: u64 = 1_000;

// ---------------------------------------------------------------------------------------

/// The state of a breaker. Serialized as `"closed"`, `"open"`, `"half_open"`;
/// displayed as `CLOSED`, `OPEN`, `HALF_OPEN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Calls flow; outcomes are counted.
    Closed,
    /// Calls are rejected until the open period ends.
    Open,
    /// A limited number of probe calls decide between closing and re-opening.
    HalfOpen,
}

impl State {
    /// The serialized form (`closed`, `open`, `half_open`), handy as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Closed => "CLOSED",
            State::Open => "OPEN",
            State::HalfOpen => "HALF_OPEN",
        })
    }
}

/// One state change, as recorded in the events table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// State before the change.
    pub from: State,
    /// State after the change.
    pub to: State,
    /// Why, e.g. `5 consecutive failures (last: timeout)` or `probe timed out`.
    pub reason: String,
    /// When, in unix milliseconds.
    pub at_wall_ms: u64,
}

/// How many outcomes a breaker has seen since it was created (or restored), by kind.
///
/// These count what callers reported, including outcomes that arrived too late to
/// affect the state; probe timeouts are counted separately.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeTotals {
    /// Calls reported as successful.
    pub successes: u64,
    /// Calls reported as failed.
    pub failures: u64,
    /// Calls refused because the breaker was open or half-open with no free slot.
    pub rejected: u64,
    /// Calls resolved as neither (cancelled, cost limit, dropped permit).
    pub ignored: u64,
    /// Probes that were not resolved within `probe_timeout_s`.
    pub probe_timeouts: u64,
}

impl OutcomeTotals {
    fn count(&mut self, outcome: Outcome<'_>) {
        let counter = match outcome {
            Outcome::Success => &mut self.successes,
            Outcome::Failure(_) => &mut self.failures,
            Outcome::Ignored => &mut self.ignored,
        };
        *counter = counter.saturating_add(1);
    }
}

/// Everything needed to show a breaker or to bring it back after a restart.
///
/// Plain data with no skipped or defaulted fields, so it encodes with postcard as well
/// as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BreakerSnapshot {
    /// Current state.
    pub state: State,
    /// Consecutive failures counted in closed state (kept while open, reset on close).
    pub consecutive_failures: u32,
    /// Failures in the failure-rate window.
    pub window_failures: u32,
    /// Calls (successes and failures) in the failure-rate window.
    pub window_calls: u32,
    /// Probe successes so far in half-open; 0 in other states.
    pub half_open_successes: u32,
    /// Probes currently outstanding; 0 outside half-open.
    pub probes_in_flight: u32,
    /// When the breaker last opened (unix ms); `None` while closed.
    pub opened_at_wall_ms: Option<u64>,
    /// When the next probe may happen (unix ms); `Some` only while open.
    pub open_until_wall_ms: Option<u64>,
    /// Opens since the breaker was last closed; drives the doubling of the open period.
    pub consecutive_opens: u32,
    /// The most recent state change.
    pub last_transition: Option<Transition>,
    /// Outcome counters.
    pub totals: OutcomeTotals,
    /// When this snapshot was taken (unix ms).
    pub taken_at_wall_ms: u64,
}

/// Receives every transition with the snapshot taken right after it.
///
/// Called outside the breaker's lock, so it may log, write to storage or call back into
/// the breaker; calls are serialized and in order. Keep it short: while it runs, the
/// thread that delivers transitions waits for it. A panic is caught and logged.
pub type TransitionObserver = Arc<dyn Fn(&Transition, &BreakerSnapshot) + Send + Sync>;

/// A call refused by the breaker.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker {breaker} is {state}; next probe in {retry_after_ms} ms")]
#[non_exhaustive]
pub struct Rejected {
    /// Name of the breaker that refused.
    pub breaker: Arc<str>,
    /// `Open`, or `HalfOpen` when every probe slot is taken.
    pub state: State,
    /// When open: until the open period ends. When half-open: until the oldest
    /// outstanding probe times out (a slot may free up sooner).
    pub retry_after_ms: u64,
}

impl Rejected {
    /// [`Rejected::retry_after_ms`] as a `Duration`.
    pub fn retry_after(&self) -> Duration {
        Duration::from_millis(self.retry_after_ms)
    }
}

// ---------------------------------------------------------------------------------------
// The breaker
// ---------------------------------------------------------------------------------------

/// A circuit breaker guarding one dependency. Cheap to clone; clones share state.
///
/// Callers either take a [`Permit`] with [`try_acquire`](Self::try_acquire) and resolve
/// it, or use [`can_execute`](Self::can_execute) followed by
/// [`record_success`](Self::record_success) / [`record_failure`](Self::record_failure).
#[derive(Clone)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.shared.name)
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

impl CircuitBreaker {
    /// A closed breaker. Settings should have passed [`BreakerSettings::validate`];
    /// invalid values are clamped to the nearest valid one (and logged) rather than
    /// panicking.
    pub fn new(name: impl Into<String>, settings: BreakerSettings, clock: Arc<dyn Clock>) -> Self {
        let name: Arc<str> = Arc::from(name.into());
        if let Err(error) = settings.validate() {
            tracing::warn!(breaker = %name, %error, "invalid breaker settings, clamping them");
        }
        let limits = Limits::new(&settings);
        let core = Core::new(&limits, clock.now_ms());
        Self {
            shared: Arc::new(Shared {
                name,
                settings,
                limits,
                clock,
                core: Mutex::new(core),
            }),
        }
    }

    /// Rebuilds a breaker from a persisted snapshot, without reporting a transition.
    ///
    /// - `Open` stays open for the time it had left, measured on the wall clock and
    ///   clamped to `[0, open period]` (the period for its `consecutive_opens`, at most
    ///   `max_recovery_timeout_s`), so a wall-clock jump cannot keep it open for hours.
    /// - `HalfOpen` comes back `Open` with its open period already over: the next call
    ///   moves it to half-open and fresh probes are issued.
    /// - `Closed` keeps its consecutive failures, and its window counts if the snapshot
    ///   is younger than the window (they are replayed at the current instant).
    ///
    /// Totals and the last transition carry over.
    pub fn restore(
        name: impl Into<String>,
        settings: BreakerSettings,
        clock: Arc<dyn Clock>,
        snapshot: BreakerSnapshot,
    ) -> Self {
        let breaker = Self::new(name, settings, clock);
        breaker
            .shared
            .with_core(|core, ctx| core.restore(snapshot, ctx));
        breaker
    }

    /// Sets the observer that receives every later transition.
    pub fn with_observer(self, observer: TransitionObserver) -> Self {
        self.shared.lock_core().observer = Some(observer);
        self
    }

    /// The name given at construction, e.g. `BOT-001/agent`.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The settings given at construction.
    pub fn settings(&self) -> &BreakerSettings {
        &self.shared.settings
    }

    /// Asks to make one call. Closed: always granted. Open: rejected. Half-open: granted
    /// as a probe while fewer than `half_open_max_calls` probes are outstanding.
    ///
    /// The permit must be resolved with [`Permit::success`], [`Permit::failure`] or
    /// [`Permit::ignore`]; dropping it unresolved counts as ignore.
    pub fn try_acquire(&self) -> Result<Permit, Rejected> {
        match self.shared.with_core(|core, ctx| core.admit(ctx, false)) {
            Ok(ticket) => Ok(Permit {
                shared: Arc::clone(&self.shared),
                ticket,
                resolved: false,
            }),
            Err(refusal) => Err(self.rejected(refusal)),
        }
    }

    /// Whether a call may go ahead now, for callers that report with
    /// [`record_success`](Self::record_success) / [`record_failure`](Self::record_failure)
    /// instead of holding a [`Permit`].
    ///
    /// - Closed: `true`, and nothing is reserved.
    /// - Open: `false` (counted as rejected).
    /// - Half-open: if a probe slot is free, takes it and returns `true`. The slot is
    ///   released by the next `record_*` call, or, if none comes, by the probe timeout —
    ///   which counts as a failure. Callers whose call may be cancelled should use
    ///   [`try_acquire`](Self::try_acquire) and [`Permit::ignore`] instead.
    pub fn can_execute(&self) -> bool {
        self.shared
            .with_core(|core, ctx| core.admit(ctx, true))
            .is_ok()
    }

    /// Reports a successful call made without a permit. Closed: counts. Half-open:
    /// resolves the oldest probe taken by `can_execute` (or counts as a probe success
    /// if there is none). Open: only the totals change.
    pub fn record_success(&self) {
        self.shared
            .with_core(|core, ctx| core.record_without_permit(Outcome::Success, ctx));
    }

    /// Reports a failed call made without a permit; see
    /// [`record_success`](Self::record_success) for how each state treats it.
    pub fn record_failure(&self, reason: &str) {
        self.shared
            .with_core(|core, ctx| core.record_without_permit(Outcome::Failure(reason), ctx));
    }

    /// The current state, after firing any due timer.
    pub fn state(&self) -> State {
        self.shared.with_core(|core, _| core.state())
    }

    /// A consistent snapshot of the breaker, after firing any due timer.
    pub fn snapshot(&self) -> BreakerSnapshot {
        self.shared.with_core(|core, ctx| {
            let wall = ctx.clock.wall_ms();
            core.snapshot(ctx, wall)
        })
    }

    /// Fires due timers (end of the open period, probe timeouts) even when no call
    /// arrives. The owner should call it every few seconds.
    pub fn tick(&self) {
        self.shared.with_core(|_, _| ());
    }

    fn rejected(&self, refusal: Refusal) -> Rejected {
        Rejected {
            breaker: Arc::clone(&self.shared.name),
            state: refusal.state,
            retry_after_ms: refusal.retry_after_ms,
        }
    }
}

/// The right to make one call. Resolve it with exactly one of its methods; dropping it
/// unresolved counts as [`Permit::ignore`]. `Send + 'static`: it may move into a task.
#[must_use = "a permit must be resolved with success(), failure() or ignore()"]
pub struct Permit {
    shared: Arc<Shared>,
    ticket: Ticket,
    resolved: bool,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("breaker", &self.shared.name)
            .field("ticket", &self.ticket)
            .finish()
    }
}

impl Permit {
    /// The call succeeded.
    pub fn success(self) {
        self.resolve(Outcome::Success);
    }

    /// The call failed because of the dependency; `reason` ends up in the transition
    /// if this failure opens the breaker (cut to 200 characters).
    pub fn failure(self, reason: &str) {
        self.resolve(Outcome::Failure(reason));
    }

    /// The call says nothing about the dependency (cancelled by the user, stopped by a
    /// cost limit): counts as neither success nor failure, and frees a probe slot.
    pub fn ignore(self) {
        self.resolve(Outcome::Ignored);
    }

    /// Whether this permit is a half-open probe.
    pub fn is_probe(&self) -> bool {
        matches!(self.ticket, Ticket::Probe { .. })
    }

    fn resolve(mut self, outcome: Outcome<'_>) {
        self.resolved = true;
        self.shared.resolve(self.ticket, outcome);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.resolved {
            self.resolved = true;
            self.shared.resolve(self.ticket, Outcome::Ignored);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Internals
// ---------------------------------------------------------------------------------------

/// What a permit was issued for: a call in one closed period, or one probe.
#[derive(Clone, Copy, Debug)]
enum Ticket {
    Closed { epoch: u64 },
    Probe { id: u64 },
}

#[derive(Clone, Copy, Debug)]
enum Outcome<'r> {
    Success,
    Failure(&'r str),
    Ignored,
}

struct Refusal {
    state: State,
    retry_after_ms: u64,
}

struct Shared {
    name: Arc<str>,
    settings: BreakerSettings,
    limits: Limits,
    clock: Arc<dyn Clock>,
    // A std Mutex rather than an async one: it is never held across an `.await`, and
    // every critical section is a few field updates (no I/O, no user code), so
    // blocking on it is cheaper than any async handshake.
    core: Mutex<Core>,
}

/// Everything a critical section needs besides the core itself.
struct Ctx<'a> {
    limits: &'a Limits,
    clock: &'a dyn Clock,
    /// Monotonic time, read inside the lock so it never goes backwards between
    /// critical sections, and only when needed: a closed-state grant needs none.
    now: Cell<Option<u64>>,
}

impl Ctx<'_> {
    fn now(&self) -> u64 {
        match self.now.get() {
            Some(now) => now,
            None => {
                let now = self.clock.now_ms();
                self.now.set(Some(now));
                now
            }
        }
    }
}

impl Shared {
    fn lock_core(&self) -> MutexGuard<'_, Core> {
        // No user code runs under the lock, so a poisoned lock still holds a consistent
        // core; carry on rather than panic.
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` under the lock after firing due timers, then, outside the lock,
    /// delivers any transitions it produced.
    fn with_core<R>(&self, f: impl FnOnce(&mut Core, &Ctx<'_>) -> R) -> R {
        let (result, delivery) = {
            let mut core = self.lock_core();
            let ctx = Ctx {
                limits: &self.limits,
                clock: self.clock.as_ref(),
                now: Cell::new(None),
            };
            core.fire_due_timers(&ctx);
            let result = f(&mut core, &ctx);
            (result, core.claim_delivery())
        };
        if let Some(delivery) = delivery {
            self.deliver(delivery);
        }
        result
    }

    fn resolve(&self, ticket: Ticket, outcome: Outcome<'_>) {
        self.with_core(|core, ctx| core.resolve(ticket, outcome, ctx));
    }

    /// Announces transitions until none is pending. Only one thread delivers at a time
    /// (the `delivering` flag), which keeps transitions in order and lets the observer
    /// call back into the breaker without deadlocking.
    fn deliver(&self, mut delivery: Delivery) {
        loop {
            for notice in &delivery.notices {
                self.announce(notice, delivery.observer.as_ref());
            }
            let next = self.lock_core().continue_delivery();
            match next {
                Some(more) => delivery = more,
                None => return,
            }
        }
    }

    fn announce(&self, notice: &Notice, observer: Option<&TransitionObserver>) {
        let t = &notice.transition;
        if t.to == State::Open {
            tracing::warn!(breaker = %self.name, from = %t.from, to = %t.to, reason = %t.reason, "circuit breaker opened");
        } else {
            tracing::info!(breaker = %self.name, from = %t.from, to = %t.to, reason = %t.reason, "circuit breaker state changed");
        }
        if let Some(observer) = observer {
            let outcome = catch_unwind(AssertUnwindSafe(|| observer(t, &notice.snapshot)));
            if outcome.is_err() {
                tracing::error!(breaker = %self.name, from = %t.from, to = %t.to, "circuit breaker observer panicked");
            }
        }
    }
}

struct Notice {
    transition: Transition,
    snapshot: BreakerSnapshot,
}

struct Delivery {
    notices: Vec<Notice>,
    observer: Option<TransitionObserver>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Closed,
    Open { until_ms: u64 },
    HalfOpen { successes: u32 },
}

#[derive(Clone, Copy, Debug)]
struct Probe {
    id: u64,
    deadline_ms: u64,
    /// Taken by `can_execute`; released by the next `record_*` call.
    detached: bool,
}

/// The mutable state behind the lock.
struct Core {
    phase: Phase,
    /// Outstanding probes, oldest first; empty outside half-open.
    probes: Vec<Probe>,
    /// Bumped by every transition; a closed-state permit only counts in its own epoch.
    epoch: u64,
    next_probe_id: u64,
    consecutive_failures: u32,
    window: RollingWindow,
    consecutive_opens: u32,
    opened_at_wall_ms: Option<u64>,
    totals: OutcomeTotals,
    last_transition: Option<Transition>,
    observer: Option<TransitionObserver>,
    pending: Vec<Notice>,
    delivering: bool,
}

impl Core {
    fn new(limits: &Limits, now: u64) -> Self {
        Self {
            phase: Phase::Closed,
            probes: Vec::new(),
            epoch: 0,
            next_probe_id: 0,
            consecutive_failures: 0,
            window: RollingWindow::new(limits.window_ms, now),
            consecutive_opens: 0,
            opened_at_wall_ms: None,
            totals: OutcomeTotals::default(),
            last_transition: None,
            observer: None,
            pending: Vec::new(),
            delivering: false,
        }
    }

    fn state(&self) -> State {
        match self.phase {
            Phase::Closed => State::Closed,
            Phase::Open { .. } => State::Open,
            Phase::HalfOpen { .. } => State::HalfOpen,
        }
    }

    /// The lazy timers: the end of the open period, then probe deadlines.
    fn fire_due_timers(&mut self, ctx: &Ctx<'_>) {
        if let Phase::Open { until_ms } = self.phase
            && ctx.now() >= until_ms
        {
            let reason = "recovery timeout elapsed".to_owned();
            self.enter(Phase::HalfOpen { successes: 0 }, reason, ctx);
        }
        if self.probes.is_empty() {
            return;
        }
        let now = ctx.now();
        let expired = self
            .probes
            .iter()
            .filter(|probe| probe.deadline_ms <= now)
            .count() as u64;
        if expired > 0 {
            self.totals.probe_timeouts = self.totals.probe_timeouts.saturating_add(expired);
            self.reopen("probe timed out".to_owned(), ctx);
        }
    }

    fn admit(&mut self, ctx: &Ctx<'_>, detached: bool) -> Result<Ticket, Refusal> {
        match self.phase {
            Phase::Closed => Ok(Ticket::Closed { epoch: self.epoch }),
            Phase::Open { until_ms } => {
                Err(self.refuse(State::Open, until_ms.saturating_sub(ctx.now())))
            }
            Phase::HalfOpen { .. } => self.admit_probe(ctx, detached),
        }
    }

    fn admit_probe(&mut self, ctx: &Ctx<'_>, detached: bool) -> Result<Ticket, Refusal> {
        if self.probes.len() >= ctx.limits.half_open_max_calls {
            let oldest_deadline = self.probes.iter().map(|p| p.deadline_ms).min();
            let wait = oldest_deadline
                .unwrap_or(ctx.now())
                .saturating_sub(ctx.now());
            return Err(self.refuse(State::HalfOpen, wait));
        }
        let id = self.next_probe_id;
        self.next_probe_id = self.next_probe_id.wrapping_add(1);
        self.probes.push(Probe {
            id,
            deadline_ms: ctx.now().saturating_add(ctx.limits.probe_timeout_ms),
            detached,
        });
        Ok(Ticket::Probe { id })
    }

    fn refuse(&mut self, state: State, retry_after_ms: u64) -> Refusal {
        self.totals.rejected = self.totals.rejected.saturating_add(1);
        Refusal {
            state,
            retry_after_ms,
        }
    }

    fn resolve(&mut self, ticket: Ticket, outcome: Outcome<'_>, ctx: &Ctx<'_>) {
        self.totals.count(outcome);
        match ticket {
            Ticket::Closed { epoch } => {
                if epoch == self.epoch && self.phase == Phase::Closed {
                    self.apply_closed(outcome, ctx);
                }
            }
            Ticket::Probe { id } => {
                // Absent when the probe timed out or its half-open period ended.
                if let Some(index) = self.probes.iter().position(|p| p.id == id) {
                    self.probes.remove(index);
                    self.apply_probe(outcome, ctx);
                }
            }
        }
    }

    fn record_without_permit(&mut self, outcome: Outcome<'_>, ctx: &Ctx<'_>) {
        self.totals.count(outcome);
        match self.phase {
            Phase::Closed => self.apply_closed(outcome, ctx),
            Phase::HalfOpen { .. } => {
                if let Some(index) = self.probes.iter().position(|p| p.detached) {
                    self.probes.remove(index);
                }
                self.apply_probe(outcome, ctx);
            }
            Phase::Open { .. } => {}
        }
    }

    fn apply_closed(&mut self, outcome: Outcome<'_>, ctx: &Ctx<'_>) {
        match outcome {
            Outcome::Success => {
                self.consecutive_failures = 0;
                self.window.record(ctx.now(), false);
            }
            Outcome::Failure(reason) => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.window.record(ctx.now(), true);
                if let Some(why) = self.trip_reason(reason, ctx) {
                    self.consecutive_opens = 1;
                    self.enter_open(why, ctx);
                }
            }
            Outcome::Ignored => {}
        }
    }

    /// Why the breaker must open after a failure in closed state, if it must.
    fn trip_reason(&mut self, last_reason: &str, ctx: &Ctx<'_>) -> Option<String> {
        if self.consecutive_failures >= ctx.limits.failure_threshold {
            return Some(format!(
                "{} consecutive failures (last: {})",
                self.consecutive_failures,
                bounded_reason(last_reason)
            ));
        }
        let (calls, failures) = self.window.counts(ctx.now());
        ctx.limits.rate_exceeded(calls, failures).then(|| {
            format!(
                "failure rate {:.2} over {}s ({calls} calls)",
                failures as f64 / calls as f64,
                ctx.limits.window_ms / 1_000
            )
        })
    }

    fn apply_probe(&mut self, outcome: Outcome<'_>, ctx: &Ctx<'_>) {
        let Phase::HalfOpen { successes } = self.phase else {
            return;
        };
        match outcome {
            Outcome::Success => {
                let successes = successes.saturating_add(1);
                if successes >= ctx.limits.success_threshold {
                    self.close(format!("{successes} successes in half-open"), ctx);
                } else {
                    self.phase = Phase::HalfOpen { successes };
                }
            }
            Outcome::Failure(reason) => {
                self.reopen(format!("probe failed: {}", bounded_reason(reason)), ctx);
            }
            Outcome::Ignored => {}
        }
    }

    fn reopen(&mut self, reason: String, ctx: &Ctx<'_>) {
        self.consecutive_opens = self.consecutive_opens.saturating_add(1);
        self.enter_open(reason, ctx);
    }

    fn enter_open(&mut self, reason: String, ctx: &Ctx<'_>) {
        let period = ctx.limits.open_period_ms(self.consecutive_opens);
        let until_ms = ctx.now().saturating_add(period);
        self.enter(Phase::Open { until_ms }, reason, ctx);
    }

    fn close(&mut self, reason: String, ctx: &Ctx<'_>) {
        self.consecutive_opens = 0;
        self.consecutive_failures = 0;
        self.window.clear();
        self.enter(Phase::Closed, reason, ctx);
    }

    /// Switches phase and queues the transition for delivery outside the lock.
    fn enter(&mut self, phase: Phase, reason: String, ctx: &Ctx<'_>) {
        let wall = ctx.clock.wall_ms();
        let from = self.state();
        self.phase = phase;
        self.epoch = self.epoch.wrapping_add(1);
        self.probes.clear();
        match phase {
            Phase::Open { .. } => self.opened_at_wall_ms = Some(wall),
            Phase::Closed => self.opened_at_wall_ms = None,
            Phase::HalfOpen { .. } => {}
        }
        let transition = Transition {
            from,
            to: self.state(),
            reason,
            at_wall_ms: wall,
        };
        self.last_transition = Some(transition.clone());
        let snapshot = self.snapshot(ctx, wall);
        self.pending.push(Notice {
            transition,
            snapshot,
        });
    }

    fn snapshot(&mut self, ctx: &Ctx<'_>, wall: u64) -> BreakerSnapshot {
        let (calls, failures) = self.window.counts(ctx.now());
        let (half_open_successes, open_until_wall_ms) = match self.phase {
            Phase::Closed => (0, None),
            Phase::Open { until_ms } => {
                let remaining = until_ms.saturating_sub(ctx.now());
                (0, Some(wall.saturating_add(remaining)))
            }
            Phase::HalfOpen { successes } => (successes, None),
        };
        BreakerSnapshot {
            state: self.state(),
            consecutive_failures: self.consecutive_failures,
            window_failures: saturate_u32(failures),
            window_calls: saturate_u32(calls),
            half_open_successes,
            probes_in_flight: saturate_u32(self.probes.len() as u64),
            opened_at_wall_ms: self.opened_at_wall_ms,
            open_until_wall_ms,
            consecutive_opens: self.consecutive_opens,
            last_transition: self.last_transition.clone(),
            totals: self.totals,
            taken_at_wall_ms: wall,
        }
    }

    fn restore(&mut self, mut snapshot: BreakerSnapshot, ctx: &Ctx<'_>) {
        let wall = ctx.clock.wall_ms();
        self.totals = snapshot.totals;
        self.last_transition = snapshot.last_transition.take();
        self.consecutive_failures = snapshot.consecutive_failures;
        let opens = snapshot.consecutive_opens.max(1);
        let period = ctx.limits.open_period_ms(opens);
        let remaining = match snapshot.state {
            State::Closed => {
                let age_ms = wall.saturating_sub(snapshot.taken_at_wall_ms);
                self.restore_window(&snapshot, age_ms, ctx);
                return;
            }
            // A missing deadline is treated as a full open period: stay on the safe side.
            State::Open => snapshot
                .open_until_wall_ms
                .map_or(period, |until| until.saturating_sub(wall))
                .min(period),
            State::HalfOpen => 0,
        };
        self.consecutive_opens = opens;
        self.opened_at_wall_ms = Some(snapshot.opened_at_wall_ms.unwrap_or(wall));
        self.phase = Phase::Open {
            until_ms: ctx.now().saturating_add(remaining),
        };
    }

    /// Replays the window counts of a snapshot younger than the window at `now`: they
    /// then expire up to one window late, which errs on the side of caution.
    fn restore_window(&mut self, snapshot: &BreakerSnapshot, age_ms: u64, ctx: &Ctx<'_>) {
        if age_ms < ctx.limits.window_ms {
            let failures = snapshot.window_failures.min(snapshot.window_calls);
            self.window.add(ctx.now(), snapshot.window_calls, failures);
        }
    }

    fn claim_delivery(&mut self) -> Option<Delivery> {
        if self.delivering || self.pending.is_empty() {
            return None;
        }
        self.delivering = true;
        Some(self.take_delivery())
    }

    fn continue_delivery(&mut self) -> Option<Delivery> {
        if self.pending.is_empty() {
            self.delivering = false;
            return None;
        }
        Some(self.take_delivery())
    }

    fn take_delivery(&mut self) -> Delivery {
        Delivery {
            notices: std::mem::take(&mut self.pending),
            observer: self.observer.clone(),
        }
    }
}

fn saturate_u32(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// A reason fit for a transition record: trimmed, non-empty, at most 200 chars.
pub(super) fn bounded_reason(reason: &str) -> &str {
    let reason = reason.trim();
    if reason.is_empty() {
        return "unspecified";
    }
    match reason.char_indices().nth(MAX_REASON_CHARS) {
        Some((cut, _)) => reason.get(..cut).unwrap_or(reason),
        None => reason,
    }
}

/// Calls and failures over a sliding time window, kept in a fixed ring of buckets so
/// memory and cost stay bounded whatever the call volume.
///
/// Buckets are `window / 60` wide (at least 1 s). A call leaves the window between
/// `window − bucket` and `window` after it was recorded — never later.
#[derive(Debug)]
struct RollingWindow {
    bucket_ms: u64,
    buckets: Vec<Bucket>,
    /// Absolute number (`time / bucket_ms`) of the newest bucket.
    newest: u64,
    calls: u64,
    failures: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    calls: u32,
    failures: u32,
}

impl RollingWindow {
    fn new(window_ms: u64, now: u64) -> Self {
        let bucket_ms = (window_ms / WINDOW_BUCKETS).max(MIN_BUCKET_MS);
        // At most WINDOW_BUCKETS: bucket_ms >= 1000 makes the rounding error < 1.
        let len = (window_ms / bucket_ms).clamp(1, WINDOW_BUCKETS) as usize;
        Self {
            bucket_ms,
            buckets: vec![Bucket::default(); len],
            newest: now / bucket_ms,
            calls: 0,
            failures: 0,
        }
    }

    fn record(&mut self, now: u64, failed: bool) {
        self.add(now, 1, u32::from(failed));
    }

    fn add(&mut self, now: u64, calls: u32, failures: u32) {
        self.slide(now);
        let slot = self.slot(self.newest);
        let bucket = &mut self.buckets[slot];
        let (calls_before, failures_before) = (bucket.calls, bucket.failures);
        bucket.calls = bucket.calls.saturating_add(calls);
        bucket.failures = bucket.failures.saturating_add(failures);
        // Totals follow what the bucket really gained, so expiry subtracts exactly.
        self.calls += u64::from(bucket.calls - calls_before);
        self.failures += u64::from(bucket.failures - failures_before);
    }

    fn counts(&mut self, now: u64) -> (u64, u64) {
        self.slide(now);
        (self.calls, self.failures)
    }

    fn clear(&mut self) {
        self.buckets.fill(Bucket::default());
        self.calls = 0;
        self.failures = 0;
    }

    /// Expires the buckets that fell out of the window by `now`.
    fn slide(&mut self, now: u64) {
        let current = now / self.bucket_ms;
        if current <= self.newest {
            return;
        }
        let len = self.buckets.len() as u64;
        if current - self.newest >= len {
            self.clear();
        } else {
            for number in self.newest + 1..=current {
                let slot = self.slot(number);
                let expired = std::mem::take(&mut self.buckets[slot]);
                self.calls -= u64::from(expired.calls);
                self.failures -= u64::from(expired.failures);
            }
        }
        self.newest = current;
    }

    fn slot(&self, number: u64) -> usize {
        // The remainder is below buckets.len(), so it fits in usize.
        (number % self.buckets.len() as u64) as usize
    }
}
