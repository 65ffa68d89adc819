//! `agentlab demo`.

use crate::cli::DemoArgs;

/// Runs the demo.
pub async fn run(_args: DemoArgs) -> anyhow::Result<i32> {
    anyhow::bail!("the demo is not available yet")
}
