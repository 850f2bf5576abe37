//! Detokenize, reveal and delete: resolving tokens to their records (the opaque block's id
//! and check, or a lookup by token), and what each does with the value.

use super::*;

impl Vault {
    /// Detokenizes one token. `key_version` is a hint for FPE templates whose tokens do not
    /// carry their version; vaulted records know theirs.
    pub fn detokenize(
        &self,
        template: &str,
        token: &str,
        key_version: Option<u32>,
    ) -> Result<Detokenized, Error> {
        one(self.detokenize_batch(template, &[token], key_version)?)
    }

    /// Detokenizes a batch, with a result per token.
    pub fn detokenize_batch(
        &self,
        template: &str,
        tokens: &[&str],
        key_version: Option<u32>,
    ) -> Result<Batch<Detokenized>, Error> {
        check_batch(tokens.len())?;
        let cfg = self.template(template)?;
        self.maybe_refresh_keys();
        let results = self.detokenize_once(cfg, tokens, key_version)?;
        // An item may name a key version another process made since this vault loaded its
        // keys: reload if the key table changed, and answer from the new ring. Every failed item
        // asks (one indexed read), not only key failures: narrowing it made an unknown token
        // answer measurably faster than another end user's withheld one (the daemon's timing
        // test, Welch t = -4.5), which is the difference that test exists to keep hidden.
        if results.iter().any(Result::is_err) && self.refresh_keys()? {
            return self.detokenize_once(cfg, tokens, key_version);
        }
        Ok(results)
    }

    pub(super) fn detokenize_once(
        &self,
        cfg: &TemplateConfig,
        tokens: &[&str],
        key_version: Option<u32>,
    ) -> Result<Batch<Detokenized>, Error> {
        let state = self.read_state();
        let u = state.as_ref().ok_or(Error::Sealed)?;
        match cfg.mode {
            Mode::Fpe => self.fpe_detokenize(u, cfg, tokens, key_version),
            Mode::Vaulted { shape, .. } => self.vaulted_detokenize(u, cfg, shape, tokens),
            Mode::Volatile(_) => {
                let now = self.now();
                Ok(tokens
                    .iter()
                    .map(|t| {
                        let (value, expires_at) =
                            self.volatile.take(cfg.template.name(), t, now)?;
                        Ok(Detokenized {
                            value,
                            key_version: 0,
                            metadata: BTreeMap::new(),
                            expires_at: Some(expires_at),
                        })
                    })
                    .collect())
            }
        }
    }

    pub(super) fn fpe_detokenize(
        &self,
        u: &Unsealed,
        cfg: &TemplateConfig,
        tokens: &[&str],
        hint: Option<u32>,
    ) -> Result<Batch<Detokenized>, Error> {
        let t = cfg.template.name();
        let name = format!("fpe/{t}");
        let live = live_versions(u, &name)?;
        Ok(tokens
            .iter()
            .map(|token| {
                let slot = cfg.template.version_slot(token)?;
                let version = pick_version(t, &live, slot, hint)
                    .map_err(|e| self.not_decryptable(e, &name, hint))?;
                let ff1 = u.ff1.get(&(name.clone(), version)).ok_or(Error::Sealed)?;
                let value = cfg.template.decrypt(ff1, version, token)?;
                Ok(Detokenized {
                    value,
                    key_version: version,
                    metadata: BTreeMap::new(),
                    expires_at: None,
                })
            })
            .collect())
    }

    pub(super) fn not_decryptable(&self, e: Error, name: &str, hint: Option<u32>) -> Error {
        match (e, hint) {
            (Error::NotFound, Some(v)) => Error::Key(KeyError::VersionNotDecryptable {
                name: name.to_owned(),
                version: v,
                reason: NotDecryptable::Unknown,
            }),
            (e, _) => e,
        }
    }

    pub(super) fn vaulted_detokenize(
        &self,
        u: &Unsealed,
        cfg: &TemplateConfig,
        shape: TokenShape,
        tokens: &[&str],
    ) -> Result<Batch<Detokenized>, Error> {
        let t = cfg.template.name();
        let ids = self.resolve_ids(u, cfg, shape, tokens)?;
        let wanted: Vec<u64> = ids
            .iter()
            .filter_map(|r| r.as_ref().ok().map(|target| target.id))
            .collect();
        let mut records = self.store.get_records(&wanted)?.into_iter();
        let now = self.now();
        let data_name = format!("data/{t}");
        Ok(ids
            .into_iter()
            .zip(tokens)
            .map(|(target, token)| {
                let target = target?;
                let record = records.next().flatten().ok_or(Error::NotFound)?;
                if record.template != t
                    || !target.admits(&record)
                    || record.expires_at.is_some_and(|e| e <= now)
                {
                    return Err(Error::NotFound);
                }
                let plaintext = self.open_record_named(u, t, &data_name, &record)?;
                let (stored_token, value) = decode_plaintext(&plaintext)?;
                // A formatted token is found by a keyed hash; confirm it is the same token.
                if shape == TokenShape::Formatted && stored_token != *token {
                    return Err(Error::NotFound);
                }
                let metadata = match &record.metadata {
                    Some(m) => serde_json::from_str(m).map_err(|_| Error::Integrity)?,
                    None => BTreeMap::new(),
                };
                Ok(Detokenized {
                    value: Zeroizing::new(value.to_owned()),
                    key_version: record.key_version,
                    metadata,
                    expires_at: record.expires_at,
                })
            })
            .collect())
    }

