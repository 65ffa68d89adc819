//! `agentlab approvals` and `agentlab approve ID allow|deny` (or `agentlab approve
//! ID --answer LABEL` for the agent's questions): the pending approvals of the
//! running service, and deciding one, over its HTTP API
//! (`GET /api/approvals`, `POST /api/approvals/{id}`), so they work while
//! Telegram is unreachable.

use serde_json::{Value, json};

use super::args::{ApproveArgs, ApproveDecision};
use super::remote::ServiceClient;
use crate::config::Config;

/// Longest tool input shown per line.
const MAX_INPUT_CHARS: usize = 120;

/// `agentlab approvals`
pub async fn list(config: &Config) -> anyhow::Result<i32> {
    let client = ServiceClient::new(config)?;
    let pending = client.get("/api/approvals").await?;
    let items = pending.as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        println!("no approvals are waiting");
        return Ok(0);
    }
    for item in &items {
        println!("{}", approval_line(item));
    }
    println!("decide with: agentlab approve ID allow|deny, or agentlab approve ID --answer LABEL");
    Ok(0)
}

/// `agentlab approve`
pub async fn approve(config: &Config, args: ApproveArgs) -> anyhow::Result<i32> {
    let client = ServiceClient::new(config)?;
    let path = format!("/api/approvals/{}", args.id);
    let body = match (args.decision, &args.answer) {
        (_, Some(label)) => json!({"answer": label, "by": "cli"}),
        (Some(ApproveDecision::Allow), None) => json!({"decision": "allow", "by": "cli"}),
        (Some(ApproveDecision::Deny), None) | (None, None) => {
            json!({"decision": "deny", "by": "cli"})
        }
    };
    let decided = client.post(&path, body).await?;
    let outcome = match decided["decision"].as_str() {
        Some(decision) => decision.to_owned(),
        None => format!(
            "answered; next question's options: {}",
            options(&decided).join(" | ")
        ),
    };
    println!(
        "approval {} ({}): {outcome}",
        args.id,
        decided["tool"].as_str().unwrap_or("?"),
    );
    Ok(0)
}

fn options(item: &Value) -> Vec<String> {
    item["options"]
        .as_array()
        .map(|o| {
            o.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// One pending approval as a line: id, task, tool and its input (a question and
/// its options, a plan), shortened.
fn approval_line(item: &Value) -> String {
    let input = &item["input"];
    let open_question = item["questions"].as_array().and_then(|qs| {
        qs.iter()
            .find(|q| q["answer"].is_null())
            .and_then(|q| q["question"].as_str())
    });
    let shown = match (item["kind"].as_str(), open_question) {
        (Some("question"), Some(question)) => {
            format!("{question} [{}]", options(item).join(" | "))
        }
        (Some("plan"), _) => item["plan"].as_str().unwrap_or_default().to_owned(),
        _ => input
            .get("command")
            .or_else(|| input.get("file_path"))
            .and_then(Value::as_str)
            .map_or_else(|| input.to_string(), str::to_owned),
    };
    let mut shown: String = shown.chars().filter(|c| !c.is_control()).collect();
    if shown.chars().count() > MAX_INPUT_CHARS {
        shown = shown.chars().take(MAX_INPUT_CHARS).collect::<String>() + "…";
    }
    format!(
        "#{}  task {}  {}  {}: {}",
        item["id"],
        item["task_id"],
        item["bot_id"].as_str().unwrap_or("?"),
        item["tool"].as_str().unwrap_or("?"),
        shown
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_shows_the_command_without_control_characters_and_shortened() {
        let item = json!({"id": 4, "task_id": 9, "bot_id": "B", "tool": "Bash",
            "input": {"command": format!("echo hi\n{}", "x".repeat(300))}});
        let line = approval_line(&item);
        assert!(line.starts_with("#4  task 9  B  Bash: echo hi"), "{line}");
        assert!(!line.contains('\n'));
        assert!(line.ends_with('…'));
    }

    #[test]
    fn a_question_shows_its_open_question_and_options() {
        let item = json!({"id": 5, "task_id": 9, "bot_id": "B", "tool": "AskUserQuestion",
            "kind": "question", "options": ["Red", "Blue"], "input": {},
            "questions": [{"question": "Size?", "answer": "S"},
                          {"question": "Which color?", "answer": null}]});
        let line = approval_line(&item);
        assert!(
            line.ends_with("AskUserQuestion: Which color? [Red | Blue]"),
            "{line}"
        );
    }
}
