//! A shared value's bytes: a tag naming the format, then the record in clear or sealed with AES-256-GCM.
//!
//! Layout: `AYRA`, the record format (u32, little-endian), a mode byte
//! (0: clear, 1: sealed), then the postcard record; sealed, a fresh 96-bit
//! nonce and the ciphertext with its tag. The Redis key is the additional
//! authenticated data, so a sealed value moved under another key does not
//! open. A replica with a key reads only sealed values, one without reads
//! only clear ones: nothing a third party wrote in clear is ever served.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use super::super::record::FORMAT;

const MAGIC: &[u8; 4] = b"AYRA";
const HEADER_LEN: usize = MAGIC.len() + 4 + 1;
const CLEAR: u8 = 0;
const SEALED: u8 = 1;

/// Why a value is not a record this replica may read (each is a miss).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// Not ours, or another record format.
    Foreign,
    /// In clear while this replica seals, or sealed while it does not.
    WrongMode,
    /// Sealed under another key, moved, or altered.
    Tampered,
}

/// Seals and opens values with the configured key, if any.
pub struct Sealer {
    key: Option<LessSafeKey>,
    random: SystemRandom,
}

impl Sealer {
    /// With `key`, values are sealed; without, they are stored in clear.
    pub fn new(key: Option<[u8; 32]>) -> Sealer {
        Sealer {
            key: key.map(|key| {
                LessSafeKey::new(
                    UnboundKey::new(&AES_256_GCM, &key).expect("32 bytes is an AES-256 key"),
                )
            }),
            random: SystemRandom::new(),
        }
    }

    /// `record` as the value stored under `name`; none if no nonce could be drawn.
    pub fn seal(&self, name: &str, record: Vec<u8>) -> Option<Vec<u8>> {
        let mut value = Vec::with_capacity(HEADER_LEN + NONCE_LEN + record.len() + 16);
        value.extend_from_slice(MAGIC);
        value.extend_from_slice(&FORMAT.to_le_bytes());
        let Some(key) = &self.key else {
            value.push(CLEAR);
            value.extend_from_slice(&record);
            return Some(value);
        };
        value.push(SEALED);
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).ok()?;
        value.extend_from_slice(&nonce);
        let mut sealed = record;
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(name.as_bytes()),
            &mut sealed,
        )
        .ok()?;
        value.extend_from_slice(&sealed);
        Some(value)
    }

    /// The record stored as `value` under `name`.
    pub fn open(&self, name: &str, mut value: Vec<u8>) -> Result<Vec<u8>, Unreadable> {
        if value.len() < HEADER_LEN || &value[..4] != MAGIC || value[4..8] != FORMAT.to_le_bytes() {
            return Err(Unreadable::Foreign);
        }
        match (value[8], &self.key) {
            (CLEAR, None) => Ok(value.split_off(HEADER_LEN)),
            (SEALED, Some(key)) => {
                let mut sealed = value.split_off(HEADER_LEN);
                if sealed.len() < NONCE_LEN {
                    return Err(Unreadable::Tampered);
                }
                let mut ciphertext = sealed.split_off(NONCE_LEN);
                let nonce =
                    Nonce::try_assume_unique_for_key(&sealed).map_err(|_| Unreadable::Tampered)?;
                let len = key
                    .open_in_place(nonce, Aad::from(name.as_bytes()), &mut ciphertext)
                    .map_err(|_| Unreadable::Tampered)?
                    .len();
                ciphertext.truncate(len);
                Ok(ciphertext)
            }
            (CLEAR | SEALED, _) => Err(Unreadable::WrongMode),
            _ => Err(Unreadable::Foreign),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORD: &[u8] = b"the transcript: hello, I would like to cancel";

    #[test]
    fn clear_values_round_trip() {
        let sealer = Sealer::new(None);
        let value = sealer.seal("k", RECORD.to_vec()).unwrap();
        assert_eq!(sealer.open("k", value).unwrap(), RECORD);
    }

    #[test]
    fn sealed_values_hide_the_record_and_open_only_under_their_name() {
        let sealer = Sealer::new(Some([7; 32]));
        let value = sealer.seal("k", RECORD.to_vec()).unwrap();
        assert!(!value.windows(10).any(|window| window == &RECORD[..10]));
        assert_eq!(sealer.open("k", value.clone()).unwrap(), RECORD);
        assert_eq!(
            sealer.open("other", value.clone()),
            Err(Unreadable::Tampered)
        );
        let mut flipped = value.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(sealer.open("k", flipped), Err(Unreadable::Tampered));
        let other_key = Sealer::new(Some([8; 32]));
        assert_eq!(
            other_key.open("k", value.clone()),
            Err(Unreadable::Tampered)
        );
        assert_eq!(
            Sealer::new(None).open("k", value),
            Err(Unreadable::WrongMode)
        );
    }

    #[test]
    fn a_sealing_replica_refuses_clear_values() {
        let clear = Sealer::new(None).seal("k", RECORD.to_vec()).unwrap();
        assert_eq!(
            Sealer::new(Some([7; 32])).open("k", clear),
            Err(Unreadable::WrongMode)
        );
    }

    #[test]
    fn foreign_bytes_and_other_formats_are_refused() {
        let sealer = Sealer::new(None);
        assert_eq!(sealer.open("k", b"".to_vec()), Err(Unreadable::Foreign));
        assert_eq!(
            sealer.open("k", b"hello world".to_vec()),
            Err(Unreadable::Foreign)
        );
        let mut value = sealer.seal("k", RECORD.to_vec()).unwrap();
        value[4] = value[4].wrapping_add(1);
        assert_eq!(sealer.open("k", value), Err(Unreadable::Foreign));
    }
}
