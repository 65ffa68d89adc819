//! The task journal: a redo log that makes a task operation (a submission, a
//! claim, a finish, a delivery step) durable with one small fsync, so a prompt's
//! way through the service is not held to redb's cost per durable commit.
//!
//! A durable redb commit rewrites every B-tree page an operation touches (the task,
//! its queue entry, its indexes) and fsyncs them: ~0.3 ms and ~20 page writes
//! here. Appending the operation to this file and fsyncing it costs one page
//! (~0.15 ms). So a batch made only of task operations is applied to redb in a
//! *non-durable* commit (visible to every reader at once, not yet on disk) and made
//! durable by appending it here first.
//! Any later durable redb commit — the next claim, or a checkpoint the writer makes
//! after a second idle, every five seconds at most, or when this file grows — makes the batch
//! durable inside redb too, and the journal starts over from offset 0.
//!
//! Records: `len u32 | crc32 u32 | seq u64 | epoch u64 | payload`, little-endian,
//! the CRC over the rest. Sequence numbers only grow (the last one applied is kept
//! in the `meta` table, written in the same transaction that applies the records);
//! the epoch is new each time writing starts over from offset 0. So at open the
//! valid records are the run at offset 0 with one epoch and sequence numbers that
//! follow one another: a record left behind from an earlier epoch ends the run, as
//! does a torn write (bad CRC). Those with a number above the last applied one are
//! replayed.
//!
//! Invariants:
//! - a record is answered only after `fdatasync` of the file returned;
//! - a record whose batch failed is erased before its callers hear of the failure,
//!   so it is never replayed behind their back;
//! - a clean close leaves the file empty, so a restored snapshot never receives
//!   records from the database it replaced. After a crash the file keeps its
//!   records, and they are replayed into whatever database opens next (even a
//!   restored snapshot): an acknowledged prompt is never dropped. (Operations on
//!   tasks the snapshot does not hold fail to redo and are kept aside with the
//!   journal copy, see `replay_journal`.)

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};

const HEADER: usize = 24;
/// The file is zero-filled to this size once: overwriting written blocks lets
/// `fdatasync` skip the file-size update an append would need (measured here:
/// ~0.15 ms instead of ~0.2 ms per sync).
const PREALLOCATE: u64 = 5 * 1024 * 1024;
/// Largest payload written or read back (a prompt is at most 256 KiB; larger
/// jobs take a durable commit instead).
pub(crate) const MAX_PAYLOAD: usize = 4 * 1024 * 1024;

/// One record read back from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JournalRecord {
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// The open journal file and where the next record goes.
pub(crate) struct Journal {
    file: Arc<File>,
    path: PathBuf,
    /// Write offset of the next record.
    end: u64,
    /// Written into every record since writing last started over at offset 0.
    epoch: u64,
    /// Writes and syncs appends on a thread of its own, so the writer applies a
    /// batch to redb while its records reach the disk.
    syncer: Syncer,
}

/// An append under way: see [`Journal::start_append`].
#[must_use = "an append is only durable once finish_append returned Ok"]
pub(crate) struct Appending {
    len: u64,
}

