//! `agentlab demo`: the whole service on embedded defaults, with the built-in
//! Telegram Bot API simulator and the built-in test agent — no token, no network.
//!
//! You type as a Telegram user would; the bot's answers are printed as a phone
//! would show them (messages, edits, deletions, files as their name and size).
//! `/send PATH [caption]` sends a local file as the user would (a photo for an
//! image, a voice message for `.ogg`/`.oga`, audio for `.mp3`/`.m4a`, a document
//! otherwise). `--script FILE` sends the file's lines one by one, waiting for each
//! answer, then stops.
//!
//! A message with buttons (an inline keyboard, e.g. a tool approval) is printed
//! with its buttons numbered, `[1] ✅ Allow  [2] ...`; typing a number presses
//! that button of the newest message that has buttons — a callback query goes
//! into the simulator as Telegram would send it — and the bot's edit of the
//! message is printed like any other. A task waiting for such a press counts as
//! settled for `--script`, so the script's next line can be the number.
//! Everything between the simulator and the agent is the production code path.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use tokio::io::AsyncBufReadExt;

use super::args::DemoArgs;
use crate::config::{AgentConfig, BotConfig, Config};
use crate::service::RunOptions;
use crate::shutdown::{RESTART_EXIT_CODE, Shutdown};
use telegram_sim::{
    FileKind, IncomingFile, IncomingMessage, SentItem, SentKind, SimConfig, SimHandle, TelegramSim,
};

/// The demo bot's id.
pub const DEMO_BOT: &str = "DEMO";
/// The demo user (also the chat id of the private chat).
pub const DEMO_USER: i64 = 1000;
const DEMO_TOKEN: &str = "100000:demo-token-not-secret";
/// Longest wait for one scripted prompt's answer.
const SCRIPT_STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// File in the demo's data directory that keeps where the next run's
/// simulator ids start.
const SIM_IDS_FILE: &str = "simulator-ids";
/// Ids reserved per run: far more updates and messages than a demo makes.
const SIM_IDS_PER_RUN: u32 = 100_000;

/// Where this run's update and message ids start, reserving a block of them.
///
/// The data directory outlives the simulator, and the bot rightly takes an
/// update it has stored before as a re-delivery; a fresh simulator counting
/// from the same start would have the next run's first prompts taken for the
/// last run's. Telegram never repeats an id, so each run takes the next block
/// (after ~21,000 runs it starts over, within Telegram's 32-bit ids).
fn reserve_sim_ids(data_dir: &Path) -> anyhow::Result<u32> {
    let path = data_dir.join(SIM_IDS_FILE);
    let start = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .filter(|start| *start <= i32::MAX as u32 - 2 * SIM_IDS_PER_RUN)
        .unwrap_or(0);
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    std::fs::write(&path, format!("{}\n", start + SIM_IDS_PER_RUN))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(start)
}

/// The demo's log folder (its logging is set up by the caller, `app`).
pub fn log_dir(args: &DemoArgs) -> std::path::PathBuf {
    demo_config_in(&args.data_dir, args.port, "", Vec::new()).log_dir
}

/// Runs the demo until the input ends (script) or the user types `/quit` / Ctrl-D.
pub async fn run(args: DemoArgs) -> anyhow::Result<i32> {
    let sim = TelegramSim::start_with(SimConfig {
        id_offset: reserve_sim_ids(&args.data_dir)?,
        ..SimConfig::new(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            vec![DEMO_TOKEN.to_string()],
        )
    })
    .await
    .context("starting the built-in Telegram simulator")?;
    let config = demo_config(&args, &sim.url())?;
    let shutdown = Shutdown::new();
    let bound = Arc::new(OnceLock::new());
    let mut service = tokio::spawn(supervise(config.clone(), shutdown.clone(), bound.clone()));
    let addr = wait_for_address(&config, &bound, &mut service).await?;
    print_banner(&config, &addr);

    let mut printer = Printer::default();
    let outcome = match &args.script {
        Some(path) => run_script(&sim, &mut printer, path, &config).await,
        None => run_interactive(&sim, &mut printer, &config).await,
    };
    shutdown.request(0);
    let code = service.await.context("the service task failed")??;
    sim.shutdown().await;
    outcome?;
    Ok(code)
}

