//! Tells the Claude Code contract tests whether the pinned CLI is installed, so
//! that without it they are `ignored` in cargo's summary (with the install
//! command as the reason) instead of passing without having checked anything.
//!
//! The same mechanism as the product crate's `build.rs`: when the CLI is missing
//! (and `CI` is not set) this sets the cfg `missing_tool = "claude"`; in CI
//! nothing may skip, so no cfg is set and `require_claude` fails the test.

use std::path::PathBuf;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=AGENTLAB_CLAUDE_BIN");
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rustc-check-cfg=cfg(missing_tool, values(\"claude\"))");
    // Where `.ci/run` installs the CLI (`src/claude.rs`, `pinned_install_path`).
    let pinned = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../.tools/claude-code/node_modules/@anthropic-ai/claude-code-linux-x64/claude");
    // Watched whether or not it exists, so an install is noticed by the next build.
    println!("cargo::rerun-if-changed={}", pinned.display());
    let installed = std::env::var_os("AGENTLAB_CLAUDE_BIN").is_some() || pinned.is_file();
    let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
    if !installed && !in_ci {
        println!("cargo::rustc-cfg=missing_tool=\"claude\"");
    }
}
