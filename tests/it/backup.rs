//! Backups, restore and automatic recovery at the library level (a real store on a
//! temporary folder), and the `backup` / `backups` / `restore` commands run as the
//! real binary against a stopped store.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agentlab::backup::{self, BackupError, files};
use agentlab::config::Config;
use agentlab::storage::{
    AlertState, NewTask, PRIORITY_NORMAL, Sample, Store, StoreOptions, TaskKind, TaskSource,
    inspect_snapshot, now_ms,
};
use serde_json::Value;
use tempfile::TempDir;

/// A temporary data/backup/log folder and a configuration pointing at it.
pub struct Site {
    pub dir: TempDir,
    pub config: Config,
}

impl Site {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = Config {
            data_dir: dir.path().join("data"),
            backup_dir: dir.path().join("backups"),
            log_dir: dir.path().join("logs"),
            ..Config::default()
        };
        Site { dir, config }
    }

    pub fn open(&self) -> Store {
        Store::open(&self.config.database_path(), StoreOptions::default()).expect("open store")
    }

    /// A config file for the binary (HTTP on a port nobody listens on).
    pub fn config_file(&self) -> PathBuf {
        let path = self.dir.path().join("agentlab.toml");
        let text = format!(
            "data_dir = {:?}\nbackup_dir = {:?}\nlog_dir = {:?}\n[http]\nbind = \"127.0.0.1:9\"\n[backup]\nkeep = {}\n",
            self.config.data_dir,
            self.config.backup_dir,
            self.config.log_dir,
            self.config.backup.keep
        );
        std::fs::write(&path, text).expect("write config");
        path
    }

    pub fn agentlab(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_agentlab"));
        cmd.arg("--config")
            .arg(self.config_file())
            .args(args)
            .env_remove("AGENTLAB_CONFIG")
            .stdin(Stdio::null());
        cmd
    }
}

pub fn new_task(n: u64) -> NewTask {
    NewTask {
        bot_id: "BOT-001".into(),
        user_id: 1000 + (n % 7) as i64,
        chat_id: 1000 + (n % 7) as i64,
        kind: TaskKind::Chat,
        source: TaskSource::Api,
        prompt: format!("prompt number {n}"),
        priority: PRIORITY_NORMAL,
        max_attempts: 3,
        reply_to_message_id: None,
        update_id: Some(n as i64),
    }
}

/// Tasks, sessions' messages, events and samples: something in many tables.
fn fill(store: &Store, tasks: u64) {
    for n in 0..tasks {
        store
            .submit_task(new_task(n), now_ms())
            .wait()
            .expect("submit");
    }
    store
        .append_message("BOT-001", 1000, "user", "hello", now_ms())
        .wait()
        .expect("message");
    store
        .append_event(
            "test",
            Some("BOT-001"),
            serde_json::json!({"n": 1}),
            now_ms(),
        )
        .wait()
        .expect("event");
    let base = now_ms() - 60_000;
    let samples = (0..500)
        .map(|i| {
            (
                "queue_depth".to_string(),
                Sample {
                    at_ms: base + i * 100,
                    value: i as f64,
                },
            )
        })
        .collect();
    store.append_samples(samples).wait().expect("samples");
    store.flush().wait().expect("flush");
}

fn dump(store: &Store) -> Vec<(String, Value)> {
    let mut rows = Vec::new();
    store
        .dump(&[], None, &mut |row| {
            rows.push((row.table.to_string(), row.row));
            Ok(())
        })
        .expect("dump");
    rows
}

fn tasks_in(store: &Store) -> u64 {
    store
        .table_counts()
        .expect("counts")
        .iter()
        .find(|c| c.table == "tasks")
        .map_or(0, |c| c.rows)
}

fn firing(store: &Store, rule: &str) -> Vec<agentlab::storage::Alert> {
    store
        .open_alerts()
        .expect("alerts")
        .into_iter()
        .filter(|a| a.rule == rule && a.state == AlertState::Firing)
        .collect()
}

