//! The facts one tick gathered, and which alert rules they make hold.
//!
//! Pure: [`conditions`] turns a [`TickFacts`] into the [`Condition`]s of this tick;
//! the `for` durations and states live in [`super::rules`]. Invariant: a rule
//! whose facts are unknown (no fd limit, no backup ever, no traffic) does not hold.

use serde::Serialize;

use super::rules::Condition;
use crate::config::{AlertsConfig, MonitorConfig};

/// One bot's Telegram link.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BotFacts {
    /// Bot id.
    pub id: String,
    /// Consecutive failed polls.
    pub consecutive_failures: u64,
    /// Last good poll, unix ms (0 never).
    pub last_poll_ok_ms: u64,
    /// Today's cost, USD.
    pub cost_today_usd: f64,
}

/// Everything the rules look at.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TickFacts {
    /// Bots.
    pub bots: Vec<BotFacts>,
    /// Daily cost limit per bot, USD.
    pub daily_cost_limit_usd: f64,
    /// Failures in the last minute.
    pub failures_last_minute: u64,
    /// Tasks queued.
    pub queue_depth: u64,
    /// Used share of the data directory's file system.
    pub disk_used_ratio: Option<f64>,
    /// The leak detector's verdict: (suspected, MB per hour, R²).
    pub leak: Option<(bool, f64, f64)>,
    /// Per process (label, open fds share of the limit).
    pub fd_ratios: Vec<(String, f64)>,
    /// Open circuit breakers `bot/dependency`.
    pub open_circuits: Vec<String>,
    /// Hours since the last verified backup, once one exists.
    pub backup_age_hours: Option<f64>,
    /// With `[backup.remote]`: (age of the newest remote copy, `stale_after_s`),
    /// seconds, once an age is known.
    pub offsite_age_s: Option<(u64, u64)>,
    /// The failure analyzer's cascade risk: (risk, failures last hour, per hour before).
    pub failure_cascade: (bool, u64, f64),
    /// Dependencies degraded together.
    pub degraded_dependencies: Vec<String>,
    /// Anomalous series: (series, value, mean, z).
    pub anomalies: Vec<(String, f64, f64, f64)>,
}

