//! Monitors and alerts (first cut: the breaker timer tick).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::service::ServiceContext;

/// Starts the monitors.
pub fn spawn_monitors(ctx: &Arc<ServiceContext>, tasks: &mut JoinSet<()>) {
    let ctx = ctx.clone();
    tasks.spawn(async move {
        let mut shutdown = ctx.shutdown.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => ctx.circuits.tick(),
                _ = shutdown.changed() => break,
            }
        }
    });
}
