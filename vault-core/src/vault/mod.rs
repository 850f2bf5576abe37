//! The vault: one object a Rust service (or the daemon) links to create or open a vault,
//! unseal it, tokenize and detokenize, rotate keys and rewrap.
//!
//! # Templates and modes
//!
//! Each configured template has a [`Mode`]:
//! - [`Mode::Fpe`]: FF1 format-preserving tokens. Nothing is stored; the token is the value
//!   encrypted under the template's `fpe/<template>` key. Deterministic by nature.
//! - [`Mode::Vaulted`]: the value is sealed with AES-256-GCM under `data/<template>` and stored;
//!   the token carries no information about it. Either [`TokenShape::Opaque`] (`tok_…`, a keyed
//!   permutation of the record id and a per-record random check value, see `opaque`) or
//!   [`TokenShape::Formatted`] (random, in the template's format, collision-checked through a
//!   keyed lookup hash). `deterministic: true` returns the same token for the same value, found
//!   through an HMAC fingerprint under `fp/<template>`.
//! - [`Mode::Volatile`]: nothing stored; the value is held in memory under a key per minute
//!   that is dropped when its minute ends, for a limited time and number of reveals
//!   ([`volatile`]). For card verification codes.
//!
//! # Keys
//!
//! See ARCHITECTURE.md. Per template: `fpe/<t>` (FPE mode), `data/<t>` and, when
//! deterministic, `fp/<t>`. Per vault: `token` (the opaque-token permutation) and `lookup`
//! (keyed hashes of formatted tokens and idempotency keys). `token` and `lookup` are not
//! rotated: every issued token depends on them.
//!
//! # Concurrency
//!
//! `Vault` is `Send + Sync`; share it in an `Arc`. Calls block on storage (the daemon runs them
//! on blocking threads). The unsealed key material sits behind one `RwLock`: operations hold it
//! for reading, key changes (rotate, retire, root rotation, seal) for writing.
//!
//! # Several vaults on one store
//!
//! Daemons sharing a store (PostgreSQL) each hold a `Vault`. A key change made through one is
//! seen by the others through the store's key-table generation ([`Store::keys_generation`]):
//! each vault checks it at most once per refresh interval (default one second,
//! [`Vault::with_key_refresh_interval`]) on its next call, and at once when a record names a
//! key version it does not know or the store refuses a write under a version that is no longer
//! active. So a rotation is used by every vault within one interval, and no vault writes under
//! a rotated-away version at all. Rewrap jobs run under a lease ([`Vault::with_node_id`]).

mod error;
mod keyadmin;
mod lifecycle;
mod opaque;
mod rewrap;
mod tokens;
pub mod volatile;

use std::collections::{BTreeMap, HashMap};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use error::Error;
pub use rewrap::{JobState, RewrapJob};
pub use tokens::{Batch, Detokenized, MAX_METADATA_LEN, TokenizeItem, Tokenized};
pub use volatile::Gone;

use lifecycle::new_root;

use crate::envelope::DataKey;
use crate::fpe::Ff1;
use crate::keys::root::shares::{Share, ShareSet};
use crate::keys::root::wrapped::{RootWrapper, WrappedRoot};
use crate::keys::root::{self, KdfParams};
use crate::keys::{KeyError, KeyRing, Purpose, State, nonces};
use crate::secret::{Key32, SecretString, fill_random};
use crate::store::Store;
use crate::template::{Kind, Template, VersionSlot};

/// Most items in one batch call.
pub const MAX_BATCH: usize = 10_000;
/// Metadata key under which the vault id is stored.
const META_VAULT_ID: &str = "vault_id";
/// Metadata key saying how the vault is unsealed.
const META_SEAL: &str = "seal_method";
/// Nonces reserved per store round trip.
const NONCE_BLOCK: u64 = 4096;

/// How a template's tokens are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// FF1 format-preserving encryption: nothing stored.
    Fpe,
    /// The value is stored encrypted; the token is random or a keyed permutation of its id.
    Vaulted {
        /// The same value gives the same token.
        deterministic: bool,
        /// What the token looks like.
        shape: TokenShape,
    },
    /// Held in this process's memory only, under a key per time window, for a limited time
    /// and number of reveals ([`volatile`]): card verification codes.
    Volatile(volatile::Limits),
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Fpe => "fpe",
            Mode::Vaulted { .. } => "vaulted",
            Mode::Volatile(_) => "volatile",
        }
    }
}

