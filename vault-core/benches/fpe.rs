//! FF1 side by side with the `fpe` crate, in the same run: one 16-digit decimal value under
//! AES-256, one 9-digit SSN, and the batch entry point. `cargo bench -p vault-core --bench fpe`.

use std::hint::black_box;

use aes::Aes256;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use fpe::ff1::{FF1, FlexibleNumeralString};
use vault_core::fpe::{BatchItem, Ff1};

const KEY: [u8; 32] = [
    0x2B, 0x7E, 0x15, 0x16, 0x28, 0xAE, 0xD2, 0xA6, 0xAB, 0xF7, 0x15, 0x88, 0x09, 0xCF, 0x4F, 0x3C,
    0xEF, 0x43, 0x59, 0xD8, 0xD5, 0x80, 0xAA, 0x4F, 0x7F, 0x03, 0x6D, 0x6F, 0x04, 0xFC, 0x6A, 0x94,
];
const PAN16: [u16; 16] = [4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1];
const SSN9: [u16; 9] = [1, 2, 3, 4, 5, 6, 7, 8, 9];
const TWEAK: &[u8] = b"pan\x00v1";

fn single(c: &mut Criterion) {
    let ours = Ff1::new(&KEY, 10).unwrap();
    let theirs = FF1::<Aes256>::new(&KEY, 10).unwrap();
    for (name, value) in [("16-digit", &PAN16[..]), ("ssn-9-digit", &SSN9[..])] {
        let mut g = c.benchmark_group(format!("ff1-encrypt/{name}"));
        g.throughput(Throughput::Elements(1));
        g.bench_function("vault-core", |b| {
            let mut buf = value.to_vec();
            b.iter(|| {
                ours.encrypt_in_place(black_box(TWEAK), black_box(&mut buf))
                    .unwrap();
            })
        });
        g.bench_function("vault-core-alloc", |b| {
            b.iter(|| ours.encrypt(black_box(TWEAK), black_box(value)).unwrap())
        });
        g.bench_function("fpe-0.7", |b| {
            b.iter_batched(
                || FlexibleNumeralString::from(value.to_vec()),
                |ns| theirs.encrypt(black_box(TWEAK), &ns).unwrap(),
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }
}

fn batch(c: &mut Criterion) {
    let ours = Ff1::new(&KEY, 10).unwrap();
    const N: usize = 1024;
    let mut g = c.benchmark_group("ff1-encrypt-batch/16-digit");
    g.throughput(Throughput::Elements(N as u64));
    let mut values: Vec<[u16; 16]> = (0..N)
        .map(|i| {
            let mut v = PAN16;
            v[6] = (i % 10) as u16;
            v[7] = (i / 10 % 10) as u16;
            v
        })
        .collect();
    g.bench_function("vault-core-batch", |b| {
        b.iter(|| {
            let mut items: Vec<BatchItem<'_>> = values
                .iter_mut()
                .map(|v| BatchItem {
                    tweak: TWEAK,
                    numerals: &mut v[..],
                })
                .collect();
            ours.encrypt_batch(black_box(&mut items)).unwrap();
        })
    });
    g.bench_function("vault-core-loop", |b| {
        b.iter(|| {
            for v in values.iter_mut() {
                ours.encrypt_in_place(black_box(TWEAK), &mut v[..]).unwrap();
            }
        })
    });
    g.finish();
}

/// The `pan` template end to end: parse, Luhn check, cycle walk (~10 FF1 calls on the 6-digit
/// middle), version slot, reassembly with the separators.
fn pan_template(c: &mut Criterion) {
    use vault_core::template::Template;
    let ff1 = Ff1::new(&KEY, 10).unwrap();
    let pan = Template::builtin("pan").unwrap();
    let cards = [
        "4111 1111 1111 1111",
        "5500-0000-0000-0004",
        "6011000990139424",
        "4000056655665556",
    ];
    let tokens: Vec<String> = cards
        .iter()
        .map(|v| pan.encrypt(&ff1, 1, v).unwrap())
        .collect();
    let mut g = c.benchmark_group("pan-template");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("encrypt", |b| {
        b.iter(|| {
            i = (i + 1) % cards.len();
            pan.encrypt(&ff1, 1, black_box(cards[i])).unwrap()
        })
    });
    g.bench_function("decrypt", |b| {
        b.iter(|| {
            i = (i + 1) % tokens.len();
            pan.decrypt(&ff1, 1, black_box(&tokens[i])).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, single, batch, pan_template);
criterion_main!(benches);
