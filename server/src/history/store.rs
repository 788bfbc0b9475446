//! The historian's files: a write-ahead log for the last seconds, sealed segments for the rest.
//!
//! ```text
//! <dir>/wal-<seq>.log   every flush (1 s): the bytes each tag's open chunk grew by, one
//!                       CRC-framed record per flush. Replayed (and sealed) at start.
//! <dir>/seg-<seq>.fgh   one sealed chunk per tag, then a dense table indexed by TagId
//!                       (offset, length, count, first and last time), then a trailer.
//!                       Written to .tmp, fsynced, renamed: a segment is whole or absent.
//! <dir>/spill-<seq>.tmp the open chunks' older bytes, in pieces of about `SPILL_BYTES`
//!                       per tag, so memory holds only each tag's last few hundred bytes
//!                       and an index of pieces. Not synced and not needed after a crash
//!                       (the WAL has the same bytes); deleted at start like any `.tmp`.
//! ```
//! A segment `seq` holds exactly what WAL `seq` logged, so at start every WAL without its
//! segment is sealed, and a WAL whose segment exists is deleted.
//!
//! Readers see three places, newest last: sealed segments, the chunks being sealed, and the
//! open chunks. Everything is swapped under one lock so a sample is never seen twice.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fabrique_adapters::{Quality, TagId, Value};
use parking_lot::Mutex;

use super::codec::{decode_all, get_varint, put_varint, ChunkEncoder, Decoder, Kind, Sample};

const SEGMENT_MAGIC: &[u8; 8] = b"FGHSEG01";
const TRAILER_MAGIC: &[u8; 8] = b"FGHEND01";
const TABLE_ENTRY: usize = 32;
const TRAILER: usize = 48;
const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("history directory {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Retention limits; see `HistoryConfig`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Segments whose newest sample is older than this go (100 ns ticks); 0: no age limit.
    pub max_age_ticks: i64,
    /// Sealed segments plus open chunks above this: the oldest segments go; 0: no limit.
    pub max_bytes: u64,
    /// Open chunks above this many bytes are sealed at once (bounds memory and WAL size).
    pub seal_bytes: usize,
    /// `fdatasync` the WAL at every flush (survives a power cut, not only a kill -9).
    pub fsync: bool,
}

/// What the historian did; read by logs and tests.
#[derive(Debug, Default)]
pub struct Counters {
    pub samples: AtomicU64,
    pub segment_bytes: AtomicU64,
    pub wal_bytes: AtomicU64,
    pub segments: AtomicU64,
    pub evicted_segments: AtomicU64,
    pub evicted_samples: AtomicU64,
    pub evicted_bytes: AtomicU64,
    /// Samples whose value was not of the tag's kind (stored without a value).
    pub mismatched: AtomicU64,
    /// Bus batches dropped because the writer thread was behind.
    pub dropped_batches: AtomicU64,
    pub write_errors: AtomicU64,
}

/// One sealed segment file.
struct Segment {
    seq: u64,
    path: PathBuf,
    file: File,
    bytes: u64,
    samples: u64,
    min_ticks: i64,
    max_ticks: i64,
    table_offset: u64,
    tags: u32,
}

impl Segment {
    fn open(path: &Path, seq: u64) -> io::Result<Segment> {
        let file = File::open(path)?;
        let bytes = file.metadata()?.len();
        if bytes < (SEGMENT_MAGIC.len() + TRAILER) as u64 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "too short"));
        }
        let mut t = [0u8; TRAILER];
        file.read_exact_at(&mut t, bytes - TRAILER as u64)?;
        if &t[40..48] != TRAILER_MAGIC {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "no trailer"));
        }
        let u64_at = |i: usize| u64::from_le_bytes(t[i..i + 8].try_into().unwrap_or_default());
        Ok(Segment {
            seq,
            path: path.to_owned(),
            file,
            bytes,
            tags: u32::from_le_bytes(t[0..4].try_into().unwrap_or_default()),
            table_offset: u64_at(8),
            samples: u64_at(16),
            min_ticks: u64_at(24) as i64,
            max_ticks: u64_at(32) as i64,
        })
    }

    /// The chunk bytes of `tag`, if this segment has any.
    fn chunk(&self, tag: TagId) -> io::Result<Option<Vec<u8>>> {
        if tag.0 >= self.tags {
            return Ok(None);
        }
        let mut entry = [0u8; TABLE_ENTRY];
        self.file.read_exact_at(
            &mut entry,
            self.table_offset + u64::from(tag.0) * TABLE_ENTRY as u64,
        )?;
        let offset = u64::from_le_bytes(entry[0..8].try_into().unwrap_or_default());
        let len = u32::from_le_bytes(entry[8..12].try_into().unwrap_or_default()) as usize;
        if len == 0 {
            return Ok(None);
        }
        let mut bytes = vec![0u8; len];
        self.file.read_exact_at(&mut bytes, offset)?;
        Ok(Some(bytes))
    }
}

