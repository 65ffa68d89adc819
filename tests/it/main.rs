//! agentlab's integration tests: one binary, one module per part.

mod agent_runner;
mod agent_stream;
mod approvals;
mod backup;
mod backup_remote;
mod backup_schedule;
mod bot;
mod breaker;
mod claude_code;
mod cli_remote;
mod clock;
mod dashboard;
mod demo;
mod files;
mod harness;
mod http_api;
mod legacy_import;
mod logs;
mod monitor;
mod newcomer;
mod operator_http;
mod reliability;
mod telegram_faults;
mod test_agent_approvals;
mod watchdog;
mod worker;
