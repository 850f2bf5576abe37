//! The `Store` trait on SQLite.

use super::*;
use crate::keys::State;
use crate::store::JobState;

impl Store for SqliteStore {
    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.readers.with(|c| {
            Ok(c.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
                .query_row([key], |r| r.get(0))
                .optional()?)
        })
    }

    fn meta_put(&self, entries: &[(&str, &[u8])]) -> Result<(), StoreError> {
        let entries = owned_meta(entries);
        self.writer.submit(move |c| put_meta(c, &entries))
    }

    fn meta_insert_new(&self, entries: &[(&str, &[u8])]) -> Result<(), StoreError> {
        let entries = owned_meta(entries);
        self.writer.submit(move |c| {
            let mut stmt = c.prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            )?;
            for (k, v) in &entries {
                if stmt.execute(params![k, v])? == 0 {
                    return Err(StoreError::conflict(format!("metadata {k} exists")).into());
                }
            }
            Ok(())
        })
    }

    /// A committed metadata write, plus room to grow: free pages inside the file and pages
    /// below `max_page_count` together at least [`PROBE_HEADROOM_PAGES`]. A small write can
    /// land in a page with space left while a batch of records cannot, so success of the
    /// write alone would flip health back while tokenize still fails.
    fn probe_write(&self) -> Result<(), StoreError> {
        self.writer.submit(|c| {
            put_meta(c, &[(crate::store::PROBE_KEY.to_owned(), Vec::new())])?;
            let pragma = |name: &str| -> Result<u64, Failure> {
                Ok(c.pragma_query_value(None, name, |r| r.get(0))?)
            };
            let (max, used, free) = (
                pragma("max_page_count")?,
                pragma("page_count")?,
                pragma("freelist_count")?,
            );
            if max.saturating_sub(used) + free < PROBE_HEADROOM_PAGES {
                return Err(StoreError::unavailable("the database cannot grow".into()).into());
            }
            Ok(())
        })
    }

    fn keys_load(&self) -> Result<KeyTable, StoreError> {
        self.readers.snapshot(|c| {
            let names = c
                .prepare_cached(
                    "SELECT name, purpose, min_decrypt_version, created_at FROM key_names \
                     ORDER BY name",
                )?
                .query_map([], |r| {
                    Ok(KeyNameRow {
                        name: r.get(0)?,
                        purpose: r.get(1)?,
                        min_decrypt_version: r.get(2)?,
                        created_at: r.get(3)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let versions = c
                .prepare_cached(
                    "SELECT name, version, state, wrapped, nonce_count, created_at, updated_at \
                     FROM key_versions ORDER BY name, version",
                )?
                .query_map([], key_version_from)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(KeyTable { names, versions })
        })
    }

    fn keys_generation(&self) -> Result<u64, StoreError> {
        self.readers.with(|c| {
            Ok(
                c.prepare_cached("SELECT value FROM counters WHERE name = 'key_generation'")?
                    .query_row([], |r| r.get(0))?,
            )
        })
    }

    fn key_create(&self, name: &KeyNameRow, first: &KeyVersionRow) -> Result<(), StoreError> {
        if first.name != name.name {
            return Err(StoreError::conflict(
                "first version belongs to another key name".into(),
            ));
        }
        let (name, first) = (name.clone(), first.clone());
        self.writer.submit(move |c| {
            let inserted = c
                .prepare_cached(
                    "INSERT INTO key_names (name, purpose, min_decrypt_version, created_at) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                )?
                .execute(params![
                    name.name,
                    name.purpose,
                    name.min_decrypt_version,
                    name.created_at
                ])?;
            if inserted == 0 {
                return Err(StoreError::conflict(format!("key {} exists", name.name)).into());
            }
            bump_key_generation(c)?;
            insert_version(c, &first)
        })
    }

    fn key_rotate(&self, new: &KeyVersionRow) -> Result<(), StoreError> {
        if new.state != State::Active || new.version < 2 {
            return Err(StoreError::conflict(
                "a rotation inserts an active version above 1".into(),
            ));
        }
        let new = new.clone();
        self.writer.submit(move |c| {
            let moved = c
                .prepare_cached(
                    "UPDATE key_versions SET state = ?4, updated_at = ?3 \
                     WHERE name = ?1 AND version = ?2 AND state = ?5",
                )?
                .execute(params![
                    new.name,
                    new.version - 1,
                    new.created_at,
                    State::DecryptOnly,
                    State::Active
                ])?;
            if moved == 0 {
                return Err(not_found_or_conflict(
                    c,
                    "SELECT 1 FROM key_versions WHERE name = ?1 AND version = ?2",
                    params![new.name, new.version - 1],
                    "previous key version",
                ));
            }
            bump_key_generation(c)?;
            insert_version(c, &new)
        })
    }

    fn key_set_state(
        &self,
        name: &str,
        version: u32,
        from: State,
        to: State,
        erase_material: bool,
    ) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.writer.submit(move |c| {
            if to == State::Retired {
                refuse_retire_with_data(c, &name, version)?;
            }
            let changed = c
                .prepare_cached(
                    "UPDATE key_versions SET state = ?4, updated_at = unixepoch(), \
                     wrapped = CASE WHEN ?5 THEN NULL ELSE wrapped END \
                     WHERE name = ?1 AND version = ?2 AND state = ?3",
                )?
                .execute(params![name, version, from, to, erase_material])?;
            if changed == 0 {
                return Err(not_found_or_conflict(
                    c,
                    "SELECT 1 FROM key_versions WHERE name = ?1 AND version = ?2",
                    params![name, version],
                    "key version",
                ));
            }
            bump_key_generation(c)
        })
    }

    fn key_raise_min_version(&self, name: &str, min: u32) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.writer.submit(move |c| {
            let changed = c
                .prepare_cached(
                    "UPDATE key_names SET min_decrypt_version = ?2 \
                     WHERE name = ?1 AND min_decrypt_version < ?2",
                )?
                .execute(params![name, min])?;
            if changed == 0 {
                return Err(not_found_or_conflict(
                    c,
                    "SELECT 1 FROM key_names WHERE name = ?1",
                    params![name],
                    "key name (minimum version only rises)",
                ));
            }
            bump_key_generation(c)
        })
    }

    fn keys_rewrap_all(
        &self,
        wraps: &[(String, u32, Vec<u8>)],
        meta: &[(&str, &[u8])],
    ) -> Result<(), StoreError> {
        let wraps = wraps.to_vec();
        let meta = owned_meta(meta);
        self.writer.submit(move |c| {
            let mut stmt = c.prepare_cached(
                "UPDATE key_versions SET wrapped = ?3 \
                 WHERE name = ?1 AND version = ?2 AND wrapped IS NOT NULL",
            )?;
            for (name, version, wrapped) in &wraps {
                if stmt.execute(params![name, version, wrapped])? == 0 {
                    return Err(StoreError::not_found(format!(
                        "key {name} version {version} with material"
                    ))
                    .into());
                }
            }
            // Every remaining wrap must be in the set, or it would stay under the old root key
            // and be lost with it.
            let held: u64 = c.query_row(
                "SELECT count(*) FROM key_versions WHERE wrapped IS NOT NULL",
                [],
                |r| r.get(0),
            )?;
            if held != wraps.len() as u64 {
                return Err(StoreError::conflict(format!(
                    "{held} wrapped keys stored, {} rewrapped",
                    wraps.len()
                ))
                .into());
            }
            bump_key_generation(c)?;
            put_meta(c, &meta)
        })
    }

    fn key_reserve_nonces(&self, name: &str, version: u32, n: u64) -> Result<u64, StoreError> {
        let name = name.to_owned();
        self.writer.submit(move |c| {
            let total: Option<u64> = c
                .prepare_cached(
                    "UPDATE key_versions SET nonce_count = nonce_count + ?3 \
                     WHERE name = ?1 AND version = ?2 AND nonce_count <= ?4 - ?3 \
                     RETURNING nonce_count",
                )?
                .query_row(params![name, version, n, i64::MAX], |r| r.get(0))
                .optional()?;
            match total {
                Some(t) => Ok(t),
                None => Err(not_found_or_conflict(
                    c,
                    "SELECT 1 FROM key_versions WHERE name = ?1 AND version = ?2",
                    params![name, version],
                    "key version (nonce count would overflow)",
                )),
            }
        })
    }

    fn allocate_ids(&self, n: u64) -> Result<Range<u64>, StoreError> {
        self.ids
            .take(n, |want| self.writer.submit(move |c| reserve_ids(c, want)))
    }

    fn insert_records(&self, rows: &[NewRecord]) -> Result<Vec<InsertOutcome>, StoreError> {
        let rows = rows.to_vec();
        self.writer.submit(move |c| insert_records(c, &rows))
    }

    fn get_records(&self, ids: &[u64]) -> Result<Vec<Option<Record>>, StoreError> {
        let get = |c: &Connection| -> Result<Vec<Option<Record>>, Failure> {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM records WHERE id = ?1"
            ))?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.push(stmt.query_row([id], record_from).optional()?);
            }
            Ok(out)
        };
        if ids.len() > 1 {
            self.readers.snapshot(get)
        } else {
            self.readers.with(get)
        }
    }

    fn find_by_fingerprint(
        &self,
        template: &str,
        fp_version: u32,
        fingerprint: &[u8],
    ) -> Result<Option<u64>, StoreError> {
        self.readers
            .with(|c| Ok(find_fingerprint(c, template, fp_version, fingerprint)?))
    }

    fn find_by_lookup(&self, template: &str, lookup: &[u8]) -> Result<Option<u64>, StoreError> {
        self.readers.with(|c| Ok(find_lookup(c, template, lookup)?))
    }

    fn find_by_idempotency(&self, key: &[u8]) -> Result<Option<IdempotencyHit>, StoreError> {
        self.readers.with(|c| Ok(find_idempotency(c, key)?))
    }

    fn delete_records(&self, ids: &[u64]) -> Result<Vec<bool>, StoreError> {
        let ids = ids.to_vec();
        self.writer.submit(move |c| {
            // Idempotency rows go with their record (ON DELETE CASCADE).
            let mut stmt = c.prepare_cached(
                "DELETE FROM records WHERE id = ?1 RETURNING template, key_version",
            )?;
            let mut out = Vec::with_capacity(ids.len());
            let mut counts = Counts::default();
            for id in &ids {
                let gone: Option<(String, u32)> = stmt
                    .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                if let Some((t, v)) = &gone {
                    counts.add(t, *v, -1);
                }
                out.push(gone.is_some());
            }
            counts.apply(c)?;
            Ok(out)
        })
    }

    fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        self.writer.submit(move |c| {
            let mut counts = Counts::default();
            let mut n = 0u64;
            let mut stmt = c.prepare_cached(
                "DELETE FROM records WHERE expires_at <= ?1 RETURNING template, key_version",
            )?;
            let mut rows = stmt.query([now])?;
            while let Some(r) = rows.next()? {
                let (t, v): (String, u32) = (r.get(0)?, r.get(1)?);
                counts.add(&t, v, -1);
                n += 1;
            }
            drop(rows);
            counts.apply(c)?;
            Ok(n)
        })
    }

    fn count_by_key_version(&self, template: &str, key_version: u32) -> Result<u64, StoreError> {
        self.readers
            .with(|c| Ok(count_key_version(c, template, key_version)?))
    }

    fn count_by_fp_version(&self, template: &str, fp_version: u32) -> Result<u64, StoreError> {
        self.readers
            .with(|c| Ok(count_fp_version(c, template, fp_version)?))
    }

    fn records_to_rewrap(
        &self,
        template: &str,
        target_version: u32,
        target_fp_version: u32,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        self.readers.with(|c| {
            // Walks the table in id order from the cursor (NOT INDEXED keeps the planner off
            // records_version, which would need a sort of every old row per batch): each row is
            // visited once over the whole job.
            let rows = c
                .prepare_cached(&format!(
                    "SELECT {RECORD_COLUMNS} FROM records NOT INDEXED \
                     WHERE id > ?1 AND template = ?2 \
                       AND (key_version < ?3 OR (fingerprint IS NOT NULL AND fp_version < ?4)) \
                     ORDER BY id LIMIT ?5"
                ))?
                .query_map(
                    params![after_id, template, target_version, target_fp_version, limit],
                    record_from,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    fn rewrap_commit(
        &self,
        updates: &[RecordUpdate],
        job: &RewrapJobRow,
    ) -> Result<u64, StoreError> {
        let (updates, job) = (updates.to_vec(), job.clone());
        self.writer.submit(move |c| {
            let mut with_fp = c.prepare_cached(
                "UPDATE records SET key_version = ?3, ciphertext = ?4, fp_version = ?5, \
                 fingerprint = ?6 \
                 WHERE id = ?1 AND key_version = ?2 \
                   AND NOT (key_version = ?3 AND fp_version IS ?5)",
            )?;
            let mut data_only = c.prepare_cached(
                "UPDATE records SET key_version = ?3, ciphertext = ?4 \
                 WHERE id = ?1 AND key_version = ?2 AND key_version <> ?3",
            )?;
            let mut updated = 0u64;
            let mut counts = Counts::default();
            for u in &updates {
                let n = match &u.fingerprint {
                    Some((v, fp)) => with_fp.execute(params![
                        u.id,
                        u.old_key_version,
                        u.new_key_version,
                        u.ciphertext,
                        v,
                        fp
                    ])?,
                    None => data_only.execute(params![
                        u.id,
                        u.old_key_version,
                        u.new_key_version,
                        u.ciphertext
                    ])?,
                };
                updated += n as u64;
                if n == 1 && u.old_key_version != u.new_key_version {
                    counts.add(&job.template, u.old_key_version, -1);
                    counts.add(&job.template, u.new_key_version, 1);
                }
            }
            counts.apply(c)?;
            let saved = c
                .prepare_cached(
                    "UPDATE rewrap_jobs SET state = ?2, cursor = ?3, \
                     processed = processed + ?4, updated_at = ?5, \
                     lease_until_ms = CASE WHEN owner = '' THEN 0 ELSE ?7 + lease_ms END \
                     WHERE id = ?1 AND cursor <= ?3 AND owner IN ('', ?6)",
                )?
                .execute(params![
                    job.id,
                    job.state,
                    job.cursor,
                    updated,
                    job.updated_at,
                    job.owner,
                    now_ms()
                ])?;
            if saved == 0 {
                return Err(not_found_or_conflict(
                    c,
                    "SELECT 1 FROM rewrap_jobs WHERE id = ?1",
                    params![job.id],
                    "rewrap job (cursor only moves forward; lease held by another owner)",
                ));
            }
            Ok(updated)
        })
    }

    fn rewrap_job_get(&self, id: u64) -> Result<Option<RewrapJobRow>, StoreError> {
        self.readers.with(|c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM rewrap_jobs WHERE id = ?1"
            ))?
            .query_row([id], job_from)
            .optional()?)
        })
    }

    fn rewrap_jobs(&self) -> Result<Vec<RewrapJobRow>, StoreError> {
        self.readers.with(|c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM rewrap_jobs ORDER BY id DESC"
            ))?
            .query_map([], job_from)?
            .collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn rewrap_job_create(&self, job: &RewrapJobRow) -> Result<u64, StoreError> {
        let job = job.clone();
        self.writer.submit(move |c| {
            Ok(c.prepare_cached(
                "INSERT INTO rewrap_jobs (template, target_version, target_fp_version, state, \
                 cursor, processed, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
            )?
            .query_row(
                params![
                    job.template,
                    job.target_version,
                    job.target_fp_version,
                    job.state,
                    job.cursor,
                    job.processed,
                    job.created_at,
                    job.updated_at
                ],
                |r| r.get(0),
            )?)
        })
    }

    fn rewrap_job_update(
        &self,
        job: &RewrapJobRow,
        from_state: JobState,
    ) -> Result<(), StoreError> {
        let (job, from) = (job.clone(), from_state);
        self.writer.submit(move |c| {
            let changed = c
                .prepare_cached(
                    "UPDATE rewrap_jobs SET state = ?3, cursor = ?4, processed = ?5, \
                     updated_at = ?6, \
                     owner = CASE WHEN ?3 = ?8 THEN owner ELSE '' END, \
                     lease_until_ms = CASE WHEN ?3 = ?8 THEN lease_until_ms ELSE 0 END \
                     WHERE id = ?1 AND state = ?2 AND owner IN ('', ?7)",
                )?
                .execute(params![
                    job.id,
                    from,
                    job.state,
                    job.cursor,
                    job.processed,
                    job.updated_at,
                    job.owner,
                    JobState::Running
                ])?;
            if changed == 0 {
                return Err(not_found_or_conflict(
                    c,
                    "SELECT 1 FROM rewrap_jobs WHERE id = ?1",
                    params![job.id],
                    "rewrap job (state changed, or lease held by another owner)",
                ));
            }
            Ok(())
        })
    }

    fn rewrap_job_claim(&self, id: u64, owner: &str, lease_ms: u64) -> Result<bool, StoreError> {
        let owner = owner.to_owned();
        let lease = i64::try_from(lease_ms).unwrap_or(i64::MAX / 2);
        self.writer.submit(move |c| {
            let now = now_ms();
            let granted = c
                .prepare_cached(
                    "UPDATE rewrap_jobs SET owner = ?2, lease_ms = ?3, lease_until_ms = ?4 + ?3 \
                     WHERE id = ?1 AND state <> ?5 \
                       AND (owner IN ('', ?2) OR lease_until_ms < ?4)",
                )?
                .execute(params![id, owner, lease, now, JobState::Completed])?;
            if granted == 0 {
                c.prepare_cached("SELECT 1 FROM rewrap_jobs WHERE id = ?1")?
                    .query_row([id], |_| Ok(()))
                    .optional()?
                    .ok_or_else(|| StoreError::not_found("rewrap job".into()))?;
            }
            Ok(granted == 1)
        })
    }
}
