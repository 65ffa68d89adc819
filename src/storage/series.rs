//! Time series: named series with labels, stored as chunks of samples (Gorilla
//! codec, [`super::series_codec`]) plus one rollup per series and hour.
//!
//! Appends go to memory ([`super::series_buffer`]): each series' open chunk and
//! current hour bucket live there and are written together, in one durable
//! transaction, at most every [`SERIES_FLUSH`] (of sample time or wall time,
//! whichever passes first), and at [`Store::flush`], [`Store::close`] and when the
//! store is dropped. The append that starts an interval's flush does not wait for
//! it (a tick never waits for an fsync); if that flush fails, the failure is
//! logged and returned by the next append, and the samples stay buffered for the
//! next flush. Rewriting an open chunk once per flush instead of once per
//! tick, durably so redb can reuse the pages it frees, is what keeps samples at a
//! few bytes each at rest.
//!
//! Invariants:
//! - samples of a series are kept in time order: a sample older than the series'
//!   newest one is dropped with a debug line (equal times are kept);
//! - every read merges the buffer with redb and sees every appended sample exactly
//!   once, flushed or not (the buffer holds a contiguous suffix of each series);
//! - a crash loses at most the samples appended since the last flush that
//!   committed: less than [`SERIES_FLUSH`] of sample time, plus a flush still in
//!   its commit (at the default 10 s tick, the last two or three ticks); a clean
//!   stop loses nothing;
//! - each kept sample is counted in exactly one stored hour bucket (absolute
//!   values, rewritten whole). Minute buckets are not stored: raw samples live as
//!   long as minute buckets did, so minute answers are computed from them;
//! - pruning removes exactly the samples older than the raw cut-off and the hour
//!   buckets starting before the rollup cut-off, in bounded transactions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, Table, WriteTransaction};
use serde::Serialize;

use super::codec;
use super::error::StoreError;
use super::heartbeat::store_heartbeat;
use super::records::{Rollup, Sample};
use super::series_buffer::{FlushPlan, HOUR_MS, Loaded, SeriesBuffer};
use super::series_codec::{decode_chunk, encode_chunk};
use super::tables::{SERIES, SERIES_NAMES, SERIES_ROLLUP};
use super::writer::WriterHandle;
use super::{Pending, Store, StoreResult};

/// Longest time buffered samples wait before they are written. 30 s is three
/// ticks at the default 10 s interval: each flush rewrites every active series'
/// open chunk, so flushing every tick would triple that write traffic, while a
/// crash losing half a minute of one-per-10 s gauges costs little (the heartbeat,
/// written in the same transaction, tells the next start where the data stops).
pub const SERIES_FLUSH: Duration = Duration::from_secs(30);
const MINUTE_MS: u64 = 60_000;
/// Hour rollups are keyed by series id with this bit set (a leftover of the time
/// minute rollups shared the table; ids stay below it).
pub(super) const HOUR_FLAG: u32 = 0x8000_0000;

/// Resolution of a history query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SeriesResolution {
    /// Every sample.
    Raw,
    /// Minute rollups.
    Minute,
    /// Hour rollups.
    Hour,
}

/// One point of a history answer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SeriesPoint {
    /// Start of the bucket (or the sample time), unix ms.
    pub at_ms: u64,
    /// Mean value.
    pub value: f64,
    /// Minimum in the bucket.
    pub min: f64,
    /// Maximum in the bucket.
    pub max: f64,
    /// Samples in the bucket.
    pub count: u64,
}

impl SeriesPoint {
    fn of_rollup(at_ms: u64, r: &Rollup) -> Self {
        SeriesPoint {
            at_ms,
            value: r.mean(),
            min: r.min,
            max: r.max,
            count: r.count,
        }
    }
}

impl Store {
    /// Appends samples (any series, any order of series; each series in time
    /// order). They are buffered and written at the next flush (see the module
    /// docs); the answer comes at once: the samples taken, or the failure of the
    /// last flush (these samples are buffered all the same).
    pub fn append_samples(&self, batch: Vec<(String, Sample)>) -> Pending<usize> {
        self.append_buffered(batch, None)
    }

