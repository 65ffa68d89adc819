//! Tests of the series layer: the buffer merged with redb, flush and reopen,
//! retention at unaligned cut-offs, minute answers computed from raw samples.

use std::collections::BTreeMap;

use redb::ReadableTable;

use super::*;
use crate::storage::series_buffer::CHUNK_SAMPLES;
use crate::storage::{StoreOptions, tables::META};

const NAME: &str = "rss{bot=\"A\"}";

fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    (dir, store)
}

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(&dir.path().join("agentlab.redb"), StoreOptions::default()).expect("open")
}

/// `n` samples from index `from`, 10 s apart, with values that are not regular.
fn samples(from: u64, n: u64) -> Vec<Sample> {
    (from..from + n)
        .map(|i| Sample {
            at_ms: 1_000_000_000 + i * 10_000 + (i * 7919) % 1_000,
            value: ((i * 37) % 101) as f64 * 1.5,
        })
        .collect()
}

fn batch(samples: &[Sample]) -> Vec<(String, Sample)> {
    samples.iter().map(|s| (NAME.to_string(), *s)).collect()
}

fn all(store: &Store) -> Vec<Sample> {
    store.series_range(NAME, 0, u64::MAX).expect("range")
}

fn stored_rows(store: &Store) -> (u64, u64) {
    store.series_row_counts().expect("rows")
}

/// Minute buckets as the store used to write them: one rollup per sample merged
/// into its minute.
fn minute_rollups_the_old_way(samples: &[Sample]) -> Vec<SeriesPoint> {
    let mut buckets: BTreeMap<u64, Rollup> = BTreeMap::new();
    for s in samples {
        buckets
            .entry(s.at_ms / 60_000 * 60_000)
            .and_modify(|r| r.merge(&Rollup::of(s.value)))
            .or_insert_with(|| Rollup::of(s.value));
    }
    buckets
        .iter()
        .map(|(at, r)| SeriesPoint::of_rollup(*at, r))
        .collect()
}

#[test]
fn appends_across_chunk_boundaries_read_back_whole_flushed_or_not() {
    let (_dir, store) = temp_store();
    let data = samples(0, CHUNK_SAMPLES as u64 * 2 + 17);
    // One sample per append, like monitor ticks: the store flushes every third
    // (30 s of sample time), and twice more here, so reads merge buffer and redb
    // at every stage.
    let mut taken = 0;
    let mut buffered_reads = 0;
    for (i, part) in data.chunks(1).enumerate() {
        taken += store.append_samples(batch(part)).wait().expect("append");
        if lock(&store.inner.series).is_dirty() {
            buffered_reads += 1;
        }
        assert_eq!(all(&store), data[..taken], "after append {i}");
        if i == 359 || i == 500 {
            store.flush().wait().expect("flush");
            assert_eq!(all(&store), data[..taken], "after flush {i}");
        }
    }
    assert_eq!(taken, data.len());
    assert!(buffered_reads > data.len() / 2, "{buffered_reads}");
    store.flush().wait().expect("flush");
    assert_eq!(stored_rows(&store).0, 3, "two full chunks and the open one");
    assert_eq!(all(&store), data);
    let some = store
        .series_range(NAME, data[400].at_ms, data[410].at_ms)
        .expect("range");
    assert_eq!(some, data[400..410]);
}

#[test]
fn buffered_samples_are_read_before_any_flush() {
    let (_dir, store) = temp_store();
    store
        .append_samples(batch(&samples(0, 3)))
        .wait()
        .expect("first append flushes");
    // Within the flush interval: buffered only.
    store
        .append_samples(batch(&samples(3, 2)))
        .wait()
        .expect("append");
    assert_eq!(all(&store), samples(0, 5));
    let hours = store
        .series_rollups(NAME, 0, u64::MAX, SeriesResolution::Hour)
        .expect("hours");
    assert_eq!(hours.iter().map(|p| p.count).sum::<u64>(), 5);
    assert_eq!(store.series_names().expect("names"), vec![NAME.to_string()]);
}

#[test]
fn close_writes_everything_and_a_reopened_store_continues_the_chunk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = samples(0, 500);
    {
        let store = open(&dir);
        for part in data[..300].chunks(10) {
            store
                .append_samples_with_heartbeat(batch(part), part[0].at_ms)
                .wait()
                .expect("append");
        }
        store.close();
    }
    {
        let store = open(&dir);
        assert_eq!(all(&store), data[..300]);
        assert_eq!(
            store.last_heartbeat().expect("heartbeat"),
            Some(data[290].at_ms)
        );
        // Dropped without close(): the drop writes the buffer too.
        store
            .append_samples(batch(&data[300..]))
            .wait()
            .expect("append");
    }
    let store = open(&dir);
    assert_eq!(all(&store), data);
    // The 300-sample chunk was continued after the reopen, not cut short.
    assert_eq!(stored_rows(&store).0, 2);
    let hours = store
        .series_rollups(NAME, 0, u64::MAX, SeriesResolution::Hour)
        .expect("hours");
    assert_eq!(hours.iter().map(|p| p.count).sum::<u64>(), 500);
}

