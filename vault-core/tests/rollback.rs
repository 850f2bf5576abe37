//! A store that comes back older than what it acknowledged (a restored backup, a copied file, a
//! power cut under `synchronous = normal`, a promoted asynchronous replica) hands the lost
//! record ids out again. Promised (SECURITY.md, "A store that goes back in time"): every token
//! ever acknowledged resolves to its own value or to `NotFound`, never to another value, and a
//! token issued after the rollback never equals one issued before. Also here: a vault made
//! before tokens carried check values (`tests/data/vault-v5`, written by the previous release)
//! keeps answering its tokens, before and after such a rollback.
//!
//! The daemon's suites check the same end to end on both stores (tests/tests/storage).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use vault_core::vault::{Error, TokenizeItem, Vault};

mod common;

use common::*;

/// Every vaulted template kind of the fixture.
const VAULTED: [&str; 6] = [
    "pan_vault",
    "pan_det",
    "pan_fmt",
    "pan_fmt_det",
    "ssn_vault",
    "email_vault",
];

/// A value of `template` numbered `i` (distinct for distinct `i`).
fn value(template: &str, i: u64) -> String {
    match template {
        "ssn_vault" => format!("{:03}-{:02}-{:04}", 100 + i % 800, 10 + i % 89, 1000 + i),
        "email_vault" => format!("customer.{i}@example.com"),
        // Distinct card numbers spread over many (BIN, last four) classes, so that formatted
        // tokens draw from large spaces (see `formatted_tokens_do_not_follow_record_ids`).
        _ => luhn_pan(i * 7_919 + 13),
    }
}

/// Everything handed out: token → (template, value).
#[derive(Default)]
struct Ledger(HashMap<String, (String, String)>);

impl Ledger {
    /// Tokenizes values `from..to` of every vaulted template, every third with an
    /// idempotency key, and records the tokens. A token handed out twice must be for the same
    /// value (a deterministic or idempotent repeat).
    fn tokenize(&mut self, vault: &Vault, from: u64, to: u64) -> Vec<String> {
        let mut out = Vec::new();
        for t in VAULTED {
            let values: Vec<String> = (from..to).map(|i| value(t, i)).collect();
            let keys: Vec<String> = (from..to).map(|i| format!("order-{i}")).collect();
            let items: Vec<TokenizeItem<'_>> = values
                .iter()
                .zip(&keys)
                .enumerate()
                .map(|(k, (v, key))| TokenizeItem {
                    idempotency_key: (k % 3 == 0).then_some(key.as_str()),
                    ..TokenizeItem::new(v)
                })
                .collect();
            for (v, r) in values.iter().zip(vault.tokenize_batch(t, &items).unwrap()) {
                let token = r.unwrap().token;
                if let Some((t0, v0)) = self.0.get(&token) {
                    assert_eq!((t0.as_str(), v0), (t, v), "a token was issued twice");
                }
                self.0.insert(token.clone(), (t.to_owned(), v.clone()));
                out.push(token);
            }
        }
        out
    }

    /// Every token resolves to its own value or to `NotFound`; returns how many resolved.
    fn check(&self, vault: &Vault) -> usize {
        let mut found = 0;
        for (token, (t, v)) in &self.0 {
            match vault.detokenize(t, token, None) {
                Ok(d) => {
                    assert_eq!(&*d.value, v, "a token resolved to another value ({t})");
                    found += 1;
                }
                Err(Error::NotFound) => {}
                Err(e) => panic!("{t}: {e}"),
            }
        }
        found
    }
}

/// The database file and its WAL, copied while no vault has it open.
struct Snapshot(Vec<(PathBuf, Vec<u8>)>);

fn sidecars(db: &Path) -> Vec<PathBuf> {
    ["", "-wal", "-shm", "-journal"]
        .iter()
        .map(|s| PathBuf::from(format!("{}{s}", db.display())))
        .collect()
}

impl Snapshot {
    fn take(db: &Path) -> Snapshot {
        Snapshot(
            sidecars(db)
                .into_iter()
                .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
                .collect(),
        )
    }

    /// Puts the files back as they were (the restore of a backup).
    fn restore(&self, db: &Path) {
        for p in sidecars(db) {
            let _ = std::fs::remove_file(p);
        }
        for (p, b) in &self.0 {
            std::fs::write(p, b).unwrap();
        }
    }
}

