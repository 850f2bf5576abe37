//! FF1's fast path: both Feistel halves as `u128` integers, one AES call per round, no
//! allocation (SP 800-38G §6.2, Algorithms 7 and 8, specialised to `b ≤ 12`).
//!
//! Why `b ≤ 12`: the round input's variable part ([i]¹ ‖ NUM(B) in `b` bytes) then fits in the
//! last 16-byte block of `P ‖ Q`, so the CBC-MAC over `P` and the tweak is the same in every
//! round and is computed once; and `d = 4⌈b/4⌉ + 4 ≤ 16`, so `S` is the first `d` bytes of one
//! AES output (step 6.iii needs no extra blocks) and `y < 2^128`.

use super::{BatchItem, Direction, Prf, big, p_block};

/// Largest radix^v the fast path takes: `b = ⌈⌈v·log2 radix⌉/8⌉ ≤ 12` holds exactly when
/// radix^v ≤ 2^96.
const MAX_HALF_DOMAIN: u128 = 1 << 96;

/// Most values processed in lock step by the batch path (VAES-512 encrypts 64 blocks at once;
/// AES-NI 8).
const MAX_LANES: usize = 64;

/// Everything about one (radix, length, tweak length) that the rounds need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Shape {
    radix: u32,
    u: usize,
    b: usize,
    d: usize,
    pow_u: Modulus,
    pow_v: Modulus,
    p: [u8; 16],
    /// Length of Q (Algorithm 7 step 6.i): t + pad + 1 + b, a multiple of 16.
    q_len: usize,
}

impl Shape {
    /// The fast-path shape, or `None` when the input needs the general path.
    pub(super) fn new(radix: u32, n: usize, t: usize) -> Option<Shape> {
        let u = n / 2;
        let v = n - u;
        let pow_v = pow_bounded(radix, v)?;
        let pow_u = pow_bounded(radix, u)?;
        // Step 3: b = ⌈⌈v·log2(radix)⌉/8⌉, computed exactly: ⌈v·log2 radix⌉ is the bit length
        // of radix^v − 1 (no floating point, see Wycheproof's note on rounding).
        let bits = (128 - (pow_v - 1).leading_zeros()) as usize;
        let b = bits.div_ceil(8);
        debug_assert!(b <= 12);
        let d = 4 * b.div_ceil(4) + 4;
        // Step 6.i: Q = T ‖ [0]^((−t−b−1) mod 16) ‖ [i]¹ ‖ [NUM(B)]^b.
        let pad = (16 - (t + b + 1) % 16) % 16;
        Some(Shape {
            radix,
            u,
            b,
            d,
            pow_u: Modulus::new(pow_u),
            pow_v: Modulus::new(pow_v),
            p: p_block(radix, u, n, t),
            q_len: t + pad + 1 + b,
        })
    }

    /// Number of Q's blocks before its last one (all made of tweak bytes and zero padding).
    fn q_prefix_blocks(&self) -> usize {
        self.q_len / 16 - 1
    }

    /// Byte `k` of Q's constant part (the tweak, then zero padding).
    #[inline(always)]
    fn q_byte(tweak: &[u8], k: usize) -> u8 {
        tweak.get(k).copied().unwrap_or(0)
    }

    /// The last block of `P ‖ Q` with its constant bytes filled in (the variable bytes zero),
    /// XORed with the CBC-MAC state before it: one round is then `AES(base ⊕ [i] ⊕ NUM(B))`.
    #[inline(always)]
    fn last_base(&self, state: &[u8; 16], tweak: &[u8]) -> u128 {
        let mut base = *state;
        let start = self.q_len - 16;
        for (k, byte) in base.iter_mut().enumerate().take(15 - self.b) {
            *byte ^= Self::q_byte(tweak, start + k);
        }
        u128::from_be_bytes(base)
    }

    /// XORs Q's prefix block `j` into `state`.
    #[inline(always)]
    fn xor_q_block(state: &mut [u8; 16], tweak: &[u8], j: usize) {
        for (k, byte) in state.iter_mut().enumerate() {
            *byte ^= Self::q_byte(tweak, 16 * j + k);
        }
    }