/// Runs the service as launchd or systemd would: started again when it exits
/// for a `/restart` (exit code 42), until `stop` is requested.
/// `bound` is set to the first run's HTTP address.
async fn supervise(
    config: Config,
    stop: Shutdown,
    bound: Arc<OnceLock<SocketAddr>>,
) -> anyhow::Result<i32> {
    loop {
        let this_run = Shutdown::new();
        let options = RunOptions {
            shutdown: Some(this_run.clone()),
            systemd_notify: false,
            tokens: BTreeMap::from([(DEMO_BOT.to_string(), DEMO_TOKEN.to_string())]),
            bound: Some(bound.clone()),
        };
        let service = crate::service::run(config.clone(), options);
        tokio::pin!(service);
        let code = tokio::select! {
            code = &mut service => code?,
            () = stop.wait() => {
                this_run.request(0);
                service.await?
            }
        };
        if code != RESTART_EXIT_CODE || stop.is_requested() {
            return Ok(code);
        }
        println!(
            "  (the service exited for a restart; starting it again, as launchd or systemd would)"
        );
    }
}

fn demo_config(args: &DemoArgs, api_url: &str) -> anyhow::Result<Config> {
    let exe = std::env::current_exe().context("locating the agentlab binary for the demo agent")?;
    let agent = vec![exe.to_string_lossy().into_owned(), "test-agent".into()];
    let config = demo_config_in(&args.data_dir, args.port, api_url, agent);
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    config.validate()?;
    Ok(config)
}

/// The demo's configuration for its folder `data_dir` (`--data-dir`), without
/// touching the disk. `examples/demo.toml` names the same folders, port and
/// bot for the other commands.
fn demo_config_in(data_dir: &Path, port: u16, api_url: &str, agent_command: Vec<String>) -> Config {
    let mut config = Config {
        data_dir: data_dir.join("data"),
        backup_dir: data_dir.join("backups"),
        log_dir: data_dir.join("logs"),
        ..Config::default()
    };
    config.http.bind = format!("127.0.0.1:{port}");
    config.limits.workers = 2;
    config.limits.task_timeout_s = 300;
    config.bots = vec![BotConfig {
        id: DEMO_BOT.into(),
        token_env: "AGENTLAB_DEMO_TOKEN".into(),
        api_url: api_url.to_string(),
        allowed_users: vec![DEMO_USER],
        admins: vec![DEMO_USER],
        workdir: data_dir.to_path_buf(),
        // The built-in test agent speaks Claude Code's protocol, like the default agent.
        agent: AgentConfig {
            command: agent_command,
            ..AgentConfig::default()
        },
        projects: Vec::new(),
    }];
    config
}

/// Waits until this run's service listens (not another process's: an address
/// file on the same folder may be a running demo's, or a killed one's), or
/// says why it stopped first.
async fn wait_for_address(
    config: &Config,
    bound: &OnceLock<SocketAddr>,
    service: &mut tokio::task::JoinHandle<anyhow::Result<i32>>,
) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(addr) = bound.get() {
            return Ok(addr.to_string());
        }
        if service.is_finished() {
            let outcome = service.await.context("the service task failed")?;
            return Err(start_up_failure(config, outcome));
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("the service did not become ready within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Why the service stopped before it was ready, said for the demo: another
/// agentlab holding the demo's database, or its port taken, each with what to
/// do; anything else as it is.
fn start_up_failure(config: &Config, outcome: anyhow::Result<i32>) -> anyhow::Error {
    let error = match outcome {
        Ok(code) => {
            return anyhow::anyhow!("the service stopped during start-up (exit code {code})");
        }
        Err(error) => error,
    };
    let folder_in_use = error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<crate::storage::StoreError>(),
            Some(crate::storage::StoreError::AlreadyOpen { .. })
        )
    });
    let port_taken = error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::AddrInUse)
    });
    let folder = config.data_dir.parent().unwrap_or(&config.data_dir);
    if folder_in_use {
        error.context(format!(
            "{} is in use by another agentlab (another `agentlab demo` on the same folder?): \
             stop that one, or give this one a folder of its own with --data-dir",
            folder.display()
        ))
    } else if port_taken {
        error.context(format!(
            "{} is taken by another program: try --port 0 (a free port)",
            config.http.bind
        ))
    } else {
        error.context("the service stopped during start-up")
    }
}

