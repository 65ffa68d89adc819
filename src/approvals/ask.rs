//! Requests that ask the user something instead of asking to run a tool: the
//! agent's questions (`AskUserQuestion`) and its plan (`ExitPlanMode`). Both come
//! as `can_use_tool` requests; what differs is what is shown, what the buttons
//! offer and what the answer carries.
//!
//! - A question request holds 1–4 `questions`, each with 2–4 `options` (a
//!   `label` and a `description`) and `multiSelect`. The CLI takes the answer as
//!   `allow` with `updatedInput` = its input plus `answers`, a map from each
//!   question's text to the chosen label (several labels of a multi-select
//!   question joined by ", "). Questions are answered one after the other; a
//!   multi-select question collects options until its choice is confirmed.
//!   Every press says what it wants (choose, unchoose, confirm) rather than
//!   "toggle", so a press delivered twice (Telegram redelivers what a killed
//!   service did not confirm) changes nothing the second time.
//! - A plan request holds the `plan` (and `planFilePath`); `allow` approves it
//!   (the CLI leaves plan mode), `deny` with a message keeps the agent planning.
//!
//! Invariant: everything here is pure — it reads a request's input and the picks
//! so far and says what they mean; storing and answering are the caller's.

use serde_json::{Map, Value};

use crate::storage::{Approval, QuestionPick};

/// The tool through which the agent asks the user questions.
pub const ASK_TOOL: &str = "AskUserQuestion";
/// The tool through which the agent asks to leave plan mode with a plan.
pub const PLAN_TOOL: &str = "ExitPlanMode";
/// The label of the button that approves a plan.
pub const APPROVE_PLAN: &str = "Approve plan";
/// The label of the button that sends the agent back to planning.
pub const KEEP_PLANNING: &str = "Keep planning";
/// What the agent is told when the user wants more planning.
pub const KEEP_PLANNING_MESSAGE: &str = "The user wants you to keep planning: stay in plan \
    mode, revise the plan, and call ExitPlanMode again when the revised plan is ready.";
/// How the labels of a multi-select answer are joined.
const MULTI_JOIN: &str = ", ";

/// What an approval asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalKind {
    /// To run a tool.
    Tool,
    /// To answer questions.
    Question,
    /// To approve a plan and leave plan mode.
    Plan,
}

impl ApprovalKind {
    /// What `approval` asks for: a question request without readable questions
    /// is shown as a plain tool request.
    pub fn of(approval: &Approval) -> ApprovalKind {
        match approval.asked.tool_name.as_str() {
            ASK_TOOL if !questions(&input_of(approval)).is_empty() => ApprovalKind::Question,
            PLAN_TOOL => ApprovalKind::Plan,
            _ => ApprovalKind::Tool,
        }
    }

    /// The name used in the API and events.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalKind::Tool => "tool",
            ApprovalKind::Question => "question",
            ApprovalKind::Plan => "plan",
        }
    }
}

/// One question of a question request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The question's text (the key of its answer).
    pub text: String,
    /// A short label of it.
    pub header: String,
    /// The options: (label, description).
    pub options: Vec<(String, String)>,
    /// Whether several options may be chosen.
    pub multi_select: bool,
}

/// A choice made for a question request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Press {
    /// Option `option` of question `question` (added to the choice, for a
    /// multi-select one).
    Choose {
        /// The question's index.
        question: usize,
        /// The option's index.
        option: usize,
    },
    /// Option `option` taken back from multi-select question `question`.
    Unchoose {
        /// The question's index.
        question: usize,
        /// The option's index.
        option: usize,
    },
    /// The options chosen for multi-select question `question` are its answer.
    Confirm {
        /// The question's index.
        question: usize,
    },
    /// This label (or, for a multi-select question, these labels joined by ", ")
    /// answers the first question not answered yet.
    Label(String),
}

/// What a [`Press`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PressOutcome {
    /// Recorded; other questions (or the confirmation) remain.
    Recorded,
    /// Recorded, and every question is answered.
    Complete,
    /// That question was answered before.
    AlreadyAnswered,
    /// No such question or option.
    NoSuchOption,
    /// A multi-select question was confirmed with nothing chosen.
    NothingChosen,
}

/// The input of an approval as JSON (null when unreadable).
pub fn input_of(approval: &Approval) -> Value {
    serde_json::from_str(&approval.asked.input_json).unwrap_or(Value::Null)
}

