//! Row codecs: the column lists read back into the store's types.

use super::*;
pub(super) use crate::store::columns::{JOB_COLUMNS, RECORD_COLUMNS};
use rusqlite::ToSql;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};

use crate::keys::State;
use crate::store::JobState;

pub(super) fn record_from(r: &Row<'_>) -> rusqlite::Result<Record> {
    let fp_version: Option<u32> = r.get(6)?;
    let fingerprint: Option<Vec<u8>> = r.get(7)?;
    Ok(Record {
        id: r.get(0)?,
        template: r.get(1)?,
        key_version: r.get(2)?,
        ciphertext: r.get(3)?,
        expires_at: r.get(4)?,
        metadata: r.get(5)?,
        fingerprint: fp_version.zip(fingerprint),
        lookup: r.get(8)?,
        created_at: r.get(9)?,
        // Stored as the signed 64-bit integer of the same bits.
        token_check: r.get::<_, Option<i64>>(10)?.map(|c| c as u64),
    })
}

pub(super) fn key_version_from(r: &Row<'_>) -> rusqlite::Result<KeyVersionRow> {
    Ok(KeyVersionRow {
        name: r.get(0)?,
        version: r.get(1)?,
        state: r.get(2)?,
        wrapped: r.get(3)?,
        nonce_count: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}

pub(super) fn job_from(r: &Row<'_>) -> rusqlite::Result<RewrapJobRow> {
    Ok(RewrapJobRow {
        id: r.get(0)?,
        template: r.get(1)?,
        target_version: r.get(2)?,
        target_fp_version: r.get(3)?,
        state: r.get(4)?,
        cursor: r.get(5)?,
        processed: r.get(6)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
        owner: r.get(9)?,
    })
}

/// Key version states are stored by name (the table's CHECK lists them).
impl ToSql for State {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for State {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let name = value.as_str()?;
        name.parse()
            .map_err(|e: crate::keys::KeyError| FromSqlError::Other(Box::new(e)))
    }
}

/// Rewrap job states are stored by name (the table's CHECK lists them).
impl ToSql for JobState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for JobState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let name = value.as_str()?;
        JobState::from_name(name)
            .ok_or_else(|| FromSqlError::Other(format!("unknown rewrap job state {name:?}").into()))
    }
}
