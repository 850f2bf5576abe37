//! The caller registry: API-key callers created through the Admin API.
//!
//! # Why a registry beside the policy file
//!
//! The policy file is written by people and reviewed like code; API keys are minted at runtime
//! by an operator (`Admin.CreateCaller`). Both must grant scopes to the same callers. Each
//! registry caller has the identity `key:<name>`, a list of role names and a list of scopes of
//! its own. The authorizer ([`crate::policy::PolicyStore::authorize_registered`]) allows a call
//! when any of these allows it:
//! - the policy file's `[callers."key:<name>"]` entry, if the file has one (so the file can still
//!   add conditions or grants for a registry caller),
//! - a role the registry lists, as the policy file defines it (with its conditions: quotas,
//!   networks, end-user tokens), and
//! - the registry's own scopes, unconditioned (detokenize still needs a purpose).
//!
//! Roles must exist in the policy file when granted (`INVALID_ARGUMENT` otherwise); a role
//! removed from the file later simply grants nothing.
//!
//! # Keys
//!
//! An API key is `vk_` followed by 8 hex characters (its public prefix, stored and shown in
//! listings) and 64 more hex characters of secret (256 bits from the OS RNG in all). Only an
//! HMAC-SHA256 of the whole key is stored, under a registry key kept in `callers.key` (0600):
//! keys are high-entropy, so a fast keyed hash is enough (no Argon2 on the request path), and a
//! stolen `callers.json` without `callers.key` does not even allow offline checks. A request's
//! key is found by its prefix and checked with `ring::hmac::verify`, which compares in constant
//! time. Revoked or expired callers are refused.
//!
//! # Persistence
//!
//! `callers.json` in the data directory, rewritten whole on every change (write to a temporary
//! file, fsync, rename, fsync the directory), so a crash leaves the old or the new file, never a
//! mix. Changes are rare (admin operations); reads are from memory.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

use ring::hmac;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::policy::{ApiOperation, Scope};

/// Registry file name in the data directory.
pub const FILE: &str = "callers.json";
/// The registry's HMAC key file (0600).
pub const KEY_FILE: &str = "callers.key";
/// Length of the public prefix, `vk_` included.
const PREFIX_LEN: usize = 11;

/// Registry failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// A caller of that name exists.
    #[error("a caller named `{0}` already exists")]
    NameTaken(String),
    /// No caller with that id.
    #[error("no caller with id `{0}`")]
    UnknownCaller(String),
    /// A name that cannot be part of an identity.
    #[error("caller names are 1 to 64 characters of [A-Za-z0-9._-]")]
    InvalidName,
    /// The files could not be read or written.
    #[error("caller registry {}: {reason}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong (never key material).
        reason: String,
    },
}

/// One scope as stored: an API operation (serialized by its proto name, e.g.
/// `OPERATION_TOKENIZE`) and a template (empty: every template). Kept in the API's own terms so
/// listings return exactly what was set; a file naming an operation this build does not know
/// is refused at load (fail closed), not read as a grant of nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredScope {
    /// The operation.
    pub operation: ApiOperation,
    /// Template, empty for all (and for admin operations).
    pub template: String,
}

impl StoredScope {
    /// As a policy scope.
    pub fn scope(&self) -> Scope {
        self.operation.scope(&self.template)
    }
}

/// A registry caller. Holds the key's MAC, never the key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// Stable id (`c_` and 16 hex characters).
    pub id: String,
    /// Unique name; the identity is `key:<name>`.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Roles of the policy file.
    pub roles: Vec<String>,
    /// Scopes of its own.
    pub scopes: Vec<StoredScope>,
    /// Public prefix of the API key.
    pub key_prefix: String,
    /// HMAC-SHA256 of the API key under the registry key, hex.
    pub key_mac: String,
    /// Creation time, Unix ms.
    pub created_ms: u64,
    /// Revocation time, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_ms: Option<u64>,
    /// Expiry, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
}

/// Everything but the key's MAC (a verifier of the key: no business in a log).
impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("roles", &self.roles)
            .field("scopes", &self.scopes)
            .field("key_prefix", &self.key_prefix)
            .field("revoked_ms", &self.revoked_ms)
            .field("expires_ms", &self.expires_ms)
            .finish_non_exhaustive()
    }
}

