//! The subcommands that carry logic of their own, one file each.

pub mod approvals;
pub mod backup;
pub mod check_config;
pub mod demo;
pub mod dump;
pub mod logs;
pub mod migrate;
pub mod offsite;
pub mod remote;
pub mod watchdog;