impl Journal {
    /// The journal that belongs to the database at `db_path`.
    pub(crate) fn path_for(db_path: &Path) -> PathBuf {
        let mut name = db_path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "agentlab.redb".into());
        name.push(".journal");
        db_path.with_file_name(name)
    }

    /// Opens (creating) the journal and reads back the run of valid records at its
    /// start. Writing starts at offset 0 once those are applied ([`Self::restart`]).
    pub(crate) fn open(path: &Path) -> io::Result<(Journal, Vec<JournalRecord>)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len();
        let records = read_records(&file, len)?;
        if len < PREALLOCATE {
            if let Err(e) = preallocate(&file, len) {
                // Appends still work (a little slower): not a reason to stop.
                tracing::warn!(journal = %path.display(), error = %e, "cannot preallocate the journal");
            }
            if len == 0
                && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            {
                // The new file's name must survive a crash like its records.
                File::open(dir)?.sync_all()?;
            }
        }
        let file = Arc::new(file);
        let journal = Journal {
            syncer: Syncer::start(file.clone())?,
            file,
            path: path.to_path_buf(),
            end: 0,
            epoch: new_epoch(0),
        };
        Ok((journal, records))
    }

    /// The file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written since the last [`Self::restart`].
    pub(crate) fn written(&self) -> u64 {
        self.end
    }

    /// Appends records numbered `first_seq..` and fsyncs them.
    #[cfg(test)]
    pub(crate) fn append(&mut self, first_seq: u64, payloads: &[&[u8]]) -> io::Result<()> {
        self.append_encoded(&self.encode(first_seq, payloads))
    }

    /// Appends records encoded by [`Self::encode`] and fsyncs them, on this
    /// thread. On failure the written range is erased (best effort) and nothing
    /// counts as appended.
    pub(crate) fn append_encoded(&mut self, buf: &[u8]) -> io::Result<()> {
        let written = self
            .file
            .write_all_at(buf, self.end)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.end += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.erase(self.end, buf.len());
                Err(e)
            }
        }
    }

    /// Starts writing and syncing records (from [`Self::encode`]) on the syncer
    /// thread; [`Self::finish_append`] waits for them. Nothing else may be
    /// appended in between.
    pub(crate) fn start_append(&mut self, buf: Vec<u8>) -> Appending {
        let len = buf.len() as u64;
        self.syncer.send(buf, self.end);
        Appending { len }
    }

    /// Waits until the append is on disk. On failure the written range is erased
    /// (best effort) and nothing counts as appended.
    pub(crate) fn finish_append(&mut self, appending: Appending) -> io::Result<()> {
        match self.syncer.result() {
            Ok(()) => {
                self.end += appending.len;
                Ok(())
            }
            Err(e) => {
                self.erase(self.end, usize::try_from(appending.len).unwrap_or(0));
                Err(e)
            }
        }
    }

    /// Erases the last `len` bytes appended (their batch failed after all).
    pub(crate) fn unappend(&mut self, len: u64) {
        let start = self.end.saturating_sub(len);
        self.erase(start, usize::try_from(len).unwrap_or(0));
        self.end = start;
    }

    /// Everything written so far is durable in the database: later records
    /// overwrite the file from its start.
    pub(crate) fn restart(&mut self) {
        self.end = 0;
        self.epoch = new_epoch(self.epoch);
    }

    /// Records numbered `first_seq..`, as they are written.
    pub(crate) fn encode(&self, first_seq: u64, payloads: &[&[u8]]) -> Vec<u8> {
        let mut buf = Vec::with_capacity(payloads.iter().map(|p| p.len() + HEADER).sum());
        for (offset, payload) in payloads.iter().enumerate() {
            encode_record(&mut buf, first_seq + offset as u64, self.epoch, payload);
        }
        buf
    }

    /// Leaves nothing to replay (clean close: every record is durable in the
    /// database): the first record's header is zeroed, which ends the run at
    /// offset 0. The file keeps its size for the next start.
    pub(crate) fn clear(&mut self) -> io::Result<()> {
        self.file.write_all_at(&[0u8; HEADER], 0)?;
        self.file.sync_data()?;
        self.end = 0;
        Ok(())
    }

    fn erase(&self, start: u64, len: usize) {
        let zeros = vec![0u8; len];
        let erased = self
            .file
            .write_all_at(&zeros, start)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = erased {
            tracing::error!(path = %self.path.display(), error = %e, "cannot erase failed journal records");
        }
    }
}

/// Zero-fills the file from `from` to [`PREALLOCATE`] and syncs it.
fn preallocate(file: &File, from: u64) -> io::Result<()> {
    let zeros = [0u8; 64 * 1024];
    let mut at = from;
    while at < PREALLOCATE {
        let n = (PREALLOCATE - at).min(zeros.len() as u64);
        file.write_all_at(&zeros[..n as usize], at)?;
        at += n;
    }
    file.sync_all()
}

