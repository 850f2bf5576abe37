//! The characters a template encrypts, and their numerals (SP 800-38G §4.2: numerals are the
//! integers 0..radix; the alphabet is the bijection between them and characters).

use std::sync::LazyLock;

use super::Error;
use crate::fpe;

/// `0-9`: PAN, SSN and digit templates (radix 10).
#[expect(
    clippy::expect_used,
    reason = "a literal of ten distinct characters: tested by every digit template"
)]
pub(crate) static DIGITS: LazyLock<Alphabet> =
    LazyLock::new(|| Alphabet::new("0123456789").expect("ten distinct characters"));

/// `0-9A-Za-z`: alphanumeric and e-mail templates (radix 62).
#[expect(
    clippy::expect_used,
    reason = "a literal of 62 distinct characters: tested by every alphanumeric template"
)]
pub(crate) static ALPHANUMERIC: LazyLock<Alphabet> = LazyLock::new(|| {
    Alphabet::new("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
        .expect("62 distinct characters")
});

/// An ordered set of distinct characters; a character's numeral is its position.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Alphabet {
    /// Numeral → character.
    chars: Vec<char>,
    /// (character, numeral), sorted by character for binary search.
    index: Vec<(char, u16)>,
    /// Numerals of ASCII characters (`u32::MAX`: not in the alphabet): the common case.
    ascii: Box<[u32; 128]>,
}

impl Alphabet {
    /// Parses an alphabet: 2 to 65,536 distinct characters.
    pub(crate) fn new(chars: &str) -> Result<Alphabet, Error> {
        let chars: Vec<char> = chars.chars().collect();
        if chars.len() < fpe::MIN_RADIX as usize {
            return Err(Error::AlphabetTooSmall { len: chars.len() });
        }
        if chars.len() > fpe::MAX_RADIX as usize {
            return Err(Error::AlphabetTooLarge { len: chars.len() });
        }
        let mut index: Vec<(char, u16)> = chars
            .iter()
            .enumerate()
            // Radix 65,536 has numerals 0..=65535, which fit u16.
            .map(|(i, &c)| (c, i as u16))
            .collect();
        index.sort_unstable();
        if index.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(Error::AlphabetDuplicate);
        }
        let mut ascii = Box::new([u32::MAX; 128]);
        for &(c, n) in &index {
            if c.is_ascii() {
                ascii[c as usize] = u32::from(n);
            }
        }
        Ok(Alphabet {
            chars,
            index,
            ascii,
        })
    }

    /// The FF1 radix: the number of characters.
    pub(crate) fn radix(&self) -> u32 {
        self.chars.len() as u32
    }

    /// The numeral of `c`, if `c` is in the alphabet.
    pub(crate) fn numeral(&self, c: char) -> Option<u16> {
        if c.is_ascii() {
            return u16::try_from(self.ascii[c as usize]).ok();
        }
        self.index
            .binary_search_by_key(&c, |&(c, _)| c)
            .ok()
            .map(|i| self.index[i].1)
    }

    /// The character of numeral `n`; `None` when `n` is not below the radix.
    pub(crate) fn char(&self, n: u16) -> Option<char> {
        self.chars.get(usize::from(n)).copied()
    }

    /// Whether `c` is in the alphabet.
    pub(crate) fn contains(&self, c: char) -> bool {
        self.numeral(c).is_some()
    }

    /// The alphabet as a string (configuration, not a secret).
    pub(crate) fn to_text(&self) -> String {
        self.chars.iter().collect()
    }

    /// Encoded width of the widest character, to size output buffers once.
    pub(crate) fn max_char_len(&self) -> usize {
        self.chars.iter().map(|c| c.len_utf8()).max().unwrap_or(1)
    }
}

impl std::fmt::Debug for Alphabet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alphabet")
            .field("radix", &self.radix())
            .finish_non_exhaustive()
    }
}

/// Refuses `len` characters of `radix` when radix^len is below FF1's minimum domain
/// (SP 800-38G Rev. 1 §5.2 requires radix^minlen ≥ 1,000,000).
pub(crate) fn check_domain(radix: u32, len: usize) -> Result<(), Error> {
    if len >= min_len(radix) {
        Ok(())
    } else {
        Err(Error::DomainTooSmall { radix, len })
    }
}

/// The fewest characters of `radix` whose domain reaches 1,000,000.
pub(crate) fn min_len(radix: u32) -> usize {
    let mut domain: u64 = 1;
    let mut len = 0;
    while domain < fpe::MIN_DOMAIN {
        domain = domain.saturating_mul(u64::from(radix.max(2)));
        len += 1;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numerals_round_trip() {
        let a = Alphabet::new("abcé€😀").unwrap();
        assert_eq!(a.radix(), 6);
        for (i, c) in "abcé€😀".chars().enumerate() {
            assert_eq!(a.numeral(c), Some(i as u16));
            assert_eq!(a.char(i as u16), Some(c));
        }
        assert_eq!(a.numeral('z'), None);
        assert_eq!(a.char(6), None);
        assert_eq!(a.max_char_len(), 4);
        assert_eq!(a.to_text(), "abcé€😀");
    }

    #[test]
    fn builtins() {
        assert_eq!(DIGITS.radix(), 10);
        assert_eq!(ALPHANUMERIC.radix(), 62);
        assert_eq!(ALPHANUMERIC.numeral('z'), Some(61));
        assert!(!ALPHANUMERIC.contains('-'));
    }

    #[test]
    fn refusals() {
        assert_eq!(Alphabet::new("a"), Err(Error::AlphabetTooSmall { len: 1 }));
        assert_eq!(Alphabet::new(""), Err(Error::AlphabetTooSmall { len: 0 }));
        assert_eq!(Alphabet::new("aba"), Err(Error::AlphabetDuplicate));
        let huge: String = (0u32..0x11000)
            .filter_map(char::from_u32)
            .take(65_537)
            .collect();
        assert_eq!(
            Alphabet::new(&huge),
            Err(Error::AlphabetTooLarge { len: 65_537 })
        );
    }

    #[test]
    fn full_radix_alphabet() {
        let all: String = (0u32..0x11000)
            .filter_map(char::from_u32)
            .take(65_536)
            .collect();
        let a = Alphabet::new(&all).unwrap();
        assert_eq!(a.radix(), 65_536);
        assert_eq!(a.numeral('\u{0}'), Some(0));
        assert_eq!(a.char(65_535), all.chars().last());
    }

    #[test]
    fn domain_bounds() {
        assert_eq!(min_len(10), 6);
        assert_eq!(min_len(62), 4);
        assert_eq!(min_len(2), 20);
        assert_eq!(min_len(1_000_000), 1);
        assert_eq!(check_domain(10, 6), Ok(()));
        assert_eq!(
            check_domain(10, 5),
            Err(Error::DomainTooSmall { radix: 10, len: 5 })
        );
    }
}
