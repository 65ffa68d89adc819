//! `agentlab run`: one process hosting every bot, the worker pool, the monitors,
//! the backup scheduler and the HTTP server, around one store.
//!
//! This is the composition root: [`run`] (in `startup`) opens the store, builds
//! each part from the handles it needs and wires them together; nothing else in
//! the library imports it (the CLI that starts it is above). The handles, each
//! created once here:
//! - [`crate::storage::Store`], the one store every part reads and writes;
//! - [`crate::shutdown::Shutdown`], the stop signal every loop listens to;
//! - [`crate::worker::Pool`], built with the sending end of its event channel,
//!   whose receiving end goes to the bots (answers to deliver, retries to show);
//! - [`crate::intake::Intake`], the one way in for prompts (the bots' handler and
//!   `POST /api/tasks`);
//! - [`crate::backup::Backups`], the schedule and on-demand snapshots;
//! - [`crate::status`]'s [`Readiness`](crate::status::Readiness),
//!   [`Started`](crate::status::Started), [`TelegramLinks`](crate::status::TelegramLinks)
//!   and [`Notices`](crate::status::Notices), what `/health` answers from;
//! - each part's context ([`crate::bot::BotContext`], [`crate::http::HttpContext`],
//!   [`crate::monitor::MonitorContext`]), holding only the handles that part uses.
//!
//! `run` is also the start-up barrier (docs/ARCHITECTURE.md) and the shutdown that
//! closes the store on every path.

mod startup;

pub use startup::{RunOptions, addr_file, run};
