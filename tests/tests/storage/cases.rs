//! The cases: each takes a backend and speaks only through the `Store` trait (and, in the last
//! one, the vault on top of it).

use std::collections::HashSet;
use std::sync::Arc;

use vault_core::keys::State;
use vault_core::store::{
    ID_BLOCK, Idempotency, IdempotencyHit, InsertOutcome, JobState, KeyNameRow, KeyVersionRow,
    NewRecord, RecordUpdate, RewrapJobRow, Store, StoreError,
};

pub(crate) use self::vault::{
    a_restored_backup_never_resolves_a_token_to_another_value, token_checks_round_trip,
    vaults_on_two_handles, vaults_race_on_one_idempotency_key,
};
use crate::Backend;
mod vault;

fn key_name(name: &str, purpose: &str) -> KeyNameRow {
    KeyNameRow {
        name: name.into(),
        purpose: purpose.into(),
        min_decrypt_version: 1,
        created_at: 10,
    }
}

/// A key version state by its stored name.
fn ks(name: &str) -> State {
    name.parse().unwrap()
}

/// A rewrap job state by its stored name.
fn js(name: &str) -> JobState {
    JobState::from_name(name).unwrap()
}

fn key_version(name: &str, version: u32, state: &str) -> KeyVersionRow {
    KeyVersionRow {
        name: name.into(),
        version,
        state: ks(state),
        wrapped: Some(vec![version as u8; 60]),
        nonce_count: 0,
        created_at: 10 + i64::from(version),
        updated_at: 10 + i64::from(version),
    }
}

fn rec(id: u64) -> NewRecord {
    NewRecord {
        id,
        template: "pan".into(),
        key_version: 1,
        ciphertext: vec![0xAB; 40],
        expires_at: None,
        metadata: None,
        fingerprint: None,
        lookup: None,
        idempotency: None,
        token_check: Some(id ^ 0x5a5a),
        created_at: 100,
    }
}

/// An idempotency key `[k; 32]` first used with request hash `[r; 32]`.
fn idem(k: u8, r: u8) -> Option<Idempotency> {
    Some(Idempotency {
        key: vec![k; 32],
        request: [r; 32],
    })
}

/// What the store answers for a key `[k; 32]` stored with request hash `[r; 32]`.
fn hit(record_id: u64, r: u8) -> IdempotencyHit {
    IdempotencyHit {
        record_id,
        request: [r; 32],
    }
}

fn job(template: &str) -> RewrapJobRow {
    RewrapJobRow {
        id: 0,
        template: template.into(),
        target_version: 2,
        target_fp_version: 0,
        state: js("running"),
        cursor: 0,
        processed: 0,
        created_at: 5,
        updated_at: 5,
        owner: String::new(),
    }
}

fn data_keys(s: &dyn Store) {
    s.key_create(
        &key_name("data/pan", "data"),
        &key_version("data/pan", 1, "active"),
    )
    .unwrap();
    s.key_create(
        &key_name("fp/pan", "fingerprint"),
        &key_version("fp/pan", 1, "active"),
    )
    .unwrap();
}

pub(crate) fn meta_round_trip_and_insert_only<B: Backend>(b: &B) {
    let s = b.handle();
    assert_eq!(s.meta_get("vault_id").unwrap(), None);
    s.meta_put(&[("a", b"1"), ("b", b"2")]).unwrap();
    s.meta_put(&[("a", b"3")]).unwrap();
    assert_eq!(s.meta_get("a").unwrap(), Some(b"3".to_vec()));
    s.meta_insert_new(&[("vault_id", b"x"), ("seal", b"key")])
        .unwrap();
    // Insert-only: one existing entry refuses the whole call, nothing written.
    let err = s
        .meta_insert_new(&[("fresh", b"y"), ("vault_id", b"z")])
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    assert_eq!(s.meta_get("vault_id").unwrap(), Some(b"x".to_vec()));
    assert_eq!(s.meta_get("fresh").unwrap(), None);
    s.probe_write().unwrap();
    // Another handle sees it.
    assert_eq!(b.handle().meta_get("b").unwrap(), Some(b"2".to_vec()));
}

