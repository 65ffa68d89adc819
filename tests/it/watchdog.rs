//! The watchdog against a stand-in service: a real HTTP server process (python's
//! http.server serving a `health` file) that the test stops with SIGSTOP.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use tempfile::TempDir;

use crate::harness::{require_tool, wait_until_blocking};

struct StandIn {
    child: Child,
    port: u16,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill has no memory-safety preconditions; the pid is our child.
        unsafe {
            libc::kill(pid, libc::SIGCONT);
            libc::kill(pid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Starts the stand-in and waits until it accepts connections.
fn start_stand_in(dir: &Path) -> StandIn {
    std::fs::write(dir.join("health"), br#"{"status":"pass"}"#).expect("health file");
    let port = free_port();
    let child = Command::new(require_tool("python3"))
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start python3 -m http.server");
    let stand_in = StandIn { child, port };
    wait_until_blocking("the stand-in to accept connections", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    stand_in
}

fn config_file(dir: &Path, port: u16, marker: &Path) -> std::path::PathBuf {
    let path = dir.join("agentlab.toml");
    let text = format!(
        "data_dir = {:?}\nbackup_dir = {:?}\nlog_dir = {:?}\n[watchdog]\nhealth_url = \"http://127.0.0.1:{port}/health\"\ninterval_s = 1\nfailures_before_restart = 2\nrestart_command = [\"touch\", {:?}]\n",
        dir.join("data"),
        dir.join("backups"),
        dir.join("logs"),
        marker
    );
    std::fs::write(&path, text).expect("config");
    path
}

fn watchdog(config: &Path, once: bool) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agentlab"));
    cmd.arg("--config")
        .arg(config)
        .arg("watchdog")
        .env_remove("AGENTLAB_CONFIG");
    if once {
        cmd.arg("--once");
    }
    cmd.stdin(Stdio::null());
    cmd
}

#[test]
#[cfg_attr(
    missing_tool = "python3",
    ignore = "python3 not installed (the stand-in service): apt-get install python3"
)]
fn watchdog_detects_a_hung_service_and_runs_the_restart_command() {
    let dir = TempDir::new().expect("temp dir");
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).expect("www");
    let stand_in = start_stand_in(&www);
    let marker = dir.path().join("restarted");
    let config = config_file(dir.path(), stand_in.port, &marker);

    let healthy = watchdog(&config, true).output().expect("watchdog --once");
    assert_eq!(
        healthy.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&healthy.stdout)
    );

    // SAFETY: kill has no memory-safety preconditions; the pid is our child.
    unsafe { libc::kill(stand_in.child.id() as libc::pid_t, libc::SIGSTOP) };
    let hung = watchdog(&config, true).output().expect("watchdog --once");
    assert_eq!(hung.status.code(), Some(1));
    let said = String::from_utf8_lossy(&hung.stdout);
    assert!(said.contains("did not answer"), "{said}");

    let mut running = watchdog(&config, false)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("watchdog");
    wait_until_blocking("the restart command", || marker.exists().then_some(()));
    let _ = running.kill();
    let _ = running.wait();
}

#[test]
fn watchdog_once_fails_when_nothing_listens() {
    let dir = TempDir::new().expect("temp dir");
    let marker = dir.path().join("restarted");
    let config = config_file(dir.path(), free_port(), &marker);
    let out = watchdog(&config, true).output().expect("watchdog --once");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not running"));
    assert!(!marker.exists(), "--once never restarts");
    // It may run as root: a log_dir it created would be the service's no more.
    assert!(
        !dir.path().join("logs").exists(),
        "the watchdog created log_dir"
    );
}

/// The long-running watchdog says on stderr what it found and that it restarts
/// the service (launchd and systemd keep stderr), in plain text, not colours.
#[test]
fn the_watchdog_logs_its_checks_and_restarts_on_stderr() {
    let dir = TempDir::new().expect("temp dir");
    let marker = dir.path().join("restarted");
    let config = config_file(dir.path(), free_port(), &marker);
    let log = dir.path().join("watchdog.stderr");
    let mut running = watchdog(&config, false)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("stderr file"))
        .spawn()
        .expect("watchdog");
    // The restart command runs after the line that announces it is written.
    wait_until_blocking("the restart command", || marker.exists().then_some(()));
    let said = wait_until_blocking("the check and the restart on stderr", || {
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        (said.contains("service check failed") && said.contains("restarting the service"))
            .then_some(said)
    });
    let _ = running.kill();
    let _ = running.wait();
    assert!(!said.contains('\u{1b}'), "colour codes in a file: {said}");
}

/// The watchdog also keeps its own JSON log in `log_dir` (`watchdog.log.<date>`),
/// apart from the service's `agentlab.log.*`: its lines never pass for the service's
/// log advancing, and the two processes never interleave in one file.
#[test]
fn the_watchdog_logs_its_restarts_to_its_own_file_in_log_dir() {
    let dir = TempDir::new().expect("temp dir");
    let marker = dir.path().join("restarted");
    let config = config_file(dir.path(), free_port(), &marker);
    // The service creates log_dir; the watchdog only writes into it.
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("log dir");
    let mut running = watchdog(&config, false)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("watchdog");
    wait_until_blocking("the check and the restart in watchdog.log", || {
        let said: String = log_files(&logs, "watchdog.log")
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect();
        (said.contains("service check failed") && said.contains("restarting the service"))
            .then_some(())
    });
    let _ = running.kill();
    let _ = running.wait();
    assert!(
        log_files(&logs, "agentlab.log").is_empty(),
        "the watchdog wrote to the service's log files"
    );
}

fn log_files(dir: &Path, prefix: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(prefix))
                })
                .collect()
        })
        .unwrap_or_default()
}
