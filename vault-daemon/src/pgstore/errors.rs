//! PostgreSQL errors as `StoreError`s: which SQLSTATE is a conflict, which an outage.

use super::*;

/// Maps a PostgreSQL error to a store error naming only the SQLSTATE and the constraint: the
/// server's message and detail can quote stored values (`Key (lookup)=(\x…) already exists`).
pub(super) fn map_pg(e: tokio_postgres::Error) -> StoreError {
    let Some(db) = e.as_db_error() else {
        // Not the server's words: a closed connection, an I/O error, or a client-side encoding
        // error (which names types, never values).
        if e.is_closed() {
            return StoreError::unavailable("database connection closed".into());
        }
        return StoreError::unavailable("database client".into()).because(e);
    };
    let code = db.code();
    // Our own refusals from `vault_insert_guard` (schema.rs): their words are ours.
    match code.code() {
        "VK001" => {
            return StoreError::KeyNotActive {
                name: db.message().to_owned(),
                version: db.detail().and_then(|d| d.parse().ok()).unwrap_or(0),
            };
        }
        "VK002" => return StoreError::conflict("record id was not allocated".into()),
        _ => {}
    }
    let cause = ServerRefusal {
        sqlstate: code.code().to_owned(),
        constraint: db.constraint().map(str::to_owned),
    };
    let what = cause.to_string();
    let class = &code.code()[..2];
    if *code == SqlState::UNIQUE_VIOLATION
        || *code == SqlState::CHECK_VIOLATION
        || *code == SqlState::FOREIGN_KEY_VIOLATION
        || *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
    {
        StoreError::conflict(what).caused_by(cause)
    } else if class == "XX" {
        StoreError::corrupt(what).caused_by(cause)
    } else {
        // 08 connection, 53 insufficient resources (disk full), 57 operator intervention
        // (shutdown), 25 read-only transaction, and the rest: the database cannot serve now.
        StoreError::unavailable(what).caused_by(cause)
    }
}

/// What a [`StoreError`] keeps as its source from a PostgreSQL server error: the SQLSTATE and
/// the constraint, never the server's message or detail (they can quote stored values).
#[derive(Debug, thiserror::Error)]
#[error("SQLSTATE {sqlstate}{}", constraint.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
pub(crate) struct ServerRefusal {
    /// The five-character SQLSTATE (`23505`, `53100`, …).
    pub(crate) sqlstate: String,
    /// The constraint the server named, if any.
    pub(crate) constraint: Option<String>,
}

impl<T> PgResult<T> for Result<T, tokio_postgres::Error> {
    fn pg(self) -> Result<T, StoreError> {
        self.map_err(map_pg)
    }
}
