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
    /// radix^v ≤ 2^32: the rounds run on `u64` halves ([`Narrow`]).
    narrow: bool,
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
            narrow: pow_v <= 1 << 32,
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

/// The reciprocal of `m` from [`DECIMAL_INV`] when `m` is a power of ten.
#[inline(always)]
fn decimal_inv(m: u64) -> Option<u64> {
    // 10^k = 2^k · 5^k has exactly k trailing zero bits: one candidate, checked exactly.
    let k = m.trailing_zeros() as usize;
    (k < 20 && 10u64.checked_pow(k as u32) == Some(m)).then(|| DECIMAL_INV[k])
}

/// radix^e if it is at most [`MAX_HALF_DOMAIN`].
fn pow_bounded(radix: u32, e: usize) -> Option<u128> {
    // The common case without 128-bit multiplications.
    if let Some(p) = u64::from(radix).checked_pow(e as u32) {
        return (u128::from(p) <= MAX_HALF_DOMAIN).then_some(u128::from(p));
    }
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
    /// `m` when it is below 2^64, else 0 (unused: such a shape is never narrow).
    m64: u64,
    /// ⌊(2^64 − 1) / m⌋ when m < 2^64, else 0 (unused).
    inv: u64,
}

/// ⌊(2^64 − 1) / 10^k⌋ for k = 0..=19, computed at compile time: decimal shapes (every card
/// number, SSN and phone number) then set up without a 64-bit division, which costs more than
/// a round of FF1's arithmetic.
const DECIMAL_INV: [u64; 20] = {
    let mut t = [0u64; 20];
    let mut p: u64 = 1;
    let mut k = 0;
    while k < 20 {
        t[k] = u64::MAX / p;
        if k < 19 {
            p *= 10;
        }
        k += 1;
    }
    t
};

impl Modulus {
    fn new(m: u128) -> Modulus {
        let m64 = u64::try_from(m).unwrap_or(0);
        let inv = match m64 {
            0 => 0,
            _ => decimal_inv(m64).unwrap_or(u64::MAX / m64),
        };
        Modulus { m, m64, inv }
    }

    /// y mod m for m < 2^64, by Barrett reduction. With inv = ⌊(2^64 − 1)/m⌋ ≥ 2^64/m − 1,
    /// q = ⌊y·inv / 2^64⌋ > y/m − y/2^64 − 1 > y/m − 2, so q underestimates ⌊y/m⌋ by at most
    /// one and a single conditional subtraction finishes it (no loop, no branch on the data).
    #[inline(always)]
    fn rem64(&self, y: u64) -> u64 {
        let q = ((u128::from(y) * u128::from(self.inv)) >> 64) as u64;
        reduce_once(y - q * self.m64, self.m64)
    }

    /// y mod m.
    #[inline(always)]
    fn rem(&self, y: u128) -> u128 {
        match u64::try_from(y) {
            Ok(y64) if self.m64 != 0 => u128::from(self.rem64(y64)),
            _ => y % self.m,
        }
    }
}

/// The arithmetic of one shape's rounds, on the integer type its halves fit: [`Narrow`] (`u64`)
/// or [`Wide`] (`u128`). Generic so that each compiles to its own loop: the narrow one has no
/// variable shifts and no 128-bit multiplications on the path from one AES call to the next,
/// which is what bounds a round once AES itself is inlined.
trait Arith {
    type Int: Copy + Default;
    /// NUM_radix(X) (§4.5).
    fn num(radix: u32, xs: &[u16]) -> Self::Int;
    /// STR^m_radix(x) into `out.len()` numerals (§4.5).
    fn write(radix: u32, x: Self::Int, out: &mut [u16]);
    /// The round-`i` input block: base ⊕ ([i]¹ ‖ NUM(B) in b bytes) at the block's end.
    fn input(shape: &Shape, base: u128, i: u8, half: Self::Int) -> [u8; 16];
    /// One encryption round from the round's AES output `r`: (A, B) → (B, (A + y) mod radix^m)
    /// (step 6.iii–ix).
    fn enc_step(shape: &Shape, i: u8, r: &[u8; 16], a: &mut Self::Int, b: &mut Self::Int);
    /// One decryption round: (A, B) → ((B − y) mod radix^m, A) (Algorithm 8 step 6.vi–ix).
    fn dec_step(shape: &Shape, i: u8, r: &[u8; 16], a: &mut Self::Int, b: &mut Self::Int);
}

