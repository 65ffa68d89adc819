//! agentlab: drive an AI coding agent from Telegram, durably, 24/7.
//!
//! # Layout
//!
//! Read it top to bottom; each layer only calls the ones below it, and nothing
//! imports [`service`]. The whole map, with one prompt's way through it, is in
//! `docs/ARCHITECTURE.md`.
//!
//! - [`cli`]: the command line — what was typed, parsed into plain data, and one
//!   file per subcommand.
//! - [`service`]: `agentlab run`, the composition root: builds every part below
//!   around one [`storage::Store`], runs the start-up barrier and the shutdown.
//! - [`bot`]: the Telegram side — polling, the message handler, answer delivery.
//! - [`http`]: the HTTP API — the second way in, and health, status, metrics.
//! - [`monitor`]: samples, judgements and alerts, as data the HTTP layer formats.
//! - [`backup`]: snapshots, verification, rotation, restore, offsite copies, the
//!   disk-space guard.
//! - [`intake`]: the one way in for prompts, shared by the bot and `POST /api/tasks`:
//!   validate, admit (rate, [`budget`], disk), store durably, wake the pool.
//! - [`shutdown`] (the stop signal and the restart exit code) and [`status`]
//!   (readiness, start time, Telegram links, notices): handles below every part;
//!   [`systemd`] speaks the service manager's notify protocol.
//! - [`worker`]: the pool that claims tasks from the store and runs agent
//!   subprocesses, and the recovery of runs a previous process left behind; the tool
//!   approvals its agents ask for go to [`approvals`], which stores them and answers
//!   the agents through the link the worker gives it.
//! - [`breaker`]: circuit breakers per (bot, dependency), persisted.
//! - [`storage`]: the floor — every piece of state, in one redb file, behind typed
//!   operations. It names nothing above it but the clock.
//! - Below or beside every layer: [`config`] (the TOML configuration, parsed and
//!   validated), [`clock`] (the one clock), [`metrics`] (in-memory call latencies),
//!   [`telemetry`] (logging), [`legacy`] (import of the old bot's JSON files).
//!
//! Beside the product, in the workspace: `crates/telegram-sim`, the Telegram Bot API
//! simulator that `agentlab demo` and the tests run the bots against, and
//! `crates/testkit`, test doubles (a scripted Anthropic Messages API).

#![warn(missing_docs)]

pub mod approvals;
pub mod backup;
pub(crate) mod bot;
pub mod breaker;
pub(crate) mod budget;
pub mod cli;
pub mod clock;
pub mod config;
pub(crate) mod http;
pub mod intake;
pub mod legacy;
pub mod metrics;
pub mod monitor;
pub mod service;
pub mod shutdown;
pub mod status;
pub mod storage;
pub(crate) mod systemd;
pub(crate) mod telemetry;
pub mod worker;
