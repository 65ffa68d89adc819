//! systemd integration: `READY=1` after the start-up barrier, `WATCHDOG=1` from the
//! main loop, over the `NOTIFY_SOCKET` datagram socket (no library needed).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::service::ServiceContext;

fn notify(message: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() else {
        return false;
    };
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
pub fn spawn_watchdog_pings(ctx: &Arc<ServiceContext>, tasks: &mut JoinSet<()>) {
    let Some(usec) = std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    let every = Duration::from_micros(usec / 2).max(Duration::from_millis(500));
    let ctx = ctx.clone();
    tasks.spawn(async move {
        let mut shutdown = ctx.shutdown.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {
                    if ctx.store.queue_depth().is_ok() {
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
