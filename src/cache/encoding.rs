//! Content codings: which one a client's `Accept-Encoding` picks, and compressing a body into it.
//!
//! No maintained crate parses `Accept-Encoding` with q-values for our needs,
//! so this is a small parser of RFC 9110 section 12.5.3, tested on every form
//! and fuzzed: codings with optional `;q=` weights, `*`, `identity`, `q=0`.

use std::io::Write;

use super::stored_body::StoredBody;
pub use crate::domain::Encoding;

/// Bodies smaller than this are sent as they are.
pub const MIN_COMPRESSED_BODY: usize = 1024;

/// `body` compressed with `encoding`, at a level chosen for small JSON
/// bodies (fast enough to run once per entry in the background).
pub fn compress(encoding: Encoding, body: &StoredBody) -> std::io::Result<StoredBody> {
    let compressed = match encoding {
        Encoding::Gzip => {
            let level = flate2::Compression::new(6);
            write_parts(flate2::write::GzEncoder::new(Vec::new(), level), body)?.finish()?
        }
        Encoding::Br => {
            let mut out = Vec::new();
            // A window near the body's size: a 6 KB body needs no 4 MB of
            // encoder state. Below 2^18 the encoder takes a path 40 times
            // slower (measured), so never smaller.
            let window = body.len().next_power_of_two().trailing_zeros();
            let window = window.clamp(18, 22);
            let encoder = brotli::CompressorWriter::new(&mut out, 4096, 5, window);
            drop(write_parts(encoder, body)?);
            out
        }
        Encoding::Zstd => write_parts(zstd::Encoder::new(Vec::new(), 3)?, body)?.finish()?,
    };
    // The encoders grow their output by doubling: keep only what is used.
    Ok(StoredBody::copy_from(&compressed))
}

/// `body`'s parts written into `writer`, in order.
fn write_parts<W: Write>(mut writer: W, body: &StoredBody) -> std::io::Result<W> {
    for part in body.parts() {
        writer.write_all(part)?;
    }
    Ok(writer)
}

/// The coding to send: the offered one the client weighs highest (ties go to
/// the order of `offered`), or none (identity) when the client accepts none
/// of them, prefers identity, or sent no `Accept-Encoding` at all.
pub fn negotiate(accept_encoding: Option<&str>, offered: &[Encoding]) -> Option<Encoding> {
    let header = accept_encoding?;
    let weights = Weights::parse(header);
    let mut best: Option<(Encoding, u16)> = None;
    for &encoding in offered {
        let weight = weights.of(encoding.as_str());
        if weight > 0 && best.is_none_or(|(_, top)| weight > top) {
            best = Some((encoding, weight));
        }
    }
    let (encoding, weight) = best?;
    (weight >= weights.identity()).then_some(encoding)
}

/// The weights (q × 1000) an `Accept-Encoding` value gives.
struct Weights<'a> {
    named: Vec<(&'a str, u16)>,
    star: Option<u16>,
}

impl<'a> Weights<'a> {
    fn parse(header: &'a str) -> Weights<'a> {
        let mut named = Vec::new();
        let mut star = None;
        for member in header.split(',') {
            let mut parts = member.split(';');
            let coding = parts.next().unwrap_or("").trim();
            if coding.is_empty() {
                continue;
            }
            let Some(weight) = parts
                .map(parse_weight)
                .try_fold(1000, |w, p| p.map(|p| p.unwrap_or(w)))
            else {
                // An unreadable weight: ignore the member, as if not sent.
                continue;
            };
            if coding == "*" {
                star = Some(weight);
            } else {
                named.push((coding, weight));
            }
        }
        Weights { named, star }
    }

    /// The weight of `coding`: named, else `*`, else not acceptable.
    fn of(&self, coding: &str) -> u16 {
        self.named
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(coding))
            .map(|&(_, weight)| weight)
            .or(self.star)
            .unwrap_or(0)
    }

    /// identity is acceptable unless excluded by name or by `*;q=0`.
    fn identity(&self) -> u16 {
        self.named
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("identity"))
            .map(|&(_, weight)| weight)
            .or(self.star.filter(|&weight| weight == 0))
            .unwrap_or(1)
    }
}

