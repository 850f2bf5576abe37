//! Tokenize, detokenize, reveal and delete, single and batch.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use super::{Error, MAX_BATCH, Mode, TemplateConfig, TokenShape, Unsealed, Vault, opaque};
use crate::envelope::{self, OpenError};
use crate::keys::{KeyError, NotDecryptable};
use crate::secret::fill_random;
use crate::store::{Idempotency, IdempotencyHit, InsertOutcome, NewRecord, Record, StoreError};
use crate::template::VersionSlot;

/// A record id never allocated (ids count up from the bottom of SQLite's signed 64-bit
/// range): the lookup target of tokens that decode to an id past that range.
const NO_RECORD: u64 = i64::MAX as u64;

/// Largest metadata, as JSON, in bytes.
pub const MAX_METADATA_LEN: usize = 4096;
/// Random draws of a formatted token before giving up on a crowded token space.
const MAX_DRAWS: usize = 16;
/// Version of the sealed plaintext layout: `[1][token len u16 BE][token][value]`.
const PLAINTEXT_V1: u8 = 1;

/// One value to tokenize.
#[derive(Clone, Copy, Default)]
pub struct TokenizeItem<'a> {
    /// The sensitive value.
    pub value: &'a str,
    /// Makes a retried call return the first call's token instead of a new one.
    pub idempotency_key: Option<&'a str>,
    /// Non-sensitive metadata stored with a vaulted token.
    pub metadata: Option<&'a BTreeMap<String, String>>,
    /// Expiry in seconds (vaulted tokens only); the template's default when `None`.
    pub ttl_seconds: Option<u64>,
}

impl<'a> TokenizeItem<'a> {
    /// An item with only a value.
    pub fn new(value: &'a str) -> TokenizeItem<'a> {
        TokenizeItem {
            value,
            ..TokenizeItem::default()
        }
    }
}

impl std::fmt::Debug for TokenizeItem<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenizeItem")
            .field("value_len", &self.value.len())
            .field("ttl_seconds", &self.ttl_seconds)
            .finish_non_exhaustive()
    }
}

/// A token handed out. `Debug` shows the token's length, not the token: tokens stay out of
/// logs and audit events (which carry keyed references instead).
#[derive(Clone, PartialEq, Eq)]
pub struct Tokenized {
    /// The token.
    pub token: String,
    /// Key version (FPE key or data key) it was made under.
    pub key_version: u32,
    /// Whether an earlier token was returned (deterministic mode or idempotency key).
    pub existing: bool,
    /// Unix seconds after which the token stops resolving; `None` when it does not expire.
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for Tokenized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenized")
            .field("token_len", &self.token.len())
            .field("key_version", &self.key_version)
            .field("existing", &self.existing)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A value recovered from its token. `Debug` does not print the value.
pub struct Detokenized {
    /// The value, wiped from memory on drop.
    pub value: Zeroizing<String>,
    /// Key version that decrypted it.
    pub key_version: u32,
    /// Metadata stored with a vaulted token.
    pub metadata: BTreeMap<String, String>,
    /// Unix seconds after which the token stops resolving; `None` when it does not expire.
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for Detokenized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detokenized")
            .field("key_version", &self.key_version)
            .field("metadata", &self.metadata)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Per-item results of a batch call.
pub type Batch<T> = Vec<Result<T, Error>>;

impl Vault {
    /// Tokenizes one value.
    pub fn tokenize(&self, template: &str, value: &str) -> Result<Tokenized, Error> {
        one(self.tokenize_batch(template, &[TokenizeItem::new(value)])?)
    }

