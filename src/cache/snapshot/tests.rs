//! Unit tests of the snapshot file: round trip, expiry, damage and foreign files.

use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, StatusCode};

use super::*;
use crate::cache::policy::{EntryKind, Lifetime};
use crate::cache::stored_body::StoredBody;
use crate::domain::{ConversationId, Fingerprint, Flags, Partition};

fn key(id: &str, partition: Partition) -> CacheKey {
    CacheKey {
        partition,
        id: ConversationId::parse(id).unwrap(),
        flags: Flags {
            transcript: false,
            ..Flags::default()
        },
    }
}

fn entry(received_at: Instant, fresh: u64, usable: u64, hard: Option<u64>) -> Arc<CachedResponse> {
    let headers = vec![(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )];
    // Over 1 KiB: stored in two parts, which a record joins and splits again.
    let body = format!(
        "{{\"data\":{{\"id\":\"conv_1\",\"status\":\"completed\",\"note\":\"{}\"}}}}",
        "x".repeat(1500)
    );
    Arc::new(CachedResponse::restore(
        StatusCode::OK,
        headers,
        StoredBody::copy_from(body.as_bytes()),
        received_at,
        Duration::from_secs(3),
        Lifetime {
            kind: EntryKind::Complete,
            fresh_for: Duration::from_secs(fresh),
            usable_for: Duration::from_secs(usable),
            hard_in: hard.map(Duration::from_secs),
        },
    ))
}

fn later() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

fn read_all(path: &Path) -> Result<(Vec<(CacheKey, CachedResponse)>, u64), SnapshotError> {
    let mut entries = Vec::new();
    let (_, skipped) = read(path, |key, entry| entries.push((key, entry)))?;
    Ok((entries, skipped))
}

#[test]
fn entries_survive_a_round_trip_with_their_instants() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot");
    let now = Instant::now();
    let received = now - Duration::from_secs(10);
    let fingerprint = Fingerprint::of(b"Bearer k");
    let live = entry(received, 100, 200, Some(300));
    let written = write(
        &path,
        [(
            key("conv_1", Partition::Key(fingerprint)),
            Arc::clone(&live),
        )]
        .into_iter(),
        later(),
    )
    .unwrap();
    assert_eq!(written, 1);
    let (entries, skipped) = read_all(&path).unwrap();
    assert_eq!(skipped, 0);
    let (restored_key, restored) = &entries[0];
    assert_eq!(*restored_key, key("conv_1", Partition::Key(fingerprint)));
    assert_eq!(restored.body(), live.body());
    assert_eq!(restored.headers(), live.headers());
    assert_eq!(restored.upstream_age(), Duration::from_secs(3));
    let close = |a: Instant, b: Instant| {
        let gap = if a > b { a - b } else { b - a };
        assert!(gap < Duration::from_millis(50), "{gap:?}");
    };
    close(restored.received_at(), live.received_at());
    close(restored.fresh_until(), live.fresh_until());
    close(restored.usable_until(), live.usable_until());
    close(restored.hard().unwrap(), live.hard().unwrap());
}

#[test]
fn dead_entries_are_not_written_and_every_partition_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot");
    let now = Instant::now();
    let entries = [
        (
            key("conv_a", Partition::Anonymous),
            entry(now, 60, 60, None),
        ),
        (key("conv_s", Partition::Shared), entry(now, 60, 60, None)),
        (
            key("conv_dead", Partition::Shared),
            entry(now - Duration::from_secs(100), 10, 20, None),
        ),
    ];
    assert_eq!(write(&path, entries.into_iter(), later()).unwrap(), 2);
    let (read_back, _) = read_all(&path).unwrap();
    let ids: Vec<_> = read_back
        .iter()
        .map(|(k, _)| (k.id.as_str().to_owned(), k.partition))
        .collect();
    assert_eq!(
        ids,
        [
            ("conv_a".to_owned(), Partition::Anonymous),
            ("conv_s".to_owned(), Partition::Shared)
        ]
    );
}

#[test]
fn the_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot");
    write(&path, std::iter::empty(), later()).unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!temporary_path(&path).exists());
}

#[test]
fn running_out_of_time_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot");
    let entries = [(
        key("conv_1", Partition::Anonymous),
        entry(Instant::now(), 60, 60, None),
    )];
    let past = Instant::now() - Duration::from_millis(1);
    assert!(matches!(
        write(&path, entries.into_iter(), past),
        Err(SnapshotError::OutOfTime)
    ));
    assert!(!path.exists() && !temporary_path(&path).exists());
}

#[test]
fn truncated_corrupted_and_foreign_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot");
    let entries = (0..5).map(|i| {
        let id = format!("conv_{i}");
        (
            key(&id, Partition::Shared),
            entry(Instant::now(), 60, 60, None),
        )
    });
    write(&path, entries, later()).unwrap();
    let good = fs::read(&path).unwrap();

    for cut in [5, 12, good.len() / 2, good.len() - 1] {
        fs::write(&path, &good[..cut]).unwrap();
        assert!(read_all(&path).is_err(), "cut at {cut}");
    }
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    fs::write(&path, &flipped).unwrap();
    assert!(read_all(&path).is_err());

    let mut foreign = good.clone();
    foreign[8..12].copy_from_slice(&99u32.to_le_bytes());
    fs::write(&path, &foreign).unwrap();
    assert!(matches!(
        read_all(&path),
        Err(SnapshotError::Foreign(Some(99)))
    ));
    fs::write(&path, b"GIF89a not a snapshot").unwrap();
    assert!(matches!(read_all(&path), Err(SnapshotError::Foreign(None))));
    let missing = read_all(&dir.path().join("absent"));
    assert!(matches!(missing, Err(SnapshotError::Io(e)) if e.kind() == io::ErrorKind::NotFound));
}
