//! Token templates: turn a real-world value into the numerals FF1 works on and back, keeping
//! the value's format (length, separators, kept parts, alphabet).
//!
//! | template | accepts | encrypted (radix) | kept |
//! |---|---|---|---|
//! | `pan` | 12–19 digits, single spaces or dashes between digits, Luhn-valid | the digits between the kept prefix and suffix (10) | first 6 (up to 8) and last 4 digits, separators |
//! | `ssn` | `ddd-dd-dddd` or 9 digits | all 9 digits (10) | dashes |
//! | `digits` | digits and ` -.()+/` | every digit (10) | the separators |
//! | `alphanumeric` | `[0-9A-Za-z]+` | every character (62) | nothing |
//! | `email` | dot-atom `local@host` | letters and digits of the local part (62) | local-part punctuation, the domain |
//! | custom | an alphabet and a regex | capture groups (alphabet size) | the rest of the match |
//!
//! Every FPE template needs radix^len ≥ 1,000,000 for the encrypted part (SP 800-38G Rev. 1
//! §5.2), so FPE refuses e.g. `digits` shorter than 6 or an e-mail local part with fewer than
//! 4 letters and digits ([`Error::DomainTooSmall`]). Random (vaulted) tokens carry no
//! information about the value and are not bound by that rule; a small space only makes
//! collisions likelier, which the vault resolves by drawing again.
//!
//! The tweak of every FPE call holds a kind tag, the template name, the key version (so the
//! same value under two key versions gives unrelated tokens) and what the template keeps in the
//! clear (PAN: kept digits and the digit count; e-mail: the local part's punctuation and the
//! lower-cased domain; custom: the kept text). Separator positions are not in the tweak, so
//! `4111 1111 1111 1111` and `4111111111111111` give the same digits.
//!
//! # PAN tokens
//!
//! ## Encrypted part and the prefix that shrinks
//!
//! The encrypted middle is the digits between the kept prefix (`keep_first`, at most 8) and the
//! kept suffix (`keep_last`, at most 4; PCI DSS 3.4.1 allows no more to be shown). FF1 needs at
//! least 6 digits (10^6), so `keep_first` is a maximum: when the middle would be shorter, the
//! prefix shrinks until 6 digits are encrypted. A 16-digit PAN under an 8+4 template keeps
//! 6+4; a 12-digit PAN under 6+4 keeps 2+4. With 12 ≤ digits and `keep_last` ≤ 4 there is
//! always room, so the only refusal is the configuration itself
//! ([`Error::PanKeepOutOfRange`]).
//!
//! ## Telling a token from a PAN
//!
//! PCI requires that a token cannot be mistaken for a PAN. Every PAN token, FPE or random,
//! fails the Luhn check, and detokenizing a Luhn-valid input is refused
//! ([`Error::NotAToken`]). Because the input is Luhn-valid, FF1 is applied with cycle walking
//! inside V, the set of middles that keep the whole number Luhn-valid: `y = E(x)`, and while
//! `y ∉ V`, `y = E(y)`. A permutation restricted by cycle walking is a permutation of V, and a
//! tenth of all middles are in V, so this takes about 10 FF1 calls (≈ 10–40 µs). Decryption
//! walks back the same way. Then the last digit of the middle is changed so that the token's
//! Luhn sum mod 10 is a chosen residue r in 1..=9; a single digit's Luhn contribution is a
//! permutation of 0..=9, so the change is a bijection and is undone exactly.
//!
//! Limits: a Luhn-invalid number is not a PAN, but a mistyped PAN is also Luhn-invalid, so
//! Luhn failure says "not a card number", not "certainly a token"; and the token keeps the real
//! BIN and last four, so it still looks like card data to humans and to scanners that ignore
//! Luhn. The number of cycle-walking steps depends on the value and the key, which shows in
//! timing; it tells nothing about the value to someone without the key.
//!
//! ## Key versions after rotation
//!
//! The residue is the key-version slot: r = ((version − 1) mod 9) + 1, so versions 1..=9 get
//! slots 1..=9 and version 10 reuses slot 1 ([`VersionSlot`]). [`Template::version_slot`] reads
//! it from a token without any key, and decryption refuses a token whose slot does not match
//! the version given ([`Error::VersionSlotMismatch`]). Limit: only 9 versions can be told
//! apart, so the vault must keep at most 9 consecutive decryptable versions of a PAN FPE key
//! (rewrap, then retire, before the 10th rotation reuses slot 1). Other templates have no spare
//! room in their format, so their tokens do not carry a version; the caller or the vault must
//! know it (for example by keeping one decryptable version at a time, or storing it).
//!
//! ## The guessing limit, and who may tokenize
//!
//! A 16-digit PAN that keeps 6+4 encrypts 6 digits: FF1's domain is 10^6, but since the input
//! is Luhn-valid only 10^5 middles are possible for a given BIN and last four. FPE tokens are
//! deterministic, so anyone allowed to tokenize can learn a token's PAN by tokenizing the
//! ~10^5 Luhn-valid candidates that share its BIN and last four and comparing: a few seconds
//! of calls. The token hides the PAN only from those who cannot tokenize. Therefore the
//! `tokenize` permission on a `pan` FPE template must be granted as narrowly as `detokenize`
//! and rate-limited (far below 10^5 calls per key per day), or a vaulted (random) template used
//! instead. Keeping fewer digits helps: 19-digit PANs or a 0+4 template encrypt more.
//!
//! # Custom templates
//!
//! See [`Pattern`] for the load-time rules. The encrypted part is the concatenation of all
//! capture groups, in order; tokens must match the pattern with the same kept text, which
//! encryption guarantees by cycle walking until they do (almost always at once, given the
//! load-time rules; bounded by [`WALK_LIMIT`]).
//!
//! # Secrets
//!
//! Numeral buffers, tweaks and decrypted values are [`Zeroizing`]; errors carry at most a
//! length and the rule that failed.

