//! Warm restarts: the cache written to a file on shutdown and read back at start.
//!
//! The file: the magic `AYRASNAP`, a format version, then records (a length
//! and a postcard-encoded [`Record`] each), a zero length, the record count
//! and a CRC-32 of everything before it. Instants are stored as wall-clock
//! milliseconds since the Unix epoch, the only clock two processes share.
//! The file holds transcripts and pre-signed URLs: it is written mode 0600
//! through a temporary file, fsynced and renamed into place.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use super::entry::{CachedResponse, Freshness};
use super::key::{CacheKey, Flags};
use super::policy::{EntryKind, Lifetime};
use crate::auth::{Fingerprint, Partition};
use crate::route::ConversationId;

const MAGIC: &[u8; 8] = b"AYRASNAP";
/// Bumped whenever [`Record`] changes shape; other versions are a cold start.
const VERSION: u32 = 1;
/// Records larger than this are corruption, not data.
const MAX_RECORD_BYTES: u32 = 256 * 1024 * 1024;

/// Why a snapshot could not be read (each is a cold start, never a failed start).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read the snapshot: {0}")]
    Io(#[from] io::Error),
    #[error("not a snapshot of this format (version {0:?})")]
    Foreign(Option<u32>),
    #[error("the snapshot is damaged: {0}")]
    Damaged(&'static str),
    #[error("the snapshot write ran out of time")]
    OutOfTime,
}

/// One entry as written.
#[derive(Serialize, Deserialize)]
struct Record {
    partition: Option<[u8; 32]>,
    shared: bool,
    id: String,
    flags: (bool, bool, bool),
    status: u16,
    kind: u8,
    headers: Vec<(String, Vec<u8>)>,
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
    received_ms: i128,
    upstream_age_secs: u64,
    fresh_until_ms: i128,
    usable_until_ms: i128,
    hard_ms: Option<i128>,
}

/// Maps instants to wall-clock milliseconds and back, around one reading of both clocks.
#[derive(Clone, Copy)]
pub struct Clocks {
    instant: Instant,
    wall_ms: i128,
}

impl Clocks {
    /// Both clocks, now.
    pub fn now() -> Clocks {
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Clocks {
            instant: Instant::now(),
            wall_ms: wall.as_millis() as i128,
        }
    }

    fn to_wall(self, at: Instant) -> i128 {
        if at >= self.instant {
            self.wall_ms + at.duration_since(self.instant).as_millis() as i128
        } else {
            self.wall_ms - self.instant.duration_since(at).as_millis() as i128
        }
    }

    fn to_instant(self, wall_ms: i128) -> Instant {
        let offset = Duration::from_millis((wall_ms - self.wall_ms).unsigned_abs() as u64);
        if wall_ms >= self.wall_ms {
            self.instant + offset
        } else {
            self.instant.checked_sub(offset).unwrap_or(self.instant)
        }
    }
}

/// Writes `entries` that are still usable to `path`, giving up at `deadline`.
/// Returns how many were written.
pub fn write(
    path: &Path,
    entries: impl Iterator<Item = (CacheKey, std::sync::Arc<CachedResponse>)>,
    deadline: Instant,
) -> Result<u64, SnapshotError> {
    let temporary = temporary_path(path);
    let result = write_to(&temporary, entries, deadline);
    match result {
        Ok(count) => {
            fs::rename(&temporary, path)?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)?.sync_all()?;
            }
            Ok(count)
        }
        Err(error) => {
            let _ = fs::remove_file(&temporary);
            Err(error)
        }
    }
}

fn write_to(
    temporary: &Path,
    entries: impl Iterator<Item = (CacheKey, std::sync::Arc<CachedResponse>)>,
    deadline: Instant,
) -> Result<u64, SnapshotError> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(temporary)?;
    let mut out = Checksummed::new(BufWriter::new(file));
    out.write_all(MAGIC)?;
    out.write_all(&VERSION.to_le_bytes())?;
    let clocks = Clocks::now();
    let mut count = 0u64;
    for (key, entry) in entries {
        if Instant::now() >= deadline {
            return Err(SnapshotError::OutOfTime);
        }
        if entry.freshness(clocks.instant) == Freshness::Dead {
            continue;
        }
        let bytes = postcard::to_stdvec(&record(&key, &entry, clocks))
            .map_err(|_| SnapshotError::Damaged("an entry could not be encoded"))?;
        out.write_all(&(bytes.len() as u32).to_le_bytes())?;
        out.write_all(&bytes)?;
        count += 1;
    }
    out.write_all(&0u32.to_le_bytes())?;
    out.write_all(&count.to_le_bytes())?;
    let crc = out.crc();
    let mut writer = out.into_inner();
    writer.write_all(&crc.to_le_bytes())?;
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(count)
}

fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

