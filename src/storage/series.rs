//! Time series: named series with labels, stored as chunks of samples plus
//! per-minute and per-hour rollups.
//!
//! Invariants: samples of a series are appended in time order (a sample older than
//! the newest stored one starts no new chunk and is dropped with a debug line);
//! every appended sample is counted in exactly one minute and one hour rollup
//! bucket, in the same transaction; pruning removes exactly the samples and
//! buckets older than the cut-offs, in bounded transactions.

use std::collections::BTreeMap;

use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};
use serde::Serialize;

use super::codec;
use super::error::StoreError;
use super::records::{Rollup, Sample};
use super::series_codec::{decode_chunk, encode_chunk};
use super::tables::{SERIES, SERIES_NAMES, SERIES_ROLLUP};
use super::{Pending, Store, StoreResult};

/// Samples per chunk at most (an hour at the default 10 s interval).
pub const CHUNK_SAMPLES: usize = 360;
const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;
/// Hour rollups live in the same table as minute rollups, under series ids with
/// this bit set.
const HOUR_FLAG: u32 = 0x8000_0000;

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

impl Store {
    /// Appends samples (any series, any order of series; each series in time
    /// order) with a relaxed commit: at most about a second of samples can be lost
    /// in a crash.
    pub fn append_samples(&self, batch: Vec<(String, Sample)>) -> Pending<usize> {
        self.write_relaxed(move |tx| append_tx(tx, &batch))
    }

    /// The id of a series name, if it exists.
    pub fn series_names(&self) -> StoreResult<Vec<(String, u32)>> {
        self.read(|tx| {
            let table = tx.open_table(SERIES_NAMES)?;
            let mut out = Vec::new();
            for row in table.iter()? {
                let (k, v) = row?;
                out.push((k.value().to_string(), v.value()));
            }
            Ok(out)
        })
    }

    /// Raw samples of a series with `from_ms <= at < to_ms`.
    pub fn series_range(&self, name: &str, from_ms: u64, to_ms: u64) -> StoreResult<Vec<Sample>> {
        self.read(|tx| {
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
                out.extend(samples.into_iter().filter(|s| s.at_ms >= from_ms && s.at_ms < to_ms));
            }
            Ok(out)
        })
    }

    /// Rolled-up points of a series with `from_ms <= bucket < to_ms`.
    pub fn series_rollups(
        &self,
        name: &str,
        from_ms: u64,
        to_ms: u64,
        resolution: SeriesResolution,
    ) -> StoreResult<Vec<SeriesPoint>> {
        if resolution == SeriesResolution::Raw {
            return Ok(self
                .series_range(name, from_ms, to_ms)?
                .into_iter()
                .map(|s| SeriesPoint {
                    at_ms: s.at_ms,
                    value: s.value,
                    min: s.value,
                    max: s.value,
                    count: 1,
                })
                .collect());
        }
        self.read(|tx| {
            let names = tx.open_table(SERIES_NAMES)?;
            let Some(id) = names.get(name)?.map(|v| v.value()) else {
                return Ok(Vec::new());
            };
            let key_id = if resolution == SeriesResolution::Hour { id | HOUR_FLAG } else { id };
            let table = tx.open_table(SERIES_ROLLUP)?;
            let mut out = Vec::new();
            for row in table.range((key_id, from_ms)..(key_id, to_ms))? {
                let (k, v) = row?;
                let r: Rollup = codec::decode(v.value()).map_err(|e| StoreError::decode("series_rollup", e))?;
                out.push(SeriesPoint {
                    at_ms: k.value().1,
                    value: r.mean(),
                    min: r.min,
                    max: r.max,
                    count: r.count,
                });
            }
            Ok(out)
        })
    }

    /// Removes raw samples older than `raw_before_ms` and rollups older than
    /// `rollup_before_ms`, touching at most `max_rows` rows. Returns rows changed;
    /// call again until it returns 0.
    pub fn prune_series(&self, raw_before_ms: u64, rollup_before_ms: u64, max_rows: usize) -> Pending<usize> {
        self.write(move |tx| prune_tx(tx, raw_before_ms, rollup_before_ms, max_rows))
    }

    /// Number of chunk rows and rollup rows.
    pub fn series_row_counts(&self) -> StoreResult<(u64, u64)> {
        self.read(|tx| Ok((tx.open_table(SERIES)?.len()?, tx.open_table(SERIES_ROLLUP)?.len()?)))
    }
}

