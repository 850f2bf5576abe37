//! [`VaultClient`]: tokenize, detokenize, reveal and delete, single and batch.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use vault_proto::v1 as pb;
use vault_proto::v1::tokenizer_client::TokenizerClient;
use zeroize::Zeroize;

use crate::breaker::BreakerState;
use crate::call::{CallOptions, Shared};
use crate::config::{self, Auth, Config};
use crate::error::{Error, ItemError, ItemErrorCode};
use crate::retry::Safety;

/// The longest idempotency key the server accepts (`TokenizeItem.idempotency_key`).
const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

pub(crate) type Grpc = InterceptedService<Channel, Auth>;

/// A client of the vault's `Tokenizer` service.
///
/// Cheap to clone: clones share one HTTP/2 channel, one circuit breaker and one retry budget,
/// so create one per process and hand clones to tasks.
#[derive(Clone)]
pub struct VaultClient {
    shared: Arc<Shared>,
    grpc: TokenizerClient<Grpc>,
    options: CallOptions,
}

impl VaultClient {
    /// Connects to the daemon now; fails if it cannot be reached.
    pub async fn connect(config: Config) -> Result<Self, Error> {
        let channel = config::channel(&config, false).await?;
        Self::with_channel(config, channel)
    }

    /// Returns at once and connects on the first call, so a service can start while the
    /// daemon is still down (its calls fail with `Unavailable` until then).
    pub fn connect_lazy(config: Config) -> Result<Self, Error> {
        let endpoint = config.endpoint()?;
        Self::with_channel(config, endpoint.connect_lazy())
    }

    fn with_channel(config: Config, channel: Channel) -> Result<Self, Error> {
        let auth = config.auth()?;
        let breaker = config.breaker.clone();
        Ok(Self {
            grpc: TokenizerClient::with_interceptor(channel, auth),
            shared: Arc::new(Shared::new(config, breaker)),
            options: CallOptions::default(),
        })
    }

    /// A handle whose calls use `options` (deadline, request id, key version, mask...). It
    /// shares the channel, breaker and budget with `self`.
    pub fn with_options(&self, options: CallOptions) -> Self {
        Self {
            shared: self.shared.clone(),
            grpc: self.grpc.clone(),
            options,
        }
    }

    /// Where the circuit breaker stands.
    pub fn breaker_state(&self) -> BreakerState {
        self.shared.breaker.state()
    }

    /// Tokenizes one value.
    pub async fn tokenize(
        &self,
        template: &str,
        item: impl Into<TokenizeItem>,
    ) -> Result<Token, Error> {
        single(self.tokenize_batch(template, vec![item.into()]).await?)
    }

