//! The unsealed key ring: every key name with its versions, material unwrapped in memory.
//!
//! The ring never writes to the store. Each change is two steps: a method that checks the
//! change against the ring and produces the rows (or [`StateChange`]) for the store, and an
//! `apply_*` method the caller runs after the store has committed, so memory never runs ahead of
//! what is durable.

use std::collections::BTreeMap;

use super::wrap::{WrapContext, unwrap, wrap};
use super::{KeyError, NotDecryptable, Purpose, State, transition};
use crate::secret::Key32;
use crate::store::{KeyNameRow, KeyTable, KeyVersionRow};

/// The unsealed key ring of one vault.
pub struct KeyRing {
    vault_id: Vec<u8>,
    root: Key32,
    keys: BTreeMap<String, Named>,
}

struct Named {
    purpose: Purpose,
    min_decrypt_version: u32,
    versions: BTreeMap<u32, Slot>,
}

struct Slot {
    state: State,
    /// `None` once destroyed.
    material: Option<Key32>,
    nonce_count: u64,
}

/// One version's public facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionInfo {
    /// Version number.
    pub version: u32,
    /// Lifecycle state.
    pub state: State,
    /// GCM nonces reserved under it.
    pub nonce_count: u64,
}

/// A checked state change, to pass to `Store::key_set_state` and then [`KeyRing::apply_state`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// Key name.
    pub name: String,
    /// Version.
    pub version: u32,
    /// Current state.
    pub from: State,
    /// New state.
    pub to: State,
    /// Whether the wrapped material is erased (destroy).
    pub erase_material: bool,
}

impl KeyRing {
    /// Builds the ring from the key table, unwrapping every version that still has material
    /// (retired ones too, so a root-key rotation can rewrap them). `root` must already have
    /// passed `root::verify`, so an unwrap failure here means the table was tampered with.
    pub fn unseal(root: Key32, vault_id: &[u8], table: &KeyTable) -> Result<Self, KeyError> {
        let corrupt = |reason: String| KeyError::Corrupt { reason };
        let mut keys = BTreeMap::new();
        for row in &table.names {
            let named = Named {
                purpose: row.purpose.parse()?,
                min_decrypt_version: row.min_decrypt_version,
                versions: BTreeMap::new(),
            };
            if keys.insert(row.name.clone(), named).is_some() {
                return Err(corrupt(format!("key {:?} listed twice", row.name)));
            }
        }
        for row in &table.versions {
            let named = keys
                .get_mut(&row.name)
                .ok_or_else(|| corrupt(format!("version of unknown key {:?}", row.name)))?;
            let state: State = row.state;
            let material = match (&row.wrapped, state) {
                (None, State::Destroyed) => None,
                (Some(wrapped), s) if s != State::Destroyed => {
                    let ctx = WrapContext {
                        vault_id,
                        name: &row.name,
                        version: row.version,
                        purpose: named.purpose,
                    };
                    Some(unwrap(&root, &ctx, wrapped)?)
                }
                _ => {
                    return Err(corrupt(format!(
                        "key {:?} version {}: material does not match state {state}",
                        row.name, row.version
                    )));
                }
            };
            let slot = Slot {
                state,
                material,
                nonce_count: row.nonce_count,
            };
            if named.versions.insert(row.version, slot).is_some() {
                return Err(corrupt(format!(
                    "key {:?} version {} listed twice",
                    row.name, row.version
                )));
            }
        }
        for (name, named) in &keys {
            let active = named
                .versions
                .values()
                .filter(|s| s.state == State::Active)
                .count();
            if active != 1 {
                return Err(corrupt(format!(
                    "key {name:?} has {active} active versions"
                )));
            }
        }
        Ok(Self {
            vault_id: vault_id.to_vec(),
            root,
            keys,
        })
    }

