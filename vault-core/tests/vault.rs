//! The vault end to end on a real SQLite file: create, unseal, tokenize and detokenize (FPE and
//! vaulted, deterministic and not), expiry, metadata, delete, masked reveal, batches,
//! idempotency, rotation, rewrap (interrupted and resumed), retire, root rotation, and the
//! tamper cases: every one a typed error, never wrong plaintext, never a panic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use vault_core::keys::KeyError;
use vault_core::keys::root::KdfParams;
use vault_core::secret::SecretString;
use vault_core::store::sqlite::{Options, SqliteStore};
use vault_core::vault::{Error, JobState, RootInit, TokenizeItem, Vault};

mod common;

use common::*;

#[test]
fn fpe_round_trip_every_builtin() {
    let f = Fixture::new();
    let (vault, _) = f.create();
    for (template, value) in [
        ("pan", PAN),
        ("ssn", SSN),
        ("digits", "+1 (555) 010-9999"),
        ("alphanumeric", "AbC123xyZ"),
        ("email", EMAIL),
    ] {
        let t = vault.tokenize(template, value).unwrap();
        assert_ne!(t.token, value, "{template}");
        assert_eq!(t.token.len(), value.len(), "{template}: format kept");
        assert!(!t.existing);
        let again = vault.tokenize(template, value).unwrap();
        assert_eq!(again.token, t.token, "{template}: FPE is deterministic");
        let d = vault.detokenize(template, &t.token, None).unwrap();
        assert_eq!(&*d.value, value, "{template}");
        assert_eq!(d.key_version, 1);
    }
    // PAN tokens keep BIN and last four and fail Luhn.
    let t = vault.tokenize("pan", PAN).unwrap().token;
    assert!(t.starts_with("4111 11") && t.ends_with("1111"));
    assert_eq!(
        vault.reveal("pan", &t, None).unwrap(),
        "**** **** **** 1111"
    );
}

#[test]
fn vaulted_modes() {
    let f = Fixture::new();
    let (vault, _) = f.create();
    // Non-deterministic opaque: a fresh token each time.
    let a = vault.tokenize("pan_vault", PAN).unwrap();
    let b = vault.tokenize("pan_vault", PAN).unwrap();
    assert_ne!(a.token, b.token);
    assert!(a.token.starts_with("tok_") && a.token.len() == 30);
    assert_eq!(
        &*vault.detokenize("pan_vault", &a.token, None).unwrap().value,
        PAN
    );
    assert_eq!(
        &*vault.detokenize("pan_vault", &b.token, None).unwrap().value,
        PAN
    );
    // Deterministic: the same token, found through the fingerprint, whatever the spacing.
    let c = vault.tokenize("pan_det", PAN).unwrap();
    let d = vault.tokenize("pan_det", "4111111111111111").unwrap();
    assert_eq!(c.token, d.token);
    assert!(d.existing);
    assert_ne!(vault.tokenize("pan_det", PAN2).unwrap().token, c.token);
    // Formatted: looks like the PAN, keeps BIN and last four.
    let e = vault.tokenize("pan_fmt", PAN).unwrap();
    assert!(
        e.token.starts_with("4111 11") && e.token.ends_with("1111"),
        "{}",
        e.token
    );
    assert_eq!(
        &*vault.detokenize("pan_fmt", &e.token, None).unwrap().value,
        PAN
    );
    let g = vault.tokenize("pan_fmt_det", PAN).unwrap();
    assert_eq!(vault.tokenize("pan_fmt_det", PAN).unwrap().token, g.token);
    assert_eq!(
        vault.reveal("pan_fmt_det", &g.token, None).unwrap(),
        "**** **** **** 1111"
    );
    // A token of one template is not a token of another, and a well-formed token nobody
    // issued is unknown, like a deleted one (not malformed).
    assert!(matches!(
        vault.detokenize("pan_det", &a.token, None),
        Err(Error::NotFound)
    ));
    assert!(matches!(
        vault.detokenize("pan_vault", "tok_aaaaaaaaaaaaaaaaaaaaaaaaaa", None),
        Err(Error::NotFound)
    ));
    assert!(matches!(
        vault.detokenize("pan_vault", "tok_aaaaaaaaaaaaaaaaaaaaaaaaa1", None),
        Err(Error::InvalidToken(_))
    ));
    assert!(matches!(
        vault.detokenize("pan_fmt", "4111 1100 0000 1111", None),
        Err(Error::NotFound)
    ));
}

