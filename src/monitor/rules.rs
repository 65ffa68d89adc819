//! Alert rules: conditions evaluated every tick, Prometheus-style states.
//!
//! A rule instance is (rule, subject). Its condition holding starts a `pending`
//! alert; holding for the rule's `for` duration makes it `firing`; not holding any
//! more makes a firing alert `resolved` (and a pending one is dropped, recorded as
//! resolved without ever having fired). Invariants: at most one open alert per
//! (rule, subject); every state change is returned as a [`Change`] so the caller
//! stores it, and a notification is asked for exactly once when an alert fires,
//! once when it resolves, and once per `reminder` interval while it keeps firing —
//! never for a pending alert that did not fire.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::AlertsConfig;
use crate::storage::{Alert, AlertState};

/// A rule's severity and `for` duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RuleSpec {
    /// The rule.
    pub rule: &'static str,
    /// `warning` or `critical`.
    pub severity: &'static str,
    /// How long the condition must hold before firing, ms.
    pub for_ms: u64,
}

/// The specs of every rule from the configuration.
pub fn rule_specs(config: &AlertsConfig) -> BTreeMap<&'static str, RuleSpec> {
    let s = |rule, severity, for_s: u64| {
        (
            rule,
            RuleSpec {
                rule,
                severity,
                for_ms: for_s * 1000,
            },
        )
    };
    BTreeMap::from([
        s("bot_down", "critical", config.bot_down_for_s),
        s("high_error_rate", "critical", config.error_rate_for_s),
        s("worker_pool_saturated", "warning", config.queue_depth_for_s),
        s("disk_full", "critical", 60),
        s("api_cost_limit", "warning", 0),
        s("memory_leak_suspected", "warning", config.leak_for_s),
        s("fd_exhaustion", "critical", config.fd_for_s),
        s("circuit_open", "warning", config.circuit_open_for_s),
        s("backup_stale", "warning", 0),
        s("backup_offsite_stale", "warning", 0),
        s("cascade_risk", "critical", 0),
        s("anomaly", "warning", config.anomaly_for_s),
    ])
}

/// A condition seen this tick: the rule holds for the subject.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Condition {
    /// The rule.
    pub rule: &'static str,
    /// What it is about (bot id, series, dependency); empty when global.
    pub subject: String,
    /// The value that made it hold.
    pub value: f64,
    /// A sentence for humans.
    pub message: String,
}

/// What a notification announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Announcement {
    /// The alert fired.
    Fired,
    /// The alert is still firing (reminder).
    Reminder,
    /// The alert resolved.
    Resolved,
}

/// A state change the caller stores, and maybe announces.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The alert after the change (id 0 when not stored yet).
    pub alert: Alert,
    /// The notification to send, if any.
    pub announce: Option<Announcement>,
}

/// The open alerts and the rules' specs.
#[derive(Debug)]
pub struct RuleEngine {
    specs: BTreeMap<&'static str, RuleSpec>,
    reminder_ms: u64,
    open: BTreeMap<(String, String), Alert>,
}

impl RuleEngine {
    /// An engine continuing the `open` alerts of a previous run.
    pub fn new(config: &AlertsConfig, open: Vec<Alert>) -> Self {
        RuleEngine {
            specs: rule_specs(config),
            reminder_ms: config.reminder_interval_s * 1000,
            open: open
                .into_iter()
                .filter(|a| a.state != AlertState::Resolved)
                .map(|a| ((a.rule.clone(), a.subject.clone()), a))
                .collect(),
        }
    }

    /// Records the id the store gave a new alert.
    pub fn set_id(&mut self, rule: &str, subject: &str, id: u64) {
        if let Some(alert) = self.open.get_mut(&(rule.to_string(), subject.to_string())) {
            alert.id = id;
        }
    }

    /// The open (pending or firing) alerts.
    pub fn open_alerts(&self) -> Vec<Alert> {
        self.open.values().cloned().collect()
    }

