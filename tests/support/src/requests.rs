//! The requests every suite sends.

use vault_proto::v1::{DetokenizeItem, DetokenizeRequest, TokenizeItem, TokenizeRequest};

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

/// `msg` with `authorization: Bearer <key>`.
///
/// # Panics
/// If `key` is not a valid header value (test keys always are).
pub fn with_key<T>(msg: T, key: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}
