//! Primary account numbers: Luhn arithmetic, the kept/encrypted split, Luhn-invalid tokens
//! whose Luhn residue names the key-version slot. The design is in the module docs of
//! [`crate::template`].

use rand::{CryptoRng, Rng};
use zeroize::Zeroizing;

use super::{Error, Tweak, VersionSlot, Walk, check_length, walk};
use crate::fpe::Ff1;

/// Fewest digits a PAN has (ISO/IEC 7812-1).
pub(crate) const MIN_DIGITS: usize = 12;
/// Most digits a PAN has (ISO/IEC 7812-1).
pub(crate) const MAX_DIGITS: usize = 19;
/// Most leading digits a template may keep (PCI DSS 3.4.1: BIN of up to 8 digits).
pub(crate) const MAX_KEEP_FIRST: u8 = 8;
/// Most trailing digits a template may keep (PCI DSS 3.4.1: last 4).
pub(crate) const MAX_KEEP_LAST: u8 = 4;
/// Fewest digits encrypted: 10^6 is FF1's minimum domain (SP 800-38G Rev. 1).
pub(crate) const MIN_MIDDLE: usize = 6;
/// Digits shown by [`super::Template::mask`].
const MASK_REVEAL: usize = 4;

/// Luhn contribution of digit `d` at a doubled position: a permutation of 0..=9.
const DOUBLED: [u8; 10] = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9];
/// Inverse of [`DOUBLED`].
const UNDOUBLED: [u8; 10] = [0, 5, 1, 6, 2, 7, 3, 8, 4, 9];

/// A PAN (or PAN token) parsed: its digits, wiped on drop, and where they sit in the text.
pub(crate) struct Pan<'v> {
    value: &'v str,
    /// Digits as 0..=9.
    digits: Zeroizing<Vec<u8>>,
    /// Byte offset of each digit in `value` (separators sit between them).
    positions: Vec<usize>,
}

/// Lengths only: the digits are the card number (`Zeroizing` wipes, it does not redact).
impl std::fmt::Debug for Pan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pan")
            .field("len", &self.value.len())
            .field("digits", &self.digits.len())
            .finish_non_exhaustive()
    }
}

