//! agentlab: drive an AI coding agent from Telegram, durably, 24/7.
//!
//! # Layout
//!
//! Read it top to bottom; each layer only calls the ones below it.
//!
//! - [`cli`] parses the command line; [`app`] runs a subcommand.
//! - [`service`] is `agentlab run`: the start-up barrier and shutdown, wiring every
//!   part below to one [`storage::Store`].
//! - `bot` turns Telegram updates into tasks and answers; `http` is the second way in.
//! - `worker` claims tasks from the store and runs agent subprocesses; the tool
//!   approvals its agents ask for go to [`approvals`], which stores them and answers
//!   the agents through the link the worker gives it.
//! - `breaker`, `monitor`, `backup` watch and protect the service.
//! - [`storage`] is the floor: every piece of state, in one redb file, behind typed
//!   operations. It names nothing above it.
//! - [`config`] is the TOML configuration, parsed and validated.
//! - [`legacy`] imports the old bot's JSON files (`agentlab migrate --from-json`).
//!
//! Beside the product, in the workspace: `crates/telegram-sim`, the Telegram Bot API
//! simulator that `agentlab demo` and the tests run the bots against, and
//! `crates/testkit`, test doubles (a scripted Anthropic Messages API).

#![warn(missing_docs)]

pub mod app;
pub mod approvals;
pub mod backup;
pub mod bot;
pub mod breaker;
pub mod circuits;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod http;
pub mod legacy;
pub mod metrics;
pub mod monitor;
pub mod service;
pub mod storage;
pub mod telemetry;
pub mod worker;
