//! The service's one clock: wall-clock milliseconds that never run backwards, and
//! the [`Clock`] handle through which the parts that measure durations (breakers,
//! monitors) read it, so that tests drive them with a [`ManualClock`] instead of
//! sleeping.
//!
//! Every stored time (queue positions, retry times, events, samples, alerts) comes
//! from [`now_ms`]. The wall clock can jump: NTP stepping it at boot, a VM
//! resumed, an operator's `date -s`. A forward jump is followed, since the clock is
//! right again afterwards. A backward jump is not: the reading keeps counting
//! from where it was, at the monotonic clock's rate, until the wall clock catches
//! up. Without this, a jump back of two hours would make every task queued in the
//! last two hours look "not due yet" and stall the queue, and new tasks would
//! jump ahead of older ones. At start-up [`resume_after`] lifts the reading to the
//! newest time the store holds, so a clock set back while the service was down
//! does not reorder the queue either.
//!
//! Invariants: readings never decrease, across threads; they advance at least as
//! fast as the monotonic clock; they are never behind the wall clock.
//!
//! The price: a clock that was wrongly fast (a board booting hours ahead before
//! NTP corrects it) keeps the readings ahead until the wall clock catches up,
//! across restarts too (bounded by [`MAX_RESUME_AHEAD_MS`]); a warning is logged
//! whenever the reading runs more than a minute ahead of the wall clock.
//!
//! Tests move the wall clock of a running service through the file named by
//! `AGENTLAB_TEST_CLOCK_SKEW_FILE` (milliseconds to add to the wall clock, re-read
//! every 50 ms); nothing else reads that variable.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How far ahead of the wall clock a stored time may be and still be resumed
/// from; beyond it the stored time is taken as wrong and the wall clock wins.
pub(crate) const MAX_RESUME_AHEAD_MS: u64 = 24 * 3_600_000;

/// How far ahead of the wall clock the reading may run before a warning.
const AHEAD_WARNING_MS: u64 = 60_000;

/// Environment variable naming the test skew file.
pub const TEST_SKEW_FILE_ENV: &str = "AGENTLAB_TEST_CLOCK_SKEW_FILE";

struct ServiceClock {
    origin: Instant,
    /// Reading = `origin.elapsed()` + offset; only ever raised.
    offset_ms: AtomicU64,
    /// Test skew added to the wall clock.
    skew_ms: AtomicI64,
    /// When (elapsed ms) the last "ahead of the wall clock" warning was logged.
    warned_at_ms: AtomicU64,
}

static CLOCK: LazyLock<ServiceClock> = LazyLock::new(ServiceClock::new);

/// Milliseconds since the Unix epoch, never less than an earlier reading.
pub fn now_ms() -> u64 {
    CLOCK.now_ms()
}

/// Makes later readings no earlier than `stored_ms` (the newest time the store
/// holds), unless that is more than [`MAX_RESUME_AHEAD_MS`] ahead of the wall
/// clock. Returns how far the reading was lifted, ms.
pub(crate) fn resume_after(stored_ms: u64) -> u64 {
    CLOCK.resume_after(stored_ms)
}

impl ServiceClock {
    fn new() -> Self {
        ServiceClock {
            origin: Instant::now(),
            offset_ms: AtomicU64::new(0),
            skew_ms: AtomicI64::new(0),
            warned_at_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        // The wall clock first: a pause between the two reads then makes the
        // offset smaller, never larger than it should be.
        let wall = self.wall_ms();
        let elapsed = self.elapsed_ms();
        let wall_offset = wall.saturating_sub(elapsed);
        // Follow the wall clock forward; never back.
        let previous = self.offset_ms.fetch_max(wall_offset, Ordering::AcqRel);
        let reading = elapsed + previous.max(wall_offset);
        if reading > wall + AHEAD_WARNING_MS {
            self.warn_ahead(reading - wall, elapsed);
        }
        reading
    }

    /// Logs, at most once an hour, that the reading is ahead of the wall clock.
    fn warn_ahead(&self, ahead_ms: u64, elapsed: u64) {
        let last = self.warned_at_ms.load(Ordering::Relaxed);
        let due = last == 0 || elapsed.saturating_sub(last) >= 3_600_000;
        if due
            && self
                .warned_at_ms
                .compare_exchange(last, elapsed.max(1), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                ahead_s = ahead_ms / 1000,
                "the wall clock was set back: stored times run ahead of it until it catches up"
            );
        }
    }