#[test]
fn metadata_expiry_delete_idempotency_batches() {
    let f = Fixture::new();
    let (vault, _) = f.create();
    let mut meta = BTreeMap::new();
    meta.insert("owner".to_owned(), "user-42".to_owned());
    let items = [
        TokenizeItem {
            value: PAN,
            metadata: Some(&meta),
            ..TokenizeItem::default()
        },
        TokenizeItem {
            value: "not a card",
            ..TokenizeItem::default()
        },
        TokenizeItem {
            value: PAN2,
            ttl_seconds: Some(60),
            ..TokenizeItem::default()
        },
        TokenizeItem {
            value: PAN,
            idempotency_key: Some("order-1"),
            ..TokenizeItem::default()
        },
    ];
    let out = vault.tokenize_batch("pan_vault", &items).unwrap();
    assert_eq!(out.len(), 4);
    let t0 = out[0].as_ref().unwrap().token.clone();
    assert!(
        matches!(out[1], Err(Error::Template(_))),
        "one bad item fails alone"
    );
    let t2 = out[2].as_ref().unwrap().token.clone();
    let t3 = out[3].as_ref().unwrap().token.clone();
    // Idempotent retry gives the first call's token.
    let retry = vault
        .tokenize_batch(
            "pan_vault",
            &[TokenizeItem {
                value: PAN,
                idempotency_key: Some("order-1"),
                ..TokenizeItem::default()
            }],
        )
        .unwrap();
    assert_eq!(retry[0].as_ref().unwrap().token, t3);
    assert!(retry[0].as_ref().unwrap().existing);

    let d = vault.detokenize("pan_vault", &t0, None).unwrap();
    assert_eq!(d.metadata.get("owner").map(String::as_str), Some("user-42"));
    assert!(!format!("{d:?}").contains("4111"), "Debug hides the value");

    // Expiry: readable before, "not found" after.
    assert!(vault.detokenize("pan_vault", &t2, None).is_ok());
    f.clock.fetch_add(61, Ordering::SeqCst);
    assert!(matches!(
        vault.detokenize("pan_vault", &t2, None),
        Err(Error::NotFound)
    ));
    assert_eq!(vault.purge_expired().unwrap(), 1);

    // Delete: the ciphertext is gone.
    let del = vault
        .delete("pan_vault", &[&t0, "tok_aaaaaaaaaaaaaaaaaaaaaaaaaa"])
        .unwrap();
    assert!(del[0].is_ok());
    assert!(del[1].is_err());
    assert!(matches!(
        vault.detokenize("pan_vault", &t0, None),
        Err(Error::NotFound)
    ));
    assert!(matches!(
        vault.delete("pan", &[&t0]),
        Err(Error::NotSupported { .. })
    ));

    // Batch detokenize with a per-item result.
    let res = vault
        .detokenize_batch("pan_vault", &[&t3, &t0, "junk"], None)
        .unwrap();
    assert_eq!(&*res[0].as_ref().unwrap().value, PAN);
    assert!(matches!(res[1], Err(Error::NotFound)));
    assert!(matches!(res[2], Err(Error::InvalidToken(_))));
    // FPE templates store nothing.
    assert!(matches!(
        vault
            .tokenize_batch(
                "pan",
                &[TokenizeItem {
                    value: PAN,
                    ttl_seconds: Some(5),
                    ..TokenizeItem::default()
                }]
            )
            .unwrap()[0],
        Err(Error::InvalidMetadata(_))
    ));
}