fn files_named(dir: &Path, part: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.contains(part))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn backup_then_restore_gives_identical_rows_in_every_table() {
    let site = Site::new();
    let store = site.open();
    fill(&store, 50);
    let before = dump(&store);
    let outcome = backup::backup_now(&store, &site.config).expect("backup");
    assert!(outcome.file.path.exists());
    assert!(files_named(&site.config.backup_dir, ".tmp").is_empty());
    // Changes after the snapshot must be gone after the restore.
    store
        .submit_task(new_task(999), now_ms())
        .wait()
        .expect("submit");
    store.close();
    drop(store);

    let restored = backup::restore_snapshot(&site.config, &outcome.file.path).expect("restore");
    assert!(
        restored.moved_aside.as_ref().is_some_and(|p| p.exists()),
        "previous file kept aside"
    );
    assert!(
        restored.summary().contains("tasks 50"),
        "{}",
        restored.summary()
    );

    let store = site.open();
    let after: Vec<(String, Value)> = dump(&store)
        .into_iter()
        .filter(|(table, row)| !(table == "events" && row["event"] == "restore"))
        .collect();
    assert_eq!(before.len(), after.len());
    assert_eq!(
        before, after,
        "every table's rows are identical after the round trip"
    );
    store.close();
}

#[test]
fn snapshot_taken_while_tasks_are_written_is_consistent() {
    let site = Site::new();
    let store = site.open();
    fill(&store, 10);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 1_000_000 * (w + 1);
                while !stop.load(Ordering::Relaxed) {
                    store
                        .submit_task(new_task(n), now_ms())
                        .wait()
                        .expect("submit");
                    n += 1;
                }
            })
        })
        .collect();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let outcome = backup::backup_now(&store, &site.config).expect("backup under load");
        let count = |t: &str| {
            outcome
                .table_counts
                .iter()
                .find(|c| c.table == t)
                .map_or(0, |c| c.rows)
        };
        // One read transaction: every index agrees with the tasks table (a task
        // is indexed by status when finished, else queued or running).
        assert_eq!(
            count("tasks"),
            count("task_status") + count("task_queue") + count("active_users")
        );
        assert_eq!(count("tasks"), count("task_user"));
        assert_eq!(count("tasks"), count("update_dedup"));
        let in_file = inspect_snapshot(&outcome.file.path).expect("snapshot verifies");
        assert_eq!(in_file.table_counts, outcome.table_counts);
        seen.push(count("tasks"));
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
    assert!(
        seen.windows(2).any(|w| w[1] > w[0]),
        "tasks were written during the snapshots: {seen:?}"
    );
    store.close();
}

#[test]
fn rotation_keeps_exactly_the_newest_configured_snapshots() {
    let mut site = Site::new();
    site.config.backup.keep = 3;
    let store = site.open();
    fill(&store, 3);
    let taken: Vec<PathBuf> = (0..6)
        .map(|_| {
            backup::backup_now(&store, &site.config)
                .expect("backup")
                .file
                .path
        })
        .collect();
    let mut left: Vec<PathBuf> = files::list_snapshots(&site.config.backup_dir)
        .expect("list")
        .into_iter()
        .map(|s| s.path)
        .collect();
    left.reverse();
    assert_eq!(left, taken[3..].to_vec());
    store.close();
}

/// Two snapshots (the newer with more tasks), then the store closed.
fn site_with_two_snapshots() -> (Site, PathBuf, u64) {
    let site = Site::new();
    let store = site.open();
    fill(&store, 5);
    backup::backup_now(&store, &site.config).expect("first backup");
    for n in 100..120 {
        store
            .submit_task(new_task(n), now_ms())
            .wait()
            .expect("submit");
    }
    let newest = backup::backup_now(&store, &site.config).expect("second backup");
    let tasks = newest
        .table_counts
        .iter()
        .find(|c| c.table == "tasks")
        .map_or(0, |c| c.rows);
    store.close();
    drop(store);
    (site, newest.file.path, tasks)
}

