//! The HTTP server: health, status, tasks and admin routes on loopback.
//!
//! Invariants: binds `http.bind` (loopback by default); admin routes need the
//! bearer token (constant-time compare) and are refused when none is configured;
//! every error is JSON `{"error", "code"}` with a fitting status, never a 500 for
//! bad input; handlers answer from memory or short store reads.

mod error;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinSet;

use crate::service::ServiceContext;

pub use error::ApiError;

/// Binds the server and spawns it; returns the bound address (port 0 → chosen).
pub async fn serve(ctx: Arc<ServiceContext>, tasks: &mut JoinSet<()>) -> anyhow::Result<SocketAddr> {
    let bind = &ctx.config.http.bind;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind} (http.bind)"))?;
    let addr = listener.local_addr()?;
    let app = routes::router(ctx.clone());
    let shutdown = ctx.shutdown.clone();
    tasks.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    tracing::info!(%addr, "HTTP server listening");
    Ok(addr)
}
