//! systemd integration: `READY=1` after the start-up barrier, `WATCHDOG=1` from the
//! main loop, over the `NOTIFY_SOCKET` datagram socket (no library needed).
//!
//! The watchdog pings only while the store answers a read, so a service whose
//! storage is stuck is restarted by systemd.

use std::time::Duration;

use tokio::task::JoinSet;

use crate::shutdown::Shutdown;
use crate::storage::Store;

fn notify(message: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    send_to_socket(&path, message)
}

/// Sends one datagram to a notify socket: a path, or (Linux) an abstract name
/// written with a leading `@`, as systemd may hand either.
fn send_to_socket(path: &std::ffi::OsStr, message: &str) -> bool {
    let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() else {
        return false;
    };
    #[cfg(target_os = "linux")]
    {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::ffi::OsStrExt;
        if let Some(name) = path.as_bytes().strip_prefix(b"@") {
            return std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|addr| socket.send_to_addr(message.as_bytes(), &addr))
                .is_ok();
        }
    }
    socket.send_to(message.as_bytes(), path).is_ok()
}

/// Tells systemd the service is ready (no-op outside systemd).
pub fn notify_ready() {
    if notify("READY=1") {
        tracing::info!("told systemd READY=1");
    }
}

/// Sends `WATCHDOG=1` at half the interval systemd asked for, while the service is
/// healthy enough to take work.
pub fn spawn_watchdog_pings(store: Store, shutdown: &Shutdown, tasks: &mut JoinSet<()>) {
    let Some(usec) = std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    // systemd sets WATCHDOG_PID to the process it watches; a child that inherited
    // the variable must not ping on the service's behalf.
    if std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .is_some_and(|pid| pid != std::process::id())
    {
        return;
    }
    let every = Duration::from_micros(usec / 2).max(Duration::from_millis(500));
    let mut shutdown = shutdown.subscribe();
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {
                    if store.queue_depth().is_ok() {
                        notify("WATCHDOG=1");
                    }
                }
                _ = shutdown.changed() => {
                    notify("STOPPING=1");
                    break;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_reaches_a_path_socket() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify");
        let server = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
        assert!(send_to_socket(path.as_os_str(), "READY=1"));
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn watchdog_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("agentlab-test-{}", std::process::id());
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let server = std::os::unix::net::UnixDatagram::bind_addr(&addr).expect("bind");
        assert!(send_to_socket(
            std::ffi::OsStr::new(&format!("@{name}")),
            "WATCHDOG=1"
        ));
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }
}
