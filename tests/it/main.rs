//! agentlab's integration tests: one binary, one module per part.

mod agent_runner;
mod bot;
mod breaker;
mod harness;
mod legacy_import;
mod reliability;
mod worker;
