//! Envelope encryption and root-key derivation timings.
//!
//! - `aead/*`: AES-256-GCM from `ring` and from `aes-gcm`, in the same run, for 16 B and 1 KiB,
//!   key schedule prepared once and a fixed nonce, so only the AEAD itself is timed. The faster
//!   one is used on the hot path (`envelope`).
//! - `envelope/*`: the full `DataKey::seal`/`open` path (random nonce from the OS, associated
//!   data, allocation).
//! - `argon2id/*`: root-key derivation with the `argon2` crate's defaults (OWASP's minimum,
//!   m = 19 MiB, t = 2, p = 1) and with ours (RFC 9106's second option, m = 64 MiB, t = 3, p = 4).
//!
//! Measured on the project's 2-core machine (one run, medians):
//!
//! | | 16 B seal / open | 1 KiB seal / open |
//! |---|---|---|
//! | `ring` | 133 / 174 ns | 323 / 323 ns |
//! | `aes-gcm` 0.11 | 410 / 424 ns | 998 / 1095 ns |
//! | `DataKey` (ring + OS nonce + AAD) | 491 / 151 ns | 648 / 615 ns |
//!
//! Argon2id: 24 ms with the crate defaults, 139 ms with ours.
//!
//! Run: `cargo bench -p vault-core --bench envelope -- --warm-up-time 1 --measurement-time 3`.
#![allow(missing_docs)]

use std::hint::black_box;

use aes_gcm::aead::{AeadInOut, KeyInit};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use vault_core::envelope::DataKey;
use vault_core::keys::root::{KdfParams, from_passphrase};
use vault_core::secret::{Key32, SecretString};

const KEY: [u8; 32] = [0x42; 32];
const NONCE: [u8; 12] = [7; 12];
const AAD: &[u8] = b"\x00\x00\x00\x11vault/envelope/v1\x01\x00\x00\x00\x03pan\x00\x00\x00\x00\x00\x00\x00\x2a\x00\x00\x00\x01";

fn aead(c: &mut Criterion) {
    let ring_key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &KEY).expect("32-byte key"));
    let rc_key = aes_gcm::Aes256Gcm::new(&KEY.into());
    let mut group = c.benchmark_group("aead");
    for len in [16usize, 1024] {
        group.throughput(Throughput::Bytes(len as u64));
        let mut buf = vec![0x5a; len];
        group.bench_function(format!("ring/seal/{len}"), |b| {
            b.iter(|| {
                ring_key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(NONCE),
                        Aad::from(AAD),
                        black_box(&mut buf[..]),
                    )
                    .expect("seal")
            })
        });
        group.bench_function(format!("aes-gcm/seal/{len}"), |b| {
            b.iter(|| {
                rc_key
                    .encrypt_inout_detached(&NONCE.into(), AAD, black_box(&mut buf[..]).into())
                    .expect("seal")
            })
        });
        // Open: a valid ciphertext each time, decrypted in a scratch copy.
        let mut sealed = vec![0x5a; len];
        let tag = ring_key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(NONCE),
                Aad::from(AAD),
                &mut sealed,
            )
            .expect("seal");
        let mut with_tag = sealed.clone();
        with_tag.extend_from_slice(tag.as_ref());
        let mut scratch = with_tag.clone();
        group.bench_function(format!("ring/open/{len}"), |b| {
            b.iter(|| {
                scratch.copy_from_slice(&with_tag);
                ring_key
                    .open_in_place(
                        Nonce::assume_unique_for_key(NONCE),
                        Aad::from(AAD),
                        &mut scratch,
                    )
                    .expect("open")
                    .len()
            })
        });
        let rc_tag = aes_gcm::Tag::try_from(tag.as_ref()).expect("16-byte tag");
        let mut scratch = sealed.clone();
        group.bench_function(format!("aes-gcm/open/{len}"), |b| {
            b.iter(|| {
                scratch.copy_from_slice(&sealed);
                rc_key
                    .decrypt_inout_detached(
                        &NONCE.into(),
                        AAD,
                        scratch.as_mut_slice().into(),
                        &rc_tag,
                    )
                    .expect("open")
            })
        });
    }
    group.finish();
}

fn envelope(c: &mut Criterion) {
    let key = DataKey::new(&Key32::generate().expect("rng"), 1);
    let mut group = c.benchmark_group("envelope");
    for len in [16usize, 1024] {
        group.throughput(Throughput::Bytes(len as u64));
        let value = vec![0x5a; len];
        group.bench_function(format!("seal/{len}"), |b| {
            b.iter(|| key.seal("pan", 42, black_box(&value)).expect("seal"))
        });
        let record = key.seal("pan", 42, &value).expect("seal");
        group.bench_function(format!("open/{len}"), |b| {
            b.iter(|| key.open("pan", 42, black_box(&record)).expect("open"))
        });
    }
    group.finish();
}

fn argon2id(c: &mut Criterion) {
    let pw = SecretString::from("correct horse battery staple");
    let mut group = c.benchmark_group("argon2id");
    group.sample_size(10);
    let crate_default = KdfParams::with_costs(19 * 1024, 2, 1).expect("params");
    group.bench_function("crate-default-m19MiB-t2-p1", |b| {
        b.iter(|| from_passphrase(&pw, &crate_default).expect("kdf"))
    });
    let ours = KdfParams::generate().expect("params");
    group.bench_function("ours-rfc9106-m64MiB-t3-p4", |b| {
        b.iter(|| from_passphrase(&pw, &ours).expect("kdf"))
    });
    group.finish();
}

criterion_group!(benches, aead, envelope, argon2id);
criterion_main!(benches);