pub(crate) fn keys_create_rotate_and_generation<B: Backend>(b: &B) {
    let s = b.handle();
    let other = b.handle();
    let g0 = other.keys_generation().unwrap();
    s.key_create(
        &key_name("data/pan", "data"),
        &key_version("data/pan", 1, "active"),
    )
    .unwrap();
    let err = s
        .key_create(
            &key_name("data/pan", "data"),
            &key_version("data/pan", 1, "active"),
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    let g1 = other.keys_generation().unwrap();
    assert_ne!(
        g0, g1,
        "a key creation changes the generation another handle reads"
    );
    s.key_rotate(&key_version("data/pan", 2, "active")).unwrap();
    // A second rotation to the same version (a concurrent rotation) conflicts.
    let err = other
        .key_rotate(&key_version("data/pan", 2, "active"))
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    let g2 = other.keys_generation().unwrap();
    assert_ne!(g1, g2);
    // Nonce reservations are not key-table changes.
    s.key_reserve_nonces("data/pan", 2, 10).unwrap();
    assert_eq!(other.keys_generation().unwrap(), g2);
    let t = other.keys_load().unwrap();
    assert_eq!(t.names.len(), 1);
    let states: Vec<(u32, &str)> = t
        .versions
        .iter()
        .map(|v| (v.version, v.state.as_str()))
        .collect();
    assert_eq!(states, vec![(1, "decrypt_only"), (2, "active")]);
    assert_eq!(t.versions[1].nonce_count, 10);
    assert_eq!(t.versions[0].wrapped, Some(vec![1; 60]));
}

pub(crate) fn key_state_compare_and_set_and_retire<B: Backend>(b: &B) {
    let s = b.handle();
    data_keys(&*s);
    let ids = s.allocate_ids(1).unwrap();
    let mut r = rec(ids.start);
    r.fingerprint = Some((1, vec![7; 32]));
    s.insert_records(&[r]).unwrap();
    s.key_rotate(&key_version("data/pan", 2, "active")).unwrap();
    s.key_rotate(&key_version("fp/pan", 2, "active")).unwrap();
    // Wrong `from` state: conflict; unknown version: not found.
    let err = s
        .key_set_state("data/pan", 1, ks("active"), ks("decrypt_only"), false)
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    let err = s
        .key_set_state("data/pan", 9, ks("active"), ks("decrypt_only"), false)
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    // An unknown state cannot be asked for: states are typed (`State`), and the tables'
    // CHECKs still refuse any other name written behind the store's back.
    // Retire refused while a record (data key) or fingerprint (fp key) remains under it.
    for name in ["data/pan", "fp/pan"] {
        let err = s
            .key_set_state(name, 1, ks("decrypt_only"), ks("retired"), false)
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { .. }),
            "{name}: {err:?}"
        );
    }
    assert_eq!(
        s.keys_load().unwrap().versions[0].state.as_str(),
        "decrypt_only"
    );
    assert!(s.delete_records(&[ids.start]).unwrap()[0]);
    assert_eq!(s.count_by_key_version("pan", 1).unwrap(), 0);
    for name in ["data/pan", "fp/pan"] {
        s.key_set_state(name, 1, ks("decrypt_only"), ks("retired"), false)
            .unwrap();
        s.key_set_state(name, 1, ks("retired"), ks("destroyed"), true)
            .unwrap();
    }
    let t = b.handle().keys_load().unwrap();
    let v1 = t
        .versions
        .iter()
        .find(|v| v.name == "data/pan" && v.version == 1)
        .unwrap();
    assert_eq!(
        (v1.state.as_str(), v1.wrapped.as_ref()),
        ("destroyed", None)
    );
}

