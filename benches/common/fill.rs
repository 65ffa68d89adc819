//! A store filled the way the service would have filled it (group commits from
//! several threads): finished historic tasks and monitor samples.

use std::path::Path;
use std::time::Instant;

use agentlab::storage::{
    NewTask, PRIORITY_NORMAL, Sample, Store, StoreOptions, TaskFinish, TaskKind, TaskSource,
    TaskStatus,
};

/// Fills `data/agentlab.redb` the way the service would have (group commits).
pub fn fill_store(dir: &Path, tasks: u64, samples: u64) {
    let path = dir.join("data").join("agentlab.redb");
    let store = Store::open(&path, StoreOptions::default()).expect("store");
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..8u64 {
            let store = store.clone();
            scope.spawn(move || {
                for i in (t..tasks).step_by(8) {
                    let new = NewTask {
                        bot_id: "BOT-SNAP".into(),
                        user_id: 10_000 + (i % 500) as i64,
                        chat_id: 10_000 + (i % 500) as i64,
                        kind: TaskKind::Chat,
                        source: TaskSource::Api,
                        prompt: format!("historic prompt {i}: refactor the parser and add tests"),
                        priority: PRIORITY_NORMAL,
                        max_attempts: 1,
                        reply_to_message_id: None,
                        update_id: None,
                    };
                    let at = 1_700_000_000_000 + i;
                    let id = store.submit_task(new, at).wait().expect("submit").task.id;
                    // A historic task is done: finished, not waiting in the queue
                    // (claiming would stop at one running task per user).
                    let finish = TaskFinish {
                        status: Some(TaskStatus::Succeeded),
                        result: Some(format!("historic answer {i}")),
                        cost_usd: 0.01,
                        ..TaskFinish::default()
                    };
                    store
                        .finish_task(id, finish, at + 1_000)
                        .wait()
                        .expect("finish");
                }
            });
        }
    });
    for series in 0..10u64 {
        let per = samples / 10;
        for batch in 0..(per / 10_000) {
            let samples = (0..10_000)
                .map(|k| {
                    let n = batch * 10_000 + k;
                    (
                        format!("bench_series_{series}"),
                        Sample {
                            at_ms: 1_700_000_000_000 + n * 10_000,
                            value: (n % 97) as f64,
                        },
                    )
                })
                .collect();
            store.append_samples(samples).wait().expect("samples");
        }
    }
    store.close();
    drop(store);
    eprintln!("filled store in {:?}", started.elapsed());
}
