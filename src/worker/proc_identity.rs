//! Process identity: a pid plus the process's start time.
//!
//! A pid alone does not name a process for long: once it exits, the kernel may hand
//! the same number to an unrelated process. agentlab records `(pid, start_time)` for
//! every agent it starts and only ever treats a live process as "ours" when *both*
//! still match. Every signal agentlab sends to a process it did not just spawn goes
//! through that check first.
//!
//! Invariants:
//! - `start_time` is an opaque, platform-specific token, compared only for equality
//!   and only on the machine that recorded it (Linux: clock ticks since boot, field 22
//!   of `/proc/<pid>/stat`; macOS: microseconds since the epoch from `proc_pidinfo`).
//! - [`UNKNOWN_START_TIME`] (0) means "could not be read"; an identity holding it is
//!   never alive, so a process whose start time is unknown is never adopted or signalled.
//! - A zombie (exited, not yet reaped) is not alive.
//! - On platforms other than Linux and macOS start times cannot be read: every
//!   identity reads as dead, so recovery falls back to the run's output files.

use serde::{Deserialize, Serialize};

/// Start time recorded when the real one could not be read; it never matches.
pub const UNKNOWN_START_TIME: u64 = 0;

/// A process as agentlab recorded it: pid plus start time (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcIdentity {
    /// Process id.
    pub pid: u32,
    /// Platform-specific start time token; [`UNKNOWN_START_TIME`] if unknown.
    pub start_time: u64,
}

/// What the platform tells about a pid right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStatus {
    /// Start time token of the process that currently holds the pid.
    pub(crate) start_time: u64,
    /// The process has exited and waits to be reaped.
    pub(crate) zombie: bool,
}

/// Reads the identity of the process that holds `pid` now, zombies included.
///
/// Returns `None` if no such process exists or the platform cannot tell.
pub fn read_identity(pid: u32) -> Option<ProcIdentity> {
    let status = platform::read_status(pid)?;
    Some(ProcIdentity {
        pid,
        start_time: status.start_time,
    })
}

/// True if `identity` names a process that exists, has not exited (zombies do not
/// count) and has the recorded start time, i.e. the pid was not reused.
pub fn is_alive(identity: &ProcIdentity) -> bool {
    if identity.start_time == UNKNOWN_START_TIME {
        return false;
    }
    matches!(
        platform::read_status(identity.pid),
        Some(status) if !status.zombie && status.start_time == identity.start_time
    )
}

/// Current status of `pid`, zombies included; `None` if no process holds it.
pub(crate) fn read_status(pid: u32) -> Option<ProcStatus> {
    platform::read_status(pid)
}

/// Parses the content of `/proc/<pid>/stat`.
///
/// The second field (`comm`) is the executable name in parentheses and may itself
/// contain spaces, parentheses and bytes that are not UTF-8, so the fixed fields
/// are those after the *last* `')'`: state is field 3 and starttime field 22
/// (1-based, see proc(5)). Only those fields need to be text.
#[cfg(any(target_os = "linux", test))]
pub(crate) fn parse_proc_stat(stat: &[u8]) -> Option<ProcStatus> {
    let after_paren = stat.iter().rposition(|&b| b == b')')? + 1;
    let after_comm = std::str::from_utf8(&stat[after_paren..]).ok()?;
    let mut fields = after_comm.split_ascii_whitespace();
    let state = fields.next()?;
    // `fields` now starts at field 4; starttime is field 22.
    let start_time = fields.nth(22 - 4)?.parse::<u64>().ok()?;
    Some(ProcStatus {
        start_time,
        // 'Z' zombie; 'X' (or 'x' on old kernels) dead, only seen in a race with reaping.
        zombie: matches!(state, "Z" | "X" | "x"),
    })
}

#[cfg(target_os = "linux")]
mod platform {
    use super::{ProcStatus, parse_proc_stat};

    /// Room for a stat line: 52 numbers and a `comm` of at most 64 bytes.
    const STAT_BUFFER_BYTES: usize = 2048;