fn assert_recovered_from(site: &Site, newest: &Path, tasks: u64) {
    let opened = backup::open_store_or_restore(&site.config).expect("start-up recovers");
    assert_eq!(opened.notices.len(), 1);
    let name = newest.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(
        opened.notices[0].contains(name),
        "notice names the snapshot: {}",
        opened.notices[0]
    );
    assert_eq!(tasks_in(&opened.store), tasks);
    let alerts = firing(&opened.store, "database_restored");
    assert_eq!(alerts.len(), 1);
    assert!(alerts[0].message.contains(name));
    let corrupt = files_named(&site.config.data_dir, "agentlab.redb.corrupt-");
    assert_eq!(corrupt.len(), 1, "the corrupt file is kept aside");
    opened.store.close();
}

#[test]
fn database_damaged_in_the_middle_is_replaced_by_the_newest_snapshot() {
    let (site, newest, tasks) = site_with_two_snapshots();
    let path = site.config.database_path();
    let len = std::fs::metadata(&path).expect("db").len();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open db");
    file.seek(SeekFrom::Start(len / 2 - 8192)).expect("seek");
    file.write_all(&vec![0xA5; 16384]).expect("damage");
    file.sync_all().expect("sync");
    drop(file);
    assert_recovered_from(&site, &newest, tasks);
}

#[test]
fn truncated_database_is_replaced_by_the_newest_snapshot() {
    let (site, newest, tasks) = site_with_two_snapshots();
    let path = site.config.database_path();
    let len = std::fs::metadata(&path).expect("db").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open db");
    file.set_len(len / 3).expect("truncate");
    drop(file);
    assert_recovered_from(&site, &newest, tasks);
}

#[test]
fn corrupt_database_without_a_snapshot_starts_empty_keeps_the_file_and_alerts_loudly() {
    let site = Site::new();
    let store = site.open();
    fill(&store, 5);
    store.close();
    drop(store);
    std::fs::write(
        site.config.database_path(),
        b"definitely not a redb file, just text",
    )
    .expect("overwrite");
    let opened = backup::open_store_or_restore(&site.config).expect("starts anyway");
    assert_eq!(tasks_in(&opened.store), 0);
    let alerts = firing(&opened.store, "database_restored");
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].severity, "critical");
    assert!(opened.notices[0].contains("EMPTY"));
    let corrupt = files_named(&site.config.data_dir, "agentlab.redb.corrupt-");
    assert_eq!(corrupt.len(), 1);
    let kept = std::fs::read(&corrupt[0]).expect("kept");
    assert!(kept.starts_with(b"definitely not"));
    opened.store.close();
}

#[test]
fn restore_refuses_while_the_store_is_held() {
    let site = Site::new();
    let store = site.open();
    fill(&store, 3);
    let outcome = backup::backup_now(&store, &site.config).expect("backup");
    store
        .submit_task(new_task(77), now_ms())
        .wait()
        .expect("submit");
    let err = backup::restore_snapshot(&site.config, &outcome.file.path).expect_err("must refuse");
    assert!(matches!(err, BackupError::ServiceRunning(_)), "{err}");
    assert!(
        files_named(&site.config.data_dir, "pre-restore").is_empty(),
        "nothing moved"
    );
    assert_eq!(tasks_in(&store), 4, "the live store is untouched");
    store.close();
}

