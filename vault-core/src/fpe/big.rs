//! FF1's general path: Algorithms 7 and 8 of SP 800-38G §6.2, step by step, with
//! arbitrary-precision integers. Used when a half's value does not fit the fast path (long
//! alphanumeric strings, radix-65536 text); it favours plain correctness over speed.

use num_bigint::BigUint;

use super::{Direction, Prf, p_block};

/// One FF1 call on the general path. Inputs are already validated.
pub(super) fn run<P: Prf>(prf: &P, radix: u32, dir: Direction, tweak: &[u8], xs: &mut [u16]) {
    let n = xs.len();
    let t = tweak.len();
    let u = n / 2;
    let v = n - u;
    let pow_u = BigUint::from(radix).pow(u as u32);
    let pow_v = BigUint::from(radix).pow(v as u32);
    // Step 3, exactly: ⌈v·log2 radix⌉ is the bit length of radix^v − 1.
    let bits = (&pow_v - 1u32).bits() as usize;
    let b = bits.div_ceil(8);
    // Step 4.
    let d = 4 * b.div_ceil(4) + 4;
    // Step 5.
    let p = p_block(radix, u, n, t);
    // Step 6.i: Q = T ‖ [0]^((−t−b−1) mod 16) ‖ [i]¹ ‖ [NUM(B)]^b.
    let pad = (16 - (t + b + 1) % 16) % 16;
    let mut q = Vec::with_capacity(t + pad + 1 + b);
    q.extend_from_slice(tweak);
    q.resize(t + pad + 1 + b, 0);
    let i_pos = t + pad;

    // Step 2.
    let (left, right) = xs.split_at_mut(u);
    let mut a = num(radix, left);
    let mut bn = num(radix, right);

    let mut round = |i: u8, x: &BigUint| -> BigUint {
        q[i_pos] = i;
        let bytes = x.to_bytes_be();
        let tail = &mut q[i_pos + 1..];
        tail.fill(0);
        // x < radix^v < 256^b, so it fits in b bytes.
        tail[b - bytes.len()..].copy_from_slice(&bytes);
        // Step 6.ii: R = PRF(P ‖ Q), a CBC-MAC with a zero IV.
        let mut r = p;
        prf.block(&mut r);
        for chunk in q.chunks(16) {
            for (rb, qb) in r.iter_mut().zip(chunk) {
                *rb ^= qb;
            }
            prf.block(&mut r);
        }
        // Step 6.iii: S = the first d bytes of R ‖ CIPH(R ⊕ [1]¹⁶) ‖ CIPH(R ⊕ [2]¹⁶) ‖ …
        let mut s = Vec::with_capacity(d.div_ceil(16) * 16);
        s.extend_from_slice(&r);
        let mut j: u128 = 1;
        while s.len() < d {
            let mut blk = (u128::from_be_bytes(r) ^ j).to_be_bytes();
            prf.block(&mut blk);
            s.extend_from_slice(&blk);
            j += 1;
        }
        // Step 6.iv: y = NUM(S).
        BigUint::from_bytes_be(&s[..d])
    };

    match dir {
        Direction::Encrypt => {
            for i in 0..10u8 {
                let y = round(i, &bn);
                let m = if i % 2 == 0 { &pow_u } else { &pow_v };
                // Steps 6.vi–ix.
                let c = (&a + y) % m;
                a = std::mem::replace(&mut bn, c);
            }
        }
        Direction::Decrypt => {
            for i in (0..10u8).rev() {
                let y = round(i, &a);
                let m = if i % 2 == 0 { &pow_u } else { &pow_v };
                // Algorithm 8 steps 6.vi–ix: c = (NUM(B) − y) mod radix^m.
                let c = (&bn + m - (y % m)) % m;
                bn = std::mem::replace(&mut a, c);
            }
        }
    }
    write_str(radix, a, left);
    write_str(radix, bn, right);
}

/// NUM_radix(X) (§4.5).
fn num(radix: u32, xs: &[u16]) -> BigUint {
    let mut acc = BigUint::from(0u32);
    for &x in xs {
        acc = acc * radix + u32::from(x);
    }
    acc
}

/// STR^m_radix(x) (§4.5), into `out`.
fn write_str(radix: u32, mut x: BigUint, out: &mut [u16]) {
    for o in out.iter_mut().rev() {
        let r = &x % radix;
        // r < radix ≤ 2^16.
        *o = r.iter_u32_digits().next().unwrap_or(0) as u16;
        x /= radix;
    }
}