    /// The records vaulted tokens name (per item: invalid token, not found).
    pub(super) fn resolve_ids(
        &self,
        u: &Unsealed,
        cfg: &TemplateConfig,
        shape: TokenShape,
        tokens: &[&str],
    ) -> Result<Vec<Result<Target, Error>>, Error> {
        let t = cfg.template.name();
        let mut out = Vec::with_capacity(tokens.len());
        match shape {
            TokenShape::Opaque => {
                let tag = opaque::Tag::of(t);
                for token in tokens {
                    // Every well-spelled token decodes to an id and a check value. One that is
                    // not one of this template's (forged, mistyped, of another template, or of
                    // a record lost when the store went back in time) is looked up like a real
                    // one and refused by its record's template or check value: the caller
                    // cannot tell it from a deleted, expired or withheld token by the answer.
                    out.push(match u.opaque.decode(&tag, token) {
                        // Ids past SQLite's signed range are never allocated.
                        Some(d) => Ok(Target {
                            id: if d.id > NO_RECORD { NO_RECORD } else { d.id },
                            check: Check::Opaque(d.check),
                        }),
                        None => Err(Error::InvalidToken(t.to_owned())),
                    });
                }
            }
            TokenShape::Formatted => {
                let (_, lookup_key) = u.ring.active("lookup")?;
                for token in tokens {
                    if opaque::looks_opaque(token) || token.len() > crate::template::MAX_VALUE_LEN {
                        out.push(Err(Error::InvalidToken(t.to_owned())));
                        continue;
                    }
                    let h = envelope::lookup_hash(lookup_key, t, token.as_bytes());
                    out.push(
                        self.store
                            .find_by_lookup(t, &h)?
                            .map(|id| Target {
                                id,
                                check: Check::Lookup,
                            })
                            .ok_or(Error::NotFound),
                    );
                }
            }
        }
        Ok(out)
    }

    pub(super) fn open_record(
        &self,
        u: &Unsealed,
        template: &str,
        record: &Record,
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        self.open_record_named(u, template, &format!("data/{template}"), record)
    }

    /// [`Vault::open_record`] with the data key's name (`data/<template>`) already built, for
    /// loops over many records.
    pub(in crate::vault) fn open_record_named(
        &self,
        u: &Unsealed,
        template: &str,
        name: &str,
        record: &Record,
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        let key = match u.data_key(name, record.key_version) {
            Some(k) => k,
            None => {
                // Why not: below the minimum, retired, destroyed or unknown.
                u.ring.decryptable(name, record.key_version)?;
                return Err(Error::Integrity);
            }
        };
        if u.ring.min_decrypt_version(name)? > record.key_version {
            return Err(Error::Key(KeyError::VersionNotDecryptable {
                name: name.to_owned(),
                version: record.key_version,
                reason: NotDecryptable::BelowMinimum,
            }));
        }
        key.open(template, record.id, &record.ciphertext)
            .map_err(|e| match e {
                OpenError::Format(_) | OpenError::Integrity(_) => Error::Integrity,
            })
    }

    /// Masked reveal (e.g. the last four digits): a mode distinct from detokenize, so the daemon
    /// can grant it separately. The full value never leaves this call.
    pub fn reveal(
        &self,
        template: &str,
        token: &str,
        key_version: Option<u32>,
    ) -> Result<String, Error> {
        one(self.reveal_batch(template, &[token], key_version)?)
    }

    /// Masked reveal of a batch.
    pub fn reveal_batch(
        &self,
        template: &str,
        tokens: &[&str],
        key_version: Option<u32>,
    ) -> Result<Batch<String>, Error> {
        let cfg = self.template(template)?;
        Ok(self
            .detokenize_batch(template, tokens, key_version)?
            .into_iter()
            .map(|r| r.and_then(|d| Ok(cfg.template.mask(&d.value)?)))
            .collect())
    }

    /// Deletes vaulted tokens: the ciphertext is gone and the token detokenizes to
    /// [`Error::NotFound`] from then on. FPE tokens store nothing and cannot be deleted.
    pub fn delete(&self, template: &str, tokens: &[&str]) -> Result<Batch<()>, Error> {
        check_batch(tokens.len())?;
        let cfg = self.template(template)?;
        let Mode::Vaulted { shape, .. } = cfg.mode else {
            return Err(Error::NotSupported {
                operation: "delete",
                template: template.to_owned(),
                mode: cfg.mode.name(),
            });
        };
        let state = self.read_state();
        let u = state.as_ref().ok_or(Error::Sealed)?;
        let ids = self.resolve_ids(u, cfg, shape, tokens)?;
        // Only this template's records, and only the record the token names: an opaque token
        // whose check value the record does not hold (a token of a record lost when the store
        // went back in time, whose id now holds another) deletes nothing.
        let targets: Vec<Target> = ids
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        let wanted: Vec<u64> = targets.iter().map(|target| target.id).collect();
        let records = self.store.get_records(&wanted)?;
        let owned: Vec<u64> = targets
            .iter()
            .zip(&records)
            .filter(|(target, r)| {
                r.as_ref()
                    .is_some_and(|r| r.template == cfg.template.name() && target.admits(r))
            })
            .map(|(target, _)| target.id)
            .collect();
        let deleted = self.store.delete_records(&owned)?;
        let gone: std::collections::HashMap<u64, bool> =
            owned.iter().copied().zip(deleted).collect();
        Ok(ids
            .into_iter()
            .map(|target| {
                let id = target?.id;
                if gone.get(&id).copied().unwrap_or(false) {
                    Ok(())
                } else {
                    Err(Error::NotFound)
                }
            })
            .collect())
    }
}
