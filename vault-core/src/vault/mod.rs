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
mod opaque;
mod rewrap;
mod tokens;

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use error::Error;
pub use rewrap::{JobState, RewrapJob};
pub use tokens::{Batch, Detokenized, MAX_METADATA_LEN, TokenizeItem, Tokenized};

use crate::envelope::DataKey;
use crate::fpe::Ff1;
use crate::keys::root::shares::{Share, ShareSet};
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
/// Record ids reserved per store round trip.
const ID_BLOCK: u64 = 4096;

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
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Fpe => "fpe",
            Mode::Vaulted { .. } => "vaulted",
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
}

impl std::fmt::Debug for RootInit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RootInit::Passphrase(..) => "RootInit::Passphrase(..)",
            RootInit::Key(_) => "RootInit::Key(..)",
            RootInit::Shares { .. } => "RootInit::Shares(..)",
        })
    }
}

/// How this vault is unsealed (stored with it).
#[derive(Clone)]
enum Sealing {
    Passphrase(KdfParams),
    Key,
    Shares(ShareSet),
}

impl Sealing {
    fn name(&self) -> &'static str {
        match self {
            Sealing::Passphrase(_) => "a passphrase",
            Sealing::Key => "a root key",
            Sealing::Shares(_) => "Shamir shares",
        }
    }

    fn tag(&self) -> &'static [u8] {
        match self {
            Sealing::Passphrase(_) => b"passphrase",
            Sealing::Key => b"key",
            Sealing::Shares(_) => b"shares",
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

/// The vault's public status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Whether keys are loaded.
    pub sealed: bool,
    /// Hex vault id.
    pub vault_id: String,
    /// `passphrase`, `key` or `shares`.
    pub seal_method: &'static str,
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
    ids: Mutex<Range<u64>>,
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
    /// Creates a new vault in an empty store, with keys for every configured template. Returns
    /// the vault (unsealed) and, for [`RootInit::Shares`], the custodians' shares, shown once.
    pub fn create(
        store: Arc<dyn Store>,
        templates: Vec<TemplateConfig>,
        init: RootInit,
    ) -> Result<(Vault, Vec<SecretString>), Error> {
        if store.meta_get(META_VAULT_ID)?.is_some() {
            return Err(Error::AlreadyInitialised);
        }
        let mut vault_id = vec![0u8; 16];
        fill_random(&mut vault_id)?;
        let (root, sealing, share_texts) = match init {
            RootInit::Passphrase(pass, params) => {
                let root = root::from_passphrase(&pass, &params)?;
                (root, Sealing::Passphrase(params), Vec::new())
            }
            RootInit::Key(key) => (key, Sealing::Key, Vec::new()),
            RootInit::Shares { threshold, shares } => {
                let root = Key32::generate()?;
                let (parts, set) =
                    root::shares::split(&root, usize::from(threshold), usize::from(shares))?;
                let texts = parts.iter().map(Share::to_text).collect();
                (root, Sealing::Shares(set), texts)
            }
        };
        let check = root::check_record(&root, &vault_id)?;
        let mut meta: Vec<(&str, Vec<u8>)> = vec![
            (META_VAULT_ID, vault_id.clone()),
            (META_SEAL, sealing.tag().to_vec()),
            (root::META_CHECK, check),
        ];
        match &sealing {
            Sealing::Passphrase(params) => meta.push((root::META_KDF, params.encode())),
            Sealing::Shares(set) => meta.push((root::META_SHARES, set.encode())),
            Sealing::Key => {}
        }
        let entries: Vec<(&str, &[u8])> = meta.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        // Insert-only: of two processes creating a vault on one empty store, one wins.
        store.meta_insert_new(&entries).map_err(|e| match e {
            crate::store::StoreError::Conflict(_) => Error::AlreadyInitialised,
            e => e.into(),
        })?;
        let vault = Vault::assemble(store, templates, vault_id, sealing)?;
        vault.unseal_with(root)?;
        Ok((vault, share_texts))
    }

    /// Opens an existing vault, sealed.
    pub fn open(store: Arc<dyn Store>, templates: Vec<TemplateConfig>) -> Result<Vault, Error> {
        let vault_id = store
            .meta_get(META_VAULT_ID)?
            .ok_or(Error::NotInitialised("no vault id in the store"))?;
        let seal = store
            .meta_get(META_SEAL)?
            .ok_or(Error::NotInitialised("no seal method"))?;
        let sealing = match seal.as_slice() {
            b"passphrase" => {
                let kdf = store
                    .meta_get(root::META_KDF)?
                    .ok_or(Error::NotInitialised("no KDF parameters"))?;
                Sealing::Passphrase(KdfParams::decode(&kdf)?)
            }
            b"key" => Sealing::Key,
            b"shares" => {
                let set = store
                    .meta_get(root::META_SHARES)?
                    .ok_or(Error::NotInitialised("no share set"))?;
                Sealing::Shares(ShareSet::decode(&set)?)
            }
            _ => return Err(Error::NotInitialised("unknown seal method")),
        };
        Vault::assemble(store, templates, vault_id, sealing)
    }

    fn assemble(
        store: Arc<dyn Store>,
        templates: Vec<TemplateConfig>,
        vault_id: Vec<u8>,
        sealing: Sealing,
    ) -> Result<Vault, Error> {
        let templates = templates
            .into_iter()
            .map(|t| (t.template.name().to_owned(), t))
            .collect();
        // An RNG failure must not give every vault the same lease owner (two runners of one
        // rewrap job would each think the lease theirs): refuse to build the vault instead.
        let node_id = random_node_id()?;
        Ok(Vault {
            store,
            templates,
            vault_id,
            sealing: RwLock::new(sealing),
            state: RwLock::new(None),
            pending_shares: Mutex::new(Vec::new()),
            ids: Mutex::new(0..0),
            nonces: Mutex::new(HashMap::new()),
            clock: Arc::new(now),
            rotate_at: nonces::ROTATE_AT,
            key_generation: AtomicU64::new(0),
            keys_checked_ms: AtomicU64::new(0),
            started: Instant::now(),
            refresh_ms: KEY_REFRESH_INTERVAL.as_millis() as u64,
            node_id,
            lease: REWRAP_LEASE,
        })
    }

    /// How often, at most, calls check the store's key-table generation for changes made by
    /// other processes (default [`KEY_REFRESH_INTERVAL`]). This bounds how long another
    /// vault's rotation takes to be used here; zero checks on every call.
    pub fn with_key_refresh_interval(mut self, interval: Duration) -> Vault {
        self.refresh_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// This vault's name as a rewrap-lease owner (default: random per `Vault`). A daemon gives
    /// a stable id per data directory, so that after a restart it resumes its own job at once
    /// instead of waiting for the lease to lapse.
    pub fn with_node_id(mut self, id: impl Into<String>) -> Vault {
        self.node_id = id.into();
        self
    }

    /// How long a rewrap runner's lease lasts without a committed batch (default
    /// [`REWRAP_LEASE`]): after that, another process may take the job over.
    pub fn with_rewrap_lease(mut self, lease: Duration) -> Vault {
        self.lease = lease;
        self
    }

    /// Reloads the key ring if the store's key table changed since it was loaded (another
    /// process rotated, retired or created a key). Returns whether it reloaded. Sealed: nothing.
    pub fn refresh_keys(&self) -> Result<bool, Error> {
        self.keys_checked_ms
            .store(self.elapsed_ms(), Ordering::Relaxed);
        if self.is_sealed() {
            return Ok(false);
        }
        let generation = self.store.keys_generation()?;
        if generation == self.key_generation.load(Ordering::Acquire) {
            return Ok(false);
        }
        let mut state = self.write_state();
        let Some(u) = state.as_ref() else {
            return Ok(false);
        };
        if generation == self.key_generation.load(Ordering::Acquire) {
            return Ok(false);
        }
        let table = self.store.keys_load()?;
        let ring = u.ring.reload(&table)?;
        *state = Some(Unsealed::build(ring, &self.templates)?);
        self.key_generation.store(generation, Ordering::Release);
        Ok(true)
    }

    /// [`Vault::refresh_keys`] if the refresh interval has passed since the last check. A
    /// failed check is left to the next call: the call itself then meets the same storage.
    fn maybe_refresh_keys(&self) {
        let now = self.elapsed_ms();
        let last = self.keys_checked_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= self.refresh_ms
            && self
                .keys_checked_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let _ = self.refresh_keys();
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Replaces the clock used for expiry and timestamps (tests, simulations).
    pub fn with_clock(mut self, clock: Clock) -> Vault {
        self.clock = clock;
        self
    }

    /// Sets the nonce count after which a data key is rotated automatically (default
    /// `keys::nonces::ROTATE_AT`, 2^31). Lower values only: tests and cautious deployments.
    pub fn with_nonce_rotation_at(mut self, count: u64) -> Vault {
        self.rotate_at = count.min(nonces::ROTATE_AT);
        self
    }

    /// The current time by the vault's clock, Unix seconds.
    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    /// The store underneath (for health checks and the daemon's integrity assertions).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The configured templates.
    pub fn templates(&self) -> impl Iterator<Item = &TemplateConfig> {
        self.templates.values()
    }

    /// The vault id, hex.
    pub fn vault_id(&self) -> String {
        hex(&self.vault_id)
    }

    /// Whether keys are loaded.
    pub fn is_sealed(&self) -> bool {
        self.read_state().is_none()
    }

    /// Public status.
    pub fn status(&self) -> Status {
        let sealing = self.sealing();
        let progress = match &sealing {
            Sealing::Shares(set) => {
                let have = lock(&self.pending_shares).len() as u8;
                Some((have, set.threshold()))
            }
            _ => None,
        };
        Status {
            sealed: self.is_sealed(),
            vault_id: self.vault_id(),
            seal_method: match sealing {
                Sealing::Passphrase(_) => "passphrase",
                Sealing::Key => "key",
                Sealing::Shares(_) => "shares",
            },
            progress,
        }
    }

    /// Unseals with the passphrase.
    pub fn unseal_passphrase(&self, passphrase: &SecretString) -> Result<(), Error> {
        let Sealing::Passphrase(params) = self.sealing() else {
            return Err(self.wrong_method("a passphrase"));
        };
        let root = root::from_passphrase(passphrase, &params)?;
        self.unseal_with(root)
    }

    /// Unseals with the raw root key.
    pub fn unseal_key(&self, key: Key32) -> Result<(), Error> {
        if !matches!(self.sealing(), Sealing::Key) {
            return Err(self.wrong_method("a root key"));
        }
        self.unseal_with(key)
    }

    /// Gives one custodian's share. A malformed share, one from another vault, or a duplicate
    /// is refused at once, naming nothing secret; once the threshold is met the vault unseals.
    pub fn submit_share(&self, text: &str) -> Result<UnsealProgress, Error> {
        let Sealing::Shares(set) = self.sealing() else {
            return Err(self.wrong_method("Shamir shares"));
        };
        if !self.is_sealed() {
            return Err(Error::AlreadyUnsealed);
        }
        let share = Share::parse(text)?;
        set.check(&share)?;
        let mut pending = lock(&self.pending_shares);
        if pending.iter().any(|s| s.index() == share.index()) {
            return Err(KeyError::DuplicateShare {
                index: share.index(),
            }
            .into());
        }
        pending.push(share);
        let need = set.threshold();
        let have = pending.len() as u8;
        if have < need {
            return Ok(UnsealProgress {
                have,
                need,
                unsealed: false,
            });
        }
        let shares = std::mem::take(&mut *pending);
        drop(pending);
        let root = root::shares::combine(&shares, Some(&set))?;
        self.unseal_with(root)?;
        Ok(UnsealProgress {
            have,
            need,
            unsealed: true,
        })
    }

    /// Forgets any shares given so far.
    pub fn reset_unseal(&self) {
        lock(&self.pending_shares).clear();
    }

    fn wrong_method(&self, given: &'static str) -> Error {
        Error::WrongUnsealMethod {
            expected: self.sealing().name(),
            given,
        }
    }

    fn unseal_with(&self, root: Key32) -> Result<(), Error> {
        let check = self
            .store
            .meta_get(root::META_CHECK)?
            .ok_or(Error::NotInitialised("no root-key check record"))?;
        root::verify(&root, &self.vault_id, &check)?;
        let mut state = self.write_state();
        if state.is_some() {
            return Err(Error::AlreadyUnsealed);
        }
        let generation = self.store.keys_generation()?;
        let table = self.store.keys_load()?;
        let mut ring = KeyRing::unseal(root, &self.vault_id, &table)?;
        // Keys for templates configured since the last start, and the vault-wide keys.
        let mut wanted: Vec<(String, Purpose)> = vec![
            ("token".into(), Purpose::Token),
            ("lookup".into(), Purpose::Fingerprint),
        ];
        for cfg in self.templates.values() {
            wanted.extend(cfg.key_names());
        }
        let now = self.now();
        for (name, purpose) in wanted {
            if ring.purpose(&name).is_ok() {
                continue;
            }
            let (name_row, version_row) = ring.new_key(&name, purpose, now)?;
            match self.store.key_create(&name_row, &version_row) {
                Ok(()) => ring.apply_new_key(&name_row, &version_row)?,
                // Another process sharing the store created it first: take theirs.
                Err(crate::store::StoreError::Conflict(_)) => {
                    ring = ring.reload(&self.store.keys_load()?)?;
                    if ring.purpose(&name)? != purpose {
                        return Err(Error::Integrity);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        *state = Some(Unsealed::build(ring, &self.templates)?);
        self.key_generation.store(generation, Ordering::Release);
        self.keys_checked_ms
            .store(self.elapsed_ms(), Ordering::Relaxed);
        Ok(())
    }

    /// Seals: drops (and wipes) every key in memory.
    pub fn seal(&self) {
        *self.write_state() = None;
        lock(&self.pending_shares).clear();
        lock(&self.nonces).clear();
    }

    /// Every key with its versions and how many records each version still holds.
    pub fn key_status(&self) -> Result<Vec<KeyStatus>, Error> {
        let state = self.read_state();
        let u = state.as_ref().ok_or(Error::Sealed)?;
        let mut out = Vec::new();
        for name in u.ring.names() {
            let purpose = u.ring.purpose(name)?;
            let template = name.split_once('/').map(|(_, t)| t);
            let mut versions = Vec::new();
            for info in u.ring.versions(name)? {
                let records = match (purpose, template) {
                    (Purpose::Data, Some(t)) => {
                        Some(self.store.count_by_key_version(t, info.version)?)
                    }
                    (Purpose::Fingerprint, Some(t)) => {
                        Some(self.store.count_by_fp_version(t, info.version)?)
                    }
                    _ => None,
                };
                versions.push(KeyVersionStatus {
                    version: info.version,
                    state: info.state,
                    nonce_count: info.nonce_count,
                    records,
                });
            }
            out.push(KeyStatus {
                name: name.to_owned(),
                purpose,
                min_decrypt_version: u.ring.min_decrypt_version(name)?,
                versions,
            });
        }
        Ok(out)
    }

    /// Rotates a key: a new active version; the previous one becomes decrypt-only and stays
    /// readable until rewrapped. `token` and `lookup` are not rotatable (every issued token
    /// depends on them). Returns the new version.
    pub fn rotate(&self, name: &str) -> Result<u32, Error> {
        self.rotate_from(name, None)
    }

    /// Rotation; with `only_from`, only if that version is still the active one (else the
    /// active version is returned unchanged).
    fn rotate_from(&self, name: &str, only_from: Option<u32>) -> Result<u32, Error> {
        if name == "token" || name == "lookup" {
            return Err(Error::NotSupported {
                operation: "rotate",
                template: name.to_owned(),
                mode: "vault-wide token key",
            });
        }
        let mut state = self.write_state();
        let u = state.as_mut().ok_or(Error::Sealed)?;
        if let Some(from) = only_from {
            let (active, _) = u.ring.active(name)?;
            if active != from {
                return Ok(active);
            }
        }
        let row = u.ring.rotation(name, self.now())?;
        // PAN FPE tokens carry their key version in one of 9 slots (template docs): refuse a
        // new version whose slot a still-decryptable version holds.
        if let Some(t) = name.strip_prefix("fpe/")
            && let Some(cfg) = self.templates.get(t)
            && matches!(cfg.template.kind(), Kind::Pan { .. })
        {
            let slot = VersionSlot::of(row.version)?;
            let min = u.ring.min_decrypt_version(name)?;
            let taken = u
                .ring
                .versions(name)?
                .iter()
                .any(|v| v.state.decrypts() && v.version >= min && slot.admits(v.version));
            if taken {
                return Err(Error::TooManyVersions(t.to_owned()));
            }
        }
        self.store.key_rotate(&row)?;
        u.ring.apply_rotation(&row)?;
        let version = row.version;
        let ring = state.take().map(|u| u.ring).ok_or(Error::Sealed)?;
        *state = Some(Unsealed::build(ring, &self.templates)?);
        Ok(version)
    }

    /// Rotates every key of a template (FPE, data and fingerprint keys as configured).
    pub fn rotate_template(&self, template: &str) -> Result<Vec<(String, u32)>, Error> {
        let cfg = self.template(template)?;
        let mut out = Vec::new();
        for (name, _) in cfg.key_names() {
            let v = self.rotate(&name)?;
            out.push((name, v));
        }
        Ok(out)
    }

    /// Retires a version: no record may remain under it (checked in the store). A retired
    /// version no longer decrypts. FPE versions have no records in the vault; retiring one is
    /// the operator's statement that its tokens are no longer needed.
    pub fn retire(&self, name: &str, version: u32) -> Result<(), Error> {
        self.change_state(name, version, State::Retired)
    }

    /// Destroys a retired version: its wrapped material is erased from the key table.
    pub fn destroy(&self, name: &str, version: u32) -> Result<(), Error> {
        self.change_state(name, version, State::Destroyed)
    }

    fn change_state(&self, name: &str, version: u32, to: State) -> Result<(), Error> {
        let mut state = self.write_state();
        let u = state.as_mut().ok_or(Error::Sealed)?;
        let change = u.ring.state_change(name, version, to)?;
        if to == State::Retired {
            let count = self.records_under(&u.ring, name, version)?;
            if count > 0 {
                return Err(Error::VersionInUse {
                    name: name.to_owned(),
                    version,
                    count,
                });
            }
        }
        self.store.key_set_state(
            name,
            version,
            change.from.as_str(),
            change.to.as_str(),
            change.erase_material,
        )?;
        u.ring.apply_state(&change)?;
        let ring = state.take().map(|u| u.ring).ok_or(Error::Sealed)?;
        *state = Some(Unsealed::build(ring, &self.templates)?);
        Ok(())
    }

    fn records_under(&self, ring: &KeyRing, name: &str, version: u32) -> Result<u64, Error> {
        let purpose = ring.purpose(name)?;
        Ok(match (purpose, name.split_once('/')) {
            (Purpose::Data, Some((_, t))) => self.store.count_by_key_version(t, version)?,
            (Purpose::Fingerprint, Some((_, t))) => self.store.count_by_fp_version(t, version)?,
            _ => 0,
        })
    }

    /// Raises a key's minimum decryption version: versions below it stop decrypting. Refused
    /// while records remain under a version it would cut off (rewrap first).
    pub fn raise_min_version(&self, name: &str, min: u32) -> Result<(), Error> {
        let mut state = self.write_state();
        let u = state.as_mut().ok_or(Error::Sealed)?;
        u.ring.check_min_version(name, min)?;
        for info in u.ring.versions(name)? {
            if info.version < min && info.state.decrypts() {
                let count = self.records_under(&u.ring, name, info.version)?;
                if count > 0 {
                    return Err(Error::VersionInUse {
                        name: name.to_owned(),
                        version: info.version,
                        count,
                    });
                }
            }
        }
        self.store.key_raise_min_version(name, min)?;
        u.ring.apply_min_version(name, min)?;
        let ring = state.take().map(|u| u.ring).ok_or(Error::Sealed)?;
        *state = Some(Unsealed::build(ring, &self.templates)?);
        Ok(())
    }

    /// Rotates the root key: every wrapped key is rewrapped under the new root in one
    /// transaction; stored data is not touched. The new root comes in the same forms as at
    /// creation (a new share set prints new shares, returned once).
    pub fn rotate_root(&self, init: RootInit) -> Result<Vec<SecretString>, Error> {
        let (new_root, sealing, texts) = match init {
            RootInit::Passphrase(pass, params) => (
                root::from_passphrase(&pass, &params)?,
                Sealing::Passphrase(params),
                Vec::new(),
            ),
            RootInit::Key(key) => (key, Sealing::Key, Vec::new()),
            RootInit::Shares { threshold, shares } => {
                let root = Key32::generate()?;
                let (parts, set) =
                    root::shares::split(&root, usize::from(threshold), usize::from(shares))?;
                (
                    root,
                    Sealing::Shares(set),
                    parts.iter().map(Share::to_text).collect(),
                )
            }
        };
        let check = root::check_record(&new_root, &self.vault_id)?;
        let extra = match &sealing {
            Sealing::Passphrase(p) => Some((root::META_KDF, p.encode())),
            Sealing::Shares(s) => Some((root::META_SHARES, s.encode())),
            Sealing::Key => None,
        };
        {
            let mut state = self.write_state();
            let u = state.as_mut().ok_or(Error::Sealed)?;
            let wraps = u.ring.rewrap_all(&new_root)?;
            let mut meta: Vec<(&str, &[u8])> =
                vec![(root::META_CHECK, &check), (META_SEAL, sealing.tag())];
            if let Some((k, v)) = &extra {
                meta.push((k, v));
            }
            self.store.keys_rewrap_all(&wraps, &meta)?;
            u.ring.apply_root(new_root);
            *self.sealing.write().unwrap_or_else(|e| e.into_inner()) = sealing;
        }
        Ok(texts)
    }

    /// Deletes records whose expiry has passed; returns how many.
    pub fn purge_expired(&self) -> Result<u64, Error> {
        Ok(self.store.purge_expired(self.now())?)
    }

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

    /// Takes `n` fresh record ids.
    fn take_ids(&self, n: u64) -> Result<Vec<u64>, Error> {
        let mut pool = lock(&self.ids);
        let mut out = Vec::with_capacity(n as usize);
        while (out.len() as u64) < n {
            if pool.is_empty() {
                let want = (n - out.len() as u64).max(ID_BLOCK);
                *pool = self.store.allocate_ids(want)?;
            }
            let take = (n - out.len() as u64).min(pool.end - pool.start);
            out.extend(pool.start..pool.start + take);
            pool.start += take;
        }
        Ok(out)
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
