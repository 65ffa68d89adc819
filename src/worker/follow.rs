//! Following an agent's stdout file while the agent writes it: new bytes are read
//! from where the last read stopped and turned into [`Event`]s as they arrive.
//!
//! The agent writes to a file, not a pipe (so it does not depend on this process).
//! An inotify watch on the file wakes the follower when the agent writes: a quiet
//! agent costs no wake-ups but a [`WATCHED_CHECK`] safety look, and new output is
//! read as soon as it is written. Where inotify is not available (no instance left,
//! the file not there yet) the file is polled instead, every [`FAST_POLL`] while it
//! keeps growing, backing off to [`SLOW_POLL`] while it is quiet.
//!
//! Invariants: memory is bounded by one read chunk plus the parser's partial line;
//! every byte is read once; a write after a read always ends the next
//! [`Follower::pause`] (the watch is in place before the read that precedes a wait
//! on it, and its events queue until taken).

use std::io::{self, Read as _, Seek as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::unix::AsyncFd;

use super::stream::{Event, StreamParser};

/// Poll interval right after the file grew.
pub const FAST_POLL: Duration = Duration::from_millis(5);
/// Longest poll interval while the file is quiet.
pub const SLOW_POLL: Duration = Duration::from_millis(50);
/// Longest wait on a watched file without an event (a safety look only).
pub const WATCHED_CHECK: Duration = Duration::from_secs(1);
/// Largest read per `read` call; a poll reads on until the file has no more.
const CHUNK: usize = 16 * 1024;
/// The first reads' size: most turns' events fit, and the buffer (zeroed
/// before its first use) grows to [`CHUNK`] only for a process that fills it.
const FIRST_CHUNK: usize = 4 * 1024;

/// Reads an agent's stdout file from an offset on, as it grows.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    file: Option<std::fs::File>,
    /// Next byte to read (the parser may hold an unfinished line before it).
    read_pos: u64,
    parser: StreamParser,
    idle: Duration,
    /// The read buffer, kept between polls.
    buf: Vec<u8>,
    /// The inotify watch on the file, once set up.
    watch: Option<Watch>,
    /// Whether a watch can be tried (false once inotify refused for good).
    try_watch: bool,
    /// Longest wait on the watch.
    check: Duration,
}

impl Follower {
    /// Follows `path` from the parser's [`StreamParser::consumed`] offset.
    pub fn new(path: &Path, parser: StreamParser) -> Self {
        Follower {
            path: path.to_path_buf(),
            file: None,
            read_pos: parser.consumed(),
            parser,
            idle: FAST_POLL,
            buf: Vec::new(),
            watch: None,
            try_watch: true,
            check: WATCHED_CHECK,
        }
    }

    /// Goes on following the same file with `parser` (the next turn of a warm
    /// process): from the parser's offset, keeping the open file, the buffer and
    /// the watch, so a turn costs no new inotify watch.
    pub fn resume(&mut self, parser: StreamParser) {
        let offset = parser.consumed();
        if offset != self.read_pos {
            // The old parser held an unfinished line, or lines after its last
            // event: reopen at the new offset.
            self.file = None;
            self.read_pos = offset;
        }
        self.parser = parser;
        self.idle = FAST_POLL;
    }

    /// The same, waiting up to `check` on the watch between safety looks.
    #[cfg(test)]
    fn with_check(mut self, check: Duration) -> Self {
        self.check = check;
        self
    }

    /// Whether an inotify watch wakes this follower (else it polls).
    pub fn is_watched(&self) -> bool {
        self.watch.is_some()
    }

    /// The parser (offset, session id, cumulative cost).
    pub fn parser(&self) -> &StreamParser {
        &self.parser
    }