mod alphabet;
pub(crate) mod email;
mod error;
pub(crate) mod layout;
pub(crate) mod pan;
mod pattern;

use rand::{CryptoRng, Rng};
use zeroize::Zeroizing;

use self::alphabet::{ALPHANUMERIC, Alphabet, DIGITS};
use self::email::Email;
pub use self::error::Error;
use self::layout::Layout;
pub use self::pattern::Pattern;
use crate::fpe::{self, Ff1};

/// Longest value (or token) accepted, in bytes.
pub const MAX_VALUE_LEN: usize = 512;
/// Most FF1 calls one cycle walk (or one random draw of a custom token) may take.
pub const WALK_LIMIT: u32 = 1000;
/// Most capture groups a custom pattern may have. With values of at most [`MAX_VALUE_LEN`]
/// bytes the tweak stays below FF1's 1,024-byte bound.
pub const MAX_CAPTURE_GROUPS: usize = 64;
/// Longest template name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Separators the `digits` template keeps in place.
const DIGIT_SEPARATORS: &[u8] = b" -.()+/";

/// A named template. Holds configuration only, never a value.
#[derive(Clone, Debug)]
pub struct Template {
    name: String,
    kind: Kind,
}

/// What a template accepts and which parts it encrypts (see the module docs).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Kind {
    /// Card numbers; tokens fail the Luhn check and carry a [`VersionSlot`].
    Pan {
        /// Leading digits kept, at most (shrinks so that 6 digits are encrypted).
        keep_first: u8,
        /// Trailing digits kept.
        keep_last: u8,
    },
    /// US social security numbers.
    Ssn,
    /// Digits with separators kept (account and phone numbers).
    Digits,
    /// `[0-9A-Za-z]+`.
    Alphanumeric,
    /// E-mail addresses: local part encrypted, domain kept.
    Email,
    /// An alphabet and a regular expression from configuration.
    Custom(Pattern),
}

