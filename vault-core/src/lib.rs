//! vault-core: format-preserving tokenization (NIST SP 800-38G FF1), token templates, and (with
//! the next issue) vaulted tokens, envelope encryption and key rotation on SQLite.
//!
//! No network code lives here: the daemon and the client build on this crate.
#![forbid(unsafe_code)]
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