    /// A fresh ring from a newer copy of the key table, under the same root key: how a daemon
    /// picks up a rotation another daemon made on a shared store. Fails like [`KeyRing::unseal`]
    /// if the table does not unwrap under this ring's root key.
    pub fn reload(&self, table: &KeyTable) -> Result<KeyRing, KeyError> {
        let root = Key32::from_slice(self.root.expose()).ok_or(KeyError::Corrupt {
            reason: "root key length".into(),
        })?;
        KeyRing::unseal(root, &self.vault_id, table)
    }

    /// The vault id bound into every wrap.
    pub fn vault_id(&self) -> &[u8] {
        &self.vault_id
    }

    /// Every key name, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// A key's purpose.
    pub fn purpose(&self, name: &str) -> Result<Purpose, KeyError> {
        Ok(self.named(name)?.purpose)
    }

    /// A key's minimum decryption version.
    pub fn min_decrypt_version(&self, name: &str) -> Result<u32, KeyError> {
        Ok(self.named(name)?.min_decrypt_version)
    }

    /// The version that encrypts, and its material.
    pub fn active(&self, name: &str) -> Result<(u32, &Key32), KeyError> {
        let named = self.named(name)?;
        named
            .versions
            .iter()
            .find(|(_, s)| s.state == State::Active)
            .and_then(|(v, s)| Some((*v, s.material.as_ref()?)))
            // `unseal` and every `apply_*` keep exactly one active version with material.
            .ok_or_else(|| KeyError::Corrupt {
                reason: format!("key {name:?} has no active version"),
            })
    }

    /// The material of a version that may decrypt: refused below the minimum decryption
    /// version, and when retired, destroyed or unknown, each with its own reason.
    pub fn decryptable(&self, name: &str, version: u32) -> Result<&Key32, KeyError> {
        let named = self.named(name)?;
        let refuse = |reason| KeyError::VersionNotDecryptable {
            name: name.to_owned(),
            version,
            reason,
        };
        let slot = named
            .versions
            .get(&version)
            .ok_or_else(|| refuse(NotDecryptable::Unknown))?;
        match slot.state {
            State::Destroyed => Err(refuse(NotDecryptable::Destroyed)),
            State::Retired => Err(refuse(NotDecryptable::Retired)),
            _ if version < named.min_decrypt_version => Err(refuse(NotDecryptable::BelowMinimum)),
            _ => slot
                .material
                .as_ref()
                .ok_or_else(|| refuse(NotDecryptable::Destroyed)),
        }
    }

    /// Every version of a key, oldest first.
    pub fn versions(&self, name: &str) -> Result<Vec<VersionInfo>, KeyError> {
        Ok(self
            .named(name)?
            .versions
            .iter()
            .map(|(&version, s)| VersionInfo {
                version,
                state: s.state,
                nonce_count: s.nonce_count,
            })
            .collect())
    }

    /// Rows for a new key with fresh material as version 1, for `Store::key_create`; then
    /// [`KeyRing::apply_new_key`].
    pub fn new_key(
        &self,
        name: &str,
        purpose: Purpose,
        now: i64,
    ) -> Result<(KeyNameRow, KeyVersionRow), KeyError> {
        if self.keys.contains_key(name) {
            return Err(KeyError::KeyExists {
                name: name.to_owned(),
            });
        }
        let name_row = KeyNameRow {
            name: name.to_owned(),
            purpose: purpose.as_str().to_owned(),
            min_decrypt_version: 1,
            created_at: now,
        };
        Ok((name_row, self.fresh_version(name, 1, purpose, now)?))
    }

    /// Adds a key the store has committed.
    pub fn apply_new_key(
        &mut self,
        name_row: &KeyNameRow,
        first: &KeyVersionRow,
    ) -> Result<(), KeyError> {
        if self.keys.contains_key(&name_row.name) {
            return Err(KeyError::KeyExists {
                name: name_row.name.clone(),
            });
        }
        let purpose: Purpose = name_row.purpose.parse()?;
        let material = self.unwrap_row(first, purpose)?;
        let mut versions = BTreeMap::new();
        versions.insert(
            first.version,
            Slot {
                state: State::Active,
                material: Some(material),
                nonce_count: first.nonce_count,
            },
        );
        self.keys.insert(
            name_row.name.clone(),
            Named {
                purpose,
                min_decrypt_version: name_row.min_decrypt_version,
                versions,
            },
        );
        Ok(())
    }