/// The key-version slot a PAN token carries in its Luhn residue: 1..=9, version ≡ slot (mod 9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VersionSlot(u8);

impl VersionSlot {
    /// Number of distinct slots: how many consecutive key versions tokens can tell apart.
    pub const COUNT: u32 = 9;

    /// The slot of key `version` (versions start at 1).
    pub fn of(version: u32) -> Result<VersionSlot, Error> {
        if version == 0 {
            return Err(Error::InvalidKeyVersion);
        }
        // (version - 1) % 9 < 9, so the slot is 1..=9.
        Ok(VersionSlot(((version - 1) % Self::COUNT) as u8 + 1))
    }

    /// The slot number, 1..=9 (the token's Luhn sum mod 10).
    pub fn get(self) -> u8 {
        self.0
    }

    /// Whether key `version` writes tokens in this slot.
    pub fn admits(self, version: u32) -> bool {
        VersionSlot::of(version) == Ok(self)
    }

    /// The slot of a Luhn residue; `None` for 0 (a Luhn-valid number, not a token).
    fn from_residue(residue: u8) -> Option<VersionSlot> {
        (1..=9).contains(&residue).then_some(VersionSlot(residue))
    }
}

impl Template {
    /// The built-in templates: `pan` (keeps 6+4), `ssn`, `digits`, `alphanumeric`, `email`.
    pub fn builtin(name: &str) -> Option<Template> {
        let kind = match name {
            "pan" => Kind::Pan {
                keep_first: 6,
                keep_last: 4,
            },
            "ssn" => Kind::Ssn,
            "digits" => Kind::Digits,
            "alphanumeric" => Kind::Alphanumeric,
            "email" => Kind::Email,
            _ => return None,
        };
        Some(Template {
            name: name.to_owned(),
            kind,
        })
    }

    /// The same template under another name, so one kind can serve several configured
    /// templates (the daemon's `pan` in FPE mode and `pan_vault` vaulted). The name is part of
    /// every tweak and key name, so the two never share tokens.
    pub fn renamed(&self, name: &str) -> Result<Template, Error> {
        check_name(name)?;
        Ok(Template {
            name: name.to_owned(),
            kind: self.kind.clone(),
        })
    }

    /// A PAN template that keeps at most `keep_first` (≤ 8) leading and exactly `keep_last`
    /// (≤ 4) trailing digits.
    pub fn pan(name: &str, keep_first: u8, keep_last: u8) -> Result<Template, Error> {
        check_name(name)?;
        if keep_first > pan::MAX_KEEP_FIRST || keep_last > pan::MAX_KEEP_LAST {
            return Err(Error::PanKeepOutOfRange {
                keep_first,
                keep_last,
            });
        }
        Ok(Template {
            name: name.to_owned(),
            kind: Kind::Pan {
                keep_first,
                keep_last,
            },
        })
    }

    /// A custom template: `alphabet` lists the characters (numeral = position) and `pattern`'s
    /// capture groups mark the encrypted parts. Validated here (see [`Pattern`]).
    pub fn custom(name: &str, alphabet: &str, pattern: &str) -> Result<Template, Error> {
        check_name(name)?;
        Ok(Template {
            name: name.to_owned(),
            kind: Kind::Custom(Pattern::new(alphabet, pattern)?),
        })
    }

    /// A template that validates values like [`Template::custom`] but may be shorter than
    /// FF1's minimum domain (a card's 3- or 4-digit code): for volatile templates only; a vault
    /// refuses it in FPE mode ([`Template::fpe_capable`]).
    pub fn short(name: &str, alphabet: &str, pattern: &str) -> Result<Template, Error> {
        check_name(name)?;
        Ok(Template {
            name: name.to_owned(),
            kind: Kind::Custom(Pattern::short(alphabet, pattern)?),
        })
    }

