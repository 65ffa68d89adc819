//! The real Claude Code CLI, pinned, for tests that check agentlab against it.
//!
//! `.ci/run` installs the pinned version with npm into `.tools/claude-code/` at the
//! top of the repository (`npm install --prefix .tools/claude-code
//! @anthropic-ai/claude-code@VERSION`); `AGENTLAB_CLAUDE_BIN` names another binary.
//! In CI (`CI` set) a missing CLI is a failure; elsewhere the tests that need it
//! are ignored, with how to install it as the reason (`build.rs` sets
//! `missing_tool = "claude"`), so cargo's summary counts them as not run.
//!
//! The CLI runs with a cleared environment: a private `HOME`, the stand-in model as
//! `ANTHROPIC_BASE_URL`, telemetry and non-essential traffic off, API retries off (a
//! scripted error must surface at once instead of after minutes of backoff).
//! [`service_options`] configures a harness service whose bots run it so.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::model::ModelSim;
use crate::service::Options;

/// The Claude Code version the tests pin.
pub const CLAUDE_CODE_VERSION: &str = "2.1.328";

/// The environment variable that names a Claude Code binary to use instead.
pub const CLAUDE_BIN_ENV: &str = "AGENTLAB_CLAUDE_BIN";

/// The repository's top folder.
pub fn repository_root() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| crate_dir.to_path_buf())
}

/// Where `.ci/run` installs the pinned CLI's native binary.
pub fn pinned_install_path() -> PathBuf {
    repository_root()
        .join(".tools/claude-code/node_modules/@anthropic-ai/claude-code-linux-x64/claude")
}

/// The command that installs the pinned CLI where the tests look for it.
pub fn install_hint() -> String {
    format!(
        "npm install --prefix {} @anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}",
        repository_root().join(".tools/claude-code").display()
    )
}

/// The CLI binary, if installed.
pub fn find_claude() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(CLAUDE_BIN_ENV) {
        return Some(PathBuf::from(path));
    }
    let pinned = pinned_install_path();
    pinned.is_file().then_some(pinned)
}

/// The CLI binary for a test that needs it: `None` (after one line saying how to
/// install it) when it is missing on a developer's machine.
///
/// # Panics
///
/// When it is missing in CI (`CI` set): there, nothing may skip.
pub fn require_claude(test: &str) -> Option<PathBuf> {
    if let Some(path) = find_claude() {
        return Some(path);
    }
    let how = install_hint();
    if std::env::var_os("CI").is_some() {
        panic!("{test}: the Claude Code CLI is not installed; CI must install it: {how}");
    }
    eprintln!("skipped {test}: the Claude Code CLI is not installed ({how})");
    None
}

/// The environment the CLI runs with: nothing of the caller's but `PATH`.
pub fn claude_env(home: &Path, model_base_url: &str) -> Vec<(String, OsString)> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    vec![
        ("PATH".into(), path),
        ("HOME".into(), home.as_os_str().to_owned()),
        ("ANTHROPIC_BASE_URL".into(), model_base_url.into()),
        ("ANTHROPIC_API_KEY".into(), "sk-test-not-a-real-key".into()),
        ("DISABLE_TELEMETRY".into(), "1".into()),
        (
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into(),
            "1".into(),
        ),
        ("CLAUDE_CODE_MAX_RETRIES".into(), "0".into()),
    ]
}

/// The options of a service whose bots run the real CLI `binary` against `model`,
/// with `agent` (TOML lines) added to `[bots.agent]`; the rest is
/// [`Options::default`], for struct update syntax
/// (`Options { limits_toml: .., ..service_options(..) }`).
///
/// The service passes its environment on to its agents: it gets [`claude_env`]
/// less `PATH` (it keeps the test's), with a private `HOME` the options hold, so
/// that it is removed with the service.
pub fn service_options(binary: &Path, model: &ModelSim, agent: &str) -> Options {
    let home = Arc::new(tempfile::tempdir().expect("a HOME for the CLI"));
    let env = claude_env(home.path(), &model.base_url())
        .into_iter()
        .filter(|(name, _)| name != "PATH")
        .map(|(name, value)| (name, value.to_string_lossy().into_owned()))
        .collect();
    Options {
        agent_toml: Some(format!(
            "command = [{:?}]\n{agent}",
            binary.display().to_string()
        )),
        extra_env: env,
        held_dirs: vec![home],
        ..Options::default()
    }
}