    fn resume_after(&self, stored_ms: u64) -> u64 {
        let before = self.now_ms();
        if stored_ms <= before {
            return 0;
        }
        let ahead = stored_ms.saturating_sub(self.wall_ms());
        if ahead > MAX_RESUME_AHEAD_MS {
            tracing::warn!(
                ahead_hours = ahead / 3_600_000,
                "the store holds times far ahead of the wall clock; trusting the wall clock"
            );
            return 0;
        }
        let offset = stored_ms.saturating_sub(self.elapsed_ms());
        self.offset_ms.fetch_max(offset, Ordering::AcqRel);
        tracing::warn!(
            behind_ms = stored_ms - before,
            "the wall clock is behind the newest stored time; counting on from there"
        );
        stored_ms - before
    }

    fn elapsed_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn wall_ms(&self) -> u64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        real.saturating_add_signed(self.skew_ms.load(Ordering::Relaxed))
    }
}

/// Starts re-reading the test skew file when `AGENTLAB_TEST_CLOCK_SKEW_FILE` is
/// set (tests only; see the module comment).
pub(crate) fn watch_test_skew() {
    let Some(path) = std::env::var_os(TEST_SKEW_FILE_ENV) else {
        return;
    };
    let read_skew = |path: &std::ffi::OsStr| {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(skew) = text.trim().parse::<i64>()
        {
            let previous = CLOCK.skew_ms.swap(skew, Ordering::Relaxed);
            // Tests wait for this line instead of sleeping past the next re-read.
            if previous != skew {
                tracing::info!(skew_ms = skew, "test clock skew applied");
            }
        }
    };
    // Once now, so start-up already runs on the skewed clock.
    read_skew(&path);
    let spawned = std::thread::Builder::new()
        .name("test-clock".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(50));
                read_skew(&path);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot watch the test clock skew file");
    }
}

/// Time as a part of the service reads it; injectable so tests never sleep.
pub trait Clock: Send + Sync {
    /// Monotonic milliseconds since an arbitrary fixed origin; never decreases.
    /// Every duration (open period, window, probe timeout) is measured with it.
    fn now_ms(&self) -> u64;
    /// Wall-clock time as unix milliseconds (UTC), as [`now_ms`] reads it. It may
    /// jump forward, so it only labels transitions, snapshots and samples.
    fn wall_ms(&self) -> u64;
}

/// The real clock: monotonic time since the service clock's origin, and the
/// service clock ([`now_ms`]) as the wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl SystemClock {
    /// Returns the system clock.
    pub fn new() -> Self {
        Self
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        CLOCK.elapsed_ms()
    }

    fn wall_ms(&self) -> u64 {
        now_ms()
    }
}

/// A clock that only moves when told to, for tests. Monotonic time starts at 0.
#[derive(Debug)]
pub struct ManualClock {
    mono_ms: AtomicU64,
    wall_ms: AtomicU64,
}

impl ManualClock {
    /// A clock at monotonic 0 whose wall clock reads `wall_ms` (unix milliseconds).
    pub fn new(wall_ms: u64) -> Self {
        Self {
            mono_ms: AtomicU64::new(0),
            wall_ms: AtomicU64::new(wall_ms),
        }
    }

