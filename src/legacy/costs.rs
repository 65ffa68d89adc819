//! `costs.json`: spending per UTC day, converted to [`CostDay`]s of the bot.
//!
//! Accepted, at any mix and nesting up to four levels:
//! - a day map `{"2025-10-14": 1.23}` (keys `YYYY-MM-DD`, `YYYY/MM/DD`, `YYYYMMDD`
//!   or a date-time), the value a number (USD) or an object with `cost`/`cost_usd`/
//!   `total_cost_usd`/`usd`/`total`/`amount`, `tasks`/`count`/`requests`,
//!   `input_tokens`, `output_tokens`;
//! - a day split by user: `{"2025-10-14": {"123": 0.5, "456": 0.2}}`;
//! - such a map under `daily`/`days`/`by_day`/`per_day`/`daily_costs`;
//! - per user: `{"123456789": {<day map>}}` or under `users`/`by_user`/`per_user`;
//! - an array of entries, each with `date`/`day` or a timestamp
//!   (`timestamp`/`created_at`/`time`/`ts`) and the cost fields above.
//!
//! Our costs are per (bot, day): entries of every user on a day are summed.
//! Totals (`total`, `total_cost`, `total_usd`, ... holding a number beside days)
//! are not imported; ours are recomputed from days (a note says so).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::storage::{CostDay, LegacyCost};

use super::ParseOptions;
use super::report::{FileReport, Implausible};
use super::shape::{Fields, as_f64, canonical_json, type_name, unwrap};
use super::timestamp::{self, day_is_plausible, day_of_ms, parse_day};

const WRAPPERS: &[&str] = &["costs", "cost", "data"];
const DAY_MAPS: &[&str] = &[
    "daily",
    "days",
    "by_day",
    "per_day",
    "daily_costs",
    "by_date",
];
const USER_MAPS: &[&str] = &["users", "by_user", "per_user", "user_costs"];
const ENTRY_LISTS: &[&str] = &["entries", "records", "history", "log"];
const TOTALS: &[&str] = &[
    "total",
    "total_cost",
    "total_usd",
    "total_cost_usd",
    "all_time",
    "grand_total",
    "sum",
];
const USD: &[&str] = &[
    "cost_usd",
    "total_cost_usd",
    "cost",
    "usd",
    "total",
    "amount",
    "total_cost",
    "costUsd",
];
const TASKS: &[&str] = &[
    "tasks",
    "count",
    "requests",
    "num_tasks",
    "task_count",
    "messages",
];
const INPUT_TOKENS: &[&str] = &["input_tokens", "inputTokens", "prompt_tokens"];
const OUTPUT_TOKENS: &[&str] = &["output_tokens", "outputTokens", "completion_tokens"];
const DAY_FIELDS: &[&str] = &["date", "day"];
const TIME_FIELDS: &[&str] = &["timestamp", "created_at", "time", "ts", "created"];
const USER_FIELDS: &[&str] = &["user_id", "userId", "chat_id", "user"];
const MAX_DEPTH: usize = 4;

struct Walk<'a> {
    opts: &'a ParseOptions,
    report: &'a mut FileReport,
    days: BTreeMap<u32, CostDay>,
    /// Unmodelled fields per day: entry's place in the file → its fields.
    extras: BTreeMap<u32, Map<String, Value>>,
    entries: u64,
}

/// Converts the parsed `costs.json`; returns one [`LegacyCost`] per day and the
/// number of entries read.
pub(crate) fn convert(
    value: Value,
    opts: &ParseOptions,
    report: &mut FileReport,
) -> Result<(Vec<LegacyCost>, u64), String> {
    let value = unwrap(value, WRAPPERS, report);
    let mut walk = Walk {
        opts,
        report,
        days: BTreeMap::new(),
        extras: BTreeMap::new(),
        entries: 0,
    };
    match value {
        Value::Object(map) => walk.map(map, "", 0),
        Value::Array(items) => walk.array(items, ""),
        other => {
            return Err(format!(
                "the file holds {}, not an object or an array of costs",
                type_name(&other)
            ));
        }
    }
    let mut extras = walk.extras;
    let costs = walk
        .days
        .into_iter()
        .map(|(day, cost)| LegacyCost {
            day,
            cost,
            extra: extras
                .remove(&day)
                .map(|fields| canonical_json(&Value::Object(fields))),
        })
        .collect();
    Ok((costs, walk.entries))
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}/{key}")
    }
}

fn looks_like_cost(value: &Value) -> bool {
    match value {
        Value::Number(_) => true,
        Value::String(s) => s.trim().parse::<f64>().is_ok(),
        Value::Object(map) => USD
            .iter()
            .chain(TASKS)
            .chain(INPUT_TOKENS)
            .chain(OUTPUT_TOKENS)
            .any(|k| map.contains_key(*k)),
        _ => false,
    }
}

