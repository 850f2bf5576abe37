//! Custom templates: an alphabet and a regular expression whose capture groups are encrypted
//! and whose other parts are kept (as in HashiCorp Vault's Transform templates).
//!
//! Checked when loaded, so that every value the pattern accepts can be tokenized and every
//! token matches the pattern again:
//! - no nested capture groups, no capture group inside a repetition (the engine would report
//!   only the last repetition and leave the others in the clear);
//! - inside capture groups, no literals, and every character class matches exactly the
//!   alphabet (a token's encrypted part is any string over the alphabet);
//! - the shortest possible encrypted part (walking the parsed pattern with `regex-syntax`)
//!   reaches FF1's minimum domain radix^len ≥ 1,000,000.

use regex::Regex;
use regex_syntax::hir::{Class, Hir, HirKind};

use super::alphabet::{self, Alphabet};
use super::layout::Layout;
use super::{Error, check_length};

/// A validated custom pattern and its alphabet.
#[derive(Clone)]
pub struct Pattern {
    source: String,
    regex: Regex,
    alphabet: Alphabet,
    min_len: usize,
}

impl Pattern {
    /// Parses and checks `pattern` against `alphabet` (see the module docs for the rules).
    pub fn new(alphabet: &str, pattern: &str) -> Result<Pattern, Error> {
        Pattern::build(alphabet, pattern, true)
    }

    /// [`Pattern::new`] without FF1's minimum domain: for values that are never
    /// format-preserving encrypted (volatile templates; [`super::Template::short`]).
    pub fn short(alphabet: &str, pattern: &str) -> Result<Pattern, Error> {
        Pattern::build(alphabet, pattern, false)
    }

    /// Whether FF1 may encrypt it (its shortest encrypted part reaches the minimum domain).
    pub fn fpe_capable(&self) -> bool {
        self.min_len >= alphabet::min_len(self.alphabet.radix())
    }

    fn build(alphabet: &str, pattern: &str, fpe: bool) -> Result<Pattern, Error> {
        let alphabet = Alphabet::new(alphabet)?;
        // Parse the pattern alone first, so that it cannot close the group we wrap it in.
        let hir = regex_syntax::ParserBuilder::new()
            .build()
            .parse(pattern)
            .map_err(|e| Error::InvalidPattern {
                reason: e.to_string(),
            })?;
        let count = hir.properties().explicit_captures_len();
        if count == 0 {
            return Err(Error::NoCaptureGroup);
        }
        if count > super::MAX_CAPTURE_GROUPS {
            return Err(Error::TooManyCaptureGroups {
                count,
                max: super::MAX_CAPTURE_GROUPS,
            });
        }
        check(&hir, &alphabet, None, false)?;
        let min_len = min_captured(&hir);
        let required_len = alphabet::min_len(alphabet.radix());
        if fpe && min_len < required_len {
            return Err(Error::PatternDomainTooSmall {
                radix: alphabet.radix(),
                min_len,
                required_len,
            });
        }
        // Anchored: the whole value must match. The non-capturing group keeps group numbers.
        let regex =
            Regex::new(&format!(r"\A(?:{pattern})\z")).map_err(|e| Error::InvalidPattern {
                reason: e.to_string(),
            })?;
        Ok(Pattern {
            source: pattern.to_owned(),
            regex,
            alphabet,
            min_len,
        })
    }

    /// The pattern as configured.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The alphabet as configured.
    pub fn alphabet(&self) -> String {
        self.alphabet.to_text()
    }

    /// The fewest characters any match encrypts.
    pub fn min_len(&self) -> usize {
        self.min_len
    }

    pub(crate) fn alphabet_ref(&self) -> &Alphabet {
        &self.alphabet
    }

