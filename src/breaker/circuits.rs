//! The service's circuit breakers: one per (bot, dependency), persisted and logged.
//!
//! Invariants: a breaker is created from its row in the `breakers` table when one
//! exists, so a restart never closes an open circuit; every transition is written to
//! the `breakers` table and as a `state_transition` event before the observer
//! returns (the write is queued to the store's writer, which keeps their order); one
//! bot's breakers never affect another bot.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;

use super::{BreakerSettings, BreakerSnapshot, CircuitBreaker, State};
use crate::clock::{Clock, SystemClock};
use crate::storage::{Store, StoredBreaker};

/// The dependencies guarded per bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dependency {
    /// The agent subprocess.
    Agent,
    /// The Telegram Bot API.
    Telegram,
}

impl Dependency {
    /// Both dependencies.
    pub const ALL: [Dependency; 2] = [Dependency::Agent, Dependency::Telegram];

    /// The name used in the store, the API and events.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Dependency::Agent => "agent",
            Dependency::Telegram => "telegram",
        }
    }
}

/// Every breaker of the service.
#[derive(Clone)]
pub struct Circuits {
    breakers: Arc<BTreeMap<(String, Dependency), CircuitBreaker>>,
    /// State transitions seen by this process, per breaker (for `/metrics`).
    transitions: Arc<BTreeMap<(String, Dependency), Arc<AtomicU64>>>,
}

impl Circuits {
    /// Builds (or restores from the store) the breakers of `bot_ids`.
    pub fn load(store: &Store, bot_ids: &[String], settings: &BreakerSettings) -> Self {
        Self::load_with_clock(store, bot_ids, settings, Arc::new(SystemClock::new()))
    }

    /// As [`Circuits::load`], with an injected clock (tests).
    pub fn load_with_clock(
        store: &Store,
        bot_ids: &[String],
        settings: &BreakerSettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let mut breakers = BTreeMap::new();
        let mut transitions = BTreeMap::new();
        for bot in bot_ids {
            for dep in Dependency::ALL {
                let counter = Arc::new(AtomicU64::new(0));
                let breaker =
                    build_breaker(store, bot, dep, settings, clock.clone(), counter.clone());
                breakers.insert((bot.clone(), dep), breaker);
                transitions.insert((bot.clone(), dep), counter);
            }
        }
        Circuits {
            breakers: Arc::new(breakers),
            transitions: Arc::new(transitions),
        }
    }

    /// The breaker of a (bot, dependency).
    pub(crate) fn get(&self, bot_id: &str, dep: Dependency) -> Option<&CircuitBreaker> {
        self.breakers.get(&(bot_id.to_string(), dep))
    }

    /// Whether the bot's dependency currently refuses calls (open, or half-open with
    /// every probe slot taken). Does not take a probe slot.
    pub(crate) fn is_blocked(&self, bot_id: &str, dep: Dependency) -> bool {
        let Some(breaker) = self.get(bot_id, dep) else {
            return false;
        };
        match breaker.state() {
            State::Closed => false,
            State::Open => true,
            State::HalfOpen => {
                breaker.snapshot().probes_in_flight >= breaker.settings().half_open_max_calls
            }
        }
    }

    /// Bots whose agent breaker refuses calls now.
    pub(crate) fn agent_blocked_bots(&self) -> Vec<String> {
        self.breakers
            .keys()
            .filter(|(_, dep)| *dep == Dependency::Agent)
            .filter(|(bot, dep)| self.is_blocked(bot, *dep))
            .map(|(bot, _)| bot.clone())
            .collect()
    }

    /// Milliseconds until the earliest open breaker of `dep` allows a probe.
    pub(crate) fn next_probe_in_ms(&self, dep: Dependency) -> Option<u64> {
        let now = crate::storage::now_ms();
        self.breakers
            .iter()
            .filter(|((_, d), _)| *d == dep)
            .filter_map(|(_, b)| b.snapshot().open_until_wall_ms)
            .map(|until| until.saturating_sub(now))
            .min()
    }

