//! Commands that talk to the running service over its HTTP API: `ask`, `status`,
//! `tasks`, `restart`, and the HTTP side of `dump` and `backup`.
//!
//! Each says plainly when the service is not running rather than printing a
//! connection error.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use super::args::{AskArgs, TasksArgs};
use crate::config::{Config, secret_from_env};

/// A client for the running service.
pub struct ServiceClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// Why the service could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// Nothing listens.
    #[error("the agentlab service is not running (nothing answers at {0})")]
    NotRunning(String),
    /// It answered with an error.
    #[error("the service answered {status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Its error message.
        message: String,
    },
    /// Anything else.
    #[error("talking to the service at {url}: {message}")]
    Other {
        /// The URL.
        url: String,
        /// What happened.
        message: String,
    },
}

impl ServiceClient {
    /// A client for the service configured in `config` (its address file wins when
    /// present, so a service on port 0 is found too).
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let addr = std::fs::read_to_string(crate::service::addr_file(config))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| config.http.bind.clone());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        Ok(ServiceClient {
            base: format!("http://{addr}"),
            // The admin token opens every route; the read token is enough for
            // the read routes of a service off loopback.
            token: secret_from_env(&config.http.admin_token_env)
                .or_else(|| secret_from_env(&config.http.read_token_env)),
            http,
        })
    }

    /// The service's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<reqwest::Response, RemoteError> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().await.map_err(|e| self.transport_error(e, url))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let message = body["error"].as_str().unwrap_or("no details").to_string();
        Err(RemoteError::Api { status, message })
    }

    /// GET a JSON document.
    pub async fn get(&self, path: &str) -> Result<Value, RemoteError> {
        let url = format!("{}{path}", self.base);
        let resp = self.send(self.http.get(&url), &url).await?;
        resp.json().await.map_err(|e| RemoteError::Other {
            url,
            message: e.to_string(),
        })
    }

    /// GET a JSON document whatever the status (health answers 503 with one).
    pub async fn get_any(&self, path: &str) -> Result<(u16, Value), RemoteError> {
        let url = format!("{}{path}", self.base);
        let req = match &self.token {
            Some(t) => self.http.get(&url).bearer_auth(t),
            None => self.http.get(&url),
        };
        let resp = req
            .send()
            .await
            .map_err(|e| self.transport_error(e, &url))?;
        let status = resp.status().as_u16();
        let body = resp.json().await.map_err(|e| RemoteError::Other {
            url,
            message: e.to_string(),
        })?;
        Ok((status, body))
    }

    fn transport_error(&self, e: reqwest::Error, url: &str) -> RemoteError {
        if e.is_connect() {
            RemoteError::NotRunning(self.base.clone())
        } else {
            RemoteError::Other {
                url: url.to_string(),
                message: e.to_string(),
            }
        }
    }

    /// GET raw text.
    pub async fn get_text(&self, path: &str) -> Result<String, RemoteError> {
        let url = format!("{}{path}", self.base);
        let resp = self.send(self.http.get(&url), &url).await?;
        resp.text().await.map_err(|e| RemoteError::Other {
            url,
            message: e.to_string(),
        })
    }

    /// POST a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> Result<Value, RemoteError> {
        let url = format!("{}{path}", self.base);
        let resp = self.send(self.http.post(&url).json(&body), &url).await?;
        resp.json().await.map_err(|e| RemoteError::Other {
            url,
            message: e.to_string(),
        })
    }
}