fn series_id(tx: &WriteTransaction, name: &str) -> StoreResult<u32> {
    let mut names = tx.open_table(SERIES_NAMES)?;
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

fn append_tx(tx: &WriteTransaction, batch: &[(String, Sample)]) -> StoreResult<usize> {
    let mut grouped: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
    for (name, sample) in batch {
        if sample.value.is_finite() {
            grouped.entry(name.as_str()).or_default().push(*sample);
        }
    }
    let mut appended = 0;
    for (name, mut samples) in grouped {
        samples.sort_by_key(|s| s.at_ms);
        let id = series_id(tx, name)?;
        appended += append_series(tx, id, &samples)?;
        add_rollups(tx, id, &samples)?;
    }
    Ok(appended)
}

fn append_series(tx: &WriteTransaction, id: u32, samples: &[Sample]) -> StoreResult<usize> {
    let mut chunks = tx.open_table(SERIES)?;
    let last = chunks
        .range((id, 0)..=(id, u64::MAX))?
        .next_back()
        .transpose()?
        .map(|(k, v)| (k.value().1, v.value().to_vec()));
    let (mut start, mut open) = match last {
        Some((start, bytes)) => (start, decode_chunk(&bytes).map_err(|e| StoreError::decode("series", e))?),
        None => (samples[0].at_ms, Vec::new()),
    };
    let newest = open.last().map(|s| s.at_ms);
    let mut appended = 0;
    for sample in samples {
        if newest.is_some_and(|n| sample.at_ms < n) || open.last().is_some_and(|l| sample.at_ms < l.at_ms) {
            tracing::debug!(series = id, "out-of-order sample dropped");
            continue;
        }
        if open.len() >= CHUNK_SAMPLES {
            chunks.insert((id, start), encode_chunk(&open).as_slice())?;
            open.clear();
            start = sample.at_ms;
        }
        if open.is_empty() {
            start = sample.at_ms;
        }
        open.push(*sample);
        appended += 1;
    }
    if !open.is_empty() {
        chunks.insert((id, start), encode_chunk(&open).as_slice())?;
    }
    Ok(appended)
}

fn add_rollups(tx: &WriteTransaction, id: u32, samples: &[Sample]) -> StoreResult<()> {
    let mut table = tx.open_table(SERIES_ROLLUP)?;
    let mut buckets: BTreeMap<(u32, u64), Rollup> = BTreeMap::new();
    for s in samples {
        for (key_id, width) in [(id, MINUTE_MS), (id | HOUR_FLAG, HOUR_MS)] {
            buckets
                .entry((key_id, s.at_ms / width * width))
                .and_modify(|r| r.merge(&Rollup::of(s.value)))
                .or_insert_with(|| Rollup::of(s.value));
        }
    }
    for (key, add) in buckets {
        let existing: Option<Rollup> = table
            .get(key)?
            .map(|v| codec::decode(v.value()))
            .transpose()
            .map_err(|e| StoreError::decode("series_rollup", e))?;
        let merged = match existing {
            Some(mut r) => {
                r.merge(&add);
                r
            }
            None => add,
        };
        table.insert(key, codec::encode(&merged).as_slice())?;
    }
    Ok(())
}

fn prune_tx(tx: &WriteTransaction, raw_before: u64, rollup_before: u64, max_rows: usize) -> StoreResult<usize> {
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
    // Minute buckets live as long as raw samples; hour buckets for the rollup retention.
    for id in &ids {
        for (key_id, before) in [(*id, raw_before), (*id | HOUR_FLAG, rollup_before)] {
            let budget = max_rows.saturating_sub(changed);
            if budget == 0 {
                return Ok(changed);
            }
            let mut removed = 0usize;
            rollups.retain_in((key_id, 0)..(key_id, before), |_, _| {
                removed += 1;
                removed > budget
            })?;
            changed += removed.min(budget);
        }
    }
    Ok(changed)
}

fn prune_chunks(tx: &WriteTransaction, ids: &[u32], raw_before: u64, max_rows: usize) -> StoreResult<usize> {
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
        let kept: Vec<Sample> = samples.into_iter().filter(|s| s.at_ms >= raw_before).collect();
        chunks.remove(key)?;
        if let Some(first) = kept.first() {
            chunks.insert((key.0, first.at_ms), encode_chunk(&kept).as_slice())?;
        }
    }
    Ok(changed)
}
