//! `read_flags` over arbitrary query strings, against an independent reading.
//!
//! Checks: no panic; the same answer as a straightforward re-implementation
//! of the documented rule (absent flags are true, true/false/1/0 in any case,
//! a repeated flag, an unreadable value or another parameter bypasses);
//! whether a query is readable does not depend on the order of its pairs;
//! and a readable query's flags, written out as the proxy sends them
//! upstream, read back as the same flags.

use ayra_cache::cache::key::{read_flags, BypassReason};
use ayra_cache::domain::Flags;

fn expected(query: &str) -> Result<Flags, BypassReason> {
    let mut flags = Flags::default();
    let mut seen = [false; 3];
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (name, value) = (
            super::common::form_decode(name),
            super::common::form_decode(value),
        );
        let index = match name.as_str() {
            "include_transcript" => 0,
            "include_recording" => 1,
            "include_analytics" => 2,
            _ => return Err(BypassReason::UnknownParameter),
        };
        if seen[index] {
            return Err(BypassReason::RepeatedFlag);
        }
        seen[index] = true;
        let lower = value.to_ascii_lowercase();
        let on = match lower.as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(BypassReason::UnreadableFlag),
        };
        match index {
            0 => flags.transcript = on,
            1 => flags.recording = on,
            _ => flags.analytics = on,
        }
    }
    Ok(flags)
}

/// Checks one input.
pub fn check(data: &[u8]) {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let read = read_flags(Some(query));
    assert_eq!(read, expected(query), "query {query:?}");

    let reversed: Vec<&str> = query.split('&').rev().collect();
    let reversed = read_flags(Some(&reversed.join("&")));
    assert_eq!(read.is_ok(), reversed.is_ok(), "order changed {query:?}");
    if let Ok(flags) = read {
        assert_eq!(reversed, Ok(flags), "order changed the flags of {query:?}");
        assert_eq!(read_flags(Some(&flags.upstream_query())), Ok(flags));
    }
}
