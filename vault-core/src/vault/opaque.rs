//! Opaque vaulted tokens: a keyed permutation of the record id.
//!
//! `tok_` followed by 26 base32 characters: AES-256 (the vault's `token` key) of one block
//! holding an 8-byte template tag and the 8-byte record id. Why a permutation rather than
//! random bytes: ids are sequential, so records append to the SQLite B-tree and a lookup is a
//! primary-key read, with no random index (see BENCHMARKS.md); and two ids never give the same
//! token, so no collision check is needed. The token is the output of a 128-bit pseudorandom
//! permutation, as unpredictable as 128 random bits to anyone without the key, and it carries
//! nothing about the value. A forged or mistyped token decrypts to a wrong tag (probability of
//! passing 2^-64): the facade then answers `NotFound` after a store read under an id no record
//! has, so a forged token costs and answers the same as a deleted one.

use aes::Aes256;
use cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};

use crate::secret::Key32;

/// Every opaque token starts with this.
pub(crate) const PREFIX: &str = "tok_";
/// Length of an opaque token.
pub(crate) const LEN: usize = PREFIX.len() + 26;
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
const TAG_DOMAIN: &[u8] = b"vault/opaque-token/v1\0";

/// The expanded `token` key.
pub(crate) struct Codec {
    aes: Aes256,
}

impl Codec {
    pub(crate) fn new(key: &Key32) -> Codec {
        // Invariant: Key32 always holds exactly 32 bytes, the AES-256 key size.
        #[allow(clippy::expect_used)]
        let aes = Aes256::new_from_slice(key.expose()).expect("32-byte AES-256 key");
        Codec { aes }
    }

    /// The token of record `id` of the template whose tag is `tag`.
    pub(crate) fn encode(&self, tag: &Tag, id: u64) -> String {
        let mut block = [0u8; 16];
        block[..8].copy_from_slice(&tag.0);
        block[8..].copy_from_slice(&id.to_be_bytes());
        self.aes.encrypt_block((&mut block).into());
        let mut out = String::with_capacity(LEN);
        out.push_str(PREFIX);
        base32_encode(&block, &mut out);
        out
    }

    /// The record id of a token of the template whose tag is `tag`, or `None` if it is not one.
    pub(crate) fn decode(&self, tag: &Tag, token: &str) -> Option<u64> {
        let body = token.strip_prefix(PREFIX)?;
        let mut block = base32_decode(body)?;
        self.aes.decrypt_block((&mut block).into());
        let (t, id) = block.split_at(8);
        // The tag is public information (a hash of the template name): a plain comparison is
        // fine, and the id is only used after the store confirms the record.
        if t != tag.0 {
            return None;
        }
        let mut be = [0u8; 8];
        be.copy_from_slice(id);
        Some(u64::from_be_bytes(be))
    }
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec").finish_non_exhaustive()
    }
}

/// Whether `token` is spelled like an opaque token (prefix, 26 base32 characters, canonical
/// trailing bits), whatever key or template made it: such a token that does not decode under
/// a template is unknown (`NotFound`), not malformed.
pub(crate) fn well_formed(token: &str) -> bool {
    token.strip_prefix(PREFIX).and_then(base32_decode).is_some()
}

/// Whether `token` has the opaque shape (prefix and length), before any key is used.
pub(crate) fn looks_opaque(token: &str) -> bool {
    token.len() == LEN && token.starts_with(PREFIX)
}

/// A template's 8-byte tag inside its opaque tokens: a SHA-256 of the name, computed once per
/// batch rather than once per token.
pub(crate) struct Tag([u8; 8]);

impl Tag {
    pub(crate) fn of(template: &str) -> Tag {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(TAG_DOMAIN);
        ctx.update(template.as_bytes());
        let digest = ctx.finish();
        let mut out = [0u8; 8];
        out.copy_from_slice(&digest.as_ref()[..8]);
        Tag(out)
    }
}

/// RFC 4648 base32, lower case, no padding: 16 bytes → 26 characters.
fn base32_encode(bytes: &[u8; 16], out: &mut String) {
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (5 - bits)) & 31) as usize]));
    }
}

fn base32_decode(text: &str) -> Option<[u8; 16]> {
    if text.len() != 26 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut acc: u32 = 0;
    let mut bits = 0;
    let mut n = 0;
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            if n == 16 {
                return None;
            }
            out[n] = (acc >> bits) as u8;
            n += 1;
        }
    }
    // 26 × 5 = 130 bits: the last 2 must be zero, so each token has one spelling.
    if n != 16 || acc & ((1 << bits) - 1) != 0 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let key = Key32::generate().unwrap();
        let codec = Codec::new(&key);
        for id in [0u64, 1, 2, 1 << 40, u64::MAX] {
            let token = codec.encode(&Tag::of("pan"), id);
            assert_eq!(token.len(), LEN);
            assert!(looks_opaque(&token));
            assert_eq!(codec.decode(&Tag::of("pan"), &token), Some(id));
            assert_eq!(
                codec.decode(&Tag::of("ssn"), &token),
                None,
                "bound to its template"
            );
        }
        // Consecutive ids give unrelated tokens.
        assert_ne!(
            codec.encode(&Tag::of("pan"), 1)[4..10],
            codec.encode(&Tag::of("pan"), 2)[4..10]
        );
    }

    #[test]
    fn forged_tokens_are_refused() {
        let codec = Codec::new(&Key32::generate().unwrap());
        let token = codec.encode(&Tag::of("pan"), 42);
        let mut forged = token.clone().into_bytes();
        forged[10] = if forged[10] == b'a' { b'b' } else { b'a' };
        assert_eq!(
            codec.decode(&Tag::of("pan"), &String::from_utf8(forged).unwrap()),
            None
        );
        for bad in [
            "",
            "tok_",
            "tok_AAAAAAAAAAAAAAAAAAAAAAAAAA",
            "tok_aaaaaaaaaaaaaaaaaaaaaaaaa1",
        ] {
            assert_eq!(codec.decode(&Tag::of("pan"), bad), None);
        }
        assert!(well_formed(&token));
        assert!(!well_formed("tok_aaaaaaaaaaaaaaaaaaaaaaaaa1"));
        assert!(!well_formed("tok_"));
        // The non-canonical spelling (trailing bits set) is refused.
        let mut last = token.clone().into_bytes();
        let i = last.len() - 1;
        let v = ALPHABET.iter().position(|&a| a == last[i]).unwrap();
        last[i] = ALPHABET[v ^ 1];
        assert_eq!(
            codec.decode(&Tag::of("pan"), &String::from_utf8(last).unwrap()),
            None
        );
    }
}
