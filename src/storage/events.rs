//! The event log: circuit transitions, blocked tasks, task life-cycle, restarts,
//! backups, restores, denied users. Append-only, keyed by (unix ms, seq).

use redb::{ReadableTable, WriteTransaction};

use super::codec;
use super::error::StoreError;
use super::records::Event;
use super::tables::EVENTS;
use super::{Pending, Store, StoreResult};

impl Store {
    /// Appends an event durably. `payload` must be a JSON object.
    pub fn append_event(
        &self,
        kind: &str,
        bot_id: Option<&str>,
        payload: serde_json::Value,
        now_ms: u64,
    ) -> Pending<()> {
        let kind = kind.to_string();
        let bot = bot_id.map(str::to_string);
        let seq = self.next_event_seq();
        self.write(move |tx| insert_event(tx, now_ms, seq, &kind, bot.as_deref(), &payload))
    }

    /// The time of the newest event, if any.
    pub fn newest_event_ms(&self) -> StoreResult<Option<u64>> {
        self.read(|tx| {
            let table = tx.open_table(EVENTS)?;
            Ok(table.last()?.map(|(k, _)| k.value().0))
        })
    }

    /// Events with `from_ms <= at < to_ms`, oldest first, at most `limit`.
    pub fn events_between(
        &self,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> StoreResult<Vec<Event>> {
        self.read(|tx| {
            let table = tx.open_table(EVENTS)?;
            let mut out = Vec::new();
            for row in table.range((from_ms, 0)..(to_ms, 0))? {
                if out.len() >= limit {
                    break;
                }
                out.push(decode_event(row?.1.value())?);
            }
            Ok(out)
        })
    }

    /// The newest `limit` events of a kind (all kinds when `None`), newest first.
    pub fn recent_events(&self, kind: Option<&str>, limit: usize) -> StoreResult<Vec<Event>> {
        self.read(|tx| {
            let table = tx.open_table(EVENTS)?;
            let mut out = Vec::new();
            for row in table.iter()?.rev() {
                if out.len() >= limit {
                    break;
                }
                let event = decode_event(row?.1.value())?;
                if kind.is_none_or(|k| k == event.kind) {
                    out.push(event);
                }
            }
            Ok(out)
        })
    }

    /// Deletes events older than `before_ms`, at most `max_rows` per call (small
    /// transactions that never stall other writers). Returns how many were removed.
    pub fn prune_events(&self, before_ms: u64, max_rows: usize) -> Pending<usize> {
        self.write(move |tx| {
            let mut table = tx.open_table(EVENTS)?;
            // Only the first `max_rows` keys are visited (retain_in would walk
            // every old row on each call: quadratic on a backlog).
            let keys = table
                .range((0, 0)..(before_ms, 0))?
                .take(max_rows)
                .map(|row| row.map(|(key, _)| key.value()))
                .collect::<Result<Vec<(u64, u32)>, _>>()?;
            for key in &keys {
                table.remove(key)?;
            }
            Ok(keys.len())
        })
    }
}

pub(super) fn decode_event(bytes: &[u8]) -> StoreResult<Event> {
    codec::decode(bytes).map_err(|e| StoreError::decode("events", e))
}

/// Inserts an event inside an existing transaction. `seq` disambiguates events of
/// the same millisecond; 0 lets this pick the next free one.
pub(super) fn insert_event(
    tx: &WriteTransaction,
    at_ms: u64,
    seq: u32,
    kind: &str,
    bot_id: Option<&str>,
    payload: &serde_json::Value,
) -> StoreResult<()> {
    insert_event_into(
        &mut tx.open_table(EVENTS)?,
        at_ms,
        seq,
        kind,
        bot_id,
        payload,
    )
}

/// [`insert_event`] into the `events` table a job holds.
pub(super) fn insert_event_into(
    table: &mut redb::Table<'_, (u64, u32), &'static [u8]>,
    at_ms: u64,
    seq: u32,
    kind: &str,
    bot_id: Option<&str>,
    payload: &serde_json::Value,
) -> StoreResult<()> {
    // Events of the same millisecond keep their order: after the last one stored.
    let seq = match table.range((at_ms, 0)..=(at_ms, u32::MAX))?.next_back() {
        Some(last) => seq.max(last?.0.value().1.saturating_add(1)),
        None => seq,
    };
    let event = Event {
        at_ms,
        seq,
        kind: kind.to_string(),
        bot_id: bot_id.map(str::to_string),
        payload_json: payload.to_string(),
    };
    table.insert((at_ms, seq), codec::encode(&event).as_slice())?;
    Ok(())
}
