//! vault-core: format-preserving tokenization (NIST SP 800-38G FF1), token templates, vaulted
//! tokens (values sealed with AES-256-GCM envelope encryption and stored as records, see
//! `vault`), key rotation and rewrap, on SQLite behind the [`store::Store`] trait.
//!
//! No network code lives here: the daemon and the client build on this crate.
#![forbid(unsafe_code)]
// House rules as lints: a panic on `None`/`Err` outside tests needs a stated reason at its
// site (`#[expect(clippy::expect_used, reason = …)]`).
#![warn(clippy::unwrap_used, clippy::expect_used)]
#![warn(missing_docs)]

mod aead;
mod encoding;
pub mod envelope;
pub mod fpe;
pub mod keys;
pub mod secret;
pub mod store;
pub mod template;
pub mod vault;

#[cfg(test)]
mod redaction_tests;
