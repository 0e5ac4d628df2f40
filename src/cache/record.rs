//! One entry as bytes another process can read: the record shared by warm-restart snapshots and the Redis tier.
//!
//! A [`Record`] holds the key, what a HIT is served from, and the entry's
//! instants as wall-clock milliseconds since the Unix epoch (the only clock
//! two processes share), encoded with postcard. Whoever changes its shape
//! bumps [`FORMAT`], so a reader never misreads an older or newer record.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderName, StatusCode};
use serde::{Deserialize, Serialize};

use super::entry::{self, CachedResponse};
use super::key::CacheKey;
use super::policy::{EntryKind, Lifetime};
use super::stored_body::StoredBody;
use crate::domain::{ConversationId, Fingerprint, Flags, Partition};

/// The shape of [`Record`]; bumped whenever it changes.
pub const FORMAT: u32 = 1;

/// One entry as written.
#[derive(Serialize, Deserialize)]
pub struct Record {
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

    /// The instant these clocks were read at.
    pub fn now_instant(self) -> Instant {
        self.instant
    }

    /// The wall clock as read, in milliseconds since the Unix epoch.
    pub fn wall_ms(self) -> i128 {
        self.wall_ms
    }

    /// `at` as wall-clock milliseconds since the Unix epoch.
    pub fn to_wall(self, at: Instant) -> i128 {
        if at >= self.instant {
            self.wall_ms + at.duration_since(self.instant).as_millis() as i128
        } else {
            self.wall_ms - self.instant.duration_since(at).as_millis() as i128
        }
    }

    /// Wall-clock milliseconds as an instant of this process.
    pub fn to_instant(self, wall_ms: i128) -> Instant {
        let offset = Duration::from_millis((wall_ms - self.wall_ms).unsigned_abs() as u64);
        if wall_ms >= self.wall_ms {
            self.instant + offset
        } else {
            self.instant.checked_sub(offset).unwrap_or(self.instant)
        }
    }
}

/// `entry` under `key` as postcard bytes; none if it cannot be encoded.
pub fn encode(key: &CacheKey, entry: &Arc<CachedResponse>, clocks: Clocks) -> Option<Vec<u8>> {
    postcard::to_stdvec(&Record::new(key, entry, clocks)).ok()
}

impl Record {
    /// The record of `entry` under `key`.
    pub fn new(key: &CacheKey, entry: &CachedResponse, clocks: Clocks) -> Record {
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

    /// A record from postcard bytes; none when they are not one.
    pub fn decode(bytes: &[u8]) -> Option<Record> {
        postcard::from_bytes(bytes).ok()
    }

    /// The entry's URL deadline, as wall-clock milliseconds.
    pub fn hard_ms(&self) -> Option<i128> {
        self.hard_ms
    }

    /// The key and entry this record holds, or none when it makes no sense.
    pub fn restore(self, clocks: Clocks) -> Option<(CacheKey, CachedResponse)> {
        let partition = match (self.partition, self.shared) {
            (Some(digest), false) => Partition::Key(Fingerprint::from_digest(digest)),
            (None, true) => Partition::Shared,
            (None, false) => Partition::Anonymous,
            (Some(_), true) => return None,
        };
        let (transcript, recording, analytics) = self.flags;
        let key = CacheKey {
            partition,
            id: ConversationId::parse(&self.id).ok()?,
            flags: Flags {
                transcript,
                recording,
                analytics,
            },
        };
        let headers = self
            .headers
            .into_iter()
            .map(|(name, value)| {
                Some((
                    HeaderName::from_bytes(name.as_bytes()).ok()?,
                    entry::kept_value(&value)?,
                ))
            })
            .collect::<Option<Vec<_>>>()?;
        let received_at = clocks.to_instant(self.received_ms);
        let since_receipt = |wall_ms: i128| {
            clocks
                .to_instant(wall_ms)
                .saturating_duration_since(received_at)
        };
        let lifetime = Lifetime {
            kind: match self.kind {
                0 => EntryKind::Complete,
                1 => EntryKind::Provisional,
                2 => EntryKind::NotFound,
                _ => return None,
            },
            fresh_for: since_receipt(self.fresh_until_ms),
            usable_for: since_receipt(self.usable_until_ms),
            hard_in: self.hard_ms.map(since_receipt),
        };
        let entry = CachedResponse::restore(
            StatusCode::from_u16(self.status).ok()?,
            headers,
            StoredBody::copy_from(&self.body),
            received_at,
            Duration::from_secs(self.upstream_age_secs),
            lifetime,
        );
        Some((key, entry))
    }
}