    /// Tokenizes a batch in one transaction, with a result per item: a bad item does not fail
    /// the others. Call-level failures (sealed, storage down) fail the whole call. Idempotency
    /// keys are those of the unnamed caller; see [`Vault::tokenize_batch_as`].
    pub fn tokenize_batch(
        &self,
        template: &str,
        items: &[TokenizeItem<'_>],
    ) -> Result<Batch<Tokenized>, Error> {
        self.tokenize_batch_as("", template, items)
    }

    /// [`Vault::tokenize_batch`] for a named caller: its idempotency keys are its own. A key is
    /// scoped to (caller, template), so two callers, or one caller on two templates, never
    /// share one. A key already used in that scope returns the first token (`existing`) when
    /// the value, metadata and TTL are the same, and fails the item with
    /// [`Error::IdempotencyKeyReused`] otherwise.
    pub fn tokenize_batch_as(
        &self,
        caller: &str,
        template: &str,
        items: &[TokenizeItem<'_>],
    ) -> Result<Batch<Tokenized>, Error> {
        check_batch(items.len())?;
        let cfg = self.template(template)?;
        self.maybe_refresh_keys();
        match self.tokenize_once(caller, cfg, items) {
            // Another process rotated a key this vault has not seen yet; nothing was written.
            Err(Error::Store(StoreError::KeyNotActive { .. })) => {
                self.refresh_keys()?;
                self.tokenize_once(caller, cfg, items)
            }
            r => r,
        }
    }

    fn tokenize_once(
        &self,
        caller: &str,
        cfg: &TemplateConfig,
        items: &[TokenizeItem<'_>],
    ) -> Result<Batch<Tokenized>, Error> {
        let state = self.read_state();
        let u = state.as_ref().ok_or(Error::Sealed)?;
        let (results, worn) = match cfg.mode {
            Mode::Fpe => (self.fpe_tokenize(u, cfg, items)?, None),
            Mode::Vaulted {
                deterministic,
                shape,
            } => self.vaulted_tokenize(u, caller, cfg, deterministic, shape, items)?,
            Mode::Volatile(limits) => (self.volatile_tokenize(cfg, limits, items), None),
        };
        drop(state);
        if let Some((name, version)) = worn {
            self.rotate_if_worn(&name, version)?;
        }
        Ok(results)
    }

    fn volatile_tokenize(
        &self,
        cfg: &TemplateConfig,
        limits: super::volatile::Limits,
        items: &[TokenizeItem<'_>],
    ) -> Batch<Tokenized> {
        let now = self.now();
        items
            .iter()
            .map(|item| {
                if item.metadata.is_some_and(|m| !m.is_empty()) || item.idempotency_key.is_some()
                {
                    return Err(Error::InvalidMetadata(
                        "volatile templates keep nothing but the value: no metadata or idempotency key",
                    ));
                }
                if item
                    .ttl_seconds
                    .is_some_and(|t| t == 0 || t > super::volatile::MAX_TTL_SECS)
                {
                    return Err(Error::InvalidMetadata(
                        "a volatile token lives between 1 second and one hour",
                    ));
                }
                let value = Zeroizing::new(cfg.template.canonicalize(item.value)?);
                let ttl = item.ttl_seconds.unwrap_or(limits.ttl_secs);
                let (token, expires_at) =
                    self.volatile
                        .put(cfg.template.name(), &value, ttl, limits.uses, now)?;
                Ok(Tokenized {
                    token,
                    key_version: 0,
                    existing: false,
                    expires_at: Some(expires_at),
                })
            })
            .collect()
    }

    fn fpe_tokenize(
        &self,
        u: &Unsealed,
        cfg: &TemplateConfig,
        items: &[TokenizeItem<'_>],
    ) -> Result<Batch<Tokenized>, Error> {
        let name = format!("fpe/{}", cfg.template.name());
        let (version, _) = u.ring.active(&name)?;
        let ff1 = u.ff1.get(&(name, version)).ok_or(Error::Sealed)?;
        Ok(items
            .iter()
            .map(|item| {
                if item.metadata.is_some_and(|m| !m.is_empty()) || item.ttl_seconds.is_some() {
                    return Err(Error::InvalidMetadata(
                        "FPE templates store nothing: no metadata or expiry",
                    ));
                }
                let token = cfg.template.encrypt(ff1, version, item.value)?;
                Ok(Tokenized {
                    token,
                    key_version: version,
                    existing: false,
                    expires_at: None,
                })
            })
            .collect())
    }

    #[allow(clippy::type_complexity)]
    fn vaulted_tokenize(
        &self,
        u: &Unsealed,
        caller: &str,
        cfg: &TemplateConfig,
        deterministic: bool,
        shape: TokenShape,
        items: &[TokenizeItem<'_>],
    ) -> Result<(Batch<Tokenized>, Option<(String, u32)>), Error> {
        let t = cfg.template.name();
        let data_name = format!("data/{t}");
        let (version, _) = u.ring.active(&data_name)?;
        let data_key = u.data_key(&data_name, version).ok_or(Error::Sealed)?;
        let (_, lookup_key) = u.ring.active("lookup")?;
        let fp_name = format!("fp/{t}");
        let fp_versions: Vec<u32> = if deterministic {
            live_versions(u, &fp_name)?
        } else {
            Vec::new()
        };
        let fp_active = if deterministic {
            Some(u.ring.active(&fp_name)?)
        } else {
            None
        };
        let now = self.now();

        let mut results: Vec<Option<Result<Tokenized, Error>>> =
            std::iter::repeat_with(|| None).take(items.len()).collect();
        // Items still to insert: (item index, fingerprint, idempotency hash, expiry, metadata).
        let mut pending: Vec<Pending> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match self.prepare(
                u,
                caller,
                cfg,
                item,
                now,
                lookup_key,
                &fp_versions,
                fp_active,
                &fp_name,
            ) {
                Ok(Prepared::Existing(id)) => {
                    results[i] = Some(self.existing_token(u, cfg, shape, id));
                }
                Ok(Prepared::New(p)) => pending.push(Pending { index: i, ..p }),
                Err(e) => results[i] = Some(Err(e)),
            }
        }

        let tag = opaque::Tag::of(t);
        let mut draws = 0;
        let mut worn = None;
        while !pending.is_empty() {
            draws += 1;
            let ids = self.take_ids(pending.len() as u64)?;
            let nonces = self.take_nonces(&data_name, version, pending.len())?;
            worn = Some((data_name.clone(), version));
            let mut checks = CheckSource::new(&tag, shape, pending.len())?;
            let mut rows = Vec::with_capacity(pending.len());
            let mut tokens = Vec::with_capacity(pending.len());
            for ((p, &id), nonce) in pending.iter().zip(&ids).zip(nonces) {
                let value = items[p.index].value;
                let (token, lookup, token_check) = match shape {
                    TokenShape::Opaque => {
                        let check = checks.next()?;
                        (u.opaque.encode(check, id), None, Some(check))
                    }
                    TokenShape::Formatted => {
                        let token = cfg.template.random_token(&mut rand::rng(), value)?;
                        let lookup = envelope::lookup_hash(lookup_key, t, token.as_bytes());
                        (token, Some(lookup.to_vec()), None)
                    }
                };
                let plaintext = encode_plaintext(
                    if shape == TokenShape::Formatted {
                        &token
                    } else {
                        ""
                    },
                    value,
                );
                let ciphertext = data_key.seal_with_nonce(t, id, &plaintext, nonce)?;
                rows.push(NewRecord {
                    id,
                    template: t.to_owned(),
                    key_version: version,
                    ciphertext,
                    expires_at: p.expires_at,
                    metadata: p.metadata.clone(),
                    fingerprint: p.fingerprint.clone(),
                    lookup,
                    idempotency: p.idempotency.clone(),
                    token_check,
                    created_at: now,
                });
                tokens.push(token);
            }
            let outcomes = self.store.insert_records(&rows)?;
            let mut retry = Vec::new();
            for ((p, token), outcome) in pending.into_iter().zip(tokens).zip(outcomes) {
                let result = match outcome {
                    InsertOutcome::Inserted => Ok(Tokenized {
                        token,
                        key_version: version,
                        existing: false,
                        expires_at: p.expires_at,
                    }),
                    InsertOutcome::ExistingFingerprint(id) => {
                        self.existing_token(u, cfg, shape, id)
                    }
                    // Another item of this batch, or a concurrent call, took the key first.
                    InsertOutcome::ExistingIdempotency(hit) => match p.idempotency.as_ref() {
                        Some(mine) if same_request(mine, &hit) => {
                            self.existing_token(u, cfg, shape, hit.record_id)
                        }
                        _ => Err(Error::IdempotencyKeyReused),
                    },
                    InsertOutcome::LookupCollision if draws < MAX_DRAWS => {
                        retry.push(p);
                        continue;
                    }
                    InsertOutcome::LookupCollision => Err(Error::TokenSpaceExhausted(t.to_owned())),
                };
                results[p.index] = Some(result);
            }
            pending = retry;
        }
        let results = results
            .into_iter()
            .map(|r| r.unwrap_or(Err(Error::Integrity)))
            .collect();
        Ok((results, worn))
    }

    /// Validates one item and looks for an earlier token (idempotency key, fingerprint).
    #[allow(clippy::too_many_arguments)]
    fn prepare(
        &self,
        _u: &Unsealed,
        caller: &str,
        cfg: &TemplateConfig,
        item: &TokenizeItem<'_>,
        now: i64,
        lookup_key: &crate::secret::Key32,
        fp_versions: &[u32],
        fp_active: Option<(u32, &crate::secret::Key32)>,
        fp_name: &str,
    ) -> Result<Prepared, Error> {
        let t = cfg.template.name();
        let canonical = Zeroizing::new(cfg.template.canonicalize(item.value)?);
        let metadata = match item.metadata {
            Some(m) if !m.is_empty() => Some(encode_metadata(m)?),
            _ => None,
        };
        let ttl = item.ttl_seconds.or(cfg.default_ttl);
        let expires_at = match ttl {
            Some(0) => return Err(Error::InvalidMetadata("ttl must be positive")),
            Some(s) => Some(now.saturating_add(i64::try_from(s).unwrap_or(i64::MAX))),
            None => None,
        };
        let idempotency = item.idempotency_key.map(|k| Idempotency {
            key: idempotency_key_hash(lookup_key, caller, t, k).to_vec(),
            request: request_hash(lookup_key, t, item, metadata.as_deref()),
        });
        if let Some(mine) = &idempotency
            && let Some(hit) = self.store.find_by_idempotency(&mine.key)?
        {
            if !same_request(mine, &hit) {
                return Err(Error::IdempotencyKeyReused);
            }
            return Ok(Prepared::Existing(hit.record_id));
        }
        let mut fingerprint = None;
        if let Some((active, key)) = fp_active {
            // Look under every live fingerprint version: records not yet rewrapped keep the
            // fingerprint of the version they were made under.
            for &v in fp_versions {
                let fp = if v == active {
                    envelope::fingerprint(key, t, canonical.as_bytes())
                } else {
                    let Ok(k) = _u.ring.decryptable(fp_name, v) else {
                        continue;
                    };
                    envelope::fingerprint(k, t, canonical.as_bytes())
                };
                // A hit answers at once, unless the item carries an idempotency key: then the
                // insert resolves it, and binds the key to the record it found, so that the
                // key is not left free for another value.
                if idempotency.is_none()
                    && let Some(id) = self.store.find_by_fingerprint(t, v, &fp)?
                {
                    return Ok(Prepared::Existing(id));
                }
                if v == active {
                    fingerprint = Some((active, fp.to_vec()));
                }
            }
            if fingerprint.is_none() {
                fingerprint = Some((
                    active,
                    envelope::fingerprint(key, t, canonical.as_bytes()).to_vec(),
                ));
            }
        }
        Ok(Prepared::New(Pending {
            index: 0,
            fingerprint,
            idempotency,
            expires_at,
            metadata,
        }))
    }

    /// The token of an existing record (deterministic hit or idempotent retry).
    fn existing_token(
        &self,
        u: &Unsealed,
        cfg: &TemplateConfig,
        shape: TokenShape,
        id: u64,
    ) -> Result<Tokenized, Error> {
        let t = cfg.template.name();
        let record = self
            .store
            .get_records(&[id])?
            .pop()
            .flatten()
            .ok_or(Error::NotFound)?;
        if record.template != t {
            return Err(Error::NotFound);
        }
        let token = match shape {
            // A record from before check values is handed out as the legacy token it had.
            TokenShape::Opaque => match record.token_check {
                Some(check) => u.opaque.encode(check, id),
                None => u.opaque.encode_legacy(&opaque::Tag::of(t), id),
            },
            TokenShape::Formatted => {
                let plaintext = self.open_record(u, t, &record)?;
                let (token, _) = decode_plaintext(&plaintext)?;
                token.to_owned()
            }
        };
        Ok(Tokenized {
            token,
            key_version: record.key_version,
            existing: true,
            expires_at: record.expires_at,
        })
    }
}

/// An item ready to insert.
#[derive(Debug)]
struct Pending {
    index: usize,
    fingerprint: Option<(u32, Vec<u8>)>,
    idempotency: Option<Idempotency>,
    expires_at: Option<i64>,
    metadata: Option<String>,
}

enum Prepared {
    Existing(u64),
    New(Pending),
}

/// The record a vaulted token names, and what that record must hold to be it. No `Debug`:
/// the check value is half of the token's block, and tokens stay out of logs.
#[derive(Clone, Copy)]
struct Target {
    id: u64,
    check: Check,
}

#[derive(Clone, Copy)]
enum Check {
    /// An opaque token: the record must hold this check value (`None`: a legacy token, whose
    /// record holds none).
    Opaque(Option<u64>),
    /// A formatted token, found by its lookup hash, which is stored in the record itself (the
    /// sealed token is compared again after opening).
    Lookup,
}

impl Target {
    /// Whether `record` is the one the token was issued for. Constant time in the check value:
    /// the answer to a guessed token must not tell how close the guess was.
    fn admits(&self, record: &Record) -> bool {
        use subtle::ConstantTimeEq as _;
        match self.check {
            Check::Lookup => true,
            Check::Opaque(want) => match (want, record.token_check) {
                (Some(a), Some(b)) => bool::from(a.to_be_bytes().ct_eq(&b.to_be_bytes())),
                (None, None) => true,
                _ => false,
            },
        }
    }
}

/// Check values for the opaque rows of one insert: one system call for the whole batch.
struct CheckSource<'a> {
    tag: &'a opaque::Tag,
    bytes: Zeroizing<Vec<u8>>,
    next: usize,
}

impl<'a> CheckSource<'a> {
    fn new(tag: &'a opaque::Tag, shape: TokenShape, rows: usize) -> Result<Self, Error> {
        let n = if shape == TokenShape::Opaque { rows } else { 0 };
        let mut bytes = Zeroizing::new(vec![0u8; 8 * n]);
        fill_random(&mut bytes)?;
        Ok(CheckSource {
            tag,
            bytes,
            next: 0,
        })
    }

    fn next(&mut self) -> Result<u64, Error> {
        let (bytes, next) = (&self.bytes, &mut self.next);
        Ok(opaque::draw_check(self.tag, || {
            let mut b = [0u8; 8];
            match bytes.get(*next..*next + 8) {
                Some(chunk) => {
                    b.copy_from_slice(chunk);
                    *next += 8;
                }
                // Past the batch's bytes (only after a redraw): the OS again.
                None => fill_random(&mut b)?,
            }
            Ok(b)
        })?)
    }
}

/// Where an idempotency key is looked up: a keyed hash of (caller, template, key), each part
/// length-prefixed, so keys of two callers or two templates never meet.
fn idempotency_key_hash(
    lookup_key: &crate::secret::Key32,
    caller: &str,
    template: &str,
    key: &str,
) -> [u8; 32] {
    let mut scoped = Vec::with_capacity(16 + caller.len() + template.len() + key.len());
    for part in [caller, template, key] {
        scoped.extend_from_slice(&(part.len() as u64).to_be_bytes());
        scoped.extend_from_slice(part.as_bytes());
    }
    envelope::lookup_hash(lookup_key, "idempotency/v2", &scoped)
}

/// What a retry must repeat to be answered with the first token: a keyed hash of the value as
/// given (not its canonical form: the record returns it as given), the metadata as stored, and
/// the TTL as asked (not the expiry it gave, which moves with the clock). Keyed, so the store
/// holds nothing that a dictionary of card numbers could be checked against.
fn request_hash(
    lookup_key: &crate::secret::Key32,
    template: &str,
    item: &TokenizeItem<'_>,
    metadata: Option<&str>,
) -> [u8; 32] {
    let meta = metadata.unwrap_or("");
    let mut req = Zeroizing::new(Vec::with_capacity(32 + item.value.len() + meta.len()));
    req.extend_from_slice(&(item.value.len() as u64).to_be_bytes());
    req.extend_from_slice(item.value.as_bytes());
    req.extend_from_slice(&(meta.len() as u64).to_be_bytes());
    req.extend_from_slice(meta.as_bytes());
    match item.ttl_seconds {
        Some(s) => {
            req.push(1);
            req.extend_from_slice(&s.to_be_bytes());
        }
        None => req.push(0),
    }
    envelope::lookup_hash(lookup_key, &format!("idempotency-request/{template}"), &req)
}

/// Whether a stored idempotency key was first used with this request. Compares the keyed
/// hashes in constant time, and as a whole: the answer does not tell which part differed.
fn same_request(mine: &Idempotency, hit: &IdempotencyHit) -> bool {
    use subtle::ConstantTimeEq as _;
    bool::from(mine.request.ct_eq(&hit.request))
}

fn one<T>(mut batch: Batch<T>) -> Result<T, Error> {
    batch.pop().unwrap_or(Err(Error::Integrity))
}

fn check_batch(len: usize) -> Result<(), Error> {
    if len > MAX_BATCH {
        return Err(Error::BatchTooLarge {
            len,
            max: MAX_BATCH,
        });
    }
    Ok(())
}

/// Versions of `name` that may decrypt (state and minimum version), oldest first.
fn live_versions(u: &Unsealed, name: &str) -> Result<Vec<u32>, Error> {
    let min = u.ring.min_decrypt_version(name)?;
    Ok(u.ring
        .versions(name)?
        .iter()
        .filter(|v| v.state.decrypts() && v.version >= min)
        .map(|v| v.version)
        .collect())
}

/// Which FPE key version to try: the token's slot, the caller's hint, or the only live one.
fn pick_version(
    template: &str,
    live: &[u32],
    slot: Option<VersionSlot>,
    hint: Option<u32>,
) -> Result<u32, Error> {
    let candidates: Vec<u32> = live
        .iter()
        .copied()
        .filter(|&v| slot.is_none_or(|s| s.admits(v)))
        .filter(|&v| hint.is_none_or(|h| h == v))
        .collect();
    match candidates.as_slice() {
        [v] => Ok(*v),
        [] if hint.is_some() => Err(Error::NotFound),
        [] => Err(Error::InvalidToken(template.to_owned())),
        _ => Err(Error::KeyVersionRequired(template.to_owned())),
    }
}

fn encode_metadata(m: &BTreeMap<String, String>) -> Result<String, Error> {
    let json = serde_json::to_string(m).map_err(|_| Error::InvalidMetadata("not serialisable"))?;
    if json.len() > MAX_METADATA_LEN {
        return Err(Error::InvalidMetadata("larger than 4096 bytes as JSON"));
    }
    Ok(json)
}

fn encode_plaintext(token: &str, value: &str) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(3 + token.len() + value.len()));
    out.push(PLAINTEXT_V1);
    // Tokens are at most MAX_VALUE_LEN bytes, far below u16::MAX.
    out.extend_from_slice(&(token.len() as u16).to_be_bytes());
    out.extend_from_slice(token.as_bytes());
    out.extend_from_slice(value.as_bytes());
    out
}

pub(super) fn decode_plaintext(bytes: &[u8]) -> Result<(&str, &str), Error> {
    let [PLAINTEXT_V1, a, b, rest @ ..] = bytes else {
        return Err(Error::Integrity);
    };
    let len = usize::from(u16::from_be_bytes([*a, *b]));
    if rest.len() < len {
        return Err(Error::Integrity);
    }
    let (token, value) = rest.split_at(len);
    let token = std::str::from_utf8(token).map_err(|_| Error::Integrity)?;
    let value = std::str::from_utf8(value).map_err(|_| Error::Integrity)?;
    Ok((token, value))
}

mod inline;
mod resolve;

#[cfg(test)]
mod tests;
