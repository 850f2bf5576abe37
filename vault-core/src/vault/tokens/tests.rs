//! Unit tests of `tokens`.

use super::*;

#[test]
fn plaintext_layout_round_trips() {
    let p = encode_plaintext("4111110000001234", "4111 1111 1111 1111");
    assert_eq!(
        decode_plaintext(&p).unwrap(),
        ("4111110000001234", "4111 1111 1111 1111")
    );
    let p = encode_plaintext("", "x");
    assert_eq!(decode_plaintext(&p).unwrap(), ("", "x"));
    assert!(decode_plaintext(&[]).is_err());
    assert!(decode_plaintext(&[2, 0, 0]).is_err());
    assert!(decode_plaintext(&[1, 0, 5, b'a']).is_err());
}

#[test]
fn version_choice() {
    let s = |v| VersionSlot::of(v).ok();
    assert_eq!(pick_version("t", &[1], None, None).unwrap(), 1);
    assert!(matches!(
        pick_version("t", &[1, 2], None, None),
        Err(Error::KeyVersionRequired(_))
    ));
    assert_eq!(pick_version("t", &[1, 2], None, Some(2)).unwrap(), 2);
    assert!(matches!(
        pick_version("t", &[1, 2], None, Some(3)),
        Err(Error::NotFound)
    ));
    assert_eq!(pick_version("t", &[1, 2], s(2), None).unwrap(), 2);
    assert!(matches!(
        pick_version("t", &[1, 2], s(3), None),
        Err(Error::InvalidToken(_))
    ));
}

/// The non-blocking calls decline, having done nothing, while a key change holds the key
/// state (it may hold it across storage I/O), and answer once it is released.
#[test]
fn calls_now_decline_while_a_key_change_holds_the_state() {
    use crate::store::sqlite::{Options, SqliteStore};
    use crate::template::Template;
    use crate::vault::RootInit;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::create(dir.path().join("vault.db"), &Options::default()).unwrap();
    let templates = vec![TemplateConfig::new(
        Template::builtin("pan").unwrap(),
        Mode::Fpe,
    )];
    let key = crate::keys::root::from_hex(&"22".repeat(32).into()).unwrap();
    let (vault, _) =
        Vault::create(std::sync::Arc::new(store), templates, RootInit::Key(key)).unwrap();
    vault.refresh_keys().unwrap();
    let items = [TokenizeItem::new("4111 1111 1111 1111")];
    let token = {
        let held = vault.write_state();
        assert!(vault.try_tokenize_now("pan", &items).is_none());
        assert!(
            vault
                .try_detokenize_now("pan", &["4111 1111 1111 1112"], None)
                .is_none()
        );
        drop(held);
        vault
            .try_tokenize_now("pan", &items)
            .unwrap()
            .unwrap()
            .remove(0)
            .unwrap()
            .token
    };
    assert_eq!(
        token,
        vault.tokenize("pan", "4111 1111 1111 1111").unwrap().token
    );
}
