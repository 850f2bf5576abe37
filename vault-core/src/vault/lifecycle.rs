//! A vault's lifecycle: creating and opening one, its settings, unsealing (passphrase, root key, Shamir shares) and sealing, and keeping a shared store's keys current.

use super::*;

impl Vault {
    /// Creates a new vault in an empty store, with keys for every configured template. Returns
    /// the vault (unsealed) and, for [`RootInit::Shares`], the custodians' shares, shown once.
    pub fn create(
        store: Arc<dyn Store>,
        templates: Vec<TemplateConfig>,
        init: RootInit,
    ) -> Result<(Vault, Vec<SecretString>), Error> {
        check_templates(&templates)?;
        if store.meta_get(META_VAULT_ID)?.is_some() {
            return Err(Error::AlreadyInitialised);
        }
        let mut vault_id = vec![0u8; 16];
        fill_random(&mut vault_id)?;
        let (root, sealing, share_texts) = new_root(init, &vault_id)?;
        let check = root::check_record(&root, &vault_id)?;
        let mut meta: Vec<(&str, Vec<u8>)> = vec![
            (META_VAULT_ID, vault_id.clone()),
            (META_SEAL, sealing.tag().to_vec()),
            (root::META_CHECK, check),
        ];
        meta.extend(sealing.meta());
        let entries: Vec<(&str, &[u8])> = meta.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        // Insert-only: of two processes creating a vault on one empty store, one wins.
        store.meta_insert_new(&entries).map_err(|e| match e {
            crate::store::StoreError::Conflict { .. } => Error::AlreadyInitialised,
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
            b"wrapped" => {
                let wrapped = store
                    .meta_get(root::wrapped::META_WRAPPED)?
                    .ok_or(Error::NotInitialised("no wrapped root key"))?;
                Sealing::Wrapped(WrappedRoot::decode(&wrapped)?)
            }
            _ => return Err(Error::NotInitialised("unknown seal method")),
        };
        Vault::assemble(store, templates, vault_id, sealing)
    }

    pub(super) fn assemble(
        store: Arc<dyn Store>,
        templates: Vec<TemplateConfig>,
        vault_id: Vec<u8>,
        sealing: Sealing,
    ) -> Result<Vault, Error> {
        check_templates(&templates)?;
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
            nonces: Mutex::new(HashMap::new()),
            clock: Arc::new(now),
            rotate_at: nonces::ROTATE_AT,
            key_generation: AtomicU64::new(0),
            keys_checked_ms: AtomicU64::new(0),
            started: Instant::now(),
            refresh_ms: KEY_REFRESH_INTERVAL.as_millis() as u64,
            node_id,
            lease: REWRAP_LEASE,
            volatile: volatile::Volatile::new()?,
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

    /// Whether the refresh interval has passed since the last key-table check.
    pub(super) fn refresh_due(&self) -> bool {
        let last = self.keys_checked_ms.load(Ordering::Relaxed);
        self.elapsed_ms().saturating_sub(last) >= self.refresh_ms
    }

    /// [`Vault::refresh_keys`] if the refresh interval has passed since the last check. A
    /// failed check is left to the next call: the call itself then meets the same storage.
    pub(super) fn maybe_refresh_keys(&self) {
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

    pub(super) fn elapsed_ms(&self) -> u64 {
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
                Sealing::Passphrase(_) => SealMethod::Passphrase,
                Sealing::Key => SealMethod::RootKey,
                Sealing::Shares(_) => SealMethod::Shares,
                Sealing::Wrapped(_) => SealMethod::Wrapped,
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

    /// Unseals by asking the wrapping device to unwrap the stored root key. The device must
    /// hold the key that wrapped it ([`RootWrapper::key_ref`] is compared first, so a daemon
    /// pointed at another key says which one the vault needs).
    pub fn unseal_wrapped(&self, wrapper: &dyn RootWrapper) -> Result<(), Error> {
        let Sealing::Wrapped(wrapped) = self.sealing() else {
            return Err(self.wrong_method("a wrapping device (HSM)"));
        };
        if !self.is_sealed() {
            return Err(Error::AlreadyUnsealed);
        }
        let root = wrapped.open(wrapper, &self.vault_id)?;
        self.unseal_with(root)
    }

    /// The wrapping key's name ([`RootWrapper::key_ref`]) of a wrapped-root vault.
    pub fn wrapping_key(&self) -> Option<String> {
        match self.sealing() {
            Sealing::Wrapped(w) => Some(w.key_ref),
            _ => None,
        }
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

    pub(super) fn wrong_method(&self, given: &'static str) -> Error {
        Error::WrongUnsealMethod {
            expected: self.sealing().name(),
            given,
        }
    }

    pub(super) fn unseal_with(&self, root: Key32) -> Result<(), Error> {
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
                Err(crate::store::StoreError::Conflict { .. }) => {
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

    /// Volatile values held now, and the window keys held for them ([`super::volatile`]).
    pub fn volatile_counts(&self) -> (usize, usize) {
        self.volatile.counts(self.now())
    }

    /// Give back one use of a volatile token whose revealed value was never used (the
    /// daemon's proxy could not reach its upstream: nothing was sent), so the caller can try
    /// again. Refused after expiry, after a seal, or for a token of another process.
    pub fn give_back_volatile(
        &self,
        template: &str,
        token: &str,
        value: &str,
    ) -> Result<(), Error> {
        let cfg = self.template(template)?;
        if !matches!(cfg.mode, Mode::Volatile(_)) {
            return Err(Error::NotSupported {
                operation: "give back",
                template: template.to_owned(),
                mode: cfg.mode.name(),
            });
        }
        if self.is_sealed() {
            return Err(Error::Sealed);
        }
        self.volatile.give_back(template, token, value, self.now())
    }

    /// Seals: drops (and wipes) every key in memory, and every volatile value.
    pub fn seal(&self) {
        *self.write_state() = None;
        self.volatile.seal(self.now());
        lock(&self.pending_shares).clear();
        lock(&self.nonces).clear();
    }
}

/// A template FF1 cannot encrypt (a short code) is refused in FPE mode.
fn check_templates(templates: &[TemplateConfig]) -> Result<(), Error> {
    match templates
        .iter()
        .find(|t| t.mode == Mode::Fpe && !t.template.fpe_capable())
    {
        Some(t) => Err(Error::NotSupported {
            operation: "format-preserving encryption",
            template: t.template.name().to_owned(),
            mode: "fpe",
        }),
        None => Ok(()),
    }
}

/// A new root key in the form `init` asks for, the sealing that goes with it, and the share
/// texts to print once (shares only). Shared by creation and root rotation.
pub(super) fn new_root(
    init: RootInit,
    vault_id: &[u8],
) -> Result<(Key32, Sealing, Vec<SecretString>), Error> {
    Ok(match init {
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
            let texts = parts.iter().map(Share::to_text).collect();
            (root, Sealing::Shares(set), texts)
        }
        RootInit::Wrapped(wrapper) => {
            let root = Key32::generate()?;
            let wrapped = WrappedRoot::seal(wrapper.as_ref(), &root, vault_id)?;
            // Unwrap once before anything is stored: a device that wraps but cannot unwrap
            // (a key without CKA_DECRYPT, a mechanism that differs) must fail here, not at the
            // next start with the old method already gone.
            let back = wrapped.open(wrapper.as_ref(), vault_id)?;
            if back.expose() != root.expose() {
                return Err(KeyError::Wrapper {
                    reason: "the device unwrapped a different key than it wrapped".into(),
                }
                .into());
            }
            (root, Sealing::Wrapped(wrapped), Vec::new())
        }
    })
}