    /// Tokenizes a batch: one result per item, in input order. Batches larger than the
    /// configured maximum are sent in chunks, one after the other; if a chunk fails as a whole,
    /// the call fails and later chunks are not sent (tokens of earlier chunks exist: use
    /// idempotency keys to resume such a batch without minting new ones).
    ///
    /// Retried on UNAVAILABLE / RESOURCE_EXHAUSTED only when the template is declared
    /// deterministic or every item of the chunk has an idempotency key.
    pub async fn tokenize_batch(
        &self,
        template: &str,
        items: Vec<TokenizeItem>,
    ) -> Result<Vec<Result<Token, ItemError>>, Error> {
        let deterministic = self.options.deterministic.unwrap_or_else(|| {
            self.shared
                .config
                .deterministic_templates
                .contains(template)
        });
        let auto_keys = self
            .options
            .auto_idempotency_keys
            .unwrap_or(self.shared.config.auto_idempotency_keys);
        let mut wire = Vec::with_capacity(items.len());
        for (index, item) in items.into_iter().enumerate() {
            let idempotency_key = match item.idempotency_key {
                Some(key) if key.len() > MAX_IDEMPOTENCY_KEY_LEN || key.is_empty() => {
                    return Err(Error::InvalidInput {
                        index: Some(index),
                        message: format!(
                            "idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes, got {}",
                            key.len()
                        ),
                    });
                }
                Some(key) => Some(key),
                None if auto_keys => Some(idempotency_key()?),
                None => None,
            };
            wire.push(pb::TokenizeItem {
                value: item.value.expose_secret().to_owned(),
                idempotency_key,
                metadata: item.metadata,
                ttl_seconds: item.ttl.map(|ttl| ttl.as_secs()),
            });
        }
        let deadline = self.deadline();
        let mut out = Vec::with_capacity(wire.len());
        for range in chunks(wire.len(), self.shared.config.max_batch) {
            let offset = range.start;
            let safety = if deterministic
                || wire[range.clone()]
                    .iter()
                    .all(|i| i.idempotency_key.is_some())
            {
                Safety::Idempotent
            } else {
                Safety::NotIdempotent
            };
            let request = PlainRequest(pb::TokenizeRequest {
                request_id: self.options.request_id.clone(),
                template: template.to_owned(),
                key_version: self.options.key_version,
                items: wire[range.clone()].to_vec(),
            });
            let response = self
                .shared
                .run(safety, deadline, &request.0, |r| {
                    let mut grpc = self.grpc.clone();
                    async move { grpc.tokenize(r).await }
                })
                .await?;
            check_count(range.len(), response.results.len())?;
            out.extend(
                response
                    .results
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| match r.outcome {
                        Some(pb::tokenize_result::Outcome::Token(t)) => Ok(Token::from_wire(t)),
                        Some(pb::tokenize_result::Outcome::Error(e)) => {
                            Err(ItemError::from_wire(offset + i, e))
                        }
                        None => Err(empty_outcome(offset + i)),
                    }),
            );
        }
        drop(PlainItems(wire));
        Ok(out)
    }

    /// Returns the value behind one token. Needs the `detokenize` scope and a purpose, which is
    /// audited; prefer [`VaultClient::reveal`] when a masked value is enough.
    pub async fn detokenize(
        &self,
        template: &str,
        token: &str,
        purpose: &str,
    ) -> Result<Detokenized, Error> {
        single(self.detokenize_batch(template, &[token], purpose).await?)
    }

    /// Returns the values behind a batch of tokens, one result per token in input order,
    /// chunked like [`VaultClient::tokenize_batch`]. Always safe to retry.
    pub async fn detokenize_batch<T: AsRef<str>>(
        &self,
        template: &str,
        tokens: &[T],
        purpose: &str,
    ) -> Result<Vec<Result<Detokenized, ItemError>>, Error> {
        let deadline = self.deadline();
        let mut out = Vec::with_capacity(tokens.len());
        for range in chunks(tokens.len(), self.shared.config.max_batch) {
            let offset = range.start;
            let request = pb::DetokenizeRequest {
                request_id: self.options.request_id.clone(),
                template: template.to_owned(),
                key_version: self.options.key_version,
                purpose: purpose.to_owned(),
                items: tokens[range.clone()]
                    .iter()
                    .map(|t| pb::DetokenizeItem {
                        token: t.as_ref().to_owned(),
                    })
                    .collect(),
            };
            let response = self
                .shared
                .run(Safety::Idempotent, deadline, &request, |r| {
                    let mut grpc = self.grpc.clone();
                    async move { grpc.detokenize(r).await }
                })
                .await?;
            check_count(range.len(), response.results.len())?;
            out.extend(
                response
                    .results
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| match r.outcome {
                        Some(pb::detokenize_result::Outcome::Value(v)) => {
                            Ok(Detokenized::from_wire(v))
                        }
                        Some(pb::detokenize_result::Outcome::Error(e)) => {
                            Err(ItemError::from_wire(offset + i, e))
                        }
                        None => Err(empty_outcome(offset + i)),
                    }),
            );
        }
        Ok(out)
    }

    /// Returns one token's value masked by the template (for example `**** **** **** 1234`).
    /// Needs only the `reveal` scope.
    pub async fn reveal(
        &self,
        template: &str,
        token: &str,
        purpose: &str,
    ) -> Result<Revealed, Error> {
        single(self.reveal_batch(template, &[token], purpose).await?)
    }

    /// Masked values for a batch of tokens, one result per token in input order. Always safe
    /// to retry.
    pub async fn reveal_batch<T: AsRef<str>>(
        &self,
        template: &str,
        tokens: &[T],
        purpose: &str,
    ) -> Result<Vec<Result<Revealed, ItemError>>, Error> {
        let deadline = self.deadline();
        let mut out = Vec::with_capacity(tokens.len());
        for range in chunks(tokens.len(), self.shared.config.max_batch) {
            let offset = range.start;
            let request = pb::RevealRequest {
                request_id: self.options.request_id.clone(),
                template: template.to_owned(),
                key_version: self.options.key_version,
                purpose: purpose.to_owned(),
                mask: self.options.mask.clone(),
                items: tokens[range.clone()]
                    .iter()
                    .map(|t| pb::RevealItem {
                        token: t.as_ref().to_owned(),
                    })
                    .collect(),
            };
            let response = self
                .shared
                .run(Safety::Idempotent, deadline, &request, |r| {
                    let mut grpc = self.grpc.clone();
                    async move { grpc.reveal(r).await }
                })
                .await?;
            check_count(range.len(), response.results.len())?;
            out.extend(
                response
                    .results
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| match r.outcome {
                        Some(pb::reveal_result::Outcome::Value(v)) => Ok(Revealed::from_wire(v)),
                        Some(pb::reveal_result::Outcome::Error(e)) => {
                            Err(ItemError::from_wire(offset + i, e))
                        }
                        None => Err(empty_outcome(offset + i)),
                    }),
            );
        }
        Ok(out)
    }

    /// Deletes the record behind one token (vaulted templates only).
    pub async fn delete(&self, template: &str, token: &str) -> Result<(), Error> {
        single(self.delete_batch(template, &[token]).await?)
    }

    /// Deletes the records behind a batch of tokens, one result per token in input order.
    /// Never retried: after an UNAVAILABLE the records may or may not be gone, and a repeat
    /// would report NOT_FOUND for the ones that are.
    pub async fn delete_batch<T: AsRef<str>>(
        &self,
        template: &str,
        tokens: &[T],
    ) -> Result<Vec<Result<(), ItemError>>, Error> {
        let deadline = self.deadline();
        let mut out = Vec::with_capacity(tokens.len());
        for range in chunks(tokens.len(), self.shared.config.max_batch) {
            let offset = range.start;
            let request = pb::DeleteTokensRequest {
                request_id: self.options.request_id.clone(),
                template: template.to_owned(),
                items: tokens[range.clone()]
                    .iter()
                    .map(|t| pb::DeleteTokensItem {
                        token: t.as_ref().to_owned(),
                    })
                    .collect(),
            };
            let response = self
                .shared
                .run(Safety::NotIdempotent, deadline, &request, |r| {
                    let mut grpc = self.grpc.clone();
                    async move { grpc.delete_tokens(r).await }
                })
                .await?;
            check_count(range.len(), response.results.len())?;
            out.extend(
                response
                    .results
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| match r.outcome {
                        Some(pb::delete_tokens_result::Outcome::Deleted(_)) => Ok(()),
                        Some(pb::delete_tokens_result::Outcome::Error(e)) => {
                            Err(ItemError::from_wire(offset + i, e))
                        }
                        None => Err(empty_outcome(offset + i)),
                    }),
            );
        }
        Ok(out)
    }

    fn deadline(&self) -> Duration {
        self.options.deadline.unwrap_or(self.shared.config.deadline)
    }
}

