//! The in-memory part of the time series: for each series appended to recently,
//! its open chunk, any sealed chunks not yet written, and its newest hour
//! rollups; plus the heartbeat not yet written. [`super::series`] writes it to
//! redb on an interval (a "flush") and merges it into every read.
//!
//! This is plain data, no redb: the storage layer owns one behind a mutex and
//! does the I/O.
//!
//! Invariants:
//! - per series, the buffered chunks hold a contiguous suffix of the series in
//!   time order: every sample stored in redb for this series that is at or after
//!   the first buffered sample is also buffered (so a reader takes stored
//!   samples before that point and buffered ones from it on, and sees each
//!   sample once);
//! - a buffered chunk or hour bucket holds a superset of what redb holds under
//!   the same key (hour buckets are absolute values, not increments), so writing
//!   it again is idempotent;
//! - nothing leaves the buffer before the commit that stored it returned
//!   ([`SeriesBuffer::committed`]); a chunk or bucket changed since it was
//!   written is written again at the next flush.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::error::StoreError;
use super::records::{Rollup, Sample};
use super::series_codec::encode_chunk;

/// Samples per chunk at most (an hour at the default 10 s interval).
pub const CHUNK_SAMPLES: usize = 360;
/// Width of an hour rollup bucket.
pub(super) const HOUR_MS: u64 = 3_600_000;
/// A stored chunk is continued after a restart only if its newest sample is at
/// most this much older than the first new one; otherwise a new chunk starts.
/// Keeps old rows (which retention may be trimming) from being rewritten.
pub(super) const CONTINUE_GAP_MS: u64 = HOUR_MS;
/// Flushes a series may go without new samples before it leaves the buffer.
const IDLE_FLUSHES: u8 = 2;

/// One chunk in memory.
#[derive(Debug, Clone)]
struct LiveChunk {
    /// Key of the chunk row: the time of its first sample.
    start: u64,
    samples: Vec<Sample>,
    /// How many of `samples` the row under `start` already holds.
    stored: usize,
}

impl LiveChunk {
    fn is_clean(&self) -> bool {
        self.stored == self.samples.len()
    }
}

/// One hour bucket in memory (absolute), and how many samples redb's row holds.
#[derive(Debug, Clone, Copy)]
struct HourBucket {
    rollup: Rollup,
    stored_count: u64,
}

/// What redb holds for a series that is not in the buffer, read before its first
/// append: its newest chunk and the hour buckets the new samples fall into.
#[derive(Debug, Default, Clone)]
pub(super) struct Loaded {
    /// Start and samples of the newest stored chunk.
    pub last_chunk: Option<(u64, Vec<Sample>)>,
    /// Stored hour buckets, by hour start.
    pub hours: Vec<(u64, Rollup)>,
}

/// A buffered series.
#[derive(Debug, Default)]
struct Live {
    /// Newest sample accepted (buffered or stored): older ones are dropped.
    newest_ms: Option<u64>,
    /// Oldest first; the last one is open unless full.
    chunks: VecDeque<LiveChunk>,
    hours: BTreeMap<u64, HourBucket>,
    /// Flushes since the last append.
    idle_flushes: u8,
}

impl Live {
    fn from_loaded(loaded: Loaded, first_new_ms: u64) -> Live {
        let mut live = Live::default();
        if let Some((start, samples)) = loaded.last_chunk {
            live.newest_ms = samples.last().map(|s| s.at_ms);
            let near = live
                .newest_ms
                .is_some_and(|n| first_new_ms.saturating_sub(n) <= CONTINUE_GAP_MS);
            if near && samples.len() < CHUNK_SAMPLES && !samples.is_empty() {
                let stored = samples.len();
                live.chunks.push_back(LiveChunk {
                    start,
                    samples,
                    stored,
                });
            }
        }
        for (hour, rollup) in loaded.hours {
            live.hours.insert(
                hour,
                HourBucket {
                    rollup,
                    stored_count: rollup.count,
                },
            );
        }
        live
    }

