use crate::fpe;

/// Why a template refused its configuration, a value or a token.
///
/// One variant per rule. Messages never contain the value or the token: at most its length in
/// bytes (`len`) and the rule that failed. Configuration errors may name the configuration
/// (a pattern is not a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ----- configuration -----
    /// A template name must be 1 to 64 characters from `[A-Za-z0-9_.-]` (it names keys).
    #[error("template name must be 1 to 64 characters from [A-Za-z0-9_.-], got {len} bytes")]
    InvalidName {
        /// The name's length in bytes.
        len: usize,
    },
    /// A PAN template keeps at most the first 8 and the last 4 digits (PCI DSS 3.4.1).
    #[error(
        "pan template may keep at most the first 8 and the last 4 digits, got {keep_first} and {keep_last}"
    )]
    PanKeepOutOfRange {
        /// The configured number of leading digits kept.
        keep_first: u8,
        /// The configured number of trailing digits kept.
        keep_last: u8,
    },
    /// A custom alphabet needs at least 2 characters (FF1 radix ≥ 2).
    #[error("alphabet must have at least 2 characters, got {len}")]
    AlphabetTooSmall {
        /// The number of characters given.
        len: usize,
    },
    /// A custom alphabet has at most 65,536 characters (FF1 radix ≤ 2^16).
    #[error("alphabet must have at most 65536 characters, got {len}")]
    AlphabetTooLarge {
        /// The number of characters given.
        len: usize,
    },
    /// A custom alphabet lists a character twice.
    #[error("alphabet lists a character more than once")]
    AlphabetDuplicate,
    /// The custom pattern is not a valid regular expression.
    #[error("pattern is not a valid regular expression: {reason}")]
    InvalidPattern {
        /// The parser's message (about the pattern, never a value).
        reason: String,
    },
    /// The custom pattern has no capture group, so nothing would be encrypted.
    #[error("pattern has no capture group: capture groups mark the encrypted parts")]
    NoCaptureGroup,
    /// The custom pattern has more capture groups than [`super::MAX_CAPTURE_GROUPS`] (each
    /// adds a field to the tweak, whose length FF1 bounds).
    #[error("pattern has {count} capture groups, the maximum is {max}")]
    TooManyCaptureGroups {
        /// The number of capture groups.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// A capture group contains another one; the encrypted parts would overlap.
    #[error("capture group {group} is nested in another capture group; use (?:...) inside")]
    NestedCapture {
        /// The group's index.
        group: u32,
    },
    /// A capture group may repeat: the regex engine reports only the last repetition, so the
    /// others would be left in the clear.
    #[error("capture group {group} is inside a repetition; put the repetition inside the group")]
    CaptureInRepetition {
        /// The group's index.
        group: u32,
    },
    /// A capture group contains a literal: encrypting it would change the literal, so tokens
    /// would not match the pattern.
    #[error("capture group {group} contains a literal; keep literals outside capture groups")]
    LiteralInCapture {
        /// The group's index.
        group: u32,
    },
    /// A capture group can match characters that are not in the alphabet.
    #[error(
        "capture group {group} can match characters outside the alphabet \
         (note: \\d and \\w match all Unicode digits and letters; use [0-9] or [A-Za-z0-9_])"
    )]
    CaptureOutsideAlphabet {
        /// The group's index.
        group: u32,
    },
    /// A character class in a capture group does not match every alphabet character, so a token
    /// (any alphabet characters) might not match the pattern.
    #[error("capture group {group} has a character class narrower than the alphabet")]
    CaptureNarrowerThanAlphabet {
        /// The group's index.
        group: u32,
    },
    /// The shortest possible encrypted part is below FF1's minimum domain of 1,000,000.
    #[error(
        "pattern's encrypted part can be as short as {min_len} characters; radix {radix} \
         needs at least {required_len} for FF1's minimum domain of 1,000,000"
    )]
    PatternDomainTooSmall {
        /// The alphabet size.
        radix: u32,
        /// The minimum number of captured characters over all matches.
        min_len: usize,
        /// The number of characters needed.
        required_len: usize,
    },

    // ----- values and tokens -----
    /// The value is empty.
    #[error("value is empty")]
    Empty,
    /// The value is longer than [`super::MAX_VALUE_LEN`] bytes.
    #[error("value is {len} bytes long, the maximum is {max}")]
    TooLong {
        /// The value's length in bytes.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The value has a character the template does not accept.
    #[error("value ({len} bytes) contains a character outside the template's alphabet")]
    CharacterOutsideAlphabet {
        /// The value's length in bytes.
        len: usize,
    },
    /// A separator is at the start or end of the value, or next to another separator.
    #[error("value ({len} bytes) has a separator at its start, its end or next to another")]
    MisplacedSeparator {
        /// The value's length in bytes.
        len: usize,
    },
    /// A PAN has 12 to 19 digits (ISO/IEC 7812-1).
    #[error("a PAN has 12 to 19 digits, got {digits}")]
    PanLength {
        /// The number of digits found.
        digits: usize,
    },
    /// The value fails the Luhn check, so it is not a PAN.
    #[error("value ({len} bytes) fails the Luhn check")]
    LuhnCheckFailed {
        /// The value's length in bytes.
        len: usize,
    },
    /// The input to detokenize passes the Luhn check: PAN tokens never do, so it is a PAN.
    #[error("input ({len} bytes) passes the Luhn check, so it is a PAN and not a PAN token")]
    NotAToken {
        /// The input's length in bytes.
        len: usize,
    },
    /// An SSN is `ddd-dd-dddd` or nine digits.
    #[error("an SSN is ddd-dd-dddd or 9 digits; value is {len} bytes")]
    SsnFormat {
        /// The value's length in bytes.
        len: usize,
    },
    /// An e-mail address has exactly one `@` (quoted local parts are not accepted).
    #[error("e-mail address ({len} bytes) must contain exactly one @")]
    EmailAt {
        /// The value's length in bytes.
        len: usize,
    },
    /// An e-mail local part has 1 to 64 bytes (RFC 5321 §4.5.3.1.1).
    #[error("e-mail local part must be 1 to 64 bytes, got {len}")]
    EmailLocalPartLength {
        /// The local part's length in bytes.
        len: usize,
    },
    /// An e-mail local part is a dot-atom of `atext` (RFC 5322 §3.2.3).
    #[error("e-mail local part ({len} bytes) has a character outside RFC 5322 atext")]
    EmailLocalPartCharacter {
        /// The local part's length in bytes.
        len: usize,
    },
    /// An e-mail local part may not start or end with a dot nor have two in a row.
    #[error("e-mail local part ({len} bytes) starts or ends with a dot or has two in a row")]
    EmailLocalPartDot {
        /// The local part's length in bytes.
        len: usize,
    },
    /// An e-mail domain is 1 to 253 bytes of dot-separated LDH labels (RFC 1035 §2.3.1).
    #[error("e-mail domain ({len} bytes) is not a host name of dot-separated LDH labels")]
    EmailDomain {
        /// The domain's length in bytes.
        len: usize,
    },
    /// The value does not match the custom template's pattern.
    #[error("value ({len} bytes) does not match the template's pattern")]
    PatternMismatch {
        /// The value's length in bytes.
        len: usize,
    },
    /// The value has no character the template would encrypt.
    #[error("value ({len} bytes) has no character to encrypt")]
    NothingToEncrypt {
        /// The value's length in bytes.
        len: usize,
    },
    /// The encrypted part of this value is below FF1's minimum domain of 1,000,000.
    #[error(
        "encrypted part has {len} characters of radix {radix}, below FF1's minimum domain of 1,000,000"
    )]
    DomainTooSmall {
        /// The radix.
        radix: u32,
        /// The number of characters that would be encrypted.
        len: usize,
    },

    // ----- keys -----
    /// Key versions start at 1.
    #[error("key version must be at least 1")]
    InvalidKeyVersion,
    /// The PAN token's Luhn residue names a different key-version slot than the version given.
    #[error(
        "token carries key-version slot {token_slot}, which does not match key version {version}"
    )]
    VersionSlotMismatch {
        /// The slot read from the token (1..=9).
        token_slot: u8,
        /// The key version given.
        version: u32,
    },
    /// The FF1 instance has a different radix than the template needs.
    #[error("template needs an FF1 instance of radix {expected}, got radix {got}")]
    RadixMismatch {
        /// The template's radix.
        expected: u32,
        /// The FF1 instance's radix.
        got: u32,
    },
    /// Cycle walking did not reach a valid token within the bound (a custom pattern whose
    /// tokens rarely match it).
    #[error("cycle walking gave up after {steps} FF1 calls")]
    CycleWalkLimit {
        /// The bound.
        steps: u32,
    },
    /// FF1 refused its input (carries lengths only).
    #[error("FF1 refused the input")]
    Ff1(#[from] fpe::Error),
}