    /// Evaluates the conditions holding at `now_ms` (any rule instance absent
    /// does not hold) and returns the changes.
    pub fn evaluate(&mut self, conditions: &[Condition], now_ms: u64) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut holding: BTreeMap<(String, String), &Condition> = BTreeMap::new();
        for c in conditions {
            holding.insert((c.rule.to_string(), c.subject.clone()), c);
        }
        for (key, condition) in &holding {
            let Some(spec) = self.specs.get(condition.rule) else {
                continue;
            };
            let alert = self.open.entry(key.clone()).or_insert_with(|| Alert {
                id: 0,
                rule: condition.rule.to_string(),
                subject: condition.subject.clone(),
                severity: spec.severity.to_string(),
                state: AlertState::Pending,
                started_ms: now_ms,
                fired_ms: None,
                resolved_ms: None,
                value: condition.value,
                message: condition.message.clone(),
                notified_ms: None,
            });
            let is_new =
                alert.id == 0 && alert.started_ms == now_ms && alert.state == AlertState::Pending;
            alert.value = condition.value;
            alert.message = condition.message.clone();
            match alert.state {
                AlertState::Pending if now_ms.saturating_sub(alert.started_ms) >= spec.for_ms => {
                    alert.state = AlertState::Firing;
                    alert.fired_ms = Some(now_ms);
                    alert.notified_ms = Some(now_ms);
                    changes.push(Change {
                        alert: alert.clone(),
                        announce: Some(Announcement::Fired),
                    });
                }
                AlertState::Pending if is_new => changes.push(Change {
                    alert: alert.clone(),
                    announce: None,
                }),
                AlertState::Firing
                    if self.reminder_ms > 0
                        && now_ms.saturating_sub(alert.notified_ms.unwrap_or(now_ms))
                            >= self.reminder_ms =>
                {
                    alert.notified_ms = Some(now_ms);
                    changes.push(Change {
                        alert: alert.clone(),
                        announce: Some(Announcement::Reminder),
                    });
                }
                _ => {}
            }
        }
        let ended: Vec<(String, String)> = self
            .open
            .keys()
            .filter(|k| !holding.contains_key(*k))
            .cloned()
            .collect();
        for key in ended {
            let Some(mut alert) = self.open.remove(&key) else {
                continue;
            };
            let fired = alert.state == AlertState::Firing;
            alert.state = AlertState::Resolved;
            alert.resolved_ms = Some(now_ms);
            if fired {
                alert.notified_ms = Some(now_ms);
            }
            changes.push(Change {
                alert,
                announce: fired.then_some(Announcement::Resolved),
            });
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AlertsConfig {
        AlertsConfig {
            queue_depth_for_s: 600,
            reminder_interval_s: 0,
            ..AlertsConfig::default()
        }
    }

    fn saturated(depth: f64) -> Condition {
        Condition {
            rule: "worker_pool_saturated",
            subject: String::new(),
            value: depth,
            message: format!("queue depth {depth}"),
        }
    }

    /// Runs `ticks` 10-s ticks with the condition holding for the first `held`.
    fn run(engine: &mut RuleEngine, ticks: u64, held: u64) -> Vec<(u64, Change)> {
        let mut all = Vec::new();
        for tick in 0..ticks {
            let now = 1_000_000 + tick * 10_000;
            let conditions = if tick < held {
                vec![saturated(25.0)]
            } else {
                vec![]
            };
            for change in engine.evaluate(&conditions, now) {
                if change.alert.id == 0 {
                    engine.set_id(&change.alert.rule, &change.alert.subject, 7);
                }
                all.push((tick, change));
            }
        }
        all
    }

    #[test]
    fn a_condition_shorter_than_its_for_never_fires() {
        let mut engine = RuleEngine::new(&config(), vec![]);
        // 59 ticks = 590 s < 600 s.
        let changes = run(&mut engine, 100, 60);
        assert!(
            changes.iter().all(|(_, c)| c.announce.is_none()),
            "{changes:?}"
        );
        assert!(changes.iter().all(|(_, c)| c.alert.fired_ms.is_none()));
        assert_eq!(changes.len(), 2, "stored pending, then dropped");
        assert_eq!(changes[1].1.alert.state, AlertState::Resolved);
    }

    #[test]
    fn a_condition_held_longer_fires_once_and_resolves_once() {
        let mut engine = RuleEngine::new(&config(), vec![]);
        let changes = run(&mut engine, 200, 100);
        let announced: Vec<(u64, Announcement)> = changes
            .iter()
            .filter_map(|(t, c)| c.announce.map(|a| (*t, a)))
            .collect();
        assert_eq!(
            announced,
            vec![(60, Announcement::Fired), (100, Announcement::Resolved)]
        );
        let resolved = &changes.last().expect("changes").1.alert;
        assert_eq!(resolved.id, 7);
        assert_eq!(resolved.fired_ms, Some(1_000_000 + 600_000));
        assert!(engine.open_alerts().is_empty());
    }

    #[test]
    fn a_long_firing_alert_is_reminded_at_the_interval() {
        let mut engine = RuleEngine::new(
            &AlertsConfig {
                reminder_interval_s: 3600,
                ..config()
            },
            vec![],
        );
        let changes = run(&mut engine, 1000, 1000);
        let reminders = changes
            .iter()
            .filter(|(_, c)| c.announce == Some(Announcement::Reminder))
            .count();
        // Fired at tick 60; reminders at ticks 420 and 780.
        assert_eq!(reminders, 2);
    }

    #[test]
    fn an_alert_open_before_a_restart_is_continued_not_renotified() {
        let mut first = RuleEngine::new(&config(), vec![]);
        run(&mut first, 70, 70);
        let open = first.open_alerts();
        assert_eq!(open[0].state, AlertState::Firing);
        let mut second = RuleEngine::new(&config(), open);
        let changes = second.evaluate(&[saturated(30.0)], 2_000_000);
        assert!(changes.is_empty(), "{changes:?}");
    }
}
