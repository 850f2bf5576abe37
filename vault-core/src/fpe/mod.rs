//! FF1 format-preserving encryption (NIST SP 800-38G, with the Rev. 1 domain rule).
//!
//! FF1 is a ten-round Feistel network whose round function is an AES CBC-MAC over a block `P`
//! (the parameters), the tweak and one half of the input. Two paths compute it:
//!
//! - **The fast path** (`fast`), taken when each half's value fits comfortably in 96 bits
//!   (`b ≤ 12` bytes in §6.2 Algorithm 7, so `d ≤ 16` and one AES call per round): the halves are
//!   kept as `u128` integers for the whole call, so numeral strings are converted once on the
//!   way in and once on the way out, nothing is allocated, and the CBC-MAC over `P` and the
//!   tweak — identical in all ten rounds — is computed once per call. Every AES call of one FF1
//!   runs inside a single `encrypt_with_backend` closure, so the AES backend (AES-NI or the
//!   software fallback) is selected once, not eleven times, and the closure is inlined into the
//!   backend's `aes`-feature function so that the AES rounds inline into the Feistel loop (no
//!   call per block). Halves below 2^32 (every card number, SSN and phone number, and each step
//!   of the PAN walk) run on `u64` with one Barrett reduction per round; longer ones on `u128`.
//!   A round is latency-bound (each AES input depends on the previous output), so what counts
//!   is the instructions between one AES call and the next. No `unsafe`: the crate forbids it,
//!   and inlining gave the gain intrinsics would have.
//! - **The general path** (`big`) for longer inputs, with arbitrary-precision integers, written
//!   to follow Algorithms 7 and 8 step by step.
//!
//! Both paths are checked against NIST's samples, Wycheproof's vectors and the independent
//! `fpe` crate (see `vault-core/tests/`).
//!
//! Rules enforced here rather than left to callers (each a distinct [`Error`] variant): key
//! length (AES-128/192/256), radix in 2..=65536, every numeral below the radix, length in
//! 2..=[`MAX_LEN`], radix^len ≥ 1,000,000 (SP 800-38G Rev. 1), tweak length ≤ [`MAX_TWEAK_LEN`].

mod big;
mod error;
mod fast;

use aes::{Aes128, Aes192, Aes256};
use cipher::{
    BlockCipherEncBackend, BlockCipherEncClosure, BlockCipherEncrypt, BlockSizeUser, KeyInit,
    consts::U16,
};

pub use error::Error;

/// Smallest radix FF1 accepts (SP 800-38G §5.2).
pub const MIN_RADIX: u32 = 2;
/// Largest radix FF1 accepts (SP 800-38G §5.2: radix ≤ 2^16).
pub const MAX_RADIX: u32 = 1 << 16;
/// Smallest domain radix^len accepted (SP 800-38G Rev. 1, §5.2).
pub const MIN_DOMAIN: u64 = 1_000_000;
/// Longest input accepted, in numerals. The standard allows up to 2^32; this bound keeps the
/// general path's quadratic arithmetic and memory small while covering any value a vault stores.
pub const MAX_LEN: usize = 4096;
/// Longest tweak accepted, in bytes (the standard lets the implementation choose `maxTlen`).
pub const MAX_TWEAK_LEN: usize = 1024;

/// The AES key schedule, for the three key sizes. `aes` zeroizes it on drop (feature
/// `zeroize`), so `Ff1` holds no key material after it is dropped.
enum Cipher {
    Aes128(Aes128),
    Aes192(Aes192),
    Aes256(Aes256),
}

impl Cipher {
    /// Runs `f` with one AES backend, selected once.
    fn with_backend<F: BlockCipherEncClosure<BlockSize = U16>>(&self, f: F) {
        match self {
            Cipher::Aes128(c) => c.encrypt_with_backend(f),
            Cipher::Aes192(c) => c.encrypt_with_backend(f),
            Cipher::Aes256(c) => c.encrypt_with_backend(f),
        }
    }
}

/// The block-cipher operations FF1 needs, over whichever AES backend is in use. Generic (not
/// `dyn`) so each backend's calls inline into the Feistel rounds.
trait Prf {
    /// Encrypts one block in place.
    fn block(&self, block: &mut [u8; 16]);
    /// Encrypts independent blocks in place, through the backend's parallel path (8 blocks per
    /// step with AES-NI, more with VAES).
    fn blocks(&self, blocks: &mut [[u8; 16]]);
    /// How many blocks the backend encrypts in one parallel step.
    fn width(&self) -> usize;
}