/// Mounts a small tmpfs at `dir` (root only); `false` when that is not possible.
pub fn mount_tmpfs(dir: &Path, size: &str) -> bool {
    std::fs::create_dir_all(dir).expect("mount point");
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn unmount(dir: &Path) {
    let _ = Command::new("umount").arg("-l").arg(dir).status();
}

#[test]
fn failing_backup_keeps_older_snapshots_and_raises_an_alert() {
    let mut site = Site::new();
    let store = site.open();
    fill(&store, 5);
    let backups = site.config.backup_dir.clone();
    let mounted = mount_tmpfs(&backups, "64m");
    let good = backup::backup_now(&store, &site.config).expect("first backup");
    let good_bytes = std::fs::read(&good.file.path).expect("read snapshot");
    if mounted {
        // A read-only backup folder (root ignores permission bits, not a ro mount).
        let ro = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&backups)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ro, "remount read-only");
    } else {
        eprintln!(
            "cannot mount a tmpfs (not root?): using a backup folder that cannot be created instead"
        );
        let blocker = site.dir.path().join("a-regular-file");
        std::fs::write(&blocker, b"x").expect("file");
        site.config.backup_dir = blocker.join("backups");
    }
    let err = backup::backup_with_retries(&store, &site.config, &[Duration::from_millis(10)])
        .expect_err("must fail");
    eprintln!("backup failed as expected: {err}");
    let alerts = firing(&store, "backup_failed");
    assert_eq!(alerts.len(), 1, "backup_failed raised once");
    assert_eq!(
        std::fs::read(&good.file.path).expect("still there"),
        good_bytes,
        "older snapshot intact"
    );
    assert!(
        files_named(&backups, ".tmp").is_empty(),
        "no temporary file left"
    );
    if mounted {
        Command::new("mount")
            .args(["-o", "remount,rw"])
            .arg(&backups)
            .status()
            .expect("remount rw");
    }
    assert!(
        inspect_snapshot(&good.file.path).is_ok(),
        "older snapshot still verifies"
    );
    if mounted {
        unmount(&backups);
    }
    store.close();
}

#[test]
fn backup_and_backups_commands_work_on_a_stopped_store() {
    let site = Site::new();
    let store = site.open();
    fill(&store, 4);
    store.close();
    drop(store);
    let out = site.agentlab(&["backup"]).output().expect("run backup");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("verified"));
    let out = site.agentlab(&["backups"]).output().expect("run backups");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("verified") && listing.contains("tasks=4"),
        "{listing}"
    );
}

#[test]
fn restore_command_asks_refuses_without_a_terminal_and_restores_with_yes() {
    let site = Site::new();
    let store = site.open();
    fill(&store, 4);
    backup::backup_now(&store, &site.config).expect("backup");
    store
        .submit_task(new_task(500), now_ms())
        .wait()
        .expect("submit");
    store.close();
    drop(store);

    let out = site
        .agentlab(&["restore", "--latest"])
        .output()
        .expect("run restore");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    assert!(files_named(&site.config.data_dir, "pre-restore").is_empty());

    let out = site
        .agentlab(&["restore", "--latest", "--yes"])
        .output()
        .expect("run restore");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("restored"));
    assert_eq!(files_named(&site.config.data_dir, "pre-restore").len(), 1);
    let store = site.open();
    assert_eq!(tasks_in(&store), 4);
    store.close();
}

/// A snapshot that fails verification is one error that names the snapshot, says
/// nothing was changed, and gives its cause once (not in the message and again as
/// the source of the printed chain).
#[test]
fn restore_of_a_damaged_snapshot_names_its_cause_once_and_changes_nothing() {
    let site = Site::new();
    std::fs::create_dir_all(&site.config.backup_dir).expect("backup dir");
    let damaged = site
        .config
        .backup_dir
        .join("agentlab-20250101T120000.000Z.redb");
    std::fs::write(&damaged, b"not a redb file").expect("damaged snapshot");
    let out = site
        .agentlab(&["restore", damaged.to_str().expect("utf-8 path"), "--yes"])
        .output()
        .expect("run restore");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("failed verification").count(), 1, "{stderr}");
    assert_eq!(stderr.matches("nothing was changed").count(), 1, "{stderr}");
    let cause = stderr
        .split_once("failed verification (")
        .and_then(|(_, rest)| rest.split_once("); nothing was changed"))
        .map(|(cause, _)| cause.trim())
        .unwrap_or_default();
    assert!(!cause.is_empty(), "no cause given: {stderr}");
    assert_eq!(stderr.matches(cause).count(), 1, "{stderr}");
    assert!(files_named(&site.config.data_dir, "pre-restore").is_empty());
}