    /// Fires due timers of every breaker (open → half-open, probe timeouts).
    pub(crate) fn tick(&self) {
        for breaker in self.breakers.values() {
            breaker.tick();
        }
    }

    /// Every breaker with its snapshot: (bot, dependency, snapshot).
    pub(crate) fn snapshots(&self) -> Vec<(String, Dependency, BreakerSnapshot)> {
        self.breakers
            .iter()
            .map(|((bot, dep), b)| (bot.clone(), *dep, b.snapshot()))
            .collect()
    }

    /// State transitions of a breaker since this process started.
    pub(crate) fn transitions(&self, bot_id: &str, dep: Dependency) -> u64 {
        self.transitions
            .get(&(bot_id.to_string(), dep))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Snapshots of one bot's breakers.
    pub(crate) fn bot_snapshots(&self, bot_id: &str) -> Vec<(Dependency, BreakerSnapshot)> {
        Dependency::ALL
            .into_iter()
            .filter_map(|dep| self.get(bot_id, dep).map(|b| (dep, b.snapshot())))
            .collect()
    }
}

/// The bot id under which breakers of service-wide dependencies (not tied to one
/// bot, such as the remote backup store) are persisted and logged. `@` cannot
/// appear in a configured bot id, so it never collides with one.
pub const SERVICE_BOT_ID: &str = "@service";

/// A breaker for a service-wide dependency (`dependency` names it in the store,
/// events and logs), persisted under [`SERVICE_BOT_ID`] like the bots' breakers.
pub fn service_breaker(
    store: &Store,
    dependency: &'static str,
    settings: &BreakerSettings,
    clock: Arc<dyn Clock>,
) -> CircuitBreaker {
    build_named_breaker(
        store,
        SERVICE_BOT_ID,
        dependency,
        settings,
        clock,
        Arc::new(AtomicU64::new(0)),
    )
}

fn build_breaker(
    store: &Store,
    bot: &str,
    dep: Dependency,
    settings: &BreakerSettings,
    clock: Arc<dyn Clock>,
    transitions: Arc<AtomicU64>,
) -> CircuitBreaker {
    build_named_breaker(store, bot, dep.as_str(), settings, clock, transitions)
}

fn build_named_breaker(
    store: &Store,
    bot: &str,
    dep_name: &'static str,
    settings: &BreakerSettings,
    clock: Arc<dyn Clock>,
    transitions: Arc<AtomicU64>,
) -> CircuitBreaker {
    let name = format!("{bot}/{dep_name}");
    let saved = match store.get_breaker(bot, dep_name) {
        Ok(saved) => saved,
        Err(e) => {
            tracing::warn!(breaker = %name, error = %e, "cannot read persisted breaker; starting closed");
            None
        }
    };
    let snapshot =
        saved.and_then(|s| serde_json::from_str::<BreakerSnapshot>(&s.snapshot_json).ok());
    let breaker = match snapshot {
        Some(snapshot) => {
            tracing::info!(breaker = %name, state = %snapshot.state, "breaker restored");
            CircuitBreaker::restore(name.clone(), settings.clone(), clock, snapshot)
        }
        None => CircuitBreaker::new(name.clone(), settings.clone(), clock),
    };
    let store = store.clone();
    let bot = bot.to_string();
    breaker.with_observer(Arc::new(move |transition, snapshot| {
        transitions.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            bot_id = %bot,
            dependency = dep_name,
            from = %transition.from,
            to = %transition.to,
            reason = %transition.reason,
            "circuit breaker transition"
        );
        let stored = StoredBreaker {
            state: snapshot.state.as_str().to_string(),
            snapshot_json: serde_json::to_string(snapshot).unwrap_or_default(),
            updated_ms: transition.at_wall_ms,
        };
        // Queued to the single writer, in order; not awaited: the observer runs on
        // whatever thread made the call and must stay short.
        drop(store.put_breaker(&bot, dep_name, stored));
        drop(store.append_event(
            "state_transition",
            Some(&bot),
            json!({
                "dependency": dep_name,
                "from": transition.from.as_str(),
                "to": transition.to.as_str(),
                "reason": transition.reason,
            }),
            transition.at_wall_ms,
        ));
    }))
}