/// A [`Prf`] over a `cipher` backend.
struct Backend<'a, B>(&'a B);

impl<B: BlockCipherEncBackend<BlockSize = U16>> Prf for Backend<'_, B> {
    #[inline(always)]
    fn block(&self, block: &mut [u8; 16]) {
        self.0.encrypt_block_inplace(block.into());
    }

    #[inline(always)]
    fn blocks(&self, blocks: &mut [[u8; 16]]) {
        let blocks = cipher::Array::cast_slice_from_core_mut(blocks);
        if self.width() > 1 {
            let (chunks, tail) = inout::InOutBuf::from(blocks).into_chunks();
            for chunk in chunks {
                self.0.encrypt_par_blocks(chunk);
            }
            self.0.encrypt_tail_blocks(tail);
        } else {
            for block in blocks {
                self.0.encrypt_block_inplace(block);
            }
        }
    }

    #[inline(always)]
    fn width(&self) -> usize {
        <B::ParBlocksSize as cipher::typenum::Unsigned>::USIZE
    }
}

/// One FF1 call (fast or general path), as a `cipher` closure so it runs on one backend.
struct Op<'a> {
    dir: Direction,
    radix: u32,
    shape: Option<&'a fast::Shape>,
    tweak: &'a [u8],
    numerals: &'a mut [u16],
}

impl BlockSizeUser for Op<'_> {
    type BlockSize = U16;
}

impl BlockCipherEncClosure for Op<'_> {
    // `inline(always)` here and on the fast path's entry points: the AES backend calls this
    // from a function compiled with the `aes` target feature; inlined there, the AES rounds
    // inline into the Feistel loop (registers, no call per block). Not inlined, every block
    // was an out-of-line call through memory: half the time of a 16-digit FF1.
    #[inline(always)]
    fn call<B: BlockCipherEncBackend<BlockSize = U16>>(self, backend: &B) {
        let prf = Backend(backend);
        match self.shape {
            Some(shape) => fast::run(&prf, shape, self.dir, self.tweak, self.numerals),
            None => big::run(&prf, self.radix, self.dir, self.tweak, self.numerals),
        }
    }
}

/// A cycle walk, as a `cipher` closure.
struct WalkOp<'a, F> {
    dir: Direction,
    radix: u32,
    shape: Option<&'a fast::Shape>,
    tweak: &'a [u8],
    numerals: &'a mut [u16],
    max_steps: u32,
    accept: F,
    steps: &'a mut Option<u32>,
}

impl<F> BlockSizeUser for WalkOp<'_, F> {
    type BlockSize = U16;
}

impl<F: FnMut(&[u16]) -> bool> BlockCipherEncClosure for WalkOp<'_, F> {
    #[inline(always)]
    fn call<B: BlockCipherEncBackend<BlockSize = U16>>(mut self, backend: &B) {
        let prf = Backend(backend);
        *self.steps = match self.shape {
            Some(shape) => fast::walk(
                &prf,
                shape,
                self.dir,
                self.tweak,
                self.numerals,
                self.max_steps,
                &mut self.accept,
            ),
            None => (1..=self.max_steps).find(|_| {
                big::run(&prf, self.radix, self.dir, self.tweak, self.numerals);
                (self.accept)(self.numerals)
            }),
        };
    }
}

/// A batch, as a `cipher` closure.
struct BatchOp<'a, 'b> {
    dir: Direction,
    radix: u32,
    items: &'a mut [BatchItem<'b>],
}

impl BlockSizeUser for BatchOp<'_, '_> {
    type BlockSize = U16;
}

impl BlockCipherEncClosure for BatchOp<'_, '_> {
    #[inline(always)]
    fn call<B: BlockCipherEncBackend<BlockSize = U16>>(self, backend: &B) {
        fast::run_batch(&Backend(backend), self.radix, self.dir, self.items);
    }
}

/// Which way the Feistel network runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Direction {
    Encrypt,
    Decrypt,
}