#[test]
fn rotation_rewrap_retire() {
    let f = Fixture::new();
    let (vault, hex) = f.create();
    let old: Vec<String> = (0..250)
        .map(|i| vault.tokenize("pan_det", &luhn_pan(i)).unwrap().token)
        .collect();
    let fmt_old = vault.tokenize("pan_fmt", PAN).unwrap().token;
    vault.rotate_template("pan_det").unwrap();
    vault.rotate("data/pan_fmt").unwrap();
    let new = vault.tokenize("pan_det", &luhn_pan(1000)).unwrap();
    assert_eq!(new.key_version, 2);
    // Deterministic lookups still find values fingerprinted under version 1.
    assert_eq!(
        vault.tokenize("pan_det", &luhn_pan(7)).unwrap().token,
        old[7]
    );
    // Retiring version 1 is refused while records remain.
    assert!(matches!(
        vault.retire("data/pan_det", 1),
        Err(Error::VersionInUse { .. })
    ));
    assert!(matches!(
        vault.raise_min_version("data/pan_det", 2),
        Err(Error::VersionInUse { .. })
    ));

    // Rewrap, interrupted after one batch, then resumed from a fresh process.
    let job = vault.rewrap_start("pan_det").unwrap();
    let mut batches = 0;
    let paused = vault
        .rewrap_run(job.id, 100, &mut |_| {
            batches += 1;
            false
        })
        .unwrap();
    assert_eq!(paused.state, JobState::Paused);
    assert_eq!(paused.processed, 100);
    drop(vault);
    let vault = f.reopen(&hex);
    let again = vault.rewrap_start("pan_det").unwrap();
    assert_eq!(again.id, job.id, "the unfinished job is resumed");
    let done = vault.rewrap_run(job.id, 100, &mut |_| true).unwrap();
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.processed, 250);
    assert_eq!(vault.rewrap_remaining(&done).unwrap(), 0);
    // Everything still reads, now under version 2.
    for (i, token) in old.iter().enumerate() {
        let d = vault.detokenize("pan_det", token, None).unwrap();
        assert_eq!(*d.value, luhn_pan(i as u64));
        assert_eq!(d.key_version, 2);
    }
    assert_eq!(
        vault.tokenize("pan_det", &luhn_pan(7)).unwrap().token,
        old[7]
    );
    // Now version 1 can be retired and destroyed; it no longer decrypts.
    vault.retire("data/pan_det", 1).unwrap();
    vault.retire("fp/pan_det", 1).unwrap();
    vault.destroy("data/pan_det", 1).unwrap();
    assert!(matches!(
        vault.destroy("data/pan_det", 2),
        Err(Error::Key(KeyError::IllegalTransition { .. }))
    ));
    // The other template's old record still reads under its decrypt-only version.
    assert_eq!(
        &*vault.detokenize("pan_fmt", &fmt_old, None).unwrap().value,
        PAN
    );
    let status = vault.key_status().unwrap();
    let data = status.iter().find(|k| k.name == "data/pan_det").unwrap();
    assert_eq!(data.versions.len(), 2);
    assert_eq!(data.versions[1].records, Some(251));
}

#[test]
fn data_keys_rotate_before_their_nonce_bound() {
    let f = Fixture::new();
    let (vault, _) = f.create();
    let vault = vault.with_nonce_rotation_at(5000);
    let mut tokens = Vec::new();
    for chunk in 0..12 {
        let values: Vec<String> = (0..1000).map(|i| luhn_pan(chunk * 1000 + i)).collect();
        let items: Vec<TokenizeItem<'_>> = values.iter().map(|v| TokenizeItem::new(v)).collect();
        for r in vault.tokenize_batch("pan_vault", &items).unwrap() {
            tokens.push(r.unwrap());
        }
    }
    let status = vault.key_status().unwrap();
    let data = status.iter().find(|k| k.name == "data/pan_vault").unwrap();
    assert!(data.versions.len() >= 2, "rotated automatically: {data:?}");
    assert!(
        data.versions
            .iter()
            .all(|v| v.nonce_count <= 5000 + 4096 + 1000)
    );
    // Everything sealed under every version still reads.
    let last = tokens.last().unwrap();
    assert!(last.key_version >= 2);
    for t in [&tokens[0], &tokens[6000], last] {
        assert!(vault.detokenize("pan_vault", &t.token, None).is_ok());
    }
}