    /// The events of whatever complete lines were written since the last call.
    /// A file that cannot be read (yet) yields nothing.
    pub fn read_new(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        let mut buf = std::mem::take(&mut self.buf);
        if buf.len() < FIRST_CHUNK {
            buf.resize(FIRST_CHUNK, 0);
        }
        loop {
            match self.read_chunk(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.read_pos += n as u64;
                    events.extend(self.parser.feed(&buf[..n]));
                    if n < buf.len() {
                        break;
                    }
                    if buf.len() < CHUNK {
                        buf.resize(CHUNK, 0);
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, path = %self.path.display(), "cannot read the agent's output yet");
                    self.file = None;
                    break;
                }
            }
        }
        self.buf = buf;
        events
    }

    fn read_chunk(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.file.is_none() {
            let mut file = std::fs::File::open(&self.path)?;
            file.seek(io::SeekFrom::Start(self.read_pos))?;
            self.file = Some(file);
        }
        match self.file.as_mut() {
            Some(file) => file.read(buf),
            None => Ok(0),
        }
    }

    /// Waits until the file may have grown: until the agent writes to it (or
    /// [`WATCHED_CHECK`]) when watched, else for the next poll (soon after new
    /// output, longer while quiet). Returns at once when a watch was just set up,
    /// so that output written before it is read.
    pub async fn pause(&mut self, found_something: bool) {
        if self.watch.is_none() && self.try_watch {
            match Watch::new(&self.path) {
                Ok(watch) => {
                    self.watch = Some(watch);
                    return;
                }
                Err(error) => {
                    // A missing file may appear; no inotify instance left will not.
                    self.try_watch = error.kind() == io::ErrorKind::NotFound;
                    tracing::debug!(%error, path = %self.path.display(), "polling the agent's output");
                }
            }
        }
        if let Some(watch) = &self.watch {
            match tokio::time::timeout(self.check, watch.changed()).await {
                Ok(Ok(())) | Err(_) => return,
                Ok(Err(error)) => {
                    tracing::debug!(%error, "the watch on the agent's output failed; polling");
                    self.watch = None;
                    self.try_watch = false;
                }
            }
        }
        self.idle = if found_something {
            FAST_POLL
        } else {
            (self.idle * 2).min(SLOW_POLL)
        };
        tokio::time::sleep(self.idle).await;
    }
}

/// An inotify instance watching one file for writes.
#[derive(Debug)]
struct Watch {
    fd: AsyncFd<OwnedFd>,
}

