//! The worker pool and the agent runner.
//!
//! [`Pool`] claims queued tasks from the store and runs each as an agent subprocess
//! ([`agent`]), recording pid and process start time ([`proc_identity`]) before
//! waiting, parsing the agent's answer ([`agent_result`]). [`recovery`] decides at
//! start what happens to runs the previous process left behind. [`test_agent`] is
//! the built-in agent used by the tests and the demo.

pub mod agent;
pub mod agent_result;
pub mod follow;
pub mod live;
mod pool;
pub mod proc_identity;
pub mod recovery;
pub mod stream;
pub mod test_agent;
pub mod warm;

pub use pool::{Pool, PoolEvent, PoolEvents, pool_events};
