//! Per-user rate limits: sliding windows of one minute and one hour.
//!
//! Time is monotonic ([`Instant`]), so a wall clock jumping by hours neither locks
//! users out nor lets a burst through. Kept in memory: a restart forgets the
//! windows, which errs on the side of the user.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// A refused prompt: when the user may send again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    /// Wait this long.
    pub retry_after: Duration,
    /// The limit that was hit, per minute or per hour.
    pub per_hour: bool,
}

/// Sliding-window limits per (bot, user).
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: usize,
    per_hour: usize,
    sent: HashMap<(String, i64), VecDeque<Instant>>,
}

impl RateLimiter {
    /// Limits of `per_minute` and `per_hour` prompts.
    pub fn new(per_minute: u32, per_hour: u32) -> Self {
        RateLimiter {
            per_minute: per_minute as usize,
            per_hour: per_hour as usize,
            sent: HashMap::new(),
        }
    }

    /// Counts a prompt at `now` if allowed; otherwise says when to retry.
    pub fn check(&mut self, bot: &str, user: i64, now: Instant) -> Result<(), RateLimited> {
        let times = self.sent.entry((bot.to_string(), user)).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= HOUR)
        {
            times.pop_front();
        }
        if times.len() >= self.per_hour {
            let oldest = times.front().copied().unwrap_or(now);
            return Err(RateLimited {
                retry_after: HOUR.saturating_sub(now.duration_since(oldest)),
                per_hour: true,
            });
        }
        let in_minute: Vec<&Instant> = times
            .iter()
            .filter(|t| now.duration_since(**t) < MINUTE)
            .collect();
        if in_minute.len() >= self.per_minute {
            let oldest = in_minute.first().map_or(now, |t| **t);
            return Err(RateLimited {
                retry_after: MINUTE.saturating_sub(now.duration_since(oldest)),
                per_hour: false,
            });
        }
        times.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_31st_prompt_in_a_minute_is_refused_with_a_retry_time() {
        let mut limiter = RateLimiter::new(30, 500);
        let start = Instant::now();
        for i in 0..30 {
            assert!(
                limiter
                    .check("A", 1, start + Duration::from_millis(i * 100))
                    .is_ok()
            );
        }
        let refused = limiter
            .check("A", 1, start + Duration::from_secs(5))
            .unwrap_err();
        assert!(!refused.per_hour);
        assert_eq!(refused.retry_after, Duration::from_secs(55));
        assert!(
            limiter
                .check("A", 2, start + Duration::from_secs(5))
                .is_ok(),
            "other users are not affected"
        );
        assert!(
            limiter
                .check("A", 1, start + Duration::from_secs(61))
                .is_ok()
        );
    }

    #[test]
    fn the_hourly_limit_holds_across_minutes() {
        let mut limiter = RateLimiter::new(30, 40);
        let start = Instant::now();
        for i in 0..40 {
            assert!(
                limiter
                    .check("A", 1, start + Duration::from_secs(i * 10))
                    .is_ok()
            );
        }
        let refused = limiter
            .check("A", 1, start + Duration::from_secs(600))
            .unwrap_err();
        assert!(refused.per_hour);
        assert_eq!(refused.retry_after, Duration::from_secs(3000));
    }
}
