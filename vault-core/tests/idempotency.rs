//! Idempotency keys (the proto's `TokenizeItem.idempotency_key`): a retry with the same key and
//! the same request gets the first token; the same key with another value, metadata or TTL is
//! refused with `IdempotencyKeyReused` and stores nothing; keys are scoped per caller and per
//! template; and of concurrent calls racing on one key exactly one creates a record.
//! The daemon's end-to-end tests (tests/tests/daemon/contract.rs) and the storage suite (both
//! backends) check the same promise from outside and under the store.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};

use vault_core::vault::{Error, TokenizeItem, Vault};

mod common;

use common::*;

/// Every vaulted template kind: opaque, deterministic, formatted, formatted deterministic, and
/// SSN and e-mail values.
const VAULTED: [(&str, &str, &str); 6] = [
    ("pan_vault", PAN, PAN2),
    ("pan_det", PAN, PAN2),
    ("pan_fmt", PAN, PAN2),
    ("pan_fmt_det", PAN, PAN2),
    ("ssn_vault", SSN, "234-56-7890"),
    ("email_vault", EMAIL, "john.roe@example.org"),
];

fn keyed<'a>(value: &'a str, key: &'a str) -> TokenizeItem<'a> {
    TokenizeItem {
        value,
        idempotency_key: Some(key),
        ..TokenizeItem::default()
    }
}

fn one(
    vault: &Vault,
    caller: &str,
    template: &str,
    item: TokenizeItem<'_>,
) -> Result<vault_core::vault::Tokenized, Error> {
    vault
        .tokenize_batch_as(caller, template, &[item])
        .unwrap()
        .pop()
        .unwrap()
}

#[test]
fn same_key_same_request_returns_the_first_token_on_every_vaulted_template() {
    let f = Fixture::new();
    let (vault, _) = f.create();
    for (t, a, _) in VAULTED {
        let first = one(&vault, "svc", t, keyed(a, "order-1")).unwrap();
        assert!(!first.existing, "{t}");
        let again = one(&vault, "svc", t, keyed(a, "order-1")).unwrap();
        assert_eq!(again.token, first.token, "{t}");
        assert!(again.existing, "{t}");
        assert_eq!(&*vault.detokenize(t, &first.token, None).unwrap().value, a);
    }
}

#[test]
fn same_key_other_value_metadata_or_ttl_is_refused_and_stores_nothing() {
    let f = Fixture::new();
    let (vault, _) = f.create();
    let mut meta = BTreeMap::new();
    meta.insert("order".to_owned(), "1".to_owned());
    let mut other_meta = BTreeMap::new();
    other_meta.insert("order".to_owned(), "2".to_owned());
    for (t, a, b) in VAULTED {
        let base = TokenizeItem {
            metadata: Some(&meta),
            ttl_seconds: Some(3600),
            ..keyed(a, "k")
        };
        let first = one(&vault, "svc", t, base).unwrap();
        let before = vault.store().count_by_key_version(t, 1).unwrap();
        for (what, item) in [
            ("value", TokenizeItem { value: b, ..base }),
            (
                "metadata",
                TokenizeItem {
                    metadata: Some(&other_meta),
                    ..base
                },
            ),
            (
                "no metadata",
                TokenizeItem {
                    metadata: None,
                    ..base
                },
            ),
            (
                "ttl",
                TokenizeItem {
                    ttl_seconds: Some(3601),
                    ..base
                },
            ),
            (
                "no ttl",
                TokenizeItem {
                    ttl_seconds: None,
                    ..base
                },
            ),
        ] {
            let e = one(&vault, "svc", t, item).unwrap_err();
            assert!(
                matches!(e, Error::IdempotencyKeyReused),
                "{t}, {what}: {e:?}"
            );
            let text = format!("{e} {e:?}");
            assert!(
                !text.contains(b) && !text.contains(a),
                "{t}: no value echoed: {text}"
            );
        }
        assert_eq!(
            vault.store().count_by_key_version(t, 1).unwrap(),
            before,
            "{t}: nothing stored"
        );
        // The first token still resolves to its own value.
        assert_eq!(
            &*vault.detokenize(t, &first.token, None).unwrap().value,
            a,
            "{t}"
        );
        // The same request again is still answered.
        assert_eq!(
            one(&vault, "svc", t, base).unwrap().token,
            first.token,
            "{t}"
        );
    }
}

#[test]
fn within_one_batch() {
    let f = Fixture::new();
    let (vault, _) = f.create();
    for (t, a, b) in VAULTED {
        let out = vault
            .tokenize_batch_as("svc", t, &[keyed(a, "k"), keyed(b, "k"), keyed(a, "k")])
            .unwrap();
        let first = out[0].as_ref().unwrap();
        assert!(!first.existing, "{t}");
        assert!(
            matches!(out[1], Err(Error::IdempotencyKeyReused)),
            "{t}: {:?}",
            out[1]
        );
        let third = out[2].as_ref().unwrap();
        assert_eq!(
            (third.token.as_str(), third.existing),
            (first.token.as_str(), true),
            "{t}"
        );
        assert_eq!(
            &*vault.detokenize(t, &first.token, None).unwrap().value,
            a,
            "{t}"
        );
    }
}

