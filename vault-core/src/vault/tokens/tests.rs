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