fn record(key: &CacheKey, entry: &CachedResponse, clocks: Clocks) -> Record {
    let (partition, shared) = match key.partition {
        Partition::Anonymous => (None, false),
        Partition::Key(fingerprint) => (Some(fingerprint.digest()), false),
        Partition::Shared => (None, true),
    };
    Record {
        partition,
        shared,
        id: key.id.as_str().to_owned(),
        flags: (
            key.flags.transcript,
            key.flags.recording,
            key.flags.analytics,
        ),
        status: entry.status().as_u16(),
        kind: match entry.kind() {
            EntryKind::Complete => 0,
            EntryKind::Provisional => 1,
            EntryKind::NotFound => 2,
        },
        headers: entry
            .headers()
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect(),
        body: entry.body().to_vec(),
        received_ms: clocks.to_wall(entry.received_at()),
        upstream_age_secs: entry.upstream_age().as_secs(),
        fresh_until_ms: clocks.to_wall(entry.fresh_until()),
        usable_until_ms: clocks.to_wall(entry.usable_until()),
        hard_ms: entry.hard().map(|hard| clocks.to_wall(hard)),
    }
}

/// Reads a snapshot: every record whose `usable_until` is still ahead, and
/// how many were skipped because it was not. `accept` receives each entry.
pub fn read(
    path: &Path,
    mut accept: impl FnMut(CacheKey, CachedResponse),
) -> Result<(u64, u64), SnapshotError> {
    let mut input = Checksummed::new(BufReader::new(File::open(path)?));
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic)?;
    let version = read_u32(&mut input)?;
    if &magic != MAGIC || version != VERSION {
        return Err(SnapshotError::Foreign((&magic == MAGIC).then_some(version)));
    }
    let clocks = Clocks::now();
    let (mut loaded, mut skipped) = (0u64, 0u64);
    let mut buffer = Vec::new();
    loop {
        let len = read_u32(&mut input)?;
        if len == 0 {
            break;
        }
        if len > MAX_RECORD_BYTES {
            return Err(SnapshotError::Damaged("a record is impossibly large"));
        }
        buffer.resize(len as usize, 0);
        input.read_exact(&mut buffer)?;
        let record: Record = postcard::from_bytes(&buffer)
            .map_err(|_| SnapshotError::Damaged("a record cannot be decoded"))?;
        match restore(record, clocks) {
            Some((key, entry)) if entry.freshness(clocks.instant) != Freshness::Dead => {
                accept(key, entry);
                loaded += 1;
            }
            _ => skipped += 1,
        }
    }
    let mut count = [0u8; 8];
    input.read_exact(&mut count)?;
    let expected = input.crc();
    let crc = read_u32(&mut input.into_inner())?;
    if crc != expected || u64::from_le_bytes(count) != loaded + skipped {
        return Err(SnapshotError::Damaged(
            "the checksum or count does not match",
        ));
    }
    Ok((loaded, skipped))
}

fn read_u32(input: &mut impl Read) -> io::Result<u32> {
    let mut bytes = [0u8; 4];
    input.read_exact(&mut bytes)?;
    Ok(u32::from_le_bytes(bytes))
}

/// An entry from its record, or none when the record makes no sense.
fn restore(record: Record, clocks: Clocks) -> Option<(CacheKey, CachedResponse)> {
    let partition = match (record.partition, record.shared) {
        (Some(digest), false) => Partition::Key(Fingerprint::from_digest(digest)),
        (None, true) => Partition::Shared,
        (None, false) => Partition::Anonymous,
        (Some(_), true) => return None,
    };
    let (transcript, recording, analytics) = record.flags;
    let key = CacheKey {
        partition,
        id: ConversationId::parse(&record.id).ok()?,
        flags: Flags {
            transcript,
            recording,
            analytics,
        },
    };
    let mut headers = HeaderMap::new();
    for (name, value) in record.headers {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).ok()?,
            HeaderValue::from_bytes(&value).ok()?,
        );
    }
    let received_at = clocks.to_instant(record.received_ms);
    let since_receipt = |wall_ms: i128| {
        clocks
            .to_instant(wall_ms)
            .saturating_duration_since(received_at)
    };
    let lifetime = Lifetime {
        kind: match record.kind {
            0 => EntryKind::Complete,
            1 => EntryKind::Provisional,
            2 => EntryKind::NotFound,
            _ => return None,
        },
        fresh_for: since_receipt(record.fresh_until_ms),
        usable_for: since_receipt(record.usable_until_ms),
        hard_in: record.hard_ms.map(since_receipt),
    };
    let entry = CachedResponse::restore(
        StatusCode::from_u16(record.status).ok()?,
        headers,
        Bytes::from(record.body),
        received_at,
        Duration::from_secs(record.upstream_age_secs),
        lifetime,
    );
    Some((key, entry))
}

/// A reader or writer that keeps a CRC-32 of the bytes through it.
struct Checksummed<T> {
    inner: T,
    hasher: crc32fast::Hasher,
}

impl<T> Checksummed<T> {
    fn new(inner: T) -> Self {
        Checksummed {
            inner,
            hasher: crc32fast::Hasher::new(),
        }
    }

    fn crc(&self) -> u32 {
        self.hasher.clone().finalize()
    }

    fn into_inner(self) -> T {
        self.inner
    }
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Checksummed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.hasher.update(&buf[..read]);
        Ok(read)
    }
}

#[cfg(test)]
mod tests;