/// The journal's writing thread: one request at a time, answered in order.
struct Syncer {
    requests: Option<Sender<(Vec<u8>, u64)>>,
    results: Receiver<io::Result<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    fn start(file: Arc<File>) -> io::Result<Syncer> {
        let (requests, jobs) = std::sync::mpsc::channel::<(Vec<u8>, u64)>();
        let (answers, results) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("agentlab-journal".into())
            .spawn(move || {
                for (buf, offset) in jobs {
                    let written = file
                        .write_all_at(&buf, offset)
                        .and_then(|()| file.sync_data());
                    if answers.send(written).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Syncer {
            requests: Some(requests),
            results,
            thread: Some(thread),
        })
    }

    fn send(&self, buf: Vec<u8>, offset: u64) {
        // A send only fails if the thread is gone; result() then reports it.
        if let Some(requests) = &self.requests {
            let _ = requests.send((buf, offset));
        }
    }

    fn result(&self) -> io::Result<()> {
        self.results
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("the journal thread stopped")))
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Size of a record with this payload.
#[cfg(test)]
fn record_len(payload: &[u8]) -> u64 {
    (HEADER + payload.len()) as u64
}

/// A value different from `previous` and, in practice, from every epoch this
/// file held before (the clock in nanoseconds, mixed with the process id).
fn new_epoch(previous: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let epoch = nanos ^ (u64::from(std::process::id()) << 40);
    if epoch == previous {
        epoch.wrapping_add(1)
    } else {
        epoch
    }
}

fn encode_record(buf: &mut Vec<u8>, seq: u64, epoch: u64, payload: &[u8]) {
    let mut tail = [0u8; 16];
    tail[..8].copy_from_slice(&seq.to_le_bytes());
    tail[8..].copy_from_slice(&epoch.to_le_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&tail);
    hasher.update(payload);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&hasher.finalize().to_le_bytes());
    buf.extend_from_slice(&tail);
    buf.extend_from_slice(payload);
}

/// The valid run of records at the start of the file (see the module comment),
/// read record by record: a clean journal costs one header read.
fn read_records(file: &File, len: u64) -> io::Result<Vec<JournalRecord>> {
    let mut records: Vec<JournalRecord> = Vec::new();
    let mut run_epoch = None;
    let mut at = 0u64;
    let mut header = [0u8; HEADER];
    while at + HEADER as u64 <= len {
        file.read_exact_at(&mut header, at)?;
        let word = |range: std::ops::Range<usize>| -> u64 {
            header[range]
                .iter()
                .rev()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
        };
        let payload_len = word(0..4);
        let crc = word(4..8) as u32;
        let seq = word(8..16);
        let epoch = word(16..24);
        let end = at + HEADER as u64 + payload_len;
        if payload_len == 0 || payload_len > MAX_PAYLOAD as u64 || end > len {
            break;
        }
        let mut payload = vec![0u8; payload_len as usize];
        file.read_exact_at(&mut payload, at + HEADER as u64)?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header[8..HEADER]);
        hasher.update(&payload);
        if hasher.finalize() != crc {
            break;
        }
        let follows = records.last().is_none_or(|prev| prev.seq + 1 == seq);
        if !follows || run_epoch.is_some_and(|e| e != epoch) {
            break;
        }
        run_epoch = Some(epoch);
        records.push(JournalRecord { seq, payload });
        at = end;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &tempfile::TempDir) -> (Journal, Vec<JournalRecord>) {
        Journal::open(&dir.path().join("j")).unwrap()
    }

    fn seqs(records: &[JournalRecord]) -> Vec<u64> {
        records.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn appended_records_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, records) = open(&dir);
        assert!(records.is_empty());
        journal.append(7, &[b"a", b"bb"]).unwrap();
        journal.append(9, &[b"ccc"]).unwrap();
        let (_, records) = open(&dir);
        assert_eq!(seqs(&records), [7, 8, 9]);
        assert_eq!(records[2].payload, b"ccc");
    }

    #[test]
    fn after_a_restart_older_records_behind_the_new_ones_end_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = open(&dir);
        journal.append(1, &[b"one", b"two", b"three"]).unwrap();
        journal.restart();
        journal.append(4, &[b"four"]).unwrap();
        let (_, records) = open(&dir);
        assert_eq!(seqs(&records), [4]);
    }

    #[test]
    fn records_of_an_earlier_epoch_end_the_run_even_when_their_numbers_follow() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = open(&dir);
        journal.append(1, &[b"one", b"two", b"three"]).unwrap();
        // As after a restore: numbering starts over below the stale records.
        journal.restart();
        journal.append(1, &[b"uno"]).unwrap();
        let (_, records) = open(&dir);
        assert_eq!(seqs(&records), [1]);
        assert_eq!(records[0].payload, b"uno");
    }

    #[test]
    fn a_torn_record_ends_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = open(&dir);
        journal.append(1, &[b"kept", b"torn"]).unwrap();
        // Damage the second record's payload.
        let at = record_len(b"kept") + HEADER as u64;
        journal.file.write_all_at(b"X", at).unwrap();
        let (_, records) = open(&dir);
        assert_eq!(seqs(&records), [1]);
    }

    #[test]
    fn unappended_records_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = open(&dir);
        journal.append(1, &[b"kept"]).unwrap();
        journal.append(2, &[b"failed"]).unwrap();
        journal.unappend(record_len(b"failed"));
        let (_, records) = open(&dir);
        assert_eq!(seqs(&records), [1]);
        assert_eq!(journal.written(), record_len(b"kept"));
    }

    #[test]
    fn clear_leaves_nothing_to_replay() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = open(&dir);
        journal.append(1, &[b"x", b"y"]).unwrap();
        journal.clear().unwrap();
        assert_eq!(journal.written(), 0);
        let (_, records) = open(&dir);
        assert!(records.is_empty());
    }

    #[test]
    fn garbage_reads_as_no_records() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("j"), [0xffu8; 100]).unwrap();
        let (_, records) = open(&dir);
        assert!(records.is_empty());
        // Preallocated past the garbage, which is left alone.
        let meta = std::fs::metadata(dir.path().join("j")).unwrap();
        assert_eq!(meta.len(), PREALLOCATE);
    }

    #[test]
    fn the_path_sits_next_to_the_database() {
        assert_eq!(
            Journal::path_for(Path::new("/d/agentlab.redb")),
            Path::new("/d/agentlab.redb.journal")
        );
    }
}
