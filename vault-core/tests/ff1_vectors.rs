//! FF1 known-answer tests: NIST's nine published samples and Project Wycheproof's FF1 vectors
//! (radix 10, 26, 36, 62). Each loop names the failing case.
//!
//! Wycheproof cases are read the way SP 800-38G Rev. 1 requires: a `valid` case flagged
//! `SmallMessageSize` (domain between 100 and 1,000,000) must be refused, like every `invalid`
//! case (see `data/wycheproof/README.md`).

use serde::Deserialize;
use vault_core::fpe::{Error, Ff1};

#[derive(Deserialize)]
struct NistFile {
    tests: Vec<NistCase>,
}

#[derive(Deserialize)]
struct NistCase {
    sample: u32,
    key: String,
    radix: u32,
    tweak: String,
    msg: Vec<u16>,
    ct: Vec<u16>,
}

#[test]
fn nist_samples() {
    let file: NistFile =
        serde_json::from_str(include_str!("data/nist_ff1_samples.json")).expect("valid JSON");
    assert_eq!(file.tests.len(), 9);
    for case in &file.tests {
        let ff1 = Ff1::new(&hex::decode(&case.key).unwrap(), case.radix).unwrap();
        let tweak = hex::decode(&case.tweak).unwrap();
        let ct = ff1.encrypt(&tweak, &case.msg).unwrap();
        assert_eq!(ct, case.ct, "NIST sample {} encrypt", case.sample);
        let pt = ff1.decrypt(&tweak, &case.ct).unwrap();
        assert_eq!(pt, case.msg, "NIST sample {} decrypt", case.sample);
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WycheproofFile {
    number_of_tests: usize,
    test_groups: Vec<WycheproofGroup>,
}

#[derive(Deserialize)]
struct WycheproofGroup {
    radix: u32,
    tests: Vec<WycheproofCase>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WycheproofCase {
    tc_id: u32,
    key: String,
    tweak: String,
    msg: Vec<i64>,
    ct: Vec<i64>,
    result: String,
    flags: Vec<String>,
}

fn numerals(xs: &[i64]) -> Option<Vec<u16>> {
    xs.iter().map(|&x| u16::try_from(x).ok()).collect()
}

fn wycheproof(name: &str, json: &str) {
    let file: WycheproofFile = serde_json::from_str(json).expect("valid JSON");
    let mut run = 0;
    let (mut accepted, mut refused) = (0, 0);
    for group in &file.test_groups {
        for case in &group.tests {
            run += 1;
            let id = format!("{name} tcId {}", case.tc_id);
            let must_refuse =
                case.result == "invalid" || case.flags.iter().any(|f| f == "SmallMessageSize");
            // Numerals such as -1 cannot even be expressed in the `&[u16]` API: refused by type.
            let (Some(msg), Some(ct)) = (numerals(&case.msg), numerals(&case.ct)) else {
                assert!(
                    must_refuse,
                    "{id}: unrepresentable numerals in a valid case"
                );
                refused += 1;
                continue;
            };
            let key = hex::decode(&case.key).unwrap();
            let tweak = hex::decode(&case.tweak).unwrap();
            let ff1 = match Ff1::new(&key, group.radix) {
                Ok(ff1) => ff1,
                Err(e) => {
                    assert!(must_refuse, "{id}: key refused: {e}");
                    assert!(matches!(e, Error::InvalidKeyLength { .. }), "{id}: {e}");
                    refused += 1;
                    continue;
                }
            };
            if must_refuse {
                assert!(ff1.encrypt(&tweak, &msg).is_err(), "{id}: encrypt accepted");
                assert!(ff1.decrypt(&tweak, &msg).is_err(), "{id}: decrypt accepted");
                refused += 1;
            } else {
                assert_eq!(ff1.encrypt(&tweak, &msg).unwrap(), ct, "{id}: encrypt");
                assert_eq!(ff1.decrypt(&tweak, &ct).unwrap(), msg, "{id}: decrypt");
                accepted += 1;
            }
        }
    }
    assert_eq!(run, file.number_of_tests, "{name}: every case ran");
    assert!(accepted > 0 && refused > 0);
    eprintln!("{name}: {accepted} cases matched, {refused} refused as required");
}

#[test]
fn wycheproof_radix10() {
    wycheproof(
        "radix10",
        include_str!("data/wycheproof/aes_ff1_radix10_test.json"),
    );
}

#[test]
fn wycheproof_radix26() {
    wycheproof(
        "radix26",
        include_str!("data/wycheproof/aes_ff1_radix26_test.json"),
    );
}

#[test]
fn wycheproof_radix36() {
    wycheproof(
        "radix36",
        include_str!("data/wycheproof/aes_ff1_radix36_test.json"),
    );
}

#[test]
fn wycheproof_radix62() {
    wycheproof(
        "radix62",
        include_str!("data/wycheproof/aes_ff1_radix62_test.json"),
    );
}
