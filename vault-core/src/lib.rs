//! vault-core: format-preserving tokenization (NIST SP 800-38G FF1), token templates, and (with
//! the next issue) vaulted tokens, envelope encryption and key rotation on SQLite.
//!
//! No network code lives here: the daemon and the client build on this crate.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod fpe;
pub mod store;
pub mod template;
