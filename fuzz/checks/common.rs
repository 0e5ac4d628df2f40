//! Small, independent re-implementations the targets compare the proxy against.

/// `application/x-www-form-urlencoded` decoding of one name or value: `+` is
/// a space, `%XX` a byte (a malformed escape stays as written), then UTF-8
/// with replacement characters.
#[allow(dead_code)]
pub fn form_decode(text: &str) -> String {
    decode(text, true)
}

/// Percent-decoding of a path segment (`+` stays), lossy UTF-8.
#[allow(dead_code)]
pub fn percent_decode(text: &str) -> String {
    decode(text, false)
}

fn decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i + 1..i + 3) {
            Some(&[high, low]) if bytes[i] == b'%' => hex(high).zip(hex(low)),
            _ => None,
        };
        if let Some((high, low)) = escaped {
            out.push(high * 16 + low);
            i += 3;
        } else {
            out.push(if plus_is_space && bytes[i] == b'+' {
                b' '
            } else {
                bytes[i]
            });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|digit| digit as u8)
}
