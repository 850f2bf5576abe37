//! The insert path: per-version record counts, the lookups that find an existing record (fingerprint, lookup hash, idempotency key), and the batch insert.

use super::*;

/// Changes to `version_counts` gathered over one write, applied once per (template, version).
#[derive(Default)]
pub(super) struct Counts(Vec<(String, u32, i64)>);

impl Counts {
    pub(super) fn add(&mut self, template: &str, version: u32, delta: i64) {
        match self
            .0
            .iter_mut()
            .find(|(t, v, _)| *v == version && t == template)
        {
            Some(entry) => entry.2 += delta,
            None => self.0.push((template.to_owned(), version, delta)),
        }
    }

    pub(super) fn apply(&self, c: &Connection) -> rusqlite::Result<()> {
        let mut stmt = c.prepare_cached(
            "INSERT INTO version_counts (template, key_version, count) VALUES (?1, ?2, ?3) \
             ON CONFLICT (template, key_version) DO UPDATE SET count = count + excluded.count",
        )?;
        // A row with a negative count would fail the CHECK before the upsert adds it, so
        // decrements are plain updates (their row exists: the records being removed were
        // counted when inserted).
        let mut down = c.prepare_cached(
            "UPDATE version_counts SET count = count + ?3 WHERE template = ?1 AND key_version = ?2",
        )?;
        for (t, v, delta) in &self.0 {
            match delta.cmp(&0) {
                std::cmp::Ordering::Greater => stmt.execute(params![t, v, delta])?,
                std::cmp::Ordering::Less => down.execute(params![t, v, delta])?,
                std::cmp::Ordering::Equal => 0,
            };
        }
        Ok(())
    }
}

pub(super) fn find_fingerprint(
    c: &Connection,
    template: &str,
    v: u32,
    fp: &[u8],
) -> rusqlite::Result<Option<u64>> {
    c.prepare_cached(
        "SELECT id FROM records \
         WHERE template = ?1 AND fp_version = ?2 AND fingerprint = ?3",
    )?
    .query_row(params![template, v, fp], |r| r.get(0))
    .optional()
}

pub(super) fn find_lookup(
    c: &Connection,
    template: &str,
    lookup: &[u8],
) -> rusqlite::Result<Option<u64>> {
    c.prepare_cached("SELECT id FROM records WHERE template = ?1 AND lookup = ?2")?
        .query_row(params![template, lookup], |r| r.get(0))
        .optional()
}

pub(super) fn find_idempotency(
    c: &Connection,
    key: &[u8],
) -> rusqlite::Result<Option<IdempotencyHit>> {
    c.prepare_cached("SELECT record_id, request FROM idempotency WHERE key = ?1")?
        .query_row([key], |r| {
            Ok(IdempotencyHit {
                record_id: r.get(0)?,
                request: request_hash(r.get::<_, Option<Vec<u8>>>(1)?),
            })
        })
        .optional()
}

/// A stored request hash; a missing or malformed one (rows from before schema v5) becomes all
/// zeros, which no request hashes to, so such a key answers `ALREADY_EXISTS`, never a token.
pub(super) fn request_hash(stored: Option<Vec<u8>>) -> [u8; 32] {
    stored
        .and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
        .unwrap_or([0; 32])
}

/// The body of [`Store::insert_records`], inside the writer's transaction.
pub(super) fn insert_records(
    c: &Connection,
    rows: &[NewRecord],
) -> Result<Vec<InsertOutcome>, Failure> {
    let next: u64 = c
        .prepare_cached("SELECT value FROM counters WHERE name = 'record_id'")?
        .query_row([], |r| r.get(0))?;
    let mut insert = c.prepare_cached(
        "INSERT INTO records (id, template, key_version, ciphertext, expires_at, metadata, \
         fp_version, fingerprint, lookup, created_at, token_check) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    let mut checked: Vec<(String, u32)> = Vec::new();
    for row in rows {
        let mut keys = vec![(format!("data/{}", row.template), row.key_version)];
        if let Some((v, _)) = &row.fingerprint {
            keys.push((format!("fp/{}", row.template), *v));
        }
        for key in keys {
            if !checked.contains(&key) {
                require_active(c, &key.0, key.1)?;
                checked.push(key);
            }
        }
    }
    let mut out = Vec::with_capacity(rows.len());
    let mut counts = Counts::default();
    for row in rows {
        if row.id == 0 || row.id >= next {
            // An id the counter never handed out could be handed out again later.
            return Err(StoreError::conflict("record id was not allocated".into()).into());
        }
        if let Some(k) = &row.idempotency
            && let Some(hit) = find_idempotency(c, &k.key)?
        {
            out.push(InsertOutcome::ExistingIdempotency(hit));
            continue;
        }
        if let Some((v, fp)) = &row.fingerprint
            && let Some(id) = find_fingerprint(c, &row.template, *v, fp)?
        {
            if let Some(k) = &row.idempotency {
                c.prepare_cached(
                    "INSERT INTO idempotency (key, record_id, request) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![k.key, id, k.request])?;
            }
            out.push(InsertOutcome::ExistingFingerprint(id));
            continue;
        }
        if let Some(l) = &row.lookup
            && find_lookup(c, &row.template, l)?.is_some()
        {
            out.push(InsertOutcome::LookupCollision);
            continue;
        }
        let (fp_version, fingerprint) = match &row.fingerprint {
            Some((v, fp)) => (Some(*v), Some(fp.as_slice())),
            None => (None, None),
        };
        insert.execute(params![
            row.id,
            row.template,
            row.key_version,
            row.ciphertext,
            row.expires_at,
            row.metadata,
            fp_version,
            fingerprint,
            row.lookup,
            row.created_at,
            row.token_check.map(|c| c as i64)
        ])?;
        if let Some(k) = &row.idempotency {
            c.prepare_cached(
                "INSERT INTO idempotency (key, record_id, request) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![k.key, row.id, k.request])?;
        }
        counts.add(&row.template, row.key_version, 1);
        out.push(InsertOutcome::Inserted);
    }
    counts.apply(c)?;
    Ok(out)
}
