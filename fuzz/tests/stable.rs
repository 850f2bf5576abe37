//! The fuzz targets on stable Rust: replay every regression input, then a mutation loop over
//! the seeds (bit flips, byte sets, inserts, deletes, duplications, splices, interesting
//! values) for `VAULT_FUZZ_SECS` seconds per target (default 2). No coverage feedback: this is
//! the floor CI can always run; `cargo fuzz` (libFuzzer, coverage-guided, sanitizers) is the
//! long variant (see fuzz/README.md).
//!
//! `VAULT_FUZZ_SEED` replays one run; `VAULT_FUZZ_TARGET` runs one target. A failing input is
//! written to `fuzz/artifacts/stable/<target>-<n>` and its hex printed: move it to
//! `fuzz/regressions/<target>/` with the fix, and this test replays it forever.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vault_fuzz::TARGETS;

/// splitmix64: small, seedable, good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

const INTERESTING: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'0', b'9', b'a', b'_', b'@', b'-', b' ',
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, pool: &[Vec<u8>]) {
    for _ in 0..1 + rng.below(8) {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.byte();
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
                input.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(32));
                input.drain(i..i + n);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                let chunk = input[i..i + n].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, chunk);
            }
            5 if !pool.is_empty() => {
                let other = &pool[rng.below(pool.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                input.truncate(cut);
                input.extend_from_slice(&other[from..]);
            }
            6 if len > 0 => {
                let i = rng.below(len);
                input[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            _ => {
                if input.len() < 4096 {
                    input.push(rng.byte());
                }
            }
        }
    }
    input.truncate(8192);
}

fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().is_file())
                .map(|e| (e.path(), std::fs::read(e.path()).unwrap()))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn run_one(target: fn(&[u8]), input: &[u8]) -> bool {
    std::panic::catch_unwind(|| target(input)).is_ok()
}

#[test]
fn fuzz_targets_on_stable() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let secs: f64 = std::env::var("VAULT_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let seed: u64 = std::env::var("VAULT_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let only = std::env::var("VAULT_FUZZ_TARGET").ok();
    println!("fuzz (stable runner): {secs} s per target, VAULT_FUZZ_SEED={seed}");
    let mut failures = Vec::new();
    for (t, (name, target)) in TARGETS.iter().enumerate() {
        if only.as_deref().is_some_and(|o| o != *name) {
            continue;
        }
        let regressions = files(&root.join("regressions").join(name));
        for (path, input) in &regressions {
            assert!(
                run_one(*target, input),
                "{name}: regression {} fails again",
                path.display()
            );
        }
        let seeds: Vec<Vec<u8>> = files(&root.join("seeds").join(name))
            .into_iter()
            .chain(regressions.iter().cloned())
            .map(|(_, b)| b)
            .collect();
        let mut rng = Rng(seed ^ (t as u64).wrapping_mul(0x1000_0000_01b3));
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let mut execs: u64 = 0;
        let mut crashes = 0;
        while Instant::now() < deadline && crashes < 3 {
            let mut input = if seeds.is_empty() || rng.below(10) == 0 {
                let n = rng.below(256);
                (0..n).map(|_| rng.byte()).collect()
            } else {
                seeds[rng.below(seeds.len())].clone()
            };
            mutate(&mut rng, &mut input, &seeds);
            execs += 1;
            if !run_one(*target, &input) {
                crashes += 1;
                let dir = root.join("artifacts").join("stable");
                std::fs::create_dir_all(&dir).unwrap();
                let path = dir.join(format!("{name}-{execs}"));
                std::fs::write(&path, &input).unwrap();
                let hex: String = input.iter().take(256).map(|b| format!("{b:02x}")).collect();
                failures.push(format!("{name}: {} (hex {hex})", path.display()));
            }
        }
        println!(
            "fuzz {name}: {execs} inputs, {} regressions replayed, {crashes} crashes",
            regressions.len()
        );
    }
    assert!(
        failures.is_empty(),
        "crashing inputs:\n{}",
        failures.join("\n")
    );
}
