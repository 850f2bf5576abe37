//! The GCM nonce budget per key version.
//!
//! With random 96-bit nonces, SP 800-38D §8.3 allows at most 2^32 invocations of the
//! authenticated encryption function per key, which keeps the chance of a repeated nonce below
//! 2^-32. We ask for rotation at half of that, 2^31, so the active version is replaced long
//! before the limit even under a burst of writes, and refuse to seal at all at the limit.
//! Counts are reserved in the store before sealing (`Store::key_reserve_nonces`), so a crash
//! can only over-count.

/// Hard limit of seals per key version (SP 800-38D §8.3).
pub const LIMIT: u64 = 1 << 32;
/// Seals after which the version should be rotated (a 2x safety margin below [`LIMIT`]).
pub const ROTATE_AT: u64 = 1 << 31;

/// Where a version stands against its nonce budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Below [`ROTATE_AT`].
    Ok,
    /// At or past [`ROTATE_AT`]: still safe to seal, rotate now.
    RotateNow,
    /// Past [`LIMIT`]: sealing must stop until the key is rotated.
    Exhausted,
}

/// Classifies a version's nonce count (after a reservation).
pub fn budget(count: u64) -> Budget {
    if count > LIMIT {
        Budget::Exhausted
    } else if count >= ROTATE_AT {
        Budget::RotateNow
    } else {
        Budget::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        assert_eq!(budget(0), Budget::Ok);
        assert_eq!(budget(ROTATE_AT - 1), Budget::Ok);
        assert_eq!(budget(ROTATE_AT), Budget::RotateNow);
        assert_eq!(budget(LIMIT), Budget::RotateNow);
        assert_eq!(budget(LIMIT + 1), Budget::Exhausted);
        assert_eq!(budget(u64::MAX), Budget::Exhausted);
    }
}
