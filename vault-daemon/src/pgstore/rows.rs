//! Row codecs: the column lists read back, and integers between PostgreSQL's signed and the store's unsigned types.

use super::*;
use vault_core::keys::State;
use vault_core::store::JobState;
pub(super) use vault_core::store::columns::{JOB_COLUMNS, RECORD_COLUMNS};

/// The database's clock in milliseconds since the Unix epoch (rewrap leases).
pub(super) const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::int8";

pub(super) fn i64_of(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::conflict("value out of range".into()))
}

pub(super) fn u64_of(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::corrupt("negative value stored".into()))
}

pub(super) fn u32_of(v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::corrupt("value out of range stored".into()))
}

pub(super) fn record_from(r: &tokio_postgres::Row) -> Result<Record, StoreError> {
    let fp_version: Option<i64> = r.get(6);
    let fingerprint: Option<Vec<u8>> = r.get(7);
    let fingerprint = match (fp_version, fingerprint) {
        (Some(v), Some(f)) => Some((u32_of(v)?, f)),
        _ => None,
    };
    Ok(Record {
        id: u64_of(r.get(0))?,
        template: r.get(1),
        key_version: u32_of(r.get(2))?,
        ciphertext: r.get(3),
        expires_at: r.get(4),
        metadata: r.get(5),
        fingerprint,
        lookup: r.get(8),
        created_at: r.get(9),
        // Stored as the signed 64-bit integer of the same bits.
        token_check: r.get::<_, Option<i64>>(10).map(|c| c as u64),
    })
}

pub(super) fn job_from(r: &tokio_postgres::Row) -> Result<RewrapJobRow, StoreError> {
    Ok(RewrapJobRow {
        id: u64_of(r.get(0))?,
        template: r.get(1),
        target_version: u32_of(r.get(2))?,
        target_fp_version: u32_of(r.get(3))?,
        state: job_state_of(r.get(4))?,
        cursor: u64_of(r.get(5))?,
        processed: u64_of(r.get(6))?,
        created_at: r.get(7),
        updated_at: r.get(8),
        owner: r.get(9),
    })
}

/// A key version state read back by name.
pub(super) fn key_state_of(name: &str) -> Result<State, StoreError> {
    name.parse()
        .map_err(|_| StoreError::corrupt(format!("unknown key version state {name:?}")))
}

/// A rewrap job state read back by name.
pub(super) fn job_state_of(name: &str) -> Result<JobState, StoreError> {
    JobState::from_name(name)
        .ok_or_else(|| StoreError::corrupt(format!("unknown rewrap job state {name:?}")))
}
