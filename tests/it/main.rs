//! The integration tests: one binary, one module per area.

mod agent_runner;
mod backup;
mod backup_schedule;
mod watchdog;