fn print_banner(config: &Config, addr: &str) {
    println!("agentlab demo — a local Telegram simulator, the real bot, a built-in test agent.");
    println!("  HTTP API:   http://{addr}/health   (dashboard: http://{addr}/)");
    println!("  State:      {}", config.data_dir.display());
    println!(
        "Type a message as Telegram user {DEMO_USER}. Try: hello · sleep:3 hi · tool:Bash sleep:2 cargo test · approve:Bash touch demo.txt · fail · /status · /tasks · /help"
    );
    println!(
        "Directives for the test agent: sleep:N, tool:NAME, approve:NAME, fail, exit:N, long:N, cost:X, bad-json. Buttons show as [1] [2] ...: type the number to press one. /quit or Ctrl-D ends.\n"
    );
}

async fn run_interactive(
    sim: &SimHandle,
    printer: &mut Printer,
    config: &Config,
) -> anyhow::Result<()> {
    let stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut lines = stdin.lines();
    let prompt_visible = std::io::stdin().is_terminal();
    let mut prompt = Prompt::default();
    loop {
        if prompt_visible && prompt.take() {
            eprint!("you> ");
        }
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line.context("reading the terminal")? else {
                    if !prompt_visible {
                        // Piped input that ended: its prompts are still owed
                        // their answers (a person at a terminal pressing
                        // Ctrl-D wants out at once).
                        return wait_until_settled(sim, printer, config).await;
                    }
                    break;
                };
                let line = line.trim().to_string();
                if line == "/quit" || line == "/exit" {
                    break;
                }
                if !line.is_empty() {
                    send_line(sim, printer, &line)?;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                printer.print_new(sim)?;
                prompt.after_line();
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                // The bot's lines replace a prompt on screen rather than
                // follow it on its line.
                let on_screen = prompt_visible && prompt.on_screen;
                let printed = printer.print_new_after(sim, || {
                    if on_screen {
                        eprint!("\r\x1b[K");
                    }
                })?;
                prompt.after_output(printed);
            }
        }
    }
    printer.print_new(sim)?;
    Ok(())
}

/// When the interactive demo shows `you> `: at the start, after each line the
/// user sends, and after the bot said something — never on a quiet tick, where
/// prompts would pile up and what the user types would land after dozens.
#[derive(Debug)]
struct Prompt {
    owed: bool,
    /// Shown and still the last thing on its line.
    on_screen: bool,
}

impl Default for Prompt {
    fn default() -> Self {
        Prompt {
            owed: true,
            on_screen: false,
        }
    }
}

impl Prompt {
    /// Whether to show the prompt now (then it is no longer owed).
    fn take(&mut self) -> bool {
        let show = std::mem::take(&mut self.owed);
        self.on_screen |= show;
        show
    }

    /// The user's line was handled (and what followed it printed).
    fn after_line(&mut self) {
        self.owed = true;
        self.on_screen = false;
    }

    /// A tick printed `lines` lines of the bot's.
    fn after_output(&mut self, lines: usize) {
        if lines > 0 {
            self.owed = true;
            self.on_screen = false;
        }
    }
}

async fn run_script(
    sim: &SimHandle,
    printer: &mut Printer,
    path: &Path,
    config: &Config,
) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        println!("you> {line}");
        send_line(sim, printer, line)?;
        wait_until_settled(sim, printer, config).await?;
    }
    Ok(())
}

