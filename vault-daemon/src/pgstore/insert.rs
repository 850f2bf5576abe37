//! The insert path: the guard on key versions, plain inserts, inserts with idempotency keys and the resolution of a lost race.

use super::*;

/// The distinct key versions rows are written under, and their id range, for
/// `vault_insert_guard`.
pub(super) fn guard_args(
    rows: &[NewRecord],
) -> Result<(Vec<String>, Vec<i64>, i64, i64), StoreError> {
    let mut keys: Vec<(String, i64)> = Vec::new();
    for row in rows {
        let k = (format!("data/{}", row.template), i64::from(row.key_version));
        if !keys.contains(&k) {
            keys.push(k);
        }
        if let Some((v, _)) = &row.fingerprint {
            let k = (format!("fp/{}", row.template), i64::from(*v));
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    let (names, versions) = keys.into_iter().unzip();
    let min = rows.iter().map(|r| r.id).min().unwrap_or(0);
    let max = rows.iter().map(|r| r.id).max().unwrap_or(0);
    Ok((names, versions, i64_of(min)?, i64_of(max)?))
}

/// The common insert (opaque, non-deterministic tokens: no idempotency key, fingerprint or
/// lookup hash, so nothing can collide but the id): checks, rows and counts in one statement,
/// its own transaction, one round trip. A refused check or an existing id aborts it whole.
pub(super) async fn insert_plain(
    c: &Client,
    rows: &[NewRecord],
) -> Result<Vec<InsertOutcome>, StoreError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let (names, versions, min_id, max_id) = guard_args(rows)?;
    let ids: Vec<i64> = rows
        .iter()
        .map(|r| i64_of(r.id))
        .collect::<Result<_, _>>()?;
    let templates: Vec<&str> = rows.iter().map(|r| r.template.as_str()).collect();
    let kv: Vec<i64> = rows.iter().map(|r| i64::from(r.key_version)).collect();
    let cts: Vec<&[u8]> = rows.iter().map(|r| r.ciphertext.as_slice()).collect();
    let exp: Vec<Option<i64>> = rows.iter().map(|r| r.expires_at).collect();
    let meta: Vec<Option<&str>> = rows.iter().map(|r| r.metadata.as_deref()).collect();
    let created: Vec<i64> = rows.iter().map(|r| r.created_at).collect();
    let checks: Vec<Option<i64>> = rows
        .iter()
        .map(|r| r.token_check.map(|c| c as i64))
        .collect();
    let stmt = c
        .prepare_cached(
            "WITH g AS (SELECT vault_insert_guard($8::text[], $9::int8[], $10::int8, $11::int8)\
             AS ok), \
             ins AS (INSERT INTO records (id, template, key_version, ciphertext, expires_at, \
                 metadata, created_at, token_check) \
               SELECT u.id, u.t, u.kv, u.ct, u.exp, u.meta, u.created, u.chk \
               FROM g, unnest($1::int8[], $2::text[], $3::int8[], $4::bytea[], $5::int8[], \
                              $6::text[], $7::int8[], $12::int8[]) \
                    AS u(id, t, kv, ct, exp, meta, created, chk) \
               RETURNING id) \
             SELECT count(*) FROM ins",
        )
        .await
        .pg()?;
    let n: i64 = c
        .query_one(
            &stmt,
            &[
                &ids, &templates, &kv, &cts, &exp, &meta, &created, &names, &versions, &min_id,
                &max_id, &checks,
            ],
        )
        .await
        .pg()?
        .get(0);
    if n != rows.len() as i64 {
        return Err(StoreError::corrupt(format!(
            "{n} of {} records inserted",
            rows.len()
        )));
    }
    Ok(vec![InsertOutcome::Inserted; rows.len()])
}

/// The body of [`Store::insert_records`] in one transaction.
///
/// Outcomes follow the trait: per row in order, idempotency key first, then fingerprint, then
/// lookup, counting earlier rows of the same call. Rows are resolved against the database in
/// batches (one query per kind of key), then inserted with one `INSERT … SELECT unnest(…) ON
/// CONFLICT DO NOTHING`; a row another daemon inserted meanwhile (the conflict waits for its
/// commit) is resolved after the insert, so concurrent daemons never both store one
/// fingerprint, lookup or idempotency key.
pub(super) async fn insert_records(
    tx: &Tx<'_>,
    rows: &[NewRecord],
) -> Result<Vec<InsertOutcome>, StoreError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    // Key versions written under must be active (a shared lock orders this against a rotation),
    // and ids must have been handed out by the counter: vault_insert_guard (schema.rs).
    let (names, versions, min_id, max_id) = guard_args(rows)?;
    tx.query_one(
        "SELECT vault_insert_guard($1::text[], $2::int8[], $3::int8, $4::int8)",
        &[&names, &versions, &min_id, &max_id],
    )
    .await
    .pg()?;

    // What the database already holds, one query per kind of key present in the batch.
    let idem_keys: Vec<&[u8]> = rows
        .iter()
        .filter_map(|r| r.idempotency.as_ref().map(|k| k.key.as_slice()))
        .collect();
    let mut db_idem: HashMap<Vec<u8>, IdempotencyHit> = HashMap::new();
    if !idem_keys.is_empty() {
        for r in tx
            .query(
                "SELECT key, record_id, request FROM idempotency WHERE key = ANY($1)",
                &[&idem_keys],
            )
            .await
            .pg()?
        {
            db_idem.insert(r.get(0), idempotency_hit(r.get(1), r.get(2))?);
        }
    }
    let mut db_fp: HashMap<(String, i64, Vec<u8>), u64> = HashMap::new();
    let fp_rows: Vec<&NewRecord> = rows.iter().filter(|r| r.fingerprint.is_some()).collect();
    if !fp_rows.is_empty() {
        let t: Vec<&str> = fp_rows.iter().map(|r| r.template.as_str()).collect();
        let v: Vec<i64> = fp_rows
            .iter()
            .filter_map(|r| r.fingerprint.as_ref().map(|(v, _)| i64::from(*v)))
            .collect();
        let f: Vec<&[u8]> = fp_rows
            .iter()
            .filter_map(|r| r.fingerprint.as_ref().map(|(_, f)| f.as_slice()))
            .collect();
        for r in tx
            .query(
                "SELECT r.template, r.fp_version, r.fingerprint, r.id FROM records r \
                 JOIN unnest($1::text[], $2::int8[], $3::bytea[]) AS q(t, v, f) \
                   ON r.template = q.t AND r.fp_version = q.v AND r.fingerprint = q.f",
                &[&t, &v, &f],
            )
            .await
            .pg()?
        {
            db_fp.insert((r.get(0), r.get(1), r.get(2)), u64_of(r.get(3))?);
        }
    }
    let mut db_lookup: HashSet<(String, Vec<u8>)> = HashSet::new();
    let lk_rows: Vec<&NewRecord> = rows.iter().filter(|r| r.lookup.is_some()).collect();
    if !lk_rows.is_empty() {
        let t: Vec<&str> = lk_rows.iter().map(|r| r.template.as_str()).collect();
        let l: Vec<&[u8]> = lk_rows.iter().filter_map(|r| r.lookup.as_deref()).collect();
        for r in tx
            .query(
                "SELECT r.template, r.lookup FROM records r \
                 JOIN unnest($1::text[], $2::bytea[]) AS q(t, l) \
                   ON r.template = q.t AND r.lookup = q.l",
                &[&t, &l],
            )
            .await
            .pg()?
        {
            db_lookup.insert((r.get(0), r.get(1)));
        }
    }

    // Outcomes in order, earlier rows of the call counting.
    let mut out: Vec<Option<InsertOutcome>> = vec![None; rows.len()];
    for (i, row) in rows.iter().enumerate() {
        if let Some(k) = &row.idempotency
            && let Some(&hit) = db_idem.get(&k.key)
        {
            out[i] = Some(InsertOutcome::ExistingIdempotency(hit));
            continue;
        }
        let fp_key = row
            .fingerprint
            .as_ref()
            .map(|(v, f)| (row.template.clone(), i64::from(*v), f.clone()));
        if let Some(k) = &fp_key
            && let Some(&id) = db_fp.get(k)
        {
            // Its idempotency key is bound to the record found (below, with the others).
            if let Some(idem) = &row.idempotency {
                db_idem.insert(
                    idem.key.clone(),
                    IdempotencyHit {
                        record_id: id,
                        request: idem.request,
                    },
                );
            }
            out[i] = Some(InsertOutcome::ExistingFingerprint(id));
            continue;
        }
        let lk_key = row
            .lookup
            .as_ref()
            .map(|l| (row.template.clone(), l.clone()));
        if let Some(k) = &lk_key
            && db_lookup.contains(k)
        {
            out[i] = Some(InsertOutcome::LookupCollision);
            continue;
        }
        // This row will be inserted: later rows with the same keys see it.
        if let Some(k) = &row.idempotency {
            db_idem.insert(
                k.key.clone(),
                IdempotencyHit {
                    record_id: row.id,
                    request: k.request,
                },
            );
        }
        if let Some(k) = fp_key {
            db_fp.insert(k, row.id);
        }
        if let Some(k) = lk_key {
            db_lookup.insert(k);
        }
    }

    let todo: Vec<&NewRecord> = rows
        .iter()
        .zip(&out)
        .filter(|(_, o)| o.is_none())
        .map(|(r, _)| r)
        .collect();
    let mut inserted: HashSet<i64> = HashSet::new();
    if !todo.is_empty() {
        let ids: Vec<i64> = todo
            .iter()
            .map(|r| i64_of(r.id))
            .collect::<Result<_, _>>()?;
        let templates: Vec<&str> = todo.iter().map(|r| r.template.as_str()).collect();
        let kv: Vec<i64> = todo.iter().map(|r| i64::from(r.key_version)).collect();
        let cts: Vec<&[u8]> = todo.iter().map(|r| r.ciphertext.as_slice()).collect();
        let exp: Vec<Option<i64>> = todo.iter().map(|r| r.expires_at).collect();
        let meta: Vec<Option<&str>> = todo.iter().map(|r| r.metadata.as_deref()).collect();
        let fv: Vec<Option<i64>> = todo
            .iter()
            .map(|r| r.fingerprint.as_ref().map(|(v, _)| i64::from(*v)))
            .collect();
        let fp: Vec<Option<&[u8]>> = todo
            .iter()
            .map(|r| r.fingerprint.as_ref().map(|(_, f)| f.as_slice()))
            .collect();
        let lk: Vec<Option<&[u8]>> = todo.iter().map(|r| r.lookup.as_deref()).collect();
        let created: Vec<i64> = todo.iter().map(|r| r.created_at).collect();
        let checks: Vec<Option<i64>> = todo
            .iter()
            .map(|r| r.token_check.map(|c| c as i64))
            .collect();
        let stmt = tx
            .prepare_cached(
                "INSERT INTO records (id, template, key_version, ciphertext, expires_at, \
                 metadata, fp_version, fingerprint, lookup, created_at, token_check) \
                 SELECT * FROM unnest($1::int8[], $2::text[], $3::int8[], $4::bytea[], \
                   $5::int8[], $6::text[], $7::int8[], $8::bytea[], $9::bytea[], $10::int8[], \
                   $11::int8[]) \
                 ON CONFLICT DO NOTHING RETURNING id",
            )
            .await
            .pg()?;
        for r in tx
            .query(
                &stmt,
                &[
                    &ids, &templates, &kv, &cts, &exp, &meta, &fv, &fp, &lk, &created, &checks,
                ],
            )
            .await
            .pg()?
        {
            inserted.insert(r.get(0));
        }
        // Rows another transaction won meanwhile: resolve them as the trait says.
        for (i, row) in rows.iter().enumerate() {
            if out[i].is_some() || inserted.contains(&i64_of(row.id)?) {
                continue;
            }
            out[i] = Some(resolve_lost(tx, row).await?);
        }
    }
    // Idempotency keys of the inserted rows, and of rows stopped by a fingerprint (bound to the
    // record found). A key another transaction took meanwhile wins: an inserted row is undone,
    // and either kind of row answers with that key's record.
    let idem: Vec<(usize, &[u8], i64, &[u8])> = rows
        .iter()
        .zip(&out)
        .enumerate()
        .filter_map(|(i, (r, o))| {
            let owner = match o {
                None => r.id,
                Some(InsertOutcome::ExistingFingerprint(id)) => *id,
                Some(_) => return None,
            };
            r.idempotency
                .as_ref()
                .map(|k| (i, k.key.as_slice(), owner as i64, k.request.as_slice()))
        })
        .collect();
    if !idem.is_empty() {
        let keys: Vec<&[u8]> = idem.iter().map(|i| i.1).collect();
        let owners: Vec<i64> = idem.iter().map(|i| i.2).collect();
        let requests: Vec<&[u8]> = idem.iter().map(|i| i.3).collect();
        let taken: HashSet<Vec<u8>> = tx
            .query(
                "INSERT INTO idempotency (key, record_id, request) \
                 SELECT * FROM unnest($1::bytea[], $2::int8[], $3::bytea[]) \
                 ON CONFLICT DO NOTHING RETURNING key",
                &[&keys, &owners, &requests],
            )
            .await
            .pg()?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for &(i, key, _, _) in &idem {
            if taken.contains(key) {
                continue;
            }
            if out[i].is_none() {
                let id = i64_of(rows[i].id)?;
                tx.execute("DELETE FROM records WHERE id = $1", &[&id])
                    .await
                    .pg()?;
            }
            let winner = tx
                .query_one(
                    "SELECT record_id, request FROM idempotency WHERE key = $1",
                    &[&key],
                )
                .await
                .pg()?;
            out[i] = Some(InsertOutcome::ExistingIdempotency(idempotency_hit(
                winner.get(0),
                winner.get(1),
            )?));
        }
    }
    Ok(out
        .into_iter()
        .map(|o| o.unwrap_or(InsertOutcome::Inserted))
        .collect())
}

