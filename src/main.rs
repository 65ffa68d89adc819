//! The `agentlab` binary: parse the command line, hand over to the library.

#[cfg(target_os = "linux")]
use std::ffi::{c_int, c_long};
use std::process::ExitCode;

/// mimalloc: the service allocates and frees small buffers for every update,
/// store write and Bot API call, and mimalloc does so in a fraction of glibc's
/// instructions (BENCHMARKS.md, "Instructions per message").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(target_os = "linux")]
unsafe extern "C" {
    /// Sets one of mimalloc's options (`mimalloc.h`); linked through the
    /// `mimalloc` crate. (Its `mi_option_set_default` would leave a
    /// `MIMALLOC_*` variable in charge, but does nothing once mimalloc's own
    /// initializer, whose order against this one is the linker's, has run.)
    fn mi_option_set(option: c_int, value: c_long);
}

/// `mi_option_arena_eager_commit` in mimalloc 3's `mi_option_t`.
#[cfg(target_os = "linux")]
const MI_OPTION_ARENA_EAGER_COMMIT: c_int = 4;

/// Runs before `main` (an ELF initializer), before Rust's runtime allocates
/// anything, so before mimalloc reserves its first arena: committed on demand,
/// the arena is not given transparent huge pages, which would hold the idle
/// service's few MiB in 2 MiB pieces (BENCHMARKS.md, idle RSS).
#[cfg(target_os = "linux")]
extern "C" fn configure_allocator() {
    // SAFETY: a plain write to mimalloc's option table, valid at any time.
    unsafe { mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
}

#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static CONFIGURE_ALLOCATOR: extern "C" fn() = configure_allocator;

fn main() -> ExitCode {
    let cli = agentlab::cli::Cli::parse_args();
    agentlab::cli::main(cli)
}
