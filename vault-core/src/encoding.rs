//! Unambiguous byte encodings for associated data and stored metadata.

/// Appends `field` with a 4-byte big-endian length prefix, so that concatenated fields can never
/// be re-split differently (`("ab", "c")` and `("a", "bc")` encode differently).
pub(crate) fn put_field(out: &mut Vec<u8>, field: &[u8]) {
    // Names, ids and templates are far below 4 GiB; saturate rather than wrap if one is not.
    let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_do_not_run_together() {
        let mut a = Vec::new();
        put_field(&mut a, b"ab");
        put_field(&mut a, b"c");
        let mut b = Vec::new();
        put_field(&mut b, b"a");
        put_field(&mut b, b"bc");
        assert_ne!(a, b);
        assert_eq!(a, [0, 0, 0, 2, b'a', b'b', 0, 0, 0, 1, b'c']);
    }
}