    /// Whether FF1 may encrypt its values (every built-in kind; a custom one whose pattern
    /// reaches the minimum domain).
    pub fn fpe_capable(&self) -> bool {
        match &self.kind {
            Kind::Custom(p) => p.fpe_capable(),
            _ => true,
        }
    }

    /// The template's name (also part of every tweak).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the template accepts and encrypts.
    pub fn kind(&self) -> &Kind {
        &self.kind
    }

    /// The FF1 radix the template needs.
    pub fn radix(&self) -> u32 {
        self.alphabet().radix()
    }

    /// The value validated, separators removed (PAN and SSN digits, digits only, the e-mail
    /// with its domain lower-cased; alphanumeric and custom values as given): the input to
    /// deterministic fingerprints. PANs must pass the Luhn check.
    pub fn canonicalize(&self, value: &str) -> Result<String, Error> {
        match &self.kind {
            Kind::Pan { .. } => {
                let pan = pan::Pan::parse(value)?;
                pan.require_luhn_valid()?;
                Ok(pan.canonical())
            }
            Kind::Ssn | Kind::Digits => {
                let parsed = self.parse(value)?;
                let digits = parsed.layout().numerals(&DIGITS)?;
                Ok(digits.iter().map(|&d| char::from(b'0' + d as u8)).collect())
            }
            Kind::Alphanumeric | Kind::Custom(_) => {
                let parsed = self.parse(value)?;
                parsed.layout().numerals(self.alphabet())?;
                Ok(value.to_owned())
            }
            Kind::Email => Ok(Email::parse(value)?.canonical()),
        }
    }

    /// The FPE token of `value` under `ff1` (which must have [`Template::radix`]) and key
    /// `key_version`.
    pub fn encrypt(&self, ff1: &Ff1, key_version: u32, value: &str) -> Result<String, Error> {
        self.check_key(ff1, key_version)?;
        if let Kind::Pan {
            keep_first,
            keep_last,
        } = self.kind
        {
            return pan::encrypt(&self.name, keep_first, keep_last, ff1, key_version, value);
        }
        let parsed = self.parse(value)?;
        let token = self.transform(ff1, key_version, &parsed, Walk::Encrypt)?;
        Ok(token.to_string())
    }

    /// The key-version slot a token carries: `Some` for PAN tokens (the version is congruent
    /// to the slot mod 9), `None` for templates whose tokens carry none. Refuses an input that
    /// does not have the template's format, and a Luhn-valid PAN ([`Error::NotAToken`]).
    pub fn version_slot(&self, token: &str) -> Result<Option<VersionSlot>, Error> {
        match &self.kind {
            Kind::Pan { .. } => Ok(Some(pan::Pan::parse(token)?.token_slot()?)),
            _ => {
                self.parse(token)?;
                Ok(None)
            }
        }
    }

    /// The value behind an FPE token, in a buffer wiped on drop.
    pub fn decrypt(
        &self,
        ff1: &Ff1,
        key_version: u32,
        token: &str,
    ) -> Result<Zeroizing<String>, Error> {
        self.check_key(ff1, key_version)?;
        if let Kind::Pan {
            keep_first,
            keep_last,
        } = self.kind
        {
            return pan::decrypt(&self.name, keep_first, keep_last, ff1, key_version, token);
        }
        let parsed = self.parse(token)?;
        self.transform(ff1, key_version, &parsed, Walk::Decrypt)
    }

