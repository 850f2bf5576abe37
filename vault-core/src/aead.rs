//! AES-256-GCM (SP 800-38D) through `ring`, with random 96-bit nonces.
//!
//! Every sealed blob in the crate (envelopes, wrapped keys, the root-key check record) uses the
//! layout `nonce (12) ‖ ciphertext ‖ tag (16)` behind its own header. Random nonces are safe for
//! at most 2^32 seals per key (SP 800-38D §8.3); callers that seal many times count them (see
//! `keys::nonces`).

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::secret::{Key32, RngError, fill_random};

/// GCM nonce length (96 bits, SP 800-38D §8.2.2).
pub(crate) const NONCE: usize = NONCE_LEN;
/// GCM tag length (128 bits).
pub(crate) const TAG: usize = 16;

/// An expanded AES-256-GCM key.
pub(crate) struct Gcm(LessSafeKey);

impl Gcm {
    pub(crate) fn new(key: &Key32) -> Self {
        // Invariant: AES-256-GCM takes exactly 32 key bytes, which `Key32` always holds; `ring`
        // refuses only other lengths.
        #[allow(clippy::expect_used)]
        let unbound = UnboundKey::new(&AES_256_GCM, key.expose()).expect("32-byte AES-256 key");
        Self(LessSafeKey::new(unbound))
    }

    /// Appends `nonce ‖ ciphertext ‖ tag` to `out`, with a fresh random nonce.
    pub(crate) fn seal_into(
        &self,
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RngError> {
        let mut nonce = [0u8; NONCE];
        fill_random(&mut nonce)?;
        out.reserve(NONCE + plaintext.len() + TAG);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .0
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[start..],
            )
            // `ring` refuses only inputs longer than GCM's 2^36-32 byte limit (SP 800-38D §5.2.1.1),
            // far beyond any stored value; report it like an RNG failure would be: no detail.
            .map_err(|_| RngError)?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Opens `nonce ‖ ciphertext ‖ tag`; `None` on any failure (wrong key, AAD, bit flip, length).
    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        if sealed.len() < NONCE + TAG {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = zeroize::Zeroizing::new(body.to_vec());
        let len = self
            .0
            .open_in_place(nonce, Aad::from(aad), buf.as_mut_slice())
            .ok()?
            .len();
        buf.truncate(len);
        Some(buf)
    }
}

impl std::fmt::Debug for Gcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gcm").finish_non_exhaustive()
    }
}