/// On a deterministic template a value seen before answers from its fingerprint; a key sent
/// with it is bound to that record, so the key is not left free for another value.
#[test]
fn a_key_that_meets_a_deterministic_hit_is_bound_to_it() {
    let f = Fixture::new();
    let (vault, _) = f.create();
    for t in ["pan_det", "pan_fmt_det"] {
        let plain = vault.tokenize(t, PAN).unwrap();
        let out = vault
            .tokenize_batch_as("svc", t, &[keyed(PAN, "k"), keyed(PAN2, "k")])
            .unwrap();
        let first = out[0].as_ref().unwrap();
        assert_eq!(
            (first.token.as_str(), first.existing),
            (plain.token.as_str(), true)
        );
        assert!(
            matches!(out[1], Err(Error::IdempotencyKeyReused)),
            "{t}: {:?}",
            out[1]
        );
        // In a later call too.
        let e = one(&vault, "svc", t, keyed(PAN2, "k")).unwrap_err();
        assert!(matches!(e, Error::IdempotencyKeyReused), "{t}");
        assert_eq!(
            one(&vault, "svc", t, keyed(PAN, "k")).unwrap().token,
            plain.token
        );
    }
}

#[test]
fn keys_are_scoped_per_caller_and_per_template() {
    let f = Fixture::new();
    let (vault, _) = f.create();
    // Two callers, one key, two values: two records, each its own.
    let x = one(&vault, "caller-x", "pan_vault", keyed(PAN, "k")).unwrap();
    let y = one(&vault, "caller-y", "pan_vault", keyed(PAN2, "k")).unwrap();
    assert!(!x.existing && !y.existing);
    assert_ne!(x.token, y.token);
    assert_eq!(
        &*vault.detokenize("pan_vault", &x.token, None).unwrap().value,
        PAN
    );
    assert_eq!(
        &*vault.detokenize("pan_vault", &y.token, None).unwrap().value,
        PAN2
    );
    // One caller, one key, two templates: both succeed (it once failed the SSN with NOT_FOUND).
    let p = one(&vault, "caller-x", "pan_fmt", keyed(PAN, "k2")).unwrap();
    let s = one(&vault, "caller-x", "ssn_vault", keyed(SSN, "k2")).unwrap();
    assert!(!p.existing && !s.existing);
    assert_eq!(
        &*vault.detokenize("ssn_vault", &s.token, None).unwrap().value,
        SSN
    );
    // The unnamed caller of `tokenize_batch` is a caller of its own.
    let anon = vault
        .tokenize_batch("pan_vault", &[keyed(PAN2, "k")])
        .unwrap();
    assert!(!anon[0].as_ref().unwrap().existing);
}

/// Twenty threads, one key: with twenty values exactly one creates a record and nineteen are
/// refused; with one value all twenty get the same token, one of them new.
#[test]
fn concurrent_calls_on_one_key() {
    let f = Fixture::new();
    let (vault, _) = f.create();
    let vault = Arc::new(vault);
    for (t, _, _) in VAULTED {
        for same_value in [false, true] {
            let key = format!("race-{t}-{same_value}");
            let barrier = Arc::new(Barrier::new(20));
            let threads: Vec<_> = (0..20u64)
                .map(|i| {
                    let (vault, barrier, key) =
                        (Arc::clone(&vault), Arc::clone(&barrier), key.clone());
                    let value = match (t, same_value) {
                        (_, true) if t.starts_with("ssn") => SSN.to_owned(),
                        (_, true) if t.starts_with("email") => EMAIL.to_owned(),
                        (_, true) => PAN.to_owned(),
                        _ if t.starts_with("ssn") => format!("{:03}-45-6789", 100 + i),
                        _ if t.starts_with("email") => format!("user{i}@example.com"),
                        _ => luhn_pan(i),
                    };
                    let t = t.to_owned();
                    std::thread::spawn(move || {
                        barrier.wait();
                        let r = one(&vault, "svc", &t, keyed(&value, &key));
                        (value, r)
                    })
                })
                .collect();
            let results: Vec<_> = threads.into_iter().map(|h| h.join().unwrap()).collect();
            let created: Vec<_> = results
                .iter()
                .filter(|(_, r)| r.as_ref().is_ok_and(|t| !t.existing))
                .collect();
            assert_eq!(created.len(), 1, "{t}, same value {same_value}: one record");
            let (winner_value, winner) = created[0];
            let winner = winner.as_ref().unwrap();
            for (value, r) in &results {
                match r {
                    Ok(tok) => {
                        assert_eq!(tok.token, winner.token, "{t}");
                        // Never someone else's value behind the token handed out.
                        assert_eq!(
                            &*vault.detokenize(t, &tok.token, None).unwrap().value,
                            value.as_str()
                        );
                    }
                    Err(Error::IdempotencyKeyReused) => {
                        assert!(
                            !same_value && value != winner_value,
                            "{t}: refused only for another value"
                        )
                    }
                    Err(e) => panic!("{t}: {e:?}"),
                }
            }
            if !same_value {
                let refused = results.iter().filter(|(_, r)| r.is_err()).count();
                assert_eq!(refused, 19, "{t}");
            }
        }
    }
}
