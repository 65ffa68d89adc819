//! Debug logging happens and never contains a token in full.

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use serde_json::json;
use tracing_subscriber::{filter::Targets, fmt::MakeWriter, layer::SubscriberExt};

use super::{TOKEN, USER, call, start};
use crate::{Fault, FaultKind};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// `#[tokio::test]` runs the server on this thread, so a thread-local
// subscriber sees its events.
#[tokio::test]
async fn debug_logs_redact_tokens() {
    let captured = Captured::default();
    let crate_name = module_path!().split("::").next().unwrap_or_default();
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(captured.clone())
                .with_ansi(false),
        )
        .with(Targets::new().with_target(crate_name, tracing::Level::TRACE));
    let _guard = tracing::subscriber::set_default(subscriber);

    let sim = start().await;
    call(
        &sim,
        "sendMessage",
        &json!({ "chat_id": USER, "text": "hi" }),
    )
    .await;
    sim.inject_fault(TOKEN, Fault::new(FaultKind::Conflict))
        .unwrap();
    call(&sim, "getUpdates", &json!({})).await;
    let url = format!("{}/bot999:wrong-secret-value/getMe", sim.url());
    reqwest::Client::new().get(url).send().await.unwrap();
    sim.shutdown().await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("sendMessage"), "{logs}");
    assert!(logs.contains("123456:***"), "{logs}");
    assert!(logs.contains("999:***"), "{logs}");
    assert!(!logs.contains("TEST-secret-token"), "{logs}");
    assert!(!logs.contains("wrong-secret-value"), "{logs}");
}