    /// Buffers samples and, when given, the heartbeat; starts a flush when due.
    pub(super) fn append_buffered(
        &self,
        batch: Vec<(String, Sample)>,
        heartbeat: Option<u64>,
    ) -> Pending<usize> {
        // After close nothing would ever write the buffer: refuse like any write.
        if !self.is_open_for_writes() {
            return Pending::failed(StoreError::Closed);
        }
        let grouped = group_by_series(&batch);
        let appended = match self.buffer_samples(&grouped, heartbeat) {
            Ok((appended, due)) => {
                if due {
                    // Detached: the outcome reaches the buffer, not this caller.
                    drop(self.start_flush(Detached::Yes));
                }
                appended
            }
            Err(e) => return Pending::failed(e),
        };
        match lock(&self.inner.series).take_failure() {
            Some(e) => Pending::failed(e),
            None => Pending::ready(appended),
        }
    }

    /// Adds samples to the buffer, loading series it does not hold yet. Returns the
    /// samples taken and whether a flush is due.
    fn buffer_samples(
        &self,
        grouped: &BTreeMap<&str, Vec<Sample>>,
        heartbeat: Option<u64>,
    ) -> StoreResult<(usize, bool)> {
        let mut buffer = lock(&self.inner.series);
        let missing: Vec<(&str, &[Sample])> = grouped
            .iter()
            .filter(|(name, samples)| !samples.is_empty() && !buffer.contains(name))
            .map(|(name, samples)| (*name, samples.as_slice()))
            .collect();
        if !missing.is_empty() {
            // Safe against a concurrent flush: a series leaves the buffer only
            // after the commit that stored it, so redb is up to date for these.
            let loaded = self.read(|tx| {
                missing
                    .iter()
                    .map(|(name, samples)| load_series(tx, name, samples))
                    .collect::<StoreResult<Vec<Loaded>>>()
            })?;
            for ((name, samples), loaded) in missing.iter().zip(loaded) {
                buffer.insert_loaded(name, loaded, samples[0].at_ms);
            }
        }
        let mut appended = 0;
        for (name, samples) in grouped {
            appended += buffer.append(name, samples);
        }
        if let Some(at_ms) = heartbeat {
            buffer.set_heartbeat(at_ms);
        }
        Ok((appended, buffer.flush_due()))
    }

    /// Writes every buffered chunk and hour bucket that changed, and the
    /// heartbeat, in one durable commit; answered after it.
    pub(super) fn flush_series(&self) -> Pending<()> {
        self.start_flush(Detached::No)
    }