    /// Matches `value` and returns its layout: captured text encrypted, the rest kept.
    pub(crate) fn layout<'v>(&self, value: &'v str) -> Result<Layout<'v>, Error> {
        check_length(value)?;
        let caps = self
            .regex
            .captures(value)
            .ok_or(Error::PatternMismatch { len: value.len() })?;
        // No nesting (checked at load), so group order is left-to-right order.
        let secret = caps.iter().skip(1).flatten().map(|m| m.range()).collect();
        Ok(Layout::new(value, secret))
    }
}

impl std::fmt::Debug for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pattern")
            .field("source", &self.source)
            .field("radix", &self.alphabet.radix())
            .field("min_len", &self.min_len)
            .finish()
    }
}

/// Refuses nested captures, captures in repetitions, literals in captures and classes in
/// captures that differ from the alphabet.
fn check(
    hir: &Hir,
    alphabet: &Alphabet,
    capture: Option<u32>,
    repeated: bool,
) -> Result<(), Error> {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Ok(()),
        HirKind::Literal(_) => match capture {
            Some(group) => Err(Error::LiteralInCapture { group }),
            None => Ok(()),
        },
        HirKind::Class(class) => match capture {
            Some(group) => check_class(class, alphabet, group),
            None => Ok(()),
        },
        HirKind::Repetition(r) => {
            let many = r.max.is_none_or(|m| m > 1);
            check(&r.sub, alphabet, capture, repeated || many)
        }
        HirKind::Capture(c) => {
            if capture.is_some() {
                return Err(Error::NestedCapture { group: c.index });
            }
            if repeated {
                return Err(Error::CaptureInRepetition { group: c.index });
            }
            check(&c.sub, alphabet, Some(c.index), repeated)
        }
        HirKind::Concat(subs) | HirKind::Alternation(subs) => subs
            .iter()
            .try_for_each(|h| check(h, alphabet, capture, repeated)),
    }
}

/// A class inside capture group `group` must match exactly the alphabet's characters.
fn check_class(class: &Class, alphabet: &Alphabet, group: u32) -> Result<(), Error> {
    let radix = alphabet.radix() as usize;
    let mut count = 0usize;
    let mut visit = |c: Option<char>| -> Result<(), Error> {
        count += 1;
        match c {
            Some(c) if count <= radix && alphabet.contains(c) => Ok(()),
            _ => Err(Error::CaptureOutsideAlphabet { group }),
        }
    };
    match class {
        Class::Unicode(u) => {
            for r in u.ranges() {
                for c in (u32::from(r.start())..=u32::from(r.end())).filter_map(char::from_u32) {
                    visit(Some(c))?;
                }
            }
        }
        Class::Bytes(b) => {
            for r in b.ranges() {
                for byte in r.start()..=r.end() {
                    visit(byte.is_ascii().then_some(char::from(byte)))?;
                }
            }
        }
    }
    if count == radix {
        Ok(())
    } else {
        Err(Error::CaptureNarrowerThanAlphabet { group })
    }
}

/// The fewest characters captured by any match.
fn min_captured(hir: &Hir) -> usize {
    match hir.kind() {
        HirKind::Capture(c) => min_chars(&c.sub),
        HirKind::Repetition(r) => (r.min as usize).saturating_mul(min_captured(&r.sub)),
        HirKind::Concat(subs) => subs.iter().map(min_captured).sum(),
        HirKind::Alternation(subs) => subs.iter().map(min_captured).min().unwrap_or(0),
        HirKind::Empty | HirKind::Literal(_) | HirKind::Class(_) | HirKind::Look(_) => 0,
    }
}