/// What a vaulted token looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenShape {
    /// `tok_` and 26 base32 characters.
    Opaque,
    /// The template's own format (a PAN token looks like a PAN, fails Luhn).
    Formatted,
}

/// One configured template.
#[derive(Debug, Clone)]
pub struct TemplateConfig {
    /// The template (its name is the template's name).
    pub template: Template,
    /// How tokens are made.
    pub mode: Mode,
    /// Expiry applied when a tokenize call gives none, in seconds.
    pub default_ttl: Option<u64>,
}

impl TemplateConfig {
    /// A template in `mode` with no default expiry.
    pub fn new(template: Template, mode: Mode) -> TemplateConfig {
        TemplateConfig {
            template,
            mode,
            default_ttl: None,
        }
    }

    /// The key names this template uses.
    fn key_names(&self) -> Vec<(String, Purpose)> {
        let name = self.template.name();
        match self.mode {
            Mode::Fpe => vec![(format!("fpe/{name}"), Purpose::Fpe)],
            Mode::Vaulted { deterministic, .. } => {
                let mut keys = vec![(format!("data/{name}"), Purpose::Data)];
                if deterministic {
                    keys.push((format!("fp/{name}"), Purpose::Fingerprint));
                }
                keys
            }
            // Window keys are made in memory and never stored.
            Mode::Volatile(_) => Vec::new(),
        }
    }
}

/// How the root key is supplied when the vault is created.
pub enum RootInit {
    /// Stretched from a passphrase with Argon2id under these parameters.
    Passphrase(SecretString, KdfParams),
    /// A raw 32-byte key (from a file or the environment).
    Key(Key32),
    /// A fresh random root key split into `shares` Shamir shares, any `threshold` of which
    /// unseal. The shares are returned once by [`Vault::create`].
    Shares {
        /// Shares needed.
        threshold: u8,
        /// Shares made.
        shares: u8,
    },
    /// A fresh random root key wrapped by a device (an HSM) that keeps its own key inside;
    /// the vault unseals by asking it to unwrap ([`Vault::unseal_wrapped`]).
    Wrapped(Arc<dyn RootWrapper>),
}

impl std::fmt::Debug for RootInit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RootInit::Passphrase(..) => "RootInit::Passphrase(..)",
            RootInit::Key(_) => "RootInit::Key(..)",
            RootInit::Shares { .. } => "RootInit::Shares(..)",
            RootInit::Wrapped(_) => "RootInit::Wrapped(..)",
        })
    }
}

/// How this vault is unsealed (stored with it).
#[derive(Clone)]
enum Sealing {
    Passphrase(KdfParams),
    Key,
    Shares(ShareSet),
    Wrapped(WrappedRoot),
}

impl Sealing {
    fn name(&self) -> &'static str {
        match self {
            Sealing::Passphrase(_) => "a passphrase",
            Sealing::Key => "a root key",
            Sealing::Shares(_) => "Shamir shares",
            Sealing::Wrapped(_) => "a wrapping device (HSM)",
        }
    }

    fn tag(&self) -> &'static [u8] {
        match self {
            Sealing::Passphrase(_) => b"passphrase",
            Sealing::Key => b"key",
            Sealing::Shares(_) => b"shares",
            Sealing::Wrapped(_) => b"wrapped",
        }
    }

    /// The metadata entry that goes with the method, if any.
    fn meta(&self) -> Option<(&'static str, Vec<u8>)> {
        match self {
            Sealing::Passphrase(p) => Some((root::META_KDF, p.encode())),
            Sealing::Shares(s) => Some((root::META_SHARES, s.encode())),
            Sealing::Wrapped(w) => Some((root::wrapped::META_WRAPPED, w.encode())),
            Sealing::Key => None,
        }
    }
}

/// Where an unseal by shares stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsealProgress {
    /// Distinct valid shares given so far.
    pub have: u8,
    /// Shares needed.
    pub need: u8,
    /// Whether the vault is now unsealed.
    pub unsealed: bool,
}

