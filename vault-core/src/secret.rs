//! Key-material types: secrets live in `secrecy` boxes, are wiped on drop, and never print.
//!
//! [`Key32`] has no `Clone`, `Serialize` or `Display`, and its `Debug` prints `Key32(..)`. Its
//! bytes are reachable only through `Key32::expose`, which is `pub(crate)`, so
//! `grep expose` lists every place in the crate that touches key bytes.

use std::fmt;

use secrecy::SecretBox;
pub use secrecy::{ExposeSecret, SecretString};

/// The operating system's random number generator failed. Carries no detail: there is nothing
/// a caller can do but retry later or stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the operating system's random number generator failed")]
pub struct RngError;

/// Fills `buf` from the OS CSPRNG (`getrandom(2)` on Linux).
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<(), RngError> {
    getrandom::fill(buf).map_err(|_| RngError)
}

/// 256 bits of key material: a root key, a data key, an FF1 key, an HMAC key.
pub struct Key32(SecretBox<[u8; 32]>);

impl Key32 {
    /// Fresh key material from the OS CSPRNG, generated in place inside its box so no copy is
    /// left on the stack.
    pub fn generate() -> Result<Self, RngError> {
        let mut result = Ok(());
        let key = SecretBox::init_with_mut(|k: &mut [u8; 32]| result = fill_random(k));
        result.map(|()| Self(key))
    }

    /// Takes key bytes; the caller's buffer is wiped.
    pub(crate) fn from_bytes(bytes: &mut [u8; 32]) -> Self {
        let key = SecretBox::init_with_mut(|k: &mut [u8; 32]| k.copy_from_slice(bytes));
        zeroize::Zeroize::zeroize(bytes);
        Self(key)
    }

    /// Takes key bytes from a slice of exactly 32 bytes (`None` otherwise). The caller owns the
    /// slice and must wipe it.
    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 32 {
            return None;
        }
        Some(Self(SecretBox::init_with_mut(|k: &mut [u8; 32]| {
            k.copy_from_slice(bytes)
        })))
    }

    /// The key bytes. Crate-private on purpose: only the crypto modules may see them.
    pub(crate) fn expose(&self) -> &[u8; 32] {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Key32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key32(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_gives_distinct_keys() {
        let a = Key32::generate().unwrap();
        let b = Key32::generate().unwrap();
        assert_ne!(a.expose(), b.expose());
        assert_ne!(a.expose(), &[0u8; 32]);
    }

    #[test]
    fn from_bytes_wipes_the_source() {
        let mut bytes = [7u8; 32];
        let key = Key32::from_bytes(&mut bytes);
        assert_eq!(bytes, [0u8; 32]);
        assert_eq!(key.expose(), &[7u8; 32]);
    }

    #[test]
    fn from_slice_wants_32_bytes() {
        assert!(Key32::from_slice(&[1u8; 31]).is_none());
        assert!(Key32::from_slice(&[1u8; 33]).is_none());
        assert!(Key32::from_slice(&[1u8; 32]).is_some());
    }

    #[test]
    fn debug_prints_no_key_bytes() {
        let key = Key32::from_slice(&[0xAB; 32]).unwrap();
        let s = format!("{key:?} {key:#?}");
        assert_eq!(format!("{key:?}"), "Key32(..)");
        assert!(!s.to_lowercase().contains("ab"), "{s}");
        assert!(!s.contains("171"), "{s}");
        let pw = SecretString::from("hunter2-passphrase");
        assert!(!format!("{pw:?}").contains("hunter2"));
    }
}
