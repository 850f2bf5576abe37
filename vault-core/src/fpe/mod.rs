//! FF1 format-preserving encryption (NIST SP 800-38G, Rev. 1 rules).
//!
//! Implementation lands in the next commit; this skeleton fixes the public API.

mod error;

pub use error::Error;

/// Smallest radix FF1 accepts (SP 800-38G §5.2).
pub const MIN_RADIX: u32 = 2;
/// Largest radix FF1 accepts (SP 800-38G §5.2: radix ≤ 2^16).
pub const MAX_RADIX: u32 = 1 << 16;
/// Smallest domain radix^len accepted (SP 800-38G Rev. 1).
pub const MIN_DOMAIN: u64 = 1_000_000;
/// Longest input accepted, in numerals.
pub const MAX_LEN: usize = 4096;
/// Longest tweak accepted, in bytes.
pub const MAX_TWEAK_LEN: usize = 1024;

/// An FF1 instance: one AES key and one radix.
pub struct Ff1 {
    radix: u32,
}

impl Ff1 {
    /// Creates an FF1 instance from a 16-, 24- or 32-byte AES key.
    pub fn new(key: &[u8], radix: u32) -> Result<Ff1, Error> {
        let _ = key;
        Ok(Ff1 { radix })
    }

    /// The radix this instance works in.
    pub fn radix(&self) -> u32 {
        self.radix
    }

    /// Encrypts `numerals` (each below the radix) under `tweak`.
    pub fn encrypt(&self, tweak: &[u8], numerals: &[u16]) -> Result<Vec<u16>, Error> {
        let mut out = numerals.to_vec();
        self.encrypt_in_place(tweak, &mut out)?;
        Ok(out)
    }

    /// Decrypts `numerals` under `tweak`.
    pub fn decrypt(&self, tweak: &[u8], numerals: &[u16]) -> Result<Vec<u16>, Error> {
        let mut out = numerals.to_vec();
        self.decrypt_in_place(tweak, &mut out)?;
        Ok(out)
    }

    /// Encrypts in place, without allocating on the fast path.
    pub fn encrypt_in_place(&self, tweak: &[u8], numerals: &mut [u16]) -> Result<(), Error> {
        let _ = (tweak, numerals);
        Ok(())
    }

    /// Decrypts in place, without allocating on the fast path.
    pub fn decrypt_in_place(&self, tweak: &[u8], numerals: &mut [u16]) -> Result<(), Error> {
        let _ = (tweak, numerals);
        Ok(())
    }
}

impl std::fmt::Debug for Ff1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ff1")
            .field("radix", &self.radix)
            .finish_non_exhaustive()
    }
}