/// Sends what the user typed: the press of button N for a number N while a
/// message shows numbered buttons, a text message, or with `/send PATH
/// [caption]` the local file at PATH (a file that cannot be read is reported,
/// not fatal).
fn send_line(sim: &SimHandle, printer: &Printer, line: &str) -> anyhow::Result<()> {
    if let Some((message_id, data)) = printer.button_for(line) {
        sim.inject_callback(DEMO_TOKEN, DEMO_USER, DEMO_USER, message_id, data)?;
        return Ok(());
    }
    let Some(rest) = line.strip_prefix("/send ") else {
        sim.inject_text(DEMO_TOKEN, DEMO_USER, DEMO_USER, line)?;
        return Ok(());
    };
    let rest = rest.trim();
    let (path, caption) = match rest.split_once(char::is_whitespace) {
        Some((path, caption)) => (path, Some(caption.trim())),
        None => (rest, None),
    };
    let data = match std::fs::read(path) {
        Ok(data) => data,
        Err(e) => {
            println!("demo: cannot send {path}: {e}");
            return Ok(());
        }
    };
    let mut file = IncomingFile::new(file_kind(path), data);
    if let Some(name) = Path::new(path).file_name() {
        file = file.named(name.to_string_lossy());
    }
    if let Some(caption) = caption.filter(|c| !c.is_empty()) {
        file = file.captioned(caption);
    }
    sim.inject_message(
        DEMO_TOKEN,
        &IncomingMessage::file(DEMO_USER, DEMO_USER, file),
    )?;
    Ok(())
}

/// How a phone would send the file at `path`, by its extension.
fn file_kind(path: &str) -> FileKind {
    let lower = path.to_ascii_lowercase();
    let ends = |exts: &[&str]| exts.iter().any(|e| lower.ends_with(e));
    if ends(&[".jpg", ".jpeg", ".png", ".webp"]) {
        FileKind::Photo
    } else if ends(&[".ogg", ".oga"]) {
        FileKind::Voice
    } else if ends(&[".mp3", ".m4a"]) {
        FileKind::Audio
    } else {
        FileKind::Document
    }
}

/// "12 bytes", "3.4 KB", "5.0 MB".
fn human_size(bytes: usize) -> String {
    match bytes {
        0..1024 => format!("{bytes} bytes"),
        1024..1_048_576 => format!("{:.1} KB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MB", bytes as f64 / 1_048_576.0),
    }
}

/// Waits until the bot went quiet and no task is queued or running — or what
/// runs waits for a press of the buttons on screen — printing what it says
/// meanwhile.
async fn wait_until_settled(
    sim: &SimHandle,
    printer: &mut Printer,
    config: &Config,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let addr_file = crate::service::addr_file(config);
    let deadline = tokio::time::Instant::now() + SCRIPT_STEP_TIMEOUT;
    let mut quiet_rounds = 0;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let printed = printer.print_new(sim)?;
        // Read each time: a /restart starts the service on a new port.
        let addr = std::fs::read_to_string(&addr_file).unwrap_or_default();
        let busy = open_tasks(&client, addr.trim()).await.unwrap_or(1);
        quiet_rounds = if printed == 0 && (busy == 0 || printer.has_buttons()) {
            quiet_rounds + 1
        } else {
            0
        };
        if quiet_rounds >= 3 {
            return Ok(());
        }
    }
    anyhow::bail!("no answer within {} s", SCRIPT_STEP_TIMEOUT.as_secs())
}

async fn open_tasks(client: &reqwest::Client, addr: &str) -> anyhow::Result<usize> {
    let mut open = 0;
    for status in ["queued", "running", "interrupted"] {
        let url = format!("http://{addr}/api/tasks?status={status}&limit=100");
        let tasks: Vec<serde_json::Value> = client.get(url).send().await?.json().await?;
        open += tasks.len();
    }
    Ok(open)
}

/// Prints what the bot sent, as a phone would show it.
#[derive(Default)]
struct Printer {
    seen: u64,
    /// The newest message that shows buttons, with them in order.
    buttons: Option<Buttons>,
}

/// A message's inline keyboard, as the demo numbers it.
#[derive(Debug, Clone, PartialEq)]
struct Buttons {
    message_id: i32,
    /// (label, callback data), row by row, left to right.
    buttons: Vec<(String, String)>,
}

