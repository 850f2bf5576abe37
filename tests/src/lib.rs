//! Shared helpers for the end-to-end tests in `tests/tests/` and `vault-loadgen`: test card
//! numbers and the request builders every suite needs.
#![forbid(unsafe_code)]

use vault_proto::v1::{DetokenizeItem, DetokenizeRequest, TokenizeItem, TokenizeRequest};

/// The Luhn check digit of ASCII `body` (every second digit doubled from the right of the full
/// number, i.e. from the rightmost digit of `body`).
pub fn luhn_check_digit(body: &[u8]) -> u8 {
    let sum: u32 = body
        .iter()
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
    ((10 - sum % 10) % 10) as u8
}

/// `body` followed by its Luhn check digit.
pub fn with_luhn(body: &str) -> String {
    format!("{body}{}", luhn_check_digit(body.as_bytes()))
}

/// A Luhn-valid 16-digit test card number built from `i` (BIN 411111, `i` in the middle digits),
/// distinct for every `i` below 10^9.
pub fn luhn_pan(i: u64) -> String {
    with_luhn(&format!("411111{:09}", i % 1_000_000_000))
}

/// A `Tokenize` request of `values` under `template` (no request id, no idempotency keys).
pub fn tokenize_request<V: Into<String>>(
    template: &str,
    values: impl IntoIterator<Item = V>,
) -> TokenizeRequest {
    TokenizeRequest {
        request_id: None,
        template: template.into(),
        key_version: None,
        items: values
            .into_iter()
            .map(|v| TokenizeItem {
                value: v.into(),
                ..TokenizeItem::default()
            })
            .collect(),
    }
}

/// A `Detokenize` request of `tokens` under `template` with `purpose`.
pub fn detokenize_request(template: &str, tokens: &[String], purpose: &str) -> DetokenizeRequest {
    DetokenizeRequest {
        request_id: None,
        template: template.into(),
        key_version: None,
        purpose: purpose.into(),
        items: tokens
            .iter()
            .map(|t| DetokenizeItem { token: t.clone() })
            .collect(),
    }
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