#[test]
fn fpe_rotation_versions() {
    let f = Fixture::new();
    let (vault, _) = f.create();
    let pan_v1 = vault.tokenize("pan", PAN).unwrap().token;
    let ssn_v1 = vault.tokenize("ssn", SSN).unwrap().token;
    vault.rotate("fpe/pan").unwrap();
    vault.rotate("fpe/ssn").unwrap();
    let pan_v2 = vault.tokenize("pan", PAN).unwrap();
    assert_eq!(pan_v2.key_version, 2);
    assert_ne!(pan_v2.token, pan_v1);
    // PAN tokens carry their version slot: both read without a hint.
    assert_eq!(&*vault.detokenize("pan", &pan_v1, None).unwrap().value, PAN);
    assert_eq!(
        &*vault.detokenize("pan", &pan_v2.token, None).unwrap().value,
        PAN
    );
    // SSN tokens do not: with two live versions the caller must say which.
    assert!(matches!(
        vault.detokenize("ssn", &ssn_v1, None),
        Err(Error::KeyVersionRequired(_))
    ));
    assert_eq!(
        &*vault.detokenize("ssn", &ssn_v1, Some(1)).unwrap().value,
        SSN
    );
    // Nine live PAN versions fill the slots; the tenth is refused until one is retired.
    for _ in 3..=9 {
        vault.rotate("fpe/pan").unwrap();
    }
    assert!(matches!(
        vault.rotate("fpe/pan"),
        Err(Error::TooManyVersions(_))
    ));
    vault.retire("fpe/pan", 1).unwrap();
    assert_eq!(vault.rotate("fpe/pan").unwrap(), 10);
    // Version 10 now holds slot 1. A token of retired version 1 is read under version 10 and
    // does not give back its value: retiring a PAN FPE version is the operator's statement that
    // its tokens are no longer in use (SECURITY.md, "FPE key versions").
    let stale = vault.detokenize("pan", &pan_v1, None);
    assert!(stale.map_or(true, |d| *d.value != *PAN));
}

#[test]
fn unseal_methods_and_root_rotation() {
    // Passphrase (small Argon2 parameters for test speed).
    let f = Fixture::new();
    let params = KdfParams::with_costs(256, 1, 1).unwrap();
    let pass = SecretString::from("correct horse battery staple".to_owned());
    let (vault, _) = Vault::create(
        f.store(true),
        templates(),
        RootInit::Passphrase(pass.clone(), params),
    )
    .unwrap();
    let token = vault.tokenize("pan_vault", PAN).unwrap().token;
    drop(vault);
    let vault = Vault::open(f.store(false), templates()).unwrap();
    assert!(matches!(
        vault.tokenize("pan_vault", PAN),
        Err(Error::Sealed)
    ));
    let wrong = SecretString::from("wrong".to_owned());
    assert!(matches!(
        vault.unseal_passphrase(&wrong),
        Err(Error::Key(KeyError::WrongRootKey))
    ));
    assert!(matches!(
        vault.unseal_key(key(&"11".repeat(32))),
        Err(Error::WrongUnsealMethod { .. })
    ));
    vault.unseal_passphrase(&pass).unwrap();
    assert_eq!(
        &*vault.detokenize("pan_vault", &token, None).unwrap().value,
        PAN
    );

    // Root rotation to Shamir 2-of-3: the key table is rewrapped, the data untouched.
    let shares = vault
        .rotate_root(RootInit::Shares {
            threshold: 2,
            shares: 3,
        })
        .unwrap();
    assert_eq!(shares.len(), 3);
    vault.seal();
    assert!(matches!(
        vault.detokenize("pan_vault", &token, None),
        Err(Error::Sealed)
    ));
    drop(vault);
    let vault = Vault::open(f.store(false), templates()).unwrap();
    use vault_core::secret::ExposeSecret;
    let p = vault.submit_share(shares[2].expose_secret()).unwrap();
    assert_eq!((p.have, p.need, p.unsealed), (1, 2, false));
    assert!(
        vault.submit_share(shares[2].expose_secret()).is_err(),
        "duplicate refused"
    );
    // A mistyped share is caught by its checksum.
    let mut typo = shares[0].expose_secret().to_owned();
    let last = typo.pop().unwrap();
    typo.push(if last == '0' { '1' } else { '0' });
    assert!(matches!(
        vault.submit_share(&typo),
        Err(Error::Key(KeyError::InvalidShare { .. }))
    ));
    let p = vault.submit_share(shares[0].expose_secret()).unwrap();
    assert!(p.unsealed);
    assert_eq!(
        &*vault.detokenize("pan_vault", &token, None).unwrap().value,
        PAN
    );
}