    /// The next version of a key, with fresh material, for `Store::key_rotate`; then
    /// [`KeyRing::apply_rotation`].
    pub fn rotation(&self, name: &str, now: i64) -> Result<KeyVersionRow, KeyError> {
        let named = self.named(name)?;
        let (active, _) = self.active(name)?;
        let next = self.next_version(name, named)?;
        if active + 1 != next {
            return Err(KeyError::Corrupt {
                reason: format!("key {name:?}: active version {active} is not the newest"),
            });
        }
        self.fresh_version(name, next, named.purpose, now)
    }

    /// Applies a rotation the store has committed: `row` becomes active and the previous
    /// active version decrypt-only.
    pub fn apply_rotation(&mut self, row: &KeyVersionRow) -> Result<(), KeyError> {
        let named = self.named(&row.name)?;
        let purpose = named.purpose;
        let next = self.next_version(&row.name, named)?;
        if row.version != next {
            return Err(KeyError::Corrupt {
                reason: format!(
                    "key {:?}: rotation to version {} out of order",
                    row.name, row.version
                ),
            });
        }
        let material = self.unwrap_row(row, purpose)?;
        let named = self.named_mut(&row.name)?;
        for slot in named.versions.values_mut() {
            if slot.state == State::Active {
                transition(State::Active, State::DecryptOnly)?;
                slot.state = State::DecryptOnly;
            }
        }
        named.versions.insert(
            row.version,
            Slot {
                state: State::Active,
                material: Some(material),
                nonce_count: row.nonce_count,
            },
        );
        Ok(())
    }

    /// Checks a retire or destroy against the lifecycle. Making the active version
    /// decrypt-only is done by rotation only ([`KeyRing::rotation`]), so a key always has one
    /// version that encrypts. Whether anything is still stored under a version being retired
    /// is for the caller to check with the store (`count_by_key_version`).
    pub fn state_change(
        &self,
        name: &str,
        version: u32,
        to: State,
    ) -> Result<StateChange, KeyError> {
        let slot = self.named(name)?.versions.get(&version).ok_or_else(|| {
            KeyError::VersionNotDecryptable {
                name: name.to_owned(),
                version,
                reason: NotDecryptable::Unknown,
            }
        })?;
        let from = slot.state;
        transition(from, to)?;
        if from == State::Active {
            return Err(KeyError::IllegalTransition { from, to });
        }
        Ok(StateChange {
            name: name.to_owned(),
            version,
            from,
            to,
            erase_material: to == State::Destroyed,
        })
    }

    /// Applies a state change the store has committed; destroying drops (and wipes) the
    /// material.
    pub fn apply_state(&mut self, change: &StateChange) -> Result<(), KeyError> {
        let name = change.name.as_str();
        let slot = self
            .named_mut(name)?
            .versions
            .get_mut(&change.version)
            .ok_or_else(|| KeyError::Corrupt {
                reason: format!("key {name:?} version {} vanished", change.version),
            })?;
        if slot.state != change.from {
            return Err(KeyError::IllegalTransition {
                from: slot.state,
                to: change.to,
            });
        }
        transition(change.from, change.to)?;
        slot.state = change.to;
        if change.erase_material {
            slot.material = None;
        }
        Ok(())
    }

    /// Checks raising a key's minimum decryption version (for `Store::key_raise_min_version`):
    /// it must go up (the current minimum or lower is refused, as admin.proto promises: "lower
    /// or equal fails with FAILED_PRECONDITION"), and never past the active version.
    pub fn check_min_version(&self, name: &str, min: u32) -> Result<(), KeyError> {
        let current = self.named(name)?.min_decrypt_version;
        let (active, _) = self.active(name)?;
        if min <= current || min > active {
            return Err(KeyError::MinVersion {
                name: name.to_owned(),
                current,
                requested: min,
            });
        }
        Ok(())
    }