    /// Appends samples in time order; returns how many were taken.
    fn append(&mut self, samples: &[Sample]) -> usize {
        let mut taken = 0;
        for sample in samples {
            if self.newest_ms.is_some_and(|n| sample.at_ms < n) {
                tracing::debug!(at_ms = sample.at_ms, "out-of-order sample dropped");
                continue;
            }
            self.push_sample(*sample);
            self.add_to_hour(sample);
            self.newest_ms = Some(sample.at_ms);
            taken += 1;
        }
        if taken > 0 {
            self.idle_flushes = 0;
        }
        taken
    }

    fn push_sample(&mut self, sample: Sample) {
        match self.chunks.back_mut() {
            Some(open) if open.samples.len() < CHUNK_SAMPLES => open.samples.push(sample),
            _ => self.chunks.push_back(LiveChunk {
                start: sample.at_ms,
                samples: vec![sample],
                stored: 0,
            }),
        }
    }

    fn add_to_hour(&mut self, sample: &Sample) {
        let hour = sample.at_ms / HOUR_MS * HOUR_MS;
        self.hours
            .entry(hour)
            .and_modify(|b| b.rollup.merge(&Rollup::of(sample.value)))
            .or_insert(HourBucket {
                rollup: Rollup::of(sample.value),
                stored_count: 0,
            });
    }

    fn is_clean(&self) -> bool {
        self.chunks.iter().all(LiveChunk::is_clean)
            && self
                .hours
                .values()
                .all(|b| b.stored_count == b.rollup.count)
    }

    fn first_ms(&self) -> Option<u64> {
        self.chunks
            .front()
            .and_then(|c| c.samples.first())
            .map(|s| s.at_ms)
    }

    fn plan(&self, name: &str) -> Option<SeriesWrite> {
        let chunks: Vec<ChunkWrite> = self
            .chunks
            .iter()
            .filter(|c| !c.is_clean())
            .map(|c| ChunkWrite {
                start: c.start,
                len: c.samples.len(),
                bytes: encode_chunk(&c.samples),
            })
            .collect();
        let hours: Vec<(u64, Rollup)> = self
            .hours
            .iter()
            .filter(|(_, b)| b.stored_count != b.rollup.count)
            .map(|(h, b)| (*h, b.rollup))
            .collect();
        (!chunks.is_empty() || !hours.is_empty()).then(|| SeriesWrite {
            name: name.to_string(),
            chunks,
            hours,
        })
    }

    fn mark_stored(&mut self, write: &SeriesWrite) {
        for w in &write.chunks {
            if let Some(c) = self.chunks.iter_mut().find(|c| c.start == w.start) {
                c.stored = c.stored.max(w.len.min(c.samples.len()));
            }
        }
        for (hour, rollup) in &write.hours {
            if let Some(b) = self.hours.get_mut(hour) {
                b.stored_count = b.stored_count.max(rollup.count);
            }
        }
    }

    /// Drops what redb holds in full and is no longer being added to: clean
    /// chunks before the open one (and the open one when full), clean hour
    /// buckets before the newest. Only a prefix goes, so the suffix invariant holds.
    fn evict_clean(&mut self) {
        while let Some(front) = self.chunks.front() {
            let last = self.chunks.len() == 1;
            if front.is_clean() && (!last || front.samples.len() >= CHUNK_SAMPLES) {
                self.chunks.pop_front();
            } else {
                break;
            }
        }
        let newest_hour = self.hours.keys().next_back().copied();
        self.hours
            .retain(|h, b| Some(*h) == newest_hour || b.stored_count != b.rollup.count);
    }

