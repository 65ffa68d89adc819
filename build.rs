//! Finds the optional programs some integration tests drive (and whether the
//! build runs as root, which the tests that mount a tmpfs need) and tells the
//! tests what is missing, so that a test that cannot run says so in cargo's
//! summary (`ignored`) instead of passing without having checked anything.
//!
//! For each tool in [`TOOLS`] not found on `PATH` (for `root`: not running as
//! root; for `claude`: the pinned Claude Code CLI not installed), this sets the cfg
//! `missing_tool = "NAME"`; a test that needs it carries
//! `#[cfg_attr(missing_tool = "NAME", ignore = "NAME not installed: HOW")]` and
//! calls `harness::require_tool("NAME")` first (see the README's Tests section).
//! With `CI` set no cfg is set: in CI nothing may skip, so a missing tool makes
//! its tests fail, naming the tool.
//!
//! The script runs again when `PATH` or `CI` change, when a found tool's file
//! changes, and, while a tool is missing, when a `PATH` folder changes (something
//! was installed there), so installing a tool is seen by the next `cargo test`.

use std::path::{Path, PathBuf};

/// The optional tools and how to get them (shown by `cargo build` in CI).
const TOOLS: &[(&str, &str)] = &[
    ("schemathesis", "pip install schemathesis"),
    ("chromium", "apt-get install chromium"),
    ("moto_server", "pip install 'moto[server]'"),
    ("python3", "apt-get install python3"),
    ("root", "run the tests as root, to mount a tmpfs"),
    (
        "claude",
        "npm install --prefix .tools/claude-code @anthropic-ai/claude-code (the version .ci/run pins)",
    ),
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-env-changed=CI");
    let names: Vec<String> = TOOLS.iter().map(|(name, _)| format!("{name:?}")).collect();
    println!(
        "cargo::rustc-check-cfg=cfg(missing_tool, values({}))",
        names.join(", ")
    );
    let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
    let dirs = path_dirs();
    let mut watch_dirs = false;
    for (name, install) in TOOLS {
        let found = match *name {
            "root" => is_root(),
            "claude" => claude_installed(),
            program => match find(program, &dirs) {
                Some(path) => {
                    println!("cargo::rerun-if-changed={}", path.display());
                    true
                }
                None => {
                    watch_dirs = true;
                    false
                }
            },
        };
        if found {
            continue;
        }
        if in_ci {
            println!("cargo::warning={name} is missing ({install}): its tests will fail");
        } else {
            println!("cargo::rustc-cfg=missing_tool={name:?}");
        }
    }
    if watch_dirs {
        for dir in &dirs {
            println!("cargo::rerun-if-changed={}", dir.display());
        }
    }
}

/// Whether the pinned Claude Code CLI is where the tests look for it
/// (`crates/testkit/src/claude.rs`): `.tools/claude-code/`, or `AGENTLAB_CLAUDE_BIN`.
fn claude_installed() -> bool {
    println!("cargo::rerun-if-env-changed=AGENTLAB_CLAUDE_BIN");
    let pinned = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".tools/claude-code/node_modules/@anthropic-ai/claude-code-linux-x64/claude");
    // Watched whether or not it exists, so an install is noticed by the next build.
    println!("cargo::rerun-if-changed={}", pinned.display());
    std::env::var_os("AGENTLAB_CLAUDE_BIN").is_some() || pinned.is_file()
}

/// Whether the effective user is root (Linux; elsewhere the tests that mount a
/// tmpfs cannot run anyway).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// The absolute, existing folders of `PATH`.
fn path_dirs() -> Vec<PathBuf> {
    let Some(path) = std::env::var_os("PATH") else {
        return Vec::new();
    };
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute() && dir.is_dir())
        .collect()
}

/// The first executable file called `name` in `dirs`.
fn find(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.iter()
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
