//! What the agents cost, per bot and UTC day: the `costs` table.
//!
//! Invariant: a finished run's cost and tokens are added to its bot's day in the
//! transaction that finishes the task, so a day's totals never miss a finished
//! run and never count one twice.

use redb::ReadableTable;

use super::batch::Tables;
use super::codec;
use super::error::StoreError;
use super::records::CostDay;
use super::tables::COSTS;
use super::{Store, StoreResult};

impl Store {
    /// Costs of a bot on a UTC day (yyyymmdd).
    pub fn cost_day(&self, bot_id: &str, day: u32) -> StoreResult<CostDay> {
        self.read(|tx| {
            let table = tx.open_table(COSTS)?;
            let value = table.get((bot_id, day))?;
            value
                .map(|v| decode_cost(v.value()))
                .transpose()
                .map(Option::unwrap_or_default)
        })
    }

    /// Costs of a bot today (UTC).
    pub fn cost_today(&self, bot_id: &str, now_ms: u64) -> StoreResult<CostDay> {
        self.cost_day(bot_id, utc_day(now_ms))
    }

    /// Costs of a bot today and in this month (UTC), from one read.
    pub fn cost_today_and_month(
        &self,
        bot_id: &str,
        now_ms: u64,
    ) -> StoreResult<(CostDay, CostDay)> {
        let today = utc_day(now_ms);
        let month_start = today / 100 * 100;
        self.read(|tx| {
            let table = tx.open_table(COSTS)?;
            let mut day_total = CostDay::default();
            let mut month_total = CostDay::default();
            for row in table.range((bot_id, month_start)..=(bot_id, month_start + 99))? {
                let (key, value) = row?;
                let day = decode_cost(value.value())?;
                month_total.usd += day.usd;
                month_total.tasks += day.tasks;
                month_total.input_tokens += day.input_tokens;
                month_total.output_tokens += day.output_tokens;
                if key.value().1 == today {
                    day_total = day;
                }
            }
            Ok((day_total, month_total))
        })
    }

    /// Every cost row: (bot, day, costs).
    pub fn list_costs(&self) -> StoreResult<Vec<(String, u32, CostDay)>> {
        self.read(|tx| {
            let table = tx.open_table(COSTS)?;
            let mut out = Vec::new();
            for row in table.iter()? {
                let (k, v) = row?;
                let (bot, day) = k.value();
                out.push((bot.to_string(), day, decode_cost(v.value())?));
            }
            Ok(out)
        })
    }
}

/// The UTC day of a unix-ms time, as yyyymmdd.
pub fn utc_day(ms: u64) -> u32 {
    use chrono::{Datelike, TimeZone, Utc};
    let dt = Utc
        .timestamp_millis_opt(ms as i64)
        .single()
        .unwrap_or_default();
    dt.year() as u32 * 10_000 + dt.month() * 100 + dt.day()
}

/// One finished run, added to its bot's day at `now_ms`.
pub(super) fn add_run_cost_tx(
    t: &Tables<'_>,
    bot_id: &str,
    now_ms: u64,
    usd: f64,
    input_tokens: u64,
    output_tokens: u64,
) -> StoreResult<()> {
    let mut costs = t.costs()?;
    let day = utc_day(now_ms);
    let mut entry: CostDay = costs
        .get((bot_id, day))?
        .map(|v| decode_cost(v.value()))
        .transpose()?
        .unwrap_or_default();
    entry.usd += usd;
    entry.tasks += 1;
    entry.input_tokens += input_tokens;
    entry.output_tokens += output_tokens;
    costs.insert((bot_id, day), codec::encode(&entry).as_slice())?;
    Ok(())
}

fn decode_cost(bytes: &[u8]) -> StoreResult<CostDay> {
    codec::decode(bytes).map_err(|e| StoreError::decode("costs", e))
}
