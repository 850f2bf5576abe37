//! Shared helpers for the end-to-end tests in `tests/tests/`.
#![forbid(unsafe_code)]

/// A Luhn-valid 16-digit test card number built from `i` (BIN 411111, `i` in the middle digits),
/// distinct for every `i` below 10^9.
pub fn luhn_pan(i: u64) -> String {
    let body = format!("411111{:09}", i % 1_000_000_000);
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(k, b)| {
            let d = u32::from(b - b'0');
            if k % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

#[cfg(test)]
mod tests {
    #[test]
    fn luhn_pans_are_valid_and_distinct() {
        let a = super::luhn_pan(0);
        assert!(a.len() == 16 && a.starts_with("411111000000000"), "{a}");
        assert_ne!(super::luhn_pan(1), super::luhn_pan(2));
        // 4111 1111 1111 1111 is the well-known valid test number.
        assert_eq!(super::luhn_pan(111_111_111), "4111111111111111");
    }
}
