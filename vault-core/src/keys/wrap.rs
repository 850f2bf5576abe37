//! Wrapping named key material under the root key (AES-256-GCM, SP 800-38D).
//!
//! Wrapped format: `[format 0x01][nonce 12][ciphertext 32][tag 16]` (61 bytes). The associated
//! data binds the vault id, key name, version and purpose (each length-prefixed), so a wrapped
//! key copied to another row, name, purpose or vault fails to unwrap instead of handing out the
//! wrong key.

use super::{KeyError, Purpose};
use crate::aead::{Gcm, NONCE, TAG};
use crate::encoding::put_field;
use crate::secret::Key32;

/// Version byte of the wrapped-key format.
const FORMAT: u8 = 1;
/// Length of a wrapped key.
pub const WRAPPED_LEN: usize = 1 + NONCE + 32 + TAG;
/// Domain separation: this AAD can never equal an envelope's or a check record's.
const DOMAIN: &[u8] = b"vault/key-wrap/v1";

/// Where a wrapped key belongs: everything bound into its associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrapContext<'a> {
    /// The vault's id.
    pub vault_id: &'a [u8],
    /// Key name, e.g. `data/pan`.
    pub name: &'a str,
    /// Key version.
    pub version: u32,
    /// Key purpose.
    pub purpose: Purpose,
}

impl WrapContext<'_> {
    fn aad(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(64);
        put_field(&mut aad, DOMAIN);
        aad.push(FORMAT);
        put_field(&mut aad, self.vault_id);
        put_field(&mut aad, self.name.as_bytes());
        aad.extend_from_slice(&self.version.to_be_bytes());
        put_field(&mut aad, self.purpose.as_str().as_bytes());
        aad
    }
}

/// Wraps `material` under `root` for the row described by `ctx`.
pub fn wrap(root: &Key32, ctx: &WrapContext<'_>, material: &Key32) -> Result<Vec<u8>, KeyError> {
    let mut out = Vec::with_capacity(WRAPPED_LEN);
    out.push(FORMAT);
    Gcm::new(root).seal_into(&ctx.aad(), material.expose(), &mut out)?;
    Ok(out)
}

/// Unwraps a key wrapped by [`wrap()`] with the same root key and context. Any mismatch (root key,
/// vault id, name, version, purpose, a flipped bit, a wrong length) is [`KeyError::Integrity`].
pub fn unwrap(root: &Key32, ctx: &WrapContext<'_>, wrapped: &[u8]) -> Result<Key32, KeyError> {
    match wrapped.split_first() {
        Some((&FORMAT, sealed)) if wrapped.len() == WRAPPED_LEN => {
            let plain = Gcm::new(root)
                .open(&ctx.aad(), sealed)
                .ok_or(KeyError::Integrity)?;
            Key32::from_slice(&plain).ok_or(KeyError::Integrity)
        }
        _ => Err(KeyError::Integrity),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> WrapContext<'static> {
        WrapContext {
            vault_id: b"vault-1",
            name: "data/pan",
            version: 3,
            purpose: Purpose::Data,
        }
    }

    fn fails(root: &Key32, ctx: &WrapContext<'_>, wrapped: &[u8]) {
        assert!(matches!(
            unwrap(root, ctx, wrapped),
            Err(KeyError::Integrity)
        ));
    }

    #[test]
    fn round_trip() {
        let root = Key32::generate().unwrap();
        let material = Key32::generate().unwrap();
        let wrapped = wrap(&root, &ctx(), &material).unwrap();
        assert_eq!(wrapped.len(), WRAPPED_LEN);
        let back = unwrap(&root, &ctx(), &wrapped).unwrap();
        assert_eq!(back.expose(), material.expose());
        // Fresh nonce each time.
        assert_ne!(wrap(&root, &ctx(), &material).unwrap(), wrapped);
    }

    #[test]
    fn every_swap_fails() {
        let root = Key32::generate().unwrap();
        let wrapped = wrap(&root, &ctx(), &Key32::generate().unwrap()).unwrap();
        fails(
            &root,
            &WrapContext {
                version: 2,
                ..ctx()
            },
            &wrapped,
        );
        fails(
            &root,
            &WrapContext {
                name: "data/ssn",
                ..ctx()
            },
            &wrapped,
        );
        fails(
            &root,
            &WrapContext {
                purpose: Purpose::Fpe,
                ..ctx()
            },
            &wrapped,
        );
        fails(
            &root,
            &WrapContext {
                vault_id: b"vault-2",
                ..ctx()
            },
            &wrapped,
        );
        fails(&Key32::generate().unwrap(), &ctx(), &wrapped);
        // Name/vault-id boundary cannot be shifted.
        let a = WrapContext {
            vault_id: b"ab",
            name: "c",
            ..ctx()
        };
        let b = WrapContext {
            vault_id: b"a",
            name: "bc",
            ..ctx()
        };
        fails(
            &root,
            &b,
            &wrap(&root, &a, &Key32::generate().unwrap()).unwrap(),
        );
    }

    #[test]
    fn flipped_bits_and_bad_lengths_fail() {
        let root = Key32::generate().unwrap();
        let wrapped = wrap(&root, &ctx(), &Key32::generate().unwrap()).unwrap();
        for i in 0..wrapped.len() {
            for bit in [0x01, 0x80] {
                let mut bad = wrapped.clone();
                bad[i] ^= bit;
                fails(&root, &ctx(), &bad);
            }
        }
        fails(&root, &ctx(), &wrapped[..WRAPPED_LEN - 1]);
        fails(&root, &ctx(), &[wrapped.as_slice(), &[0]].concat());
        fails(&root, &ctx(), &[]);
    }

    #[test]
    fn error_message_has_no_detail() {
        let err = unwrap(&Key32::generate().unwrap(), &ctx(), &[1; WRAPPED_LEN]).unwrap_err();
        assert_eq!(err.to_string(), "wrapped key failed its integrity check");
    }
}