    /// A random token for vaulted mode: kept parts kept, the encrypted part drawn uniformly
    /// from the alphabet (PAN: uniformly among Luhn-invalid middles). It carries no
    /// information about the encrypted part.
    pub fn random_token<R: CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        value: &str,
    ) -> Result<String, Error> {
        if let Kind::Pan {
            keep_first,
            keep_last,
        } = self.kind
        {
            return pan::random_token(keep_first, keep_last, rng, value);
        }
        let parsed = self.parse(value)?;
        let layout = parsed.layout();
        let alphabet = self.alphabet();
        let mut x = layout.numerals(alphabet)?;
        for _ in 0..WALK_LIMIT {
            for n in x.iter_mut() {
                // Radix ≤ 2^16, so numerals fit u16.
                *n = rng.random_range(0..alphabet.radix()) as u16;
            }
            let token = layout.assemble(alphabet, &x)?;
            if self.keeps_shape(layout, &token) {
                return Ok(token.to_string());
            }
        }
        Err(Error::CycleWalkLimit { steps: WALK_LIMIT })
    }

    /// The masked reveal: PAN `************1111` and SSN `***-**-6789` (separators kept),
    /// e-mail `j***@example.com`, digits and alphanumeric show their last 4 characters when
    /// they have at least 8 (never more than half), custom templates hide every captured
    /// character.
    pub fn mask(&self, value: &str) -> Result<String, Error> {
        match &self.kind {
            Kind::Pan { .. } => Ok(pan::Pan::parse(value)?.mask()),
            Kind::Email => Ok(Email::parse(value)?.mask()),
            Kind::Ssn => Ok(self.parse(value)?.layout().mask(4)),
            Kind::Digits | Kind::Alphanumeric => {
                let parsed = self.parse(value)?;
                let layout = parsed.layout();
                let reveal = if layout.secret_len() >= 8 { 4 } else { 0 };
                Ok(layout.mask(reveal))
            }
            Kind::Custom(_) => Ok(self.parse(value)?.layout().mask(0)),
        }
    }

    /// The alphabet of the encrypted part.
    fn alphabet(&self) -> &Alphabet {
        match &self.kind {
            Kind::Pan { .. } | Kind::Ssn | Kind::Digits => &DIGITS,
            Kind::Alphanumeric | Kind::Email => &ALPHANUMERIC,
            Kind::Custom(p) => p.alphabet_ref(),
        }
    }

    /// Refuses key version 0 and an FF1 instance of the wrong radix.
    fn check_key(&self, ff1: &Ff1, key_version: u32) -> Result<(), Error> {
        VersionSlot::of(key_version)?;
        if ff1.radix() != self.radix() {
            return Err(Error::RadixMismatch {
                expected: self.radix(),
                got: ff1.radix(),
            });
        }
        Ok(())
    }

    /// Parses a value or token of every template but `pan` into its layout.
    fn parse<'v>(&self, value: &'v str) -> Result<Parsed<'v>, Error> {
        check_length(value)?;
        let len = value.len();
        let layout = match &self.kind {
            Kind::Email => return Ok(Parsed::Email(Email::parse(value)?)),
            Kind::Custom(p) => p.layout(value)?,
            Kind::Ssn => {
                let b = value.as_bytes();
                let digit = |i: usize| b[i].is_ascii_digit();
                if b.len() == 11 && b[3] == b'-' && b[6] == b'-' {
                    if ![0, 1, 2, 4, 5, 7, 8, 9, 10].into_iter().all(digit) {
                        return Err(Error::SsnFormat { len });
                    }
                    Layout::new(value, vec![0..3, 4..6, 7..11])
                } else if b.len() == 9 && (0..9).all(digit) {
                    Layout::whole(value)
                } else {
                    return Err(Error::SsnFormat { len });
                }
            }
            Kind::Digits => Layout::new(value, digit_runs(value)?),
            Kind::Alphanumeric => {
                if !value.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(Error::CharacterOutsideAlphabet { len });
                }
                Layout::whole(value)
            }
            // PANs go through `pan::Pan`; this arm keeps the function total.
            Kind::Pan { .. } => {
                pan::Pan::parse(value)?;
                Layout::new(value, digit_runs(value)?)
            }
        };
        if layout.secret_len() == 0 {
            return Err(Error::NothingToEncrypt { len });
        }
        Ok(Parsed::Layout(layout))
    }

    /// The tweak for `parsed` under key `version` (see the module docs).
    fn tweak(&self, version: u32, parsed: &Parsed<'_>) -> Tweak {
        let kind = match &self.kind {
            Kind::Pan { .. } => Tweak::PAN,
            Kind::Ssn => Tweak::SSN,
            Kind::Digits => Tweak::DIGITS,
            Kind::Alphanumeric => Tweak::ALPHANUMERIC,
            Kind::Email => Tweak::EMAIL,
            Kind::Custom(_) => Tweak::CUSTOM,
        };
        let mut t = Tweak::new(kind, &self.name, version);
        match (parsed, &self.kind) {
            (Parsed::Email(e), _) => e.tweak_fields(&mut t),
            (Parsed::Layout(l), Kind::Custom(_)) => {
                for kept in l.kept() {
                    t.field(kept.as_bytes());
                }
            }
            (Parsed::Layout(_), _) => {}
        }
        t
    }

    /// FPE on every template but `pan`: encrypt or decrypt the layout's characters.
    fn transform(
        &self,
        ff1: &Ff1,
        version: u32,
        parsed: &Parsed<'_>,
        direction: Walk,
    ) -> Result<Zeroizing<String>, Error> {
        let layout = parsed.layout();
        let alphabet = self.alphabet();
        let mut x = layout.numerals(alphabet)?;
        alphabet::check_domain(alphabet.radix(), x.len())?;
        let tweak = self.tweak(version, parsed);
        if let Kind::Custom(_) = self.kind {
            walk(ff1, &tweak, &mut x, direction, |x| {
                Ok(self.keeps_shape(layout, &layout.assemble(alphabet, x)?))
            })?;
        } else {
            match direction {
                Walk::Encrypt => ff1.encrypt_in_place(tweak.as_bytes(), &mut x)?,
                Walk::Decrypt => ff1.decrypt_in_place(tweak.as_bytes(), &mut x)?,
            }
        }
        layout.assemble(alphabet, &x)
    }

    /// Whether `candidate` parses with the same kept text and run lengths as `layout`. Built-in
    /// formats always do; a custom pattern may not (cycle walking restores it).
    fn keeps_shape(&self, layout: &Layout<'_>, candidate: &str) -> bool {
        match &self.kind {
            Kind::Custom(p) => p
                .layout(candidate)
                .is_ok_and(|other| layout.same_shape(&other)),
            _ => true,
        }
    }
}

