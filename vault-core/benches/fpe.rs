//! FF1 side by side with the `fpe` crate, in the same run: one 16-digit decimal value under
//! AES-256, one 9-digit SSN, and the batch entry point. `cargo bench -p vault-core --bench fpe`.

use std::hint::black_box;

use aes::Aes256;
use criterion::{BatchSize, Criterion, Throughput, criterion_group};
use fpe::ff1::{FF1, FlexibleNumeralString};
use vault_core::fpe::{BatchItem, Ff1};

const KEY: [u8; 32] = [
    0x2B, 0x7E, 0x15, 0x16, 0x28, 0xAE, 0xD2, 0xA6, 0xAB, 0xF7, 0x15, 0x88, 0x09, 0xCF, 0x4F, 0x3C,
    0xEF, 0x43, 0x59, 0xD8, 0xD5, 0x80, 0xAA, 0x4F, 0x7F, 0x03, 0x6D, 0x6F, 0x04, 0xFC, 0x6A, 0x94,
];
const PAN16: [u16; 16] = [4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1];
const SSN9: [u16; 9] = [1, 2, 3, 4, 5, 6, 7, 8, 9];
const TWEAK: &[u8] = b"pan\x00v1";
/// The cards of the `pan` template cases: their walks take 16, 2, 27 and 2 steps under `KEY`
/// (11.75 on average; the expectation over all cards is 10).
const CARDS: [&str; 4] = [
    "4111 1111 1111 1111",
    "5500-0000-0000-0004",
    "6011000990139424",
    "4000056655665556",
];

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

/// `n` 16-digit values differing in two digits, for the batch cases.
fn batch_values(n: usize) -> Vec<[u16; 16]> {
    (0..n)
        .map(|i| {
            let mut v = PAN16;
            v[6] = (i % 10) as u16;
            v[7] = (i / 10 % 10) as u16;
            v
        })
        .collect()
}

/// One `encrypt_batch` call over all of `values`.
fn encrypt_all(ff1: &Ff1, values: &mut [[u16; 16]]) {
    let mut items: Vec<BatchItem<'_>> = values
        .iter_mut()
        .map(|v| BatchItem {
            tweak: TWEAK,
            numerals: &mut v[..],
        })
        .collect();
    ff1.encrypt_batch(black_box(&mut items)).unwrap();
}