impl Buttons {
    /// The buttons of a message or edit; `None` when it has none.
    fn of(item: &SentItem) -> Option<Buttons> {
        let buttons = item.buttons();
        (!buttons.is_empty()).then_some(Buttons {
            message_id: item.message_id?,
            buttons,
        })
    }

    /// `    [1] ✅ Allow  [2] ♾️ Always allow Bash  [3] ⛔ Deny`.
    fn render(&self) -> String {
        let numbered: Vec<String> = self
            .buttons
            .iter()
            .enumerate()
            .map(|(n, (label, _))| format!("[{}] {label}", n + 1))
            .collect();
        format!("    {}   (type the number to press)", numbered.join("  "))
    }
}

impl Printer {
    /// Whether a message on screen waits for a press.
    fn has_buttons(&self) -> bool {
        self.buttons.is_some()
    }

    /// The message and callback data of button `line` (a number from 1) of the
    /// newest message with buttons.
    fn button_for(&self, line: &str) -> Option<(i32, &str)> {
        let shown = self.buttons.as_ref()?;
        let n: usize = line.trim().parse().ok()?;
        let (_, data) = shown.buttons.get(n.checked_sub(1)?)?;
        Some((shown.message_id, data))
    }

    /// Keeps track of the buttons on screen: a message or edit with buttons
    /// shows them; an edit without them (decided) or a deletion takes them away.
    fn track_buttons(&mut self, item: &SentItem) -> Option<String> {
        match item.kind {
            SentKind::Message | SentKind::Edit => {
                if let Some(buttons) = Buttons::of(item) {
                    let rendered = buttons.render();
                    self.buttons = Some(buttons);
                    return Some(rendered);
                }
            }
            SentKind::Delete => {}
            _ => return None,
        }
        if item.kind != SentKind::Message
            && self.buttons.as_ref().map(|b| b.message_id) == item.message_id
        {
            self.buttons = None;
        }
        None
    }

    fn print_new(&mut self, sim: &SimHandle) -> anyhow::Result<usize> {
        self.print_new_after(sim, || {})
    }

    /// Like [`Self::print_new`], running `before` once before the first line.
    fn print_new_after(&mut self, sim: &SimHandle, before: impl FnOnce()) -> anyhow::Result<usize> {
        let items = sim.sent(DEMO_TOKEN)?;
        let mut printed = 0;
        let seen = self.seen;
        let mut before = Some(before);
        for item in items.into_iter().filter(|i| i.seq > seen) {
            self.seen = item.seq;
            if let Some(line) = render_item(&item) {
                if let Some(before) = before.take() {
                    before();
                }
                println!("{line}");
                printed += 1;
            }
            if let Some(line) = self.track_buttons(&item) {
                println!("{line}");
                printed += 1;
            }
        }
        Ok(printed)
    }
}