    pub(super) fn read_status(pid: u32) -> Option<ProcStatus> {
        if pid == 0 {
            return None;
        }
        use std::io::Read as _;
        // One open, one read, one close: a stat line is a few hundred bytes and
        // the kernel hands it over whole, so no size query or second read is
        // needed. A line that fills the buffer is not one we can trust.
        let mut file = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
        let mut stat = [0u8; STAT_BUFFER_BYTES];
        let mut len = 0;
        while len < stat.len() && stat[..len].last() != Some(&b'\n') {
            match file.read(&mut stat[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        if len == stat.len() {
            return None;
        }
        parse_proc_stat(&stat[..len])
    }
}

#[cfg(target_os = "macos")]
mod platform {
    use super::ProcStatus;

    pub(super) fn read_status(pid: u32) -> Option<ProcStatus> {
        let pid = libc::c_int::try_from(pid).ok().filter(|p| *p > 0)?;
        // SAFETY: proc_bsdinfo is plain old data, so all-zero bytes are a valid value.
        let mut info: libc::proc_bsdinfo = unsafe { std::mem::zeroed() };
        let size = libc::c_int::try_from(std::mem::size_of::<libc::proc_bsdinfo>()).ok()?;
        // SAFETY: the buffer is a live, writable proc_bsdinfo and `size` is its size.
        let written = unsafe {
            libc::proc_pidinfo(
                pid,
                libc::PROC_PIDTBSDINFO,
                0,
                (&raw mut info).cast::<libc::c_void>(),
                size,
            )
        };
        if written != size {
            return None;
        }
        let start_time = info
            .pbi_start_tvsec
            .checked_mul(1_000_000)?
            .checked_add(info.pbi_start_tvusec)?;
        Some(ProcStatus {
            start_time,
            zombie: info.pbi_status == libc::SZOMB,
        })
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
mod platform {
    use super::ProcStatus;

    /// Unsupported platform: no process can be identified (see the module docs).
    pub(super) fn read_status(_pid: u32) -> Option<ProcStatus> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stat line shaped like the kernel's, with `comm` and starttime substituted.
    fn stat_line(comm: &str, state: char, start_time: u64) -> Vec<u8> {
        stat_bytes(comm.as_bytes(), state, start_time)
    }

    fn stat_bytes(comm: &[u8], state: char, start_time: u64) -> Vec<u8> {
        let mut line = b"4242 (".to_vec();
        line.extend_from_slice(comm);
        line.extend(format!(
            ") {state} 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
             {start_time} 10000000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
        ).bytes());
        line
    }

    #[test]
    fn start_time_is_field_22() {
        let status = parse_proc_stat(&stat_line("sleep", 'S', 987_654)).expect("parses");
        assert_eq!(status.start_time, 987_654);
        assert!(!status.zombie);
    }

    #[test]
    fn comm_with_spaces_and_parentheses_is_skipped_whole() {
        let status = parse_proc_stat(&stat_line("a) (b c) Z 9 (", 'R', 31_337)).expect("parses");
        assert_eq!(status.start_time, 31_337);
        assert!(!status.zombie, "the Z inside comm is not the state");
    }

    #[test]
    fn zombie_state_is_recognised() {
        let status = parse_proc_stat(&stat_line("agent", 'Z', 5)).expect("parses");
        assert!(status.zombie);
    }

    #[test]
    fn comm_that_is_not_utf8_does_not_hide_the_fields() {
        let status = parse_proc_stat(&stat_bytes(b"ag\xffent\xfe)x", 'S', 77)).expect("parses");
        assert_eq!(status.start_time, 77);
    }

    #[test]
    fn truncated_or_garbled_stat_is_rejected() {
        assert_eq!(parse_proc_stat(b""), None);
        assert_eq!(parse_proc_stat(b"12 (no closing paren S 1 2 3"), None);
        assert_eq!(parse_proc_stat(b"12 (x) S 1 2 3"), None);
        let bad_start = String::from_utf8(stat_line("x", 'S', 1))
            .expect("ascii")
            .replace(" 1 10000000 ", " 1x 10000000 ");
        assert_eq!(parse_proc_stat(bad_start.as_bytes()), None);
        let bad_fields = stat_bytes(b"x", 'S', 1)
            .into_iter()
            .map(|b| if b == b'7' { 0xff } else { b })
            .collect::<Vec<u8>>();
        assert_eq!(
            parse_proc_stat(&bad_fields),
            None,
            "fields after comm must be text"
        );
    }

    /// A process whose executable name is not UTF-8 (its `comm`) still has an
    /// identity, so it can be adopted after a restart like any other.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_process_whose_name_is_not_utf8_is_still_read() {
        use std::os::unix::ffi::OsStrExt as _;
        let dir = tempfile::tempdir().expect("temp dir");
        let name = std::ffi::OsStr::from_bytes(b"agent\xff\xfe)x");
        let link = dir.path().join(name);
        std::os::unix::fs::symlink("/bin/sleep", &link).expect("symlink to sleep");
        let mut child = std::process::Command::new(&link)
            .arg("30")
            .spawn()
            .expect("spawn through the symlink");
        let identity = read_identity(child.id());
        let _ = child.kill();
        let _ = child.wait();
        let identity = identity.expect("identity read");
        assert_ne!(identity.start_time, UNKNOWN_START_TIME);
    }

    #[test]
    fn own_process_is_alive_with_its_start_time_only() {
        let me = read_identity(std::process::id()).expect("own identity readable");
        assert!(is_alive(&me));
        let other = ProcIdentity {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(
            !is_alive(&other),
            "a different start time is another process"
        );
        let unknown = ProcIdentity {
            start_time: UNKNOWN_START_TIME,
            ..me
        };
        assert!(!is_alive(&unknown), "an unknown start time never matches");
    }
}
