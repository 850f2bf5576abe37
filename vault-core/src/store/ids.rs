//! Record ids handed out from blocks reserved in a store's persisted counter, shared by every
//! [`super::Store`] implementation so that the block logic (and what happens when another
//! process moved the counter meanwhile) is written once.

use std::ops::Range;
use std::sync::{Mutex, PoisonError};

use super::StoreError;

/// Ids reserved per counter update: most [`super::Store::allocate_ids`] calls cost no
/// transaction; a crash loses the rest of a block (a gap), never hands an id out twice.
pub const ID_BLOCK: u64 = 1 << 16;

/// The ids a store reserved and has not handed out yet.
#[derive(Debug, Default)]
pub struct IdBlocks(Mutex<Range<u64>>);

impl IdBlocks {
    /// An empty cache.
    pub fn new() -> IdBlocks {
        IdBlocks(Mutex::new(0..0))
    }

    /// Hands out `n` sequential ids, calling `reserve(k)` for a fresh block of `k` ids (a
    /// multiple of [`ID_BLOCK`]) when the cached rest is too short. `reserve` runs under the
    /// cache's lock, so two callers of one store never both reserve.
    pub fn take(
        &self,
        n: u64,
        reserve: impl FnOnce(u64) -> Result<Range<u64>, StoreError>,
    ) -> Result<Range<u64>, StoreError> {
        let mut ids = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if ids.end - ids.start >= n {
            let start = ids.start;
            ids.start += n;
            return Ok(start..start + n);
        }
        // The new block alone covers `n`: another process on the same data (another daemon, a
        // second SQLite handle, `vaultctl`) may have moved the counter since the cached rest was
        // reserved, and then the two do not join (the storage suite's `ids_unique_across_handles`
        // found this).
        let want = n
            .max(1)
            .div_ceil(ID_BLOCK)
            .checked_mul(ID_BLOCK)
            .ok_or_else(|| StoreError::conflict("record ids exhausted".into()))?;
        let block = reserve(want)?;
        // A block that starts where the cached one ends joins it; otherwise the cached rest is
        // dropped (a gap, never a repeat).
        let start = if block.start == ids.end {
            ids.start
        } else {
            block.start
        };
        *ids = start + n..block.end;
        Ok(start..start + n)
    }
}
