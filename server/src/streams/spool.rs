//! A durable FIFO of records on disk: what a sink could not deliver waits here, across
//! restarts, until its peer acknowledges it.
//!
//! ```text
//! <dir>/0000000000000007.seg   oldest segment (records being read and acknowledged)
//! <dir>/0000000000000008.seg   ...
//! <dir>/0000000000000009.seg   active segment (appended to)
//! <dir>/ack                    acknowledged position: segment id, offset, CRC
//! ```
//!
//! A record is framed as `len: u32 LE | weight: u32 LE | crc32c(weight ‖ payload): u32 LE |
//! payload`. `weight` is what the record stands for (points in an InfluxDB batch, 1 for an MQTT
//! message), so counts and drops are in the sink's own unit, not in records.
//!
//! - Appends go through a buffer; `flush` hands them to the OS (survives a killed process);
//!   the active segment is fsync'd at most `streams.spool_fsync_ms` after a flush (survives a
//!   power cut; spool_sync.rs), and when it is closed (rotation, `close`).
//! - Reading is ahead of acknowledging: `next` hands out a record with a `Ticket`,
//!   `ack_through(ticket)` marks it and everything before it as delivered, `rewind` goes back
//!   to the first unacknowledged record (after a lost connection). A segment fully
//!   acknowledged is deleted.
//! - The acknowledged position is written in place (24 bytes, no fsync) at most every
//!   `ACK_PERSIST_EVERY` and when a segment is deleted: after a crash, at most what was
//!   acknowledged in that last moment is read again.
//! - At open every segment is scanned; a torn or corrupt record ends its segment there (the
//!   file is truncated), which is what a crash in the middle of an append leaves behind.
//! - The size limit is enforced by whole segments: when an append would pass `max_bytes`, the
//!   oldest segment goes, and its unacknowledged weight is counted in `dropped`.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::spool_sync::Syncer;
#[cfg(test)]
use super::spool_sync::DEFAULT_FSYNC_INTERVAL;

const HEADER: usize = 12;
/// A record bigger than this is refused at append and taken for corruption at read.
pub const MAX_RECORD: usize = 64 << 20;
const ACK_FILE: &str = "ack";
const ACK_PERSIST_EVERY: Duration = Duration::from_millis(100);
const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("spool record of {0} bytes is larger than the limit of {MAX_RECORD}")]
    TooLarge(usize),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where a record ends, in segment and byte, and in cumulative weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    segment: u64,
    offset: u64,
    /// Cumulative weight up to the end of the record.
    seq: u64,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    bytes: u64,
    /// Cumulative weight before the first record and after the last.
    first_seq: u64,
    end_seq: u64,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    /// Oldest first; the last one is the active segment.
    segments: VecDeque<Segment>,
    writer: BufWriter<File>,
    /// The reading position: the end of the last record handed out.
    read: Ticket,
    reader: Option<BufReader<File>>,
    /// Everything up to here is delivered.
    acked: Ticket,
    ack_file: File,
    ack_persisted: Instant,
    ack_dirty: bool,
    /// Weight lost to the size limit (or found corrupt at open) since open.
    dropped: u64,
    /// The size limit dropped something already: logged the first time only.
    full_logged: bool,
    total_bytes: u64,
    sync: Syncer,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.seg"))
}

/// Scans a segment: its valid length and the weight and end offset of every record.
fn scan(path: &Path) -> io::Result<(u64, Vec<(u64, u64)>)> {
    let file = File::open(path)?;
    let length = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut offset = 0u64;
    let mut records = Vec::new();
    let mut payload = Vec::new();
    while let Some(weight) = read_record(&mut reader, length - offset, &mut payload)? {
        offset += (HEADER + payload.len()) as u64;
        records.push((offset, u64::from(weight)));
    }
    Ok((offset, records))
}