/// One value of a batch: its tweak and its numerals, transformed in place.
#[derive(Debug)]
pub struct BatchItem<'a> {
    /// The tweak for this value.
    pub tweak: &'a [u8],
    /// The numerals, replaced by the result.
    pub numerals: &'a mut [u16],
}

/// An FF1 instance: one AES key and one radix.
///
/// The key schedule is zeroized on drop. `Debug` prints the radix only.
pub struct Ff1 {
    cipher: Cipher,
    radix: u32,
}

impl Ff1 {
    /// Creates an FF1 instance from a 16-, 24- or 32-byte AES key and a radix in 2..=65536.
    pub fn new(key: &[u8], radix: u32) -> Result<Ff1, Error> {
        if !(MIN_RADIX..=MAX_RADIX).contains(&radix) {
            return Err(Error::InvalidRadix { radix });
        }
        let len = key.len();
        let invalid = |_| Error::InvalidKeyLength { len };
        let cipher = match len {
            16 => Cipher::Aes128(Aes128::new_from_slice(key).map_err(invalid)?),
            24 => Cipher::Aes192(Aes192::new_from_slice(key).map_err(invalid)?),
            32 => Cipher::Aes256(Aes256::new_from_slice(key).map_err(invalid)?),
            _ => return Err(Error::InvalidKeyLength { len }),
        };
        Ok(Ff1 { cipher, radix })
    }

    /// The radix this instance works in.
    pub fn radix(&self) -> u32 {
        self.radix
    }

    /// Encrypts `numerals` (each below the radix) under `tweak` (SP 800-38G §6.2, Algorithm 7).
    pub fn encrypt(&self, tweak: &[u8], numerals: &[u16]) -> Result<Vec<u16>, Error> {
        let mut out = numerals.to_vec();
        self.encrypt_in_place(tweak, &mut out)?;
        Ok(out)
    }

    /// Decrypts `numerals` under `tweak` (SP 800-38G §6.2, Algorithm 8).
    pub fn decrypt(&self, tweak: &[u8], numerals: &[u16]) -> Result<Vec<u16>, Error> {
        let mut out = numerals.to_vec();
        self.decrypt_in_place(tweak, &mut out)?;
        Ok(out)
    }

    /// Encrypts in place. Allocation-free on the fast path.
    pub fn encrypt_in_place(&self, tweak: &[u8], numerals: &mut [u16]) -> Result<(), Error> {
        self.run(Direction::Encrypt, tweak, numerals)
    }

    /// Decrypts in place. Allocation-free on the fast path.
    pub fn decrypt_in_place(&self, tweak: &[u8], numerals: &mut [u16]) -> Result<(), Error> {
        self.run(Direction::Decrypt, tweak, numerals)
    }

    /// Cycle walking: encrypts in place again and again until `accept` approves the numerals,
    /// at most `max_steps` times; returns the number of steps, or `None` if `accept` never
    /// approved (the numerals then hold the last attempt). Started from a value in the
    /// accepted set, this is a permutation of that set, undone by [`Ff1::decrypt_walk`].
    ///
    /// Why a method: every step shares one backend selection and the per-call constants (the
    /// CBC-MAC of P and the tweak), so a walk of ten steps costs little more than ten bare
    /// Feistel networks. The PAN template walks about ten steps per token.
    pub fn encrypt_walk(
        &self,
        tweak: &[u8],
        numerals: &mut [u16],
        max_steps: u32,
        accept: impl FnMut(&[u16]) -> bool,
    ) -> Result<Option<u32>, Error> {
        self.walk(Direction::Encrypt, tweak, numerals, max_steps, accept)
    }

    /// The inverse of [`Ff1::encrypt_walk`]: decrypts until `accept` approves.
    pub fn decrypt_walk(
        &self,
        tweak: &[u8],
        numerals: &mut [u16],
        max_steps: u32,
        accept: impl FnMut(&[u16]) -> bool,
    ) -> Result<Option<u32>, Error> {
        self.walk(Direction::Decrypt, tweak, numerals, max_steps, accept)
    }

