//! `application/x-www-form-urlencoded` bodies: the values of named fields and where they are,
//! so they can be replaced in place. A selected field present twice, a value that does not
//! decode (bad `%` escape, not UTF-8) refuses the body: which of two values the upstream
//! believes is its choice, not ours to guess.

use std::ops::Range;

/// Why a form body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FormError {
    /// A `%` escape or the decoded bytes are not valid.
    #[error("the form body does not decode (at byte {0})")]
    Encoding(usize),
    /// A selected field appears more than once.
    #[error("a selected form field appears more than once")]
    Duplicate,
}

/// A selected field's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// Which of the names.
    pub(crate) field: usize,
    /// The encoded value's bytes in the body.
    pub(crate) span: Range<usize>,
}

/// Percent-decode (`+` is a space), as UTF-8.
pub(crate) fn decode(raw: &[u8], offset: usize) -> Result<String, FormError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let h = raw
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(FormError::Encoding(offset + i))?;
                out.push(h);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| FormError::Encoding(offset))
}

/// Percent-encode everything but the unreserved characters.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The values of the fields `names` selects.
pub(crate) fn find(body: &[u8], names: &[String]) -> Result<Vec<Found>, FormError> {
    let mut found: Vec<Found> = Vec::new();
    let mut start = 0;
    for part in body.split(|&b| b == b'&') {
        let end = start + part.len();
        let (key, value) = match part.iter().position(|&b| b == b'=') {
            Some(eq) => (&part[..eq], start + eq + 1..end),
            None => (part, end..end),
        };
        let key = decode(key, start)?;
        // Every value must decode, selected or not: the upstream reads them all.
        decode(&body[value.clone()], value.start)?;
        if let Some(field) = names.iter().position(|n| *n == key) {
            if found.iter().any(|f| f.field == field) {
                return Err(FormError::Duplicate);
            }
            found.push(Found { field, span: value });
        }
        start = end + 1;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_decodes_fields() {
        let body = b"amount=10&card=4111+1111%201111+1111&x";
        let found = find(body, &["card".into(), "cvv".into()]).unwrap();
        assert_eq!(found.len(), 1);
        let raw = &body[found[0].span.clone()];
        assert_eq!(decode(raw, 0).unwrap(), "4111 1111 1111 1111");
    }

    #[test]
    fn refuses_duplicates_and_bad_escapes() {
        assert_eq!(
            find(b"card=1&card=2", &["card".into()]),
            Err(FormError::Duplicate)
        );
        // An encoded name is the same name.
        assert_eq!(
            find(b"card=1&c%61rd=2", &["card".into()]),
            Err(FormError::Duplicate)
        );
        assert!(find(b"card=%zz", &["card".into()]).is_err());
        assert!(find(b"other=%ff", &["card".into()]).is_err());
    }

    #[test]
    fn encode_keeps_unreserved() {
        assert_eq!(encode("tok_ab-9 /"), "tok_ab-9%20%2F");
    }
}
