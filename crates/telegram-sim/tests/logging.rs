//! Debug logging happens and never contains a token in full.
//!
//! A test binary of its own: tracing caches per call site whether anyone listens,
//! so a thread-local subscriber in a binary whose other tests run the same call
//! sites on other threads at the same time may miss events.

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use serde_json::json;
use tracing_subscriber::{filter::Targets, fmt::MakeWriter, layer::SubscriberExt};

use serde_json::Value;
use telegram_sim::{Fault, FaultKind, SimHandle, TelegramSim};

const TOKEN: &str = "123456:TEST-secret-token";
const USER: i64 = 4242;

async fn start() -> SimHandle {
    TelegramSim::start("127.0.0.1:0".parse().expect("addr"), vec![TOKEN.to_owned()])
        .await
        .expect("simulator starts")
}

async fn call(sim: &SimHandle, method: &str, body: &Value) {
    let url = format!("{}/bot{TOKEN}/{method}", sim.url());
    let response = reqwest::Client::new().post(url).json(body).send().await;
    response.expect("request");
}

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
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(captured.clone())
                .with_ansi(false),
        )
        .with(Targets::new().with_target("telegram_sim", tracing::Level::TRACE));
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