    /// Applies a raised minimum decryption version the store has committed.
    pub fn apply_min_version(&mut self, name: &str, min: u32) -> Result<(), KeyError> {
        self.check_min_version(name, min)?;
        self.named_mut(name)?.min_decrypt_version = min;
        Ok(())
    }

    /// Records a version's nonce count as returned by `Store::key_reserve_nonces`.
    pub fn note_nonces(&mut self, name: &str, version: u32, total: u64) -> Result<(), KeyError> {
        if let Some(slot) = self.named_mut(name)?.versions.get_mut(&version) {
            slot.nonce_count = slot.nonce_count.max(total);
        }
        Ok(())
    }

    /// Root-key rotation: every wrapped key rewrapped under `new_root`, for
    /// `Store::keys_rewrap_all` (together with the new check record). Only the key table
    /// changes; stored data stays under the same data keys. Then [`KeyRing::apply_root`].
    pub fn rewrap_all(&self, new_root: &Key32) -> Result<Vec<(String, u32, Vec<u8>)>, KeyError> {
        let mut out = Vec::new();
        for (name, named) in &self.keys {
            for (&version, slot) in &named.versions {
                if let Some(material) = &slot.material {
                    let ctx = WrapContext {
                        vault_id: &self.vault_id,
                        name,
                        version,
                        purpose: named.purpose,
                    };
                    out.push((name.clone(), version, wrap(new_root, &ctx, material)?));
                }
            }
        }
        Ok(out)
    }

    /// Switches to the new root key once the store has committed the rewrap.
    pub fn apply_root(&mut self, new_root: Key32) {
        self.root = new_root;
    }

    fn named(&self, name: &str) -> Result<&Named, KeyError> {
        self.keys.get(name).ok_or_else(|| KeyError::UnknownKey {
            name: name.to_owned(),
        })
    }

    fn named_mut(&mut self, name: &str) -> Result<&mut Named, KeyError> {
        self.keys.get_mut(name).ok_or_else(|| KeyError::UnknownKey {
            name: name.to_owned(),
        })
    }

    fn next_version(&self, name: &str, named: &Named) -> Result<u32, KeyError> {
        named
            .versions
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .checked_add(1)
            .ok_or_else(|| KeyError::Corrupt {
                reason: format!("key {name:?} is out of version numbers"),
            })
    }

    fn fresh_version(
        &self,
        name: &str,
        version: u32,
        purpose: Purpose,
        now: i64,
    ) -> Result<KeyVersionRow, KeyError> {
        let material = Key32::generate()?;
        let ctx = WrapContext {
            vault_id: &self.vault_id,
            name,
            version,
            purpose,
        };
        Ok(KeyVersionRow {
            name: name.to_owned(),
            version,
            state: State::Active,
            wrapped: Some(wrap(&self.root, &ctx, &material)?),
            nonce_count: 0,
            created_at: now,
            updated_at: now,
        })
    }

    fn unwrap_row(&self, row: &KeyVersionRow, purpose: Purpose) -> Result<Key32, KeyError> {
        let ctx = WrapContext {
            vault_id: &self.vault_id,
            name: &row.name,
            version: row.version,
            purpose,
        };
        let wrapped = row.wrapped.as_deref().ok_or(KeyError::Integrity)?;
        unwrap(&self.root, &ctx, wrapped)
    }
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VAULT: &[u8] = b"vault-1";

    /// A ring with `data/pan` (3 versions: 1 decrypt-only, 2 decrypt-only, 3 active) built
    /// through the row helpers, as the facade would, mirrored into a `KeyTable`.
    fn ring_and_table() -> (KeyRing, KeyTable) {
        let mut ring = KeyRing::unseal(
            Key32::from_slice(&[1; 32]).unwrap(),
            VAULT,
            &KeyTable::default(),
        )
        .unwrap();
        let mut table = KeyTable::default();
        let (name, first) = ring.new_key("data/pan", Purpose::Data, 10).unwrap();
        ring.apply_new_key(&name, &first).unwrap();
        table.names.push(name);
        table.versions.push(first);
        for now in [20, 30] {
            let row = ring.rotation("data/pan", now).unwrap();
            ring.apply_rotation(&row).unwrap();
            for v in &mut table.versions {
                if v.state == State::Active {
                    v.state = State::DecryptOnly;
                }
            }
            table.versions.push(row);
        }
        (ring, table)
    }