/// Raw access to the database file, for tampering.
fn sql(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

#[test]
fn tampering_is_detected() {
    let f = Fixture::new();
    let (vault, hex) = f.create();
    let a = vault.tokenize("pan_vault", PAN).unwrap().token;
    let b = vault.tokenize("pan_vault", PAN2).unwrap().token;
    vault.rotate("data/pan_vault").unwrap();
    let c = vault.tokenize("pan_vault", PAN2).unwrap().token;
    drop(vault);

    // A flipped bit in a stored ciphertext.
    {
        let db = sql(&f.path);
        let (id, mut ct): (i64, Vec<u8>) = db
            .query_row(
                "SELECT id, ciphertext FROM records ORDER BY id LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let n = ct.len() - 20;
        ct[n] ^= 0x01;
        db.execute(
            "UPDATE records SET ciphertext = ?1 WHERE id = ?2",
            rusqlite::params![ct, id],
        )
        .unwrap();
    }
    let vault = f.reopen(&hex);
    assert!(matches!(
        vault.detokenize("pan_vault", &a, None),
        Err(Error::Integrity)
    ));
    // The other rows still read.
    assert_eq!(
        &*vault.detokenize("pan_vault", &b, None).unwrap().value,
        PAN2
    );
    drop(vault);

    // A row's ciphertext copied under another token (same key version).
    {
        let db = sql(&f.path);
        db.execute(
            "UPDATE records SET ciphertext = (SELECT ciphertext FROM records ORDER BY id LIMIT 1 OFFSET 1) \
             WHERE id = (SELECT id FROM records ORDER BY id LIMIT 1)",
            [],
        )
        .unwrap();
    }
    let vault = f.reopen(&hex);
    assert!(matches!(
        vault.detokenize("pan_vault", &a, None),
        Err(Error::Integrity)
    ));
    assert_eq!(
        &*vault.detokenize("pan_vault", &c, None).unwrap().value,
        PAN2
    );
    drop(vault);

    // A wrapped key swapped between versions: the vault refuses to unseal.
    {
        let db = sql(&f.path);
        let v1: Vec<u8> = db
            .query_row(
                "SELECT wrapped FROM key_versions WHERE name = 'data/pan_vault' AND version = 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let v2: Vec<u8> = db
            .query_row(
                "SELECT wrapped FROM key_versions WHERE name = 'data/pan_vault' AND version = 2",
                [],
                |r| r.get(0),
            )
            .unwrap();
        db.execute(
            "UPDATE key_versions SET wrapped = ?1 WHERE name = 'data/pan_vault' AND version = 1",
            [v2],
        )
        .unwrap();
        db.execute(
            "UPDATE key_versions SET wrapped = ?1 WHERE name = 'data/pan_vault' AND version = 2",
            [v1],
        )
        .unwrap();
    }
    let vault = Vault::open(f.store(false), templates()).unwrap();
    assert!(matches!(
        vault.unseal_key(key(&hex)),
        Err(Error::Key(KeyError::Integrity))
    ));
    // A wrong root key.
    assert!(matches!(
        vault.unseal_key(key(&"22".repeat(32))),
        Err(Error::Key(KeyError::WrongRootKey))
    ));
}

#[test]
fn truncated_database_is_a_typed_error() {
    let f = Fixture::new();
    let (vault, _) = f.create();
    for i in 0..200 {
        vault.tokenize("pan_vault", &luhn_pan(i)).unwrap();
    }
    drop(vault);
    let len = std::fs::metadata(&f.path).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&f.path)
        .unwrap();
    file.set_len(len / 2).unwrap();
    drop(file);
    let outcome = SqliteStore::open(&f.path, &Options::default())
        .map_err(Error::from)
        .and_then(|s| {
            let v = Vault::open(Arc::new(s), templates())?;
            v.unseal_key(key(&"11".repeat(32)))?;
            for i in 0..200 {
                let t = v.tokenize("pan_vault", &luhn_pan(i))?;
                v.detokenize("pan_vault", &t.token, None)?;
            }
            Ok(())
        });
    assert!(outcome.is_err(), "a truncated database is noticed");
}

#[test]
fn no_plaintext_in_any_file() {
    let f = Fixture::new();
    let (vault, _) = f.create();
    let canaries = [
        "4111111111111111",
        "5500000000000004",
        "6011000990139424",
        "378282246310005",
    ];
    let mut meta = BTreeMap::new();
    meta.insert("note".to_owned(), "harmless".to_owned());
    for (i, c) in canaries.iter().enumerate() {
        for t in ["pan_vault", "pan_det", "pan_fmt", "pan_fmt_det"] {
            let item = TokenizeItem {
                value: c,
                metadata: Some(&meta),
                idempotency_key: Some(if i % 2 == 0 { "k-even" } else { "k-odd" }),
                ..TokenizeItem::default()
            };
            vault.tokenize_batch(t, &[item]).unwrap();
        }
    }
    vault
        .tokenize("pan_det", "jane.doe@example.com")
        .unwrap_err();
    let files: Vec<PathBuf> = std::fs::read_dir(f.path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    drop(vault);
    assert!(!files.is_empty());
    let mut scanned = 0;
    for file in std::fs::read_dir(f.path.parent().unwrap()).unwrap() {
        let bytes = std::fs::read(file.unwrap().path()).unwrap();
        scanned += bytes.len();
        for c in canaries {
            assert!(
                !contains(&bytes, c.as_bytes()),
                "plaintext {c} found on disk"
            );
        }
    }
    assert!(scanned > 0);
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Two vaults on one store (two processes' worth: each its own `SqliteStore` on the file), as
/// daemons sharing a PostgreSQL store are: a rotation through one is used by the other without
/// a restart, a write under the rotated-away version is refused and retried under the new
/// one, and a rewrap job runs under one lease at a time.
#[test]
fn two_vaults_share_one_store() {
    let f = Fixture::new();
    let (a, hex) = f.create();
    let b = f
        .reopen(&hex)
        .with_key_refresh_interval(std::time::Duration::from_secs(3600))
        .with_node_id("b");
    let a = a.with_node_id("a");
    // Either vault detokenizes what the other tokenized.
    let t = a.tokenize("pan_vault", PAN).unwrap();
    assert_eq!(
        b.detokenize("pan_vault", &t.token, None)
            .unwrap()
            .value
            .as_str(),
        PAN
    );
    let det_b = b.tokenize("pan_det", PAN2).unwrap();

    // A rotates; B (refresh interval one hour) still holds version 1 in memory.
    assert_eq!(a.rotate("data/pan_vault").unwrap(), 2);
    assert_eq!(a.rotate("fp/pan_det").unwrap(), 2);
    let t2 = a.tokenize("pan_vault", PAN2).unwrap();
    assert_eq!(t2.key_version, 2);
    // B detokenizes a version-2 record at once (unknown version: reload) ...
    assert_eq!(
        b.detokenize("pan_vault", &t2.token, None)
            .unwrap()
            .value
            .as_str(),
        PAN2
    );
    // ... and its tokenize is written under version 2, never under the rotated-away 1.
    a.rotate("data/pan_vault").unwrap();
    let t3 = b.tokenize("pan_vault", PAN).unwrap();
    assert_eq!(t3.key_version, 3, "written under the active version");
    // Deterministic tokens stay one per value across the fingerprint rotation.
    assert_eq!(a.tokenize("pan_det", PAN2).unwrap().token, det_b.token);
    assert_eq!(b.tokenize("pan_det", PAN2).unwrap().token, det_b.token);

    // One rewrap runner: A holds the lease while its job runs; B is refused until it lapses.
    let job = a.rewrap_start("pan_vault").unwrap();
    let b = b.with_rewrap_lease(std::time::Duration::from_millis(200));
    let a = a.with_rewrap_lease(std::time::Duration::from_millis(200));
    let paused = a.rewrap_run(job.id, 1, &mut |_| false).unwrap();
    assert_eq!(paused.state, JobState::Paused, "pausing releases the lease");
    // A claims it and "dies" holding the lease (a claim without a run).
    assert!(a.store().rewrap_job_claim(job.id, "a", 200).unwrap());
    match b.rewrap_run(job.id, 100, &mut |_| true) {
        Err(Error::JobLeased { owner, .. }) => assert_eq!(owner, "a"),
        other => panic!("expected JobLeased, got {other:?}"),
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let done = b.rewrap_run(job.id, 100, &mut |_| true).unwrap();
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(a.rewrap_remaining(&done).unwrap(), 0);
    for v in [&t, &t2, &t3] {
        assert!(a.detokenize("pan_vault", &v.token, None).is_ok());
    }
}

/// A software wrapper with the device contract (AES-256-GCM under its own key, the vault id as
/// AAD, the key never leaving it): the vault's side of the HSM path. The PKCS#11 wrapper itself
/// is tested against SoftHSM2 in `vault-daemon/tests/hsm.rs`.
struct SoftDevice {
    key: ring::aead::LessSafeKey,
    name: &'static str,
}

impl SoftDevice {
    fn new(name: &'static str) -> Arc<SoftDevice> {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).unwrap();
        let unbound = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &k).unwrap();
        Arc::new(SoftDevice {
            key: ring::aead::LessSafeKey::new(unbound),
            name,
        })
    }
}

impl vault_core::keys::root::wrapped::RootWrapper for SoftDevice {
    fn key_ref(&self) -> String {
        self.name.to_owned()
    }
    fn wrap(&self, root: &[u8; 32], aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).unwrap();
        let mut body = root.to_vec();
        self.key
            .seal_in_place_append_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(aad),
                &mut body,
            )
            .unwrap();
        Ok([nonce.to_vec(), body].concat())
    }
    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, KeyError> {
        let refused = || KeyError::Wrapper {
            reason: "unwrap refused".into(),
        };
        let (nonce, body) = wrapped.split_at_checked(12).ok_or_else(refused)?;
        let nonce = ring::aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| refused())?;
        let mut buf = zeroize::Zeroizing::new(body.to_vec());
        let n = self
            .key
            .open_in_place(nonce, ring::aead::Aad::from(aad), &mut buf)
            .map_err(|_| refused())?
            .len();
        buf.truncate(n);
        Ok(buf)
    }
}

#[test]
fn wrapped_root_unseals_by_device_and_switches_to_shares_and_back() {
    use vault_core::secret::ExposeSecret;
    use vault_core::vault::SealMethod;
    let f = Fixture::new();
    let device = SoftDevice::new("soft:token=t;object=root");
    let (vault, shares) = Vault::create(
        f.store(true),
        templates(),
        RootInit::Wrapped(device.clone()),
    )
    .unwrap();
    assert!(shares.is_empty());
    assert_eq!(vault.status().seal_method, SealMethod::Wrapped);
    assert_eq!(
        vault.wrapping_key().as_deref(),
        Some("soft:token=t;object=root")
    );
    let token = vault.tokenize("pan_vault", PAN).unwrap().token;
    drop(vault);

    // Reopened: only the device unseals; another device (another key) is named and refused.
    let vault = Vault::open(f.store(false), templates()).unwrap();
    assert!(matches!(
        vault.unseal_key(key(&"11".repeat(32))),
        Err(Error::WrongUnsealMethod { .. })
    ));
    let other = SoftDevice::new("soft:token=t;object=other");
    let msg = vault
        .unseal_wrapped(other.as_ref())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("object=root") && msg.contains("object=other"),
        "{msg}"
    );
    vault.unseal_wrapped(device.as_ref()).unwrap();
    assert_eq!(
        &*vault.detokenize("pan_vault", &token, None).unwrap().value,
        PAN
    );

    // To shares: the device no longer unseals this vault.
    let shares = vault
        .rotate_root(RootInit::Shares {
            threshold: 2,
            shares: 3,
        })
        .unwrap();
    drop(vault);
    let vault = Vault::open(f.store(false), templates()).unwrap();
    assert!(matches!(
        vault.unseal_wrapped(device.as_ref()),
        Err(Error::WrongUnsealMethod { .. })
    ));
    vault.submit_share(shares[0].expose_secret()).unwrap();
    assert!(
        vault
            .submit_share(shares[1].expose_secret())
            .unwrap()
            .unsealed
    );

    // And back to the device: the shares stop working.
    vault
        .rotate_root(RootInit::Wrapped(device.clone()))
        .unwrap();
    drop(vault);
    let vault = Vault::open(f.store(false), templates()).unwrap();
    assert!(matches!(
        vault.submit_share(shares[0].expose_secret()),
        Err(Error::WrongUnsealMethod { .. })
    ));
    vault.unseal_wrapped(device.as_ref()).unwrap();
    assert_eq!(
        &*vault.detokenize("pan_vault", &token, None).unwrap().value,
        PAN
    );
}

/// `try_*_now` give the blocking methods' answers for FPE templates, and decline (`None`,
/// nothing done) where the blocking path would touch storage: vaulted templates, a failed
/// token (the blocking path reloads keys first), a due key-table check.
#[test]
fn calls_now_agree_with_the_blocking_calls_or_decline() {
    use vault_core::vault::TokenizeItem;
    let f = Fixture::new();
    let (vault, hex) = f.create();
    vault.refresh_keys().unwrap();
    for (template, value) in [("pan", PAN), ("ssn", SSN), ("email", EMAIL)] {
        let now = vault
            .try_tokenize_now(template, &[TokenizeItem::new(value)])
            .expect("an FPE call is answered at once")
            .unwrap()
            .remove(0)
            .unwrap();
        assert_eq!(now.token, vault.tokenize(template, value).unwrap().token);
        let back = vault
            .try_detokenize_now(template, &[now.token.as_str()], None)
            .expect("answered at once")
            .remove(0)
            .unwrap();
        assert_eq!(&*back.value, value);
    }
    // Per-item refusals are answers too (nothing to reload for a Luhn failure).
    let bad = vault
        .try_tokenize_now("pan", &[TokenizeItem::new("4111 1111 1111 1112")])
        .unwrap()
        .unwrap();
    assert!(bad[0].is_err());
    assert!(
        vault
            .try_tokenize_now("pan_vault", &[TokenizeItem::new(PAN)])
            .is_none()
    );
    assert!(
        vault
            .try_detokenize_now("pan", &["4111 1111 1111 1111"], None)
            .is_none()
    );
    assert!(vault.try_detokenize_now("nope", &["x"], None).is_none());
    // A due key-table check reads the store: declined.
    drop(vault);
    let vault = f
        .reopen(&hex)
        .with_key_refresh_interval(std::time::Duration::ZERO);
    assert!(
        vault
            .try_tokenize_now("pan", &[TokenizeItem::new(PAN)])
            .is_none()
    );
    // Sealed is an answer.
    let vault = f.reopen(&hex);
    vault.refresh_keys().unwrap();
    vault.seal();
    assert!(matches!(
        vault.try_tokenize_now("pan", &[TokenizeItem::new(PAN)]),
        Some(Err(Error::Sealed))
    ));
}