/// Inside `restore` and `backups`, a damaged snapshot is not met with the
/// storage layer's advice for a damaged database (`restore --latest`, which the
/// user may be running): `restore` suggests choosing another snapshot and where
/// to see them, `restore --latest` skips it and says where to look, and
/// `backups` just says what is wrong with it.
#[test]
fn a_damaged_snapshot_gets_advice_that_fits_restore() {
    let site = Site::new();
    std::fs::create_dir_all(&site.config.backup_dir).expect("backup dir");
    let damaged = site
        .config
        .backup_dir
        .join("agentlab-20250101T120000.000Z.redb");
    std::fs::write(&damaged, b"not a redb file").expect("damaged snapshot");
    let run = |args: &[&str]| {
        let out = site.agentlab(args).output().expect("run agentlab");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };

    let (code, named) = run(&["restore", damaged.to_str().expect("utf-8 path"), "--yes"]);
    assert_eq!(code, Some(1), "{named}");
    assert!(named.contains("corrupt"), "{named}");
    assert!(named.contains("Choose another snapshot"), "{named}");
    assert!(named.contains("`agentlab backups`"), "{named}");

    let (code, latest) = run(&["restore", "--latest", "--yes"]);
    assert_eq!(code, Some(1), "{latest}");
    assert!(latest.contains("skipping"), "{latest}");
    assert!(latest.contains("no verified snapshot"), "{latest}");
    assert!(latest.contains("`agentlab backups`"), "{latest}");

    let (code, listed) = run(&["backups"]);
    assert_eq!(code, Some(0), "{listed}");
    assert!(listed.contains("NOT VERIFIED (corrupt: "), "{listed}");

    for text in [&named, &latest, &listed] {
        assert!(!text.contains("restore --latest"), "{text}");
        assert!(!text.contains("restore a snapshot"), "{text}");
    }
    assert!(files_named(&site.config.data_dir, "pre-restore").is_empty());
}

#[test]
fn restore_command_refuses_while_the_store_is_held() {
    let site = Site::new();
    let store = site.open();
    fill(&store, 2);
    backup::backup_now(&store, &site.config).expect("backup");
    let out = site
        .agentlab(&["restore", "--latest", "--yes"])
        .output()
        .expect("run restore");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("running"), "{stderr}");
    assert!(files_named(&site.config.data_dir, "pre-restore").is_empty());
    store.close();
}

#[test]
#[cfg_attr(missing_tool = "root", ignore = "needs root, to mount a tmpfs")]
fn disk_full_refuses_prompts_cleanly_and_loses_nothing() {
    let mut site = Site::new();
    let data = site.config.data_dir.clone();
    assert!(mount_tmpfs(&data, "48m"), "cannot mount a tmpfs");
    site.config.storage.min_free_mb = 16;
    site.config.log_dir = data.join("logs");
    let store = site.open();
    fill(&store, 20);
    let before = dump(&store);
    assert!(agentlab::intake::admission::admit_prompt(&site.config, &store).is_ok());

    // An old finished run and old logs, then fill the disk to below the minimum.
    let old_logs = site.config.log_dir.clone();
    std::fs::create_dir_all(&old_logs).expect("logs");
    std::fs::write(old_logs.join("agentlab.log.2020-01-01"), vec![0u8; 4 << 20]).expect("old log");
    std::fs::write(old_logs.join("agentlab.log.2020-01-02"), b"newest").expect("current log");
    let free = backup::disk::free_bytes(&data).expect("statvfs");
    let filler = data.join("filler");
    let keep_free = 10u64 << 20; // below the 16 MiB minimum even after pruning 4 MiB
    std::fs::write(&filler, vec![0u8; (free - keep_free) as usize]).expect("filler");

    let refused = agentlab::intake::admission::admit_prompt(&site.config, &store)
        .expect_err("prompt refused");
    assert!(
        refused.to_string().contains("disk is almost full"),
        "{refused}"
    );
    assert!(
        !old_logs.join("agentlab.log.2020-01-01").exists(),
        "old log pruned first"
    );
    assert!(
        old_logs.join("agentlab.log.2020-01-02").exists(),
        "current log kept"
    );
    let health = backup::disk::check_and_alert(&site.config, &store);
    assert_eq!(health.level, backup::disk::DiskLevel::Fail);
    assert_eq!(firing(&store, "disk_full").len(), 1);

    // Space back: prompts are admitted, the alert resolves, nothing stored was lost.
    std::fs::remove_file(&filler).expect("free space");
    assert!(agentlab::intake::admission::admit_prompt(&site.config, &store).is_ok());
    backup::disk::check_and_alert(&site.config, &store);
    assert!(firing(&store, "disk_full").is_empty());
    store.close();
    drop(store);
    let store = site.open();
    let after: Vec<(String, Value)> = dump(&store)
        .into_iter()
        .filter(|(table, _)| table != "alerts" && table != "meta")
        .collect();
    let before: Vec<(String, Value)> = before
        .into_iter()
        .filter(|(t, _)| t != "alerts" && t != "meta")
        .collect();
    assert_eq!(before, after);
    store.close();
    drop(store);
    unmount(&data);
}

