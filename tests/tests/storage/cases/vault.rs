//! The cases that run the vault on top of a backend: two vaults on one store, racing idempotency keys, token checks, a restored backup.

use super::*;

/// One vaulted opaque PAN template, for the cases that run vaults on the backend.
pub(super) fn pan_vault_only() -> Vec<vault_core::vault::TemplateConfig> {
    use vault_core::template::Template;
    use vault_core::vault::{Mode, TemplateConfig, TokenShape};
    vec![TemplateConfig::new(
        Template::pan("pan_vault", 6, 4).unwrap(),
        Mode::Vaulted {
            deterministic: false,
            shape: TokenShape::Opaque,
        },
    )]
}

pub(super) fn test_root_key() -> vault_core::secret::Key32 {
    use vault_core::secret::SecretString;
    vault_core::keys::root::from_hex(&SecretString::from("42".repeat(32))).unwrap()
}

pub(crate) fn vaults_on_two_handles<B: Backend>(b: &B) {
    use vault_core::vault::{RootInit, Vault};
    let (templates, key) = (pan_vault_only, test_root_key);
    let (a, _) = Vault::create(b.handle(), templates(), RootInit::Key(key())).unwrap();
    // A second creation on the same store is refused (insert-only metadata).
    assert!(Vault::create(b.handle(), templates(), RootInit::Key(key())).is_err());
    let v = Vault::open(b.handle(), templates()).unwrap();
    v.unseal_key(key()).unwrap();
    let t = a.tokenize("pan_vault", "4111111111111111").unwrap();
    assert_eq!(
        v.detokenize("pan_vault", &t.token, None)
            .unwrap()
            .value
            .as_str(),
        "4111111111111111"
    );
    a.rotate("data/pan_vault").unwrap();
    let t2 = v.tokenize("pan_vault", "5500000000000004").unwrap();
    assert_eq!(
        t2.key_version, 2,
        "the other vault writes under the rotated key"
    );
    assert_eq!(
        a.detokenize("pan_vault", &t2.token, None)
            .unwrap()
            .value
            .as_str(),
        "5500000000000004"
    );
}