/// An open chunk's bytes once its tail reaches this size (after they are in the WAL) go to
/// the spill file: at 10,000 tags the open chunks held up to `seal_size_mb` (32 MB) of
/// encoded samples plus the slack of growing vectors, and now about 3 MB of tails and an
/// index of 16 bytes per piece (BENCHMARKS.md, "Session 6").
const SPILL_BYTES: usize = 256;

/// The file the open chunks of one generation (one WAL) spill to; appended by the writer
/// thread only, read by `pread` from any reader.
struct Spill {
    path: PathBuf,
    file: File,
    len: AtomicU64,
}

impl Spill {
    fn create(path: PathBuf) -> io::Result<Spill> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        Ok(Spill {
            path,
            file,
            len: AtomicU64::new(0),
        })
    }

    /// Append `pieces` (the chunk's older bytes, oldest first) to `out`.
    fn read_into(&self, pieces: &[Piece], out: &mut Vec<u8>) -> io::Result<()> {
        for piece in pieces {
            let from = out.len();
            out.resize(from + piece.len as usize, 0);
            self.file.read_exact_at(&mut out[from..], piece.at)?;
        }
        Ok(())
    }
}

/// Where one spilled part of an open chunk is in its generation's spill file.
#[derive(Clone, Copy, Debug)]
struct Piece {
    at: u64,
    len: u32,
}

/// Where a read finds samples: a sealed segment, or a copy of an open chunk (its spilled
/// pieces are read outside the store's lock).
enum Source {
    File(Arc<Segment>),
    Open {
        spill: Option<Arc<Spill>>,
        pieces: Vec<Piece>,
        tail: Vec<u8>,
    },
}

impl Source {
    /// The chunk bytes of `tag` here, if any (a failed file read is logged, and skipped).
    fn bytes(&self, tag: TagId) -> Option<std::borrow::Cow<'_, [u8]>> {
        match self {
            Source::File(segment) => match segment.chunk(tag) {
                Ok(bytes) => bytes.map(std::borrow::Cow::Owned),
                Err(error) => {
                    tracing::warn!(segment = %segment.path.display(), %error, "history segment read failed");
                    None
                }
            },
            Source::Open { tail, pieces, .. } if pieces.is_empty() => {
                Some(std::borrow::Cow::Borrowed(tail))
            }
            Source::Open {
                spill,
                pieces,
                tail,
            } => {
                let spill = spill.as_ref()?;
                let mut bytes = Vec::new();
                if let Err(error) = spill.read_into(pieces, &mut bytes) {
                    tracing::warn!(file = %spill.path.display(), %error, "history spill read failed");
                    return None;
                }
                bytes.extend_from_slice(tail);
                Some(std::borrow::Cow::Owned(bytes))
            }
        }
    }
}

/// One tag's open chunk: its spilled pieces, then the bytes in memory (`chunk.bytes()`),
/// of which the first `logged` are already in the WAL.
#[derive(Clone)]
struct Open {
    chunk: ChunkEncoder,
    logged: usize,
    pieces: Vec<Piece>,
}

impl Open {
    /// The whole chunk's length, spilled pieces included.
    fn len(&self) -> usize {
        self.pieces.iter().map(|p| p.len as usize).sum::<usize>() + self.chunk.bytes().len()
    }
}

/// One generation of open chunks and the file they spilled to.
#[derive(Default)]
struct Generation {
    open: Vec<Option<Open>>,
    spill: Option<Arc<Spill>>,
}

#[derive(Default)]
struct Inner {
    open: Vec<Option<Open>>,
    /// Bytes of the open chunks, spilled pieces included (what the next segment will hold).
    open_bytes: usize,
    /// Where the open chunks spill; created at the first spill of a generation.
    spill: Option<Arc<Spill>>,
    /// Chunks being written as a segment right now, still visible to readers.
    sealing: Option<Arc<Generation>>,
    segments: Vec<Arc<Segment>>,
    wal_seq: u64,
}

pub struct Store {
    dir: PathBuf,
    limits: Limits,
    inner: Mutex<Inner>,
    /// Only the writer thread writes the WAL.
    wal: Mutex<Option<File>>,
    pub counters: Counters,
}

fn wal_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("wal-{seq:012}.log"))
}

fn spill_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("spill-{seq:012}.tmp"))
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("seg-{seq:012}.fgh"))
}

fn seq_of(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    name.strip_prefix(prefix)?
        .strip_suffix(suffix)?
        .parse()
        .ok()
}

