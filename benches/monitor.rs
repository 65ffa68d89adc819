//! Monitor costs (issue 7): one tick with every monitor written to the store,
//! bytes per sample at rest and growth per day at the default interval (a whole
//! simulated day of ticks), and history queries over 7 days raw and 30 days of
//! rollups. A plain timing harness: `cargo bench --bench monitor`.
//!
//! Samples are buffered by the store and written every `SERIES_FLUSH` of sample
//! time, so a simulated day of ticks flushes as often as a real one would; the
//! `flush()` calls make the measured file sizes include everything appended.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentlab::breaker::Circuits;
use agentlab::clock::{Clock, ManualClock};
use agentlab::config::{BotConfig, Config};
use agentlab::monitor::Monitor;
use agentlab::monitor::MonitorContext;
use agentlab::monitor::series::history_from_store;
use agentlab::shutdown::Shutdown;
use agentlab::status::{Started, TelegramLinks};
use agentlab::storage::{Sample, SeriesResolution, Store, StoreOptions};
use agentlab::worker::{Pool, pool_events};

const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;
const T0: u64 = 486_112 * HOUR;

fn percentile(times: &mut [Duration], q: f64) -> Duration {
    times.sort();
    times[((times.len() - 1) as f64 * q) as usize]
}

fn context(dir: &std::path::Path) -> Arc<MonitorContext> {
    let store = Store::open(&dir.join("agentlab.redb"), StoreOptions::default()).expect("store");
    let config = Config {
        data_dir: dir.to_path_buf(),
        bots: (1..=3)
            .map(|i| BotConfig {
                id: format!("BOT-00{i}"),
                ..BotConfig::default()
            })
            .collect(),
        ..Config::default()
    };
    let config = Arc::new(config);
    let ids: Vec<String> = config.bots.iter().map(|b| b.id.clone()).collect();
    let circuits = Circuits::load(&store, &ids, &config.breaker);
    let (events, _) = pool_events();
    let pool = Pool::new(config.clone(), store.clone(), circuits.clone(), events);
    Arc::new(MonitorContext {
        links: TelegramLinks::new(ids.iter().map(String::as_str)),
        started: Started::at(std::time::Instant::now(), T0),
        shutdown: Shutdown::new(),
        monitor: Default::default(),
        offsite: Default::default(),
        config,
        store,
        circuits,
        pool,
    })
}

fn file_size(store: &Store) -> u64 {
    std::fs::metadata(store.path())
        .map(|m| m.len())
        .unwrap_or(0)
}

async fn ticks_for_a_day() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let ctx = context(dir.path());
    let clock = Arc::new(ManualClock::new(T0));
    let dyn_clock: Arc<dyn Clock> = clock.clone();
    let mut monitor = Monitor::start(ctx.clone(), dyn_clock).await.expect("start");
    // Some traffic so the API-health and queue monitors have work.
    for _ in 0..50 {
        agentlab::metrics::observe(
            "telegram",
            "sendMessage",
            80.0,
            agentlab::metrics::CallOutcome::Ok,
        );
    }
    monitor.tick().await.expect("warm-up tick");
    ctx.store.flush().await.expect("flush");
    let before = file_size(&ctx.store);
    let (samples_per_tick, ticks) = (
        monitor.tick().await.expect("tick").samples_written,
        8640usize,
    );
    let mut times = Vec::with_capacity(ticks);
    for i in 0..ticks {
        clock.advance(Duration::from_secs(10));
        if i % 10 == 0 {
            agentlab::metrics::observe(
                "telegram",
                "getUpdates",
                10_000.0,
                agentlab::metrics::CallOutcome::Ok,
            );
        }
        let started = Instant::now();
        monitor.tick().await.expect("tick");
        times.push(started.elapsed());
    }
    ctx.store.flush().await.expect("flush");
    let after = file_size(&ctx.store);
    let (rows, rollups) = ctx.store.series_row_counts().expect("rows");
    let samples = (samples_per_tick * ticks) as f64;
    println!("monitor tick (all monitors, written to the store), {ticks} ticks:");
    println!(
        "  median {:?}  p95 {:?}  p99 {:?}  ({samples_per_tick} samples/tick)",
        percentile(&mut times, 0.5),
        percentile(&mut times, 0.95),
        percentile(&mut times, 0.99)
    );
    println!(
        "growth over one simulated day at 10 s: {} bytes ({:.1} MB/day), {:.2} bytes/sample incl. rollups; {rows} chunk rows, {rollups} hour rollup rows",
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 / 1e6,
        after.saturating_sub(before) as f64 / samples
    );
    let store = ctx.store.clone();
    drop(monitor);
    drop(ctx);
    tokio::task::spawn_blocking(move || store.close())
        .await
        .expect("close");
}

async fn bytes_per_sample_and_queries() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let store = Store::open(&dir.path().join("s.redb"), StoreOptions::default()).expect("store");
    store.flush().await.expect("flush");
    let empty = file_size(&store);
    // 30 days of one gauge at 10 s (259,200 samples), a realistic slowly moving value.
    let per_day = (DAY / 10_000) as usize;
    for day in 0..30u64 {
        for part in 0..24u64 {
            let batch: Vec<(String, Sample)> = (0..per_day / 24)
                .map(|i| {
                    let at_ms = T0 + day * DAY + part * HOUR + i as u64 * 10_000;
                    let value = (200_000_000 + (at_ms / 10_000 % 97) * 4096) as f64;
                    (
                        "process_rss_bytes{proc=\"service\"}".to_string(),
                        Sample { at_ms, value },
                    )
                })
                .collect();
            store.append_samples(batch).await.expect("append");
        }
    }
    store.flush().await.expect("flush");
    let total = file_size(&store) - empty;
    let samples = (30 * per_day) as f64;
    println!(
        "bytes at rest, 30 days of one series at 10 s: {:.2} bytes/sample (file growth incl. rollups and redb overhead)",
        total as f64 / samples
    );
    let name = "process_rss_bytes{proc=\"service\"}";
    let now = T0 + 30 * DAY;
    let time = |f: &dyn Fn() -> usize| {
        let mut times = Vec::new();
        let mut n = 0;
        for _ in 0..30 {
            let s = Instant::now();
            n = f();
            times.push(s.elapsed());
        }
        (percentile(&mut times, 0.5), n)
    };
    let (t, n) = time(&|| {
        store
            .series_range(name, now - 7 * DAY, now)
            .expect("raw")
            .len()
    });
    println!("7-day raw range: {t:?} median for {n} samples");
    let (t, n) = time(&|| {
        history_from_store(&store, "process_rss_bytes", now - 7 * DAY, now, None)
            .expect("history")
            .series[0]
            .1
            .len()
    });
    println!(
        "7-day history (minute buckets from raw samples, downsampled to <= 1000): {t:?} median, {n} points"
    );
    let (t, n) = time(&|| {
        store
            .series_rollups(name, now - 30 * DAY, now, SeriesResolution::Hour)
            .expect("hours")
            .len()
    });
    println!("30-day hour rollups: {t:?} median, {n} points");
    let (t, n) = time(&|| {
        history_from_store(&store, "process_rss_bytes", now - 30 * DAY, now, None)
            .expect("history")
            .series[0]
            .1
            .len()
    });
    println!("30-day history answer: {t:?} median, {n} points");
    tokio::task::spawn_blocking(move || store.close())
        .await
        .expect("close");
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        bytes_per_sample_and_queries().await;
        ticks_for_a_day().await;
    });
}
