//! Encode/decode speed of one 360-sample series chunk (an hour of 10 s scrapes).
//!
//! Run with `cargo bench --bench series_codec`.

use std::hint::black_box;

use agentlab::storage::Sample;
use agentlab::storage::series_codec::{decode_chunk, encode_chunk};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Deterministic splitmix64 step.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 360 samples 10 s ± 20 ms apart; `value(i, random)` gives each value.
fn chunk(value: impl Fn(u64, u64) -> f64) -> Vec<Sample> {
    let mut state = 7;
    (0..360u64)
        .map(|i| {
            let jitter = (next(&mut state) % 41) as i64 - 20;
            let at_ms = (1_750_000_000_000 + i * 10_000).wrapping_add_signed(jitter);
            Sample {
                at_ms,
                value: value(i, next(&mut state)),
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let kinds = [
        ("constant", chunk(|_, _| 1_073_741_824.0)),
        // RSS in whole pages, creeping up.
        (
            "rss",
            chunk(|i, r| (180_000_000 / 4096 * 4096 + (i + r % 4) * 4096) as f64),
        ),
        // Noisy CPU %, one decimal: the most bits per sample.
        ("cpu", chunk(|_, r| (r % 1001) as f64 / 10.0)),
    ];
    let mut group = c.benchmark_group("series_codec_360");
    group.throughput(Throughput::Elements(360));
    for (name, samples) in &kinds {
        let bytes = encode_chunk(samples);
        group.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| encode_chunk(black_box(samples)))
        });
        group.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| decode_chunk(black_box(&bytes)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