    fn walk(
        &self,
        dir: Direction,
        tweak: &[u8],
        numerals: &mut [u16],
        max_steps: u32,
        accept: impl FnMut(&[u16]) -> bool,
    ) -> Result<Option<u32>, Error> {
        self.check(tweak, numerals)?;
        let shape = fast::Shape::new(self.radix, numerals.len(), tweak.len());
        let mut steps = None;
        self.cipher.with_backend(WalkOp {
            dir,
            radix: self.radix,
            shape: shape.as_ref(),
            tweak,
            numerals,
            max_steps,
            accept,
            steps: &mut steps,
        });
        Ok(steps)
    }

    /// Encrypts many values in place, interleaving eight independent values through the AES
    /// backend's parallel path where they share a shape (length and tweak length).
    ///
    /// Every item is validated before any is changed: on error nothing is modified and the
    /// error names the index of the first bad item.
    pub fn encrypt_batch(&self, items: &mut [BatchItem<'_>]) -> Result<(), (usize, Error)> {
        self.run_batch(Direction::Encrypt, items)
    }

    /// Decrypts many values in place; see [`Ff1::encrypt_batch`].
    pub fn decrypt_batch(&self, items: &mut [BatchItem<'_>]) -> Result<(), (usize, Error)> {
        self.run_batch(Direction::Decrypt, items)
    }

    /// Checks the input against SP 800-38G's rules.
    fn check(&self, tweak: &[u8], numerals: &[u16]) -> Result<(), Error> {
        let len = numerals.len();
        let radix = self.radix;
        if tweak.len() > MAX_TWEAK_LEN {
            return Err(Error::TweakTooLong {
                len: tweak.len(),
                max: MAX_TWEAK_LEN,
            });
        }
        if len < 2 {
            return Err(Error::TooShort { len });
        }
        if len > MAX_LEN {
            return Err(Error::TooLong { len, max: MAX_LEN });
        }
        if !domain_at_least(radix, len, MIN_DOMAIN) {
            return Err(Error::DomainTooSmall { radix, len });
        }
        // Checked without an early exit on the first bad numeral: the time taken does not say
        // where in the value the bad numeral is.
        let bad = numerals
            .iter()
            .fold(false, |bad, &x| bad | (u32::from(x) >= radix));
        if bad {
            return Err(Error::NumeralOutOfRange { radix });
        }
        Ok(())
    }

    fn run(&self, dir: Direction, tweak: &[u8], numerals: &mut [u16]) -> Result<(), Error> {
        self.check(tweak, numerals)?;
        let shape = fast::Shape::new(self.radix, numerals.len(), tweak.len());
        self.cipher.with_backend(Op {
            dir,
            radix: self.radix,
            shape: shape.as_ref(),
            tweak,
            numerals,
        });
        Ok(())
    }

    fn run_batch(&self, dir: Direction, items: &mut [BatchItem<'_>]) -> Result<(), (usize, Error)> {
        for (i, item) in items.iter().enumerate() {
            self.check(item.tweak, item.numerals).map_err(|e| (i, e))?;
        }
        self.cipher.with_backend(BatchOp {
            dir,
            radix: self.radix,
            items,
        });
        Ok(())
    }
}

impl std::fmt::Debug for Ff1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ff1")
            .field("radix", &self.radix)
            .finish_non_exhaustive()
    }
}

/// Whether radix^len ≥ bound, without overflow.
fn domain_at_least(radix: u32, len: usize, bound: u64) -> bool {
    let mut acc: u64 = 1;
    for _ in 0..len {
        acc = acc.saturating_mul(u64::from(radix));
        if acc >= bound {
            return true;
        }
    }
    acc >= bound
}

/// The 16-byte block P of Algorithm 7, step 5: [1]¹ [2]¹ [1]¹ [radix]³ [10]¹ [u mod 256]¹ [n]⁴ [t]⁴.
fn p_block(radix: u32, u: usize, n: usize, t: usize) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[0] = 1;
    p[1] = 2;
    p[2] = 1;
    p[3..6].copy_from_slice(&radix.to_be_bytes()[1..4]);
    p[6] = 10;
    p[7] = (u % 256) as u8;
    // n ≤ MAX_LEN and t ≤ MAX_TWEAK_LEN, both far below 2^32.
    p[8..12].copy_from_slice(&(n as u32).to_be_bytes());
    p[12..16].copy_from_slice(&(t as u32).to_be_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nist_key(bytes: usize) -> Vec<u8> {
        let k = [
            0x2B, 0x7E, 0x15, 0x16, 0x28, 0xAE, 0xD2, 0xA6, 0xAB, 0xF7, 0x15, 0x88, 0x09, 0xCF,
            0x4F, 0x3C, 0xEF, 0x43, 0x59, 0xD8, 0xD5, 0x80, 0xAA, 0x4F, 0x7F, 0x03, 0x6D, 0x6F,
            0x04, 0xFC, 0x6A, 0x94,
        ];
        k[..bytes].to_vec()
    }

    #[test]
    fn nist_sample_1_round_trips() {
        let ff1 = Ff1::new(&nist_key(16), 10).unwrap();
        let pt: Vec<u16> = (0..10).collect();
        let ct = ff1.encrypt(&[], &pt).unwrap();
        assert_eq!(ct, [2, 4, 3, 3, 4, 7, 7, 4, 8, 4]);
        assert_eq!(ff1.decrypt(&[], &ct).unwrap(), pt);
    }

    #[test]
    fn refusals_are_typed() {
        assert_eq!(
            Ff1::new(&[0; 15], 10).unwrap_err(),
            Error::InvalidKeyLength { len: 15 }
        );
        assert_eq!(
            Ff1::new(&[0; 16], 1).unwrap_err(),
            Error::InvalidRadix { radix: 1 }
        );
        assert_eq!(
            Ff1::new(&[0; 16], 65537).unwrap_err(),
            Error::InvalidRadix { radix: 65537 }
        );
        let ff1 = Ff1::new(&[0; 32], 10).unwrap();
        assert_eq!(
            ff1.encrypt(&[], &[1]).unwrap_err(),
            Error::TooShort { len: 1 }
        );
        assert_eq!(
            ff1.encrypt(&[], &[1; 5]).unwrap_err(),
            Error::DomainTooSmall { radix: 10, len: 5 }
        );
        assert_eq!(
            ff1.encrypt(&[], &[1, 2, 3, 4, 5, 10]).unwrap_err(),
            Error::NumeralOutOfRange { radix: 10 }
        );
        assert_eq!(
            ff1.encrypt(&[0; MAX_TWEAK_LEN + 1], &[1; 6]).unwrap_err(),
            Error::TweakTooLong {
                len: MAX_TWEAK_LEN + 1,
                max: MAX_TWEAK_LEN
            }
        );
        assert_eq!(
            ff1.encrypt(&[], &vec![1; MAX_LEN + 1]).unwrap_err(),
            Error::TooLong {
                len: MAX_LEN + 1,
                max: MAX_LEN
            }
        );
        // Exactly 10^6 is allowed.
        assert!(ff1.encrypt(&[], &[1; 6]).is_ok());
        // radix 2: 2^20 ≥ 10^6 > 2^19.
        let bin = Ff1::new(&[0; 32], 2).unwrap();
        assert!(bin.encrypt(&[], &[1; 19]).is_err());
        assert!(bin.encrypt(&[], &[1; 20]).is_ok());
    }

    #[test]
    fn errors_never_print_numerals() {
        let ff1 = Ff1::new(&[7; 32], 10).unwrap();
        let err = ff1
            .encrypt(&[], &[9, 8, 7, 6, 5, 4, 3, 2, 1, 17])
            .unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains("987654321"), "{text}");
        assert!(!text.contains("17"), "{text}");
    }

