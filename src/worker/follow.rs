//! Following an agent's stdout file while the agent writes it: new bytes are read
//! from where the last read stopped and turned into [`Event`]s as they arrive.
//!
//! The agent writes to a file, not a pipe (so it does not depend on this process),
//! which means there is nothing to wake us when it writes: the file is polled, every
//! [`FAST_POLL`] while it keeps growing, backing off to [`SLOW_POLL`] while it is
//! quiet. A poll that finds nothing new is one `read` call.
//!
//! Invariant: memory is bounded by one read chunk plus the parser's partial line;
//! every byte is read once.

use std::io::{self, Read as _, Seek as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::stream::{Event, StreamParser};

/// Poll interval right after the file grew.
pub const FAST_POLL: Duration = Duration::from_millis(5);
/// Longest poll interval while the file is quiet.
pub const SLOW_POLL: Duration = Duration::from_millis(50);
/// Largest read per poll.
const CHUNK: usize = 256 * 1024;

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
        }
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
        buf.resize(CHUNK, 0);
        loop {
            match self.read_chunk(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.read_pos += n as u64;
                    events.extend(self.parser.feed(&buf[..n]));
                    if n < buf.len() {
                        break;
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

    /// Waits for the next poll: soon after new output, longer while quiet.
    pub async fn pause(&mut self, found_something: bool) {
        self.idle = if found_something {
            FAST_POLL
        } else {
            (self.idle * 2).min(SLOW_POLL)
        };
        tokio::time::sleep(self.idle).await;
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