    /// Drops samples before `raw_before` and hour buckets before `rollup_before`.
    /// A chunk that keeps part of its samples is re-keyed at its first kept one
    /// and written again at the next flush.
    fn prune(&mut self, raw_before: u64, rollup_before: u64) {
        for chunk in &mut self.chunks {
            if chunk.start >= raw_before {
                continue;
            }
            chunk.samples.retain(|s| s.at_ms >= raw_before);
            if let Some(first) = chunk.samples.first() {
                chunk.start = first.at_ms;
            }
            chunk.stored = 0;
        }
        self.chunks.retain(|c| !c.samples.is_empty());
        self.hours.retain(|h, _| *h >= rollup_before);
    }
}

/// A chunk row to write.
#[derive(Debug, Clone)]
pub(super) struct ChunkWrite {
    /// Key: time of the first sample.
    pub start: u64,
    /// Samples in it.
    pub len: usize,
    /// Encoded chunk.
    pub bytes: Vec<u8>,
}

/// Rows to write for one series.
#[derive(Debug, Clone)]
pub(super) struct SeriesWrite {
    /// Series name with labels.
    pub name: String,
    /// Chunk rows changed since the last flush.
    pub chunks: Vec<ChunkWrite>,
    /// Hour buckets changed since the last flush (absolute values).
    pub hours: Vec<(u64, Rollup)>,
}

/// Everything one flush writes.
#[derive(Debug, Clone, Default)]
pub(super) struct FlushPlan {
    /// Per series.
    pub series: Vec<SeriesWrite>,
    /// Heartbeat to store, if it moved.
    pub heartbeat: Option<u64>,
}

/// Samples and hour buckets of one series as the buffer holds them, for a read.
#[derive(Debug, Default, Clone)]
pub(super) struct LiveView {
    /// Time of the first buffered sample: stored samples from here on are
    /// also in `samples`.
    pub first_ms: Option<u64>,
    /// Buffered samples in the range asked for.
    pub samples: Vec<Sample>,
    /// Buffered hour buckets in the range asked for (these replace stored rows).
    pub hours: Vec<(u64, Rollup)>,
}

/// The buffer of every series appended to recently.
#[derive(Debug)]
pub(super) struct SeriesBuffer {
    series: HashMap<String, Live>,
    /// Newest heartbeat, and whether redb holds it.
    heartbeat: Option<(u64, bool)>,
    /// Newest sample time and wall time of the last flush started.
    last_flush: Option<(u64, Instant)>,
    /// Flushes started and not yet finished.
    in_flight: u32,
    /// Newest sample time appended to any series.
    newest_ms: u64,
    interval: Duration,
    /// Why the last flush nobody awaited failed, until an append reports it.
    failure: Option<StoreError>,
}

impl SeriesBuffer {
    /// An empty buffer flushed every `interval` (sample time or wall time,
    /// whichever passes first).
    pub fn new(interval: Duration) -> Self {
        SeriesBuffer {
            series: HashMap::new(),
            heartbeat: None,
            last_flush: None,
            in_flight: 0,
            newest_ms: 0,
            interval,
            failure: None,
        }
    }

    /// Whether `name` is buffered (if not, load it before appending).
    pub fn contains(&self, name: &str) -> bool {
        self.series.contains_key(name)
    }