    /// The round-`i` input block: base ⊕ ([i]¹ ‖ NUM(B) in b bytes) at the block's end.
    /// Computed on a `u128` (the block read big-endian): NUM(B) < 2^(8b) is exactly the last b
    /// bytes, and [i] the byte before them. One wide XOR instead of a byte loop, which also
    /// avoids a store-forwarding stall on the block AES just wrote.
    #[inline(always)]
    fn round_input(&self, base: u128, i: u8, num: u128) -> [u8; 16] {
        (base ^ (u128::from(i) << (8 * self.b)) ^ num).to_be_bytes()
    }

    /// y = NUM(S), S the first d bytes of the round's AES output (step 6.iii–iv).
    #[inline(always)]
    fn y(&self, r: &[u8; 16]) -> u128 {
        u128::from_be_bytes(*r) >> (8 * (16 - self.d))
    }

    /// radix^m for round i (step 6.v: m = u for even i, v for odd i).
    #[inline(always)]
    fn modulus(&self, i: u8) -> &Modulus {
        if i.is_multiple_of(2) {
            &self.pow_u
        } else {
            &self.pow_v
        }
    }
}

/// radix^e if it is at most [`MAX_HALF_DOMAIN`].
fn pow_bounded(radix: u32, e: usize) -> Option<u128> {
    let mut acc: u128 = 1;
    for _ in 0..e {
        acc = acc.checked_mul(u128::from(radix))?;
        if acc > MAX_HALF_DOMAIN {
            return None;
        }
    }
    Some(acc)
}

/// A modulus radix^m with its precomputed reciprocal, so that `y mod m` for a 64-bit `y` (every
/// value up to 19 decimal digits) takes two multiplications instead of a hardware division.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Modulus {
    m: u128,
    /// ⌊(2^64 − 1) / m⌋ when m < 2^64, else 0 (unused).
    inv: u64,
}

impl Modulus {
    fn new(m: u128) -> Modulus {
        let inv = u64::try_from(m).map_or(0, |m64| u64::MAX / m64);
        Modulus { m, inv }
    }

    /// y mod m.
    #[inline(always)]
    fn rem(&self, y: u128) -> u128 {
        if let (Ok(y64), Ok(m64)) = (u64::try_from(y), u64::try_from(self.m)) {
            // Barrett reduction: q underestimates ⌊y/m⌋ by at most 2.
            let q = ((u128::from(y64) * u128::from(self.inv)) >> 64) as u64;
            let mut r = y64 - q * m64;
            while r >= m64 {
                r -= m64;
            }
            u128::from(r)
        } else {
            y % self.m
        }
    }
}

/// One encryption round: (A, B) → (B, (A + y) mod radix^m) (step 6.vi–ix).
#[inline(always)]
fn enc_step(a: &mut u128, b: &mut u128, y: u128, m: &Modulus) {
    let (r, m) = (m.rem(y), m.m);
    let mut c = *a + r;
    if c >= m {
        c -= m;
    }
    *a = *b;
    *b = c;
}

/// One decryption round: (A, B) → ((B − y) mod radix^m, A) (Algorithm 8 step 6.vi–ix).
#[inline(always)]
fn dec_step(a: &mut u128, b: &mut u128, y: u128, m: &Modulus) {
    let (r, m) = (m.rem(y), m.m);
    let mut c = *b + m - r;
    if c >= m {
        c -= m;
    }
    *b = *a;
    *a = c;
}

/// NUM_radix(X): the numerals read as a big-endian number (§4.5).
#[inline(always)]
fn num(radix: u32, xs: &[u16]) -> u128 {
    let r = u128::from(radix);
    xs.iter().fold(0u128, |acc, &x| acc * r + u128::from(x))
}

/// STR^m_radix(x): x written as `out.len()` numerals (§4.5).
#[inline(always)]
fn write_str(radix: u32, x: u128, out: &mut [u16]) {
    // Numerals are < radix ≤ 2^16, so the `as u16` casts below never truncate.
    if let Ok(mut y) = u64::try_from(x) {
        if radix == 10 {
            // A constant divisor compiles to a multiplication: the common decimal case.
            for o in out.iter_mut().rev() {
                *o = (y % 10) as u16;
                y /= 10;
            }
        } else {
            let r = u64::from(radix);
            for o in out.iter_mut().rev() {
                *o = (y % r) as u16;
                y /= r;
            }
        }
    } else {
        let mut y = x;
        let r = u128::from(radix);
        for o in out.iter_mut().rev() {
            *o = (y % r) as u16;
            y /= r;
        }
    }
}