    fn root() -> Key32 {
        Key32::from_slice(&[1; 32]).unwrap()
    }

    #[test]
    fn build_rotate_and_reload() {
        let (ring, table) = ring_and_table();
        let (v, active) = ring.active("data/pan").unwrap();
        assert_eq!(v, 3);
        let reloaded = KeyRing::unseal(root(), VAULT, &table).unwrap();
        assert_eq!(
            reloaded.active("data/pan").unwrap().1.expose(),
            active.expose()
        );
        for v in 1..=3 {
            assert_eq!(
                reloaded.decryptable("data/pan", v).unwrap().expose(),
                ring.decryptable("data/pan", v).unwrap().expose()
            );
        }
        let states: Vec<State> = reloaded
            .versions("data/pan")
            .unwrap()
            .iter()
            .map(|i| i.state)
            .collect();
        assert_eq!(
            states,
            [State::DecryptOnly, State::DecryptOnly, State::Active]
        );
        assert_ne!(
            ring.decryptable("data/pan", 1).unwrap().expose(),
            ring.decryptable("data/pan", 2).unwrap().expose()
        );
        assert!(matches!(
            ring.new_key("data/pan", Purpose::Data, 0),
            Err(KeyError::KeyExists { .. })
        ));
        assert!(matches!(
            ring.active("nope"),
            Err(KeyError::UnknownKey { .. })
        ));
    }

