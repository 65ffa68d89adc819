//! Offsite copies (issue 25): upload and restore of a ~100 MB snapshot through a
//! local S3 server (moto's server mode), plain and encrypted, beside a plain copy
//! of the same file on the same disk; and the bot's update-to-answer latency idle
//! and while the service uploads (target: median within 2x idle).
//!
//! Needs `moto_server` on PATH (`pip install 'moto[server]'`). Run with
//! `cargo build --release && cargo bench --bench remote_backup`.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agentlab::backup::files::SnapshotFile;
use agentlab::backup::remote::Remote;
use agentlab::config::{Config, RemoteBackupConfig};
use agentlab::storage::{Store, StoreOptions};
use common::latency::{UnderLoad, idle_then_under_load};
use common::service::{ADMIN_TOKEN, PATIENCE};
use common::{Table, ms};

const TASKS: u64 = 250_000;
const SAMPLES: u64 = 2_500_000;
const ROUNDS: usize = 150;
const RUNS: usize = 3;
const BUCKET: &str = "bench";
const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

struct Moto(Child, u16);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    // Before any thread exists: the S3 credentials moto accepts, for this process
    // (the library's remote) and the service it spawns.
    // SAFETY: single-threaded here; nothing reads the environment concurrently.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "bench");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "bench");
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AGENTLAB_BENCH_BACKUP_KEY", KEY);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench());
}

