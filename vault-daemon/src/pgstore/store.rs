//! The `Store` trait on PostgreSQL.

use super::*;
use vault_core::keys::State;
use vault_core::store::JobState;

impl Store for PgStore {
    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_owned();
        self.run(|pool| async move {
            let c = get(&pool).await?;
            let row = c
                .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])
                .await
                .pg()?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn meta_put(&self, entries: &[(&str, &[u8])]) -> Result<(), StoreError> {
        let entries = owned_meta(entries);
        self.run(|pool| async move {
            let mut c = get(&pool).await?;
            let tx = c.transaction().await.pg()?;
            put_meta(&tx, &entries).await?;
            tx.commit().await.pg()
        })
    }

    fn meta_insert_new(&self, entries: &[(&str, &[u8])]) -> Result<(), StoreError> {
        let entries = owned_meta(entries);
        self.run(|pool| async move {
            let mut c = get(&pool).await?;
            let tx = c.transaction().await.pg()?;
            for (k, v) in &entries {
                let n = tx
                    .execute(
                        "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                        &[k, v],
                    )
                    .await
                    .pg()?;
                if n == 0 {
                    return Err(StoreError::conflict(format!("metadata {k} exists")));
                }
            }
            tx.commit().await.pg()
        })
    }

    fn keys_load(&self) -> Result<KeyTable, StoreError> {
        self.run(|pool| async move {
            let mut c = get(&pool).await?;
            // One snapshot for both tables.
            let tx = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .pg()?;
            let names = tx
                .query(
                    "SELECT name, purpose, min_decrypt_version, created_at FROM key_names \
                     ORDER BY name",
                    &[],
                )
                .await
                .pg()?
                .iter()
                .map(|r| {
                    Ok(KeyNameRow {
                        name: r.get(0),
                        purpose: r.get(1),
                        min_decrypt_version: u32_of(r.get(2))?,
                        created_at: r.get(3),
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            let versions = tx
                .query(
                    "SELECT name, version, state, wrapped, nonce_count, created_at, updated_at \
                     FROM key_versions ORDER BY name, version",
                    &[],
                )
                .await
                .pg()?
                .iter()
                .map(|r| {
                    Ok(KeyVersionRow {
                        name: r.get(0),
                        version: u32_of(r.get(1))?,
                        state: key_state_of(r.get(2))?,
                        wrapped: r.get(3),
                        nonce_count: u64_of(r.get(4))?,
                        created_at: r.get(5),
                        updated_at: r.get(6),
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            tx.commit().await.pg()?;
            Ok(KeyTable { names, versions })
        })
    }

    fn keys_generation(&self) -> Result<u64, StoreError> {
        self.run(|pool| async move {
            let c = get(&pool).await?;
            let stmt = c
                .prepare_cached("SELECT value FROM counters WHERE name = 'key_generation'")
                .await
                .pg()?;
            let row = c.query_one(&stmt, &[]).await.pg()?;
            u64_of(row.get(0))
        })
    }

    fn key_create(&self, name: &KeyNameRow, first: &KeyVersionRow) -> Result<(), StoreError> {
        if first.name != name.name {
            return Err(StoreError::conflict(
                "first version belongs to another key name".into(),
            ));
        }
        let (name, first) = (name.clone(), first.clone());
        self.run(|pool| async move {
            let mut c = get(&pool).await?;
            let tx = c.transaction().await.pg()?;
            let inserted = tx
                .execute(
                    "INSERT INTO key_names (name, purpose, min_decrypt_version, created_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    &[
                        &name.name,
                        &name.purpose,
                        &i64::from(name.min_decrypt_version),
                        &name.created_at,
                    ],
                )
                .await
                .pg()?;
            if inserted == 0 {
                return Err(StoreError::conflict(format!("key {} exists", name.name)));
            }
            bump_key_generation(&tx).await?;
            insert_version(&tx, &first).await?;
            tx.commit().await.pg()
        })
    }

    fn key_rotate(&self, new: &KeyVersionRow) -> Result<(), StoreError> {
        if new.state != State::Active || new.version < 2 {
            return Err(StoreError::conflict(
                "a rotation inserts an active version above 1".into(),
            ));
        }
        let new = new.clone();
        self.run(|pool| async move {
            let mut c = get(&pool).await?;
            let tx = c.transaction().await.pg()?;
            let prev = i64::from(new.version - 1);
            lock_key_version(&tx, &new.name, prev).await?;
            let moved = tx
                .execute(
                    "UPDATE key_versions SET state = $4, updated_at = $3 \
                     WHERE name = $1 AND version = $2 AND state = $5",
                    &[
                        &new.name,
                        &prev,
                        &new.created_at,
                        &State::DecryptOnly.as_str(),
                        &State::Active.as_str(),
                    ],
                )
                .await
                .pg()?;
            if moved == 0 {
                return Err(not_found_or_conflict(
                    &tx,
                    "SELECT 1 FROM key_versions WHERE name = $1 AND version = $2",
                    &[&new.name, &prev],
                    "previous key version",
                )
                .await);
            }
            bump_key_generation(&tx).await?;
            insert_version(&tx, &new).await?;
            tx.commit().await.pg()
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
        let (from_name, to_name) = (from.as_str(), to.as_str());
        let version = i64::from(version);
        self.run(move |pool| async move {
            let mut c = get(&pool).await?;
            let tx = c.transaction().await.pg()?;
            // The lock comes first: an insert under this version either committed before (and
            // is counted below) or waits and then sees the new state.
            lock_key_version(&tx, &name, version).await?;
            let changed = tx
                .execute(
                    "UPDATE key_versions SET state = $4, \
                     updated_at = extract(epoch from now())::int8, \
                     wrapped = CASE WHEN $5 THEN NULL ELSE wrapped END \
                     WHERE name = $1 AND version = $2 AND state = $3",
                    &[&name, &version, &from_name, &to_name, &erase_material],
                )
                .await
                .pg()?;
            if changed == 0 {
                return Err(not_found_or_conflict(
                    &tx,
                    "SELECT 1 FROM key_versions WHERE name = $1 AND version = $2",
                    &[&name, &version],
                    "key version",
                )
                .await);
            }
            if to == State::Retired {
                let purpose: Option<String> = tx
                    .query_opt("SELECT purpose FROM key_names WHERE name = $1", &[&name])
                    .await
                    .pg()?
                    .map(|r| r.get(0));
                let left = match (purpose.as_deref(), name.split_once('/')) {
                    (Some("data"), Some(("data", t))) => count_key_version(&tx, t, version).await?,
                    (Some("fingerprint"), Some(("fp", t))) => {
                        count_fp_version(&tx, t, version).await?
                    }
                    _ => 0,
                };
                if left > 0 {
                    return Err(StoreError::conflict(format!(
                        "{left} records are still stored under this version"
                    )));
                }
            }
            bump_key_generation(&tx).await?;
            tx.commit().await.pg()
        })
    }

    fn key_raise_min_version(&self, name: &str, min: u32) -> Result<(), StoreError> {
        let name = name.to_owned();
        let min = i64::from(min);
        self.run(move |pool| async move {
            let mut c = get(&pool).await?;
            let tx = c.transaction().await.pg()?;
            let changed = tx
                .execute(
                    "UPDATE key_names SET min_decrypt_version = $2 \
                     WHERE name = $1 AND min_decrypt_version < $2",
                    &[&name, &min],
                )
                .await
                .pg()?;
            if changed == 0 {
                return Err(not_found_or_conflict(
                    &tx,
                    "SELECT 1 FROM key_names WHERE name = $1",
                    &[&name],
                    "key name (minimum version only rises)",
                )
                .await);
            }
            bump_key_generation(&tx).await?;
            tx.commit().await.pg()
        })
    }

    fn keys_rewrap_all(
        &self,
        wraps: &[(String, u32, Vec<u8>)],
        meta: &[(&str, &[u8])],
    ) -> Result<(), StoreError> {
        let wraps = wraps.to_vec();
        let meta = owned_meta(meta);
        self.run(|pool| async move {
            let mut c = get(&pool).await?;
            let tx = c.transaction().await.pg()?;
            // Lock the whole key table: no rotation may slip in between.
            tx.batch_execute("LOCK TABLE key_versions IN SHARE ROW EXCLUSIVE MODE")
                .await
                .pg()?;
            for (name, version, wrapped) in &wraps {
                let n = tx
                    .execute(
                        "UPDATE key_versions SET wrapped = $3 \
                         WHERE name = $1 AND version = $2 AND wrapped IS NOT NULL",
                        &[name, &i64::from(*version), wrapped],
                    )
                    .await
                    .pg()?;
                if n == 0 {
                    return Err(StoreError::not_found(format!(
                        "key {name} version {version} with material"
                    )));
                }
            }
            let held: i64 = tx
                .query_one(
                    "SELECT count(*) FROM key_versions WHERE wrapped IS NOT NULL",
                    &[],
                )
                .await
                .pg()?
                .get(0);
            if held != wraps.len() as i64 {
                return Err(StoreError::conflict(format!(
                    "{held} wrapped keys stored, {} rewrapped",
                    wraps.len()
                )));
            }
            bump_key_generation(&tx).await?;
            put_meta(&tx, &meta).await?;
            tx.commit().await.pg()
        })
    }

    fn key_reserve_nonces(&self, name: &str, version: u32, n: u64) -> Result<u64, StoreError> {
        let name = name.to_owned();
        let version = i64::from(version);
        let n = i64_of(n)?;
        self.run(move |pool| async move {
            let mut c = get(&pool).await?;
            let tx = c.transaction().await.pg()?;
            let row = tx
                .query_opt(
                    "UPDATE key_versions SET nonce_count = nonce_count + $3::int8 \
                     WHERE name = $1 AND version = $2 AND nonce_count <= $4::int8 - $3::int8 \
                     RETURNING nonce_count",
                    &[&name, &version, &n, &i64::MAX],
                )
                .await
                .pg()?;
            match row {
                Some(r) => {
                    let total = u64_of(r.get(0))?;
                    tx.commit().await.pg()?;
                    Ok(total)
                }
                None => Err(not_found_or_conflict(
                    &tx,
                    "SELECT 1 FROM key_versions WHERE name = $1 AND version = $2",
                    &[&name, &version],
                    "key version (nonce count would overflow)",
                )
                .await),
            }
        })
    }

    fn allocate_ids(&self, n: u64) -> Result<Range<u64>, StoreError> {
        self.ids.take(n, |want| {
            let want_i = i64_of(want)?;
            let end = self.run(move |pool| async move {
                let c = get(&pool).await?;
                let stmt = c
                    .prepare_cached(
                        "UPDATE counters SET value = value + $1::int8 \
                         WHERE name = 'record_id' AND value <= $2::int8 - $1::int8 \
                         RETURNING value",
                    )
                    .await
                    .pg()?;
                let row = c.query_opt(&stmt, &[&want_i, &i64::MAX]).await.pg()?;
                let row = row.ok_or_else(|| StoreError::conflict("record ids exhausted".into()))?;
                u64_of(row.get(0))
            })?;
            Ok(end - want..end)
        })
    }

    fn insert_records(&self, rows: &[NewRecord]) -> Result<Vec<InsertOutcome>, StoreError> {
        let rows = rows.to_vec();
        self.run(|pool| async move {
            let mut c = get(&pool).await?;
            if rows
                .iter()
                .all(|r| r.idempotency.is_none() && r.fingerprint.is_none() && r.lookup.is_none())
            {
                return insert_plain(&c, &rows).await;
            }
            let tx = c.transaction().await.pg()?;
            let out = insert_records(&tx, &rows).await?;
            tx.commit().await.pg()?;
            Ok(out)
        })
    }

    fn get_records(&self, ids: &[u64]) -> Result<Vec<Option<Record>>, StoreError> {
        let ids: Vec<i64> = ids.iter().map(|&i| i64_of(i)).collect::<Result<_, _>>()?;
        self.run(|pool| async move {
            let c = get(&pool).await?;
            let stmt = c
                .prepare_cached(&format!(
                    "SELECT {RECORD_COLUMNS} FROM records WHERE id = ANY($1)"
                ))
                .await
                .pg()?;
            let mut found: HashMap<u64, Record> = HashMap::new();
            for r in c.query(&stmt, &[&ids]).await.pg()? {
                let rec = record_from(&r)?;
                found.insert(rec.id, rec);
            }
            Ok(ids
                .iter()
                .map(|&id| {
                    u64::try_from(id)
                        .ok()
                        .and_then(|id| found.get(&id).cloned())
                })
                .collect())
        })
    }

    fn find_by_fingerprint(
        &self,
        template: &str,
        fp_version: u32,
        fingerprint: &[u8],
    ) -> Result<Option<u64>, StoreError> {
        self.one_id(
            "SELECT id FROM records WHERE template = $1 AND fp_version = $2 \
             AND fingerprint = $3",
            vec![
                Box::new(template.to_owned()),
                Box::new(i64::from(fp_version)),
                Box::new(fingerprint.to_vec()),
            ],
        )
    }

    fn find_by_lookup(&self, template: &str, lookup: &[u8]) -> Result<Option<u64>, StoreError> {
        self.one_id(
            "SELECT id FROM records WHERE template = $1 AND lookup = $2",
            vec![Box::new(template.to_owned()), Box::new(lookup.to_vec())],
        )
    }

    fn find_by_idempotency(&self, key: &[u8]) -> Result<Option<IdempotencyHit>, StoreError> {
        let key = key.to_vec();
        self.run(move |pool| async move {
            let c = get(&pool).await?;
            let stmt = c
                .prepare_cached("SELECT record_id, request FROM idempotency WHERE key = $1")
                .await
                .pg()?;
            c.query_opt(&stmt, &[&key])
                .await
                .pg()?
                .map(|r| idempotency_hit(r.get(0), r.get(1)))
                .transpose()
        })
    }

    fn delete_records(&self, ids: &[u64]) -> Result<Vec<bool>, StoreError> {
        let ids: Vec<i64> = ids.iter().map(|&i| i64_of(i)).collect::<Result<_, _>>()?;
        let gone = self.delete_counted(
            "DELETE FROM records WHERE id = ANY($1) RETURNING id",
            Box::new(ids.clone()),
        )?;
        let deleted: HashSet<i64> = gone.into_iter().collect();
        // An id given twice reports `true` once, like deleting one after the other.
        let mut seen = HashSet::new();
        Ok(ids
            .iter()
            .map(|id| deleted.contains(id) && seen.insert(*id))
            .collect())
    }

    fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        let gone = self.delete_counted(
            "DELETE FROM records WHERE expires_at <= $1 RETURNING id",
            Box::new(now),
        )?;
        Ok(gone.len() as u64)
    }

    fn count_by_key_version(&self, template: &str, key_version: u32) -> Result<u64, StoreError> {
        let t = template.to_owned();
        self.run(move |pool| async move {
            let c = get(&pool).await?;
            count_key_version(&c, &t, i64::from(key_version)).await
        })
    }

    fn count_by_fp_version(&self, template: &str, fp_version: u32) -> Result<u64, StoreError> {
        let t = template.to_owned();
        self.run(move |pool| async move {
            let c = get(&pool).await?;
            count_fp_version(&c, &t, i64::from(fp_version)).await
        })
    }

    fn records_to_rewrap(
        &self,
        template: &str,
        target_version: u32,
        target_fp_version: u32,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let t = template.to_owned();
        let after = i64_of(after_id)?;
        let limit = i64_of(limit as u64)?;
        self.run(move |pool| async move {
            let c = get(&pool).await?;
            let stmt = c
                .prepare_cached(&format!(
                    "SELECT {RECORD_COLUMNS} FROM records \
                     WHERE id > $1 AND template = $2 \
                       AND (key_version < $3 OR (fingerprint IS NOT NULL AND fp_version < $4)) \
                     ORDER BY id LIMIT $5"
                ))
                .await
                .pg()?;
            c.query(
                &stmt,
                &[
                    &after,
                    &t,
                    &i64::from(target_version),
                    &i64::from(target_fp_version),
                    &limit,
                ],
            )
            .await
            .pg()?
            .iter()
            .map(record_from)
            .collect()
        })
    }

    fn rewrap_commit(
        &self,
        updates: &[RecordUpdate],
        job: &RewrapJobRow,
    ) -> Result<u64, StoreError> {
        let job = job.clone();
        let mut ids = Vec::with_capacity(updates.len());
        let mut old = Vec::with_capacity(updates.len());
        let mut new = Vec::with_capacity(updates.len());
        let mut cts = Vec::with_capacity(updates.len());
        let mut fvs: Vec<Option<i64>> = Vec::with_capacity(updates.len());
        let mut fps: Vec<Option<Vec<u8>>> = Vec::with_capacity(updates.len());
        for u in updates {
            ids.push(i64_of(u.id)?);
            old.push(i64::from(u.old_key_version));
            new.push(i64::from(u.new_key_version));
            cts.push(u.ciphertext.clone());
            fvs.push(u.fingerprint.as_ref().map(|(v, _)| i64::from(*v)));
            fps.push(u.fingerprint.as_ref().map(|(_, f)| f.clone()));
        }
        let cursor = i64_of(job.cursor)?;
        self.run(move |pool| async move {
            let mut c = get(&pool).await?;
            let tx = c.transaction().await.pg()?;
            // One statement for the batch; each row is a compare-and-set on its old version
            // (and skipped when already at the new versions), as in the trait's contract.
            let changed = tx
                .query(
                    "UPDATE records r SET key_version = u.nv, ciphertext = u.ct, \
                       fp_version = CASE WHEN u.fv IS NULL THEN r.fp_version ELSE u.fv END, \
                       fingerprint = CASE WHEN u.fv IS NULL THEN r.fingerprint ELSE u.fp END \
                     FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::bytea[], $5::int8[], \
                                 $6::bytea[]) AS u(id, ov, nv, ct, fv, fp) \
                     WHERE r.id = u.id AND r.key_version = u.ov \
                       AND CASE WHEN u.fv IS NULL THEN r.key_version <> u.nv \
                           ELSE NOT (r.key_version = u.nv AND r.fp_version IS NOT DISTINCT FROM u.fv) \
                           END \
                     RETURNING r.id",
                    &[&ids, &old, &new, &cts, &fvs, &fps],
                )
                .await
                .pg()?;
            let updated = changed.len() as i64;
            let id = i64_of(job.id)?;
            let saved = tx
                .execute(
                    &format!(
                        "UPDATE rewrap_jobs SET state = $2, cursor = $3, \
                         processed = processed + $4, updated_at = $5, \
                         lease_until_ms = CASE WHEN owner = '' THEN 0 ELSE {NOW_MS} + lease_ms END \
                         WHERE id = $1 AND cursor <= $3 AND owner IN ('', $6)"
                    ),
                    &[
                        &id,
                        &job.state.as_str(),
                        &cursor,
                        &updated,
                        &job.updated_at,
                        &job.owner,
                    ],
                )
                .await
                .pg()?;
            if saved == 0 {
                return Err(not_found_or_conflict(
                    &tx,
                    "SELECT 1 FROM rewrap_jobs WHERE id = $1",
                    &[&id],
                    "rewrap job (cursor only moves forward; lease held by another owner)",
                )
                .await);
            }
            tx.commit().await.pg()?;
            u64_of(updated)
        })
    }

    fn rewrap_job_get(&self, id: u64) -> Result<Option<RewrapJobRow>, StoreError> {
        let id = i64_of(id)?;
        self.run(move |pool| async move {
            let c = get(&pool).await?;
            c.query_opt(
                &format!("SELECT {JOB_COLUMNS} FROM rewrap_jobs WHERE id = $1"),
                &[&id],
            )
            .await
            .pg()?
            .as_ref()
            .map(job_from)
            .transpose()
        })
    }

    fn rewrap_jobs(&self) -> Result<Vec<RewrapJobRow>, StoreError> {
        self.run(|pool| async move {
            let c = get(&pool).await?;
            c.query(
                &format!("SELECT {JOB_COLUMNS} FROM rewrap_jobs ORDER BY id DESC"),
                &[],
            )
            .await
            .pg()?
            .iter()
            .map(job_from)
            .collect()
        })
    }

    fn rewrap_job_create(&self, job: &RewrapJobRow) -> Result<u64, StoreError> {
        let job = job.clone();
        self.run(|pool| async move {
            let c = get(&pool).await?;
            let row = c
                .query_one(
                    "INSERT INTO rewrap_jobs (template, target_version, target_fp_version, \
                     state, cursor, processed, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                    &[
                        &job.template,
                        &i64::from(job.target_version),
                        &i64::from(job.target_fp_version),
                        &job.state.as_str(),
                        &i64_of(job.cursor)?,
                        &i64_of(job.processed)?,
                        &job.created_at,
                        &job.updated_at,
                    ],
                )
                .await
                .pg()?;
            u64_of(row.get(0))
        })
    }

    fn rewrap_job_update(
        &self,
        job: &RewrapJobRow,
        from_state: JobState,
    ) -> Result<(), StoreError> {
        let (job, from) = (job.clone(), from_state.as_str());
        self.run(|pool| async move {
            let mut c = get(&pool).await?;
            let tx = c.transaction().await.pg()?;
            let id = i64_of(job.id)?;
            let changed = tx
                .execute(
                    "UPDATE rewrap_jobs SET state = $3, cursor = $4, processed = $5, \
                     updated_at = $6, \
                     owner = CASE WHEN $3 = $8 THEN owner ELSE '' END, \
                     lease_until_ms = CASE WHEN $3 = $8 THEN lease_until_ms ELSE 0 END \
                     WHERE id = $1 AND state = $2 AND owner IN ('', $7)",
                    &[
                        &id,
                        &from,
                        &job.state.as_str(),
                        &i64_of(job.cursor)?,
                        &i64_of(job.processed)?,
                        &job.updated_at,
                        &job.owner,
                        &JobState::Running.as_str(),
                    ],
                )
                .await
                .pg()?;
            if changed == 0 {
                return Err(not_found_or_conflict(
                    &tx,
                    "SELECT 1 FROM rewrap_jobs WHERE id = $1",
                    &[&id],
                    "rewrap job (state changed, or lease held by another owner)",
                )
                .await);
            }
            tx.commit().await.pg()
        })
    }

    fn rewrap_job_claim(&self, id: u64, owner: &str, lease_ms: u64) -> Result<bool, StoreError> {
        let id = i64_of(id)?;
        let owner = owner.to_owned();
        let lease = i64::try_from(lease_ms).unwrap_or(i64::MAX / 2);
        self.run(move |pool| async move {
            let c = get(&pool).await?;
            let granted = c
                .execute(
                    &format!(
                        "UPDATE rewrap_jobs SET owner = $2, lease_ms = $3, \
                         lease_until_ms = {NOW_MS} + $3 \
                         WHERE id = $1 AND state <> $4 \
                           AND (owner IN ('', $2) OR lease_until_ms < {NOW_MS})"
                    ),
                    &[&id, &owner, &lease, &JobState::Completed.as_str()],
                )
                .await
                .pg()?;
            if granted == 0
                && c.query_opt("SELECT 1 FROM rewrap_jobs WHERE id = $1", &[&id])
                    .await
                    .pg()?
                    .is_none()
            {
                return Err(StoreError::not_found("rewrap job".into()));
            }
            Ok(granted == 1)
        })
    }
}
