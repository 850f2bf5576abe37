/// Why FF1 refused a key, a radix or an input. Messages never contain numerals or key bytes:
/// at most lengths and the rule that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key is not 16, 24 or 32 bytes long.
    #[error("FF1 key must be 16, 24 or 32 bytes, got {len}")]
    InvalidKeyLength {
        /// The length given.
        len: usize,
    },
    /// The radix is outside 2..=65536.
    #[error("FF1 radix must be between 2 and 65536, got {radix}")]
    InvalidRadix {
        /// The radix given.
        radix: u32,
    },
    /// A numeral is not below the radix.
    #[error("input contains a numeral outside the alphabet of radix {radix}")]
    NumeralOutOfRange {
        /// The radix in force.
        radix: u32,
    },
    /// The input is shorter than 2 numerals.
    #[error("FF1 input must be at least 2 numerals long, got {len}")]
    TooShort {
        /// The input length.
        len: usize,
    },
    /// The input is longer than [`super::MAX_LEN`].
    #[error("FF1 input must be at most {max} numerals long, got {len}")]
    TooLong {
        /// The input length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// radix^len is below 1,000,000 (SP 800-38G Rev. 1).
    #[error("FF1 domain radix^len is below 1,000,000 (radix {radix}, length {len})")]
    DomainTooSmall {
        /// The radix.
        radix: u32,
        /// The input length.
        len: usize,
    },
    /// The tweak is longer than [`super::MAX_TWEAK_LEN`].
    #[error("FF1 tweak must be at most {max} bytes, got {len}")]
    TweakTooLong {
        /// The tweak length.
        len: usize,
        /// The bound.
        max: usize,
    },
}
