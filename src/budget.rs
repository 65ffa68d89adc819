//! The cost budgets: what a bot spent today and this month (UTC), and whether
//! `limits.daily_cost_usd` / `limits.monthly_cost_usd` are reached.
//!
//! One rule, read in two places for two moments: the intake refuses a Telegram
//! prompt when a budget is spent, and the pool refuses to start any task when one
//! is spent by then (a task may wait in the queue while others spend). Both ask
//! [`Spend::exceeded`], so the comparison lives here only. An unreadable cost
//! counts as nothing spent: a storage hiccup must not lock users out.

use crate::config::LimitsConfig;
use crate::storage::Store;

/// What a bot spent, USD.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spend {
    /// Today (UTC).
    pub today: f64,
    /// This month (UTC).
    pub month: f64,
}

/// A budget that is spent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Exceeded {
    /// The daily budget.
    Daily {
        /// Spent today, USD.
        spent: f64,
        /// `limits.daily_cost_usd`.
        limit: f64,
    },
    /// The monthly budget.
    Monthly {
        /// Spent this month, USD.
        spent: f64,
        /// `limits.monthly_cost_usd`.
        limit: f64,
    },
}

impl Spend {
    /// What `bot_id` spent as of `now_ms`.
    pub fn of(store: &Store, bot_id: &str, now_ms: u64) -> Spend {
        let (today, month) = store
            .cost_today_and_month(bot_id, now_ms)
            .map(|(today, month)| (today.usd, month.usd))
            .unwrap_or((0.0, 0.0));
        Spend { today, month }
    }

    /// The budget that is spent, the daily one first.
    pub fn exceeded(&self, limits: &LimitsConfig) -> Option<Exceeded> {
        if self.today >= limits.daily_cost_usd {
            Some(Exceeded::Daily {
                spent: self.today,
                limit: limits.daily_cost_usd,
            })
        } else if self.month >= limits.monthly_cost_usd {
            Some(Exceeded::Monthly {
                spent: self.month,
                limit: limits.monthly_cost_usd,
            })
        } else {
            None
        }
    }

    /// Whether either budget is at least `share` spent (budgets of 0 never are).
    pub fn nears(&self, limits: &LimitsConfig, share: f64) -> bool {
        let near_day = limits.daily_cost_usd > 0.0 && self.today >= limits.daily_cost_usd * share;
        let near_month =
            limits.monthly_cost_usd > 0.0 && self.month >= limits.monthly_cost_usd * share;
        near_day || near_month
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(daily: f64, monthly: f64) -> LimitsConfig {
        LimitsConfig {
            daily_cost_usd: daily,
            monthly_cost_usd: monthly,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn the_daily_budget_is_named_before_the_monthly_one() {
        let spend = Spend {
            today: 2.0,
            month: 200.0,
        };
        assert_eq!(
            spend.exceeded(&limits(1.0, 100.0)),
            Some(Exceeded::Daily {
                spent: 2.0,
                limit: 1.0
            })
        );
        assert_eq!(
            spend.exceeded(&limits(5.0, 100.0)),
            Some(Exceeded::Monthly {
                spent: 200.0,
                limit: 100.0
            })
        );
        assert_eq!(spend.exceeded(&limits(5.0, 500.0)), None);
    }

    #[test]
    fn a_budget_of_zero_is_spent_but_never_near() {
        let spend = Spend {
            today: 0.0,
            month: 0.0,
        };
        assert!(spend.exceeded(&limits(0.0, 100.0)).is_some());
        assert!(!spend.nears(&limits(0.0, 0.0), 0.8));
        let spend = Spend {
            today: 0.8,
            month: 0.8,
        };
        assert!(spend.nears(&limits(1.0, 100.0), 0.8));
        assert!(!spend.nears(&limits(2.0, 100.0), 0.8));
    }
}
