//! Backups in object storage (`[backup.remote]`): the real service and the real
//! `agentlab` commands against a real S3-compatible server started here (moto's
//! server mode: `pip install 'moto[server]'`) and against a `file://` store.
//!
//! Without `moto_server` on PATH the S3 tests are reported as ignored, with the
//! install command, except under CI (`CI` set), where that is a failure.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Options, PATIENCE, Service};

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const OTHER_KEY: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
const BUCKET: &str = "agentlab-backups";

/// A moto S3 server on a free port, killed when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts moto with one bucket. Its tests carry the `missing_tool =
    /// "moto_server"` ignore (see `build.rs`), so this runs only where moto is
    /// installed or in CI, where a missing moto fails.
    async fn start(_test: &str) -> Option<Moto> {
        crate::harness::require_tool("moto_server");
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn moto_server");
        let moto = Moto { child, port };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + PATIENCE;
        loop {
            // moto needs no signature; creating the bucket is the readiness probe.
            if let Ok(resp) = client.put(format!("{}/{BUCKET}", moto.url())).send().await
                && resp.status().is_success()
            {
                return Some(moto);
            }
            assert!(Instant::now() < deadline, "moto did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A TCP forwarder in front of moto that can be switched off (connections refused
/// by closing them at once, open ones cut), to play a server that went down.
struct Switch {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    open: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Switch {
    async fn start(target: u16) -> Switch {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind switch");
        let addr = listener.local_addr().expect("addr");
        let up = Arc::new(AtomicBool::new(true));
        let open = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (up2, open2) = (up.clone(), open.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                open2.lock().expect("lock").push(task.abort_handle());
            }
        });
        Switch { addr, up, open }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            for task in self.open.lock().expect("lock").drain(..) {
                task.abort();
            }
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn s3_env() -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AGENTLAB_TEST_BACKUP_KEY", KEY),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn remote_toml(url: &str, endpoint: &str, extra: &str) -> String {
    format!(
        "\n[backup.remote]\nurl = \"{url}\"\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\n{extra}\n"
    )
}

fn options(remote: String, env: Vec<(String, String)>) -> Options {
    Options {
        extra_toml: remote,
        extra_env: env,
        ..Options::default()
    }
}

/// Runs `agentlab --config <config> args...` with `env` (and nothing from the
/// test's own environment that could point elsewhere).
fn agentlab(config: &Path, env: &[(String, String)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agentlab"));
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env_remove("AGENTLAB_CONFIG")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run agentlab")
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The verified copies `backups --remote` lists (object names), newest first.
fn remote_copies(service: &Service) -> Vec<String> {
    let out = agentlab(
        &service.config_path,
        &service.env(),
        &["backups", "--remote"],
    );
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("  verified  "))
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect()
}

/// Waits until `backups --remote` lists a verified copy of every snapshot named.
async fn wait_for_copies(service: &Service, snapshots: &[String]) -> Vec<String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let copies = remote_copies(service);
        if snapshots
            .iter()
            .all(|s| copies.iter().any(|c| c.starts_with(s.as_str())))
        {
            return copies;
        }
        assert!(
            Instant::now() < deadline,
            "copies of {snapshots:?} not listed; listed {copies:?}\n{}",
            service.stderr_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Takes a snapshot through the API; returns its file name.
async fn backup(service: &Service) -> String {
    let (status, body) = service.post("/api/backup", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let said = body.to_string();
    let start = said.find("agentlab-").expect("a snapshot is named");
    let name = &said[start..];
    let end = name.find(".redb").expect("a snapshot name") + ".redb".len();
    name[..end].to_string()
}

async fn answered(service: &Service, user: i64, prompt: &str) {
    service.send(0, user, prompt);
    let expected = format!("You said: {prompt}");
    service
        .wait_for_message(0, user, |t| t.starts_with(&expected))
        .await;
}

async fn wait_for_alert(service: &Service, rule: &str, state: &str) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, alerts) = service
            .get(&format!("/api/observability/alerts?state={state}"))
            .await;
        let found = alerts["alerts"]
            .as_array()
            .and_then(|list| list.iter().find(|a| a["rule"] == rule).cloned());
        if let Some(alert) = found {
            return alert;
        }
        assert!(
            Instant::now() < deadline,
            "no {state} {rule} alert; alerts: {alerts}\n{}",
            service.stderr_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tasks_in_store(data_dir: &Path) -> usize {
    let store = agentlab::storage::Store::open(
        &data_dir.join("agentlab.redb"),
        agentlab::storage::StoreOptions::default(),
    )
    .expect("open restored store");
    let tasks = store
        .list_tasks(&agentlab::storage::TaskFilter {
            limit: Some(10_000),
            ..Default::default()
        })
        .expect("tasks")
        .len();
    store.close();
    tasks
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_tool = "moto_server",
    ignore = "moto_server not installed: pip install 'moto[server]'"
)]
async fn each_backup_is_copied_to_s3_verified_encrypted_and_rotated() {
    let Some(moto) =
        Moto::start("each_backup_is_copied_to_s3_verified_encrypted_and_rotated").await
    else {
        return;
    };
    let remote = remote_toml(
        &format!("s3://{BUCKET}/rotation"),
        &moto.url(),
        "keep = 2\nencryption_key_env = \"AGENTLAB_TEST_BACKUP_KEY\"",
    );
    let service = Service::start(options(remote, s3_env())).await;
    answered(&service, 111, "before the first snapshot").await;

    let first = backup(&service).await;
    let copies = wait_for_copies(&service, std::slice::from_ref(&first)).await;
    assert_eq!(copies, vec![format!("{first}.enc")], "encrypted copy");

    let second = backup(&service).await;
    wait_for_copies(&service, std::slice::from_ref(&second)).await;
    let third = backup(&service).await;
    wait_for_copies(&service, std::slice::from_ref(&third)).await;
    // The remote keeps the newest two; the local folder keeps its own 24.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let copies = remote_copies(&service);
        if copies == vec![format!("{third}.enc"), format!("{second}.enc")] {
            break;
        }
        assert!(Instant::now() < deadline, "rotation: {copies:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(files_in(&service.dir.path().join("backups")).len(), 3);

    // The object in the bucket is not the snapshot: it is encrypted.
    let object = reqwest::get(format!("{}/{BUCKET}/rotation/{third}.enc", moto.url()))
        .await
        .expect("GET object")
        .bytes()
        .await
        .expect("body");
    assert!(object.starts_with(b"agentlab"), "the format's magic");
    let local = std::fs::read(service.dir.path().join("backups").join(&third)).expect("local");
    assert!(
        !object.windows(64).any(|w| w == &local[..64]),
        "no plaintext in the object"
    );

    let (status, health) = service.get("/health").await;
    assert_eq!(status, 200, "{health}");
    let check = &health["checks"]["backup:offsite"][0];
    assert_eq!(check["status"], "pass", "{health}");
    assert_eq!(check["encrypted"], true, "{health}");
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_tool = "moto_server",
    ignore = "moto_server not installed: pip install 'moto[server]'"
)]
async fn a_fresh_machine_comes_back_from_s3_with_one_command() {
    let Some(moto) = Moto::start("a_fresh_machine_comes_back_from_s3_with_one_command").await
    else {
        return;
    };
    let remote = remote_toml(
        &format!("s3://{BUCKET}/fresh"),
        &moto.url(),
        "encryption_key_env = \"AGENTLAB_TEST_BACKUP_KEY\"",
    );
    let mut old = Service::start(options(remote.clone(), s3_env())).await;
    for i in 0..3 {
        answered(&old, 111, &format!("remember {i}")).await;
    }
    let snapshot = backup(&old).await;
    wait_for_copies(&old, std::slice::from_ref(&snapshot)).await;
    old.stop().await;
    let tasks_before = tasks_in_store(&old.data_dir());
    assert!(tasks_before >= 3);

    // A new machine: the same configuration (its own folders), an empty data dir.
    let sim = telegram_sim::TelegramSim::start_with(telegram_sim::SimConfig::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Vec::new(),
    ))
    .await
    .expect("a simulator for the new machine");
    let new = Service::prepare(sim, options(remote, s3_env()));
    assert!(!new.data_dir().join("agentlab.redb").exists());
    let out = agentlab(
        &new.config_path,
        &new.env(),
        &["restore", "--remote", "--latest", "--yes"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("decrypted"),
        "{}",
        text(&out)
    );
    assert_eq!(tasks_in_store(&new.data_dir()), tasks_before);
    // The downloaded snapshot is a local snapshot there now.
    assert!(new.dir.path().join("backups").join(&snapshot).exists());
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_tool = "moto_server",
    ignore = "moto_server not installed: pip install 'moto[server]'"
)]
async fn s3_down_leaves_prompts_alone_raises_the_alert_and_uploads_resume() {
    let Some(moto) =
        Moto::start("s3_down_leaves_prompts_alone_raises_the_alert_and_uploads_resume").await
    else {
        return;
    };
    let switch = Switch::start(moto.port).await;
    let mut remote = remote_toml(
        &format!("s3://{BUCKET}/outage"),
        &switch.url(),
        "stale_after_s = 2\nretry_max_s = 1",
    );
    remote.push_str("\n[breaker]\nfailure_threshold = 2\nrecovery_timeout_s = 1\n");
    let service = Service::start(options(remote, s3_env())).await;
    let first = backup(&service).await;
    wait_for_copies(&service, std::slice::from_ref(&first)).await;

    switch.set_up(false);
    let second = backup(&service).await;
    for i in 0..3 {
        answered(&service, 222, &format!("while the bucket is down {i}")).await;
    }
    let alert = wait_for_alert(&service, "backup_offsite_stale", "firing").await;
    assert!(
        alert["message"].as_str().unwrap_or("").contains("offsite"),
        "{alert}"
    );
    let (status, health) = service.get("/health").await;
    assert_eq!(
        status, 200,
        "a remote outage is a warning, not a failure: {health}"
    );
    assert_eq!(
        health["checks"]["backup:offsite"][0]["status"], "warn",
        "{health}"
    );
    answered(&service, 333, "still answered").await;

    switch.set_up(true);
    let copies = wait_for_copies(&service, &[first.clone(), second.clone()]).await;
    assert_eq!(copies.first(), Some(&second), "{copies:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_database_with_no_local_snapshot_is_restored_from_the_remote() {
    let bucket = tempfile::tempdir().expect("bucket dir");
    let remote = remote_toml(&format!("file://{}", bucket.path().display()), "", "");
    let mut service = Service::start(options(remote, Vec::new())).await;
    for i in 0..3 {
        answered(&service, 111, &format!("keep me {i}")).await;
    }
    let snapshot = backup(&service).await;
    wait_for_copies(&service, std::slice::from_ref(&snapshot)).await;
    service.stop().await;
    let tasks_before = tasks_in_store(&service.data_dir());

    // The local snapshots are gone and the database is damaged.
    std::fs::remove_dir_all(service.dir.path().join("backups")).expect("remove backups");
    let db = service.data_dir().join("agentlab.redb");
    let len = std::fs::metadata(&db).expect("db").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .and_then(|f| f.set_len(len / 3))
        .expect("truncate");

    service.restart().await;
    // Raised at start-up (the monitors may resolve it at their first tick).
    let alert = wait_for_alert(&service, "database_restored", "all").await;
    let message = alert["message"].as_str().unwrap_or("");
    assert!(
        message.contains("remote copy") && message.contains(&snapshot),
        "{alert}"
    );
    service.stop().await;
    assert!(tasks_in_store(&service.data_dir()) >= tasks_before);
    let kept: Vec<PathBuf> = files_in(&service.data_dir())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("agentlab.redb.corrupt-"))
        .collect();
    assert_eq!(kept.len(), 1, "the corrupt file is kept aside");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_key_and_a_tampered_object_are_refused_and_change_nothing() {
    let bucket = tempfile::tempdir().expect("bucket dir");
    let remote = remote_toml(
        &format!("file://{}", bucket.path().display()),
        "",
        "encryption_key_env = \"AGENTLAB_TEST_BACKUP_KEY\"",
    );
    let env = vec![("AGENTLAB_TEST_BACKUP_KEY".to_string(), KEY.to_string())];
    let mut service = Service::start(options(remote, env.clone())).await;
    answered(&service, 111, "a row to protect").await;
    service.stop().await;

    // `agentlab backup` with no service running uploads the copy itself.
    let out = agentlab(&service.config_path, &env, &["backup"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("remote copy"),
        "{}",
        text(&out)
    );
    let object = files_in(bucket.path())
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".redb.enc"))
        .expect("an encrypted object in the bucket");
    let db = service.data_dir().join("agentlab.redb");
    let before = std::fs::read(&db).expect("db");

    let wrong = vec![(
        "AGENTLAB_TEST_BACKUP_KEY".to_string(),
        OTHER_KEY.to_string(),
    )];
    let out = agentlab(
        &service.config_path,
        &wrong,
        &["restore", "--remote", "--latest", "--yes"],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("different key"), "{}", text(&out));
    assert_eq!(std::fs::read(&db).expect("db"), before, "nothing changed");

    // One flipped byte in the middle of the object.
    let mut bytes = std::fs::read(&object).expect("object");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&object, &bytes).expect("tamper");
    let out = agentlab(
        &service.config_path,
        &env,
        &["restore", "--remote", "--latest", "--yes"],
    );
    assert!(!out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("refusing it")
            && (said.contains("authentication") || said.contains("manifest")),
        "{said}"
    );
    assert_eq!(std::fs::read(&db).expect("db"), before, "nothing changed");
    let leftovers: Vec<PathBuf> = files_in(&service.dir.path().join("backups"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".download"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
