//! `negotiate` over arbitrary `Accept-Encoding` values and offer lists, against an independent reading.
//!
//! Checks: no panic; the same coding as a plain re-reading of RFC 9110
//! section 12.5.3 (members with an optional `q` weight of at most three
//! decimals, `*` for codings not named, `identity` acceptable unless refused
//! or outweighed, ties broken by the offer's order); whatever is picked is
//! offered and acceptable; no header at all always means identity.

use ayra_cache::cache::encoding::{negotiate, Encoding};

/// A qvalue in thousandths, or `None` when the text is not one.
fn qvalue(text: &str) -> Option<u32> {
    let bytes = text.as_bytes();
    let (&lead, rest) = bytes.split_first()?;
    let decimals = match rest {
        [] => &[][..],
        [b'.', decimals @ ..] if decimals.len() <= 3 => decimals,
        _ => return None,
    };
    let mut thousandths = 0;
    for position in 0..3 {
        let digit = match decimals.get(position) {
            None => 0,
            Some(byte) if byte.is_ascii_digit() => u32::from(byte - b'0'),
            Some(_) => return None,
        };
        thousandths = thousandths * 10 + digit;
    }
    match lead {
        b'0' => Some(thousandths),
        b'1' if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Each member's coding (lower-cased) and weight; members with an unreadable
/// `q` are left out, as if not sent.
fn members(header: &str) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    'members: for member in header.split(',') {
        let mut pieces = member.split(';');
        let coding = pieces
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if coding.is_empty() {
            continue;
        }
        let mut weight = 1000;
        for piece in pieces {
            let Some((name, value)) = piece.split_once('=') else {
                continue;
            };
            if !name.trim().eq_ignore_ascii_case("q") {
                continue;
            }
            match qvalue(value.trim()) {
                Some(q) => weight = q,
                None => continue 'members,
            }
        }
        out.push((coding, weight));
    }
    out
}

fn expected(header: &str, offered: &[Encoding]) -> Option<Encoding> {
    let members = members(header);
    let named = |coding: &str| members.iter().find(|(name, _)| name == coding).map(|m| m.1);
    // The last `*` counts.
    let star = members
        .iter()
        .rev()
        .find(|(name, _)| name == "*")
        .map(|m| m.1);
    let identity = named("identity").unwrap_or(if star == Some(0) { 0 } else { 1 });
    let mut best: Option<(Encoding, u32)> = None;
    for &encoding in offered {
        let weight = named(encoding.as_str()).or(star).unwrap_or(0);
        if weight == 0 {
            continue;
        }
        if best.is_none_or(|(_, top)| weight > top) {
            best = Some((encoding, weight));
        }
    }
    best.filter(|&(_, weight)| weight >= identity)
        .map(|(encoding, _)| encoding)
}

/// The offer list from the first byte: which codings, in which order.
fn offer(selector: u8) -> Vec<Encoding> {
    let mut all = Encoding::ALL.to_vec();
    all.rotate_left(usize::from(selector % 3));
    if selector & 0x08 != 0 {
        all.swap(0, 1);
    }
    let mask = selector >> 4;
    all.into_iter()
        .enumerate()
        .filter(|&(index, _)| mask & (1 << index) == 0)
        .map(|(_, encoding)| encoding)
        .collect()
}

/// Checks one input.
pub fn check(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(header) = std::str::from_utf8(rest) else {
        return;
    };
    let offered = offer(selector);
    let picked = negotiate(Some(header), &offered);
    assert_eq!(
        picked,
        expected(header, &offered),
        "{header:?} offering {offered:?}"
    );
    if let Some(encoding) = picked {
        assert!(offered.contains(&encoding));
    }
    assert_eq!(negotiate(None, &offered), None);
}