/// How a vault is unsealed: chosen at creation (and by a root-key rotation), stored with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealMethod {
    /// A passphrase (Argon2id).
    Passphrase,
    /// A root key file (32 random bytes, hex).
    RootKey,
    /// Shamir shares of the root key, a threshold of them at a time.
    Shares,
    /// A root key wrapped by a device (an HSM over PKCS#11) the daemon asks at start.
    Wrapped,
}

impl SealMethod {
    /// `passphrase`, `key`, `shares` or `hsm`: the name `vaultctl` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            SealMethod::Passphrase => "passphrase",
            SealMethod::RootKey => "key",
            SealMethod::Shares => "shares",
            SealMethod::Wrapped => "hsm",
        }
    }
}

/// The vault's public status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Whether keys are loaded.
    pub sealed: bool,
    /// Hex vault id.
    pub vault_id: String,
    /// How the vault is unsealed.
    pub seal_method: SealMethod,
    /// Shares given so far and needed (shares only).
    pub progress: Option<(u8, u8)>,
}

/// One key version as shown to operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVersionStatus {
    /// Version.
    pub version: u32,
    /// Lifecycle state.
    pub state: State,
    /// Nonces reserved under it.
    pub nonce_count: u64,
    /// Records stored under it (data and fingerprint keys).
    pub records: Option<u64>,
}

/// One key name as shown to operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStatus {
    /// Key name.
    pub name: String,
    /// Purpose.
    pub purpose: Purpose,
    /// Minimum decryption version.
    pub min_decrypt_version: u32,
    /// Versions, oldest first.
    pub versions: Vec<KeyVersionStatus>,
}

/// A vault over a [`Store`].
pub struct Vault {
    store: Arc<dyn Store>,
    templates: BTreeMap<String, TemplateConfig>,
    vault_id: Vec<u8>,
    sealing: RwLock<Sealing>,
    state: RwLock<Option<Unsealed>>,
    pending_shares: Mutex<Vec<Share>>,
    nonces: Mutex<HashMap<(String, u32), NonceBlock>>,
    clock: Clock,
    rotate_at: u64,
    /// Key-table generation the unsealed ring was built from.
    key_generation: AtomicU64,
    /// When the generation was last checked, ms since `started`.
    keys_checked_ms: AtomicU64,
    started: Instant,
    refresh_ms: u64,
    node_id: String,
    lease: Duration,
    volatile: volatile::Volatile,
}

/// Default key-table check interval ([`Vault::with_key_refresh_interval`]).
pub const KEY_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// Default rewrap lease ([`Vault::with_rewrap_lease`]).
pub const REWRAP_LEASE: Duration = Duration::from_secs(30);