/// Halves below 2^32 (radix^v ≤ 2^32, so b ≤ 4 and d = 8): every card number, SSN and phone
/// number, and each 6-digit step of the PAN template's cycle walk. y is the first eight bytes
/// of the AES output as they are.
struct Narrow;

impl Arith for Narrow {
    type Int = u64;

    #[inline(always)]
    fn num(radix: u32, xs: &[u16]) -> u64 {
        let r = u64::from(radix);
        xs.iter().fold(0u64, |acc, &x| acc * r + u64::from(x))
    }

    #[inline(always)]
    fn write(radix: u32, x: u64, out: &mut [u16]) {
        write_u64(radix, x, out);
    }

    #[inline(always)]
    fn input(shape: &Shape, base: u128, i: u8, half: u64) -> [u8; 16] {
        // [i] and NUM(B) both sit in the block's last eight bytes (b ≤ 4).
        (base ^ u128::from((u64::from(i) << (8 * shape.b)) ^ half)).to_be_bytes()
    }

    /// (A + y) mod m as one reduction of A + y: this sits on the dependency chain from one AES
    /// call to the next (a round is latency-bound), and one Barrett step is shorter than
    /// reducing y and then the sum. A + y overflows 64 bits with probability below 2^−32; that
    /// case (a branch predicted never taken) reduces y first.
    #[inline(always)]
    fn enc_step(shape: &Shape, i: u8, r: &[u8; 16], a: &mut u64, b: &mut u64) {
        let m = shape.modulus(i);
        let y = first_u64(r);
        let c = match y.checked_add(*a) {
            Some(sum) => m.rem64(sum),
            None => reduce_once(m.rem64(y) + *a, m.m64),
        };
        *a = *b;
        *b = c;
    }

    #[inline(always)]
    fn dec_step(shape: &Shape, i: u8, r: &[u8; 16], a: &mut u64, b: &mut u64) {
        let m = shape.modulus(i);
        let y = m.rem64(first_u64(r));
        // (B − y) mod m: B − y, or B − y + m when that went below zero.
        let c = if *b >= y { *b - y } else { *b + m.m64 - y };
        *b = *a;
        *a = c;
    }
}

/// Halves up to 2^96: y is the first d ≤ 16 bytes of the AES output.
struct Wide;

impl Arith for Wide {
    type Int = u128;

    #[inline(always)]
    fn num(radix: u32, xs: &[u16]) -> u128 {
        let r = u128::from(radix);
        xs.iter().fold(0u128, |acc, &x| acc * r + u128::from(x))
    }

    #[inline(always)]
    fn write(radix: u32, x: u128, out: &mut [u16]) {
        match u64::try_from(x) {
            Ok(x) => write_u64(radix, x, out),
            Err(_) => {
                let mut y = x;
                let r = u128::from(radix);
                // Numerals are < radix ≤ 2^16, so the `as u16` cast never truncates.
                for o in out.iter_mut().rev() {
                    *o = (y % r) as u16;
                    y /= r;
                }
            }
        }
    }

    /// Computed on a `u128` (the block read big-endian): NUM(B) < 2^(8b) is exactly the last b
    /// bytes, and [i] the byte before them. One wide XOR instead of a byte loop, which also
    /// avoids a store-forwarding stall on the block AES just wrote.
    #[inline(always)]
    fn input(shape: &Shape, base: u128, i: u8, half: u128) -> [u8; 16] {
        (base ^ (u128::from(i) << (8 * shape.b)) ^ half).to_be_bytes()
    }

    #[inline(always)]
    fn enc_step(shape: &Shape, i: u8, r: &[u8; 16], a: &mut u128, b: &mut u128) {
        let m = shape.modulus(i);
        let mut c = *a + m.rem(shape.y(r));
        if c >= m.m {
            c -= m.m;
        }
        *a = *b;
        *b = c;
    }

    #[inline(always)]
    fn dec_step(shape: &Shape, i: u8, r: &[u8; 16], a: &mut u128, b: &mut u128) {
        let m = shape.modulus(i);
        let mut c = *b + m.m - m.rem(shape.y(r));
        if c >= m.m {
            c -= m.m;
        }
        *b = *a;
        *a = c;
    }
}

/// x mod m for x < 2m, without a branch: when x < m, x − m wraps past x and `min` keeps x.
/// (A branch here is taken at random, data-dependent, and mispredicts half the time in the
/// batch path's lane loops.)
#[inline(always)]
fn reduce_once(x: u64, m: u64) -> u64 {
    x.min(x.wrapping_sub(m))
}

