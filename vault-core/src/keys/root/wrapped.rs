//! A root key wrapped by a key that never leaves a device: an HSM over PKCS#11 today, a cloud
//! KMS later.
//!
//! The vault stores only the wrapped root key ([`WrappedRoot`], metadata [`META_WRAPPED`]) and
//! the name of the wrapping key. Unsealing asks the device to unwrap it; nobody types or holds
//! the root key, which is what lets a daemon unseal itself at start ("auto-unseal") without
//! that secret sitting in a file next to it.
//!
//! This crate knows only the [`RootWrapper`] trait: the device code (`vault-daemon`'s `hsm`
//! module) lives where network and foreign libraries are allowed. A new kind of device is a
//! new implementation whose [`RootWrapper::key_ref`] starts with its own scheme; nothing here
//! changes. The wrapping is bound to the vault: implementations must authenticate the vault id
//! given as `aad` (AES-GCM's associated data, or the KMS's encryption context), so a wrapped
//! root copied into another vault does not unwrap there.

use zeroize::Zeroizing;

use super::KeyError;
use crate::secret::Key32;

/// Metadata key of the encoded [`WrappedRoot`] (wrapped-root vaults only).
pub const META_WRAPPED: &str = "root_wrapped";

/// Encoding version of [`WrappedRoot::encode`].
const FORMAT: u8 = 1;
/// Bounds on the decoded parts: a tampered vault file gets a clear error, not a huge allocation.
const MAX_REF: usize = 1024;
const MAX_BLOB: usize = 4096;

/// Something that wraps and unwraps the root key with a key it never exports.
///
/// Errors are [`KeyError::Wrapper`]: they must say what failed (library, token, PIN, key) and
/// never carry the root key, the PIN or the wrapped bytes.
pub trait RootWrapper: Send + Sync {
    /// Names the wrapping key, stable across restarts (for PKCS#11 an RFC 7512 style
    /// `pkcs11:token=…;object=…`). Stored with the vault, so a daemon configured with another
    /// key is told which one the vault needs instead of failing obscurely.
    fn key_ref(&self) -> String;

    /// Wraps the root key's bytes, authenticating `aad` (the vault id). The bytes are handed
    /// over only to be passed to the device: an implementation keeps no copy.
    fn wrap(&self, root: &[u8; 32], aad: &[u8]) -> Result<Vec<u8>, KeyError>;

    /// Unwraps what [`RootWrapper::wrap`] returned, checking `aad`; the bytes are wiped once
    /// this crate has moved them into a [`Key32`].
    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError>;
}

/// What a wrapped-root vault stores: which key wrapped the root, and the wrapped bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedRoot {
    /// [`RootWrapper::key_ref`] of the wrapping key.
    pub key_ref: String,
    /// The wrapped root key (ciphertext and tag; opaque to this crate).
    pub blob: Vec<u8>,
}

impl std::fmt::Debug for WrappedRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrappedRoot")
            .field("key_ref", &self.key_ref)
            .field("blob", &format_args!("[{} bytes]", self.blob.len()))
            .finish()
    }
}

impl WrappedRoot {
    /// Wraps `root` with `wrapper` for the vault `vault_id`.
    pub fn seal(
        wrapper: &dyn RootWrapper,
        root: &Key32,
        vault_id: &[u8],
    ) -> Result<Self, KeyError> {
        Ok(WrappedRoot {
            key_ref: wrapper.key_ref(),
            blob: wrapper.wrap(root.expose(), vault_id)?,
        })
    }

    /// Unwraps with `wrapper`, which must name the same key as the one that wrapped.
    pub fn open(&self, wrapper: &dyn RootWrapper, vault_id: &[u8]) -> Result<Key32, KeyError> {
        let given = wrapper.key_ref();
        if given != self.key_ref {
            return Err(KeyError::Wrapper {
                reason: format!(
                    "the vault's root key is wrapped by {}, but the configured key is {given}",
                    self.key_ref
                ),
            });
        }
        let bytes = wrapper.unwrap(&self.blob, vault_id)?;
        Key32::from_slice(&bytes).ok_or_else(|| KeyError::Wrapper {
            reason: format!(
                "{given} unwrapped {} bytes, not a 32-byte root key",
                bytes.len()
            ),
        })
    }

