//! Test doubles for agentlab's tests and benchmarks.
//!
//! - [`service`]: the harness that starts the real `agentlab run` on a temporary
//!   directory and port 0 against the Telegram Bot API simulator, shared by the
//!   integration tests and the benches.
//! - [`model`]: a scripted stand-in for the Anthropic Messages API, so the real
//!   Claude Code CLI can run here against a local, instant, deterministic model.
//! - [`claude`]: finds the pinned Claude Code CLI and builds the environment it
//!   needs to talk to the stand-in and nothing else.
//!
//! Nothing here is part of the product: the crate is a dev-dependency only.

#![warn(missing_docs)]

pub mod claude;
pub mod model;
pub mod service;
