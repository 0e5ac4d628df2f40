//! Warm restarts: the cache written to a file on shutdown and read back at start.
//!
//! The file: the magic `AYRASNAP`, a format version, then records (a length
//! and a postcard-encoded [`record::Record`] each), a zero length, the record count
//! and a CRC-32 of everything before it. Instants are stored as wall-clock
//! milliseconds since the Unix epoch, the only clock two processes share.
//! The file holds transcripts and pre-signed URLs: it is written mode 0600
//! through a temporary file, fsynced and renamed into place.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::entry::{CachedResponse, Freshness};
use super::key::CacheKey;
use super::record::{self, Clocks};

const MAGIC: &[u8; 8] = b"AYRASNAP";
/// The record format; other versions are a cold start.
const VERSION: u32 = record::FORMAT;
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
        if entry.freshness(clocks.now_instant()) == Freshness::Dead {
            continue;
        }
        let bytes = record::encode(&key, &entry, clocks)
            .ok_or(SnapshotError::Damaged("an entry could not be encoded"))?;
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
        let record = record::Record::decode(&buffer)
            .ok_or(SnapshotError::Damaged("a record cannot be decoded"))?;
        match record.restore(clocks) {
            Some((key, entry)) if entry.freshness(clocks.now_instant()) != Freshness::Dead => {
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