impl Walk<'_> {
    fn map(&mut self, map: Map<String, Value>, path: &str, depth: usize) {
        for (key, value) in map {
            let loc = join(path, &key);
            if depth >= MAX_DEPTH {
                self.report
                    .skip(&loc, "nested too deeply for a cost record");
                continue;
            }
            let lower = key.to_ascii_lowercase();
            match (parse_day(&key), value) {
                (Some(day), value) if looks_like_cost(&value) => self.entry(day, value, &loc),
                (_, Value::Object(inner)) if DAY_MAPS.contains(&lower.as_str()) || USER_MAPS.contains(&lower.as_str()) => {
                    self.map(inner, &loc, depth + 1)
                }
                (_, Value::Array(items)) if DAY_MAPS.contains(&lower.as_str()) || ENTRY_LISTS.contains(&lower.as_str()) => {
                    self.array(items, &loc)
                }
                (_, Value::Object(inner)) if key.trim().parse::<i64>().is_ok() => self.map(inner, &loc, depth + 1),
                (Some(day), Value::Object(inner)) if !inner.is_empty() && inner.values().all(looks_like_cost) => {
                    // One day split by user: `{"2025-10-14": {"123": 0.5, "456": 0.2}}`.
                    for (user, value) in inner {
                        self.entry(day, value, &join(&loc, &user));
                    }
                }
                (None, value @ Value::Number(_)) if TOTALS.contains(&lower.as_str()) => {
                    self.report.note(format!("`{loc}` = {value} is a total; not imported (totals are recomputed from days)"));
                }
                (_, value) => self.report.skip(
                    &loc,
                    format!("not a day with a cost, a per-user or per-day map, or a list of entries ({})", type_name(&value)),
                ),
            }
        }
    }

    fn array(&mut self, items: Vec<Value>, path: &str) {
        for (i, item) in items.into_iter().enumerate() {
            let loc = format!("{path}[{i}]");
            let Value::Object(map) = item else {
                self.report.skip(
                    &loc,
                    format!("a cost entry must be an object, found {}", type_name(&item)),
                );
                continue;
            };
            self.dated_entry(map, &loc);
        }
    }

    /// An array entry: its day comes from a date field or a timestamp.
    fn dated_entry(&mut self, mut map: Map<String, Value>, loc: &str) {
        let day_field = DAY_FIELDS.iter().find_map(|k| map.remove_entry(*k));
        let day = match day_field {
            Some((name, value)) => {
                let text = match &value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                match parse_day(&text) {
                    Some(day) => day,
                    None => {
                        self.report
                            .skip(loc, format!("`{name}` = {value} is not a date"));
                        return;
                    }
                }
            }
            None => {
                let Some((name, value)) = TIME_FIELDS.iter().find_map(|k| map.remove_entry(*k))
                else {
                    self.report.skip(loc, "no date, day or timestamp");
                    return;
                };
                match timestamp::normalise(&value).ok().and_then(day_of_ms) {
                    Some(day) => day,
                    None => {
                        self.report
                            .skip(loc, format!("`{name}` = {value} is not a timestamp"));
                        return;
                    }
                }
            }
        };
        for k in USER_FIELDS {
            // Costs are kept per bot; whose they were is summed away.
            map.remove(*k);
        }
        self.entry(day, Value::Object(map), loc);
    }

    fn entry(&mut self, day: u32, value: Value, loc: &str) {
        let cost = match value {
            Value::Object(map) => {
                let mut f = Fields::new(map, self.report, loc, self.opts.now_ms);
                let usd = f.take_f64(USD);
                let tasks = f.take_u64(TASKS);
                let input_tokens = f.take_u64(INPUT_TOKENS);
                let output_tokens = f.take_u64(OUTPUT_TOKENS);
                let left = f.left_names().join(", ");
                let extra = f.into_extra(Vec::new());
                if usd.is_none()
                    && tasks.is_none()
                    && input_tokens.is_none()
                    && output_tokens.is_none()
                {
                    self.report
                        .skip(loc, "no usable cost, task count or token count in it");
                    return;
                }
                if !left.is_empty() {
                    self.report.note(format!(
                        "{loc}: fields kept in meta `legacy:extra:cost:<bot>:<day>`: {left}"
                    ));
                }
                if let Some(fields) = extra.and_then(|e| serde_json::from_str(&e).ok()) {
                    self.extras
                        .entry(day)
                        .or_default()
                        .insert(loc.to_string(), fields);
                }
                CostDay {
                    usd: usd.unwrap_or(0.0),
                    tasks: tasks.unwrap_or(0),
                    input_tokens: input_tokens.unwrap_or(0),
                    output_tokens: output_tokens.unwrap_or(0),
                }
            }
            other => match as_f64(&other).filter(|f| f.is_finite() && *f >= 0.0) {
                Some(usd) => CostDay {
                    usd,
                    ..CostDay::default()
                },
                None => {
                    self.report
                        .skip(loc, format!("cost {other} is not a non-negative number"));
                    return;
                }
            },
        };
        if !day_is_plausible(day, self.opts.now_ms) {
            self.report.implausible.push(Implausible {
                file: self.report.file.clone(),
                record: loc.to_string(),
                field: "day".into(),
                raw: day.to_string(),
                problem: "before 2000-01-01 or after tomorrow".into(),
                action: "imported under that day as written".into(),
            });
        }
        self.entries += 1;
        let sum = self.days.entry(day).or_default();
        sum.usd += cost.usd;
        sum.tasks += cost.tasks;
        sum.input_tokens += cost.input_tokens;
        sum.output_tokens += cost.output_tokens;
    }
}
