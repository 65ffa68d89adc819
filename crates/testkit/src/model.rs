//! A scripted stand-in for the Anthropic Messages API (`POST /v1/messages`).
//!
//! The Claude Code CLI sends its agent-loop requests with `tools`; each of those
//! takes the next [`Reply`] from the script (or, when the script is empty, the
//! fallback: an echo of the last user text). Side requests without tools (titles,
//! summaries) get a short text and leave the script alone. Every request is
//! recorded, so a test can check what the model was shown (earlier turns, the model
//! name, a tool result).
//!
//! Answers are streamed as server-sent events exactly as the API does
//! (`message_start`, `content_block_start/delta/stop` with `text_delta` and
//! `input_json_delta`, `message_delta`, `message_stop`), or as one JSON message when
//! the request has `stream: false`. Errors are an HTTP status with the API's error
//! body (`{"type":"error","error":{"type","message"}}`).
//!
//! Invariant: the script is consumed in order, one reply per agent-loop request,
//! whatever the order in which concurrent requests arrive.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Response, StatusCode, Uri, header};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// One block of an assistant message.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// Text.
    Text(String),
    /// A tool call: the tool's name and its input.
    ToolUse {
        /// The tool, e.g. `Bash`.
        name: String,
        /// Its input, e.g. `{"command": "ls"}`.
        input: Value,
    },
}

/// What the stand-in answers to one agent-loop request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// An assistant message; `stop_reason` is `tool_use` when it calls a tool.
    Message(Vec<Block>),
    /// An HTTP error with the API's error body.
    Error {
        /// The HTTP status, e.g. 500 or 529.
        status: u16,
        /// The error's type, e.g. `api_error` or `overloaded_error`.
        error_type: String,
        /// The error's message.
        message: String,
    },
}

impl Reply {
    /// A text answer that ends the turn.
    pub fn text(text: impl Into<String>) -> Reply {
        Reply::Message(vec![Block::Text(text.into())])
    }

    /// A short text followed by a tool call.
    pub fn tool(text: impl Into<String>, name: impl Into<String>, input: Value) -> Reply {
        Reply::Message(vec![
            Block::Text(text.into()),
            Block::ToolUse {
                name: name.into(),
                input,
            },
        ])
    }

    /// A call of the Bash tool.
    pub fn bash(command: impl Into<String>) -> Reply {
        let command = command.into();
        Reply::tool(
            format!("Running `{command}`."),
            "Bash",
            json!({"command": command, "description": "run a command"}),
        )
    }

    /// An API error.
    pub fn error(status: u16, error_type: impl Into<String>, message: impl Into<String>) -> Reply {
        Reply::Error {
            status,
            error_type: error_type.into(),
            message: message.into(),
        }
    }
}

/// A request the stand-in received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Path and query, e.g. `/v1/messages?beta=true`.
    pub path: String,
    /// The request body.
    pub body: Value,
}

impl RecordedRequest {
    /// The requested model.
    pub fn model(&self) -> Option<&str> {
        self.body.get("model").and_then(Value::as_str)
    }

    /// Whether this is an agent-loop request (it offers tools).
    pub fn is_agent_loop(&self) -> bool {
        self.body
            .get("tools")
            .and_then(Value::as_array)
            .is_some_and(|tools| !tools.is_empty())
    }

    /// Every text the user side of the conversation holds, in order (prompts and
    /// tool results), as the model was shown them.
    pub fn user_texts(&self) -> Vec<String> {
        let mut texts = Vec::new();
        for message in self.messages() {
            if message.get("role").and_then(Value::as_str) != Some("user") {
                continue;
            }
            collect_texts(message.get("content"), &mut texts);
        }
        texts
    }

    /// The last text of the user side: the prompt or tool result being answered.
    pub fn last_user_text(&self) -> Option<String> {
        self.user_texts().pop()
    }