impl<'v> Pan<'v> {
    /// Parses 12 to 19 digits with single spaces or dashes between them. Does not check Luhn.
    pub(crate) fn parse(value: &'v str) -> Result<Pan<'v>, Error> {
        check_length(value)?;
        let len = value.len();
        let bytes = value.as_bytes();
        let count = bytes.iter().filter(|b| b.is_ascii_digit()).count();
        let mut digits = Zeroizing::new(Vec::with_capacity(count));
        let mut positions = Vec::with_capacity(count);
        let mut after_separator = true;
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'0'..=b'9' => {
                    digits.push(b - b'0');
                    positions.push(i);
                    after_separator = false;
                }
                b' ' | b'-' if !after_separator => after_separator = true,
                b' ' | b'-' => return Err(Error::MisplacedSeparator { len }),
                _ => return Err(Error::CharacterOutsideAlphabet { len }),
            }
        }
        if after_separator {
            return Err(Error::MisplacedSeparator { len });
        }
        if !(MIN_DIGITS..=MAX_DIGITS).contains(&count) {
            return Err(Error::PanLength { digits: count });
        }
        Ok(Pan {
            value,
            digits,
            positions,
        })
    }

    /// Refuses a PAN that fails the Luhn check.
    pub(crate) fn require_luhn_valid(&self) -> Result<(), Error> {
        if luhn(&self.digits) == 0 {
            Ok(())
        } else {
            Err(Error::LuhnCheckFailed {
                len: self.value.len(),
            })
        }
    }

    /// The key-version slot a token carries: its Luhn residue. Refuses a Luhn-valid input.
    pub(crate) fn token_slot(&self) -> Result<VersionSlot, Error> {
        VersionSlot::from_residue(luhn(&self.digits)).ok_or(Error::NotAToken {
            len: self.value.len(),
        })
    }

    /// The digits only, for deterministic fingerprints.
    pub(crate) fn canonical(&self) -> String {
        self.digits.iter().map(|d| char::from(b'0' + d)).collect()
    }

    /// The text with every digit but the last four replaced by `*`, separators kept.
    pub(crate) fn mask(&self) -> String {
        let hide = self.digits.len().saturating_sub(MASK_REVEAL);
        let mut out = self.value.as_bytes().to_vec();
        for &p in &self.positions[..hide] {
            out[p] = b'*';
        }
        // Only ASCII digits were replaced by an ASCII byte.
        String::from_utf8(out).unwrap_or_default()
    }

    /// The text with the current digits written in place.
    fn text(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(self.value.len()));
        self.write_text(&mut out);
        out
    }

    /// The text of a token (nothing to wipe), built in its own allocation.
    fn token_text(&self) -> String {
        let mut out = String::with_capacity(self.value.len());
        self.write_text(&mut out);
        out
    }

    /// Writes the text with the current digits in place into `out`, which has room for it.
    fn write_text(&self, out: &mut String) {
        let mut next = self.positions.iter().zip(self.digits.iter()).peekable();
        for (i, b) in self.value.bytes().enumerate() {
            match next.peek() {
                Some(&(&p, &d)) if p == i => {
                    out.push(char::from(b'0' + d));
                    next.next();
                }
                // `parse` accepted ASCII only.
                _ => out.push(char::from(b)),
            }
        }
    }

    /// Digit index range encrypted: between the kept prefix and the kept suffix. The prefix
    /// shrinks (`keep_first` is a maximum) so that at least [`MIN_MIDDLE`] digits are encrypted.
    fn middle(&self, keep_first: u8, keep_last: u8) -> std::ops::Range<usize> {
        let n = self.digits.len();
        let last = usize::from(keep_last);
        // n ≥ 12 and keep_last ≤ 4 (checked when the template is made), so this is ≥ 2.
        let first = usize::from(keep_first).min(n.saturating_sub(last + MIN_MIDDLE));
        first..n - last
    }

    /// The tweak: template name, key version, kept digits and the number of digits.
    fn tweak(&self, name: &str, version: u32, middle: &std::ops::Range<usize>) -> Tweak {
        // Three fields: the kept prefix (≤ 8 digits), the kept suffix (≤ 4), the digit count.
        let room = 2 + usize::from(MAX_KEEP_FIRST) + 2 + usize::from(MAX_KEEP_LAST) + 2 + 1;
        let mut t = Tweak::with_room(Tweak::PAN, name, version, room);
        t.digit_field(&self.digits[..middle.start]);
        t.digit_field(&self.digits[middle.end..]);
        t.field(&[self.digits.len() as u8]);
        t
    }

    /// Luhn sum of all digits outside `middle`.
    fn fixed_sum(&self, middle: &std::ops::Range<usize>) -> u32 {
        let n = self.digits.len();
        self.digits
            .iter()
            .enumerate()
            .filter(|(i, _)| !middle.contains(i))
            .map(|(i, &d)| u32::from(contribution(d, doubled(n, i))))
            .sum()
    }
}

/// Encrypts a Luhn-valid PAN into a Luhn-invalid token whose residue is the version's slot.
pub(crate) fn encrypt(
    name: &str,
    keep_first: u8,
    keep_last: u8,
    ff1: &Ff1,
    version: u32,
    value: &str,
) -> Result<String, Error> {
    let slot = VersionSlot::of(version)?;
    let mut pan = Pan::parse(value)?;
    pan.require_luhn_valid()?;
    let middle = pan.middle(keep_first, keep_last);
    let tweak = pan.tweak(name, version, &middle);
    let n = pan.digits.len();
    let fixed = pan.fixed_sum(&middle);
    // On the stack (wiped on drop): no allocation per token.
    let mut numerals = Zeroizing::new([0u16; MAX_DIGITS]);
    let x = &mut numerals[..middle.len()];
    for (x, &d) in x.iter_mut().zip(&pan.digits[middle.clone()]) {
        *x = u16::from(d);
    }
    // Cycle walking (SP 800-38G §A.1 style): stay inside V, the middles that keep the PAN
    // Luhn-valid, so the map V → V is a permutation.
    walk(ff1, &tweak, x, Walk::Encrypt, |x| {
        Ok(luhn_valid_with(fixed, x, n, middle.start))
    })?;
    for (d, &v) in pan.digits[middle.clone()].iter_mut().zip(x.iter()) {
        *d = v as u8;
    }
    shift(&mut pan.digits, middle.end - 1, slot.get());
    Ok(pan.token_text())
}