/// The questions of a question request's input (those with a text and options).
pub fn questions(input: &Value) -> Vec<Question> {
    let text = |value: &Value, key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let Some(list) = input.get("questions").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|q| {
            let options: Vec<(String, String)> = q
                .get("options")
                .and_then(Value::as_array)?
                .iter()
                .map(|o| (text(o, "label"), text(o, "description")))
                .filter(|(label, _)| !label.is_empty())
                .collect();
            let question = Question {
                text: text(q, "question"),
                header: text(q, "header"),
                options,
                multi_select: q
                    .get("multiSelect")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            };
            (!question.text.is_empty() && !question.options.is_empty()).then_some(question)
        })
        .collect()
}

/// The pick of question `index`, if any.
pub fn pick_of(picks: &[QuestionPick], index: usize) -> Option<&QuestionPick> {
    picks.iter().find(|p| p.question as usize == index)
}

/// The first question not answered yet.
pub fn current(questions: &[Question], picks: &[QuestionPick]) -> Option<usize> {
    (0..questions.len()).find(|&i| !pick_of(picks, i).is_some_and(|p| p.done))
}

/// Applies `press` to `picks`.
pub fn apply(questions: &[Question], picks: &mut Vec<QuestionPick>, press: &Press) -> PressOutcome {
    let option_label = |question: usize, option: usize| {
        questions
            .get(question)
            .and_then(|q| q.options.get(option))
            .map(|(label, _)| label.clone())
    };
    let (index, label, action) = match press {
        Press::Choose { question, option } => match option_label(*question, *option) {
            Some(label) => (*question, Some(label), Action::Choose),
            None => return PressOutcome::NoSuchOption,
        },
        Press::Unchoose { question, option } => match option_label(*question, *option) {
            Some(label) => (*question, Some(label), Action::Unchoose),
            None => return PressOutcome::NoSuchOption,
        },
        Press::Confirm { question } => (*question, None, Action::Confirm),
        Press::Label(given) => {
            let Some(index) = current(questions, picks) else {
                return PressOutcome::AlreadyAnswered;
            };
            let question = &questions[index];
            let known = |label: &str| question.options.iter().any(|(l, _)| l == label);
            let given = given.trim();
            let labels: Vec<String> = if known(given) || !question.multi_select {
                vec![given.to_owned()]
            } else {
                given
                    .split(MULTI_JOIN)
                    .map(|l| l.trim().to_owned())
                    .collect()
            };
            if labels.is_empty() || !labels.iter().all(|l| known(l)) {
                return PressOutcome::NoSuchOption;
            }
            let at = slot(picks, index);
            picks[at].labels = labels;
            picks[at].done = true;
            return finished(questions, picks);
        }
    };
    let Some(question) = questions.get(index) else {
        return PressOutcome::NoSuchOption;
    };
    if pick_of(picks, index).is_some_and(|p| p.done) {
        return PressOutcome::AlreadyAnswered;
    }
    if action == Action::Unchoose && !question.multi_select {
        return PressOutcome::NoSuchOption;
    }
    let at = slot(picks, index);
    let pick = &mut picks[at];
    match (action, label) {
        (Action::Confirm, _) => {
            if !question.multi_select || pick.labels.is_empty() {
                return PressOutcome::NothingChosen;
            }
            pick.done = true;
        }
        (Action::Choose, Some(label)) if question.multi_select => {
            if !pick.labels.contains(&label) {
                pick.labels.push(label);
            }
            return PressOutcome::Recorded;
        }
        (Action::Choose, Some(label)) => {
            pick.labels = vec![label];
            pick.done = true;
        }
        (Action::Unchoose, Some(label)) => {
            pick.labels.retain(|l| *l != label);
            return PressOutcome::Recorded;
        }
        (_, None) => return PressOutcome::NoSuchOption,
    }
    finished(questions, picks)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Choose,
    Unchoose,
    Confirm,
}

fn slot(picks: &mut Vec<QuestionPick>, index: usize) -> usize {
    match picks.iter().position(|p| p.question as usize == index) {
        Some(at) => at,
        None => {
            picks.push(QuestionPick {
                question: u32::try_from(index).unwrap_or(u32::MAX),
                labels: Vec::new(),
                done: false,
            });
            picks.len() - 1
        }
    }
}

fn finished(questions: &[Question], picks: &[QuestionPick]) -> PressOutcome {
    match current(questions, picks) {
        Some(_) => PressOutcome::Recorded,
        None => PressOutcome::Complete,
    }
}

/// The answer of each answered question: (question text, labels joined).
pub fn answers(questions: &[Question], picks: &[QuestionPick]) -> Vec<(String, String)> {
    questions
        .iter()
        .enumerate()
        .filter_map(|(i, q)| {
            let pick = pick_of(picks, i).filter(|p| p.done)?;
            Some((q.text.clone(), pick.labels.join(MULTI_JOIN)))
        })
        .collect()
}

