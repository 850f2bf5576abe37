//! FF1 against itself (round trips, format, tweak sensitivity) and against an independent
//! implementation (the `fpe` crate), over random radices, lengths, keys and tweaks, on both the
//! fast (u128) and the general (big-integer) path.

use aes::{Aes128, Aes192, Aes256};
use fpe::ff1::{FF1, FlexibleNumeralString};
use proptest::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng};
use vault_core::fpe::{BatchItem, Ff1, MIN_DOMAIN};

/// Smallest length whose domain radix^len meets SP 800-38G Rev. 1's minimum.
fn min_len(radix: u32) -> usize {
    let mut len = 2;
    while (u128::from(radix)).pow(len as u32) < u128::from(MIN_DOMAIN) {
        len += 1;
    }
    len
}

/// The `fpe` crate's answer, for the same key, radix, tweak and numerals.
fn reference(key: &[u8], radix: u32, tweak: &[u8], xs: &[u16], encrypt: bool) -> Vec<u16> {
    let ns = FlexibleNumeralString::from(xs.to_vec());
    macro_rules! with {
        ($c:ty) => {{
            let f = FF1::<$c>::new(key, radix).unwrap();
            let out = if encrypt {
                f.encrypt(tweak, &ns)
            } else {
                f.decrypt(tweak, &ns)
            };
            Vec::from(out.unwrap())
        }};
    }
    match key.len() {
        16 => with!(Aes128),
        24 => with!(Aes192),
        _ => with!(Aes256),
    }
}

/// Does this (radix, len) take the fast path? Mirrors `fast::Shape::new`: radix^v ≤ 2^96.
fn is_fast(radix: u32, len: usize) -> bool {
    let v = len - len / 2;
    let mut acc: u128 = 1;
    for _ in 0..v {
        match acc.checked_mul(u128::from(radix)) {
            Some(x) if x <= 1 << 96 => acc = x,
            _ => return false,
        }
    }
    true
}

#[test]
fn differential_against_fpe_crate() {
    let mut rng = StdRng::seed_from_u64(0x05ee_dff1);
    let (mut fast, mut big) = (0, 0);
    for case in 0..3000 {
        let radix = match case % 5 {
            0 => 10,
            1 => rng.random_range(2..=64),
            2 => rng.random_range(2..=1000),
            3 => rng.random_range(2..=65536),
            _ => [2, 16, 26, 36, 62, 256, 65536][rng.random_range(0..7)],
        };
        let lo = min_len(radix);
        // Alternate between lengths that stay on the fast path and lengths that leave it.
        let len = if case % 2 == 0 {
            rng.random_range(lo..=lo + 20)
        } else {
            rng.random_range(lo..=lo + 120)
        };
        let key: Vec<u8> = (0..[16, 24, 32][case % 3]).map(|_| rng.random()).collect();
        let tweak: Vec<u8> = (0..rng.random_range(0..40)).map(|_| rng.random()).collect();
        let xs: Vec<u16> = (0..len)
            .map(|_| rng.random_range(0..radix) as u16)
            .collect();
        if is_fast(radix, len) {
            fast += 1;
        } else {
            big += 1;
        }

        let ours = Ff1::new(&key, radix).unwrap();
        let ct = ours.encrypt(&tweak, &xs).unwrap();
        let expected = reference(&key, radix, &tweak, &xs, true);
        assert_eq!(
            ct,
            expected,
            "case {case}: radix {radix} len {len} tweak {}",
            tweak.len()
        );
        assert_eq!(
            ours.decrypt(&tweak, &ct).unwrap(),
            xs,
            "case {case}: decrypt"
        );
        assert_eq!(
            reference(&key, radix, &tweak, &ct, false),
            xs,
            "case {case}: ref decrypt"
        );
    }
    eprintln!("differential: {fast} fast-path cases, {big} general-path cases");
    assert!(
        fast > 1000 && big > 500,
        "both paths covered: {fast} fast, {big} big"
    );
}

