//! The audit key file: the chain MAC key and the checkpoint signing seed.
//!
//! The file is created at first start with mode 0600 and is independent of the vault's root key,
//! so the log works while the vault is sealed (denials while sealed are audited too). The limit
//! of that choice: whoever can read this file can forge a chain (MACs) and checkpoints
//! (signatures). An auditor who holds only the exported public checkpoint key can check the
//! signatures and the chain's linkage, not the MACs of individual events.

use std::fmt;
use std::fs;

use std::path::Path;

use ring::hmac;
use ring::signature::{self, Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::AuditError;

/// Label that derives the token-reference key from the audit key, so a token reference can
/// never be confused with (or replayed as) a chain MAC.
const TOKEN_REF_LABEL: &[u8] = b"vault-audit token-ref v1";

/// The secret keys of one audit log. No `Clone`, no `Serialize`; `Debug` shows only the public key.
pub struct Keys {
    pub(crate) mac: hmac::Key,
    pub(crate) token: hmac::Key,
    pub(crate) signing: Ed25519KeyPair,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("public", &self.public_key())
            .finish_non_exhaustive()
    }
}

/// The Ed25519 public key that verifies checkpoints; safe to hand to an auditor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicKey(pub(crate) [u8; 32]);

impl PublicKey {
    /// Lower-case hex, the export format (`vaultctl audit public-key`).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parse the export format.
    pub fn from_hex(text: &str) -> Result<Self, AuditError> {
        let bytes = hex::decode(text.trim()).map_err(|_| AuditError::PublicKey)?;
        Ok(PublicKey(
            bytes.try_into().map_err(|_| AuditError::PublicKey)?,
        ))
    }

    pub(crate) fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ED25519, self.0)
            .verify(message, sig)
            .is_ok()
    }
}

/// What a verifier holds: the public checkpoint key, and the MAC key when the verifier is the
/// operator (with the key file) rather than an outside auditor.
pub struct VerifyKeys {
    pub(crate) mac: Option<hmac::Key>,
    pub(crate) public: PublicKey,
}

impl fmt::Debug for VerifyKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyKeys")
            .field("public", &self.public)
            .field("has_mac_key", &self.mac.is_some())
            .finish_non_exhaustive()
    }
}

impl VerifyKeys {
    /// An auditor's keys: signatures and linkage are checked, event MACs are not.
    pub fn public_only(public: PublicKey) -> Self {
        VerifyKeys { mac: None, public }
    }
}

/// On-disk form. Hex strings are wrapped in `Zeroizing` as soon as they are read.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    version: u32,
    mac_key: String,
    signing_seed: String,
}

impl Keys {
    /// Load the key file, creating it (0600, fresh random keys) if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, AuditError> {
        match fs::symlink_metadata(path) {
            Ok(_) => Keys::load(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Keys::create(path),
            Err(e) => Err(AuditError::io(path, e)),
        }
    }

    /// Load an existing key file. Refuses a file readable by group or others.
    pub fn load(path: &Path) -> Result<Self, AuditError> {
        let key_err = |reason: &str| AuditError::KeyFile {
            path: path.to_owned(),
            reason: reason.into(),
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(path)
                .map_err(|e| AuditError::io(path, e))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(key_err("permissions are wider than 0600"));
            }
        }
        let text = Zeroizing::new(fs::read_to_string(path).map_err(|e| AuditError::io(path, e))?);
        let file: KeyFile = serde_json::from_str(&text).map_err(|_| key_err("not a key file"))?;
        let file = Zeroizing::new(file);
        if file.version != 1 {
            return Err(key_err("unsupported key file version"));
        }
        let mac = decode32(&file.mac_key).ok_or_else(|| key_err("bad mac_key"))?;
        let seed = decode32(&file.signing_seed).ok_or_else(|| key_err("bad signing_seed"))?;
        Keys::from_material(&mac, &seed).ok_or_else(|| key_err("bad signing_seed"))
    }

    fn create(path: &Path) -> Result<Self, AuditError> {
        let mut mac = Zeroizing::new([0u8; 32]);
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut mac[..]).map_err(|_| AuditError::Random)?;
        getrandom::fill(&mut seed[..]).map_err(|_| AuditError::Random)?;
        let text = Zeroizing::new(
            serde_json::to_string(&KeyFile {
                version: 1,
                mac_key: hex::encode(&mac[..]),
                signing_seed: hex::encode(&seed[..]),
            })
            .map_err(|_| AuditError::Random)?,
        );
        // Created once, atomically: the key file either does not exist or is complete, and a
        // concurrent first start cannot overwrite it.
        match crate::durable::create_once(path, text.as_bytes(), 0o600) {
            Ok(true) => Keys::from_material(&mac, &seed).ok_or(AuditError::Random),
            // Lost a race with another first start: use the winner's keys.
            Ok(false) => Keys::load(path),
            Err(e) => Err(AuditError::io(path, e)),
        }
    }

    fn from_material(mac: &[u8; 32], seed: &[u8; 32]) -> Option<Self> {
        let mac = hmac::Key::new(hmac::HMAC_SHA256, mac);
        let token_key = hmac::sign(&mac, TOKEN_REF_LABEL);
        let token = hmac::Key::new(hmac::HMAC_SHA256, token_key.as_ref());
        let signing = Ed25519KeyPair::from_seed_unchecked(seed).ok()?;
        Some(Keys {
            mac,
            token,
            signing,
        })
    }

    /// The public checkpoint key, for export to an auditor.
    pub fn public_key(&self) -> PublicKey {
        let mut pk = [0u8; 32];
        pk.copy_from_slice(self.signing.public_key().as_ref());
        PublicKey(pk)
    }

    /// Keys for the full verifier (MACs and signatures).
    pub fn verify_keys(&self) -> VerifyKeys {
        VerifyKeys {
            mac: Some(self.mac.clone()),
            public: self.public_key(),
        }
    }

    /// HMAC-SHA256 of a token under the token-reference key, hex, truncated to 16 bytes.
    pub(crate) fn token_ref(&self, token: &str) -> String {
        hex::encode(&hmac::sign(&self.token, token.as_bytes()).as_ref()[..16])
    }
}

impl zeroize::Zeroize for KeyFile {
    fn zeroize(&mut self) {
        self.mac_key.zeroize();
        self.signing_seed.zeroize();
    }
}

fn decode32(text: &str) -> Option<Zeroizing<[u8; 32]>> {
    let mut out = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text, &mut out[..]).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_loaded_with_same_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.key");
        let a = Keys::load_or_create(&path).unwrap();
        let b = Keys::load_or_create(&path).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        assert_eq!(a.token_ref("tok"), b.token_ref("tok"));
        assert_eq!(a.token_ref("tok").len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(Keys::load(&path), Err(AuditError::KeyFile { .. })));
        }
        assert!(!format!("{a:?}").contains("mac"));
    }

    #[test]
    fn public_key_hex_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::load_or_create(&dir.path().join("k")).unwrap();
        let pk = keys.public_key();
        assert_eq!(PublicKey::from_hex(&pk.to_hex()).unwrap(), pk);
        assert!(PublicKey::from_hex("abcd").is_err());
    }
}