/// The first eight bytes of a block, big-endian.
#[inline(always)]
fn first_u64(r: &[u8; 16]) -> u64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&r[..8]);
    u64::from_be_bytes(head)
}

/// STR^m_radix(x) for x < 2^64: `out.len()` numerals (§4.5).
#[inline(always)]
fn write_u64(radix: u32, mut y: u64, out: &mut [u16]) {
    // Numerals are < radix ≤ 2^16, so the `as u16` casts below never truncate.
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
}

/// The CBC-MAC of P ‖ (Q without its last block), folded into the last block's constant
/// bytes: the same in all ten rounds, so computed once per call (or per walk).
#[inline(always)]
fn round_base<P: Prf>(prf: &P, shape: &Shape, tweak: &[u8]) -> u128 {
    let mut state = shape.p;
    prf.block(&mut state);
    for j in 0..shape.q_prefix_blocks() {
        Shape::xor_q_block(&mut state, tweak, j);
        prf.block(&mut state);
    }
    shape.last_base(&state, tweak)
}

/// The ten rounds of one Feistel network on the halves `a`, `b`.
#[inline(always)]
fn feistel<P: Prf, A: Arith>(
    prf: &P,
    shape: &Shape,
    dir: Direction,
    base: u128,
    a: &mut A::Int,
    b: &mut A::Int,
) {
    match dir {
        Direction::Encrypt => {
            for i in 0..10u8 {
                let mut x = A::input(shape, base, i, *b);
                prf.block(&mut x);
                A::enc_step(shape, i, &x, a, b);
            }
        }
        Direction::Decrypt => {
            for i in (0..10u8).rev() {
                let mut x = A::input(shape, base, i, *a);
                prf.block(&mut x);
                A::dec_step(shape, i, &x, a, b);
            }
        }
    }
}

/// One FF1 call on the fast path. Inputs are already validated.
#[inline(always)]
pub(super) fn run<P: Prf>(prf: &P, shape: &Shape, dir: Direction, tweak: &[u8], xs: &mut [u16]) {
    if shape.narrow {
        run_with::<P, Narrow>(prf, shape, dir, tweak, xs);
    } else {
        run_with::<P, Wide>(prf, shape, dir, tweak, xs);
    }
}

#[inline(always)]
fn run_with<P: Prf, A: Arith>(
    prf: &P,
    shape: &Shape,
    dir: Direction,
    tweak: &[u8],
    xs: &mut [u16],
) {
    let base = round_base(prf, shape, tweak);
    let (left, right) = xs.split_at_mut(shape.u);
    let mut a = A::num(shape.radix, left);
    let mut b = A::num(shape.radix, right);
    feistel::<P, A>(prf, shape, dir, base, &mut a, &mut b);
    A::write(shape.radix, a, left);
    A::write(shape.radix, b, right);
}

/// Cycle walking on the fast path: the Feistel network again and again on the same integer
/// halves, the per-call constants computed once; the numerals are written out after each step
/// for `accept`. Returns the number of steps when `accept` approves.
#[inline(always)]
pub(super) fn walk<P: Prf>(
    prf: &P,
    shape: &Shape,
    dir: Direction,
    tweak: &[u8],
    xs: &mut [u16],
    max_steps: u32,
    accept: &mut impl FnMut(&[u16]) -> bool,
) -> Option<u32> {
    if shape.narrow {
        walk_with::<P, Narrow>(prf, shape, dir, tweak, xs, max_steps, accept)
    } else {
        walk_with::<P, Wide>(prf, shape, dir, tweak, xs, max_steps, accept)
    }
}

#[inline(always)]
fn walk_with<P: Prf, A: Arith>(
    prf: &P,
    shape: &Shape,
    dir: Direction,
    tweak: &[u8],
    xs: &mut [u16],
    max_steps: u32,
    accept: &mut impl FnMut(&[u16]) -> bool,
) -> Option<u32> {
    let base = round_base(prf, shape, tweak);
    let (mut a, mut b) = {
        let (left, right) = xs.split_at(shape.u);
        (A::num(shape.radix, left), A::num(shape.radix, right))
    };
    for step in 1..=max_steps {
        feistel::<P, A>(prf, shape, dir, base, &mut a, &mut b);
        let (left, right) = xs.split_at_mut(shape.u);
        A::write(shape.radix, a, left);
        A::write(shape.radix, b, right);
        if accept(xs) {
            return Some(step);
        }
    }
    None
}

