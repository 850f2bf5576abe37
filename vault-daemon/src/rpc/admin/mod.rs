//! `vault.v1.Admin`: sealing, keys and rotation, callers, the audit log.
//!
//! Scopes: every key and seal operation needs `admin:keys`, caller management `admin:callers`,
//! audit queries and verification `admin:audit` (the policy's admin areas are coarser than the
//! rpcs: a registry scope naming one admin rpc grants its whole area). While the vault is sealed
//! only GetSealStatus, Unseal and Seal run; the rest answer `FAILED_PRECONDITION`.

use std::sync::Arc;

use prost_types::Timestamp;
use vault_core::keys::root::KdfParams;
use vault_core::keys::{Purpose, State};
use vault_core::secret::{ExposeSecret, SecretString};
use vault_core::vault::{JobState, RootInit, Vault};
use vault_proto::v1::{
    self as pb, AuditEvent, Caller as PbCaller, CreateCallerRequest, CreateCallerResponse,
    DestroyKeyVersionRequest, GetKeyStatusRequest, GetKeyStatusResponse, GetRewrapRequest,
    GetSealStatusRequest, KeyPurpose, KeyVersionState, ListCallersRequest, ListCallersResponse,
    ListRewrapsRequest, ListRewrapsResponse, NonceBudget, QueryAuditEventsRequest,
    QueryAuditEventsResponse, RaiseMinDecryptionVersionRequest, ResumeRewrapRequest,
    RetireKeyVersionRequest, RevokeCallerRequest, RewrapState, RotateKeyRequest, RotateKeyResponse,
    RotateRootKeyRequest, RotateRootKeyResponse, SealRequest, SealStatus, SetCallerScopesRequest,
    StartRewrapRequest, UnsealMethod, UnsealRequest, VerifyAuditLogRequest, VerifyAuditLogResponse,
    rotate_key_request, rotate_root_key_request, unseal_request,
};
use zeroize::Zeroizing;

use crate::audit::{Filter, Outcome, Record};
use crate::callers::{Caller, RegistryError, StoredScope};
use crate::jobs;
use crate::policy::{AdminOp, ApiOperation, Operation};
use crate::request::error::{self, CallError, Code};
use crate::request::{Done, Incoming, Shared, Spec};

/// A GCM data key should be rotated past this many nonces (SP 800-38D §8.3; ARCHITECTURE.md).
const NONCE_ROTATE: u64 = 1 << 31;
/// ... and refuses to seal at this many.
const NONCE_LIMIT: u64 = 1 << 32;
/// Default and largest page sizes.
const PAGE_DEFAULT: usize = 100;
const PAGE_MAX: usize = 1000;
/// Largest rewrap batch.
const REWRAP_BATCH_MAX: usize = 5000;

/// The Admin rpcs, on the contract's messages; a transport calls them.
#[derive(Debug, Clone)]
pub(crate) struct Admin(pub(crate) Arc<Shared>);