    fn start_flush(&self, detached: Detached) -> Pending<()> {
        let guard = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(handle) => flush_with(handle, &self.inner.series, detached),
            None => Pending::failed(StoreError::Closed),
        }
    }

    /// Writes buffered samples if there are any, and waits: for operations that
    /// read redb directly (dump, snapshots). Blocking.
    pub(super) fn write_buffered_samples(&self) -> StoreResult<()> {
        if lock(&self.inner.series).is_dirty() {
            self.flush_series().wait()?;
        }
        Ok(())
    }

    /// Names (with labels) of every series, sorted.
    pub fn series_names(&self) -> StoreResult<Vec<String>> {
        let buffered: BTreeSet<String> = lock(&self.inner.series)
            .names()
            .map(str::to_string)
            .collect();
        let mut names = self.read(|tx| {
            let table = tx.open_table(SERIES_NAMES)?;
            let mut out = BTreeSet::new();
            for row in table.iter()? {
                out.insert(row?.0.value().to_string());
            }
            Ok(out)
        })?;
        names.extend(buffered);
        Ok(names.into_iter().collect())
    }

    /// Raw samples of a series with `from_ms <= at < to_ms`.
    pub fn series_range(&self, name: &str, from_ms: u64, to_ms: u64) -> StoreResult<Vec<Sample>> {
        // The buffer first, then redb: a chunk leaves the buffer only after its
        // commit, so a read transaction begun afterwards holds it.
        let live = lock(&self.inner.series).view(name, from_ms, to_ms);
        let stored_to = live.first_ms.map_or(to_ms, |first| first.min(to_ms));
        let mut out = if from_ms < stored_to {
            self.read(|tx| stored_range(tx, name, from_ms, stored_to))?
        } else {
            Vec::new()
        };
        out.extend(live.samples);
        Ok(out)
    }

    /// Rolled-up points of a series with `from_ms <= bucket < to_ms`.
    pub fn series_rollups(
        &self,
        name: &str,
        from_ms: u64,
        to_ms: u64,
        resolution: SeriesResolution,
    ) -> StoreResult<Vec<SeriesPoint>> {
        match resolution {
            SeriesResolution::Raw => Ok(self
                .series_range(name, from_ms, to_ms)?
                .into_iter()
                .map(|s| SeriesPoint::of_rollup(s.at_ms, &Rollup::of(s.value)))
                .collect()),
            SeriesResolution::Minute => {
                // Whole minutes whose start is in range.
                let from = from_ms.div_ceil(MINUTE_MS).saturating_mul(MINUTE_MS);
                let to = to_ms.div_ceil(MINUTE_MS).saturating_mul(MINUTE_MS);
                let samples = self.series_range(name, from, to)?;
                Ok(bucket(&samples, MINUTE_MS))
            }
            SeriesResolution::Hour => self.hour_rollups(name, from_ms, to_ms),
        }
    }

    fn hour_rollups(&self, name: &str, from_ms: u64, to_ms: u64) -> StoreResult<Vec<SeriesPoint>> {
        let live: BTreeMap<u64, Rollup> = lock(&self.inner.series)
            .view(name, from_ms, to_ms)
            .hours
            .into_iter()
            .collect();
        let mut points = self.read(|tx| {
            let names = tx.open_table(SERIES_NAMES)?;
            let Some(id) = names.get(name)?.map(|v| v.value()) else {
                return Ok(BTreeMap::new());
            };
            let table = tx.open_table(SERIES_ROLLUP)?;
            let mut out = BTreeMap::new();
            let key_id = id | HOUR_FLAG;
            for row in table.range((key_id, from_ms)..(key_id, to_ms))? {
                let (k, v) = row?;
                let r: Rollup =
                    codec::decode(v.value()).map_err(|e| StoreError::decode("series_rollup", e))?;
                out.insert(k.value().1, r);
            }
            Ok(out)
        })?;
        // Buffered buckets are absolute and at least as new as the stored rows.
        points.extend(live);
        Ok(points
            .iter()
            .map(|(at, r)| SeriesPoint::of_rollup(*at, r))
            .collect())
    }

    /// Removes raw samples older than `raw_before_ms` and hour rollups starting
    /// before `rollup_before_ms`, touching at most `max_rows` rows. Returns rows
    /// changed; call again until it returns 0.
    pub fn prune_series(
        &self,
        raw_before_ms: u64,
        rollup_before_ms: u64,
        max_rows: usize,
    ) -> Pending<usize> {
        let buffer = self.inner.series.clone();
        self.write(move |tx| {
            // In the writer thread, so ordered with flushes: a flush before this
            // wrote rows this prunes; one after writes the buffer already pruned.
            lock(&buffer).prune(raw_before_ms, rollup_before_ms);
            prune_tx(tx, raw_before_ms, rollup_before_ms, max_rows)
        })
    }

    /// Number of chunk rows and rollup rows.
    pub fn series_row_counts(&self) -> StoreResult<(u64, u64)> {
        self.read(|tx| {
            Ok((
                tx.open_table(SERIES)?.len()?,
                tx.open_table(SERIES_ROLLUP)?.len()?,
            ))
        })
    }

    /// The newest heartbeat of this run, buffered or written.
    pub(super) fn buffered_heartbeat(&self) -> Option<u64> {
        lock(&self.inner.series).heartbeat()
    }
}

/// Whether anyone awaits a flush's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Detached {
    /// Nobody: a failure is kept for the next append to report.
    Yes,
    /// The caller: a failure is its answer.
    No,
}