/// A parsed value of a template other than `pan`.
enum Parsed<'v> {
    Layout(Layout<'v>),
    Email(Email<'v>),
}

impl<'v> Parsed<'v> {
    fn layout(&self) -> &Layout<'v> {
        match self {
            Parsed::Layout(l) => l,
            Parsed::Email(e) => &e.layout,
        }
    }
}

/// An FF1 tweak: kind tag, key version, name, then length-prefixed fields. Wiped on drop.
pub(crate) struct Tweak(Zeroizing<Vec<u8>>);

impl Tweak {
    pub(crate) const PAN: u8 = 1;
    pub(crate) const SSN: u8 = 2;
    pub(crate) const DIGITS: u8 = 3;
    pub(crate) const ALPHANUMERIC: u8 = 4;
    pub(crate) const EMAIL: u8 = 5;
    pub(crate) const CUSTOM: u8 = 6;

    pub(crate) fn new(kind: u8, name: &str, version: u32) -> Tweak {
        Tweak::with_room(kind, name, version, fpe::MAX_TWEAK_LEN)
    }

    /// A tweak whose fields (with their length prefixes) take at most `room` bytes. Sized once
    /// so that no reallocation leaves a copy behind; the PAN template knows its fields' size,
    /// and a 1 KiB allocation (wiped on drop) per token was a tenth of its cost.
    pub(crate) fn with_room(kind: u8, name: &str, version: u32, room: usize) -> Tweak {
        let mut t = Zeroizing::new(Vec::with_capacity(6 + name.len() + room));
        t.push(kind);
        t.extend_from_slice(&version.to_be_bytes());
        // Names are at most 64 bytes (checked when the template is made).
        t.push(name.len() as u8);
        t.extend_from_slice(name.as_bytes());
        Tweak(t)
    }