fn batch(c: &mut Criterion) {
    let ours = Ff1::new(&KEY, 10).unwrap();
    const N: usize = 1024;
    let mut g = c.benchmark_group("ff1-encrypt-batch/16-digit");
    g.throughput(Throughput::Elements(N as u64));
    let mut values = batch_values(N);
    g.bench_function("vault-core-batch", |b| {
        b.iter(|| {
            encrypt_all(&ours, &mut values);
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
    let cards = CARDS;
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

/// The floor: `n` AES-256 block encryptions in a dependent chain (each input is the previous
/// output), all inside one backend closure as our FF1 runs them. A 16-digit FF1 is 11 such
/// calls (P, then ten rounds); nothing can make it faster than this chain's latency. The
/// block is carried from one timed call to the next, so calls cannot overlap either.
struct Chain<'a> {
    n: usize,
    block: &'a mut [u8; 16],
}

impl cipher::BlockSizeUser for Chain<'_> {
    type BlockSize = cipher::consts::U16;
}

impl cipher::BlockCipherEncClosure for Chain<'_> {
    #[inline(always)]
    fn call<B: cipher::BlockCipherEncBackend<BlockSize = cipher::consts::U16>>(self, backend: &B) {
        for _ in 0..self.n {
            backend.encrypt_block_inplace(self.block.into());
        }
    }
}

fn aes_floor(c: &mut Criterion) {
    use cipher::{BlockCipherEncrypt, KeyInit};
    let aes = Aes256::new_from_slice(&KEY).unwrap();
    let mut g = c.benchmark_group("aes-256-serial");
    for n in [11usize, 100] {
        let mut block = [7u8; 16];
        g.bench_function(format!("{n}-blocks"), |b| {
            b.iter(|| {
                aes.encrypt_with_backend(Chain {
                    n,
                    block: black_box(&mut block),
                })
            })
        });
    }
    g.finish();
}

/// Interleaved rounds: in each round every case runs for the same short time, one after the
/// other, and each case's cost is divided by the `fpe` call timed in that round. The medians of
/// the per-round ratios are steadier than criterion's figures taken minutes apart on this
/// shared machine (the `fpe` call alone moves between 5 and 10 µs from one minute to the next).
/// BENCHMARKS.md quotes this table. `VAULT_FPE_ROUNDS` sets the number of rounds (default 15).
fn interleaved() {
    use std::time::{Duration, Instant};
    use vault_core::template::Template;

    /// Nanoseconds per value of `f`, which handles `per_call` values, run for ~`budget`.
    fn time(budget: Duration, per_call: usize, mut f: impl FnMut()) -> f64 {
        let start = Instant::now();
        let mut calls = 0u64;
        while start.elapsed() < budget {
            for _ in 0..16 {
                f();
            }
            calls += 16;
        }
        start.elapsed().as_nanos() as f64 / (calls as f64 * per_call as f64)
    }

    let rounds: usize = std::env::var("VAULT_FPE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let budget = Duration::from_millis(60);
    let ours = Ff1::new(&KEY, 10).unwrap();
    let theirs = FF1::<Aes256>::new(&KEY, 10).unwrap();
    let pan = Template::builtin("pan").unwrap();
    let cards = CARDS;
    let aes = {
        use cipher::KeyInit;
        Aes256::new_from_slice(&KEY).unwrap()
    };
    const N: usize = 1024;
    let mut values = batch_values(N);
    let mut buf = PAN16;
    let mut chain = [7u8; 16];
    let cases = [
        "11 serial AES-256 blocks (the floor of one 16-digit FF1)",
        "FF1 16 digits, one value (`encrypt_in_place`)",
        "FF1 16 digits, `encrypt_batch` of 1024, per value",
        "`pan` template `encrypt`, per value",
    ];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut fpe_ns = Vec::new();
    for round in 0..rounds {
        let mut costs = [0f64; 4];
        let mut base = 0f64;
        // Alternate which runs first so that a slow patch is shared.
        let order: [usize; 5] = if round % 2 == 0 {
            [4, 0, 1, 2, 3]
        } else {
            [0, 1, 2, 3, 4]
        };
        for case in order {
            match case {
                0 => {
                    costs[0] = time(budget, 1, || {
                        use cipher::BlockCipherEncrypt;
                        aes.encrypt_with_backend(Chain {
                            n: 11,
                            block: black_box(&mut chain),
                        })
                    })
                }
                1 => {
                    costs[1] = time(budget, 1, || {
                        ours.encrypt_in_place(black_box(TWEAK), black_box(&mut buf))
                            .unwrap()
                    })
                }
                2 => {
                    costs[2] = time(budget, N, || {
                        encrypt_all(&ours, &mut values);
                    })
                }
                3 => {
                    let mut i = 0;
                    costs[3] = time(budget, 1, || {
                        i = (i + 1) % cards.len();
                        black_box(pan.encrypt(&ours, 1, black_box(cards[i])).unwrap());
                    })
                }
                _ => {
                    base = time(budget, 1, || {
                        let ns = FlexibleNumeralString::from(PAN16.to_vec());
                        black_box(theirs.encrypt(black_box(TWEAK), &ns).unwrap());
                    })
                }
            }
        }
        fpe_ns.push(base);
        for (r, c) in ratios.iter_mut().zip(costs) {
            r.push(c / base);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    eprintln!();
    eprintln!(
        "## interleaved rounds ({rounds}), medians of per-round ratios to one `fpe` 0.7 call"
    );
    eprintln!(
        "(`fpe` 16 digits, AES-256: median {:.0} ns per call)",
        median(&mut fpe_ns)
    );
    eprintln!("| case | cost ÷ `fpe` | `fpe` ÷ cost |");
    eprintln!("|---|---:|---:|");
    for (name, r) in cases.iter().zip(ratios.iter_mut()) {
        let m = median(r);
        eprintln!("| {name} | {m:.3} | {:.1}× |", 1.0 / m);
    }
}

criterion_group!(benches, aes_floor, single, batch, pan_template);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // Criterion's filter applies to its groups only: skip the table when a filter was given
    // that does not name it.
    // (Numbers are the values of options such as `--measurement-time 3`.)
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-') && a.parse::<f64>().is_err());
    if filter.is_none_or(|f| "interleaved".contains(f.as_str())) {
        interleaved();
    }
}