async fn start_moto() -> Option<Moto> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let moto = Moto(child, port);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if let Ok(r) = http
            .put(format!("http://127.0.0.1:{port}/{BUCKET}"))
            .send()
            .await
            && r.status().is_success()
        {
            return Some(moto);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

fn remote_config(port: u16, prefix: &str, encrypted: bool) -> RemoteBackupConfig {
    RemoteBackupConfig {
        url: format!("s3://{BUCKET}/{prefix}"),
        endpoint: format!("http://127.0.0.1:{port}"),
        region: "us-east-1".into(),
        encryption_key_env: if encrypted {
            "AGENTLAB_BENCH_BACKUP_KEY".into()
        } else {
            String::new()
        },
        ..RemoteBackupConfig::default()
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn mb_per_s(bytes: u64, d: Duration) -> String {
    format!("{:.0}", bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9))
}

async fn bench() {
    eprintln!("remote backup bench on {}", common::machine());
    let Some(moto) = start_moto().await else {
        eprintln!("skipped: moto_server is not on PATH (pip install 'moto[server]')");
        return;
    };
    let dir = tempfile::tempdir_in(common::bench_dir()).expect("temp dir");
    common::fill::fill_store(dir.path(), TASKS, SAMPLES);
    let config = Config {
        data_dir: dir.path().join("data"),
        backup_dir: dir.path().join("backups"),
        ..Config::default()
    };
    let store = Store::open(&config.database_path(), StoreOptions::default()).expect("store");
    let snapshot = agentlab::backup::backup_now(&store, &config).expect("snapshot");
    store.close();
    let file: SnapshotFile = snapshot.file.clone();
    let size = file.size_bytes;
    eprintln!(
        "snapshot {} ({:.1} MB)",
        file.path.display(),
        size as f64 / 1e6
    );

    let mut table = Table::new(&["operation", "runs (s)", "median MB/s"]);
    // The baseline: a copy of the same file on the same disk, fsynced.
    let copy_to = dir.path().join("plain-copy.redb");
    let mut copies = Vec::new();
    for _ in 0..RUNS {
        let _ = std::fs::remove_file(&copy_to);
        let t = Instant::now();
        std::fs::copy(&file.path, &copy_to).expect("copy");
        std::fs::File::open(&copy_to)
            .and_then(|f| f.sync_all())
            .expect("fsync");
        copies.push(t.elapsed());
    }
    table.row(row("plain copy on the same disk (+ fsync)", &copies, size));

    for encrypted in [false, true] {
        let label = if encrypted { "encrypted" } else { "plain" };
        let remote = Remote::from_config(&remote_config(moto.1, label, encrypted))
            .expect("remote")
            .expect("configured");
        let mut uploads = Vec::new();
        let mut object = String::new();
        for _ in 0..RUNS {
            let t = Instant::now();
            let manifest = remote.upload(&file).await.expect("upload");
            uploads.push(t.elapsed());
            object = manifest.object;
        }
        table.row(row(
            &format!("upload to S3, {label} (stream, multipart, read back + SHA-256)"),
            &uploads,
            size,
        ));
        let mut downloads = Vec::new();
        let dest = dir.path().join(format!("download-{label}.redb"));
        for _ in 0..RUNS {
            let t = Instant::now();
            remote.download(&object, &dest).await.expect("download");
            downloads.push(t.elapsed());
        }
        table.row(row(
            &format!("download from S3, {label} (checked against the manifest, fsync)"),
            &downloads,
            size,
        ));
        let mut restores = Vec::new();
        for run in 0..RUNS {
            let target = dir.path().join(format!("restore-{label}-{run}"));
            let t = Instant::now();
            let fetched = remote.fetch_verified(None, &target).await.expect("fetch");
            let site = Config {
                data_dir: target.join("data"),
                backup_dir: target.clone(),
                ..Config::default()
            };
            let path = fetched.path.clone();
            tokio::task::spawn_blocking(move || agentlab::backup::restore_snapshot(&site, &path))
                .await
                .expect("restore task")
                .expect("restore");
            restores.push(t.elapsed());
            let _ = std::fs::remove_dir_all(&target);
        }
        table.row(row(
            &format!("restore --remote --latest, {label} (download, verify, install)"),
            &restores,
            size,
        ));
    }

    let UnderLoad {
        idle,
        during,
        cycles,
    } = latency(&moto, dir.path()).await;
    println!();
    println!(
        "Machine: {}; snapshot of {TASKS} tasks + {SAMPLES} samples = {:.1} MB; moto S3 on loopback; {}",
        common::machine(),
        size as f64 / 1e6,
        common::bench_filesystem()
    );
    println!();
    table.print();
    println!();
    let mut lat = Table::new(&["case", "messages", "p50 ms", "p99 ms"]);
    lat.row(vec![
        "idle".into(),
        ROUNDS.to_string(),
        ms(idle.median()),
        ms(idle.p99()),
    ]);
    lat.row(vec![
        format!("while uploading ({cycles} snapshot + upload cycles)"),
        ROUNDS.to_string(),
        ms(during.median()),
        ms(during.p99()),
    ]);
    lat.print();
    let ratio = during.median().as_secs_f64() / idle.median().as_secs_f64().max(1e-9);
    println!("\nmedian ratio during/idle: {ratio:.2} (target <= 2)");
}

fn row(label: &str, runs: &[Duration], size: u64) -> Vec<String> {
    let mut sorted = runs.to_vec();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    vec![
        label.to_string(),
        runs.iter().map(|d| secs(*d)).collect::<Vec<_>>().join(", "),
        mb_per_s(size, median),
    ]
}

/// The service on the filled store with `[backup.remote]` (encrypted) on moto:
/// latency idle, then while snapshots are uploaded one after another.
async fn latency(moto: &Moto, filled: &Path) -> UnderLoad {
    let dir = tempfile::tempdir_in(common::bench_dir()).expect("temp dir");
    std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
    std::fs::copy(
        filled.join("data/agentlab.redb"),
        dir.path().join("data/agentlab.redb"),
    )
    .expect("copy store");
    let extra = format!(
        "\n[backup.remote]\nurl = \"s3://{BUCKET}/service\"\nendpoint = \"http://127.0.0.1:{}\"\nregion = \"us-east-1\"\nencryption_key_env = \"AGENTLAB_BENCH_BACKUP_KEY\"\nkeep = 2\n",
        moto.1
    );
    idle_then_under_load(dir, &extra, ROUNDS, upload).await
}

/// One snapshot, then waits until the service reports it uploaded; true if the
/// snapshot was taken.
async fn upload(http: reqwest::Client, base: String, stop: Arc<AtomicBool>) -> bool {
    let Ok(resp) = http
        .post(format!("{base}/api/backup"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
    else {
        return false;
    };
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let said = body.to_string();
    let Some(start) = said.find("agentlab-") else {
        return false;
    };
    let name: String = said[start..].chars().take_while(|c| *c != ' ').collect();
    let name = name.split(".redb").next().unwrap_or("").to_string();
    wait_newest(&http, &base, &name, &stop).await;
    true
}

async fn wait_newest(http: &reqwest::Client, base: &str, name: &str, stop: &AtomicBool) {
    let deadline = Instant::now() + PATIENCE * 5;
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        if let Ok(resp) = http.get(format!("{base}/health")).send().await
            && let Ok(health) = resp.json::<serde_json::Value>().await
            && health["checks"]["backup:offsite"][0]["newest"]
                .as_str()
                .is_some_and(|n| n.starts_with(name))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