    /// Appends a field, prefixed by its length (values are at most 512 bytes, so u16 holds it).
    pub(crate) fn field(&mut self, bytes: &[u8]) {
        let capacity = self.0.capacity();
        self.0
            .extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        self.0.extend_from_slice(bytes);
        debug_assert_eq!(self.0.capacity(), capacity, "a tweak outgrew its room");
    }

    /// Appends decimal digits (each 0..=9) as ASCII, as a field, with no copy of them made.
    pub(crate) fn digit_field(&mut self, digits: &[u8]) {
        let capacity = self.0.capacity();
        self.0
            .extend_from_slice(&(digits.len() as u16).to_be_bytes());
        self.0.extend(digits.iter().map(|d| b'0' + d));
        debug_assert_eq!(self.0.capacity(), capacity, "a tweak outgrew its room");
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Tweak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tweak")
            .field("len", &self.0.len())
            .finish_non_exhaustive()
    }
}

/// Which way a cycle walk runs.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Walk {
    Encrypt,
    Decrypt,
}

/// Cycle walking: apply FF1 until `done` accepts the numerals. If the start is in the accepted
/// set, the walk is a permutation of that set, and walking the other way undoes it.
pub(crate) fn walk(
    ff1: &Ff1,
    tweak: &Tweak,
    x: &mut [u16],
    direction: Walk,
    mut done: impl FnMut(&[u16]) -> Result<bool, Error>,
) -> Result<(), Error> {
    // One FF1 session for the whole walk (`Ff1::encrypt_walk`): the per-call constants are
    // computed once. A template error inside `done` stops the walk and is returned.
    let mut failure = None;
    let accept = |x: &[u16]| match done(x) {
        Ok(ok) => ok,
        Err(e) => {
            failure = Some(e);
            true
        }
    };
    let steps = match direction {
        Walk::Encrypt => ff1.encrypt_walk(tweak.as_bytes(), x, WALK_LIMIT, accept)?,
        Walk::Decrypt => ff1.decrypt_walk(tweak.as_bytes(), x, WALK_LIMIT, accept)?,
    };
    if let Some(e) = failure {
        return Err(e);
    }
    match steps {
        Some(_) => Ok(()),
        None => Err(Error::CycleWalkLimit { steps: WALK_LIMIT }),
    }
}

/// Byte ranges of the runs of digits; refuses characters other than digits and
/// [`DIGIT_SEPARATORS`].
fn digit_runs(value: &str) -> Result<Vec<std::ops::Range<usize>>, Error> {
    let mut runs = Vec::new();
    let mut start = None;
    for (i, b) in value.bytes().enumerate() {
        match (b.is_ascii_digit(), start) {
            (true, None) => start = Some(i),
            (false, _) if !DIGIT_SEPARATORS.contains(&b) => {
                return Err(Error::CharacterOutsideAlphabet { len: value.len() });
            }
            (false, Some(s)) => {
                runs.push(s..i);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        runs.push(s..value.len());
    }
    Ok(runs)
}

/// Refuses an empty value and one longer than [`MAX_VALUE_LEN`].
pub(crate) fn check_length(value: &str) -> Result<(), Error> {
    match value.len() {
        0 => Err(Error::Empty),
        len if len > MAX_VALUE_LEN => Err(Error::TooLong {
            len,
            max: MAX_VALUE_LEN,
        }),
        _ => Ok(()),
    }
}

/// Template names name keys (`fpe/<template>`): 1 to 64 of `[A-Za-z0-9_.-]`.
fn check_name(name: &str) -> Result<(), Error> {
    let ok = (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName { len: name.len() })
    }
}

#[cfg(test)]
mod tests;