pub(crate) fn min_version_only_rises<B: Backend>(b: &B) {
    let s = b.handle();
    data_keys(&*s);
    s.key_raise_min_version("data/pan", 3).unwrap();
    let err = s.key_raise_min_version("data/pan", 2).unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    // Equal is not a rise either (admin.proto: "lower or equal fails").
    let err = s.key_raise_min_version("data/pan", 3).unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    let err = s.key_raise_min_version("ghost", 2).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    let t = s.keys_load().unwrap();
    let n = t.names.iter().find(|n| n.name == "data/pan").unwrap();
    assert_eq!(n.min_decrypt_version, 3);
}

pub(crate) fn root_rewrap_must_cover_every_key<B: Backend>(b: &B) {
    let s = b.handle();
    s.key_create(
        &key_name("data/pan", "data"),
        &key_version("data/pan", 1, "active"),
    )
    .unwrap();
    s.key_create(
        &key_name("token", "token"),
        &key_version("token", 1, "active"),
    )
    .unwrap();
    s.meta_put(&[("check", b"old")]).unwrap();
    let err = s
        .keys_rewrap_all(&[("token".into(), 1, vec![9; 48])], &[("check", b"new")])
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    assert_eq!(s.meta_get("check").unwrap(), Some(b"old".to_vec()));
    let err = s
        .keys_rewrap_all(&[("ghost".into(), 1, vec![9; 48])], &[])
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    s.keys_rewrap_all(
        &[
            ("token".into(), 1, vec![9; 48]),
            ("data/pan".into(), 1, vec![8; 48]),
        ],
        &[("check", b"new")],
    )
    .unwrap();
    let t = s.keys_load().unwrap();
    assert_eq!(t.versions[0].wrapped, Some(vec![8; 48]));
    assert_eq!(t.versions[1].wrapped, Some(vec![9; 48]));
    assert_eq!(s.meta_get("check").unwrap(), Some(b"new".to_vec()));
}

pub(crate) fn nonce_reservation_accumulates<B: Backend>(b: &B) {
    let s = b.handle();
    let other = b.handle();
    data_keys(&*s);
    assert_eq!(s.key_reserve_nonces("data/pan", 1, 100).unwrap(), 100);
    // Two handles never get overlapping counter ranges.
    assert_eq!(other.key_reserve_nonces("data/pan", 1, 28).unwrap(), 128);
    let err = s
        .key_reserve_nonces("data/pan", 1, u64::MAX / 2)
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    let err = s.key_reserve_nonces("data/pan", 2, 1).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
}