fn render_item(item: &SentItem) -> Option<String> {
    let text = || {
        item.plain_text
            .clone()
            .or_else(|| item.text.clone())
            .unwrap_or_default()
    };
    let id = item.message_id.unwrap_or(0);
    match item.kind {
        SentKind::Message => Some(format!("bot [{id}]> {}", text())),
        SentKind::Edit => Some(format!("bot [{id}] (edited)> {}", text())),
        SentKind::Delete => Some(format!("bot [{id}] (deleted)")),
        SentKind::CallbackAnswer => item
            .text
            .as_deref()
            .filter(|text| !text.is_empty())
            .map(|text| format!("bot (pop-up)> {text}")),
        SentKind::Document | SentKind::Photo => {
            let (name, size) = item.document.as_ref().map_or((String::new(), 0), |d| {
                (d.file_name.clone().unwrap_or_default(), d.size)
            });
            let icon = if item.kind == SentKind::Photo {
                "🖼"
            } else {
                "📎"
            };
            let caption = text();
            let caption = if caption.is_empty() {
                String::new()
            } else {
                format!(": {caption}")
            };
            Some(format!(
                "bot [{id}] {icon} {name} ({}){caption}",
                human_size(size)
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `examples/demo.toml` points the other commands at the demo's default
    /// folders, port and bot: it must name what the demo really uses.
    #[test]
    fn the_example_demo_config_names_the_demos_folders_port_and_bot() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo.toml");
        let (example, warnings) = Config::load(&path).expect("examples/demo.toml loads");
        assert_eq!(warnings, Vec::new());
        let demo = demo_config_in(Path::new("demo-data"), 8080, "", Vec::new());
        assert_eq!(example.data_dir, demo.data_dir);
        assert_eq!(example.backup_dir, demo.backup_dir);
        assert_eq!(example.log_dir, demo.log_dir);
        assert_eq!(example.http.bind, demo.http.bind);
        assert_eq!(example.http.admin_token_env, demo.http.admin_token_env);
        let (ours, theirs) = (&example.bots, &demo.bots);
        assert_eq!(ours.len(), 1);
        assert_eq!(ours[0].id, theirs[0].id);
        assert_eq!(ours[0].allowed_users, theirs[0].allowed_users);
        assert_eq!(ours[0].admins, theirs[0].admins);
        assert_eq!(ours[0].token_env, theirs[0].token_env);
    }

    fn sent(kind: SentKind, message_id: i32, markup: Option<serde_json::Value>) -> SentItem {
        SentItem {
            seq: 0,
            kind,
            chat_id: Some(DEMO_USER),
            message_id: Some(message_id),
            text: None,
            plain_text: None,
            parse_mode: None,
            reply_to_message_id: None,
            reply_markup: markup,
            document: None,
            action: None,
            commands: None,
            callback_query_id: None,
            at: Duration::ZERO,
            unix_time: 0,
        }
    }

    #[test]
    fn buttons_are_numbered_pressed_by_number_and_gone_once_edited_away() {
        let keyboard = serde_json::json!({"inline_keyboard": [
            [{"text": "✅ Allow", "callback_data": "a:1"}, {"text": "❌ Deny", "callback_data": "d:1"}],
            [{"text": "Later", "callback_data": "l:1"}],
        ]});
        let mut printer = Printer::default();
        assert_eq!(printer.button_for("1"), None, "no buttons yet: a prompt");
        let shown = printer.track_buttons(&sent(SentKind::Message, 7, Some(keyboard)));
        assert_eq!(
            shown.as_deref(),
            Some("    [1] ✅ Allow  [2] ❌ Deny  [3] Later   (type the number to press)")
        );
        assert!(printer.has_buttons());
        assert_eq!(printer.button_for("2"), Some((7, "d:1")));
        assert_eq!(printer.button_for(" 3 "), Some((7, "l:1")));
        for not_a_button in ["0", "4", "-1", "one", "1 please"] {
            assert_eq!(printer.button_for(not_a_button), None, "{not_a_button}");
        }
        // Another message without buttons leaves them; the edit of theirs that
        // drops them takes them away.
        assert_eq!(
            printer.track_buttons(&sent(SentKind::Message, 8, None)),
            None
        );
        assert!(printer.has_buttons());
        assert_eq!(printer.track_buttons(&sent(SentKind::Edit, 8, None)), None);
        assert!(printer.has_buttons());
        assert_eq!(printer.track_buttons(&sent(SentKind::Edit, 7, None)), None);
        assert!(!printer.has_buttons());
        assert_eq!(printer.button_for("1"), None);
    }

    #[test]
    fn the_prompt_is_shown_after_input_or_output_never_on_a_quiet_tick() {
        let mut prompt = Prompt::default();
        assert!(prompt.take(), "shown at the start");
        for _ in 0..10 {
            prompt.after_output(0);
            assert!(!prompt.take(), "shown again on a quiet tick");
        }
        assert!(prompt.on_screen, "the prompt is on its line");
        prompt.after_output(2);
        assert!(!prompt.on_screen, "the bot's lines replaced it");
        assert!(prompt.take(), "shown after the bot's lines");
        assert!(!prompt.take());
        prompt.after_line();
        assert!(prompt.take(), "shown after the user's line");
    }
}