/// A source of Unix seconds (replaceable in tests to exercise expiry without sleeping).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("vault_id", &hex(&self.vault_id))
            .field("templates", &self.templates.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A reserved run of GCM invocation counters for one key version.
struct NonceBlock {
    prefix: [u8; 8],
    next: u64,
    end: u64,
}

/// Keys in memory while unsealed, with their expanded forms.
struct Unsealed {
    ring: KeyRing,
    ff1: HashMap<(String, u32), Ff1>,
    /// Data keys by name, then version: looked up by `&str` per record, without allocating.
    data: HashMap<String, HashMap<u32, DataKey>>,
    opaque: opaque::Codec,
}

impl Unsealed {
    /// The expanded data key `name` version `version`, if it may decrypt.
    fn data_key(&self, name: &str, version: u32) -> Option<&DataKey> {
        self.data.get(name)?.get(&version)
    }

    fn build(ring: KeyRing, templates: &BTreeMap<String, TemplateConfig>) -> Result<Self, Error> {
        let mut ff1 = HashMap::new();
        let mut data = HashMap::new();
        for cfg in templates.values() {
            for (name, purpose) in cfg.key_names() {
                for info in ring.versions(&name)? {
                    if !info.state.decrypts() {
                        continue;
                    }
                    let Ok(key) = ring.decryptable(&name, info.version) else {
                        continue;
                    };
                    match purpose {
                        Purpose::Fpe => {
                            let f = Ff1::new(key.expose(), cfg.template.radix())
                                .map_err(|_| Error::Integrity)?;
                            ff1.insert((name.clone(), info.version), f);
                        }
                        Purpose::Data => {
                            data.entry(name.clone())
                                .or_insert_with(HashMap::new)
                                .insert(info.version, DataKey::new(key, info.version));
                        }
                        _ => {}
                    }
                }
            }
        }
        let (_, token_key) = ring.active("token")?;
        let opaque = opaque::Codec::new(token_key);
        Ok(Unsealed {
            ring,
            ff1,
            data,
            opaque,
        })
    }
}

impl Vault {
    // ----- helpers shared by the submodules -----

    fn sealing(&self) -> Sealing {
        self.sealing
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn template(&self, name: &str) -> Result<&TemplateConfig, Error> {
        self.templates
            .get(name)
            .ok_or_else(|| Error::UnknownTemplate(name.to_owned()))
    }

    fn read_state(&self) -> RwLockReadGuard<'_, Option<Unsealed>> {
        // A panic while holding the lock cannot leave the key ring half-changed (every change
        // is applied after the store commits, in one assignment), so poisoning is ignored.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, Option<Unsealed>> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `n` fresh record ids (the store caches reserved blocks: `store::IdBlocks`).
    fn take_ids(&self, n: u64) -> Result<Vec<u64>, Error> {
        Ok(self.store.allocate_ids(n)?.collect())
    }

    /// Takes `n` GCM nonces for a data-key version: a random 64-bit fixed field per reserved
    /// block and a 32-bit invocation counter persisted before use (SP 800-38D §8.2.1). The
    /// counter is the key version's nonce count, which never passes `nonces::LIMIT` = 2^32
    /// (past `nonces::ROTATE_AT` the key is rotated automatically by the caller), so 32 bits
    /// hold it. Why the random field is as wide as it can be: a store that comes back older
    /// than what it acknowledged (a restored backup, a promoted asynchronous replica, a power
    /// cut under `synchronous = normal`) reserves the same counter values again, and then only
    /// the random field keeps two seals under one key from sharing a nonce (a chance of 2^-64
    /// per pair of reused reservations, rather than 2^-32).
    fn take_nonces(&self, name: &str, version: u32, n: usize) -> Result<Vec<[u8; 12]>, Error> {
        let mut pools = lock(&self.nonces);
        let block = pools
            .entry((name.to_owned(), version))
            .or_insert(NonceBlock {
                prefix: [0; 8],
                next: 0,
                end: 0,
            });
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if block.next == block.end {
                let want = ((n - out.len()) as u64).max(NONCE_BLOCK);
                let total = self.store.key_reserve_nonces(name, version, want)?;
                if total > nonces::LIMIT {
                    return Err(Error::NonceBudgetExhausted {
                        name: name.to_owned(),
                        version,
                    });
                }
                fill_random(&mut block.prefix)?;
                block.next = total - want;
                block.end = total;
            }
            let counter = u32::try_from(block.next).map_err(|_| Error::NonceBudgetExhausted {
                name: name.to_owned(),
                version,
            })?;
            let mut nonce = [0u8; 12];
            nonce[..8].copy_from_slice(&block.prefix);
            nonce[8..].copy_from_slice(&counter.to_be_bytes());
            block.next += 1;
            out.push(nonce);
        }
        Ok(out)
    }

    /// Rotates a data key whose nonce count passed the rotation threshold. Called after the
    /// operation that crossed it, outside any lock.
    fn rotate_if_worn(&self, name: &str, version: u32) -> Result<(), Error> {
        let end = lock(&self.nonces)
            .get(&(name.to_owned(), version))
            .map_or(0, |b| b.end);
        if end < self.rotate_at {
            return Ok(());
        }
        // Only if `version` is still the active one: concurrent callers that crossed the
        // threshold together rotate once.
        self.rotate_from(name, Some(version)).map(|_| ())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values (id and nonce pools, pending shares) stay consistent across a
    // panic: each update is a single assignment.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Unix seconds.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A random rewrap-lease owner id, for vaults not given one.
fn random_node_id() -> Result<String, Error> {
    let mut b = [0u8; 8];
    fill_random(&mut b)?;
    Ok(format!("vault-{}", hex(&b)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