#[test]
fn batch_agrees_with_single_on_mixed_shapes() {
    let mut rng = StdRng::seed_from_u64(7);
    let key: Vec<u8> = (0..32).map(|_| rng.random()).collect();
    let ff1 = Ff1::new(&key, 10).unwrap();
    let mut values: Vec<Vec<u16>> = (0..300)
        .map(|_| {
            (0..rng.random_range(6..=70))
                .map(|_| rng.random_range(0..10))
                .collect()
        })
        .collect();
    let tweaks: Vec<Vec<u8>> = (0..300)
        .map(|_| {
            (0..rng.random_range(0..3) * 11)
                .map(|_| rng.random())
                .collect()
        })
        .collect();
    let expected: Vec<Vec<u16>> = values
        .iter()
        .zip(&tweaks)
        .map(|(v, t)| ff1.encrypt(t, v).unwrap())
        .collect();
    let originals = values.clone();
    let mut items: Vec<BatchItem<'_>> = values
        .iter_mut()
        .zip(&tweaks)
        .map(|(v, t)| BatchItem {
            tweak: t,
            numerals: v,
        })
        .collect();
    ff1.encrypt_batch(&mut items).unwrap();
    drop(items);
    assert_eq!(values, expected);
    let mut items: Vec<BatchItem<'_>> = values
        .iter_mut()
        .zip(&tweaks)
        .map(|(v, t)| BatchItem {
            tweak: t,
            numerals: v,
        })
        .collect();
    ff1.decrypt_batch(&mut items).unwrap();
    drop(items);
    assert_eq!(values, originals);
}

/// A radix, and numerals of a valid length for it.
fn radix_and_numerals(max_extra: usize) -> impl Strategy<Value = (u32, Vec<u16>)> {
    prop_oneof![Just(10u32), Just(36), Just(62), 2u32..=65536].prop_flat_map(move |radix| {
        let lo = min_len(radix);
        let numeral = (0..radix).prop_map(|x| x as u16);
        (
            Just(radix),
            prop::collection::vec(numeral, lo..=lo + max_extra),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn round_trip_preserves_length_and_alphabet(
        key in prop::collection::vec(any::<u8>(), 32),
        tweak in prop::collection::vec(any::<u8>(), 0..64),
        (radix, xs) in radix_and_numerals(40),
    ) {
        let ff1 = Ff1::new(&key, radix).unwrap();
        let ct = ff1.encrypt(&tweak, &xs).unwrap();
        prop_assert_eq!(ct.len(), xs.len());
        prop_assert!(ct.iter().all(|&c| u32::from(c) < radix));
        prop_assert_eq!(ff1.decrypt(&tweak, &ct).unwrap(), xs);
    }

    #[test]
    fn different_tweaks_give_different_outputs(
        key in prop::collection::vec(any::<u8>(), 16),
        t1 in prop::collection::vec(any::<u8>(), 0..32),
        t2 in prop::collection::vec(any::<u8>(), 0..32),
        xs in prop::collection::vec(0u16..10, 12..=19),
    ) {
        prop_assume!(t1 != t2);
        let ff1 = Ff1::new(&key, 10).unwrap();
        // Domain ≥ 10^12: a collision between two tweaks has probability ≤ 10^-12.
        prop_assert_ne!(ff1.encrypt(&t1, &xs).unwrap(), ff1.encrypt(&t2, &xs).unwrap());
    }

    #[test]
    fn in_place_matches_allocating(
        key in prop::collection::vec(any::<u8>(), 24),
        (radix, xs) in radix_and_numerals(10),
    ) {
        let ff1 = Ff1::new(&key, radix).unwrap();
        let mut buf = xs.clone();
        ff1.encrypt_in_place(b"t", &mut buf).unwrap();
        prop_assert_eq!(&buf, &ff1.encrypt(b"t", &xs).unwrap());
        ff1.decrypt_in_place(b"t", &mut buf).unwrap();
        prop_assert_eq!(buf, xs);
    }
}