impl fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultClient")
            .field("config", &self.shared.config)
            .field("breaker", &self.shared.breaker.state())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The index ranges of the chunks of a batch of `len` items, at most `max` each, in order.
pub(crate) fn chunks(len: usize, max: usize) -> impl Iterator<Item = Range<usize>> {
    let max = max.max(1);
    (0..len)
        .step_by(max)
        .map(move |start| start..(start + max).min(len))
}

fn check_count(sent: usize, received: usize) -> Result<(), Error> {
    if sent == received {
        Ok(())
    } else {
        Err(Error::Protocol {
            message: format!("sent {sent} items, received {received} results"),
        })
    }
}

/// The contract says a client treats an empty or unknown `oneof` as an error (tokenizer.proto).
fn empty_outcome(index: usize) -> ItemError {
    ItemError {
        index,
        code: ItemErrorCode::Unknown,
        message: "the server sent a result with no outcome".into(),
        reason: String::new(),
    }
}

fn single<T>(mut results: Vec<Result<T, ItemError>>) -> Result<T, Error> {
    match (results.pop(), results.is_empty()) {
        (Some(result), true) => result.map_err(ItemError::into_call_error),
        _ => Err(Error::Protocol {
            message: "expected exactly one result".into(),
        }),
    }
}

/// A fresh idempotency key: 128 random bits from the OS, hex.
fn idempotency_key() -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| Error::Config {
        message: "the OS random number generator failed".into(),
    })?;
    let mut key = String::with_capacity(35);
    key.push_str("vc-");
    for b in bytes {
        key.push_str(&format!("{b:02x}"));
    }
    Ok(key)
}