fn ts(ms: u64) -> Timestamp {
    Timestamp {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

fn ts_ms(t: &Timestamp) -> u64 {
    u64::try_from(t.seconds).unwrap_or(0) * 1000 + u64::try_from(t.nanos).unwrap_or(0) / 1_000_000
}

fn page(token: &str) -> Result<usize, CallError> {
    if token.is_empty() {
        return Ok(0);
    }
    token
        .parse()
        .map_err(|_| CallError::invalid_argument("bad page_token"))
}

fn page_size(n: u32) -> usize {
    match n as usize {
        0 => PAGE_DEFAULT,
        n => n.min(PAGE_MAX),
    }
}

pub(crate) fn seal_status(v: &Vault) -> SealStatus {
    let st = v.status();
    let method = match st.seal_method {
        "passphrase" => UnsealMethod::Passphrase,
        "key" => UnsealMethod::RootKey,
        "shares" => UnsealMethod::Shamir,
        _ => UnsealMethod::Unspecified,
    };
    let (have, need) = st.progress.unwrap_or((0, 0));
    SealStatus {
        sealed: st.sealed,
        unseal_method: method as i32,
        shares_received: if st.sealed { u32::from(have) } else { 0 },
        shares_threshold: u32::from(need),
        shares_total: 0,
        vault_id: st.vault_id,
        server_version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

fn key_status(k: &vault_core::vault::KeyStatus) -> pb::KeyStatus {
    let purpose = match k.purpose {
        Purpose::Fpe => KeyPurpose::Fpe,
        Purpose::Data => KeyPurpose::Data,
        Purpose::Fingerprint => KeyPurpose::Fingerprint,
        Purpose::Token => KeyPurpose::Token,
    };
    let template = k
        .name
        .split_once('/')
        .map(|(_, t)| t.to_owned())
        .unwrap_or_default();
    let versions = k
        .versions
        .iter()
        .map(|v| pb::KeyVersionStatus {
            version: v.version,
            state: match v.state {
                State::Active => KeyVersionState::Active,
                State::DecryptOnly => KeyVersionState::DecryptOnly,
                State::Retired => KeyVersionState::Retired,
                State::Destroyed => KeyVersionState::Destroyed,
            } as i32,
            nonce_count: v.nonce_count,
            nonce_budget: if k.purpose != Purpose::Data {
                NonceBudget::Unspecified
            } else if v.nonce_count >= NONCE_LIMIT {
                NonceBudget::Exhausted
            } else if v.nonce_count >= NONCE_ROTATE {
                NonceBudget::RotateNow
            } else {
                NonceBudget::Ok
            } as i32,
            record_count: v.records.unwrap_or(0),
            created_at: None,
        })
        .collect();
    pb::KeyStatus {
        name: k.name.clone(),
        purpose: purpose as i32,
        template,
        active_version: k
            .versions
            .iter()
            .find(|v| v.state == State::Active)
            .map_or(0, |v| v.version),
        min_decryption_version: k.min_decrypt_version,
        versions,
    }
}

fn one_key(vault: &Vault, name: &str) -> Result<pb::KeyStatus, CallError> {
    vault
        .key_status()
        .map_err(|e| error::vault(&e))?
        .iter()
        .find(|k| k.name == name)
        .map(key_status)
        .ok_or_else(|| CallError::not_found(format!("no key named {name:?}")))
}

fn rewrap_job(vault: &Vault, j: &vault_core::vault::RewrapJob) -> pb::RewrapJob {
    let remaining = vault.rewrap_remaining(j).unwrap_or(0);
    pb::RewrapJob {
        job_id: j.id.to_string(),
        key_name: format!("data/{}", j.template),
        target_version: j.target_version,
        state: match j.state {
            JobState::Pending | JobState::Running => RewrapState::Running,
            JobState::Paused => RewrapState::Paused,
            JobState::Completed => RewrapState::Succeeded,
            JobState::Failed => RewrapState::Failed,
        } as i32,
        cursor: j.cursor.to_string(),
        processed: j.processed,
        total: j.processed + remaining,
        started_at: None,
        updated_at: None,
        failure_reason: String::new(),
    }
}

fn registry_status(e: &RegistryError) -> CallError {
    match e {
        RegistryError::NameTaken(_) => CallError::already_exists(e.to_string()),
        RegistryError::UnknownCaller(_) => CallError::not_found(e.to_string()),
        RegistryError::InvalidName => CallError::invalid_argument(e.to_string()),
        _ => {
            tracing::error!(error = %e, "caller registry");
            CallError::unavailable("caller registry unavailable")
        }
    }
}

fn pb_caller(c: &Caller) -> PbCaller {
    PbCaller {
        caller_id: c.id.clone(),
        name: c.name.clone(),
        description: c.description.clone(),
        roles: c.roles.clone(),
        scopes: c
            .scopes
            .iter()
            .map(|s| pb::Scope {
                operation: s.operation.proto() as i32,
                template: s.template.clone(),
            })
            .collect(),
        api_key_prefix: c.key_prefix.clone(),
        created_at: Some(ts(c.created_ms)),
        revoked_at: c.revoked_ms.map(ts),
        expires_at: c.expires_ms.map(ts),
    }
}

impl Admin {
    /// The common shape of an admin rpc: admit under `op`'s area, run `work` on a blocking
    /// thread, record the event, answer.
    async fn admin<T, F>(
        &self,
        meta: Incoming,
        op: AdminOp,
        needs_unsealed: bool,
        validate: Result<(), CallError>,
        work: F,
    ) -> Result<T, CallError>
    where
        T: Send + 'static,
        F: FnOnce(&Arc<Shared>) -> Result<T, CallError> + Send + 'static,
    {
        let s = &self.0;
        let call = s
            .admit(
                &meta,
                Spec::admin(op.action()),
                op.scope(),
                validate,
                needs_unsealed,
            )
            .await?;
        let shared = Arc::clone(s);
        let out = s.run(&call, move || work(&shared)).await?;
        s.finish(&call, Done::default()).await?;
        Ok(out)
    }

    fn check_scopes(
        &self,
        roles: &[String],
        scopes: &[pb::Scope],
    ) -> Result<Vec<StoredScope>, CallError> {
        let policy = self.0.policy.policy();
        if let Some(r) = roles.iter().find(|r| !policy.has_role(r)) {
            return Err(CallError::invalid_argument(format!("unknown role `{r}`")));
        }
        scopes
            .iter()
            .map(|s| {
                let op = pb::Operation::try_from(s.operation)
                    .ok()
                    .and_then(ApiOperation::from_proto)
                    .ok_or_else(|| CallError::invalid_argument("scope: unknown operation"))?;
                let tokenizer = matches!(op, ApiOperation::Tokenizer(_));
                if tokenizer
                    && !s.template.is_empty()
                    && !self
                        .0
                        .vault
                        .templates()
                        .any(|t| t.template.name() == s.template)
                {
                    return Err(CallError::invalid_argument(format!(
                        "scope: unknown template {:?}",
                        s.template
                    )));
                }
                Ok(StoredScope {
                    operation: op,
                    template: if tokenizer {
                        s.template.clone()
                    } else {
                        String::new()
                    },
                })
            })
            .collect()
    }
}

fn job_id(text: &str) -> Result<u64, CallError> {
    text.parse()
        .map_err(|_| CallError::invalid_argument("job_id is not a job id"))
}

impl Admin {
    pub(crate) async fn get_seal_status(
        &self,
        meta: Incoming,
        _req: GetSealStatusRequest,
    ) -> Result<SealStatus, CallError> {
        self.admin(meta, AdminOp::GetSealStatus, false, Ok(()), |s| {
            Ok(seal_status(&s.vault))
        })
        .await
    }

    pub(crate) async fn unseal(
        &self,
        meta: Incoming,
        req: UnsealRequest,
    ) -> Result<SealStatus, CallError> {
        let validate = if req.secret.is_none() && !req.reset {
            Err(CallError::invalid_argument(
                "give a passphrase or a share (or reset)",
            ))
        } else {
            Ok(())
        };
        let out = self
            .admin(meta, AdminOp::Unseal, false, validate, move |s| {
                let v = &s.vault;
                if req.reset {
                    v.reset_unseal();
                }
                if v.is_sealed() {
                    let r = match req.secret {
                        Some(unseal_request::Secret::Passphrase(p)) => {
                            v.unseal_passphrase(&SecretString::from(p))
                        }
                        Some(unseal_request::Secret::Share(text)) => {
                            let text = Zeroizing::new(text);
                            v.submit_share(&text).map(|_| ())
                        }
                        None => Ok(()),
                    };
                    match r {
                        Ok(()) | Err(vault_core::vault::Error::AlreadyUnsealed) => {}
                        Err(e) => {
                            // A wrong secret discards the shares received (proto contract).
                            v.reset_unseal();
                            return Err(error::vault(&e));
                        }
                    }
                }
                Ok(seal_status(v))
            })
            .await;
        self.0.update_health().await;
        out
    }

    pub(crate) async fn seal(
        &self,
        meta: Incoming,
        _req: SealRequest,
    ) -> Result<SealStatus, CallError> {
        let out = self
            .admin(meta, AdminOp::Seal, false, Ok(()), |s| {
                s.vault.seal();
                Ok(seal_status(&s.vault))
            })
            .await;
        self.0.update_health().await;
        out
    }

    pub(crate) async fn get_key_status(
        &self,
        meta: Incoming,
        req: GetKeyStatusRequest,
    ) -> Result<GetKeyStatusResponse, CallError> {
        self.admin(meta, AdminOp::GetKeyStatus, true, Ok(()), move |s| {
            let keys = s.vault.key_status().map_err(|e| error::vault(&e))?;
            let mut keys: Vec<pb::KeyStatus> = keys
                .iter()
                .map(key_status)
                .filter(|k| req.key_name.as_ref().is_none_or(|n| *n == k.name))
                .filter(|k| req.template.as_ref().is_none_or(|t| *t == k.template))
                .collect();
            keys.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(GetKeyStatusResponse { keys })
        })
        .await
    }

    pub(crate) async fn rotate_key(
        &self,
        meta: Incoming,
        req: RotateKeyRequest,
    ) -> Result<RotateKeyResponse, CallError> {
        let name = match req.key {
            Some(rotate_key_request::Key::KeyName(n)) => Ok(n),
            Some(rotate_key_request::Key::TemplateKey(tk)) => {
                match KeyPurpose::try_from(tk.purpose) {
                    Ok(KeyPurpose::Fpe) => Ok(format!("fpe/{}", tk.template)),
                    Ok(KeyPurpose::Data) => Ok(format!("data/{}", tk.template)),
                    Ok(KeyPurpose::Fingerprint) => Ok(format!("fp/{}", tk.template)),
                    Ok(KeyPurpose::Token) => Ok("token".to_owned()),
                    _ => Err(CallError::invalid_argument("template_key: unknown purpose")),
                }
            }
            None => Err(CallError::invalid_argument(
                "key_name or template_key is required",
            )),
        };
        let validate = name.as_ref().map(|_| ()).map_err(Clone::clone);
        let name = name.unwrap_or_default();
        self.admin(meta, AdminOp::RotateKey, true, validate, move |s| {
            let v = s.vault.rotate(&name).map_err(|e| error::vault(&e))?;
            Ok(RotateKeyResponse {
                new_version: v,
                key: Some(one_key(&s.vault, &name)?),
            })
        })
        .await
    }

    pub(crate) async fn start_rewrap(
        &self,
        meta: Incoming,
        req: StartRewrapRequest,
    ) -> Result<pb::RewrapJob, CallError> {
        let template = req
            .key_name
            .strip_prefix("data/")
            .or_else(|| req.key_name.strip_prefix("fp/"))
            .map(str::to_owned);
        let validate = match &template {
            Some(t) if self.0.vault.templates().any(|c| c.template.name() == t) => Ok(()),
            _ => Err(CallError::invalid_argument(
                "only data/<template> and fp/<template> keys encrypt records",
            )),
        };
        let batch = req.batch_size.map_or(jobs::REWRAP_BATCH, |b| {
            (b as usize).clamp(1, REWRAP_BATCH_MAX)
        });
        let template = template.unwrap_or_default();
        self.admin(meta, AdminOp::Rewrap, true, validate, move |s| {
            let job = s.vault.rewrap_start(&template).map_err(|e| match e {
                vault_core::vault::Error::NotSupported { .. } => {
                    CallError::invalid_argument("format-preserving templates store no records")
                }
                e => error::vault(&e),
            })?;
            if job.state != JobState::Pending {
                return Err(CallError::already_exists(format!(
                    "rewrap job {} for this key is {}",
                    job.id,
                    job.state.as_str()
                )));
            }
            jobs::spawn_rewrap(s, job.id, batch);
            Ok(rewrap_job(&s.vault, &job))
        })
        .await
    }

    pub(crate) async fn resume_rewrap(
        &self,
        meta: Incoming,
        req: ResumeRewrapRequest,
    ) -> Result<pb::RewrapJob, CallError> {
        let id = job_id(&req.job_id);
        let validate = id.as_ref().map(|_| ()).map_err(Clone::clone);
        let id = id.unwrap_or_default();
        self.admin(meta, AdminOp::Rewrap, true, validate, move |s| {
            let job = s.vault.rewrap_job(id).map_err(|e| error::vault(&e))?;
            if !matches!(job.state, JobState::Paused | JobState::Failed) {
                return Err(CallError::failed_precondition(format!(
                    "job is {}, not paused or failed",
                    job.state.as_str()
                )));
            }
            jobs::spawn_rewrap(s, id, jobs::REWRAP_BATCH);
            Ok(rewrap_job(&s.vault, &job))
        })
        .await
    }

    pub(crate) async fn get_rewrap(
        &self,
        meta: Incoming,
        req: GetRewrapRequest,
    ) -> Result<pb::RewrapJob, CallError> {
        let id = job_id(&req.job_id);
        let validate = id.as_ref().map(|_| ()).map_err(Clone::clone);
        let id = id.unwrap_or_default();
        self.admin(meta, AdminOp::GetRewrap, true, validate, move |s| {
            let job = s.vault.rewrap_job(id).map_err(|e| error::vault(&e))?;
            Ok(rewrap_job(&s.vault, &job))
        })
        .await
    }

    pub(crate) async fn list_rewraps(
        &self,
        meta: Incoming,
        req: ListRewrapsRequest,
    ) -> Result<ListRewrapsResponse, CallError> {
        let offset = page(&req.page_token);
        let validate = offset.as_ref().map(|_| ()).map_err(Clone::clone);
        let offset = offset.unwrap_or_default();
        let size = page_size(req.page_size);
        self.admin(meta, AdminOp::GetRewrap, true, validate, move |s| {
            let jobs = s.vault.rewrap_jobs().map_err(|e| error::vault(&e))?;
            let matching: Vec<pb::RewrapJob> = jobs
                .iter()
                .map(|j| rewrap_job(&s.vault, j))
                .filter(|j| req.key_name.as_ref().is_none_or(|k| *k == j.key_name))
                .collect();
            let next = offset + size;
            Ok(ListRewrapsResponse {
                jobs: matching.iter().skip(offset).take(size).cloned().collect(),
                next_page_token: if matching.len() > next {
                    next.to_string()
                } else {
                    String::new()
                },
            })
        })
        .await
    }

    pub(crate) async fn raise_min_decryption_version(
        &self,
        meta: Incoming,
        req: RaiseMinDecryptionVersionRequest,
    ) -> Result<pb::KeyStatus, CallError> {
        self.admin(
            meta,
            AdminOp::RaiseMinDecryptionVersion,
            true,
            Ok(()),
            move |s| {
                s.vault
                    .raise_min_version(&req.key_name, req.min_decryption_version)
                    .map_err(|e| error::vault(&e))?;
                one_key(&s.vault, &req.key_name)
            },
        )
        .await
    }

    pub(crate) async fn retire_key_version(
        &self,
        meta: Incoming,
        req: RetireKeyVersionRequest,
    ) -> Result<pb::KeyStatus, CallError> {
        self.admin(meta, AdminOp::RetireKeyVersion, true, Ok(()), move |s| {
            s.vault
                .retire(&req.key_name, req.version)
                .map_err(|e| error::vault(&e))?;
            one_key(&s.vault, &req.key_name)
        })
        .await
    }

    pub(crate) async fn destroy_key_version(
        &self,
        meta: Incoming,
        req: DestroyKeyVersionRequest,
    ) -> Result<pb::KeyStatus, CallError> {
        self.admin(meta, AdminOp::DestroyKeyVersion, true, Ok(()), move |s| {
            s.vault
                .destroy(&req.key_name, req.version)
                .map_err(|e| error::vault(&e))?;
            one_key(&s.vault, &req.key_name)
        })
        .await
    }

    pub(crate) async fn rotate_root_key(
        &self,
        meta: Incoming,
        req: RotateRootKeyRequest,
    ) -> Result<RotateRootKeyResponse, CallError> {
        let validate = match &req.new_root {
            None => Err(CallError::invalid_argument("new_root is required")),
            Some(rotate_root_key_request::NewRoot::Shamir(s))
                if s.threshold < 2 || s.shares < s.threshold || s.shares > 255 =>
            {
                Err(CallError::invalid_argument(
                    "shamir: 2 <= threshold <= shares <= 255",
                ))
            }
            _ => Ok(()),
        };
        self.admin(meta, AdminOp::RotateRootKey, true, validate, move |s| {
            let mut root_hex = None;
            let init = match req.new_root {
                Some(rotate_root_key_request::NewRoot::Passphrase(p)) => RootInit::Passphrase(
                    SecretString::from(p),
                    KdfParams::generate().map_err(|_| CallError::internal("internal error"))?,
                ),
                Some(rotate_root_key_request::NewRoot::Shamir(sh)) => RootInit::Shares {
                    threshold: u8::try_from(sh.threshold).unwrap_or(u8::MAX),
                    shares: u8::try_from(sh.shares).unwrap_or(u8::MAX),
                },
                Some(rotate_root_key_request::NewRoot::GeneratedKey(_)) => {
                    let mut bytes = Zeroizing::new([0u8; 32]);
                    getrandom::fill(&mut *bytes)
                        .map_err(|_| CallError::internal("internal error"))?;
                    let hex = Zeroizing::new(hex::encode(*bytes));
                    let key =
                        vault_core::keys::root::from_hex(&SecretString::from(hex.to_string()))
                            .map_err(|_| CallError::internal("internal error"))?;
                    root_hex = Some(hex);
                    RootInit::Key(key)
                }
                None => return Err(CallError::invalid_argument("new_root is required")),
            };
            let shares = s.vault.rotate_root(init).map_err(|e| error::vault(&e))?;
            Ok(RotateRootKeyResponse {
                shares: shares
                    .iter()
                    .map(|t| t.expose_secret().to_owned())
                    .collect(),
                root_key_hex: root_hex.map(|h| h.to_string()),
                status: Some(seal_status(&s.vault)),
            })
        })
        .await
    }

    pub(crate) async fn create_caller(
        &self,
        meta: Incoming,
        req: CreateCallerRequest,
    ) -> Result<CreateCallerResponse, CallError> {
        let scopes = self.check_scopes(&req.roles, &req.scopes);
        let expires_ms = req.expires_at.as_ref().map(ts_ms);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let validate = scopes
            .as_ref()
            .map(|_| ())
            .map_err(Clone::clone)
            .and_then(|()| {
                if expires_ms.is_some_and(|e| e <= now_ms) {
                    Err(CallError::invalid_argument("expires_at is in the past"))
                } else {
                    Ok(())
                }
            });
        let scopes = scopes.unwrap_or_default();
        self.admin(meta, AdminOp::CreateCaller, true, validate, move |s| {
            let (c, key) = s
                .registry
                .create(&req.name, &req.description, req.roles, scopes, expires_ms)
                .map_err(|e| registry_status(&e))?;
            Ok(CreateCallerResponse {
                caller: Some(pb_caller(&c)),
                api_key: key.0.to_string(),
            })
        })
        .await
    }

    pub(crate) async fn list_callers(
        &self,
        meta: Incoming,
        req: ListCallersRequest,
    ) -> Result<ListCallersResponse, CallError> {
        let offset = page(&req.page_token);
        let validate = offset.as_ref().map(|_| ()).map_err(Clone::clone);
        let offset = offset.unwrap_or_default();
        let size = page_size(req.page_size);
        self.admin(meta, AdminOp::ListCallers, true, validate, move |s| {
            let all: Vec<Caller> = s
                .registry
                .list()
                .into_iter()
                .filter(|c| req.include_revoked || c.revoked_ms.is_none())
                .collect();
            let next = offset + size;
            Ok(ListCallersResponse {
                callers: all.iter().skip(offset).take(size).map(pb_caller).collect(),
                next_page_token: if all.len() > next {
                    next.to_string()
                } else {
                    String::new()
                },
            })
        })
        .await
    }

    pub(crate) async fn revoke_caller(
        &self,
        meta: Incoming,
        req: RevokeCallerRequest,
    ) -> Result<PbCaller, CallError> {
        let id = req.caller_id;
        self.admin(meta, AdminOp::RevokeCaller, true, Ok(()), move |s| {
            let c = s.registry.revoke(&id).map_err(|e| registry_status(&e))?;
            Ok(pb_caller(&c))
        })
        .await
    }

    pub(crate) async fn set_caller_scopes(
        &self,
        meta: Incoming,
        req: SetCallerScopesRequest,
    ) -> Result<PbCaller, CallError> {
        let scopes = self.check_scopes(&req.roles, &req.scopes);
        let validate = scopes.as_ref().map(|_| ()).map_err(Clone::clone);
        let scopes = scopes.unwrap_or_default();
        self.admin(meta, AdminOp::SetCallerScopes, true, validate, move |s| {
            let c = s
                .registry
                .set_scopes(&req.caller_id, req.roles, scopes)
                .map_err(|e| registry_status(&e))?;
            Ok(pb_caller(&c))
        })
        .await
    }

    pub(crate) async fn query_audit_events(
        &self,
        meta: Incoming,
        req: QueryAuditEventsRequest,
    ) -> Result<QueryAuditEventsResponse, CallError> {
        let offset = page(&req.page_token);
        let validate = offset.as_ref().map(|_| ()).map_err(Clone::clone);
        let offset = offset.unwrap_or_default();
        let limit = match req.limit {
            0 => PAGE_DEFAULT,
            n => (n as usize).min(PAGE_MAX),
        };
        let mut filter = Filter {
            since_ms: req.start_time.as_ref().map(ts_ms),
            until_ms: req.end_time.as_ref().map(ts_ms),
            caller: req.caller_id.clone(),
            request_id: req.request_id.clone(),
            offset,
            limit: Some(limit + 1),
            ..Filter::default()
        };
        match pb::Operation::try_from(req.operation)
            .ok()
            .and_then(ApiOperation::from_proto)
        {
            Some(ApiOperation::Tokenizer(t)) => filter.operation = Some(t.operation()),
            Some(ApiOperation::Admin(a)) => {
                filter.operation = Some(Operation::Admin);
                filter.action = Some(a.action().to_owned());
            }
            None => {}
        }
        self.admin(meta, AdminOp::QueryAuditEvents, true, validate, move |s| {
            let mut records = s.audit.query(&filter).map_err(|e| error::audit(&e))?;
            let more = records.len() > limit;
            records.truncate(limit);
            Ok(QueryAuditEventsResponse {
                events: records.iter().map(audit_event).collect(),
                next_page_token: if more {
                    (offset + limit).to_string()
                } else {
                    String::new()
                },
            })
        })
        .await
    }

    pub(crate) async fn verify_audit_log(
        &self,
        meta: Incoming,
        _req: VerifyAuditLogRequest,
    ) -> Result<VerifyAuditLogResponse, CallError> {
        self.admin(meta, AdminOp::VerifyAuditLog, true, Ok(()), |s| {
            let (report, head) = s.audit.verify_with_head().map_err(|e| error::audit(&e))?;
            Ok(match report.first_bad {
                None => VerifyAuditLogResponse {
                    ok: true,
                    events_checked: report.events,
                    first_bad_index: None,
                    reason: String::new(),
                    last_hash: head.to_vec(),
                },
                Some((seq, defect)) => VerifyAuditLogResponse {
                    ok: false,
                    events_checked: report.events + 1,
                    first_bad_index: Some(seq),
                    reason: defect.to_string(),
                    last_hash: head.to_vec(),
                },
            })
        })
        .await
    }
}

/// One stored record as the API shows it.
fn audit_event(r: &Record) -> AuditEvent {
    let e = &r.event;
    let operation = ApiOperation::of_event(e.operation, e.action.as_deref())
        .map_or(pb::Operation::Unspecified, ApiOperation::proto);
    let (status_code, failed) = match &e.outcome {
        Outcome::Ok => (0, 0),
        Outcome::Partial { failed } => (0, *failed),
        Outcome::Denied { reason } => (
            Code::from_name(reason.split(':').next().unwrap_or_default()) as i32,
            e.items,
        ),
        Outcome::Failed { code } => (Code::from_name(code) as i32, e.items),
        // gRPC's UNKNOWN: what the caller received is not known.
        Outcome::Unknown { .. } => (2, e.items),
    };
    AuditEvent {
        index: r.seq,
        time: Some(ts(r.time_ms)),
        request_id: e.request_id.clone(),
        caller_id: e.caller.clone(),
        operation: operation as i32,
        template: e.template.clone().unwrap_or_default(),
        purpose: e.purpose.clone().unwrap_or_default(),
        item_count: e.items,
        failed_item_count: failed,
        status_code,
        // The admin action, and what the server added (a torn-tail recovery's bytes, digest
        // and quarantine file).
        detail: match (&e.action, &e.detail) {
            (Some(a), Some(d)) => format!("{a}: {d}"),
            (Some(a), None) => a.clone(),
            (None, Some(d)) => d.clone(),
            (None, None) => String::new(),
        },
        hash: hex::decode(&r.mac).unwrap_or_default(),
        previous_hash: hex::decode(&r.prev).unwrap_or_default(),
    }
}