impl Caller {
    /// The identity the policy and the audit log use.
    pub fn identity(&self) -> String {
        format!("key:{}", self.name)
    }
}

/// A new API key, returned once. `Debug` hides it.
pub struct NewKey(pub Zeroizing<String>);

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewKey(<redacted>)")
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Stored {
    callers: Vec<Caller>,
}

/// The registry: callers in memory, persisted on every change.
pub struct Registry {
    path: PathBuf,
    key: hmac::Key,
    callers: RwLock<Vec<Caller>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Io {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn random_hex(bytes: usize) -> Result<Zeroizing<String>, RegistryError> {
    let mut buf = Zeroizing::new(vec![0u8; bytes]);
    getrandom::fill(&mut buf).map_err(|_| io_err(Path::new("<rng>"), "OS RNG failed"))?;
    Ok(Zeroizing::new(hex::encode(&*buf)))
}

/// Write `bytes` to `path` atomically with `mode` ([`crate::durable::write_atomic`]).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), RegistryError> {
    crate::durable::write_atomic(path, bytes, mode).map_err(|e| io_err(path, e))
}

fn check_name(name: &str) -> Result<(), RegistryError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::InvalidName)
    }
}

impl Registry {
    /// Open (or create) the registry in `dir`.
    pub fn open(dir: &Path) -> Result<Registry, RegistryError> {
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let key_path = dir.join(KEY_FILE);
        let key_hex = match fs::read_to_string(&key_path) {
            Ok(text) => Zeroizing::new(text.trim().to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let k = random_hex(32)?;
                write_atomic(&key_path, k.as_bytes(), 0o600)?;
                k
            }
            Err(e) => return Err(io_err(&key_path, e)),
        };
        let key_bytes = Zeroizing::new(
            hex::decode(key_hex.as_bytes()).map_err(|_| io_err(&key_path, "not hex"))?,
        );
        if key_bytes.len() != 32 {
            return Err(io_err(&key_path, "expected 32 bytes of hex"));
        }
        let key = hmac::Key::new(hmac::HMAC_SHA256, &key_bytes);
        let path = dir.join(FILE);
        let stored: Stored = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| io_err(&path, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored::default(),
            Err(e) => return Err(io_err(&path, e)),
        };
        Ok(Registry {
            path,
            key,
            callers: RwLock::new(stored.callers),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Caller>> {
        // Writers replace whole entries after a successful save; a panic cannot leave half an
        // entry, so poisoning is ignored.
        self.callers.read().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self, callers: &[Caller]) -> Result<(), RegistryError> {
        let stored = Stored {
            callers: callers.to_vec(),
        };
        let bytes = serde_json::to_vec_pretty(&stored).map_err(|e| io_err(&self.path, e))?;
        write_atomic(&self.path, &bytes, 0o600)
    }

    /// Create a caller; returns it and its API key (shown once).
    pub fn create(
        &self,
        name: &str,
        description: &str,
        roles: Vec<String>,
        scopes: Vec<StoredScope>,
        expires_ms: Option<u64>,
    ) -> Result<(Caller, NewKey), RegistryError> {
        check_name(name)?;
        let secret = random_hex(36)?;
        let key = Zeroizing::new(format!("vk_{}", &*secret));
        let mac = hmac::sign(&self.key, key.as_bytes());
        let id = format!("c_{}", &*random_hex(8)?);
        let caller = Caller {
            id,
            name: name.to_owned(),
            description: description.to_owned(),
            roles,
            scopes,
            key_prefix: key[..PREFIX_LEN].to_owned(),
            key_mac: hex::encode(mac.as_ref()),
            created_ms: now_ms(),
            revoked_ms: None,
            expires_ms,
        };
        let mut callers = self.callers.write().unwrap_or_else(|e| e.into_inner());
        if callers.iter().any(|c| c.name == name) {
            return Err(RegistryError::NameTaken(name.to_owned()));
        }
        let mut next = callers.clone();
        next.push(caller.clone());
        self.save(&next)?;
        *callers = next;
        Ok((caller, NewKey(key)))
    }

    /// The caller an API key belongs to, if the key is valid, not revoked and not expired.
    pub fn authenticate(&self, api_key: &str) -> Option<Caller> {
        let prefix = api_key.get(..PREFIX_LEN)?;
        let now = now_ms();
        self.read()
            .iter()
            .filter(|c| c.key_prefix == prefix)
            .find(|c| {
                let Ok(mac) = hex::decode(&c.key_mac) else {
                    return false;
                };
                hmac::verify(&self.key, api_key.as_bytes(), &mac).is_ok()
            })
            .filter(|c| c.revoked_ms.is_none() && c.expires_ms.is_none_or(|e| now < e))
            .cloned()
    }

    /// The caller with this identity (`key:<name>`), if it is active.
    pub fn by_identity(&self, identity: &str) -> Option<Caller> {
        let name = identity.strip_prefix("key:")?;
        self.read()
            .iter()
            .find(|c| c.name == name && c.revoked_ms.is_none())
            .cloned()
    }

    /// Every caller, oldest first.
    pub fn list(&self) -> Vec<Caller> {
        self.read().clone()
    }

    /// Revoke a caller (idempotent).
    pub fn revoke(&self, id: &str) -> Result<Caller, RegistryError> {
        self.update(id, |c| {
            if c.revoked_ms.is_none() {
                c.revoked_ms = Some(now_ms());
            }
        })
    }

    /// Replace a caller's roles and scopes.
    pub fn set_scopes(
        &self,
        id: &str,
        roles: Vec<String>,
        scopes: Vec<StoredScope>,
    ) -> Result<Caller, RegistryError> {
        self.update(id, move |c| {
            c.roles = roles;
            c.scopes = scopes;
        })
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Caller)) -> Result<Caller, RegistryError> {
        let mut callers = self.callers.write().unwrap_or_else(|e| e.into_inner());
        let mut next = callers.clone();
        let c = next
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or_else(|| RegistryError::UnknownCaller(id.to_owned()))?;
        f(c);
        let out = c.clone();
        self.save(&next)?;
        *callers = next;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_authenticate_revoke_persist() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        let (c, key) = reg
            .create("svc", "", vec!["r".into()], Vec::new(), None)
            .unwrap();
        assert!(key.0.starts_with(&c.key_prefix));
        assert_eq!(reg.authenticate(&key.0).unwrap().id, c.id);
        // One flipped character: refused.
        let mut bad = key.0.to_string();
        let last = bad.pop().unwrap();
        bad.push(if last == '0' { '1' } else { '0' });
        assert!(reg.authenticate(&bad).is_none());
        assert!(reg.authenticate("vk_").is_none());
        assert!(matches!(
            reg.create("svc", "", Vec::new(), Vec::new(), None),
            Err(RegistryError::NameTaken(_))
        ));
        // The key is not stored.
        let text = fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(!text.contains(&key.0[PREFIX_LEN..]));
        drop(reg);
        let reg = Registry::open(dir.path()).unwrap();
        assert_eq!(reg.authenticate(&key.0).unwrap().name, "svc");
        reg.revoke(&c.id).unwrap();
        assert!(reg.authenticate(&key.0).is_none());
        assert!(reg.by_identity("key:svc").is_none());
    }

    #[test]
    fn expired_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        let (_, key) = reg
            .create("old", "", Vec::new(), Vec::new(), Some(1))
            .unwrap();
        assert!(reg.authenticate(&key.0).is_none());
    }

    /// Scopes are stored by proto name and read back typed; a file naming an operation this
    /// build does not know is refused at load, not read as a grant of nothing.
    #[test]
    fn unknown_stored_operation_is_refused_at_load() {
        use crate::policy::{ApiOperation, TokenizerOp};
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        let scope = StoredScope {
            operation: ApiOperation::Tokenizer(TokenizerOp::Tokenize),
            template: "pan".into(),
        };
        reg.create("svc", "", Vec::new(), vec![scope.clone()], None)
            .unwrap();
        drop(reg);
        let reg = Registry::open(dir.path()).unwrap();
        assert_eq!(reg.list()[0].scopes, vec![scope]);
        drop(reg);
        let path = dir.path().join(FILE);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"OPERATION_TOKENIZE\""), "{text}");
        fs::write(&path, text.replace("OPERATION_TOKENIZE", "OPERATION_BOGUS")).unwrap();
        assert!(Registry::open(dir.path()).is_err());
    }
}
