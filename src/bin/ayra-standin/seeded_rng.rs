//! A tiny deterministic pseudo-random generator seeded from a conversation id.
//!
//! Not for anything secret: it only makes fake content that is stable per id.

/// SplitMix64, seeded with the FNV-1a hash of a string.
#[derive(Debug, Clone)]
pub struct SeededRng {
    state: u64,
}

impl SeededRng {
    /// A generator whose sequence depends only on `seed`.
    pub fn from_seed(seed: &str) -> Self {
        const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
        let state = seed.bytes().fold(FNV_OFFSET, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
        });
        Self { state }
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut mixed = self.state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^ (mixed >> 31)
    }

    /// A number in `low..=high` (`low` when the range is empty).
    pub fn in_range(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        let span = high - low + 1;
        low + self.next_u64() % span
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let index = self.next_u64() % items.len() as u64;
        &items[index as usize]
    }

    /// A string of `length` characters drawn from `alphabet` (ASCII).
    pub fn token(&mut self, alphabet: &[u8], length: usize) -> String {
        (0..length)
            .map(|_| char::from(*self.pick(alphabet)))
            .collect()
    }
}