/// The fewest characters any match of `hir` has.
fn min_chars(hir: &Hir) -> usize {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => 0,
        HirKind::Literal(l) => std::str::from_utf8(&l.0).map_or(l.0.len(), |s| s.chars().count()),
        HirKind::Class(_) => 1,
        HirKind::Repetition(r) => (r.min as usize).saturating_mul(min_chars(&r.sub)),
        HirKind::Capture(c) => min_chars(&c.sub),
        HirKind::Concat(subs) => subs.iter().map(min_chars).sum(),
        HirKind::Alternation(subs) => subs.iter().map(min_chars).min().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_and_measures() {
        let p = Pattern::new("0123456789", r"([0-9]{4})-([0-9]{4})-[0-9]{4}").unwrap();
        assert_eq!(p.min_len(), 8);
        assert_eq!(p.source(), r"([0-9]{4})-([0-9]{4})-[0-9]{4}");
        assert_eq!(p.alphabet(), "0123456789");
        let l = p.layout("1234-5678-9012").unwrap();
        assert_eq!(l.secret_len(), 8);
        assert_eq!(l.mask(0), "****-****-9012");

        let p = Pattern::new("0123456789", r"(?:([0-9]{6})|x([0-9]{7}))y").unwrap();
        assert_eq!(p.min_len(), 6);
        let p = Pattern::new("0123456789", r"ID([0-9]{6,})").unwrap();
        assert_eq!(p.min_len(), 6);
        let p = Pattern::new("abcdef", r"(?-u:([a-f]{8}))").unwrap();
        assert_eq!(p.min_len(), 8);
        assert!(format!("{p:?}").contains("min_len"));
    }

    #[test]
    fn load_refusals() {
        let d = "0123456789";
        let cases: &[(&str, &str, Error)] = &[
            (d, r"[0-9]{8}", Error::NoCaptureGroup),
            (d, r"(([0-9]{8}))", Error::NestedCapture { group: 2 }),
            (
                d,
                r"(?:([0-9]{8}))+",
                Error::CaptureInRepetition { group: 1 },
            ),
            (
                d,
                r"([0-9]{3}x[0-9]{5})",
                Error::LiteralInCapture { group: 1 },
            ),
            (d, r"(\d{8})", Error::CaptureOutsideAlphabet { group: 1 }),
            (d, r"(.{8})", Error::CaptureOutsideAlphabet { group: 1 }),
            (
                d,
                r"([0-9a]{8})",
                Error::CaptureOutsideAlphabet { group: 1 },
            ),
            (
                d,
                r"([0-8]{8})",
                Error::CaptureNarrowerThanAlphabet { group: 1 },
            ),
            (
                d,
                r"([0-9]{5})",
                Error::PatternDomainTooSmall {
                    radix: 10,
                    min_len: 5,
                    required_len: 6,
                },
            ),
            (
                d,
                r"([0-9]{6})?",
                Error::PatternDomainTooSmall {
                    radix: 10,
                    min_len: 0,
                    required_len: 6,
                },
            ),
            (
                d,
                r"([0-9]{6})|([0-9]{3})",
                Error::PatternDomainTooSmall {
                    radix: 10,
                    min_len: 3,
                    required_len: 6,
                },
            ),
            ("0", r"([0]{6})", Error::AlphabetTooSmall { len: 1 }),
            ("0120", r"([0-2]{6})", Error::AlphabetDuplicate),
        ];
        for (alphabet, pattern, want) in cases {
            assert_eq!(
                Pattern::new(alphabet, pattern).unwrap_err(),
                *want,
                "{pattern}"
            );
        }
        let many = "([0-9]{6})".repeat(65);
        assert_eq!(
            Pattern::new(d, &many).unwrap_err(),
            Error::TooManyCaptureGroups { count: 65, max: 64 }
        );
        for bad in [r"([0-9]{8}", r"abc)(def", r"[z-a]"] {
            assert!(
                matches!(
                    Pattern::new(d, bad).unwrap_err(),
                    Error::InvalidPattern { .. }
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn value_refusals() {
        let p = Pattern::new("0123456789", r"([0-9]{6,8})-[A-Z]").unwrap();
        assert_eq!(
            p.layout("12345-A").unwrap_err(),
            Error::PatternMismatch { len: 7 }
        );
        assert_eq!(p.layout("").unwrap_err(), Error::Empty);
    }
}