/// One `;param`: `Some(Some(w))` for a readable `q=`, `Some(None)` for
/// another parameter (ignored), `None` for an unreadable `q`.
fn parse_weight(param: &str) -> Option<Option<u16>> {
    let Some((name, value)) = param.split_once('=') else {
        return Some(None);
    };
    if !name.trim().eq_ignore_ascii_case("q") {
        return Some(None);
    }
    let value = value.trim();
    // qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    let digits_ok = fraction.len() <= 3 && fraction.bytes().all(|b| b.is_ascii_digit());
    let fraction_value: u16 = format!("{fraction:0<3}").parse().ok()?;
    match whole {
        "0" if digits_ok => Some(Some(fraction_value)),
        "1" if digits_ok && fraction_value == 0 => Some(Some(1000)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Encoding::{Br, Gzip, Zstd};

    const OFFERED: [Encoding; 2] = [Br, Gzip];

    fn pick(header: Option<&str>) -> Option<Encoding> {
        negotiate(header, &OFFERED)
    }

    #[test]
    fn no_header_or_an_empty_one_means_identity() {
        assert_eq!(pick(None), None);
        assert_eq!(pick(Some("")), None);
        assert_eq!(pick(Some(" , ")), None);
    }

    #[test]
    fn plain_lists_pick_the_first_offered() {
        assert_eq!(pick(Some("gzip")), Some(Gzip));
        assert_eq!(pick(Some("br")), Some(Br));
        assert_eq!(
            pick(Some("gzip, deflate, br")),
            Some(Br),
            "ties follow our order"
        );
        assert_eq!(pick(Some("GZIP")), Some(Gzip));
        assert_eq!(pick(Some("deflate")), None);
        assert_eq!(negotiate(Some("gzip, br"), &[Gzip, Br]), Some(Gzip));
    }

    #[test]
    fn q_values_are_honoured() {
        assert_eq!(pick(Some("br;q=0.5, gzip;q=0.8")), Some(Gzip));
        assert_eq!(pick(Some("br;q=1.0, gzip;q=0.999")), Some(Br));
        assert_eq!(pick(Some("gzip; q=0.2 ,br ; Q=0.1")), Some(Gzip));
        assert_eq!(pick(Some("br;q=0, gzip;q=0")), None);
        assert_eq!(pick(Some("br;q=0, gzip")), Some(Gzip));
    }

    #[test]
    fn the_star_covers_codings_not_named() {
        assert_eq!(pick(Some("*")), Some(Br));
        assert_eq!(pick(Some("br;q=0, *")), Some(Gzip));
        assert_eq!(pick(Some("*;q=0")), None);
        assert_eq!(pick(Some("gzip;q=0.3, *;q=0.5")), Some(Br));
    }

    #[test]
    fn identity_wins_when_weighted_higher() {
        assert_eq!(pick(Some("gzip;q=0.5, identity")), None);
        assert_eq!(pick(Some("gzip, identity;q=0.5")), Some(Gzip));
        assert_eq!(pick(Some("identity;q=0, gzip;q=0.1")), Some(Gzip));
        assert_eq!(pick(Some("identity")), None);
    }

    #[test]
    fn unreadable_weights_drop_their_member() {
        assert_eq!(pick(Some("br;q=2, gzip;q=0.1")), Some(Gzip));
        assert_eq!(pick(Some("br;q=abc")), None);
        assert_eq!(pick(Some("br;q=0.1234, gzip;q=0.5")), Some(Gzip));
        assert_eq!(pick(Some("br;q=1.001")), None);
        assert_eq!(pick(Some("br;q=-1, gzip")), Some(Gzip));
        assert_eq!(
            pick(Some("br;level=9")),
            Some(Br),
            "other parameters are ignored"
        );
        assert_eq!(pick(Some("br;q=")), None);
        assert_eq!(pick(Some(";q=1, gzip")), Some(Gzip));
    }

    #[test]
    fn compressed_bodies_decode_to_the_original() {
        use std::io::Read;
        let body = br#"{"data":{"transcript":"hello hello hello hello hello"}}"#.repeat(40);
        let stored = StoredBody::copy_from(&body);
        assert!(!stored.parts()[1].is_empty(), "read across both parts");
        let gz = compress(Gzip, &stored).unwrap().to_vec();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, body);
        let br = compress(Br, &stored).unwrap().to_vec();
        let mut out = Vec::new();
        brotli::Decompressor::new(&br[..], 4096)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, body);
        let zs = compress(Zstd, &stored).unwrap().to_vec();
        assert_eq!(zstd::decode_all(&zs[..]).unwrap(), body);
        assert!(gz.len() < body.len() / 4 && br.len() < gz.len());
    }

    #[test]
    fn names_round_trip() {
        for encoding in Encoding::ALL {
            assert_eq!(Encoding::from_name(encoding.as_str()), Some(encoding));
        }
        assert_eq!(Encoding::from_name("BR"), Some(Br));
        assert_eq!(Encoding::from_name("deflate"), None);
    }
}