/// Two vaults on two handles (two daemons) race twenty calls on one idempotency key: with
/// twenty values exactly one creates a record and nineteen are refused; with one value every
/// call gets the same token. No caller is ever handed a token behind which stands another
/// caller's value (the bug this case was written for).
pub(crate) fn vaults_race_on_one_idempotency_key<B: Backend>(b: &B) {
    use std::sync::Barrier;
    use vault_core::vault::{Error, RootInit, TokenizeItem, Vault};
    let (templates, key) = (pan_vault_only, test_root_key);
    let (a, _) = Vault::create(b.handle(), templates(), RootInit::Key(key())).unwrap();
    let other = Vault::open(b.handle(), templates()).unwrap();
    other.unseal_key(key()).unwrap();
    let vaults = [Arc::new(a), Arc::new(other)];
    for same_value in [false, true] {
        let idem = format!("checkout-{same_value}");
        let barrier = Arc::new(Barrier::new(20));
        let threads: Vec<_> = (0..20u64)
            .map(|i| {
                let vault = Arc::clone(&vaults[(i % 2) as usize]);
                let (barrier, idem) = (Arc::clone(&barrier), idem.clone());
                let value = if same_value {
                    vault_test_support::luhn_pan(0)
                } else {
                    vault_test_support::luhn_pan(i)
                };
                std::thread::spawn(move || {
                    barrier.wait();
                    let item = TokenizeItem {
                        value: &value,
                        idempotency_key: Some(&idem),
                        ..TokenizeItem::default()
                    };
                    let r = vault
                        .tokenize_batch_as("checkout", "pan_vault", &[item])
                        .unwrap()
                        .pop()
                        .unwrap();
                    (value, r)
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let created = results
            .iter()
            .filter(|(_, r)| r.as_ref().is_ok_and(|t| !t.existing))
            .count();
        assert_eq!(created, 1, "same value {same_value}: exactly one record");
        let mut refused = 0;
        for (value, r) in &results {
            match r {
                Ok(t) => {
                    let got = vaults[0].detokenize("pan_vault", &t.token, None).unwrap();
                    assert_eq!(
                        got.value.as_str(),
                        value,
                        "a token of the caller's own value"
                    );
                }
                Err(Error::IdempotencyKeyReused) => refused += 1,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(refused, if same_value { 0 } else { 19 });
    }
}

/// An opaque token's check value is stored and read back exactly, all 64 bits (both stores keep
/// it as a signed 64-bit integer), through both insert paths (plain rows, and rows with an
/// idempotency key or a lookup hash); `None` stays `None` (records from before check values).
pub(crate) fn token_checks_round_trip<B: Backend>(b: &B) {
    let s = b.handle();
    data_keys(&*s);
    let ids: Vec<u64> = s.allocate_ids(6).unwrap().collect();
    let checks = [
        Some(0),
        Some(1),
        Some(u64::MAX),
        Some(1 << 63),
        None,
        Some(0x0123_4567_89ab_cdef),
    ];
    let plain: Vec<NewRecord> = ids[..3]
        .iter()
        .zip(&checks)
        .map(|(&id, &c)| NewRecord {
            token_check: c,
            ..rec(id)
        })
        .collect();
    let keyed: Vec<NewRecord> = ids[3..]
        .iter()
        .zip(&checks[3..])
        .map(|(&id, &c)| NewRecord {
            token_check: c,
            idempotency: idem(id as u8, 1),
            ..rec(id)
        })
        .collect();
    s.insert_records(&plain).unwrap();
    s.insert_records(&keyed).unwrap();
    let got: Vec<Option<u64>> = b
        .handle()
        .get_records(&ids)
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap().token_check)
        .collect();
    assert_eq!(got, checks);
}

/// Several template kinds, for the rollback case.
pub(super) fn rollback_templates() -> Vec<vault_core::vault::TemplateConfig> {
    use vault_core::template::Template;
    use vault_core::vault::{Mode, TemplateConfig, TokenShape};
    let vaulted = |deterministic, shape| Mode::Vaulted {
        deterministic,
        shape,
    };
    vec![
        TemplateConfig::new(
            Template::pan("pan_vault", 6, 4).unwrap(),
            vaulted(false, TokenShape::Opaque),
        ),
        TemplateConfig::new(
            Template::pan("pan_det", 6, 4).unwrap(),
            vaulted(true, TokenShape::Opaque),
        ),
        TemplateConfig::new(
            Template::pan("pan_fmt", 6, 4).unwrap(),
            vaulted(false, TokenShape::Formatted),
        ),
    ]
}

/// The store goes back to a backup taken earlier (the files copied back; a `pg_dump`
/// restored), after more tokens were acknowledged: every token ever handed out resolves to its
/// own value or to `NotFound`, the lost ones are `NotFound` (the ids they had are handed out
/// again, to other values), and no token is handed out twice.
pub(crate) fn a_restored_backup_never_resolves_a_token_to_another_value<B: Backend>(b: &B) {
    use std::collections::HashMap;
    use vault_core::vault::{Error, RootInit, TokenizeItem, Vault};
    let names = ["pan_vault", "pan_det", "pan_fmt"];
    let mut ledger: HashMap<String, (&str, String)> = HashMap::new();
    let mut round = |vault: &Vault, from: u64| -> Vec<String> {
        let mut out = Vec::new();
        for t in names {
            let values: Vec<String> = (from..from + 20)
                .map(|i| vault_test_support::luhn_pan(i * 7_919 + 3))
                .collect();
            let keys: Vec<String> = (from..from + 20).map(|i| format!("order-{i}")).collect();
            let items: Vec<TokenizeItem<'_>> = values
                .iter()
                .zip(&keys)
                .map(|(v, k)| TokenizeItem {
                    idempotency_key: Some(k),
                    ..TokenizeItem::new(v)
                })
                .collect();
            for (v, r) in values.iter().zip(vault.tokenize_batch(t, &items).unwrap()) {
                let token = r.unwrap().token;
                assert!(
                    ledger.insert(token.clone(), (t, v.clone())).is_none(),
                    "issued twice"
                );
                out.push(token);
            }
        }
        out
    };
    let open = || {
        let v = Vault::open(b.handle(), rollback_templates()).unwrap();
        v.unseal_key(test_root_key()).unwrap();
        v
    };
    let (vault, _) = Vault::create(
        b.handle(),
        rollback_templates(),
        RootInit::Key(test_root_key()),
    )
    .unwrap();
    round(&vault, 0);
    drop(vault);
    let backup = b.backup();
    let next = b.handle().allocate_ids(1).unwrap().start;
    let vault = open();
    let lost = round(&vault, 100);
    drop(vault);
    b.restore(&backup);
    assert_eq!(
        b.handle().allocate_ids(1).unwrap().start,
        next,
        "the restored store hands the lost ids out again (else this case proves nothing)"
    );
    let vault = open();
    round(&vault, 200);
    let mut found = 0;
    for (token, (t, v)) in &ledger {
        match vault.detokenize(t, token, None) {
            Ok(d) => {
                assert_eq!(&*d.value, v, "{t}: a token resolved to another value");
                found += 1;
            }
            Err(Error::NotFound) => assert!(lost.contains(token), "{t}: a kept token is gone"),
            Err(e) => panic!("{t}: {e}"),
        }
    }
    assert_eq!(
        found,
        ledger.len() - lost.len(),
        "every lost token is NotFound"
    );
    // A lost token deletes nothing, in particular not the record that now has its id.
    for token in &lost {
        let (t, _) = ledger[token];
        assert!(matches!(
            vault.delete(t, &[token.as_str()]).unwrap()[0],
            Err(Error::NotFound)
        ));
    }
    assert_eq!(
        ledger
            .keys()
            .filter(|k| vault.detokenize(ledger[*k].0, k, None).is_ok())
            .count(),
        found
    );
}