/// An idempotency row as the trait returns it; a missing request hash (a row from before
/// schema v2) becomes all zeros, which no request hashes to: such a key fails closed.
pub(super) fn idempotency_hit(
    record_id: i64,
    request: Option<Vec<u8>>,
) -> Result<IdempotencyHit, StoreError> {
    Ok(IdempotencyHit {
        record_id: u64_of(record_id)?,
        request: request
            .and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
            .unwrap_or([0; 32]),
    })
}

/// Why a row's insert did nothing: another transaction committed the same fingerprint or
/// lookup first, or (a bug, never expected) the id exists.
pub(super) async fn resolve_lost(
    tx: &Tx<'_>,
    row: &NewRecord,
) -> Result<InsertOutcome, StoreError> {
    if let Some((v, f)) = &row.fingerprint
        && let Some(r) = tx
            .query_opt(
                "SELECT id FROM records WHERE template = $1 AND fp_version = $2 \
                 AND fingerprint = $3",
                &[&row.template, &i64::from(*v), f],
            )
            .await
            .pg()?
    {
        return Ok(InsertOutcome::ExistingFingerprint(u64_of(r.get(0))?));
    }
    if let Some(l) = &row.lookup
        && tx
            .query_opt(
                "SELECT 1 FROM records WHERE template = $1 AND lookup = $2",
                &[&row.template, l],
            )
            .await
            .pg()?
            .is_some()
    {
        return Ok(InsertOutcome::LookupCollision);
    }
    Err(StoreError::conflict("record id exists".into()))
}
