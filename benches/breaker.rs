//! Cost of one `try_acquire` + `success` round trip on a closed breaker, alone and
//! with 2 and 8 threads hammering the same breaker.
//!
//! Contended cases report the time per call *as seen by each thread* (all threads run
//! `iters` calls at once and the wall time is returned), plus aggregate throughput.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use agentlab::breaker::{BreakerSettings, CircuitBreaker};
use agentlab::clock::SystemClock;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn closed_breaker() -> CircuitBreaker {
    CircuitBreaker::new(
        "bench",
        BreakerSettings::default(),
        Arc::new(SystemClock::new()),
    )
}

fn acquire_and_succeed(breaker: &CircuitBreaker) {
    match breaker.try_acquire() {
        Ok(permit) => permit.success(),
        Err(rejected) => {
            black_box(rejected);
        }
    }
}

fn uncontended(c: &mut Criterion) {
    let breaker = closed_breaker();
    c.bench_function("try_acquire_success/uncontended", |b| {
        b.iter(|| acquire_and_succeed(black_box(&breaker)));
    });
}

/// Runs `iters` calls on each of `threads` threads at once; returns the wall time.
fn run_on_threads(threads: usize, iters: u64) -> Duration {
    let breaker = closed_breaker();
    let start_line = Barrier::new(threads + 1);
    thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    start_line.wait();
                    for _ in 0..iters {
                        acquire_and_succeed(black_box(&breaker));
                    }
                })
            })
            .collect();
        start_line.wait();
        let started = Instant::now();
        for worker in workers {
            if worker.join().is_err() {
                panic!("benchmark worker panicked");
            }
        }
        started.elapsed()
    })
}

fn contended(c: &mut Criterion) {
    let mut group = c.benchmark_group("try_acquire_success/contended");
    for threads in [2_usize, 8] {
        group.throughput(Throughput::Elements(threads as u64));
        group.bench_function(format!("{threads}_threads"), |b| {
            b.iter_custom(|iters| run_on_threads(threads, iters));
        });
    }
    group.finish();
}

criterion_group!(benches, uncontended, contended);
criterion_main!(benches);
