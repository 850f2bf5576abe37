//! The client services embed to call the vault daemon (`vaultd`) over gRPC (`vault.v1`).
//!
//! ```no_run
//! use vault_client::{CallOptions, Config, VaultClient};
//! # async fn f() -> Result<(), vault_client::Error> {
//! let client = VaultClient::connect(
//!     Config::new("http://127.0.0.1:8200").api_key("…".to_owned().into()),
//! )
//! .await?;
//! let token = client.tokenize("pan", "4111111111111111").await?;
//! let masked = client.reveal("pan", &token.token, "receipt").await?;
//! assert!(masked.masked.ends_with("1111"));
//! # Ok(()) }
//! ```
//!
//! # Failing loudly and safely
//!
//! Every call has a deadline that covers its retries. Only calls that cannot change outcome
//! when repeated are retried (detokenize, reveal, tokenize on a template declared
//! deterministic or with idempotency keys), only on UNAVAILABLE and RESOURCE_EXHAUSTED, with
//! jittered exponential backoff and a retry budget ([`RetryPolicy`]). A circuit breaker
//! ([`BreakerPolicy`]) fails calls fast with [`Error::CircuitOpen`] while the daemon is down.
//! Nothing ever falls back to a local substitute that would hold a value: errors go to the
//! caller.
//!
//! # Secrets
//!
//! Detokenized values are [`secrecy::SecretString`]s (zeroized on drop, redacted in `Debug`);
//! input values are held the same way, and the client zeroizes the request copies it owns. The
//! API key is sent as sensitive metadata and never printed. Buffers inside tonic, hyper and
//! prost are outside the client's reach and are not zeroized.
#![forbid(unsafe_code)]
// House rules as lints: a panic on `None`/`Err` outside tests needs a stated reason at its
// site (`#[expect(clippy::expect_used, reason = …)]`).
#![warn(clippy::unwrap_used, clippy::expect_used)]
#![warn(missing_docs)]

mod admin;
mod breaker;
mod call;
mod client;
mod clock;
mod config;
mod error;
mod retry;

pub use admin::{AdminClient, CreatedCaller, NewRootKey, RootKeyRotation};
pub use breaker::{BreakerPolicy, BreakerState};
pub use call::CallOptions;
pub use client::{Detokenized, Revealed, Token, TokenizeItem, VaultClient};
pub use config::{Config, DEFAULT_MAX_BATCH, Tls};
pub use error::{Error, ItemError, ItemErrorCode};
pub use retry::RetryPolicy;
/// Re-exported so callers can name secret types without depending on `secrecy` themselves.
pub use secrecy::{self, ExposeSecret, SecretString};
/// The `vault.v1` messages the Admin wrappers take and return.
pub use vault_proto::v1 as proto;
