//! Tests against a running simulator: a real teloxide `Bot` for the Bot API
//! side, plain HTTP for envelopes, validation and the control routes.

mod faults;
mod files;
mod http;
mod polling;
mod teloxide_api;

use std::time::Duration;

use serde_json::Value;
use teloxide::Bot;

use super::{SimHandle, TelegramSim};

/// Token registered in every test simulator.
pub(super) const TOKEN: &str = "123456:TEST-secret-token";
/// The simulated human.
pub(super) const USER: i64 = 4242;
/// Generous bound for condition waits (they return as soon as the condition holds).
pub(super) const WAIT: Duration = Duration::from_secs(10);

pub(super) async fn start() -> SimHandle {
    TelegramSim::start("127.0.0.1:0".parse().expect("addr"), vec![TOKEN.to_owned()])
        .await
        .expect("simulator starts")
}

pub(super) fn bot(sim: &SimHandle) -> Bot {
    Bot::new(TOKEN).set_api_url(sim.url().parse().expect("url"))
}

/// A bot whose HTTP client gives up after `timeout`.
pub(super) fn bot_with_timeout(sim: &SimHandle, timeout: Duration) -> Bot {
    let client = teloxide::net::default_reqwest_settings()
        .timeout(timeout)
        .build()
        .expect("client");
    Bot::with_client(TOKEN, client).set_api_url(sim.url().parse().expect("url"))
}

/// POSTs a JSON body to a Bot API method; returns status and body.
pub(super) async fn call(sim: &SimHandle, method: &str, body: &Value) -> (u16, Value) {
    let url = format!("{}/bot{TOKEN}/{method}", sim.url());
    let response = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json body"))
}
