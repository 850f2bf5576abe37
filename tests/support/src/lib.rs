//! What every test binary of the workspace shares: Luhn-valid test card numbers, the request
//! builders every suite needs, the canary scan's file walk and word match, how a test reports a figure or a skip, and whether PostgreSQL is
//! there to test against.
//!
//! Used by vault-tests (the end-to-end, storage and reliability suites, `vault-loadgen`) and by
//! vault-daemon's own test binaries (`vaultd`, `vaultctl`, cluster, canary).
#![forbid(unsafe_code)]

mod luhn;
mod report;
mod requests;
mod scan;

pub use luhn::{luhn_check_digit, luhn_pan, luhn_valid, with_luhn};
pub use report::{figure, pg_url, pg_url_or_skip, say};
pub use requests::{detokenize_request, tokenize_request, with_key};
pub use scan::{contains_word, files_under};
