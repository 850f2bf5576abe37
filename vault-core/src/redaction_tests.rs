//! `Debug` never prints a value, a token or key material. `Zeroizing` wipes memory on drop; it
//! does not redact, so every type that holds one of them writes its `Debug` by hand, and this
//! test formats each (with `{:?}` and `{:#?}`) and looks for the secret in the output.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use crate::store::{Idempotency, IdempotencyHit, NewRecord, Record};
use crate::template::email::Email;
use crate::template::layout::Layout;
use crate::template::pan::Pan;
use crate::vault::{Detokenized, TokenizeItem, Tokenized};

const PAN: &str = "4111111111111111";
const EMAIL: &str = "jane.doe@example.com";
const TOKEN: &str = "tok_abcdefghijklmnopqrstuvwxyz";

fn assert_hidden(what: &str, debug: &dyn std::fmt::Debug, secrets: &[&str]) {
    for text in [format!("{debug:?}"), format!("{debug:#?}")] {
        for s in secrets {
            assert!(!text.contains(s), "{what}: Debug shows {s:?}: {text}");
        }
        // Nor the digits run of a PAN split by field formatting.
        assert!(!text.contains("41111111"), "{what}: {text}");
    }
}

#[test]
fn every_type_holding_a_value_token_or_key_redacts_it() {
    let pan = Pan::parse(PAN).unwrap();
    assert_hidden("Pan", &pan, &[PAN]);
    let layout = Layout::new(PAN, vec![0..6, 6..12]);
    assert_hidden("Layout", &layout, &[PAN]);
    let email = Email::parse(EMAIL).unwrap();
    assert_hidden("Email", &email, &[EMAIL, "jane.doe", "example.com"]);

    let mut meta = BTreeMap::new();
    meta.insert("order".to_owned(), "1".to_owned());
    let item = TokenizeItem {
        value: PAN,
        idempotency_key: Some("order-key-secret"),
        metadata: Some(&meta),
        ttl_seconds: Some(60),
    };
    assert_hidden("TokenizeItem", &item, &[PAN, "order-key-secret"]);
    let tokenized = Tokenized {
        token: TOKEN.to_owned(),
        key_version: 1,
        existing: false,
        expires_at: Some(1),
    };
    assert_hidden("Tokenized", &tokenized, &[TOKEN]);
    let detokenized = Detokenized {
        value: Zeroizing::new(PAN.to_owned()),
        key_version: 1,
        metadata: BTreeMap::new(),
        expires_at: None,
    };
    assert_hidden("Detokenized", &detokenized, &[PAN]);

    let idem = Idempotency {
        key: b"idem-key-hash-bytes".to_vec(),
        request: [7; 32],
    };
    assert_hidden("Idempotency", &idem, &["105, 100, 101", "7, 7, 7"]);
    let hit = IdempotencyHit {
        record_id: 1,
        request: [7; 32],
    };
    assert_hidden("IdempotencyHit", &hit, &["7, 7, 7"]);
    let rec = NewRecord {
        id: 1,
        template: "pan".into(),
        key_version: 1,
        ciphertext: PAN.as_bytes().to_vec(),
        expires_at: None,
        metadata: None,
        fingerprint: Some((1, vec![9; 32])),
        lookup: Some(vec![8; 32]),
        idempotency: Some(idem.clone()),
        token_check: Some(77),
        created_at: 0,
    };
    assert_hidden("NewRecord", &rec, &["52, 49, 49", "9, 9, 9", "8, 8, 8"]);
    let stored = Record {
        id: 1,
        template: "pan".into(),
        key_version: 1,
        ciphertext: PAN.as_bytes().to_vec(),
        expires_at: None,
        metadata: None,
        fingerprint: Some((1, vec![9; 32])),
        lookup: Some(vec![8; 32]),
        token_check: Some(77),
        created_at: 0,
    };
    assert_hidden("Record", &stored, &["52, 49, 49", "9, 9, 9", "8, 8, 8"]);

    let secret = crate::secret::SecretString::from(PAN.to_owned());
    assert_hidden("SecretString", &secret, &[PAN]);
}
