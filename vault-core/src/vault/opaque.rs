//! Opaque vaulted tokens: a keyed permutation of the record id and a per-record check value.
//!
//! `tok_` followed by 26 base32 characters: AES-256 (the vault's `token` key) of one block.
//! Two layouts share the shape:
//! - **checked** (every token issued now): an 8-byte random check value, stored with the
//!   record, and the 8-byte record id;
//! - **legacy** (tokens issued before check values existed): an 8-byte template tag and the
//!   8-byte record id. A block whose first half is the template's tag is read as legacy; a new
//!   check value never equals the tag (it is drawn again), so the two never meet.
//!
//! Why a permutation of the id: ids are sequential, so records append to the SQLite B-tree and
//! a lookup is a primary-key read, with no random index (see BENCHMARKS.md). Why the check
//! value: a store that comes back older than what it acknowledged (a power cut under
//! `synchronous = normal`, a restored backup, a promoted asynchronous replica) hands the lost
//! ids out again, and a token that is only a permutation of its id would then name another
//! customer's record. A checked token resolves only to the record holding its own check value
//! (compared after the primary-key read), so an old token names its own record or nothing, and
//! a new token under a reused id differs from the old one (the check values differ, except with
//! probability 2^-64). Legacy tokens resolve only to records without a check value, which no
//! record made now is.
//!
//! The token is the output of a 128-bit pseudorandom permutation, as unpredictable as 128
//! random bits to anyone without the key, and it carries nothing about the value. A forged or
//! mistyped token names a random id and a random check value: the facade answers `NotFound`
//! after a store read, so a forged token costs and answers the same as a deleted one.

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

    /// The checked token of record `id` whose check value is `check` (see [`draw_check`]).
    pub(crate) fn encode(&self, check: u64, id: u64) -> String {
        self.encode_block(check.to_be_bytes(), id)
    }

    /// The legacy token of record `id` of the template whose tag is `tag`: what a record
    /// stored without a check value was handed out as, and is handed out as again (a
    /// deterministic or idempotent repeat).
    pub(crate) fn encode_legacy(&self, tag: &Tag, id: u64) -> String {
        self.encode_block(tag.0, id)
    }

    fn encode_block(&self, head: [u8; 8], id: u64) -> String {
        let mut block = [0u8; 16];
        block[..8].copy_from_slice(&head);
        block[8..].copy_from_slice(&id.to_be_bytes());
        self.aes.encrypt_block((&mut block).into());
        let mut out = String::with_capacity(LEN);
        out.push_str(PREFIX);
        base32_encode(&block, &mut out);
        out
    }

    /// What a well-spelled token of the template whose tag is `tag` names, or `None` if it is
    /// not spelled like an opaque token at all.
    pub(crate) fn decode(&self, tag: &Tag, token: &str) -> Option<Decoded> {
        let body = token.strip_prefix(PREFIX)?;
        let mut block = base32_decode(body)?;
        self.aes.decrypt_block((&mut block).into());
        let (head, id) = block.split_at(8);
        let mut be = [0u8; 8];
        be.copy_from_slice(id);
        let id = u64::from_be_bytes(be);
        // The tag is public information (a hash of the template name): a plain comparison is
        // fine. The check value is compared by the caller, after the store read.
        if head == tag.0 {
            return Some(Decoded { id, check: None });
        }
        be.copy_from_slice(head);
        Some(Decoded {
            id,
            check: Some(u64::from_be_bytes(be)),
        })
    }
}

/// What an opaque token names: a record id and the check value the record must hold (`None`:
/// a legacy token, whose record must hold none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decoded {
    pub(crate) id: u64,
    pub(crate) check: Option<u64>,
}

/// A fresh check value for a record of the template whose tag is `tag`, from 8 random bytes
/// (`random`): drawn again in the 2^-64 case that it equals the tag, so a checked token never
/// reads as a legacy one.
pub(crate) fn draw_check(
    tag: &Tag,
    mut random: impl FnMut() -> Result<[u8; 8], crate::secret::RngError>,
) -> Result<u64, crate::secret::RngError> {
    loop {
        let bytes = random()?;
        if bytes != tag.0 {
            return Ok(u64::from_be_bytes(bytes));
        }
    }
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec").finish_non_exhaustive()
    }
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
    fn round_trip_and_layouts() {
        let key = Key32::generate().unwrap();
        let codec = Codec::new(&key);
        let pan = Tag::of("pan");
        for id in [0u64, 1, 2, 1 << 40, u64::MAX] {
            for check in [0u64, 7, u64::MAX] {
                let token = codec.encode(check, id);
                assert_eq!(token.len(), LEN);
                assert!(looks_opaque(&token));
                assert_eq!(
                    codec.decode(&pan, &token),
                    Some(Decoded {
                        id,
                        check: Some(check)
                    })
                );
            }
            let legacy = codec.encode_legacy(&pan, id);
            assert_eq!(legacy.len(), LEN);
            assert_eq!(
                codec.decode(&pan, &legacy),
                Some(Decoded { id, check: None })
            );
            // Under another template a legacy token is not legacy: it names a check value no
            // record of that template holds.
            assert!(
                codec
                    .decode(&Tag::of("ssn"), &legacy)
                    .unwrap()
                    .check
                    .is_some()
            );
        }
        // Consecutive ids, and one id under two check values, give unrelated tokens.
        assert_ne!(codec.encode(5, 1)[4..10], codec.encode(5, 2)[4..10]);
        assert_ne!(codec.encode(5, 1), codec.encode(6, 1));
        assert_ne!(codec.encode_legacy(&pan, 1), codec.encode(9, 1));
    }

    #[test]
    fn a_check_value_never_reads_as_legacy() {
        let tag = Tag::of("pan");
        let mut draws = [tag.0, tag.0, [1; 8]].into_iter();
        let check = draw_check(&tag, || Ok(draws.next().unwrap())).unwrap();
        assert_eq!(check, u64::from_be_bytes([1; 8]));
        assert!(draw_check(&tag, || Err(crate::secret::RngError)).is_err());
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let codec = Codec::new(&Key32::generate().unwrap());
        let token = codec.encode(3, 42);
        for bad in [
            "",
            "tok_",
            "tok_AAAAAAAAAAAAAAAAAAAAAAAAAA",
            "tok_aaaaaaaaaaaaaaaaaaaaaaaaa1",
        ] {
            assert_eq!(codec.decode(&Tag::of("pan"), bad), None);
        }
        // A mistyped token decodes, to another id and check value (the store read refuses it).
        let mut typo = token.clone().into_bytes();
        typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
        let d = codec
            .decode(&Tag::of("pan"), &String::from_utf8(typo).unwrap())
            .unwrap();
        assert_ne!(
            d,
            Decoded {
                id: 42,
                check: Some(3)
            }
        );
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