    /// Moves both the monotonic and the wall clock forward.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        add_saturating(&self.mono_ms, ms);
        add_saturating(&self.wall_ms, ms);
    }

    /// Sets the wall clock alone, as an NTP step or a manual change would.
    pub fn set_wall_ms(&self, wall_ms: u64) {
        self.wall_ms.store(wall_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.mono_ms.load(Ordering::SeqCst)
    }

    fn wall_ms(&self) -> u64 {
        self.wall_ms.load(Ordering::SeqCst)
    }
}

fn add_saturating(counter: &AtomicU64, ms: u64) {
    // The closure always returns Some, so this cannot fail.
    let _ = counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
        Some(v.saturating_add(ms))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;

    #[test]
    fn readings_follow_the_wall_clock_forward_but_never_back() {
        let clock = ServiceClock::new();
        let start = clock.now_ms();
        clock.skew_ms.store(2 * HOUR as i64, Ordering::Relaxed);
        let ahead = clock.now_ms();
        assert!(ahead >= start + 2 * HOUR, "forward jump not followed");
        clock.skew_ms.store(-(HOUR as i64), Ordering::Relaxed);
        let after_back = clock.now_ms();
        assert!(after_back >= ahead, "went back: {ahead} -> {after_back}");
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            clock.now_ms() >= after_back + 20,
            "stopped counting after a jump back"
        );
    }

    #[test]
    fn readings_never_decrease_across_threads() {
        let clock = ServiceClock::new();
        std::thread::scope(|scope| {
            for t in 0..4 {
                let clock = &clock;
                scope.spawn(move || {
                    let mut last = 0;
                    for i in 0..20_000 {
                        if t == 0 && i % 1000 == 0 {
                            let skew = if i % 2000 == 0 { -60_000 } else { 0 };
                            clock.skew_ms.store(skew, Ordering::Relaxed);
                        }
                        let now = clock.now_ms();
                        assert!(now >= last, "{last} -> {now}");
                        last = now;
                    }
                });
            }
        });
    }

    #[test]
    fn resuming_lifts_the_reading_unless_the_stored_time_is_absurd() {
        let clock = ServiceClock::new();
        let now = clock.now_ms();
        assert_eq!(clock.resume_after(now.saturating_sub(1_000)), 0);
        let later = clock.now_ms() + 60_000;
        assert!(clock.resume_after(later) > 0);
        assert!(clock.now_ms() >= later);
        let absurd = clock.now_ms() + MAX_RESUME_AHEAD_MS + HOUR;
        assert_eq!(clock.resume_after(absurd), 0);
        assert!(clock.now_ms() < absurd);
    }

    #[test]
    fn the_system_clock_is_monotonic_and_its_wall_clock_is_plausible() {
        let clock = SystemClock::new();
        let first = clock.now_ms();
        assert!(clock.now_ms() >= first);
        assert!(clock.wall_ms() > 1_600_000_000_000);
    }

    #[test]
    fn the_system_clock_measures_from_the_service_clock_origin_and_reads_its_wall() {
        let system = SystemClock::new();
        let elapsed_before = CLOCK.elapsed_ms();
        let wall_before = now_ms();
        let (mono, wall) = (system.now_ms(), system.wall_ms());
        assert!(mono >= elapsed_before && mono <= CLOCK.elapsed_ms());
        assert!(wall >= wall_before && wall <= now_ms());
    }

    #[test]
    fn the_manual_clock_moves_only_when_told() {
        const WALL_START: u64 = 1_700_000_000_000;
        let clock = ManualClock::new(WALL_START);
        assert_eq!((clock.now_ms(), clock.wall_ms()), (0, WALL_START));
        clock.advance(Duration::from_millis(1_500));
        assert_eq!(
            (clock.now_ms(), clock.wall_ms()),
            (1_500, WALL_START + 1_500)
        );
        clock.set_wall_ms(5);
        assert_eq!((clock.now_ms(), clock.wall_ms()), (1_500, 5));
    }
}