/// The next record into `payload`, with its weight; `None` at the end or at a torn or corrupt
/// record (the two look the same: the segment ends there). `left` is what the segment holds
/// from the reading position on: a corrupt header announcing more than that is found out
/// before its length is allocated (up to 64 MiB otherwise, for every corrupt header).
fn read_record(
    reader: &mut impl Read,
    left: u64,
    payload: &mut Vec<u8>,
) -> io::Result<Option<u32>> {
    let mut header = [0u8; HEADER];
    if !read_full(reader, &mut header)? {
        return Ok(None);
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let weight = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let crc = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if len > MAX_RECORD || (HEADER + len) as u64 > left {
        return Ok(None);
    }
    payload.resize(len, 0);
    if !read_full(reader, payload)? {
        return Ok(None);
    }
    let mut digest = CRC.digest();
    digest.update(&header[4..8]);
    digest.update(payload);
    Ok((digest.finalize() == crc).then_some(weight))
}

/// `false` when the reader ends before `buf` is full.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Every record of a segment's bytes, as (weight, payload), up to the first torn or corrupt
/// one, with the length of the valid part: what `open` keeps of a segment. For the fuzz
/// target (`fuzz/`) and tests.
pub fn decode_segment(mut bytes: &[u8]) -> (u64, Vec<(u32, Vec<u8>)>) {
    let mut valid = 0u64;
    let mut records = Vec::new();
    let mut payload = Vec::new();
    // Reading from a slice cannot fail.
    loop {
        let left = bytes.len() as u64;
        let Ok(Some(weight)) = read_record(&mut bytes, left, &mut payload) else {
            break;
        };
        valid += (HEADER + payload.len()) as u64;
        records.push((weight, std::mem::take(&mut payload)));
    }
    (valid, records)
}

/// One record framed as a segment stores it (the inverse of [`decode_segment`]).
pub fn encode_record(payload: &[u8], weight: u32) -> Vec<u8> {
    let weight_bytes = weight.to_le_bytes();
    let mut digest = CRC.digest();
    digest.update(&weight_bytes);
    digest.update(payload);
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&weight_bytes);
    out.extend_from_slice(&digest.finalize().to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn read_ack(path: &Path) -> Option<(u64, u64)> {
    let bytes = fs::read(path).ok()?;
    if bytes.len() < 20 {
        return None;
    }
    let segment = u64::from_le_bytes(bytes[0..8].try_into().ok()?);
    let offset = u64::from_le_bytes(bytes[8..16].try_into().ok()?);
    let crc = u32::from_le_bytes(bytes[16..20].try_into().ok()?);
    (CRC.checksum(&bytes[0..16]) == crc).then_some((segment, offset))
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, keeping at most `max_bytes` on disk, synced at
    /// most a second after a flush (the default of `streams.spool_fsync_ms`).
    #[cfg(test)]
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        Self::open_with_fsync(dir, max_bytes, DEFAULT_FSYNC_INTERVAL)
    }

    /// As [`Spool::open`], with an fsync at most every `fsync` (0: at every flush).
    pub fn open_with_fsync(
        dir: &Path,
        max_bytes: u64,
        fsync: Duration,
    ) -> Result<Spool, SpoolError> {
        fs::create_dir_all(dir).map_err(io_at(dir))?;
        // Segments small enough that dropping the oldest frees little, big enough to keep
        // the number of files low.
        let segment_bytes = (max_bytes / 16).clamp(64 << 10, 64 << 20);
        let mut ids: Vec<u64> = fs::read_dir(dir)
            .map_err(io_at(dir))?
            .filter_map(|entry| {
                let name = entry.ok()?.file_name();
                let name = name.to_str()?;
                u64::from_str_radix(name.strip_suffix(".seg")?, 16).ok()
            })
            .collect();
        ids.sort_unstable();
        let ack_path = dir.join(ACK_FILE);
        let saved_ack = read_ack(&ack_path);
        let mut segments = VecDeque::new();
        let mut seq = 0u64;
        let mut acked = None;
        for &id in &ids {
            let path = segment_path(dir, id);
            let (valid, records) = scan(&path).map_err(io_at(&path))?;
            let on_disk = fs::metadata(&path).map_err(io_at(&path))?.len();
            if on_disk > valid {
                // A torn append (crash) or corruption: the segment ends at the last good record.
                tracing::warn!(path = %path.display(), valid, on_disk, "spool: cut a torn or corrupt tail");
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(valid))
                    .map_err(io_at(&path))?;
            }
            let first_seq = seq;
            if saved_ack == Some((id, 0)) {
                acked = Some(Ticket {
                    segment: id,
                    offset: 0,
                    seq,
                });
            }
            for (end, weight) in records {
                seq += weight;
                if saved_ack == Some((id, end)) {
                    acked = Some(Ticket {
                        segment: id,
                        offset: end,
                        seq,
                    });
                }
            }
            segments.push_back(Segment {
                id,
                bytes: valid,
                first_seq,
                end_seq: seq,
            });
        }
        let next_id = ids.last().map_or(0, |id| id + 1);
        // Always append to a fresh segment: the old tail stays as it was found.
        segments.push_back(Segment {
            id: next_id,
            bytes: 0,
            first_seq: seq,
            end_seq: seq,
        });
        let active = segment_path(dir, next_id);
        let writer = BufWriter::with_capacity(
            256 << 10,
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&active)
                .map_err(io_at(&active))?,
        );
        let sync = Syncer::start(
            dir.to_owned(),
            Arc::new(writer.get_ref().try_clone().map_err(io_at(&active))?),
            fsync,
        );
        let acked = acked.unwrap_or_else(|| {
            if saved_ack.is_some() {
                // The position names a segment that is gone or an offset that is not a
                // record boundary: replay from the oldest record (duplicates, not losses).
                tracing::warn!(dir = %dir.display(), "spool: acknowledged position not found; replaying everything kept");
            }
            let head = &segments[0];
            Ticket {
                segment: head.id,
                offset: 0,
                seq: head.first_seq,
            }
        });
        let ack_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&ack_path)
            .map_err(io_at(&ack_path))?;
        let total_bytes = segments.iter().map(|s| s.bytes).sum();
        let mut spool = Spool {
            dir: dir.to_owned(),
            max_bytes,
            segment_bytes,
            segments,
            writer,
            read: acked,
            reader: None,
            acked,
            ack_file,
            ack_persisted: Instant::now(),
            ack_dirty: false,
            dropped: 0,
            full_logged: false,
            total_bytes,
            sync,
        };
        spool.delete_acknowledged_segments()?;
        Ok(spool)
    }

    /// Weight appended and not yet acknowledged (being read included).
    pub fn pending(&self) -> u64 {
        self.segments.back().map_or(0, |s| s.end_seq) - self.acked.seq
    }

    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Weight lost to the size limit since open.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Appends one record; the oldest segments go if it would not fit in `max_bytes`.
    pub fn append(&mut self, payload: &[u8], weight: u32) -> Result<(), SpoolError> {
        let size = (HEADER + payload.len()) as u64;
        if payload.len() > MAX_RECORD || size > self.max_bytes {
            return Err(SpoolError::TooLarge(payload.len()));
        }
        while self.total_bytes + size > self.max_bytes {
            if self.segments.len() == 1 {
                // Only the active segment: close it so that it can go.
                self.rotate()?;
            }
            self.drop_oldest()?;
        }
        let mut digest = CRC.digest();
        let weight_bytes = weight.to_le_bytes();
        digest.update(&weight_bytes);
        digest.update(payload);
        let mut header = [0u8; HEADER];
        header[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        header[4..8].copy_from_slice(&weight_bytes);
        header[8..12].copy_from_slice(&digest.finalize().to_le_bytes());
        let active_path = self.active_path();
        self.writer
            .write_all(&header)
            .and_then(|()| self.writer.write_all(payload))
            .map_err(io_at(&active_path))?;
        let active = self
            .segments
            .back_mut()
            .expect("the active segment always exists");
        active.bytes += size;
        active.end_seq += u64::from(weight);
        self.total_bytes += size;
        if active.bytes >= self.segment_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    /// Hands what was appended to the OS: it survives the process being killed.
    pub fn flush(&mut self) -> Result<(), SpoolError> {
        let path = self.active_path();
        self.writer.flush().map_err(io_at(&path))?;
        self.sync.flushed().map_err(io_at(&path))
    }

    /// fsyncs of the active segment since open (rotations and `close` not included).
    #[cfg(test)]
    pub fn fsyncs(&self) -> u64 {
        self.sync.syncs()
    }

    /// The next record after the reading position, with the ticket that acknowledges it.
    pub fn next(&mut self, payload: &mut Vec<u8>) -> Result<Option<(u32, Ticket)>, SpoolError> {
        loop {
            let Some(index) = self.segment_index(self.read.segment) else {
                return Ok(None);
            };
            let (segment_id, segment_bytes, segment_end) = {
                let s = &self.segments[index];
                (s.id, s.bytes, s.end_seq)
            };
            if self.read.offset >= segment_bytes {
                if index + 1 == self.segments.len() {
                    return Ok(None);
                }
                let next = &self.segments[index + 1];
                self.read = Ticket {
                    segment: next.id,
                    offset: 0,
                    seq: next.first_seq,
                };
                self.reader = None;
                continue;
            }
            if index + 1 == self.segments.len() {
                self.flush()?;
            }
            let path = segment_path(&self.dir, segment_id);
            if self.reader.is_none() {
                let mut file = File::open(&path).map_err(io_at(&path))?;
                file.seek(SeekFrom::Start(self.read.offset))
                    .map_err(io_at(&path))?;
                self.reader = Some(BufReader::with_capacity(256 << 10, file));
            }
            let reader = self.reader.as_mut().expect("opened just above");
            let left = segment_bytes - self.read.offset;
            match read_record(reader, left, payload).map_err(io_at(&path))? {
                Some(weight) => {
                    self.read.offset += (HEADER + payload.len()) as u64;
                    self.read.seq += u64::from(weight);
                    return Ok(Some((weight, self.read)));
                }
                None => {
                    // Checked at open and written by us since: only a disk going bad gets
                    // here. The rest of the segment is lost; count it and move on.
                    let lost = segment_end - self.read.seq;
                    tracing::error!(path = %path.display(), offset = self.read.offset, "spool: unreadable record; skipping the rest of the segment");
                    self.dropped += lost;
                    self.read.offset = segment_bytes;
                    self.read.seq = segment_end;
                    self.reader = None;
                }
            }
        }
    }

    /// Everything up to and including the record of `ticket` is delivered.
    pub fn ack_through(&mut self, ticket: Ticket) -> Result<(), SpoolError> {
        if ticket.seq < self.acked.seq
            || (ticket.seq == self.acked.seq && ticket.offset <= self.acked.offset)
            || self.segment_index(ticket.segment).is_none()
        {
            // Acknowledged already, or its segment was dropped for room.
            return Ok(());
        }
        self.acked = ticket;
        self.ack_dirty = true;
        let deleted = self.delete_acknowledged_segments()?;
        if deleted || self.ack_persisted.elapsed() >= ACK_PERSIST_EVERY {
            self.persist_ack()?;
        }
        Ok(())
    }

    /// Back to the first unacknowledged record: what was handed out will be read again.
    pub fn rewind(&mut self) {
        self.read = self.acked;
        self.reader = None;
    }

    /// Flushes, syncs and saves the acknowledged position: for a clean stop.
    pub fn close(mut self) -> Result<(), SpoolError> {
        let path = self.active_path();
        self.writer.flush().map_err(io_at(&path))?;
        self.writer.get_ref().sync_all().map_err(io_at(&path))?;
        self.persist_ack()?;
        self.ack_file
            .sync_all()
            .map_err(io_at(&self.dir.join(ACK_FILE)))
    }

    fn active_path(&self) -> PathBuf {
        segment_path(&self.dir, self.segments.back().map_or(0, |s| s.id))
    }

    fn segment_index(&self, id: u64) -> Option<usize> {
        let head = self.segments.front()?.id;
        let index = usize::try_from(id.checked_sub(head)?).ok()?;
        (index < self.segments.len()).then_some(index)
    }

    fn persist_ack(&mut self) -> Result<(), SpoolError> {
        let mut bytes = [0u8; 20];
        bytes[0..8].copy_from_slice(&self.acked.segment.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.acked.offset.to_le_bytes());
        let crc = CRC.checksum(&bytes[0..16]);
        bytes[16..20].copy_from_slice(&crc.to_le_bytes());
        let path = self.dir.join(ACK_FILE);
        self.ack_file
            .seek(SeekFrom::Start(0))
            .and_then(|_| self.ack_file.write_all(&bytes))
            .map_err(io_at(&path))?;
        self.ack_persisted = Instant::now();
        self.ack_dirty = false;
        Ok(())
    }

    /// Deletes the segments before the acknowledged one, and restarts the active segment
    /// when everything is acknowledged. `true` when something was deleted.
    fn delete_acknowledged_segments(&mut self) -> Result<bool, SpoolError> {
        let mut deleted = false;
        while self.segments.len() > 1 && self.segments[0].end_seq <= self.acked.seq {
            let head = &self.segments[0];
            if head.id == self.acked.segment && head.bytes > self.acked.offset {
                break;
            }
            self.remove_head()?;
            deleted = true;
        }
        if self.acked.segment < self.segments[0].id {
            let head = &self.segments[0];
            self.acked = Ticket {
                segment: head.id,
                offset: 0,
                seq: head.first_seq,
            };
            if self.read.segment < head.id {
                self.read = self.acked;
                self.reader = None;
            }
        }
        let active = self
            .segments
            .back()
            .expect("the active segment always exists");
        if self.segments.len() == 1 && active.bytes > 0 && self.acked.offset >= active.bytes {
            // All delivered: start an empty segment so that the file does not grow forever.
            self.rotate()?;
            self.remove_head()?;
            let head = &self.segments[0];
            self.acked = Ticket {
                segment: head.id,
                offset: 0,
                seq: head.first_seq,
            };
            self.read = self.acked;
            self.reader = None;
            deleted = true;
        }
        if deleted {
            self.ack_dirty = true;
        }
        Ok(deleted)
    }

    fn remove_head(&mut self) -> Result<(), SpoolError> {
        if let Some(head) = self.segments.pop_front() {
            self.total_bytes -= head.bytes;
            let path = segment_path(&self.dir, head.id);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_at(&path)(e)),
            }
        }
        Ok(())
    }

    /// The oldest segment goes for room; what it held unacknowledged is counted as dropped.
    fn drop_oldest(&mut self) -> Result<(), SpoolError> {
        let head = &self.segments[0];
        let lost = head
            .end_seq
            .saturating_sub(self.acked.seq.max(head.first_seq));
        let end_seq = head.end_seq;
        self.dropped += lost;
        if !self.full_logged {
            self.full_logged = true;
            tracing::warn!(
                dir = %self.dir.display(),
                limit_mb = self.max_bytes >> 20,
                lost,
                "spool: disk buffer full; the oldest data is dropped to make room, counted in \
                 Dropped (logged once)"
            );
        }
        self.remove_head()?;
        let head = &self.segments[0];
        if self.acked.seq < end_seq || self.acked.segment < head.id {
            self.acked = Ticket {
                segment: head.id,
                offset: 0,
                seq: head.first_seq,
            };
        }
        if self.read.segment < head.id {
            self.read = self.acked;
            self.reader = None;
        }
        self.persist_ack()
    }

    /// Closes the active segment (synced) and opens the next one.
    fn rotate(&mut self) -> Result<(), SpoolError> {
        let path = self.active_path();
        self.writer.flush().map_err(io_at(&path))?;
        self.writer.get_ref().sync_all().map_err(io_at(&path))?;
        let (id, seq) = {
            let active = self
                .segments
                .back()
                .expect("the active segment always exists");
            (active.id + 1, active.end_seq)
        };
        let next = segment_path(&self.dir, id);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&next)
            .map_err(io_at(&next))?;
        self.sync
            .switch_to(Arc::new(file.try_clone().map_err(io_at(&next))?));
        self.writer = BufWriter::with_capacity(256 << 10, file);
        self.segments.push_back(Segment {
            id,
            bytes: 0,
            first_seq: seq,
            end_seq: seq,
        });
        Ok(())
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        // Best effort: what was appended reaches the OS, the position is saved.
        let _ = self.writer.flush();
        if self.ack_dirty {
            let _ = self.persist_ack();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_header_is_refused_before_its_length_is_allocated() {
        // A header announcing 64 MiB (the limit) in front of 100 bytes.
        let mut segment = encode_record(&[7u8; 100], 1);
        segment[0..4].copy_from_slice(&(MAX_RECORD as u32).to_le_bytes());
        let mut payload = Vec::new();
        let mut reader = &segment[..];
        let left = reader.len() as u64;
        assert_eq!(read_record(&mut reader, left, &mut payload).unwrap(), None);
        assert!(payload.capacity() < 1024, "{}", payload.capacity());
        assert_eq!(decode_segment(&segment), (0, Vec::new()));
    }

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "fabrique-spool-{name}-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn read_all(spool: &mut Spool) -> Vec<(String, Ticket)> {
        let mut out = Vec::new();
        let mut payload = Vec::new();
        while let Some((_, ticket)) = spool.next(&mut payload).unwrap() {
            out.push((String::from_utf8(payload.clone()).unwrap(), ticket));
        }
        out
    }

    #[test]
    fn a_flush_is_synced_within_the_interval_and_syncs_are_spaced() {
        let dir = tmp("fsync");
        let interval = Duration::from_millis(200);
        let mut spool = Spool::open_with_fsync(&dir, 1 << 20, interval).unwrap();
        let started = Instant::now();
        spool.append(b"first", 1).unwrap();
        spool.flush().unwrap();
        // The first flush is synced without waiting for an interval (poll, generous bound).
        let deadline = Instant::now() + Duration::from_secs(10);
        while spool.fsyncs() == 0 {
            assert!(Instant::now() < deadline, "no fsync after a flush");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Many flushes in a row: at most one sync per interval, and the last flush is synced.
        for i in 0..2000 {
            spool.append(format!("r{i}").as_bytes(), 1).unwrap();
            spool.flush().unwrap();
        }
        let flushed_at = started.elapsed();
        let before = spool.fsyncs();
        while spool.fsyncs() == before {
            assert!(Instant::now() < deadline, "the last flush was never synced");
            std::thread::sleep(Duration::from_millis(5));
        }
        let intervals = (flushed_at.as_millis() / interval.as_millis()) as u64;
        assert!(
            spool.fsyncs() <= intervals + 3,
            "{} fsyncs in {flushed_at:?}",
            spool.fsyncs()
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_interval_of_zero_syncs_every_flush() {
        let dir = tmp("fsync0");
        let mut spool = Spool::open_with_fsync(&dir, 1 << 20, Duration::ZERO).unwrap();
        for i in 0..5 {
            spool.append(format!("r{i}").as_bytes(), 1).unwrap();
            spool.flush().unwrap();
        }
        assert_eq!(spool.fsyncs(), 5);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn records_come_back_in_order_and_acknowledged_ones_go() {
        let dir = tmp("order");
        let mut spool = Spool::open(&dir, 1 << 20).unwrap();
        for i in 0..100 {
            spool.append(format!("r{i}").as_bytes(), 2).unwrap();
        }
        assert_eq!(spool.pending(), 200);
        let read = read_all(&mut spool);
        let texts: Vec<_> = read.iter().map(|(t, _)| t.clone()).collect();
        assert_eq!(texts, (0..100).map(|i| format!("r{i}")).collect::<Vec<_>>());
        // Lost connection after 10 were acknowledged: the rest comes again, in order.
        spool.ack_through(read[9].1).unwrap();
        assert_eq!(spool.pending(), 180);
        spool.rewind();
        let again = read_all(&mut spool);
        assert_eq!(again.first().unwrap().0, "r10");
        assert_eq!(again.len(), 90);
        spool.ack_through(again.last().unwrap().1).unwrap();
        assert_eq!(spool.pending(), 0);
        assert_eq!(
            spool.bytes(),
            0,
            "everything delivered: nothing left on disk"
        );
        // Appending after a full drain works and keeps order.
        spool.append(b"later", 1).unwrap();
        assert_eq!(read_all(&mut spool)[0].0, "later");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_spool_drops_the_oldest_and_counts_them() {
        let dir = tmp("limit");
        // 64 KiB segments (the smallest), 256 KiB in all.
        let mut spool = Spool::open(&dir, 256 << 10).unwrap();
        let record = vec![b'x'; 1000];
        for _ in 0..1000 {
            spool.append(&record, 5).unwrap();
        }
        assert!(spool.bytes() <= 256 << 10, "{} bytes", spool.bytes());
        assert!(spool.dropped() > 0);
        // Nothing is lost silently: what is kept plus what was dropped is what was appended.
        assert_eq!(spool.pending() + spool.dropped(), 5000);
        let kept = read_all(&mut spool).len() as u64;
        assert_eq!(kept * 5, spool.pending());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn what_is_not_acknowledged_survives_a_restart() {
        let dir = tmp("reopen");
        {
            let mut spool = Spool::open(&dir, 1 << 20).unwrap();
            for i in 0..50 {
                spool.append(format!("r{i}").as_bytes(), 1).unwrap();
            }
            let read = read_all(&mut spool);
            spool.ack_through(read[19].1).unwrap();
            spool.close().unwrap();
        }
        {
            // A second life, killed without `close` (Drop flushes what the OS has).
            let mut spool = Spool::open(&dir, 1 << 20).unwrap();
            assert_eq!(spool.pending(), 30);
            let read = read_all(&mut spool);
            assert_eq!(read[0].0, "r20");
            assert_eq!(read.last().unwrap().0, "r49");
            spool.append(b"r50", 1).unwrap();
            spool.flush().unwrap();
            std::mem::forget(spool);
        }
        let mut spool = Spool::open(&dir, 1 << 20).unwrap();
        let read = read_all(&mut spool);
        assert_eq!(
            read.len(),
            31,
            "acks of the killed life were never persisted"
        );
        assert_eq!(read[0].0, "r20");
        assert_eq!(read.last().unwrap().0, "r50");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_last_record_is_cut_at_open() {
        let dir = tmp("torn");
        {
            let mut spool = Spool::open(&dir, 1 << 20).unwrap();
            for i in 0..10 {
                spool.append(format!("record-{i}").as_bytes(), 1).unwrap();
            }
            spool.close().unwrap();
        }
        let segment = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .max_by_key(|p| fs::metadata(p).unwrap().len())
            .unwrap();
        // A crash in the middle of an append: half a record at the end.
        let len = fs::metadata(&segment).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap()
            .set_len(len - 4)
            .unwrap();
        // And a flipped byte would be caught the same way by the CRC.
        let mut spool = Spool::open(&dir, 1 << 20).unwrap();
        let read = read_all(&mut spool);
        assert_eq!(read.len(), 9);
        assert_eq!(read.last().unwrap().0, "record-8");
        spool.append(b"after", 1).unwrap();
        let more = read_all(&mut spool);
        assert_eq!(more[0].0, "after");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_record_ends_its_segment() {
        let dir = tmp("crc");
        {
            let mut spool = Spool::open(&dir, 1 << 20).unwrap();
            for i in 0..3 {
                spool.append(format!("record-{i}").as_bytes(), 1).unwrap();
            }
            spool.close().unwrap();
        }
        let segment = segment_path(&dir, 0);
        let mut bytes = fs::read(&segment).unwrap();
        let second = HEADER + "record-0".len() + HEADER;
        bytes[second] ^= 0xff;
        fs::write(&segment, bytes).unwrap();
        let mut spool = Spool::open(&dir, 1 << 20).unwrap();
        let read = read_all(&mut spool);
        assert_eq!(
            read.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
            ["record-0"]
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