    #[test]
    fn decryptable_refusals_are_distinct() {
        let (mut ring, _) = ring_and_table();
        let reason = |ring: &KeyRing, v| match ring.decryptable("data/pan", v) {
            Err(KeyError::VersionNotDecryptable { reason, .. }) => Some(reason),
            Ok(_) => None,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(reason(&ring, 9), Some(NotDecryptable::Unknown));
        ring.check_min_version("data/pan", 2).unwrap();
        ring.apply_min_version("data/pan", 2).unwrap();
        assert_eq!(reason(&ring, 1), Some(NotDecryptable::BelowMinimum));
        assert_eq!(reason(&ring, 2), None);
        let retire = ring.state_change("data/pan", 1, State::Retired).unwrap();
        assert!(!retire.erase_material);
        ring.apply_state(&retire).unwrap();
        assert_eq!(reason(&ring, 1), Some(NotDecryptable::Retired));
        let destroy = ring.state_change("data/pan", 1, State::Destroyed).unwrap();
        assert!(destroy.erase_material);
        ring.apply_state(&destroy).unwrap();
        assert_eq!(reason(&ring, 1), Some(NotDecryptable::Destroyed));
        // Min version only goes up, and never past the active version; the current one again
        // is refused too.
        assert!(matches!(
            ring.check_min_version("data/pan", 1),
            Err(KeyError::MinVersion { .. })
        ));
        assert!(matches!(
            ring.check_min_version("data/pan", 2),
            Err(KeyError::MinVersion { .. })
        ));
        assert!(matches!(
            ring.check_min_version("data/pan", 4),
            Err(KeyError::MinVersion { .. })
        ));
    }

    #[test]
    fn state_changes_follow_the_lifecycle() {
        let (ring, _) = ring_and_table();
        // Active only leaves through rotation.
        for to in State::ALL {
            assert!(matches!(
                ring.state_change("data/pan", 3, to),
                Err(KeyError::IllegalTransition {
                    from: State::Active,
                    ..
                })
            ));
        }
        assert!(ring.state_change("data/pan", 2, State::Destroyed).is_err());
        assert!(ring.state_change("data/pan", 2, State::Active).is_err());
        assert!(ring.state_change("data/pan", 2, State::Retired).is_ok());
    }

    #[test]
    fn unseal_rejects_bad_tables() {
        let (_, table) = ring_and_table();
        // Wrong root key: the wraps fail (normally `root::verify` catches this first).
        assert!(matches!(
            KeyRing::unseal(Key32::generate().unwrap(), VAULT, &table),
            Err(KeyError::Integrity)
        ));
        // Another vault's id.
        assert!(matches!(
            KeyRing::unseal(root(), b"vault-2", &table),
            Err(KeyError::Integrity)
        ));
        // Wrapped keys swapped between versions.
        let mut swapped = table.clone();
        let w1 = swapped.versions[0].wrapped.clone();
        swapped.versions[0].wrapped = swapped.versions[1].wrapped.clone();
        swapped.versions[1].wrapped = w1;
        assert!(matches!(
            KeyRing::unseal(root(), VAULT, &swapped),
            Err(KeyError::Integrity)
        ));
        // Purpose changed in the table.
        let mut repurposed = table.clone();
        repurposed.names[0].purpose = "fpe".into();
        assert!(matches!(
            KeyRing::unseal(root(), VAULT, &repurposed),
            Err(KeyError::Integrity)
        ));
        // Two active versions.
        let mut two = table.clone();
        two.versions[0].state = State::Active;
        assert!(matches!(
            KeyRing::unseal(root(), VAULT, &two),
            Err(KeyError::Corrupt { .. })
        ));
        // Material left on a destroyed version / missing on a live one.
        let mut destroyed = table.clone();
        destroyed.versions[0].state = State::Destroyed;
        assert!(matches!(
            KeyRing::unseal(root(), VAULT, &destroyed),
            Err(KeyError::Corrupt { .. })
        ));
        let mut missing = table.clone();
        missing.versions[0].wrapped = None;
        assert!(matches!(
            KeyRing::unseal(root(), VAULT, &missing),
            Err(KeyError::Corrupt { .. })
        ));
        let mut orphan = table;
        orphan.versions[0].name = "data/ssn".into();
        assert!(matches!(
            KeyRing::unseal(root(), VAULT, &orphan),
            Err(KeyError::Corrupt { .. })
        ));
    }

    #[test]
    fn rewrap_all_moves_to_the_new_root() {
        let (mut ring, mut table) = ring_and_table();
        let destroy_chain = [State::Retired, State::Destroyed];
        for to in destroy_chain {
            let change = ring.state_change("data/pan", 1, to).unwrap();
            ring.apply_state(&change).unwrap();
        }
        table.versions[0].state = State::Destroyed;
        table.versions[0].wrapped = None;
        let new_root = Key32::generate().unwrap();
        let wraps = ring.rewrap_all(&new_root).unwrap();
        assert_eq!(
            wraps
                .iter()
                .map(|(n, v, _)| (n.as_str(), *v))
                .collect::<Vec<_>>(),
            [("data/pan", 2), ("data/pan", 3)]
        );
        for (name, version, wrapped) in wraps {
            let row = table
                .versions
                .iter_mut()
                .find(|r| r.name == name && r.version == version)
                .unwrap();
            row.wrapped = Some(wrapped);
        }
        let old_active = ring.active("data/pan").unwrap().1.expose().to_owned();
        assert!(KeyRing::unseal(root(), VAULT, &table).is_err());
        let reloaded = KeyRing::unseal(new_root, VAULT, &table).unwrap();
        assert_eq!(
            reloaded.active("data/pan").unwrap().1.expose()[..],
            old_active[..]
        );
        ring.apply_root(Key32::generate().unwrap());
        // New keys are wrapped under whatever root the ring now holds.
        let (n, v) = ring.new_key("fp/pan", Purpose::Fingerprint, 0).unwrap();
        ring.apply_new_key(&n, &v).unwrap();
    }

    #[test]
    fn debug_prints_no_key_bytes() {
        let (ring, _) = ring_and_table();
        let s = format!("{ring:?}");
        assert!(
            s.contains("data/pan") && !s.contains("Key32") && s.len() < 80,
            "{s}"
        );
    }
}