/// A `google.protobuf.Timestamp` as a `SystemTime`; out-of-range values read as unset.
fn timestamp(ts: Option<prost_types::Timestamp>) -> Option<SystemTime> {
    ts.and_then(|ts| SystemTime::try_from(ts).ok())
}

/// Zeroizes the plaintext values of a tokenize request when dropped.
struct PlainRequest(pb::TokenizeRequest);

impl Drop for PlainRequest {
    fn drop(&mut self) {
        for item in &mut self.0.items {
            item.value.zeroize();
        }
    }
}

/// Zeroizes plaintext tokenize items when dropped.
struct PlainItems(Vec<pb::TokenizeItem>);

impl Drop for PlainItems {
    fn drop(&mut self) {
        for item in &mut self.0 {
            item.value.zeroize();
        }
    }
}

/// One value to tokenize, with its options.
#[derive(Clone)]
pub struct TokenizeItem {
    value: SecretString,
    idempotency_key: Option<String>,
    metadata: HashMap<String, String>,
    ttl: Option<Duration>,
}

impl TokenizeItem {
    /// A value to tokenize, as text in the template's format.
    pub fn new(value: impl Into<SecretString>) -> Self {
        Self {
            value: value.into(),
            idempotency_key: None,
            metadata: HashMap::new(),
            ttl: None,
        }
    }