/// Reverses [`encrypt`]: refuses a Luhn-valid input and a token of another version slot.
pub(crate) fn decrypt(
    name: &str,
    keep_first: u8,
    keep_last: u8,
    ff1: &Ff1,
    version: u32,
    token: &str,
) -> Result<Zeroizing<String>, Error> {
    let want = VersionSlot::of(version)?;
    let mut pan = Pan::parse(token)?;
    let slot = pan.token_slot()?;
    if slot != want {
        return Err(Error::VersionSlotMismatch {
            token_slot: slot.get(),
            version,
        });
    }
    let middle = pan.middle(keep_first, keep_last);
    shift(&mut pan.digits, middle.end - 1, 10 - slot.get());
    let tweak = pan.tweak(name, version, &middle);
    let n = pan.digits.len();
    let fixed = pan.fixed_sum(&middle);
    // On the stack (wiped on drop): no allocation per token.
    let mut numerals = Zeroizing::new([0u16; MAX_DIGITS]);
    let x = &mut numerals[..middle.len()];
    for (x, &d) in x.iter_mut().zip(&pan.digits[middle.clone()]) {
        *x = u16::from(d);
    }
    walk(ff1, &tweak, x, Walk::Decrypt, |x| {
        Ok(luhn_valid_with(fixed, x, n, middle.start))
    })?;
    for (d, &v) in pan.digits[middle.clone()].iter_mut().zip(x.iter()) {
        *d = v as u8;
    }
    Ok(pan.text())
}

/// A vaulted token: kept digits kept, the middle random and the whole Luhn-invalid.
pub(crate) fn random_token<R: CryptoRng + ?Sized>(
    keep_first: u8,
    keep_last: u8,
    rng: &mut R,
    value: &str,
) -> Result<String, Error> {
    let mut pan = Pan::parse(value)?;
    pan.require_luhn_valid()?;
    let middle = pan.middle(keep_first, keep_last);
    // Rejection sampling: uniform over the Luhn-invalid middles (9 in 10 are), ~1.1 rounds.
    loop {
        for d in &mut pan.digits[middle.clone()] {
            *d = rng.random_range(0..10u8);
        }
        if luhn(&pan.digits) != 0 {
            return Ok(pan.token_text());
        }
    }
}

/// Whether position `i` of an `n`-digit number is doubled by Luhn (every second digit from the
/// right, the check digit not doubled).
fn doubled(n: usize, i: usize) -> bool {
    (n - 1 - i) % 2 == 1
}

/// Luhn contribution of digit `d`.
fn contribution(d: u8, doubled: bool) -> u8 {
    if doubled { DOUBLED[usize::from(d)] } else { d }
}

/// The digit whose Luhn contribution is `c`.
fn digit_of(c: u8, doubled: bool) -> u8 {
    if doubled {
        UNDOUBLED[usize::from(c)]
    } else {
        c
    }
}

/// Luhn sum mod 10 (0 for a valid PAN).
pub(crate) fn luhn(digits: &[u8]) -> u8 {
    let n = digits.len();
    let sum: u32 = digits
        .iter()
        .enumerate()
        .map(|(i, &d)| u32::from(contribution(d, doubled(n, i))))
        .sum();
    (sum % 10) as u8
}

/// Whether the number is Luhn-valid with `middle` at digits `start..` and the other digits
/// summing to `fixed`.
fn luhn_valid_with(fixed: u32, middle: &[u16], n: usize, start: usize) -> bool {
    let sum: u32 = middle
        .iter()
        .enumerate()
        .map(|(j, &d)| u32::from(contribution(d as u8, doubled(n, start + j))))
        .sum();
    (fixed + sum).is_multiple_of(10)
}