impl Watch {
    /// Watches `path` for modification (must be called within the runtime).
    fn new(path: &Path) -> io::Result<Watch> {
        use std::os::unix::ffi::OsStrExt as _;
        let name = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
        // SAFETY: no pointer arguments; the result is checked.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor just returned to us and owned by no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: a valid descriptor and a NUL-terminated path.
        let watch = unsafe {
            libc::inotify_add_watch(
                fd.as_raw_fd(),
                name.as_ptr(),
                libc::IN_MODIFY | libc::IN_CLOSE_WRITE,
            )
        };
        if watch < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: an `OwnedFd`, open, owned by the `AsyncFd` from here to its drop.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }?;
        Ok(Watch { fd })
    }

    /// Resolves once the file was written to since the last call (events that
    /// came before are taken at once).
    async fn changed(&self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut events = [0u8; 1024];
            let mut any = false;
            loop {
                // SAFETY: reading into a buffer we own, of its length.
                let n = unsafe {
                    libc::read(
                        guard.get_inner().as_raw_fd(),
                        events.as_mut_ptr().cast(),
                        events.len(),
                    )
                };
                if n > 0 {
                    any = true;
                    continue;
                }
                let error = io::Error::last_os_error();
                if n == 0 || error.kind() == io::ErrorKind::WouldBlock {
                    guard.clear_ready();
                    break;
                }
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
            if any {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn reads_what_was_written_since_the_last_call_from_the_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stdout");
        let mut file = std::fs::File::create(&path).expect("create");
        let old = "{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"old\"}]}}\n";
        file.write_all(old.as_bytes()).expect("write");
        let parser = StreamParser::resuming(1, old.len() as u64, 0.0);
        let mut follower = Follower::new(&path, parser);
        assert!(follower.read_new().is_empty());
        file.write_all(
            b"{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"ne",
        )
        .expect("write");
        assert!(follower.read_new().is_empty());
        file.write_all(b"w\"}]}}\n").expect("write");
        assert_eq!(follower.read_new(), [Event::Text("new".into())]);
        assert!(follower.read_new().is_empty());
    }

    #[tokio::test]
    async fn a_watched_file_wakes_the_follower_when_the_agent_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stdout");
        let mut file = std::fs::File::create(&path).expect("create");
        // Without the watch, only this (hour-long) safety look would end a pause.
        let mut follower =
            Follower::new(&path, StreamParser::new(1)).with_check(Duration::from_secs(3600));
        follower.pause(false).await;
        assert!(follower.is_watched(), "inotify is available here");
        // A write before the pause (after the last read) ends it at once.
        file.write_all(b"{\"type\":\"system\",\"subtype\":\"init\"}\n")
            .expect("write");
        tokio::time::timeout(Duration::from_secs(30), follower.pause(true))
            .await
            .expect("woken by the write before the pause");
        assert_eq!(follower.read_new().len(), 1);
        // A write from another thread, before or during the pause, ends it.
        let writer = std::thread::spawn(move || {
            file.write_all(b"{\"type\":\"system\",\"subtype\":\"init\"}\n")
                .expect("write");
        });
        tokio::time::timeout(Duration::from_secs(30), follower.pause(true))
            .await
            .expect("woken by the write during the pause");
        writer.join().expect("writer");
        assert_eq!(follower.read_new().len(), 1);
    }

    #[tokio::test]
    async fn a_file_that_appears_later_is_polled_then_watched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stdout");
        let mut follower = Follower::new(&path, StreamParser::new(1));
        follower.pause(false).await;
        assert!(!follower.is_watched());
        std::fs::write(&path, "{\"type\":\"system\",\"subtype\":\"init\"}\n").expect("write");
        follower.pause(false).await;
        assert!(follower.is_watched());
        assert_eq!(follower.read_new().len(), 1);
    }

    #[test]
    fn a_resumed_follower_reads_from_its_new_parsers_offset_and_lines_longer_than_a_chunk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stdout");
        let mut file = std::fs::File::create(&path).expect("create");
        let text = |t: &str| {
            format!(
                "{{\"type\":\"assistant\",\"message\":{{\"content\":[{{\"type\":\"text\",\"text\":\"{t}\"}}]}}}}\n"
            )
        };
        let first = text("first");
        file.write_all(first.as_bytes()).expect("write");
        // The first turn's parser also reads the start of a line it never ends.
        file.write_all(b"{\"type\":").expect("write");
        let mut follower = Follower::new(&path, StreamParser::new(1));
        assert_eq!(follower.read_new(), [Event::Text("first".into())]);
        // The next turn starts where the first one's last whole line ended.
        let offset = follower.parser().consumed();
        assert_eq!(offset, first.len() as u64);
        follower.resume(StreamParser::resuming(2, offset, 0.0));
        let long = "x".repeat(3 * CHUNK);
        file.write_all(b"\"system\",\"subtype\":\"init\"}\n")
            .expect("write");
        file.write_all(text(&long).as_bytes()).expect("write");
        let events = follower.read_new();
        assert_eq!(events.len(), 2, "{:?}", events.first());
        assert_eq!(events[1], Event::Text(long));
    }

    #[test]
    fn a_missing_file_yields_nothing_until_it_appears() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stdout");
        let mut follower = Follower::new(&path, StreamParser::new(1));
        assert!(follower.read_new().is_empty());
        std::fs::write(&path, "{\"type\":\"system\",\"subtype\":\"init\"}\n").expect("write");
        assert_eq!(follower.read_new().len(), 1);
    }
}