/// The conditions holding on `facts`.
pub fn conditions(
    facts: &TickFacts,
    alerts: &AlertsConfig,
    monitor: &MonitorConfig,
) -> Vec<Condition> {
    let mut out = Vec::new();
    let mut hold = |rule, subject: &str, value: f64, message: String| {
        out.push(Condition {
            rule,
            subject: subject.to_string(),
            value,
            message,
        })
    };
    for bot in &facts.bots {
        if bot.consecutive_failures > 0 {
            hold(
                "bot_down",
                &bot.id,
                bot.consecutive_failures as f64,
                format!(
                    "bot {} cannot poll Telegram ({} failures in a row)",
                    bot.id, bot.consecutive_failures
                ),
            );
        }
        if facts.daily_cost_limit_usd > 0.0 {
            let share = bot.cost_today_usd / facts.daily_cost_limit_usd;
            if share > alerts.cost_ratio {
                hold(
                    "api_cost_limit",
                    &bot.id,
                    share,
                    format!(
                        "bot {} spent ${:.2} today, {:.0}% of the ${:.2} daily limit",
                        bot.id,
                        bot.cost_today_usd,
                        share * 100.0,
                        facts.daily_cost_limit_usd
                    ),
                );
            }
        }
    }
    if facts.failures_last_minute as f64 > alerts.error_rate_per_min {
        hold(
            "high_error_rate",
            "",
            facts.failures_last_minute as f64,
            format!(
                "{} task failures in the last minute",
                facts.failures_last_minute
            ),
        );
    }
    if facts.queue_depth > alerts.queue_depth_max {
        hold(
            "worker_pool_saturated",
            "",
            facts.queue_depth as f64,
            format!(
                "{} tasks waiting (limit {})",
                facts.queue_depth, alerts.queue_depth_max
            ),
        );
    }
    if let Some(ratio) = facts
        .disk_used_ratio
        .filter(|r| *r > alerts.disk_used_ratio)
    {
        hold(
            "disk_full",
            "",
            ratio,
            format!("data disk {:.0}% full", ratio * 100.0),
        );
    }
    if let Some((true, mb_per_hour, r2)) = facts.leak {
        hold(
            "memory_leak_suspected",
            "service",
            mb_per_hour,
            format!("resident memory grows {mb_per_hour:.1} MB/h steadily (R² {r2:.2})"),
        );
    }
    for (process, ratio) in &facts.fd_ratios {
        if *ratio >= monitor.fd_exhaustion_ratio {
            hold(
                "fd_exhaustion",
                process,
                *ratio,
                format!(
                    "{process} uses {:.0}% of its open-file limit",
                    ratio * 100.0
                ),
            );
        }
    }
    for circuit in &facts.open_circuits {
        hold(
            "circuit_open",
            circuit,
            1.0,
            format!("circuit {circuit} is open"),
        );
    }
    if let Some(age) = facts
        .backup_age_hours
        .filter(|a| *a > alerts.backup_stale_hours as f64)
    {
        hold(
            "backup_stale",
            "",
            age,
            format!("no verified backup for {age:.1} h"),
        );
    }
    if let Some((age, limit)) = facts.offsite_age_s.filter(|(age, limit)| age > limit) {
        hold(
            "backup_offsite_stale",
            "",
            age as f64,
            format!(
                "the newest offsite backup copy is {:.1} h old (limit {:.1} h)",
                age as f64 / 3600.0,
                limit as f64 / 3600.0
            ),
        );
    }
    let (risk, last_hour, before) = facts.failure_cascade;
    if risk {
        hold(
            "cascade_risk",
            "failures",
            last_hour as f64,
            format!("{last_hour} failures in the last hour against {before:.1}/h before, rising"),
        );
    }
    if facts.degraded_dependencies.len() >= 2 {
        hold(
            "cascade_risk",
            "dependencies",
            facts.degraded_dependencies.len() as f64,
            format!(
                "dependencies degraded together: {}",
                facts.degraded_dependencies.join(", ")
            ),
        );
    }
    for (series, value, mean, z) in &facts.anomalies {
        hold(
            "anomaly",
            series,
            *z,
            format!("{series} is {value:.1}, {z:.1} deviations above its recent mean {mean:.1}"),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offsite_copy_within_its_limit_holds_nothing() {
        let (a, m) = (AlertsConfig::default(), MonitorConfig::default());
        let facts = |age| TickFacts {
            offsite_age_s: Some((age, 60)),
            ..TickFacts::default()
        };
        assert!(conditions(&facts(60), &a, &m).is_empty());
        let held = conditions(&facts(61), &a, &m);
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].rule, "backup_offsite_stale");
    }

    #[test]
    fn quiet_facts_hold_nothing_and_each_fact_holds_its_rule() {
        let (a, m) = (AlertsConfig::default(), MonitorConfig::default());
        assert!(conditions(&TickFacts::default(), &a, &m).is_empty());
        let facts = TickFacts {
            bots: vec![BotFacts {
                id: "b1".into(),
                consecutive_failures: 3,
                last_poll_ok_ms: 0,
                cost_today_usd: 9.0,
            }],
            daily_cost_limit_usd: 10.0,
            failures_last_minute: 11,
            queue_depth: 21,
            disk_used_ratio: Some(0.95),
            leak: Some((true, 5.0, 0.97)),
            fd_ratios: vec![("service".into(), 0.85), ("agent 7".into(), 0.1)],
            open_circuits: vec!["b1/agent".into()],
            backup_age_hours: Some(3.0),
            offsite_age_s: Some((7201, 7200)),
            failure_cascade: (true, 20, 1.0),
            degraded_dependencies: vec!["agent".into(), "telegram".into()],
            anomalies: vec![("agent_p95_ms".into(), 900.0, 100.0, 6.0)],
        };
        let mut rules: Vec<&str> = conditions(&facts, &a, &m).iter().map(|c| c.rule).collect();
        rules.dedup();
        assert_eq!(
            rules,
            vec![
                "bot_down",
                "api_cost_limit",
                "high_error_rate",
                "worker_pool_saturated",
                "disk_full",
                "memory_leak_suspected",
                "fd_exhaustion",
                "circuit_open",
                "backup_stale",
                "backup_offsite_stale",
                "cascade_risk",
                "anomaly"
            ]
        );
    }
}