#[test]
fn out_of_order_samples_are_dropped_in_memory_and_after_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = samples(0, 20);
    {
        let store = open(&dir);
        store
            .append_samples(batch(&data[10..]))
            .wait()
            .expect("append");
        assert_eq!(
            store.append_samples(batch(&data[..5])).wait().expect("old"),
            0
        );
        store.close();
    }
    let store = open(&dir);
    assert_eq!(
        store
            .append_samples(batch(&data[5..10]))
            .wait()
            .expect("old"),
        0
    );
    assert_eq!(all(&store), data[10..]);
}

#[test]
fn minute_buckets_equal_the_rollups_that_used_to_be_stored() {
    let (_dir, store) = temp_store();
    let data = samples(0, 1_000);
    for part in data.chunks(128) {
        store.append_samples(batch(part)).wait().expect("append");
    }
    let expected = minute_rollups_the_old_way(&data);
    let minutes = store
        .series_rollups(NAME, 0, u64::MAX, SeriesResolution::Minute)
        .expect("minutes");
    assert_eq!(minutes, expected);
    // A range cut mid-minute holds the whole minutes that start in it.
    let (from, to) = (data[100].at_ms + 1, data[200].at_ms + 1);
    let part = store
        .series_rollups(NAME, from, to, SeriesResolution::Minute)
        .expect("part");
    let want: Vec<SeriesPoint> = expected
        .into_iter()
        .filter(|p| p.at_ms >= from && p.at_ms < to)
        .collect();
    assert_eq!(part, want);
}

#[test]
fn pruning_at_an_unaligned_cut_off_keeps_exactly_the_samples_at_or_after_it() {
    let (_dir, store) = temp_store();
    let data = samples(0, 2_000);
    // Stored chunks, and a last part still in the buffer.
    for part in data.chunks(250) {
        store.append_samples(batch(part)).wait().expect("append");
    }
    store
        .append_samples(batch(&samples(2_000, 2)))
        .wait()
        .expect("buffered");
    assert!(lock(&store.inner.series).is_dirty());
    let data = samples(0, 2_002);
    // Cut-offs neither on a chunk start nor on an hour, and one exactly on a sample.
    let raw_cut = data[777].at_ms;
    let hour_cut = data[500].at_ms + 1;
    assert_ne!(raw_cut % 3_600_000, 0);
    loop {
        let changed = store
            .prune_series(raw_cut, hour_cut, 2)
            .wait()
            .expect("prune");
        if changed == 0 {
            break;
        }
    }
    assert_eq!(all(&store), data[777..]);
    let hours = store
        .series_rollups(NAME, 0, u64::MAX, SeriesResolution::Hour)
        .expect("hours");
    let first_kept_hour = hour_cut.div_ceil(3_600_000) * 3_600_000;
    assert_eq!(hours.first().map(|p| p.at_ms), Some(first_kept_hour));
    // Kept hour buckets still count every sample of their hour.
    let counted: u64 = hours.iter().map(|p| p.count).sum();
    assert_eq!(
        counted,
        data.iter().filter(|s| s.at_ms >= first_kept_hour).count() as u64
    );
    // After a flush, the same.
    store.flush().wait().expect("flush");
    assert_eq!(all(&store), data[777..]);
    // And pruning the buffer alone (everything old already gone) is exact too.
    let late_cut = data[2_001].at_ms;
    while store
        .prune_series(late_cut, hour_cut, 100)
        .wait()
        .expect("prune")
        > 0
    {}
    assert_eq!(all(&store), data[2_001..]);
    store.flush().wait().expect("flush");
    assert_eq!(all(&store), data[2_001..]);
}

#[test]
fn a_schema_2_file_loses_its_minute_rollups_and_keeps_hour_rollups() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(&dir);
        store
            .write(|tx| {
                let mut rollups = tx.open_table(SERIES_ROLLUP)?;
                for minute in 0..5u64 {
                    rollups.insert(
                        (1, minute * 60_000),
                        codec::encode(&Rollup::of(1.0)).as_slice(),
                    )?;
                }
                rollups.insert(
                    (1 | HOUR_FLAG, 0),
                    codec::encode(&Rollup::of(1.0)).as_slice(),
                )?;
                let mut meta = tx.open_table(META)?;
                meta.insert("schema_version", 2u32.to_le_bytes().as_slice())?;
                Ok(())
            })
            .wait()
            .expect("old rows");
        store.close();
    }
    let store = open(&dir);
    assert_eq!(
        store.schema_version().expect("version"),
        Store::latest_schema_version()
    );
    let keys: Vec<(u32, u64)> = store
        .read(|tx| {
            let table = tx.open_table(SERIES_ROLLUP)?;
            let mut keys = Vec::new();
            for row in table.iter()? {
                keys.push(row?.0.value());
            }
            Ok(keys)
        })
        .expect("keys");
    assert_eq!(keys, vec![(1 | HOUR_FLAG, 0)]);
}

#[test]
fn dump_holds_buffered_samples() {
    let (_dir, store) = temp_store();
    store
        .append_samples(batch(&samples(0, 1)))
        .wait()
        .expect("append");
    store
        .append_samples(batch(&samples(1, 2)))
        .wait()
        .expect("buffered");
    let mut dumped = 0;
    store
        .dump(&["series".to_string()], None, &mut |row| {
            let samples = row.ndjson_value()["samples"].as_array().map_or(0, Vec::len);
            dumped += samples;
            Ok(())
        })
        .expect("dump");
    assert_eq!(dumped, 3);
}
