//! The `include_*` query flags of the conversation route.

/// Which optional sections a conversation response carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flags {
    /// `include_transcript`
    pub transcript: bool,
    /// `include_recording`
    pub recording: bool,
    /// `include_analytics`
    pub analytics: bool,
}

impl Default for Flags {
    fn default() -> Self {
        Self {
            transcript: true,
            recording: true,
            analytics: true,
        }
    }
}

impl Flags {
    /// Number of distinct flag combinations, for tables indexed by [`Flags::index`].
    pub const COMBINATIONS: usize = 8;

    /// Reads the flags from a raw query string (without `?`). An absent flag
    /// is `true`; `true`/`false`/`1`/`0` are read in any case; a repeated
    /// flag takes its last value; other parameters are ignored. An unreadable
    /// value is an error naming the parameter.
    pub fn from_query(query: &str) -> Result<Self, String> {
        let mut flags = Self::default();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match name {
                "include_transcript" => &mut flags.transcript,
                "include_recording" => &mut flags.recording,
                "include_analytics" => &mut flags.analytics,
                _ => continue,
            };
            *slot = parse_boolean(value)
                .ok_or_else(|| format!("Invalid value for {name}: expected true or false"))?;
        }
        Ok(flags)
    }

    /// A distinct number in `0..COMBINATIONS` for each combination.
    pub fn index(self) -> usize {
        usize::from(self.transcript)
            | usize::from(self.recording) << 1
            | usize::from(self.analytics) << 2
    }
}

fn parse_boolean(value: &str) -> Option<bool> {
    if value.eq_ignore_ascii_case("true") || value == "1" {
        Some(true)
    } else if value.eq_ignore_ascii_case("false") || value == "0" {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_flags_are_true() {
        assert_eq!(Flags::from_query(""), Ok(Flags::default()));
        assert_eq!(Flags::from_query("other=1"), Ok(Flags::default()));
    }

    #[test]
    fn flags_are_read_in_any_case() {
        let flags = Flags::from_query(
            "include_transcript=FALSE&include_recording=0&include_analytics=True",
        );
        assert_eq!(
            flags,
            Ok(Flags {
                transcript: false,
                recording: false,
                analytics: true
            })
        );
    }

    #[test]
    fn unreadable_flag_is_an_error() {
        assert!(Flags::from_query("include_analytics=yes").is_err());
        assert!(Flags::from_query("include_analytics").is_err());
    }

    #[test]
    fn every_combination_has_its_own_index() {
        let mut seen = [false; Flags::COMBINATIONS];
        for bits in 0..Flags::COMBINATIONS {
            let flags = Flags {
                transcript: bits & 1 != 0,
                recording: bits & 2 != 0,
                analytics: bits & 4 != 0,
            };
            seen[flags.index()] = true;
        }
        assert!(seen.iter().all(|seen| *seen));
    }
}