/// The input the CLI is given back for an answered question request: the
/// request's input with `answers` set to what was chosen.
pub fn answered_input(input: &Value, picks: &[QuestionPick]) -> Value {
    let answers: Map<String, Value> = answers(&questions(input), picks)
        .into_iter()
        .map(|(question, label)| (question, Value::String(label)))
        .collect();
    let mut out = input.clone();
    if let Some(map) = out.as_object_mut() {
        map.insert("answers".into(), Value::Object(answers));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn input() -> Value {
        json!({"questions": [
            {"question": "Which color?", "header": "Color", "multiSelect": false,
             "options": [{"label": "Red", "description": "warm"},
                         {"label": "Blue", "description": "cool"}]},
            {"question": "Which sizes?", "header": "Size", "multiSelect": true,
             "options": [{"label": "S", "description": ""}, {"label": "M", "description": ""},
                         {"label": "L", "description": ""}]},
        ]})
    }

    #[test]
    fn questions_are_answered_in_turn_and_a_multi_select_one_on_confirmation() {
        let qs = questions(&input());
        assert_eq!(qs.len(), 2);
        assert!(qs[1].multi_select);
        let mut picks = Vec::new();
        assert_eq!(current(&qs, &picks), Some(0));
        let choose = |question, option| Press::Choose { question, option };
        assert_eq!(
            apply(&qs, &mut picks, &choose(0, 1)),
            PressOutcome::Recorded
        );
        assert_eq!(
            apply(&qs, &mut picks, &choose(0, 0)),
            PressOutcome::AlreadyAnswered
        );
        assert_eq!(current(&qs, &picks), Some(1));
        assert_eq!(
            apply(&qs, &mut picks, &Press::Confirm { question: 1 }),
            PressOutcome::NothingChosen
        );
        assert_eq!(
            apply(&qs, &mut picks, &choose(1, 2)),
            PressOutcome::Recorded
        );
        assert_eq!(
            apply(&qs, &mut picks, &choose(1, 0)),
            PressOutcome::Recorded
        );
        assert_eq!(
            apply(&qs, &mut picks, &choose(1, 1)),
            PressOutcome::Recorded
        );
        // Pressed twice (redelivered), a choice is made once, and taken back once.
        assert_eq!(
            apply(&qs, &mut picks, &choose(1, 1)),
            PressOutcome::Recorded
        );
        assert_eq!(pick_of(&picks, 1).map(|p| p.labels.len()), Some(3));
        let unchoose = |question, option| Press::Unchoose { question, option };
        assert_eq!(
            apply(&qs, &mut picks, &unchoose(1, 1)),
            PressOutcome::Recorded
        );
        assert_eq!(
            apply(&qs, &mut picks, &unchoose(1, 1)),
            PressOutcome::Recorded
        );
        assert_eq!(
            apply(&qs, &mut picks, &unchoose(0, 1)),
            PressOutcome::AlreadyAnswered
        );
        assert_eq!(
            apply(&qs, &mut picks, &choose(1, 9)),
            PressOutcome::NoSuchOption
        );
        assert_eq!(
            apply(&qs, &mut picks, &Press::Confirm { question: 1 }),
            PressOutcome::Complete
        );
        let answered = answered_input(&input(), &picks);
        assert_eq!(
            answered["answers"],
            json!({"Which color?": "Blue", "Which sizes?": "L, S"})
        );
        assert_eq!(answered["questions"], input()["questions"]);
    }

    #[test]
    fn a_label_answers_the_first_open_question_and_unknown_labels_change_nothing() {
        let qs = questions(&input());
        let mut picks = Vec::new();
        let label = |l: &str| Press::Label(l.into());
        assert_eq!(
            apply(&qs, &mut picks, &label("Green")),
            PressOutcome::NoSuchOption
        );
        assert!(picks.is_empty());
        assert_eq!(
            apply(&qs, &mut picks, &label(" Red ")),
            PressOutcome::Recorded
        );
        assert_eq!(
            apply(&qs, &mut picks, &label("S, XL")),
            PressOutcome::NoSuchOption
        );
        assert_eq!(
            apply(&qs, &mut picks, &label("S, M")),
            PressOutcome::Complete
        );
        assert_eq!(
            apply(&qs, &mut picks, &label("S")),
            PressOutcome::AlreadyAnswered
        );
        assert_eq!(
            answers(&qs, &picks),
            [
                ("Which color?".to_owned(), "Red".to_owned()),
                ("Which sizes?".to_owned(), "S, M".to_owned())
            ]
        );
    }

    #[test]
    fn a_request_without_readable_questions_has_none() {
        assert!(questions(&json!({})).is_empty());
        assert!(questions(&json!({"questions": [{"question": "Why?", "options": []}]})).is_empty());
        assert!(questions(&Value::Null).is_empty());
    }
}
