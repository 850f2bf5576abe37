//! A value cut into kept text and the runs of characters FF1 works on.

use std::ops::Range;

use zeroize::Zeroizing;

use super::Error;
use super::alphabet::Alphabet;
use crate::fpe;

/// A value and the byte ranges of it that are encrypted (ascending, disjoint, non-empty); the
/// rest is kept in the clear, in place.
pub(crate) struct Layout<'v> {
    value: &'v str,
    secret: Vec<Range<usize>>,
}

/// Lengths and ranges only, never the value.
impl std::fmt::Debug for Layout<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layout")
            .field("len", &self.value.len())
            .field("secret", &self.secret)
            .finish()
    }
}

impl<'v> Layout<'v> {
    /// `secret` must be ascending, disjoint byte ranges on character boundaries of `value`.
    pub(crate) fn new(value: &'v str, mut secret: Vec<Range<usize>>) -> Layout<'v> {
        secret.retain(|r| !r.is_empty());
        Layout { value, secret }
    }

    /// A layout that encrypts the whole value.
    pub(crate) fn whole(value: &'v str) -> Layout<'v> {
        Layout::new(value, std::iter::once(0..value.len()).collect())
    }

    /// The number of characters encrypted.
    pub(crate) fn secret_len(&self) -> usize {
        self.secret
            .iter()
            .map(|r| self.value[r.clone()].chars().count())
            .sum()
    }

    /// The encrypted characters as numerals of `alphabet`, in a buffer wiped on drop.
    pub(crate) fn numerals(&self, alphabet: &Alphabet) -> Result<Zeroizing<Vec<u16>>, Error> {
        let mut out = Zeroizing::new(Vec::with_capacity(self.secret_len()));
        for r in &self.secret {
            for c in self.value[r.clone()].chars() {
                match alphabet.numeral(c) {
                    Some(n) => out.push(n),
                    None => {
                        return Err(Error::CharacterOutsideAlphabet {
                            len: self.value.len(),
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// The value with its encrypted characters replaced by `numerals` (as many as
    /// [`Layout::secret_len`]) written in `alphabet`.
    pub(crate) fn assemble(
        &self,
        alphabet: &Alphabet,
        numerals: &[u16],
    ) -> Result<Zeroizing<String>, Error> {
        let width = alphabet.max_char_len();
        let mut out = Zeroizing::new(String::with_capacity(
            self.value.len() + numerals.len() * width,
        ));
        let mut next = numerals.iter();
        self.fill(&mut out, |_| {
            let n = *next.next()?;
            alphabet.char(n)
        })
        .ok_or(Error::Ff1(fpe::Error::NumeralOutOfRange {
            radix: alphabet.radix(),
        }))?;
        Ok(out)
    }

    /// The value with its encrypted characters replaced by `*`, except the last `reveal` of them.
    pub(crate) fn mask(&self, reveal: usize) -> String {
        let hide = self.secret_len().saturating_sub(reveal);
        let mut seen = 0;
        let mut out = String::with_capacity(self.value.len());
        // Infallible: the closure always returns Some.
        let _ = self.fill(&mut out, |c| {
            seen += 1;
            Some(if seen <= hide { '*' } else { c })
        });
        out
    }

    /// The kept text: one segment before, between and after the encrypted runs.
    pub(crate) fn kept(&self) -> impl Iterator<Item = &'v str> + '_ {
        let starts = std::iter::once(0).chain(self.secret.iter().map(|r| r.end));
        let ends = self
            .secret
            .iter()
            .map(|r| r.start)
            .chain(std::iter::once(self.value.len()));
        starts.zip(ends).map(|(s, e)| &self.value[s..e])
    }

    /// Whether `other` has the same kept text and the same number of encrypted characters in
    /// each run: the condition cycle walking restores for custom patterns.
    pub(crate) fn same_shape(&self, other: &Layout<'_>) -> bool {
        self.secret.len() == other.secret.len()
            && self.kept().eq(other.kept())
            && self.secret.iter().zip(&other.secret).all(|(a, b)| {
                self.value[a.clone()].chars().count() == other.value[b.clone()].chars().count()
            })
    }

    /// Writes the value into `out`, passing each encrypted character through `f`.
    fn fill(&self, out: &mut String, mut f: impl FnMut(char) -> Option<char>) -> Option<()> {
        let mut at = 0;
        for r in &self.secret {
            out.push_str(&self.value[at..r.start]);
            for c in self.value[r.clone()].chars() {
                out.push(f(c)?);
            }
            at = r.end;
        }
        out.push_str(&self.value[at..]);
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::alphabet::DIGITS;
    use super::*;

    #[test]
    fn assemble_mask_kept() {
        let l = Layout::new("ab12-34cd", vec![2..4, 4..4, 5..7]);
        assert_eq!(l.secret_len(), 4);
        let n = l.numerals(&DIGITS).unwrap();
        assert_eq!(&n[..], &[1, 2, 3, 4]);
        assert_eq!(&*l.assemble(&DIGITS, &[9, 8, 7, 6]).unwrap(), "ab98-76cd");
        assert_eq!(l.mask(1), "ab**-*4cd");
        assert_eq!(l.mask(9), "ab12-34cd");
        assert_eq!(l.kept().collect::<Vec<_>>(), vec!["ab", "-", "cd"]);
        assert!(matches!(
            l.assemble(&DIGITS, &[10, 0, 0, 0]),
            Err(Error::Ff1(_))
        ));
        let other = Layout::new("ab99-00cd", vec![2..4, 5..7]);
        assert!(l.same_shape(&other));
        let other = Layout::new("ab9-900cd", vec![2..3, 4..7]);
        assert!(!l.same_shape(&other));
    }

    #[test]
    fn outside_alphabet() {
        let l = Layout::whole("1x");
        assert_eq!(
            l.numerals(&DIGITS),
            Err(Error::CharacterOutsideAlphabet { len: 2 })
        );
    }
}