    #[test]
    fn debug_shows_no_key() {
        let ff1 = Ff1::new(&[0xAB; 32], 10).unwrap();
        let text = format!("{ff1:?}");
        assert_eq!(text, "Ff1 { radix: 10, .. }");
    }

    #[test]
    fn batch_matches_single() {
        let ff1 = Ff1::new(&nist_key(32), 10).unwrap();
        let mut values: Vec<Vec<u16>> = (0..21u16)
            .map(|i| {
                (0..(6 + (i % 3) as usize * 5))
                    .map(|j| (i + j as u16) % 10)
                    .collect()
            })
            .collect();
        let tweaks: Vec<Vec<u8>> = (0..21u8).map(|i| vec![i; (i % 4) as usize * 9]).collect();
        let expected: Vec<Vec<u16>> = values
            .iter()
            .zip(&tweaks)
            .map(|(v, t)| ff1.encrypt(t, v).unwrap())
            .collect();
        let mut items: Vec<BatchItem<'_>> = values
            .iter_mut()
            .zip(&tweaks)
            .map(|(v, t)| BatchItem {
                tweak: t,
                numerals: v,
            })
            .collect();
        ff1.encrypt_batch(&mut items).unwrap();
        ff1.decrypt_batch(&mut items).unwrap();
        ff1.encrypt_batch(&mut items).unwrap();
        drop(items);
        assert_eq!(values, expected);
    }