/// `agentlab ask`
pub async fn ask(config: &Config, args: AskArgs) -> anyhow::Result<i32> {
    let bot = match args.bot {
        Some(b) => b,
        None => config
            .bots
            .first()
            .map(|b| b.id.clone())
            .context("no bot is configured; pass --bot")?,
    };
    let user = args
        .user
        .or_else(|| config.bot(&bot).and_then(|b| b.admins.first().copied()))
        .unwrap_or(0);
    let client = ServiceClient::new(config)?;
    let mut body = serde_json::json!({"bot_id": bot, "user_id": user, "prompt": args.prompt});
    if let Some(project) = args.project {
        body["project"] = serde_json::json!(project);
    }
    let created = client.post("/api/tasks", body).await?;
    let id = created["id"]
        .as_u64()
        .context("the service did not return a task id")?;
    if args.no_wait {
        println!("{id}");
        return Ok(0);
    }
    eprintln!("task #{id} queued; waiting for the answer…");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    loop {
        let task = client.get(&format!("/api/tasks/{id}")).await?;
        match task["status"].as_str() {
            Some("succeeded") => {
                println!("{}", task["result"].as_str().unwrap_or(""));
                return Ok(0);
            }
            Some(s @ ("failed" | "cancelled")) => {
                eprintln!(
                    "task #{id} {s}: {}",
                    task["error"].as_str().unwrap_or("no details")
                );
                return Ok(1);
            }
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "no answer for task #{id} within {} s (it keeps running; see `agentlab tasks`)",
                args.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `agentlab status`: a readable summary; exit 1 when unhealthy or not running.
pub async fn status(config: &Config) -> anyhow::Result<i32> {
    let client = ServiceClient::new(config)?;
    // An unhealthy service answers 503 with the same document.
    let health = match client.get_any("/health").await {
        Ok((_, h)) => h,
        Err(RemoteError::NotRunning(url)) => {
            println!("agentlab is NOT running (nothing answers at {url})");
            return Ok(1);
        }
        Err(e) => return Err(e.into()),
    };
    let status = health["status"].as_str().unwrap_or("unknown");
    println!(
        "agentlab {} at {}: {status}, up {} s{}",
        health["version"].as_str().unwrap_or("?"),
        client.base(),
        health["uptime_s"].as_u64().unwrap_or(0),
        if health["ready"] == Value::Bool(false) {
            " (not ready)"
        } else {
            ""
        }
    );
    if let Ok(bots) = client.get("/api/bots").await {
        println!("bots:");
        for bot in bots["bots"].as_array().into_iter().flatten() {
            let circuit = bot["circuit"]
                .as_object()
                .map(|c| {
                    c.iter()
                        .map(|(dep, state)| format!("{dep} {}", state.as_str().unwrap_or("?")))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            println!(
                "  {:<16} {:<12} queue {:<4} breakers: {circuit}",
                bot["id"].as_str().unwrap_or("?"),
                bot["state"].as_str().unwrap_or("?"),
                bot["queue_depth"].as_u64().unwrap_or(0),
            );
        }
    }
    if health["checks"].get("backup:age").is_none() {
        println!("last backup: none yet");
    }
    println!("checks:");
    for (name, entries) in health["checks"].as_object().into_iter().flatten() {
        for entry in entries.as_array().into_iter().flatten() {
            let label = match entry["componentId"].as_str() {
                Some(id) => format!("{name} [{id}]"),
                None => name.clone(),
            };
            let value = match &entry["observedValue"] {
                Value::Null => "-".to_string(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            println!(
                "  {label:<44} {:<5} {value}{}",
                entry["status"].as_str().unwrap_or("?"),
                entry["observedUnit"]
                    .as_str()
                    .map(|u| format!(" {u}"))
                    .unwrap_or_default()
            );
        }
    }
    for note in health["notes"].as_array().into_iter().flatten() {
        println!("note: {}", note.as_str().unwrap_or(""));
    }
    if let Ok(alerts) = client.get("/api/observability/alerts?state=firing").await {
        let list = alerts["alerts"].as_array().cloned().unwrap_or_default();
        if !list.is_empty() {
            println!("firing alerts:");
            for a in list {
                println!(
                    "  [{}] {}: {}",
                    a["severity"].as_str().unwrap_or("?"),
                    a["rule"].as_str().unwrap_or("?"),
                    a["message"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(if status == "pass" || status == "warn" {
        0
    } else {
        1
    })
}

/// `agentlab tasks`
pub async fn tasks(config: &Config, args: TasksArgs) -> anyhow::Result<i32> {
    let client = ServiceClient::new(config)?;
    let mut query = vec![("limit", args.limit.to_string())];
    if let Some(status) = args.status {
        query.push(("status", status));
    }
    if let Some(bot) = args.bot {
        query.push(("bot", bot));
    }
    let query = serde_urlencoded::to_string(&query).context("encoding the query")?;
    let path = format!("/api/tasks?{query}");
    let tasks = client.get(&path).await?;
    let list = tasks.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no tasks");
    } else {
        print!("{}", tasks_table(&list));
    }
    Ok(0)
}

/// Longest prompt preview in `agentlab tasks`, in characters.
const PROMPT_PREVIEW_CHARS: usize = 50;

/// The `tasks` listing: a header and one line per task, each column as wide as
/// its widest cell (counted in characters), the prompt last and on one line.
fn tasks_table(tasks: &[Value]) -> String {
    let text = |v: &Value| v.as_str().map_or_else(|| "-".to_string(), str::to_string);
    let mut rows: Vec<[String; 5]> = vec![[
        "ID".into(),
        "STATUS".into(),
        "BOT".into(),
        "ERROR".into(),
        "PROMPT".into(),
    ]];
    for t in tasks {
        let prompt: String = t["prompt"]
            .as_str()
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let preview = if prompt.chars().count() > PROMPT_PREVIEW_CHARS {
            let cut: String = prompt.chars().take(PROMPT_PREVIEW_CHARS - 1).collect();
            format!("{cut}…")
        } else {
            prompt
        };
        rows.push([
            t["id"]
                .as_u64()
                .map_or_else(|| "?".into(), |id| format!("#{id}")),
            text(&t["status"]),
            text(&t["bot_id"]),
            text(&t["error_class"]),
            preview,
        ]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|col| {
            rows.iter()
                .map(|r| r[col].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &rows {
        for (cell, width) in row.iter().zip(&widths) {
            let pad = width - cell.chars().count();
            out.push_str(cell);
            out.push_str(&" ".repeat(pad + 2));
        }
        out.push_str(&row[4]);
        out.push('\n');
    }
    out
}

/// `agentlab restart`
pub async fn restart(config: &Config) -> anyhow::Result<i32> {
    let client = ServiceClient::new(config)?;
    client.post("/api/restart", serde_json::json!({})).await?;
    println!(
        "restart requested: the service exits with code 42 and its service manager starts it again"
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn task_columns_line_up_whatever_the_widths() {
        let tasks = [
            json!({"id": 7, "status": "succeeded", "bot_id": "DEMO", "error_class": null, "prompt": "hello\nthere"}),
            json!({"id": 12345, "status": "failed", "bot_id": "BOT-LONG-NAME", "error_class": "agent_error", "prompt": "fail"}),
            json!({"id": 88, "status": "queued", "bot_id": "B", "prompt": "ü".repeat(80)}),
        ];
        let table = tasks_table(&tasks);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("ID "), "{table}");
        // Each column starts at the same character on every line.
        for header in ["STATUS", "BOT", "ERROR", "PROMPT"] {
            let at = lines[0].find(header).expect("header");
            let col = lines[0][..at].chars().count();
            for line in &lines[1..] {
                let before: String = line.chars().take(col).collect();
                assert!(
                    before.ends_with("  ")
                        && !line.chars().nth(col).is_some_and(char::is_whitespace),
                    "column {header} misaligned:\n{table}"
                );
            }
        }
        assert!(
            lines[1].contains("#7 ") && lines[1].ends_with("hello there"),
            "{table}"
        );
        assert!(lines[2].contains("agent_error"), "{table}");
        assert!(lines[3].ends_with('…'), "{table}");
        assert_eq!(
            lines[3].chars().filter(|c| *c == 'ü').count(),
            PROMPT_PREVIEW_CHARS - 1
        );
    }
}