    /// `[format 1][ref len u16 BE][ref][blob len u16 BE][blob]`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + self.key_ref.len() + self.blob.len());
        out.push(FORMAT);
        for part in [self.key_ref.as_bytes(), &self.blob] {
            // Both are bounded far below u16::MAX by `decode`'s limits and by what wrappers
            // produce; saturating keeps the encoding total.
            out.extend_from_slice(&u16::try_from(part.len()).unwrap_or(u16::MAX).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    /// Strict inverse of [`WrappedRoot::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, KeyError> {
        let bad = |reason: &str| KeyError::Wrapper {
            reason: format!("stored wrapped root key is malformed: {reason}"),
        };
        let (&format, mut rest) = bytes.split_first().ok_or_else(|| bad("empty"))?;
        if format != FORMAT {
            return Err(bad("unknown format version"));
        }
        let mut part = |max: usize| -> Result<Vec<u8>, KeyError> {
            let (len, tail) = rest.split_at_checked(2).ok_or_else(|| bad("truncated"))?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            if len == 0 || len > max {
                return Err(bad("a part's length is out of bounds"));
            }
            let (value, tail) = tail.split_at_checked(len).ok_or_else(|| bad("truncated"))?;
            rest = tail;
            Ok(value.to_vec())
        };
        let key_ref = String::from_utf8(part(MAX_REF)?).map_err(|_| bad("key name not UTF-8"))?;
        let blob = part(MAX_BLOB)?;
        if !rest.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(WrappedRoot { key_ref, blob })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aead::Gcm;

    /// A software stand-in with the trait's contract (AES-GCM under a key of its own, vault id
    /// as AAD): for the encoding and the checks here, never for a test of a device.
    struct Soft(Key32, &'static str);

    impl RootWrapper for Soft {
        fn key_ref(&self) -> String {
            self.1.to_owned()
        }
        fn wrap(&self, root: &[u8; 32], aad: &[u8]) -> Result<Vec<u8>, KeyError> {
            let mut out = Vec::new();
            Gcm::new(&self.0).seal_into(aad, root, &mut out).unwrap();
            Ok(out)
        }
        fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
            Gcm::new(&self.0)
                .open(aad, wrapped)
                .ok_or_else(|| KeyError::Wrapper {
                    reason: "unwrap refused".into(),
                })
        }
    }

    #[test]
    fn round_trip_binds_key_and_vault() {
        let root = Key32::generate().unwrap();
        let w = Soft(Key32::generate().unwrap(), "soft:a");
        let sealed = WrappedRoot::seal(&w, &root, b"vault-1").unwrap();
        let decoded = WrappedRoot::decode(&sealed.encode()).unwrap();
        assert_eq!(decoded, sealed);
        let back = decoded.open(&w, b"vault-1").unwrap();
        assert_eq!(back.expose(), root.expose());
        // Another vault id, another key name: refused, and the names are in the message.
        assert!(decoded.open(&w, b"vault-2").is_err());
        let other = Soft(Key32::generate().unwrap(), "soft:b");
        let msg = decoded.open(&other, b"vault-1").unwrap_err().to_string();
        assert!(msg.contains("soft:a") && msg.contains("soft:b"), "{msg}");
        // Debug shows the key name and the length only.
        assert!(!format!("{decoded:?}").contains(&format!("{:?}", &decoded.blob[..4])));
    }

    #[test]
    fn malformed_encodings_are_refused() {
        let good = WrappedRoot {
            key_ref: "k".into(),
            blob: vec![1, 2, 3],
        }
        .encode();
        for n in 0..good.len() {
            assert!(WrappedRoot::decode(&good[..n]).is_err(), "prefix {n}");
        }
        let mut extra = good.clone();
        extra.push(0);
        assert!(WrappedRoot::decode(&extra).is_err());
        let mut version = good;
        version[0] = 9;
        assert!(WrappedRoot::decode(&version).is_err());
    }
}