    fn messages(&self) -> &[Value] {
        self.body
            .get("messages")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

fn collect_texts(content: Option<&Value>, into: &mut Vec<String>) {
    match content {
        Some(Value::String(text)) => into.push(text.clone()),
        Some(Value::Array(blocks)) => {
            for block in blocks {
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(text) = block.get("text").and_then(Value::as_str) {
                            into.push(text.to_owned());
                        }
                    }
                    Some("tool_result") => collect_texts(block.get("content"), into),
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// Token counts reported with every answer; the CLI prices them itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens per answer.
    pub input_tokens: u64,
    /// Output tokens per answer.
    pub output_tokens: u64,
}

impl Default for Usage {
    fn default() -> Self {
        Usage {
            input_tokens: 100,
            output_tokens: 20,
        }
    }
}

#[derive(Debug, Default)]
struct Script {
    replies: VecDeque<(Duration, Reply)>,
    requests: Vec<RecordedRequest>,
    usage: Usage,
    next_tool_id: u64,
}

/// A running stand-in; it stops when dropped.
#[derive(Debug)]
pub struct ModelSim {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    stop: Option<oneshot::Sender<()>>,
}

impl ModelSim {
    /// Starts a stand-in on `127.0.0.1` and a free port. Needs a tokio runtime.
    pub async fn start() -> std::io::Result<ModelSim> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let script = Arc::new(Mutex::new(Script::default()));
        let app = Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&script));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(error) = serve.await {
                eprintln!("model stand-in stopped: {error}");
            }
        });
        Ok(ModelSim {
            addr,
            script,
            stop: Some(stop),
        })
    }

    /// The base URL to give the CLI as `ANTHROPIC_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Appends a reply to the script.
    pub fn push(&self, reply: Reply) {
        self.push_after(Duration::ZERO, reply);
    }

    /// Appends a reply that is sent `delay` after its request arrives.
    pub fn push_after(&self, delay: Duration, reply: Reply) {
        self.lock().replies.push_back((delay, reply));
    }

    /// Sets the token counts reported with every answer.
    pub fn set_usage(&self, usage: Usage) {
        self.lock().usage = usage;
    }

    /// Every request received so far, in order of arrival.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// The agent-loop requests received so far (those offering tools).
    pub fn agent_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(RecordedRequest::is_agent_loop)
            .collect()
    }

    /// How many scripted replies are still unused.
    pub fn replies_left(&self) -> usize {
        self.lock().replies.len()
    }

    // A std Mutex is right here: it is held for a few field accesses, never across
    // an await, and tests read it from synchronous code too.
    fn lock(&self) -> MutexGuard<'_, Script> {
        self.script
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for ModelSim {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn answer(
    State(script): State<Arc<Mutex<Script>>>,
    uri: Uri,
    body: axum::body::Bytes,
) -> Response<Body> {
    let path = uri
        .path_and_query()
        .map(ToString::to_string)
        .unwrap_or_default();
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error_response(400, "invalid_request_error", "body is not JSON");
    };
    if uri.path().ends_with("/count_tokens") {
        return json_response(StatusCode::OK, &json!({"input_tokens": 100}));
    }
    if !uri.path().ends_with("/v1/messages") {
        return error_response(404, "not_found_error", "no such route");
    }
    let request = RecordedRequest { path, body };
    let (delay, reply, usage, first_tool_id) = {
        let mut script = script.lock().unwrap_or_else(|p| p.into_inner());
        let (delay, reply) = if request.is_agent_loop() {
            script
                .replies
                .pop_front()
                .unwrap_or_else(|| (Duration::ZERO, echo(&request)))
        } else {
            (Duration::ZERO, Reply::text("Side answer."))
        };
        let first_tool_id = script.next_tool_id;
        if let Reply::Message(blocks) = &reply {
            let tools = blocks
                .iter()
                .filter(|b| matches!(b, Block::ToolUse { .. }))
                .count();
            script.next_tool_id += tools as u64;
        }
        let usage = script.usage;
        script.requests.push(request.clone());
        (delay, reply, usage, first_tool_id)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let model = request.model().unwrap_or("claude-test").to_owned();
    let streamed = request
        .body
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    match reply {
        Reply::Error {
            status,
            error_type,
            message,
        } => error_response(status, &error_type, &message),
        Reply::Message(blocks) => {
            let message = Message::new(&model, &blocks, first_tool_id, usage);
            if streamed {
                event_stream_response(&message)
            } else {
                json_response(StatusCode::OK, &message.whole())
            }
        }
    }
}

fn echo(request: &RecordedRequest) -> Reply {
    let last = request.last_user_text().unwrap_or_default();
    Reply::text(format!("echo: {last}"))
}

/// An assistant message about to be sent.
struct Message {
    model: String,
    content: Vec<Value>,
    stop_reason: &'static str,
    usage: Usage,
}

impl Message {
    fn new(model: &str, blocks: &[Block], first_tool_id: u64, usage: Usage) -> Message {
        let mut tool_id = first_tool_id;
        let content: Vec<Value> = blocks
            .iter()
            .map(|block| match block {
                Block::Text(text) => json!({"type": "text", "text": text}),
                Block::ToolUse { name, input } => {
                    tool_id += 1;
                    json!({"type": "tool_use", "id": format!("toolu_sim_{tool_id:06}"),
                           "name": name, "input": input})
                }
            })
            .collect();
        let calls_tool = blocks.iter().any(|b| matches!(b, Block::ToolUse { .. }));
        Message {
            model: model.to_owned(),
            content,
            stop_reason: if calls_tool { "tool_use" } else { "end_turn" },
            usage,
        }
    }

    fn whole(&self) -> Value {
        json!({
            "id": "msg_sim", "type": "message", "role": "assistant", "model": self.model,
            "content": self.content, "stop_reason": self.stop_reason, "stop_sequence": null,
            "usage": {"input_tokens": self.usage.input_tokens,
                      "output_tokens": self.usage.output_tokens},
        })
    }

    /// The message as the API streams it.
    fn events(&self) -> String {
        let mut out = String::new();
        let start = json!({"type": "message_start", "message": {
            "id": "msg_sim", "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": self.usage.input_tokens, "output_tokens": 1}}});
        push_event(&mut out, "message_start", &start);
        for (index, block) in self.content.iter().enumerate() {
            let (opening, delta) = if block["type"] == "tool_use" {
                let input = serde_json::to_string(&block["input"]).unwrap_or_default();
                (
                    json!({"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}),
                    json!({"type": "input_json_delta", "partial_json": input}),
                )
            } else {
                (
                    json!({"type": "text", "text": ""}),
                    json!({"type": "text_delta", "text": block["text"]}),
                )
            };
            let start =
                json!({"type": "content_block_start", "index": index, "content_block": opening});
            push_event(&mut out, "content_block_start", &start);
            let delta = json!({"type": "content_block_delta", "index": index, "delta": delta});
            push_event(&mut out, "content_block_delta", &delta);
            let stop = json!({"type": "content_block_stop", "index": index});
            push_event(&mut out, "content_block_stop", &stop);
        }
        let delta = json!({"type": "message_delta",
            "delta": {"stop_reason": self.stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": self.usage.output_tokens}});
        push_event(&mut out, "message_delta", &delta);
        push_event(&mut out, "message_stop", &json!({"type": "message_stop"}));
        out
    }
}

fn push_event(out: &mut String, name: &str, data: &Value) {
    out.push_str("event: ");
    out.push_str(name);
    out.push_str("\ndata: ");
    out.push_str(&data.to_string());
    out.push_str("\n\n");
}

fn event_stream_response(message: &Message) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from(message.events()))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(value.to_string()))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn error_response(status: u16, error_type: &str, message: &str) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"type": "error", "error": {"type": error_type, "message": message}});
    json_response(status, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_tool_call_carries_its_input_as_one_json_delta() {
        let blocks = [Block::ToolUse {
            name: "Bash".into(),
            input: json!({"command": "ls -la"}),
        }];
        let events = Message::new("m", &blocks, 0, Usage::default()).events();
        let names: Vec<&str> = events
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let delta_line = events
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .find(|l| l.contains("input_json_delta"))
            .expect("a delta");
        let delta: Value = serde_json::from_str(delta_line).expect("json");
        let partial = delta["delta"]["partial_json"].as_str().expect("string");
        assert_eq!(
            serde_json::from_str::<Value>(partial).expect("json"),
            json!({"command": "ls -la"})
        );
        assert!(events.contains(r#""stop_reason":"tool_use""#));
    }

    #[test]
    fn user_texts_include_prompts_and_tool_results_in_order() {
        let request = RecordedRequest {
            path: "/v1/messages".into(),
            body: json!({"messages": [
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": [{"type": "text", "text": "ignored"}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "out"}]},
                    {"type": "text", "text": "second"}]},
            ]}),
        };
        assert_eq!(request.user_texts(), ["first", "out", "second"]);
        assert_eq!(request.last_user_text().as_deref(), Some("second"));
    }

    #[tokio::test]
    async fn script_is_consumed_by_agent_requests_only_and_then_echoes() {
        let sim = ModelSim::start().await.expect("start");
        sim.push(Reply::text("scripted"));
        let client = Client(sim.base_url());
        let side = client.post(json!({"messages": [{"role": "user", "content": "title?"}]}));
        assert_eq!(side.await["content"][0]["text"], "Side answer.");
        let tools = json!([{"name": "Bash"}]);
        let first =
            client.post(json!({"tools": tools, "messages": [{"role": "user", "content": "hi"}]}));
        assert_eq!(first.await["content"][0]["text"], "scripted");
        let second = client
            .post(json!({"tools": tools, "messages": [{"role": "user", "content": "again"}]}));
        assert_eq!(second.await["content"][0]["text"], "echo: again");
        assert_eq!(sim.requests().len(), 3);
        assert_eq!(sim.agent_requests().len(), 2);
    }

    #[tokio::test]
    async fn scripted_error_is_the_apis_error_body_with_its_status() {
        let sim = ModelSim::start().await.expect("start");
        sim.push(Reply::error(529, "overloaded_error", "Overloaded"));
        let body = json!({"tools": [{"name": "Bash"}], "messages": []}).to_string();
        let (status, answer) = raw_post(&sim.base_url(), &body).await;
        assert_eq!(status, 529);
        let answer: Value = serde_json::from_str(&answer).expect("json");
        assert_eq!(answer["error"]["type"], "overloaded_error");
    }

    struct Client(String);

    impl Client {
        async fn post(&self, body: Value) -> Value {
            let (status, text) = raw_post(&self.0, &body.to_string()).await;
            assert_eq!(status, 200, "{text}");
            serde_json::from_str(&text).expect("json answer")
        }
    }

    /// A minimal HTTP/1.1 client: the crate needs no HTTP client of its own.
    async fn raw_post(base_url: &str, body: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = base_url.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "POST /v1/messages HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        let status = answer[9..12].parse().expect("status");
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (status, body.to_owned())
    }
}