impl Store {
    /// Open the directory: seal what the WALs of a previous run hold, load the segments,
    /// apply retention, and start a new WAL.
    pub fn open(dir: &Path, limits: Limits) -> Result<Store, StoreError> {
        fs::create_dir_all(dir).map_err(io_at(dir))?;
        let mut segments = Vec::new();
        let mut wals = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_at(dir))? {
            let entry = entry.map_err(io_at(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                // A segment whose writer died before the rename, or a spill file: their
                // WAL is still there.
                let _ = fs::remove_file(entry.path());
            } else if let Some(seq) = seq_of(&name, "seg-", ".fgh") {
                segments.push(seq);
            } else if let Some(seq) = seq_of(&name, "wal-", ".log") {
                wals.push(seq);
            }
        }
        segments.sort_unstable();
        wals.sort_unstable();
        let store = Store {
            dir: dir.to_owned(),
            limits,
            inner: Mutex::new(Inner::default()),
            wal: Mutex::new(None),
            counters: Counters::default(),
        };
        let mut loaded = Vec::new();
        for seq in &segments {
            let path = segment_path(dir, *seq);
            match Segment::open(&path, *seq) {
                Ok(segment) => loaded.push(Arc::new(segment)),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "history segment unreadable; set aside as .corrupt");
                    let _ = fs::rename(&path, path.with_extension("corrupt"));
                }
            }
        }
        for seq in &wals {
            let path = wal_path(dir, *seq);
            if segments.binary_search(seq).is_err() {
                let chunks = read_wal(&path).map_err(io_at(&path))?;
                let samples: u64 = chunks
                    .iter()
                    .flatten()
                    .map(|o| u64::from(o.chunk.count))
                    .sum();
                if samples > 0 {
                    let segment = store.write_segment(*seq, &chunks, None)?;
                    tracing::info!(samples, seq, "history: last run's write-ahead log sealed");
                    loaded.push(Arc::new(segment));
                }
            }
            fs::remove_file(&path).map_err(io_at(&path))?;
        }
        loaded.sort_by_key(|s| s.seq);
        let next = loaded
            .iter()
            .map(|s| s.seq)
            .chain(wals.iter().copied())
            .max()
            .map_or(1, |s| s + 1);
        {
            let mut inner = store.inner.lock();
            inner.segments = loaded;
            inner.wal_seq = next;
            store
                .counters
                .segments
                .store(inner.segments.len() as u64, Ordering::Relaxed);
            store.counters.segment_bytes.store(
                inner.segments.iter().map(|s| s.bytes).sum(),
                Ordering::Relaxed,
            );
        }
        store.start_wal(next)?;
        store.retain(crate::history::now_ticks());
        Ok(store)
    }

    fn start_wal(&self, seq: u64) -> Result<(), StoreError> {
        let path = wal_path(&self.dir, seq);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_at(&path))?;
        *self.wal.lock() = Some(file);
        Ok(())
    }

    /// Append a sample to its tag's open chunk (in memory; the next flush logs it).
    /// A sample with the same time as the tag's last one is a repeat (a bus resync) and skipped.
    #[cfg(test)]
    pub fn append(
        &self,
        tag: TagId,
        kind: Kind,
        ticks: i64,
        value: Option<&Value>,
        quality: Quality,
    ) {
        let mut inner = self.inner.lock();
        if self.append_locked(&mut inner, tag, kind, ticks, value, quality) {
            self.counters.samples.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Several samples under one lock.
    pub fn append_many<'a>(
        &self,
        samples: impl Iterator<Item = (TagId, Kind, i64, Option<&'a Value>, Quality)>,
    ) {
        let mut inner = self.inner.lock();
        // Counted once per batch: a locked add per sample cost more than encoding it (it
        // waits for every pending cache miss; BENCHMARKS.md, "Session 6").
        let mut appended = 0u64;
        for (tag, kind, ticks, value, quality) in samples {
            appended += u64::from(self.append_locked(&mut inner, tag, kind, ticks, value, quality));
        }
        drop(inner);
        self.counters.samples.fetch_add(appended, Ordering::Relaxed);
    }

    fn append_locked(
        &self,
        inner: &mut Inner,
        tag: TagId,
        kind: Kind,
        ticks: i64,
        value: Option<&Value>,
        quality: Quality,
    ) -> bool {
        let index = tag.index();
        if inner.open.len() <= index {
            inner.open.resize(index + 1, None);
        }
        let open = inner.open[index].get_or_insert_with(|| Open {
            chunk: ChunkEncoder::new(kind),
            logged: 0,
            pieces: Vec::new(),
        });
        if open.chunk.last_ticks() == Some(ticks) {
            return false;
        }
        if open.chunk.kind() != kind {
            return false;
        }
        if let Some(v) = value {
            if !matches!(
                (kind, v),
                (Kind::Float, Value::Float(_))
                    | (Kind::Int, Value::Int(_))
                    | (Kind::UInt, Value::UInt(_))
                    | (Kind::Bool, Value::Bool(_))
                    | (Kind::Time, Value::Time(_))
                    | (Kind::Text, Value::Text(_))
            ) {
                self.counters.mismatched.fetch_add(1, Ordering::Relaxed);
            }
        }
        let before = open.chunk.bytes().len();
        open.chunk.push(ticks, value, quality);
        inner.open_bytes += open.chunk.bytes().len() - before;
        true
    }

    /// Bytes in open chunks: when above `seal_bytes`, the writer seals.
    pub fn open_bytes(&self) -> usize {
        self.inner.lock().open_bytes
    }

    /// Log what the open chunks grew by since the last flush. After this returns, a kill -9
    /// loses none of it.
    pub fn flush(&self) -> Result<(), StoreError> {
        let mut record = Vec::new();
        {
            let mut inner = self.inner.lock();
            for (index, open) in inner.open.iter_mut().enumerate() {
                let Some(open) = open else { continue };
                let bytes = open.chunk.bytes();
                if bytes.len() > open.logged {
                    put_varint(&mut record, index as u64);
                    put_varint(&mut record, (bytes.len() - open.logged) as u64);
                    record.extend_from_slice(&bytes[open.logged..]);
                    open.logged = bytes.len();
                }
            }
        }
        if !record.is_empty() {
            self.write_wal(&record)?;
        }
        self.spill()
    }

    fn write_wal(&self, record: &[u8]) -> Result<(), StoreError> {
        let mut framed = Vec::with_capacity(record.len() + 8);
        framed.extend_from_slice(&(record.len() as u32).to_le_bytes());
        framed.extend_from_slice(&CRC.checksum(record).to_le_bytes());
        framed.extend_from_slice(record);
        let mut wal = self.wal.lock();
        let path = wal_path(&self.dir, self.inner.lock().wal_seq);
        let Some(file) = wal.as_mut() else {
            return Ok(());
        };
        file.write_all(&framed).map_err(io_at(&path))?;
        if self.limits.fsync {
            file.sync_data().map_err(io_at(&path))?;
        }
        self.counters
            .wal_bytes
            .fetch_add(framed.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Move the in-memory bytes of the open chunks that reached `SPILL_BYTES`, all logged, to
    /// the spill file: one write for all of them, outside the lock (readers keep reading the
    /// tails meanwhile), then the tails are swapped for pieces under the lock.
    fn spill(&self) -> Result<(), StoreError> {
        let mut buffer = Vec::new();
        let mut moved: Vec<(usize, usize)> = Vec::new();
        let spill = {
            let mut inner = self.inner.lock();
            for (index, open) in inner.open.iter().enumerate() {
                let Some(open) = open else { continue };
                let n = open.chunk.bytes().len();
                if n >= SPILL_BYTES && open.logged == n {
                    buffer.extend_from_slice(open.chunk.bytes());
                    moved.push((index, n));
                }
            }
            if moved.is_empty() {
                return Ok(());
            }
            if inner.spill.is_none() {
                let path = spill_path(&self.dir, inner.wal_seq);
                let spill = Spill::create(path.clone()).map_err(io_at(&path))?;
                inner.spill = Some(Arc::new(spill));
            }
            inner.spill.clone().unwrap_or_else(|| unreachable!())
        };
        let at = spill.len.load(Ordering::Relaxed);
        spill
            .file
            .write_all_at(&buffer, at)
            .map_err(io_at(&spill.path))?;
        spill.len.store(at + buffer.len() as u64, Ordering::Relaxed);
        let mut inner = self.inner.lock();
        let mut offset = at;
        for (index, n) in moved {
            let piece = Piece {
                at: offset,
                len: n as u32,
            };
            offset += n as u64;
            // Only the writer thread appends, so the tail is what was written; checked all
            // the same (a changed tail stays in memory, its copy in the file unused).
            let Some(Some(open)) = inner.open.get_mut(index) else {
                continue;
            };
            if open.chunk.bytes().len() != n || open.logged != n {
                continue;
            }
            open.chunk.forget_bytes(SPILL_BYTES + SPILL_BYTES / 2);
            open.logged = 0;
            open.pieces.push(piece);
        }
        Ok(())
    }

    /// Turn the open chunks into a segment, start a new WAL, drop the old one, apply retention.
    pub fn seal(&self) -> Result<(), StoreError> {
        // Log the last bytes first: if writing the segment fails, the WAL still has them all.
        self.flush()?;
        let (seq, sealing) = {
            let mut inner = self.inner.lock();
            if inner.open_bytes == 0 {
                return Ok(());
            }
            let chunks = Arc::new(Generation {
                open: std::mem::take(&mut inner.open),
                spill: inner.spill.take(),
            });
            inner.open_bytes = 0;
            inner.sealing = Some(chunks.clone());
            let seq = inner.wal_seq;
            inner.wal_seq += 1;
            (seq, chunks)
        };
        if let Err(error) = self.start_wal(seq + 1) {
            // The log `seq` is still the one appended to: the chunks go back to it whole,
            // for the next seal to try again.
            let mut inner = self.inner.lock();
            inner.sealing = None;
            inner.wal_seq = seq;
            give_back(&mut inner, &sealing);
            self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
            return Err(error);
        }
        let result = self.write_segment(seq, &sealing.open, sealing.spill.as_deref());
        let mut inner = self.inner.lock();
        inner.sealing = None;
        match result {
            Ok(segment) => {
                inner.segments.push(Arc::new(segment));
                self.counters
                    .segments
                    .store(inner.segments.len() as u64, Ordering::Relaxed);
                drop(inner);
                let _ = fs::remove_file(wal_path(&self.dir, seq));
                if let Some(spill) = &sealing.spill {
                    let _ = fs::remove_file(&spill.path);
                }
                self.retain(crate::history::now_ticks());
                Ok(())
            }
            Err(error) => {
                // The WAL `seq` stays; the next start seals it. Keep the chunks readable.
                self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                give_back(&mut inner, &sealing);
                Err(error)
            }
        }
    }

    fn write_segment(
        &self,
        seq: u64,
        chunks: &[Option<Open>],
        spill: Option<&Spill>,
    ) -> Result<Segment, StoreError> {
        let path = segment_path(&self.dir, seq);
        let tmp = path.with_extension("tmp");
        // Streamed to the file rather than assembled in memory first: at 100,000 tags a
        // segment is tens of MB, and building it in a growing Vec cost about twice that at
        // every seal (BENCHMARKS.md, "Session 5").
        let write = || -> io::Result<u64> {
            let mut file = io::BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
            file.write_all(SEGMENT_MAGIC)?;
            let mut written = SEGMENT_MAGIC.len() as u64;
            let mut table = Vec::with_capacity(chunks.len() * TABLE_ENTRY);
            let (mut samples, mut min, mut max) = (0u64, i64::MAX, i64::MIN);
            let mut spilled = Vec::new();
            for open in chunks {
                let (offset, len, count, lo, hi) = match open {
                    Some(o) if o.chunk.count > 0 => {
                        let offset = written;
                        // A chunk's spilled pieces, read back one tag at a time (the page
                        // cache has them: they were written in the last minutes).
                        spilled.clear();
                        if !o.pieces.is_empty() {
                            let spill = spill.ok_or_else(|| {
                                io::Error::new(io::ErrorKind::NotFound, "spill file missing")
                            })?;
                            spill.read_into(&o.pieces, &mut spilled)?;
                            file.write_all(&spilled)?;
                        }
                        let bytes = o.chunk.bytes();
                        file.write_all(bytes)?;
                        let total = spilled.len() + bytes.len();
                        written += total as u64;
                        samples += u64::from(o.chunk.count);
                        min = min.min(o.chunk.min_ticks);
                        max = max.max(o.chunk.max_ticks);
                        (
                            offset,
                            total as u32,
                            o.chunk.count,
                            o.chunk.min_ticks,
                            o.chunk.max_ticks,
                        )
                    }
                    _ => (0, 0, 0, 0, 0),
                };
                table.extend_from_slice(&offset.to_le_bytes());
                table.extend_from_slice(&len.to_le_bytes());
                table.extend_from_slice(&count.to_le_bytes());
                table.extend_from_slice(&lo.to_le_bytes());
                table.extend_from_slice(&hi.to_le_bytes());
            }
            let table_offset = written;
            let mut trailer = table;
            trailer.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
            let crc = CRC.checksum(&trailer[..chunks.len() * TABLE_ENTRY]);
            trailer.extend_from_slice(&crc.to_le_bytes());
            trailer.extend_from_slice(&table_offset.to_le_bytes());
            trailer.extend_from_slice(&samples.to_le_bytes());
            trailer.extend_from_slice(&min.to_le_bytes());
            trailer.extend_from_slice(&max.to_le_bytes());
            trailer.extend_from_slice(TRAILER_MAGIC);
            file.write_all(&trailer)?;
            written += trailer.len() as u64;
            let file = file.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()?;
            Ok(written)
        };
        let written = write().map_err(io_at(&path))?;
        self.counters
            .segment_bytes
            .fetch_add(written, Ordering::Relaxed);
        Segment::open(&path, seq).map_err(io_at(&path))
    }

    /// Drop the oldest segments beyond the age and size limits, counting what went.
    pub fn retain(&self, now_ticks: i64) {
        let mut inner = self.inner.lock();
        let mut total: u64 =
            inner.segments.iter().map(|s| s.bytes).sum::<u64>() + inner.open_bytes as u64;
        let mut evicted = Vec::new();
        while let Some(oldest) = inner.segments.first() {
            let too_old = self.limits.max_age_ticks > 0
                && oldest.max_ticks < now_ticks - self.limits.max_age_ticks;
            let too_big = self.limits.max_bytes > 0 && total > self.limits.max_bytes;
            if !(too_old || too_big) {
                break;
            }
            let segment = inner.segments.remove(0);
            total -= segment.bytes;
            evicted.push(segment);
        }
        self.counters
            .segments
            .store(inner.segments.len() as u64, Ordering::Relaxed);
        drop(inner);
        for segment in evicted {
            let c = &self.counters;
            c.evicted_segments.fetch_add(1, Ordering::Relaxed);
            c.evicted_samples
                .fetch_add(segment.samples, Ordering::Relaxed);
            c.evicted_bytes.fetch_add(segment.bytes, Ordering::Relaxed);
            c.segment_bytes.fetch_sub(segment.bytes, Ordering::Relaxed);
            tracing::info!(
                segment = %segment.path.display(),
                samples = segment.samples,
                "history: oldest segment evicted by retention"
            );
            let _ = fs::remove_file(&segment.path);
        }
    }

    /// Every stored sample of `tag` with `from <= ticks <= to`, in time order.
    pub fn read(&self, tag: TagId, from: i64, to: i64) -> Vec<Sample> {
        self.read_near(tag, from, to, true, usize::MAX)
    }

    /// Samples of `tag` in `[from, to]`, in time order: at least the `need` nearest to `from`
    /// (`forward`) or to `to` (backward) when there are that many, and perhaps more. Sources
    /// that cannot hold one of those are not read, so a short read of a long range is cheap.
    pub fn read_near(
        &self,
        tag: TagId,
        from: i64,
        to: i64,
        forward: bool,
        need: usize,
    ) -> Vec<Sample> {
        let mut sources = self.sources(tag, from, to);
        if forward {
            sources.sort_by_key(|s| s.0);
        } else {
            sources.sort_by_key(|s| std::cmp::Reverse(s.1));
        }
        let mut out: Vec<Sample> = Vec::new();
        let keep = |s: &Sample| s.ticks >= from && s.ticks <= to;
        for (i, (_, _, source)) in sources.iter().enumerate() {
            if let Some(bytes) = source.bytes(tag) {
                out.extend(decode_all(&bytes).into_iter().filter(keep));
            }
            if out.len() >= need {
                // Devices' clocks may step back; a stable sort keeps arrival order at equal times.
                out.sort_by_key(|s| s.ticks);
                let rest = &sources[i + 1..];
                let done = if forward {
                    let kth = out[need - 1].ticks;
                    rest.iter().all(|s| s.0 > kth)
                } else {
                    let kth = out[out.len() - need].ticks;
                    rest.iter().all(|s| s.1 < kth)
                };
                if done {
                    return out;
                }
            }
        }
        if out.windows(2).any(|w| w[0].ticks > w[1].ticks) {
            out.sort_by_key(|s| s.ticks);
        }
        out
    }

    /// The Good numeric samples of `tag` with `from <= ticks <= to`, as `(ticks, value)`, in
    /// time order: what an aggregate needs, decoded without building a `Sample` each (a
    /// processed read of a day of a 10 Hz tag goes through 864,000 of them).
    pub fn read_numbers(&self, tag: TagId, from: i64, to: i64) -> Vec<(i64, f64)> {
        let mut sources = self.sources(tag, from, to);
        sources.sort_by_key(|s| s.0);
        let mut out: Vec<(i64, f64)> = Vec::new();
        for (_, _, source) in &sources {
            let Some(bytes) = source.bytes(tag) else {
                continue;
            };
            let Some(mut decoder) = Decoder::new(&bytes) else {
                continue;
            };
            while let Some((ticks, number)) = decoder.next_number() {
                if let Some(v) = number.filter(|_| ticks >= from && ticks <= to) {
                    out.push((ticks, v));
                }
            }
        }
        // As `read_near`: a device's clock may step back; stable, so arrival order is kept.
        if out.windows(2).any(|w| w[0].0 > w[1].0) {
            out.sort_by_key(|p| p.0);
        }
        out
    }

    /// The segments and open chunks that may hold samples of `tag` in `[from, to]`, with
    /// their time ranges. What is needed is copied under the lock; files are read outside it.
    fn sources(&self, tag: TagId, from: i64, to: i64) -> Vec<(i64, i64, Source)> {
        let inner = self.inner.lock();
        let mut sources: Vec<(i64, i64, Source)> = inner
            .segments
            .iter()
            .filter(|s| s.max_ticks >= from && s.min_ticks <= to)
            .map(|s| (s.min_ticks, s.max_ticks, Source::File(s.clone())))
            .collect();
        let sealing = inner
            .sealing
            .as_ref()
            .map(|g| (g.open.get(tag.index()), &g.spill));
        let open = Some((inner.open.get(tag.index()), &inner.spill));
        for (open, spill) in [sealing, open].into_iter().flatten() {
            let Some(Some(open)) = open else { continue };
            let c = &open.chunk;
            if c.count > 0 && c.max_ticks >= from && c.min_ticks <= to {
                let source = Source::Open {
                    spill: spill.clone(),
                    pieces: open.pieces.clone(),
                    tail: c.bytes().to_vec(),
                };
                sources.push((c.min_ticks, c.max_ticks, source));
            }
        }
        sources
    }

    /// The last sample strictly before `t`.
    pub fn before(&self, tag: TagId, t: i64) -> Option<Sample> {
        self.read_near(tag, i64::MIN, t.saturating_sub(1), false, 1)
            .pop()
    }

    /// The first sample strictly after `t`.
    pub fn after(&self, tag: TagId, t: i64) -> Option<Sample> {
        self.read_near(tag, t.saturating_add(1), i64::MAX, true, 1)
            .into_iter()
            .next()
    }

    /// Bytes of sealed segments (for retention checks and the benchmark).
    #[cfg(test)]
    pub fn segment_bytes(&self) -> u64 {
        self.inner.lock().segments.iter().map(|s| s.bytes).sum()
    }
}

/// The chunks a WAL file logged, by tag index; stops at the first torn or corrupt record.
fn read_wal(path: &Path) -> io::Result<Vec<Option<Open>>> {
    let bytes = fs::read(path)?;
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap_or_default());
        let Some(record) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        if CRC.checksum(record) != crc {
            break;
        }
        let mut r = 0;
        while r < record.len() {
            let Some((tag, used)) = get_varint(&record[r..]) else {
                break;
            };
            r += used;
            let Some((n, used)) = get_varint(&record[r..]) else {
                break;
            };
            r += used;
            let Some(part) = record.get(r..r + n as usize) else {
                break;
            };
            r += n as usize;
            let tag = tag as usize;
            if chunks.len() <= tag {
                chunks.resize(tag + 1, Vec::new());
            }
            chunks[tag].extend_from_slice(part);
        }
        at += 8 + len;
    }
    Ok(chunks
        .into_iter()
        .map(|bytes| {
            if bytes.is_empty() {
                return None;
            }
            let logged = bytes.len();
            ChunkEncoder::resume(bytes).map(|chunk| Open {
                chunk,
                logged,
                pieces: Vec::new(),
            })
        })
        .collect())
}

/// A failed seal gives the chunks it took back to the open generation. Only the writer thread
/// appends, and it is the one sealing: nothing was added since they were taken, so they come
/// back whole with the file they spilled to.
fn give_back(inner: &mut Inner, sealing: &Generation) {
    if inner.open.iter().all(Option::is_none) {
        inner.open = sealing.open.clone();
        inner.open_bytes = inner.open.iter().flatten().map(Open::len).sum();
        inner.spill = sealing.spill.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_age_ticks: 0,
            max_bytes: 0,
            seal_bytes: 1 << 20,
            fsync: false,
        }
    }

    fn fill(store: &Store, tag: u32, from: i64, n: i64) {
        for i in from..from + n {
            store.append(
                TagId(tag),
                Kind::Float,
                i * 1_000_000,
                Some(&Value::Float(i as f64)),
                Quality::GOOD,
            );
        }
    }

    fn values(samples: &[Sample]) -> Vec<i64> {
        samples
            .iter()
            .map(|s| s.value.as_ref().and_then(Value::as_f64).unwrap() as i64)
            .collect()
    }

    #[test]
    fn reads_span_segments_sealing_and_open_chunks_and_survive_a_reopen() {
        let dir = std::env::temp_dir().join(format!("fgh-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        {
            let store = Store::open(&dir, limits()).unwrap();
            fill(&store, 3, 0, 100);
            store.seal().unwrap();
            fill(&store, 3, 100, 100);
            fill(&store, 1, 0, 10);
            store.flush().unwrap();
            assert_eq!(
                values(&store.read(TagId(3), 50 * 1_000_000, 149 * 1_000_000)),
                (50..150).collect::<Vec<_>>()
            );
            assert_eq!(store.before(TagId(3), 0), None);
            assert_eq!(
                values(&[store.before(TagId(3), 150 * 1_000_000).unwrap()]),
                vec![149]
            );
            assert_eq!(
                values(&[store.after(TagId(3), 150 * 1_000_000).unwrap()]),
                vec![151]
            );
            // Dropped without sealing: like a kill -9 after the flush.
        }
        let store = Store::open(&dir, limits()).unwrap();
        assert_eq!(
            values(&store.read(TagId(3), 0, i64::MAX)),
            (0..200).collect::<Vec<_>>()
        );
        assert_eq!(store.read(TagId(1), 0, i64::MAX).len(), 10);
        assert_eq!(store.read(TagId(2), 0, i64::MAX).len(), 0);
        fill(&store, 3, 200, 5);
        assert_eq!(store.read(TagId(3), 0, i64::MAX).len(), 205);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn open_chunks_spill_to_a_file_and_read_seal_and_replay_whole() {
        let dir = std::env::temp_dir().join(format!("fgh-spill-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        {
            let store = Store::open(&dir, limits()).unwrap();
            // 40 flushes of 50 samples to tag 2 and of 1 to tag 0: tag 2 spills often.
            for round in 0..40 {
                fill(&store, 2, round * 50, 50);
                fill(&store, 0, round, 1);
                store.flush().unwrap();
                let inner = store.inner.lock();
                let tail = inner.open[2].as_ref().unwrap().chunk.bytes().len();
                assert!(tail < SPILL_BYTES, "tail of {tail} bytes kept in memory");
            }
            let spill = spill_path(&dir, 1);
            assert!(fs::metadata(&spill).unwrap().len() > 0);
            fill(&store, 2, 2000, 7);
            assert_eq!(
                values(&store.read(TagId(2), 0, i64::MAX)),
                (0..2007).collect::<Vec<_>>()
            );
            assert_eq!(
                values(&store.read(TagId(2), 1990 * 1_000_000, i64::MAX)),
                (1990..2007).collect::<Vec<_>>()
            );
            store.seal().unwrap();
            assert!(!spill.exists());
            assert_eq!(
                values(&store.read(TagId(2), 0, i64::MAX)),
                (0..2007).collect::<Vec<_>>()
            );
            assert_eq!(values(&store.read(TagId(0), 0, i64::MAX)).len(), 40);
            // A second generation spills too, then the store is dropped unsealed (a kill -9
            // after the flush): the WAL alone brings it back.
            for round in 0..10 {
                fill(&store, 2, 2007 + round * 50, 50);
                store.flush().unwrap();
            }
            assert!(spill_path(&dir, 2).exists());
        }
        let store = Store::open(&dir, limits()).unwrap();
        assert!(!spill_path(&dir, 2).exists());
        assert_eq!(
            values(&store.read(TagId(2), 0, i64::MAX)),
            (0..2507).collect::<Vec<_>>()
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_seal_that_cannot_start_the_next_log_keeps_every_sample() {
        let dir = std::env::temp_dir().join(format!("fgh-nowal-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        {
            let store = Store::open(&dir, limits()).unwrap();
            fill(&store, 0, 0, 10);
            let next = store.inner.lock().wal_seq + 1;
            // A directory where the next log file should go: opening it fails (EISDIR).
            fs::create_dir_all(wal_path(&dir, next)).unwrap();
            assert!(store.seal().is_err());
            assert_eq!(store.counters.write_errors.load(Ordering::Relaxed), 1);
            assert_eq!(
                values(&store.read(TagId(0), 0, i64::MAX)),
                (0..10).collect::<Vec<_>>()
            );
            fill(&store, 0, 10, 10);
            store.flush().unwrap();
            fs::remove_dir(wal_path(&dir, next)).unwrap();
            store.seal().unwrap();
            assert_eq!(
                values(&store.read(TagId(0), 0, i64::MAX)),
                (0..20).collect::<Vec<_>>()
            );
        }
        let store = Store::open(&dir, limits()).unwrap();
        assert_eq!(
            values(&store.read(TagId(0), 0, i64::MAX)),
            (0..20).collect::<Vec<_>>()
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_wal_tail_loses_only_the_last_flush() {
        let dir = std::env::temp_dir().join(format!("fgh-torn-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        {
            let store = Store::open(&dir, limits()).unwrap();
            fill(&store, 0, 0, 10);
            store.flush().unwrap();
            fill(&store, 0, 10, 10);
            store.flush().unwrap();
        }
        let wal = wal_path(&dir, 1);
        let len = fs::metadata(&wal).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&wal)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let store = Store::open(&dir, limits()).unwrap();
        assert_eq!(
            values(&store.read(TagId(0), 0, i64::MAX)),
            (0..10).collect::<Vec<_>>()
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_size_limit_evicts_the_oldest_segments_and_counts_them() {
        let dir = std::env::temp_dir().join(format!("fgh-evict-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let store = Store::open(
            &dir,
            Limits {
                max_bytes: 2500,
                ..limits()
            },
        )
        .unwrap();
        for round in 0..10 {
            fill(&store, 0, round * 100, 100);
            store.seal().unwrap();
        }
        let kept = store.read(TagId(0), 0, i64::MAX);
        assert!(!kept.is_empty());
        assert_eq!(values(&kept).last(), Some(&999));
        let evicted = store.counters.evicted_samples.load(Ordering::Relaxed);
        assert_eq!(evicted + kept.len() as u64, 1000);
        assert!(store.segment_bytes() <= 2500);
        fs::remove_dir_all(&dir).unwrap();
    }
}