/// Changes the digit at `i` so the Luhn sum grows by `by` (mod 10). A digit's contribution is a
/// permutation of 0..=9, so this is a bijection and `shift(.., 10 - by)` undoes it.
fn shift(digits: &mut [u8], i: usize, by: u8) {
    let dbl = doubled(digits.len(), i);
    let c = (contribution(digits[i], dbl) + by) % 10;
    digits[i] = digit_of(c, dbl);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits(s: &str) -> Vec<u8> {
        s.bytes().map(|b| b - b'0').collect()
    }

    #[test]
    fn luhn_known_values() {
        assert_eq!(luhn(&digits("4111111111111111")), 0);
        assert_eq!(luhn(&digits("79927398713")), 0);
        assert_ne!(luhn(&digits("4111111111111112")), 0);
        assert_eq!(luhn(&digits("5555555555554444")), 0);
    }

    #[test]
    fn doubled_tables_are_inverse_permutations() {
        for d in 0..10u8 {
            assert_eq!(UNDOUBLED[usize::from(DOUBLED[usize::from(d)])], d);
            let two = 2 * d;
            assert_eq!(DOUBLED[usize::from(d)], if two > 9 { two - 9 } else { two });
        }
    }

    #[test]
    fn shift_sets_residue_and_reverses() {
        let original = digits("4111111111111111");
        for i in 0..16 {
            for by in 0..10u8 {
                let mut d = original.clone();
                shift(&mut d, i, by);
                assert_eq!(luhn(&d), by);
                shift(&mut d, i, (10 - by) % 10);
                assert_eq!(d, original);
            }
        }
    }

    #[test]
    fn middle_shrinks_prefix() {
        let mk = |n: usize| "4".repeat(n);
        let cases = [
            (19, 6, 4, 6..15),
            (16, 6, 4, 6..12),
            (16, 8, 4, 6..12),
            (15, 6, 4, 5..11),
            (13, 6, 4, 3..9),
            (12, 6, 4, 2..8),
            (12, 8, 0, 6..12),
            (19, 8, 4, 8..15),
            (16, 0, 0, 0..16),
        ];
        for (n, kf, kl, want) in cases {
            let v = mk(n);
            let p = Pan::parse(&v).unwrap();
            let m = p.middle(kf, kl);
            assert_eq!(m, want, "n={n} kf={kf} kl={kl}");
            assert!(m.len() >= MIN_MIDDLE);
        }
    }

    #[test]
    fn parse_rules() {
        assert!(Pan::parse("4111 1111 1111 1111").is_ok());
        assert!(Pan::parse("4111-1111 1111-1111").is_ok());
        assert_eq!(
            Pan::parse(" 4111111111111111").unwrap_err(),
            Error::MisplacedSeparator { len: 17 }
        );
        assert_eq!(
            Pan::parse("4111111111111111-").unwrap_err(),
            Error::MisplacedSeparator { len: 17 }
        );
        assert_eq!(
            Pan::parse("4111  1111111111111").unwrap_err(),
            Error::MisplacedSeparator { len: 19 }
        );
        assert_eq!(
            Pan::parse("41111111111").unwrap_err(),
            Error::PanLength { digits: 11 }
        );
        assert_eq!(
            Pan::parse("41111111111111111111").unwrap_err(),
            Error::PanLength { digits: 20 }
        );
        assert_eq!(
            Pan::parse("4111x11111111111").unwrap_err(),
            Error::CharacterOutsideAlphabet { len: 16 }
        );
    }

    #[test]
    fn mask_and_text() {
        let p = Pan::parse("4111 1111-1111 1111").unwrap();
        assert_eq!(p.mask(), "**** ****-**** 1111");
        assert_eq!(&*p.text(), "4111 1111-1111 1111");
        assert_eq!(p.canonical(), "4111111111111111");
    }
}