    /// Names of every buffered series.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.series.keys().map(String::as_str)
    }

    /// Takes in a series that was not buffered, from what redb holds.
    pub fn insert_loaded(&mut self, name: &str, loaded: Loaded, first_new_ms: u64) {
        self.series
            .insert(name.to_string(), Live::from_loaded(loaded, first_new_ms));
    }

    /// Appends samples (time order) to a buffered series; returns how many were
    /// taken (older than the series' newest sample are dropped). A series not
    /// yet buffered starts empty.
    pub fn append(&mut self, name: &str, samples: &[Sample]) -> usize {
        if let Some(last) = samples.last() {
            self.newest_ms = self.newest_ms.max(last.at_ms);
        }
        self.series
            .entry(name.to_string())
            .or_default()
            .append(samples)
    }

    /// Records a heartbeat, written with the next flush.
    pub fn set_heartbeat(&mut self, at_ms: u64) {
        let newest = self.heartbeat.map_or(at_ms, |(h, _)| h.max(at_ms));
        let stored = self.heartbeat.is_some_and(|(h, s)| s && h == newest);
        self.heartbeat = Some((newest, stored));
    }

    /// The newest heartbeat recorded in this run.
    pub fn heartbeat(&self) -> Option<u64> {
        self.heartbeat.map(|(h, _)| h)
    }

    /// Whether a flush is due: none is running, and either none ran yet or the
    /// interval passed in sample time or in wall time. (Never two at once: on a
    /// slow disk flushes follow each other instead of queueing up.)
    pub fn flush_due(&self) -> bool {
        if self.in_flight > 0 {
            return false;
        }
        let interval_ms = self.interval.as_millis() as u64;
        match self.last_flush {
            None => true,
            Some((at_ms, at)) => {
                self.newest_ms.saturating_sub(at_ms) >= interval_ms || at.elapsed() >= self.interval
            }
        }
    }

    /// Notes that a flush was started now (so appends do not start another).
    pub fn flush_started(&mut self) {
        self.last_flush = Some((self.newest_ms, Instant::now()));
        self.in_flight += 1;
    }

    /// Notes that a flush finished, stored or failed.
    pub fn flush_finished(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Keeps the failure of a flush nobody awaited.
    pub fn note_failure(&mut self, e: StoreError) {
        self.failure = Some(e);
    }

    /// The failure of the last unawaited flush, once.
    pub fn take_failure(&mut self) -> Option<StoreError> {
        self.failure.take()
    }

    /// Whether anything buffered is not in redb yet.
    pub fn is_dirty(&self) -> bool {
        self.heartbeat.is_some_and(|(_, stored)| !stored)
            || self.series.values().any(|l| !l.is_clean())
    }

    /// The rows a flush must write now: every chunk and hour bucket changed
    /// since it was last written, and the heartbeat.
    pub fn plan(&self) -> FlushPlan {
        let mut series: Vec<SeriesWrite> = self
            .series
            .iter()
            .filter_map(|(name, live)| live.plan(name))
            .collect();
        series.sort_by(|a, b| a.name.cmp(&b.name));
        FlushPlan {
            series,
            heartbeat: self.heartbeat.filter(|(_, s)| !s).map(|(h, _)| h),
        }
    }

    /// Called once the commit holding `plan` returned: marks what it stored and
    /// lets go of what redb now holds and no append still extends.
    pub fn committed(&mut self, plan: &FlushPlan) {
        for write in &plan.series {
            if let Some(live) = self.series.get_mut(&write.name) {
                live.mark_stored(write);
            }
        }
        if let (Some(h), Some((newest, stored))) = (plan.heartbeat, self.heartbeat.as_mut())
            && h == *newest
        {
            *stored = true;
        }
        self.series.retain(|_, live| {
            live.evict_clean();
            live.idle_flushes = live.idle_flushes.saturating_add(1);
            !(live.idle_flushes > IDLE_FLUSHES && live.is_clean())
        });
    }

    /// Drops buffered samples before `raw_before` and hour buckets before
    /// `rollup_before` (retention; redb is pruned in the same transaction).
    pub fn prune(&mut self, raw_before: u64, rollup_before: u64) {
        for live in self.series.values_mut() {
            live.prune(raw_before, rollup_before);
        }
    }

    /// What a read of `name` over `from_ms <= t < to_ms` takes from the buffer.
    pub fn view(&self, name: &str, from_ms: u64, to_ms: u64) -> LiveView {
        let Some(live) = self.series.get(name) else {
            return LiveView::default();
        };
        let in_range = |t: u64| t >= from_ms && t < to_ms;
        LiveView {
            first_ms: live.first_ms(),
            samples: live
                .chunks
                .iter()
                .flat_map(|c| c.samples.iter())
                .filter(|s| in_range(s.at_ms))
                .copied()
                .collect(),
            hours: live
                .hours
                .iter()
                .filter(|(h, _)| in_range(**h))
                .map(|(h, b)| (*h, b.rollup))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(from: u64, n: u64) -> Vec<Sample> {
        (0..n)
            .map(|i| Sample {
                at_ms: (from + i) * 10_000,
                value: i as f64,
            })
            .collect()
    }

    #[test]
    fn full_chunks_seal_and_leave_after_their_commit() {
        let mut buffer = SeriesBuffer::new(Duration::from_secs(30));
        let n = CHUNK_SAMPLES as u64 * 2 + 5;
        assert_eq!(buffer.append("x", &samples(0, n)), n as usize);
        let plan = buffer.plan();
        assert_eq!(plan.series[0].chunks.len(), 3);
        assert_eq!(buffer.view("x", 0, u64::MAX).samples.len(), n as usize);
        // More samples arrive before the commit returns: still dirty after it.
        buffer.append("x", &samples(n, 1));
        buffer.committed(&plan);
        let live = &buffer.series["x"];
        assert_eq!(live.chunks.len(), 1, "sealed chunks leave once stored");
        assert!(!live.is_clean());
        assert_eq!(buffer.view("x", 0, u64::MAX).first_ms, Some(720 * 10_000));
        let again = buffer.plan();
        assert_eq!(again.series[0].chunks.len(), 1);
        assert_eq!(again.series[0].chunks[0].len, 6);
    }

    #[test]
    fn out_of_order_samples_are_dropped() {
        let mut buffer = SeriesBuffer::new(Duration::from_secs(30));
        buffer.append("x", &samples(10, 3));
        assert_eq!(buffer.append("x", &samples(5, 3)), 0);
        assert_eq!(
            buffer.append("x", &samples(12, 2)),
            2,
            "equal time is taken"
        );
    }

    #[test]
    fn idle_clean_series_leave_the_buffer() {
        let mut buffer = SeriesBuffer::new(Duration::from_secs(30));
        buffer.append("x", &samples(0, 3));
        // The first flush writes it; then it may sit idle through IDLE_FLUSHES - 1.
        for _ in 0..IDLE_FLUSHES {
            let plan = buffer.plan();
            buffer.committed(&plan);
            assert!(buffer.contains("x"));
        }
        let plan = buffer.plan();
        buffer.committed(&plan);
        assert!(!buffer.contains("x"));
    }

    #[test]
    fn flush_is_due_by_sample_time() {
        let mut buffer = SeriesBuffer::new(Duration::from_secs(30));
        assert!(buffer.flush_due());
        buffer.append("x", &samples(0, 1));
        buffer.flush_started();
        buffer.flush_finished();
        buffer.append("x", &samples(1, 2));
        assert!(!buffer.flush_due());
        buffer.append("x", &samples(3, 1));
        assert!(buffer.flush_due());
        buffer.flush_started();
        buffer.append("x", &samples(4, 10));
        assert!(!buffer.flush_due(), "one flush at a time");
        buffer.flush_finished();
        assert!(buffer.flush_due());
    }

    #[test]
    fn a_far_stored_chunk_is_not_continued() {
        let stored = samples(0, 3);
        let loaded = Loaded {
            last_chunk: Some((0, stored.clone())),
            hours: Vec::new(),
        };
        let mut buffer = SeriesBuffer::new(Duration::from_secs(30));
        buffer.insert_loaded("near", loaded.clone(), 40_000);
        buffer.insert_loaded("far", loaded, 20_000 + CONTINUE_GAP_MS + 1);
        assert_eq!(buffer.view("near", 0, u64::MAX).samples, stored);
        assert!(buffer.view("far", 0, u64::MAX).samples.is_empty());
        // The far one still knows its newest sample.
        assert_eq!(buffer.append("far", &samples(1, 1)), 0);
    }
}