/// The flush job (see [`Store::flush_series`]) on a given writer handle: used by
/// the store and by its drop.
pub(super) fn flush_with(
    handle: &WriterHandle,
    buffer: &Arc<Mutex<SeriesBuffer>>,
    detached: Detached,
) -> Pending<()> {
    lock(buffer).flush_started();
    let planned = buffer.clone();
    let finished = buffer.clone();
    handle.submit(
        // Planned inside the transaction, so ordered with prunes; re-planned if
        // the batch is retried.
        move |tx: &WriteTransaction| {
            let plan = lock(&planned).plan();
            write_plan(tx, &plan)?;
            Ok(plan)
        },
        move |outcome: StoreResult<FlushPlan>| {
            let mut buffer = lock(&finished);
            buffer.flush_finished();
            match outcome {
                Ok(plan) => {
                    buffer.committed(&plan);
                    Ok(())
                }
                Err(e) => {
                    // The samples stay buffered; the next flush writes them.
                    if detached == Detached::Yes {
                        tracing::warn!(error = %e, "writing buffered samples failed");
                        buffer.note_failure(e.clone());
                    }
                    Err(e)
                }
            }
        },
    )
}

fn lock(buffer: &Mutex<SeriesBuffer>) -> MutexGuard<'_, SeriesBuffer> {
    // The buffer is consistent between calls; a panic elsewhere leaves it usable.
    buffer.lock().unwrap_or_else(|p| p.into_inner())
}

/// Finite samples by series, each series sorted by time (stable).
fn group_by_series(batch: &[(String, Sample)]) -> BTreeMap<&str, Vec<Sample>> {
    let mut grouped: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
    for (name, sample) in batch {
        if sample.value.is_finite() {
            grouped.entry(name.as_str()).or_default().push(*sample);
        }
    }
    for samples in grouped.values_mut() {
        samples.sort_by_key(|s| s.at_ms);
    }
    grouped
}

/// What redb holds for a series about to be buffered: its newest chunk and the
/// hour buckets `samples` fall into.
fn load_series(tx: &ReadTransaction, name: &str, samples: &[Sample]) -> StoreResult<Loaded> {
    let names = tx.open_table(SERIES_NAMES)?;
    let Some(id) = names.get(name)?.map(|v| v.value()) else {
        return Ok(Loaded::default());
    };
    let chunks = tx.open_table(SERIES)?;
    let last_chunk = match chunks.range((id, 0)..=(id, u64::MAX))?.next_back() {
        Some(row) => {
            let (k, v) = row?;
            let samples = decode_chunk(v.value()).map_err(|e| StoreError::decode("series", e))?;
            Some((k.value().1, samples))
        }
        None => None,
    };
    let rollups = tx.open_table(SERIES_ROLLUP)?;
    let hours: BTreeSet<u64> = samples
        .iter()
        .map(|s| s.at_ms / HOUR_MS * HOUR_MS)
        .collect();
    let mut stored_hours = Vec::new();
    for hour in hours {
        if let Some(v) = rollups.get((id | HOUR_FLAG, hour))? {
            let r: Rollup =
                codec::decode(v.value()).map_err(|e| StoreError::decode("series_rollup", e))?;
            stored_hours.push((hour, r));
        }
    }
    Ok(Loaded {
        last_chunk,
        hours: stored_hours,
    })
}

/// Stored samples of a series with `from_ms <= at < to_ms`.
fn stored_range(
    tx: &ReadTransaction,
    name: &str,
    from_ms: u64,
    to_ms: u64,
) -> StoreResult<Vec<Sample>> {
    let names = tx.open_table(SERIES_NAMES)?;
    let Some(id) = names.get(name)?.map(|v| v.value()) else {
        return Ok(Vec::new());
    };
    let chunks = tx.open_table(SERIES)?;
    let start = chunks
        .range((id, 0)..=(id, from_ms))?
        .next_back()
        .transpose()?
        .map_or(from_ms, |(k, _)| k.value().1);
    let mut out = Vec::new();
    for row in chunks.range((id, start)..(id, to_ms))? {
        let samples = decode_chunk(row?.1.value()).map_err(|e| StoreError::decode("series", e))?;
        out.extend(
            samples
                .into_iter()
                .filter(|s| s.at_ms >= from_ms && s.at_ms < to_ms),
        );
    }
    Ok(out)
}

