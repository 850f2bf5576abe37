//! The column lists both stores read rows back in, in the order their row codecs decode
//! (`sqlite::rows`, the daemon's `pgstore::rows`): written once, so the two cannot drift. The
//! state names the rows store are `keys::State::as_str` and `JobState::as_str`.

/// A record's columns.
pub const RECORD_COLUMNS: &str = "id, template, key_version, ciphertext, expires_at, metadata, \
                                  fp_version, fingerprint, lookup, created_at, token_check";

/// A rewrap job's columns.
pub const JOB_COLUMNS: &str = "id, template, target_version, target_fp_version, state, cursor, \
                               processed, created_at, updated_at, owner";