/// The largest record id in the file: shows the rollback really handed lost ids out again.
fn max_id(db: &Path) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row("SELECT coalesce(max(id), 0) FROM records", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_rolled_back_store_never_resolves_a_token_to_another_value() {
    let f = Fixture::new();
    let (vault, hex) = f.create();
    let mut ledger = Ledger::default();
    let kept = ledger.tokenize(&vault, 0, 40);
    drop(vault);
    let backup = Snapshot::take(&f.path);
    let before = max_id(&f.path);

    // Acknowledged, then lost: the store goes back to the backup.
    let vault = f.reopen(&hex);
    let lost = ledger.tokenize(&vault, 40, 80);
    drop(vault);
    backup.restore(&f.path);

    let vault = f.reopen(&hex);
    let after = ledger.tokenize(&vault, 80, 120);
    drop(vault);
    assert!(
        max_id(&f.path) > before,
        "the rollback must hand the lost ids out again for this test to mean anything"
    );

    let vault = f.reopen(&hex);
    assert_eq!(ledger.check(&vault), kept.len() + after.len());
    for token in &lost {
        let (t, _) = &ledger.0[token];
        assert!(
            matches!(vault.detokenize(t, token, None), Err(Error::NotFound)),
            "a lost token must be NotFound ({t})"
        );
        // Nor can a lost token delete the record that now has its id.
        assert!(matches!(
            vault.delete(t, &[token.as_str()]).unwrap().pop().unwrap(),
            Err(Error::NotFound)
        ));
    }
    assert_eq!(ledger.check(&vault), kept.len() + after.len());
}

#[test]
fn formatted_tokens_do_not_follow_record_ids() {
    // A formatted token is found by a keyed hash of itself, stored in its own record, and the
    // sealed plaintext names the token again: a reused id changes nothing for it. What a
    // rollback can do to formatted tokens is a fresh random draw equal to a lost token, a chance
    // of (lost × new) / (the template's token space per kept part), stated in SECURITY.md; the
    // values here draw from spaces of 900,000 tokens or more, where it does not happen.
    let f = Fixture::new();
    let (vault, hex) = f.create();
    let mut ledger = Ledger::default();
    ledger.tokenize(&vault, 0, 10);
    drop(vault);
    let backup = Snapshot::take(&f.path);
    let vault = f.reopen(&hex);
    let lost: Vec<String> = ledger.tokenize(&vault, 10, 60);
    drop(vault);
    backup.restore(&f.path);
    let vault = f.reopen(&hex);
    ledger.tokenize(&vault, 60, 110);
    for token in lost {
        let (t, _) = &ledger.0[&token];
        if t.contains("fmt") || t == "email_vault" {
            assert!(matches!(
                vault.detokenize(t, &token, None),
                Err(Error::NotFound)
            ));
        }
    }
    ledger.check(&vault);
}

#[derive(serde::Deserialize)]
struct LegacyDoc {
    root_key_hex: String,
    tokens: Vec<LegacyToken>,
}

#[derive(serde::Deserialize)]
struct LegacyToken {
    template: String,
    value: String,
    token: String,
    idempotency_key: Option<String>,
}

/// A copy of the vault the previous release wrote, and what it handed out.
fn legacy() -> (Fixture, LegacyDoc) {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/vault-v5");
    let f = Fixture::new();
    std::fs::copy(data.join("vault.db"), &f.path).unwrap();
    let doc: LegacyDoc =
        serde_json::from_str(&std::fs::read_to_string(data.join("tokens.json")).unwrap()).unwrap();
    (f, doc)
}

#[test]
fn tokens_of_a_vault_made_before_check_values_keep_working() {
    let (f, doc) = legacy();
    // Opening upgrades the schema in place (v5 → v6); nothing is rewritten.
    let vault = f.reopen(&doc.root_key_hex);
    for t in &doc.tokens {
        let d = vault.detokenize(&t.template, &t.token, None).unwrap();
        assert_eq!(*d.value, t.value, "{}", t.template);
        // A deterministic repeat or an idempotent retry returns the token it always had.
        let retry = TokenizeItem {
            idempotency_key: t.idempotency_key.as_deref(),
            ..TokenizeItem::new(&t.value)
        };
        let again = vault
            .tokenize_batch(&t.template, &[retry])
            .unwrap()
            .pop()
            .unwrap()
            .unwrap();
        if t.idempotency_key.is_some() || t.template.ends_with("det") {
            assert_eq!(again.token, t.token, "{}", t.template);
            assert!(again.existing);
        }
    }
    // Deleting a legacy token works, and only deletes its own record.
    let gone = &doc.tokens[1];
    vault
        .delete(&gone.template, &[gone.token.as_str()])
        .unwrap()
        .pop()
        .unwrap()
        .unwrap();
    assert!(matches!(
        vault.detokenize(&gone.template, &gone.token, None),
        Err(Error::NotFound)
    ));
    assert_eq!(
        *vault
            .detokenize(&doc.tokens[0].template, &doc.tokens[0].token, None)
            .unwrap()
            .value,
        doc.tokens[0].value
    );
}

#[test]
fn a_rollback_across_the_upgrade_never_aliases_a_legacy_token() {
    let (f, doc) = legacy();
    let mut ledger = Ledger::default();
    for t in &doc.tokens {
        ledger
            .0
            .insert(t.token.clone(), (t.template.clone(), t.value.clone()));
    }
    let backup = Snapshot::take(&f.path);
    let vault = f.reopen(&doc.root_key_hex);
    let lost = ledger.tokenize(&vault, 500, 530);
    drop(vault);
    backup.restore(&f.path);
    let vault = f.reopen(&doc.root_key_hex);
    ledger.tokenize(&vault, 600, 630);
    assert_eq!(ledger.check(&vault), doc.tokens.len() + VAULTED.len() * 30);
    for t in &doc.tokens {
        assert_eq!(
            *vault.detokenize(&t.template, &t.token, None).unwrap().value,
            t.value
        );
    }
    for token in &lost {
        let (t, _) = &ledger.0[token];
        assert!(matches!(
            vault.detokenize(t, token, None),
            Err(Error::NotFound)
        ));
    }
}

/// Every GCM nonce in the file, read from the stored envelopes (format byte, key version, then
/// the 12-byte nonce), with the record's template and key version.
fn nonces(db: &Path) -> Vec<(String, u32, [u8; 12])> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut stmt = c
        .prepare("SELECT template, key_version, ciphertext FROM records ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| {
        let ct: Vec<u8> = r.get(2)?;
        Ok((r.get(0)?, r.get(1)?, ct[5..17].try_into().unwrap()))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// A rollback reserves the same nonce counter values again under the same data key; the random
/// 64-bit field of each reservation is what keeps the nonces apart (SECURITY.md, "Nonces").
/// Checked on the stored envelopes: within a reservation the field is shared and the 32-bit
/// counter counts up; after the rollback the same counters come back under another field; no
/// nonce repeats under one key version.
#[test]
fn a_rollback_reuses_nonce_counters_under_a_fresh_random_field() {
    let f = Fixture::new();
    let (vault, hex) = f.create();
    let mut ledger = Ledger::default();
    ledger.tokenize(&vault, 0, 5);
    drop(vault);
    let backup = Snapshot::take(&f.path);
    let vault = f.reopen(&hex);
    ledger.tokenize(&vault, 5, 25);
    drop(vault);
    let lost = nonces(&f.path);
    backup.restore(&f.path);
    let vault = f.reopen(&hex);
    ledger.tokenize(&vault, 25, 45);
    drop(vault);
    let kept = nonces(&f.path);

    let distinct_in_file: std::collections::HashSet<_> = kept.iter().collect();
    assert_eq!(
        distinct_in_file.len(),
        kept.len(),
        "a nonce repeats in one file"
    );
    // Counters the lost records used come back after the rollback, under another field.
    let counter = |n: &[u8; 12]| u32::from_be_bytes(n[8..].try_into().unwrap());
    let mut reused = 0;
    for (t, v, n) in &kept[kept.len() - 20 * VAULTED.len()..] {
        if let Some((_, _, old)) = lost
            .iter()
            .find(|(t2, v2, o)| t2 == t && v2 == v && counter(o) == counter(n) && o != n)
        {
            assert_ne!(
                old[..8],
                n[..8],
                "same counter, same field: a repeated nonce"
            );
            reused += 1;
        }
        assert!(
            !lost.iter().any(|(t2, v2, o)| t2 == t && v2 == v && o == n),
            "a nonce of a lost record was used again ({t})"
        );
    }
    assert!(
        reused > 0,
        "the rollback must reuse counters for this test to mean anything"
    );
    // Within one batch of one template the field is shared and the counter counts up.
    let batch: Vec<&[u8; 12]> = kept
        .iter()
        .filter(|(t, _, _)| t == "pan_vault")
        .map(|(_, _, n)| n)
        .collect();
    for w in batch[batch.len() - 20..].windows(2) {
        assert_eq!(w[0][..8], w[1][..8]);
        assert_eq!(counter(w[1]), counter(w[0]) + 1);
    }
}