pub(crate) fn ids_unique_across_handles<B: Backend>(b: &B) {
    let handles: Vec<Arc<dyn Store>> = (0..3).map(|_| b.handle()).collect();
    let mut threads = Vec::new();
    for h in handles {
        threads.push(std::thread::spawn(move || {
            let mut got = Vec::new();
            for n in [1, 3, ID_BLOCK, 7, 2 * ID_BLOCK + 1, 1] {
                let r = h.allocate_ids(n).unwrap();
                assert_eq!(r.end - r.start, n);
                got.push(r);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().unwrap().into_iter().flatten());
    }
    let n = all.len();
    assert!(all.iter().all(|&id| id > 0), "0 is never an id");
    let unique: HashSet<u64> = all.into_iter().collect();
    assert_eq!(unique.len(), n, "no id handed out twice across handles");
    // A handle opened later starts past everything reserved before.
    let later = b.handle().allocate_ids(1).unwrap();
    assert!(later.start > *unique.iter().max().unwrap());
}

pub(crate) fn insert_outcomes_within_and_across_batches<B: Backend>(b: &B) {
    let s = b.handle();
    data_keys(&*s);
    let ids = s.allocate_ids(8).unwrap();
    let id = |i: u64| ids.start + i;
    let mut a = rec(id(0));
    a.fingerprint = Some((1, vec![1; 32]));
    a.idempotency = idem(0xA, 1);
    let mut dup_fp = rec(id(1));
    dup_fp.fingerprint = Some((1, vec![1; 32]));
    let mut dup_idem = rec(id(2));
    // Another request with the same key: the store reports the first request's hash (the vault
    // compares, and refuses).
    dup_idem.idempotency = idem(0xA, 2);
    dup_idem.fingerprint = Some((1, vec![2; 32]));
    let mut l = rec(id(3));
    l.lookup = Some(vec![5; 32]);
    let mut dup_l = rec(id(4));
    dup_l.lookup = Some(vec![5; 32]);
    let out = s.insert_records(&[a, dup_fp, dup_idem, l, dup_l]).unwrap();
    assert_eq!(
        out,
        vec![
            InsertOutcome::Inserted,
            InsertOutcome::ExistingFingerprint(id(0)),
            InsertOutcome::ExistingIdempotency(hit(id(0), 1)),
            InsertOutcome::Inserted,
            InsertOutcome::LookupCollision,
        ]
    );
    // Across calls and handles, same answers from what is stored.
    let other = b.handle();
    let mut again = rec(id(5));
    again.fingerprint = Some((1, vec![1; 32]));
    let mut again_l = rec(id(6));
    again_l.lookup = Some(vec![5; 32]);
    let mut again_i = rec(id(7));
    again_i.idempotency = idem(0xA, 3);
    assert_eq!(
        other.insert_records(&[again, again_l, again_i]).unwrap(),
        vec![
            InsertOutcome::ExistingFingerprint(id(0)),
            InsertOutcome::LookupCollision,
            InsertOutcome::ExistingIdempotency(hit(id(0), 1)),
        ]
    );
    assert_eq!(s.count_by_key_version("pan", 1).unwrap(), 2);
    assert_eq!(s.count_by_fp_version("pan", 1).unwrap(), 1);
    assert_eq!(
        s.find_by_idempotency(&[0xA; 32]).unwrap(),
        Some(hit(id(0), 1))
    );
    // A row stopped by its fingerprint binds its idempotency key to the record found.
    let ids2 = s.allocate_ids(2).unwrap();
    let mut bind = rec(ids2.start);
    bind.fingerprint = Some((1, vec![1; 32]));
    bind.idempotency = idem(0xB, 9);
    let mut after = rec(ids2.start + 1);
    after.idempotency = idem(0xB, 8);
    assert_eq!(
        s.insert_records(&[bind, after]).unwrap(),
        vec![
            InsertOutcome::ExistingFingerprint(id(0)),
            InsertOutcome::ExistingIdempotency(hit(id(0), 9)),
        ]
    );
    assert_eq!(
        b.handle().find_by_idempotency(&[0xB; 32]).unwrap(),
        Some(hit(id(0), 9))
    );
    assert_eq!(s.find_by_lookup("pan", &[5; 32]).unwrap(), Some(id(3)));
    assert_eq!(
        s.find_by_fingerprint("pan", 1, &[1; 32]).unwrap(),
        Some(id(0))
    );
    assert_eq!(s.find_by_fingerprint("pan", 2, &[1; 32]).unwrap(), None);
}

pub(crate) fn unallocated_id_fails_the_whole_call<B: Backend>(b: &B) {
    let s = b.handle();
    data_keys(&*s);
    let ids = s.allocate_ids(2).unwrap();
    let err = s
        .insert_records(&[rec(ids.start), rec(ids.end + 10 * ID_BLOCK)])
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    assert_eq!(s.get_records(&[ids.start]).unwrap(), vec![None]);
    let err = s.insert_records(&[rec(0)]).unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    s.insert_records(&[rec(ids.start)]).unwrap();
    // The same id twice: refused as a whole.
    let err = s.insert_records(&[rec(ids.start)]).unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    assert_eq!(s.count_by_key_version("pan", 1).unwrap(), 1);
}

pub(crate) fn writes_refused_under_rotated_away_versions<B: Backend>(b: &B) {
    let s = b.handle();
    let stale = b.handle();
    data_keys(&*s);
    let ids = s.allocate_ids(3).unwrap();
    s.insert_records(&[rec(ids.start)]).unwrap();
    s.key_rotate(&key_version("data/pan", 2, "active")).unwrap();
    // A handle that has not seen the rotation writes under version 1: refused, nothing stored.
    let err = stale.insert_records(&[rec(ids.start + 1)]).unwrap_err();
    assert!(
        matches!(&err, StoreError::KeyNotActive { name, version: 1 } if name == "data/pan"),
        "{err:?}"
    );
    assert_eq!(stale.get_records(&[ids.start + 1]).unwrap(), vec![None]);
    // Fingerprint versions too.
    s.key_rotate(&key_version("fp/pan", 2, "active")).unwrap();
    let mut r = rec(ids.start + 2);
    r.key_version = 2;
    r.fingerprint = Some((1, vec![3; 32]));
    let err = stale.insert_records(&[r.clone()]).unwrap_err();
    assert!(
        matches!(&err, StoreError::KeyNotActive { name, version: 1 } if name == "fp/pan"),
        "{err:?}"
    );
    r.fingerprint = Some((2, vec![3; 32]));
    assert_eq!(
        stale.insert_records(&[r]).unwrap(),
        vec![InsertOutcome::Inserted]
    );
}

pub(crate) fn reads_finds_deletes_and_purge<B: Backend>(b: &B) {
    let s = b.handle();
    data_keys(&*s);
    let ids = s.allocate_ids(4).unwrap();
    let mut rows: Vec<NewRecord> = ids.clone().map(rec).collect();
    rows[0].expires_at = Some(50);
    rows[1].expires_at = Some(500);
    rows[2].metadata = Some(r#"{"order":"1"}"#.into());
    rows[3].idempotency = idem(4, 4);
    s.insert_records(&rows).unwrap();
    let got = b
        .handle()
        .get_records(&[ids.start + 2, 999_999, ids.start])
        .unwrap();
    assert_eq!(
        got[0].as_ref().unwrap().metadata.as_deref(),
        Some(r#"{"order":"1"}"#)
    );
    assert!(got[1].is_none());
    let first = got[2].as_ref().unwrap();
    assert_eq!(
        (first.id, first.expires_at, first.ciphertext.clone()),
        (ids.start, Some(50), vec![0xAB; 40])
    );
    assert_eq!(s.purge_expired(100).unwrap(), 1);
    assert_eq!(s.count_by_key_version("pan", 1).unwrap(), 3);
    let deleted = s
        .delete_records(&[ids.start, ids.start + 3, ids.start + 3])
        .unwrap();
    assert_eq!(deleted, vec![false, true, false]);
    // The idempotency row went with its record.
    assert_eq!(s.find_by_idempotency(&[4; 32]).unwrap(), None);
    assert_eq!(s.count_by_key_version("pan", 1).unwrap(), 2);
}

pub(crate) fn rewrap_batches_and_replay_is_safe<B: Backend>(b: &B) {
    let s = b.handle();
    data_keys(&*s);
    let ids = s.allocate_ids(5).unwrap();
    let rows: Vec<NewRecord> = ids
        .clone()
        .map(|id| {
            let mut r = rec(id);
            r.fingerprint = Some((1, vec![id as u8; 32]));
            r
        })
        .collect();
    s.insert_records(&rows).unwrap();
    s.key_rotate(&key_version("data/pan", 2, "active")).unwrap();
    s.key_rotate(&key_version("fp/pan", 2, "active")).unwrap();
    let mut j = job("pan");
    j.target_fp_version = 2;
    j.id = s.rewrap_job_create(&j).unwrap();
    assert!(s.rewrap_job_claim(j.id, "me", 60_000).unwrap());
    j.owner = "me".into();
    let batch = s.records_to_rewrap("pan", 2, 2, 0, 3).unwrap();
    assert_eq!(batch.len(), 3);
    let updates: Vec<RecordUpdate> = batch
        .iter()
        .map(|r| RecordUpdate {
            id: r.id,
            old_key_version: r.key_version,
            new_key_version: 2,
            ciphertext: vec![0xCD; 40],
            fingerprint: Some((2, vec![r.id as u8 ^ 0xFF; 32])),
        })
        .collect();
    j.cursor = batch[2].id;
    assert_eq!(s.rewrap_commit(&updates, &j).unwrap(), 3);
    // Replayed after a "crash": nothing changes twice, nothing counted twice.
    assert_eq!(s.rewrap_commit(&updates, &j).unwrap(), 0);
    let saved = s.rewrap_job_get(j.id).unwrap().unwrap();
    assert_eq!((saved.cursor, saved.processed), (batch[2].id, 3));
    // The cursor never moves back.
    let mut back = j.clone();
    back.cursor = 0;
    let err = s.rewrap_commit(&[], &back).unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    assert_eq!(s.count_by_key_version("pan", 1).unwrap(), 2);
    assert_eq!(s.count_by_key_version("pan", 2).unwrap(), 3);
    assert_eq!(s.count_by_fp_version("pan", 2).unwrap(), 3);
    let rest = s.records_to_rewrap("pan", 2, 2, j.cursor, 10).unwrap();
    assert_eq!(rest.len(), 2);
    let r = s.get_records(&[ids.start]).unwrap()[0].clone().unwrap();
    assert_eq!(
        (r.key_version, r.fingerprint),
        (2, Some((2, vec![ids.start as u8 ^ 0xFF; 32])))
    );
    assert_eq!(s.rewrap_jobs().unwrap().len(), 1);
}

pub(crate) fn rewrap_lease_is_exclusive_and_lapses<B: Backend>(b: &B) {
    let s = b.handle();
    let other = b.handle();
    let mut j = job("pan");
    j.state = js("pending");
    j.id = s.rewrap_job_create(&j).unwrap();
    // Concurrent claims from several handles: exactly one wins.
    let claimants: Vec<_> = (0..4)
        .map(|i| {
            let h = b.handle();
            let id = j.id;
            std::thread::spawn(move || h.rewrap_job_claim(id, &format!("node{i}"), 60_000).unwrap())
        })
        .collect();
    let wins = claimants
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|&w| w)
        .count();
    assert_eq!(wins, 1);
    let holder = s.rewrap_job_get(j.id).unwrap().unwrap().owner;
    assert!(holder.starts_with("node"));
    // The holder renews; others are refused; a non-holder's commit or update is refused.
    assert!(other.rewrap_job_claim(j.id, &holder, 150).unwrap());
    assert!(!other.rewrap_job_claim(j.id, "intruder", 150).unwrap());
    let mut intruder = j.clone();
    intruder.owner = "intruder".into();
    intruder.state = js("running");
    let err = s.rewrap_job_update(&intruder, js("pending")).unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    let mut mine = j.clone();
    mine.owner = holder.clone();
    mine.state = js("running");
    s.rewrap_job_update(&mine, js("pending")).unwrap();
    // The holder "dies"; after the lease lapses, another takes over and the old holder's
    // late commit is refused (fenced).
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert!(other.rewrap_job_claim(j.id, "heir", 60_000).unwrap());
    mine.cursor = 10;
    let err = s.rewrap_commit(&[], &mine).unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    let mut heir = mine.clone();
    heir.owner = "heir".into();
    s.rewrap_commit(&[], &heir).unwrap();
    // Finishing releases the lease; a completed job cannot be claimed.
    heir.state = js("completed");
    s.rewrap_job_update(&heir, js("running")).unwrap();
    let done = s.rewrap_job_get(j.id).unwrap().unwrap();
    assert_eq!(
        (done.state.as_str(), done.owner.as_str()),
        ("completed", "")
    );
    assert!(!s.rewrap_job_claim(j.id, "late", 1000).unwrap());
    let err = s.rewrap_job_claim(j.id + 100, "x", 1000).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
}

pub(crate) fn concurrent_handles_store_one_record_per_fingerprint<B: Backend>(b: &B) {
    let s = b.handle();
    data_keys(&*s);
    // Four "daemons" insert the same 50 fingerprints (and idempotency keys) at once; each
    // daemon's requests have their own request hash, so the winner of each key is known by it.
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let h = b.handle();
            std::thread::spawn(move || {
                let ids = h.allocate_ids(100).unwrap();
                let rows: Vec<NewRecord> = (0..50u8)
                    .map(|i| {
                        let mut r = rec(ids.start + u64::from(i));
                        r.fingerprint = Some((1, vec![i; 32]));
                        r
                    })
                    .chain((0..50u8).map(|i| {
                        let mut r = rec(ids.start + 50 + u64::from(i));
                        r.idempotency = idem(i, t);
                        r
                    }))
                    .collect();
                let mut out = Vec::new();
                for chunk in rows.chunks(10) {
                    loop {
                        match h.insert_records(chunk) {
                            Ok(o) => {
                                out.extend(chunk.iter().map(|r| r.id).zip(o));
                                break;
                            }
                            // A deadlock or serialization failure between writers: retry.
                            Err(StoreError::Conflict { .. })
                            | Err(StoreError::Unavailable { .. }) => {}
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                }
                out
            })
        })
        .collect();
    let per_thread: Vec<Vec<(u64, InsertOutcome)>> =
        threads.into_iter().map(|t| t.join().unwrap()).collect();
    // Which request won each idempotency key (the thread whose row was inserted).
    let mut winner: std::collections::HashMap<u64, u8> = std::collections::HashMap::new();
    for (t, out) in per_thread.iter().enumerate() {
        for (id, o) in out {
            winner.insert(
                *id,
                if *o == InsertOutcome::Inserted {
                    t as u8
                } else {
                    u8::MAX
                },
            );
        }
    }
    let results: Vec<(u64, InsertOutcome)> = per_thread.into_iter().flatten().collect();
    let inserted: Vec<u64> = results
        .iter()
        .filter(|(_, o)| *o == InsertOutcome::Inserted)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(
        inserted.len(),
        100,
        "one record per fingerprint and per idempotency key"
    );
    for (_, o) in &results {
        match o {
            InsertOutcome::ExistingFingerprint(id) => {
                assert!(inserted.contains(id), "points at the stored record")
            }
            InsertOutcome::ExistingIdempotency(h) => {
                assert!(
                    inserted.contains(&h.record_id),
                    "points at the stored record"
                );
                assert_eq!(
                    h.request, [winner[&h.record_id]; 32],
                    "with the request hash of the call that stored it"
                );
            }
            InsertOutcome::Inserted => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(s.count_by_key_version("pan", 1).unwrap(), 100);
    assert_eq!(s.count_by_fp_version("pan", 1).unwrap(), 50);
}

pub(crate) fn rewrap_jobs_crud<B: Backend>(b: &B) {
    let s = b.handle();
    let a = s.rewrap_job_create(&job("pan")).unwrap();
    let c = s.rewrap_job_create(&job("ssn")).unwrap();
    assert!(c > a);
    let list = b.handle().rewrap_jobs().unwrap();
    assert_eq!(list.iter().map(|j| j.id).collect::<Vec<_>>(), vec![c, a]);
    let mut j = s.rewrap_job_get(a).unwrap().unwrap();
    assert_eq!((j.template.as_str(), j.owner.as_str()), ("pan", ""));
    j.state = js("paused");
    s.rewrap_job_update(&j, js("running")).unwrap();
    let err = s.rewrap_job_update(&j, js("running")).unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    assert_eq!(
        s.rewrap_job_get(a).unwrap().unwrap().state.as_str(),
        "paused"
    );
    assert_eq!(s.rewrap_job_get(999_999).unwrap(), None);
    let err = s
        .rewrap_job_update(&RewrapJobRow { id: 999_999, ..j }, js("paused"))
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
}
