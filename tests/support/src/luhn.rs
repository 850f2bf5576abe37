//! The Luhn arithmetic test card numbers need.

/// The Luhn sum of ASCII digits, counting from the right: digits at positions (from 0) of parity
/// `doubled` are doubled.
fn luhn_sum(digits: &[u8], doubled: usize) -> u32 {
    digits
        .iter()
        .rev()
        .enumerate()
        .map(|(k, b)| {
            let d = u32::from(b - b'0');
            if k % 2 == doubled {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum()
}

/// The Luhn check digit of ASCII `body` (every second digit doubled from the right of the full
/// number, i.e. from the rightmost digit of `body`).
pub fn luhn_check_digit(body: &[u8]) -> u8 {
    ((10 - luhn_sum(body, 0) % 10) % 10) as u8
}

/// `body` followed by its Luhn check digit.
pub fn with_luhn(body: &str) -> String {
    format!("{body}{}", luhn_check_digit(body.as_bytes()))
}

/// Whether ASCII digits (check digit last) pass the Luhn check.
pub fn luhn_valid(digits: &[u8]) -> bool {
    luhn_sum(digits, 1).is_multiple_of(10)
}

/// A Luhn-valid 16-digit test card number built from `i` (BIN 411111, `i` in the middle digits),
/// distinct for every `i` below 10^9.
pub fn luhn_pan(i: u64) -> String {
    with_luhn(&format!("411111{:09}", i % 1_000_000_000))
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
        assert!(super::luhn_valid(b"4111111111111111"));
        assert!(!super::luhn_valid(b"4111111111111112"));
    }
}