/// Min, max, sum and count per `width` bucket of time-ordered samples.
fn bucket(samples: &[Sample], width: u64) -> Vec<SeriesPoint> {
    let mut out: Vec<(u64, Rollup)> = Vec::new();
    for s in samples {
        let at = s.at_ms / width * width;
        match out.last_mut() {
            Some((last, r)) if *last == at => r.merge(&Rollup::of(s.value)),
            _ => out.push((at, Rollup::of(s.value))),
        }
    }
    out.iter()
        .map(|(at, r)| SeriesPoint::of_rollup(*at, r))
        .collect()
}

fn series_id(names: &mut Table<&str, u32>, name: &str) -> StoreResult<u32> {
    if let Some(id) = names.get(name)?.map(|v| v.value()) {
        return Ok(id);
    }
    let id = names.len()? as u32 + 1;
    if id & HOUR_FLAG != 0 {
        return Err(StoreError::Invalid("too many series".into()));
    }
    names.insert(name, id)?;
    Ok(id)
}

/// Writes the rows of a flush plan.
fn write_plan(tx: &WriteTransaction, plan: &FlushPlan) -> StoreResult<()> {
    let mut names = tx.open_table(SERIES_NAMES)?;
    let mut chunks = tx.open_table(SERIES)?;
    let mut rollups = tx.open_table(SERIES_ROLLUP)?;
    for write in &plan.series {
        let id = series_id(&mut names, &write.name)?;
        for chunk in &write.chunks {
            chunks.insert((id, chunk.start), chunk.bytes.as_slice())?;
        }
        for (hour, rollup) in &write.hours {
            rollups.insert((id | HOUR_FLAG, *hour), codec::encode(rollup).as_slice())?;
        }
    }
    if let Some(at_ms) = plan.heartbeat {
        store_heartbeat(tx, at_ms)?;
    }
    Ok(())
}

fn prune_tx(
    tx: &WriteTransaction,
    raw_before: u64,
    rollup_before: u64,
    max_rows: usize,
) -> StoreResult<usize> {
    let ids: Vec<u32> = {
        let names = tx.open_table(SERIES_NAMES)?;
        let mut ids = Vec::new();
        for row in names.iter()? {
            ids.push(row?.1.value());
        }
        ids
    };
    let mut changed = prune_chunks(tx, &ids, raw_before, max_rows)?;
    let mut rollups = tx.open_table(SERIES_ROLLUP)?;
    for id in &ids {
        let budget = max_rows.saturating_sub(changed);
        if budget == 0 {
            return Ok(changed);
        }
        let key_id = *id | HOUR_FLAG;
        // The first `budget` old rows only (see prune_events).
        let keys = rollups
            .range((key_id, 0)..(key_id, rollup_before))?
            .take(budget)
            .map(|row| row.map(|(key, _)| key.value()))
            .collect::<Result<Vec<(u32, u64)>, _>>()?;
        for key in &keys {
            rollups.remove(key)?;
        }
        changed += keys.len();
    }
    Ok(changed)
}

fn prune_chunks(
    tx: &WriteTransaction,
    ids: &[u32],
    raw_before: u64,
    max_rows: usize,
) -> StoreResult<usize> {
    let mut chunks = tx.open_table(SERIES)?;
    let mut stale: Vec<((u32, u64), Vec<u8>)> = Vec::new();
    for id in ids {
        for row in chunks.range((*id, 0)..(*id, raw_before))? {
            if stale.len() >= max_rows {
                break;
            }
            let (k, v) = row?;
            stale.push((k.value(), v.value().to_vec()));
        }
    }
    let changed = stale.len();
    for (key, bytes) in stale {
        let samples = decode_chunk(&bytes).map_err(|e| StoreError::decode("series", e))?;
        let kept: Vec<Sample> = samples
            .into_iter()
            .filter(|s| s.at_ms >= raw_before)
            .collect();
        chunks.remove(key)?;
        if let Some(first) = kept.first() {
            chunks.insert((key.0, first.at_ms), encode_chunk(&kept).as_slice())?;
        }
    }
    Ok(changed)
}

#[cfg(test)]
#[path = "series_tests.rs"]
mod tests;