/// One FF1 call on the fast path. Inputs are already validated.
pub(super) fn run<P: Prf>(prf: &P, shape: &Shape, dir: Direction, tweak: &[u8], xs: &mut [u16]) {
    // The CBC-MAC of P ‖ (Q without its last block): the same in all ten rounds.
    let mut state = shape.p;
    prf.block(&mut state);
    for j in 0..shape.q_prefix_blocks() {
        Shape::xor_q_block(&mut state, tweak, j);
        prf.block(&mut state);
    }
    let base = shape.last_base(&state, tweak);

    let (left, right) = xs.split_at_mut(shape.u);
    let mut a = num(shape.radix, left);
    let mut b = num(shape.radix, right);
    match dir {
        Direction::Encrypt => {
            for i in 0..10u8 {
                let mut x = shape.round_input(base, i, b);
                prf.block(&mut x);
                enc_step(&mut a, &mut b, shape.y(&x), shape.modulus(i));
            }
        }
        Direction::Decrypt => {
            for i in (0..10u8).rev() {
                let mut x = shape.round_input(base, i, a);
                prf.block(&mut x);
                dec_step(&mut a, &mut b, shape.y(&x), shape.modulus(i));
            }
        }
    }
    write_str(shape.radix, a, left);
    write_str(shape.radix, b, right);
}

/// Cycle walking on the fast path: the Feistel network again and again on the same `u128`
/// halves, the per-call constants computed once; the numerals are written out after each step
/// for `accept`. Returns the number of steps when `accept` approves.
pub(super) fn walk<P: Prf>(
    prf: &P,
    shape: &Shape,
    dir: Direction,
    tweak: &[u8],
    xs: &mut [u16],
    max_steps: u32,
    accept: &mut impl FnMut(&[u16]) -> bool,
) -> Option<u32> {
    let mut state = shape.p;
    prf.block(&mut state);
    for j in 0..shape.q_prefix_blocks() {
        Shape::xor_q_block(&mut state, tweak, j);
        prf.block(&mut state);
    }
    let base = shape.last_base(&state, tweak);
    let (mut a, mut b) = {
        let (left, right) = xs.split_at(shape.u);
        (num(shape.radix, left), num(shape.radix, right))
    };
    for step in 1..=max_steps {
        match dir {
            Direction::Encrypt => {
                for i in 0..10u8 {
                    let mut x = shape.round_input(base, i, b);
                    prf.block(&mut x);
                    enc_step(&mut a, &mut b, shape.y(&x), shape.modulus(i));
                }
            }
            Direction::Decrypt => {
                for i in (0..10u8).rev() {
                    let mut x = shape.round_input(base, i, a);
                    prf.block(&mut x);
                    dec_step(&mut a, &mut b, shape.y(&x), shape.modulus(i));
                }
            }
        }
        let (left, right) = xs.split_at_mut(shape.u);
        write_str(shape.radix, a, left);
        write_str(shape.radix, b, right);
        if accept(xs) {
            return Some(step);
        }
    }
    None
}

/// A batch: values of the same shape go through the rounds in lock step, so each round's AES
/// calls for up to [`MAX_LANES`] values run through the backend's parallel path. Values that
/// need the general path run one by one.
pub(super) fn run_batch<P: Prf>(prf: &P, radix: u32, dir: Direction, items: &mut [BatchItem<'_>]) {
    // Group by shape (length, tweak length); the shape is computed once per group.
    let keys: Vec<(usize, usize)> = items
        .iter()
        .map(|it| (it.numerals.len(), it.tweak.len()))
        .collect();
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| keys[i]);
    let lanes = prf.width().clamp(8, MAX_LANES);
    let mut start = 0;
    while start < order.len() {
        let (n, t) = keys[order[start]];
        let mut end = start + 1;
        while end < order.len() && keys[order[end]] == (n, t) {
            end += 1;
        }
        match Shape::new(radix, n, t) {
            Some(shape) => {
                for chunk in order[start..end].chunks(lanes) {
                    run_lanes(prf, &shape, dir, items, chunk);
                }
            }
            None => {
                for &i in &order[start..end] {
                    let item = &mut items[i];
                    big::run(prf, radix, dir, item.tweak, item.numerals);
                }
            }
        }
        start = end;
    }
}