/// Issue 10: the disk fills up while tasks are being written (four submitters and
/// a filler on a small tmpfs, when root). Submissions then fail with an error,
/// never a panic; after space is back, every acknowledged task is in the store
/// with its exact prompt, nothing unacknowledged is half there, and the file
/// passes its integrity check.
#[test]
#[cfg_attr(missing_tool = "root", ignore = "needs root, to mount a tmpfs")]
fn a_disk_filling_up_while_tasks_are_written_loses_no_acknowledged_task() {
    let site = Site::new();
    let data = site.config.data_dir.clone();
    assert!(mount_tmpfs(&data, "24m"), "cannot mount a tmpfs");
    let store = site.open();
    let acknowledged = std::sync::Mutex::new(Vec::<(u64, String)>::new());
    let errors = std::sync::Mutex::new(Vec::<String>::new());
    let disk_full = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let (store, acknowledged, errors) = (&store, &acknowledged, &errors);
            scope.spawn(move || {
                let mut failures_in_a_row = 0;
                for n in (t..20_000).step_by(4) {
                    let mut task = new_task(n);
                    task.prompt = format!("prompt {n} {}", "y".repeat(4_000));
                    let prompt = task.prompt.clone();
                    match store.submit_task(task, now_ms()).wait() {
                        Ok(done) => {
                            failures_in_a_row = 0;
                            acknowledged.lock().unwrap().push((done.task.id, prompt));
                        }
                        Err(e) => {
                            failures_in_a_row += 1;
                            errors.lock().unwrap().push(e.to_string());
                            if failures_in_a_row >= 20 {
                                return;
                            }
                        }
                    }
                }
            });
        }
        let (disk_full, acknowledged) = (&disk_full, &acknowledged);
        let filler = data.join("filler");
        scope.spawn(move || {
            use std::io::Write;
            // Let some tasks land first, then take the rest of the disk.
            while acknowledged.lock().unwrap().len() < 20 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let mut file = std::fs::File::create(&filler).expect("filler");
            let chunk = vec![0u8; 256 * 1024];
            while file.write_all(&chunk).is_ok() {}
            disk_full.store(true, std::sync::atomic::Ordering::SeqCst);
        });
    });
    assert!(disk_full.load(std::sync::atomic::Ordering::SeqCst));
    let errors = errors.into_inner().unwrap();
    let acknowledged = acknowledged.into_inner().unwrap();
    assert!(!errors.is_empty(), "the disk never filled up for the store");
    assert!(
        !acknowledged.is_empty(),
        "nothing was written before the disk filled"
    );
    eprintln!(
        "disk full while writing: {} acknowledged, {} refused, first error: {}",
        acknowledged.len(),
        errors.len(),
        errors[0]
    );

    std::fs::remove_file(data.join("filler")).expect("free space");
    store.close();
    drop(store);
    let db = site.config.database_path();
    assert!(Store::check_file_integrity(&db).expect("integrity check runs"));
    let store = site.open();
    assert_eq!(
        tasks_in(&store),
        acknowledged.len() as u64,
        "stored tasks are exactly the acknowledged ones"
    );
    for (id, prompt) in &acknowledged {
        let task = store
            .get_task(*id)
            .expect("read")
            .expect("acknowledged task kept");
        assert_eq!(&task.prompt, prompt, "task {id}");
    }
    store.close();
    drop(store);
    unmount(&data);
}