    /// The fast path and the general path compute the same function: run both on inputs the
    /// fast path takes.
    #[test]
    fn fast_and_general_paths_agree() {
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for case in 0..2000 {
            let radix = [2, 10, 26, 36, 62, 256, 1000, 65536][case % 8];
            let key: Vec<u8> = (0..[16, 24, 32][case % 3]).map(|_| next() as u8).collect();
            let ff1 = Ff1::new(&key, radix).unwrap();
            let mut len = 2;
            while !domain_at_least(radix, len, MIN_DOMAIN) {
                len += 1;
            }
            len += (next() % 24) as usize;
            let Some(shape) = fast::Shape::new(radix, len, case % 40) else {
                continue;
            };
            let tweak: Vec<u8> = (0..case % 40).map(|_| next() as u8).collect();
            let xs: Vec<u16> = (0..len)
                .map(|_| (next() % u64::from(radix)) as u16)
                .collect();
            for dir in [Direction::Encrypt, Direction::Decrypt] {
                let (mut a, mut b) = (xs.clone(), xs.clone());
                ff1.cipher.with_backend(Op {
                    dir,
                    radix,
                    shape: Some(&shape),
                    tweak: &tweak,
                    numerals: &mut a,
                });
                ff1.cipher.with_backend(Op {
                    dir,
                    radix,
                    shape: None,
                    tweak: &tweak,
                    numerals: &mut b,
                });
                assert_eq!(a, b, "case {case}: radix {radix} len {len} {dir:?}");
            }
        }
    }

    /// A walk is the same as repeated single calls, on both paths, both ways.
    #[test]
    fn walk_matches_repeated_calls() {
        let ff1 = Ff1::new(&nist_key(32), 10).unwrap();
        for len in [6usize, 16, 70] {
            let start: Vec<u16> = (0..len as u16).map(|i| (i * 7 + 3) % 10).collect();
            // Accept when the digit sum is divisible by 7 (about one value in seven).
            let accept = |x: &[u16]| x.iter().map(|&d| u32::from(d)).sum::<u32>() % 7 == 0;
            let mut expected = start.clone();
            let mut steps = 0;
            loop {
                ff1.encrypt_in_place(b"walk", &mut expected).unwrap();
                steps += 1;
                if accept(&expected) {
                    break;
                }
            }
            let mut walked = start.clone();
            assert_eq!(
                ff1.encrypt_walk(b"walk", &mut walked, 1000, accept)
                    .unwrap(),
                Some(steps)
            );
            assert_eq!(walked, expected, "len {len}");
            // From an accepted value, walking forward then back returns to it.
            let accepted = walked.clone();
            ff1.encrypt_walk(b"walk", &mut walked, 1000, accept)
                .unwrap();
            assert_ne!(walked, accepted);
            ff1.decrypt_walk(b"walk", &mut walked, 1000, accept)
                .unwrap();
            assert_eq!(walked, accepted, "len {len}: walk undone");
            let mut capped = start.clone();
            assert_eq!(
                ff1.encrypt_walk(b"walk", &mut capped, 0, accept).unwrap(),
                None
            );
        }
    }

    #[test]
    fn batch_rejects_before_changing_anything() {
        let ff1 = Ff1::new(&[1; 16], 10).unwrap();
        let mut a = vec![1u16; 8];
        let mut b = vec![1u16; 3];
        let mut items = [
            BatchItem {
                tweak: &[],
                numerals: &mut a,
            },
            BatchItem {
                tweak: &[],
                numerals: &mut b,
            },
        ];
        assert_eq!(
            ff1.encrypt_batch(&mut items).unwrap_err(),
            (1, Error::DomainTooSmall { radix: 10, len: 3 })
        );
        assert_eq!(a, vec![1u16; 8]);
    }
}
