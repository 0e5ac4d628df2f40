//! An entry's representations: its strong ETag, and its body precompressed per content coding.

use headers::{ETag, HeaderMapExt, IfNoneMatch};
use http::{header, HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};

use super::encoding::{compress, Encoding};
use super::stored_body::StoredBody;

/// The body in one content coding, with an ETag of its own.
#[derive(Debug, Clone)]
pub struct Variant {
    encoding: Encoding,
    body: StoredBody,
    etag: HeaderValue,
}

impl Variant {
    /// `body` compressed with `encoding`; its ETag is the identity one tagged
    /// with the coding (`"abc"` becomes `"abc-br"`).
    pub fn compress(
        encoding: Encoding,
        body: &StoredBody,
        identity_etag: &HeaderValue,
    ) -> std::io::Result<Variant> {
        Ok(Variant {
            encoding,
            body: compress(encoding, body)?,
            etag: tagged(identity_etag, encoding),
        })
    }

    /// Its coding.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The compressed body.
    pub fn body(&self) -> &StoredBody {
        &self.body
    }

    /// Its own strong ETag.
    pub fn etag(&self) -> &HeaderValue {
        &self.etag
    }
}

/// A strong ETag for a stored body: the upstream's when it sent a strong one,
/// else one derived from a SHA-256 of the body.
pub fn strong_etag(upstream: &HeaderMap, body: &[u8]) -> HeaderValue {
    let upstream_strong = upstream.get(header::ETAG).filter(|value| {
        value
            .to_str()
            .is_ok_and(|text| text.parse::<ETag>().is_ok() && text.starts_with('"'))
    });
    if let Some(etag) = upstream_strong {
        // A copy: the parsed value shares the whole buffer its head was read into.
        return HeaderValue::from_bytes(etag.as_bytes()).unwrap_or_else(|_| etag.clone());
    }
    let digest = Sha256::digest(body);
    let tag = format!("\"{}\"", hex::encode(&digest[..16]));
    HeaderValue::try_from(tag).unwrap_or_else(|_| HeaderValue::from_static("\"ayra\""))
}

fn tagged(identity: &HeaderValue, encoding: Encoding) -> HeaderValue {
    let text = identity.to_str().unwrap_or("\"\"");
    let opaque = text.trim_end_matches('"');
    HeaderValue::try_from(format!("{opaque}-{}\"", encoding.as_str()))
        .unwrap_or_else(|_| identity.clone())
}

/// Whether the request's `If-None-Match` matches `etag` (weak comparison,
/// `*` included): the client already holds this representation.
pub fn not_modified(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let Some(if_none_match) = request.typed_get::<IfNoneMatch>() else {
        return false;
    };
    let Some(etag) = etag
        .to_str()
        .ok()
        .and_then(|text| text.parse::<ETag>().ok())
    else {
        return false;
    };
    !if_none_match.precondition_passes(&etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(if_none_match: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(if_none_match).unwrap(),
        );
        headers
    }

    #[test]
    fn the_upstream_strong_etag_is_kept_and_a_weak_one_replaced() {
        let mut upstream = HeaderMap::new();
        upstream.insert(header::ETAG, HeaderValue::from_static("\"v7\""));
        assert_eq!(strong_etag(&upstream, b"x"), "\"v7\"");
        upstream.insert(header::ETAG, HeaderValue::from_static("W/\"v7\""));
        let derived = strong_etag(&upstream, b"x");
        assert!(derived.to_str().unwrap().starts_with('"'));
        assert_eq!(
            derived,
            strong_etag(&HeaderMap::new(), b"x"),
            "same body, same tag"
        );
        assert_ne!(derived, strong_etag(&HeaderMap::new(), b"y"));
    }

    #[test]
    fn variants_get_etags_of_their_own() {
        let identity = HeaderValue::from_static("\"abc\"");
        let body = StoredBody::copy_from(&b"hello ".repeat(300));
        let gzip = Variant::compress(Encoding::Gzip, &body, &identity).unwrap();
        let br = Variant::compress(Encoding::Br, &body, &identity).unwrap();
        assert_eq!(gzip.etag(), "\"abc-gzip\"");
        assert_eq!(br.etag(), "\"abc-br\"");
        assert!(gzip.body().len() < body.len());
    }

    #[test]
    fn if_none_match_uses_weak_comparison_and_star() {
        let etag = HeaderValue::from_static("\"abc\"");
        assert!(not_modified(&request("\"abc\""), &etag));
        assert!(not_modified(&request("W/\"abc\""), &etag));
        assert!(not_modified(&request("\"x\", \"abc\""), &etag));
        assert!(not_modified(&request("*"), &etag));
        assert!(!not_modified(&request("\"abd\""), &etag));
        assert!(!not_modified(&request("\"abc-gzip\""), &etag));
        assert!(!not_modified(&HeaderMap::new(), &etag));
    }
}