/// Up to [`MAX_LANES`] values of one shape, in lock step.
fn run_lanes<P: Prf>(
    prf: &P,
    shape: &Shape,
    dir: Direction,
    items: &mut [BatchItem<'_>],
    idx: &[usize],
) {
    let k = idx.len();
    debug_assert!(k <= MAX_LANES);
    let mut blocks = [[0u8; 16]; MAX_LANES];
    let mut base = [0u128; MAX_LANES];
    let mut a = [0u128; MAX_LANES];
    let mut b = [0u128; MAX_LANES];

    // P is the same for every lane: encrypt it once.
    let mut p = shape.p;
    prf.block(&mut p);
    blocks[..k].fill(p);
    for j in 0..shape.q_prefix_blocks() {
        for (l, &i) in idx.iter().enumerate() {
            Shape::xor_q_block(&mut blocks[l], items[i].tweak, j);
        }
        prf.blocks(&mut blocks[..k]);
    }
    for (l, &i) in idx.iter().enumerate() {
        base[l] = shape.last_base(&blocks[l], items[i].tweak);
        let (left, right) = items[i].numerals.split_at(shape.u);
        a[l] = num(shape.radix, left);
        b[l] = num(shape.radix, right);
    }

    let rounds: [u8; 10] = match dir {
        Direction::Encrypt => [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        Direction::Decrypt => [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
    };
    for i in rounds {
        let m = shape.modulus(i);
        for l in 0..k {
            let src = if dir == Direction::Encrypt {
                b[l]
            } else {
                a[l]
            };
            blocks[l] = shape.round_input(base[l], i, src);
        }
        prf.blocks(&mut blocks[..k]);
        for l in 0..k {
            let y = shape.y(&blocks[l]);
            match dir {
                Direction::Encrypt => enc_step(&mut a[l], &mut b[l], y, m),
                Direction::Decrypt => dec_step(&mut a[l], &mut b[l], y, m),
            }
        }
    }
    for (l, &i) in idx.iter().enumerate() {
        let (left, right) = items[i].numerals.split_at_mut(shape.u);
        write_str(shape.radix, a[l], left);
        write_str(shape.radix, b[l], right);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_path_bounds() {
        // 16 decimal digits: v = 8, 10^8 < 2^27, b = 4, d = 8.
        let s = Shape::new(10, 16, 0).unwrap();
        assert_eq!((s.b, s.d, s.q_len), (4, 8, 16));
        // radix 2^16, v = 6: 2^96 exactly: b = 12, d = 16, still fast.
        let s = Shape::new(65536, 12, 3).unwrap();
        assert_eq!((s.b, s.d), (12, 16));
        // One more numeral in v: general path.
        assert!(Shape::new(65536, 13, 0).is_none());
        // 57 decimal digits: v = 29 → 10^29 < 2^96 (≈ 7.9·10^28)? no: general path.
        assert!(Shape::new(10, 58, 0).is_none());
        assert!(Shape::new(10, 56, 0).is_some());
    }

    #[test]
    fn barrett_matches_division() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for m in [
            2u128,
            3,
            10,
            999_999,
            1_000_000,
            10u128.pow(9),
            (1 << 63) + 1,
            u64::MAX as u128,
        ] {
            let md = Modulus::new(m);
            for y in [
                0u128,
                1,
                m - 1,
                m,
                m + 1,
                u64::MAX as u128,
                (u64::MAX - 1) as u128,
            ] {
                assert_eq!(md.rem(y), y % m, "{y} mod {m}");
            }
            for _ in 0..10_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                assert_eq!(md.rem(u128::from(x)), u128::from(x) % m);
            }
            // Values past 64 bits take the plain path.
            assert_eq!(md.rem(u128::MAX), u128::MAX % m);
        }
    }

    #[test]
    fn str_and_num_invert() {
        let mut out = [0u16; 12];
        for radix in [2u32, 10, 36, 62, 256, 65535] {
            let x = 123_456_789_012_345 % u128::from(radix).pow(3) * 7 + 1;
            let n = (128 - x.leading_zeros()) as usize;
            let len = (n / (32 - radix.leading_zeros()) as usize + 1).min(12);
            let x = x % u128::from(radix).pow(len as u32);
            write_str(radix, x, &mut out[..len]);
            assert_eq!(num(radix, &out[..len]), x);
        }
    }
}