    /// Makes the item safe to retry: the server returns the first token for a repeated key
    /// (vaulted templates). At most 128 bytes.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// A label stored with the record (vaulted templates). Never put sensitive data here.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Expires the token after `ttl` (whole seconds; vaulted templates).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

impl From<&str> for TokenizeItem {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl From<String> for TokenizeItem {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<SecretString> for TokenizeItem {
    fn from(value: SecretString) -> Self {
        Self::new(value)
    }
}

impl fmt::Debug for TokenizeItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenizeItem")
            .field("value", &"<redacted>")
            .field("idempotency_key", &self.idempotency_key)
            .field("metadata", &self.metadata)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// A token issued for a value. Safe to store; `Display` prints it, `Debug` only its length (so
/// a stray `{:?}` of a result does not put tokens in a log).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Token {
    /// The token.
    pub token: String,
    /// The key version it was made under.
    pub key_version: u32,
    /// True when the token was issued before (idempotent replay, deterministic template).
    pub existing: bool,
    /// When the token expires, if it does.
    pub expires_at: Option<SystemTime>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("token_len", &self.token.len())
            .field("key_version", &self.key_version)
            .field("existing", &self.existing)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl Token {
    fn from_wire(t: pb::Token) -> Self {
        Self {
            token: t.token,
            key_version: t.key_version,
            existing: t.existing,
            expires_at: timestamp(t.expires_at),
        }
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.token)
    }
}

/// The value behind a token. The value is zeroized on drop and never printed by `Debug`.
#[non_exhaustive]
pub struct Detokenized {
    /// The original value; `expose_secret()` to use it.
    pub value: SecretString,
    /// The key version that decrypted it.
    pub key_version: u32,
    /// The labels stored with the record.
    pub metadata: HashMap<String, String>,
    /// When the token expires, if it does.
    pub expires_at: Option<SystemTime>,
}

impl Detokenized {
    fn from_wire(mut v: pb::DetokenizedValue) -> Self {
        Self {
            // Moved, not copied: the only plaintext buffer is the one the SecretString owns.
            value: SecretString::from(std::mem::take(&mut v.value)),
            key_version: v.key_version,
            metadata: std::mem::take(&mut v.metadata),
            expires_at: timestamp(v.expires_at),
        }
    }
}

impl fmt::Debug for Detokenized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Detokenized")
            .field("value", &"<redacted>")
            .field("key_version", &self.key_version)
            .field("metadata", &self.metadata)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A token's value, masked by the template for display.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Revealed {
    /// The masked value (for example `**** **** **** 1234`).
    pub masked: String,
    /// The key version that decrypted it.
    pub key_version: u32,
    /// The labels stored with the record.
    pub metadata: HashMap<String, String>,
    /// When the token expires, if it does.
    pub expires_at: Option<SystemTime>,
}

impl Revealed {
    fn from_wire(v: pb::MaskedValue) -> Self {
        Self {
            masked: v.masked_value,
            key_version: v.key_version,
            metadata: v.metadata,
            expires_at: timestamp(v.expires_at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Debug` of what holds a value or a token shows neither.
    #[test]
    fn debug_hides_values_and_tokens() {
        let token = Token::from_wire(pb::Token {
            token: "tok_abcdefghijklmnopqrstuvwxyz".into(),
            key_version: 1,
            existing: false,
            expires_at: None,
        });
        let item = TokenizeItem::new("4111111111111111").idempotency_key("k");
        for text in [
            format!("{token:?}"),
            format!("{token:#?}"),
            format!("{item:?}"),
        ] {
            assert!(!text.contains("tok_abc"), "{text}");
            assert!(!text.contains("4111111111111111"), "{text}");
        }
        assert_eq!(token.to_string(), "tok_abcdefghijklmnopqrstuvwxyz");
    }

    #[test]
    fn chunks_cover_every_index_once_in_order() {
        for (len, max) in [
            (0, 10),
            (1, 10),
            (10, 10),
            (11, 10),
            (2500, 1000),
            (7, 1),
            (5, 0),
        ] {
            let ranges: Vec<_> = chunks(len, max).collect();
            let flat: Vec<usize> = ranges.iter().cloned().flatten().collect();
            assert_eq!(flat, (0..len).collect::<Vec<_>>(), "len {len} max {max}");
            assert!(
                ranges
                    .iter()
                    .all(|r| !r.is_empty() && r.len() <= max.max(1))
            );
        }
        assert_eq!(
            chunks(2500, 1000).collect::<Vec<_>>(),
            vec![0..1000, 1000..2000, 2000..2500]
        );
    }

    #[test]
    fn single_maps_item_errors_to_call_errors() {
        let ok: Vec<Result<u8, ItemError>> = vec![Ok(7)];
        assert_eq!(single(ok).unwrap(), 7);
        let not_found = vec![Err::<u8, _>(ItemError::from_wire(
            0,
            pb::ItemError {
                code: pb::ErrorCode::NotFound as i32,
                message: "no such token".into(),
                reason: String::new(),
            },
        ))];
        assert!(matches!(single(not_found), Err(Error::NotFound { .. })));
        assert!(matches!(
            single::<u8>(Vec::new()),
            Err(Error::Protocol { .. })
        ));
        assert!(matches!(
            single(vec![Ok(1u8), Ok(2)]),
            Err(Error::Protocol { .. })
        ));
    }

    #[test]
    fn debug_redacts_values() {
        let item = TokenizeItem::new("4111111111111111").metadata("order", "o-1");
        let debug = format!("{item:?}");
        assert!(!debug.contains("4111"), "{debug}");
        assert!(debug.contains("o-1"), "{debug}");
        let value = Detokenized::from_wire(pb::DetokenizedValue {
            value: "4111111111111111".into(),
            key_version: 2,
            metadata: HashMap::new(),
            expires_at: None,
        });
        let debug = format!("{value:?}");
        assert!(!debug.contains("4111"), "{debug}");
        assert_eq!(value.value.expose_secret(), "4111111111111111");
    }

    #[test]
    fn idempotency_keys_are_unique_and_within_bounds() {
        let a = idempotency_key().unwrap();
        let b = idempotency_key().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 35);
        assert!(a.len() <= MAX_IDEMPOTENCY_KEY_LEN);
    }

    #[test]
    fn timestamps_convert_and_bad_ones_read_as_unset() {
        let t = timestamp(Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        }))
        .unwrap();
        assert_eq!(
            t.duration_since(std::time::UNIX_EPOCH).unwrap(),
            Duration::new(1_700_000_000, 5)
        );
        assert_eq!(timestamp(None), None);
    }
}
