//! Key administration: key status, rotation, retiring and destroying versions, the minimum decryption version, the root key's rotation, expiry purges.

use super::*;

impl Vault {
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
    pub(super) fn rotate_from(&self, name: &str, only_from: Option<u32>) -> Result<u32, Error> {
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

    pub(super) fn change_state(&self, name: &str, version: u32, to: State) -> Result<(), Error> {
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
        self.store
            .key_set_state(name, version, change.from, change.to, change.erase_material)?;
        u.ring.apply_state(&change)?;
        let ring = state.take().map(|u| u.ring).ok_or(Error::Sealed)?;
        *state = Some(Unsealed::build(ring, &self.templates)?);
        Ok(())
    }

    pub(super) fn records_under(
        &self,
        ring: &KeyRing,
        name: &str,
        version: u32,
    ) -> Result<u64, Error> {
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
        if self.is_sealed() {
            return Err(Error::Sealed);
        }
        let (new_root, sealing, texts) = new_root(init, &self.vault_id)?;
        let check = root::check_record(&new_root, &self.vault_id)?;
        let extra = sealing.meta();
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
}