/// A batch: values of the same shape go through the rounds in lock step, so each round's AES
/// calls for up to [`MAX_LANES`] values run through the backend's parallel path. Values that
/// need the general path run one by one.
#[inline(always)]
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
                    if shape.narrow {
                        run_lanes::<P, Narrow>(prf, &shape, dir, items, chunk);
                    } else {
                        run_lanes::<P, Wide>(prf, &shape, dir, items, chunk);
                    }
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
#[inline(always)]
fn run_lanes<P: Prf, A: Arith>(
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
    let mut a = [A::Int::default(); MAX_LANES];
    let mut b = [A::Int::default(); MAX_LANES];

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
        a[l] = A::num(shape.radix, left);
        b[l] = A::num(shape.radix, right);
    }

    // One loop per direction, so that the lane loops carry no branch.
    let (blocks, base, a, b) = (&mut blocks[..k], &base[..k], &mut a[..k], &mut b[..k]);
    match dir {
        Direction::Encrypt => {
            for i in 0..10u8 {
                for ((x, &base), &b) in blocks.iter_mut().zip(base).zip(b.iter()) {
                    *x = A::input(shape, base, i, b);
                }
                prf.blocks(blocks);
                for ((x, a), b) in blocks.iter().zip(a.iter_mut()).zip(b.iter_mut()) {
                    A::enc_step(shape, i, x, a, b);
                }
            }
        }
        Direction::Decrypt => {
            for i in (0..10u8).rev() {
                for ((x, &base), &a) in blocks.iter_mut().zip(base).zip(a.iter()) {
                    *x = A::input(shape, base, i, a);
                }
                prf.blocks(blocks);
                for ((x, a), b) in blocks.iter().zip(a.iter_mut()).zip(b.iter_mut()) {
                    A::dec_step(shape, i, x, a, b);
                }
            }
        }
    }
    for (l, &i) in idx.iter().enumerate() {
        let (left, right) = items[i].numerals.split_at_mut(shape.u);
        A::write(shape.radix, a[l], left);
        A::write(shape.radix, b[l], right);
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

    /// The narrow rounds against 128-bit arithmetic, including A + y past 2^64 (a branch the
    /// random tests reach with probability 2^−32 per round).
    #[test]
    fn narrow_steps_match_wide_arithmetic() {
        let shape = Shape::new(10, 16, 0).unwrap();
        assert!(shape.narrow);
        let m = 100_000_000u64;
        for y in [
            0u64,
            1,
            m - 1,
            m,
            u64::MAX - m,
            u64::MAX - 1,
            u64::MAX,
            0x9E37_79B9_7F4A_7C15,
        ] {
            let mut r = [0u8; 16];
            r[..8].copy_from_slice(&y.to_be_bytes());
            for a in [0u64, 1, m / 2, m - 1] {
                let (mut a1, mut b1) = (a, 7u64);
                Narrow::enc_step(&shape, 0, &r, &mut a1, &mut b1);
                assert_eq!(
                    (a1, u128::from(b1)),
                    (7, (u128::from(a) + u128::from(y)) % u128::from(m))
                );
                let (mut a2, mut b2) = (9u64, a);
                Narrow::dec_step(&shape, 0, &r, &mut a2, &mut b2);
                let want =
                    (u128::from(a) + u128::from(m) - u128::from(y) % u128::from(m)) % u128::from(m);
                assert_eq!((u128::from(a2), b2), (want, 9), "y {y} a {a}");
            }
        }
    }

    #[test]
    fn decimal_reciprocals_match_division() {
        for k in 0..20u32 {
            let m = 10u64.pow(k);
            assert_eq!(Modulus::new(u128::from(m)).inv, u64::MAX / m, "10^{k}");
        }
        // Not powers of ten, though divisible by 2^k: the division, not the table.
        for m in [2u64, 4, 8, 16, 1 << 19, 3 * 1024] {
            assert_eq!(Modulus::new(u128::from(m)).inv, u64::MAX / m);
        }
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
                assert_eq!(u128::from(md.rem64(x)), u128::from(x) % m);
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
            Wide::write(radix, x, &mut out[..len]);
            assert_eq!(Wide::num(radix, &out[..len]), x);
            if let Ok(x64) = u64::try_from(x) {
                Narrow::write(radix, x64, &mut out[..len]);
                assert_eq!(Narrow::num(radix, &out[..len]), x64);
            }
        }
    }
}
