//! `vault.v1.Tokenizer`: tokenize, detokenize, masked reveal, delete.
//!
//! Audit ordering: the event (with token references, never tokens or values) is durable before
//! any result is sent. Detokenize and reveal hold the plaintext in `Zeroizing` buffers until the
//! event is written; if it cannot be, the buffers are dropped and the call is `UNAVAILABLE`.
//! Tokenize follows the same rule (fail closed): a token the log does not know about is never
//! handed out. The records a failed tokenize already stored stay, unreachable without their
//! token; a retry with the same idempotency key (or a deterministic template) returns the same
//! token.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use vault_core::vault::{Detokenized, Error as VaultError, TokenizeItem as CoreItem};
use vault_proto::v1::{
    DeleteTokensRequest, DeleteTokensResponse, DeleteTokensResult, Deleted, DetokenizeRequest,
    DetokenizeResponse, DetokenizeResult, DetokenizedValue, MaskedValue, RevealRequest,
    RevealResponse, RevealResult, Token, TokenizeRequest, TokenizeResponse, TokenizeResult,
    delete_tokens_result, detokenize_result, reveal_result, tokenize_result,
};

use crate::policy::{Operation, Scope};
use crate::request::error::{self, CallError};
use crate::request::{Admitted, Done, Incoming, Shared, Spec};

/// Most characters in a purpose.
const MAX_PURPOSE: usize = 256;

/// The Tokenizer rpcs, on the contract's messages; a transport calls them.
#[derive(Debug, Clone)]
pub(crate) struct Tokenizer(pub(crate) Arc<Shared>);

fn check_batch(n: usize, max: usize) -> Result<(), CallError> {
    if n == 0 {
        return Err(CallError::invalid_argument(
            "a batch needs at least one item",
        ));
    }
    if n > max {
        return Err(CallError::invalid_argument(format!(
            "batch of {n} items exceeds the limit of {max}"
        )));
    }
    Ok(())
}

fn check_purpose(p: &str) -> Result<(), CallError> {
    if p.trim().is_empty() {
        return Err(CallError::invalid_argument("purpose is required"));
    }
    if p.chars().count() > MAX_PURPOSE {
        return Err(CallError::invalid_argument(
            "purpose: at most 256 characters",
        ));
    }
    Ok(())
}

fn check_template(shared: &Shared, name: &str) -> Result<(), CallError> {
    if shared.vault.templates().any(|t| t.template.name() == name) {
        Ok(())
    } else {
        // The name is not echoed: a caller that swapped fields may have put a value there.
        Err(CallError::not_found(format!(
            "unknown template (a name of {} bytes)",
            name.len()
        )))
    }
}

/// A masked reveal of a volatile token would spend one of its few uses on a mask (and a
/// three-digit code has nothing to show masked): refused.
fn check_not_volatile_reveal(shared: &Shared, op: Operation, name: &str) -> Result<(), CallError> {
    // Only reveals pay for the look-up: detokenize is the hot path.
    if op != Operation::Reveal {
        return Ok(());
    }
    let volatile = shared.vault.templates().any(|t| {
        t.template.name() == name && matches!(t.mode, vault_core::vault::Mode::Volatile(_))
    });
    if volatile {
        return Err(CallError::failed_precondition(
            "volatile templates are not revealed masked (it would spend a use): detokenize",
        ));
    }
    Ok(())
}

/// What detokenize and reveal look up.
struct Lookup<'a> {
    op: Operation,
    request_id: Option<&'a str>,
    template: &'a str,
    key_version: Option<u32>,
    purpose: &'a str,
    tokens: Vec<String>,
}

/// The admitted call and one result per token.
type Resolved = (
    Admitted,
    Vec<Result<Detokenized, vault_proto::v1::ItemError>>,
);

/// The request's items as the vault takes them (`metadata` converted, one map per item).
fn core_items<'a>(
    items: &'a [vault_proto::v1::TokenizeItem],
    metadata: &'a [BTreeMap<String, String>],
) -> Vec<CoreItem<'a>> {
    items
        .iter()
        .zip(metadata)
        .map(|(i, m)| CoreItem {
            value: &i.value,
            idempotency_key: i.idempotency_key.as_deref(),
            metadata: (!m.is_empty()).then_some(m),
            ttl_seconds: i.ttl_seconds,
        })
        .collect()
}

/// A vault call-level error, or the per-item results.
fn call_level<T>(r: Result<T, VaultError>) -> Result<T, CallError> {
    r.map_err(|e| error::vault(&e))
}

impl Tokenizer {
    /// Detokenize for detokenize and reveal, with the end-user ownership check applied to each
    /// record (`subject_matches_metadata`).
    async fn resolve(&self, meta: &Incoming, l: Lookup<'_>) -> Result<Resolved, CallError> {
        let Lookup {
            op,
            request_id,
            template,
            key_version,
            purpose,
            tokens,
        } = l;
        let s = &self.0;
        let validate = check_batch(tokens.len(), s.limits.max_batch)
            .and_then(|()| check_purpose(purpose))
            .and_then(|()| check_template(s, template))
            .and_then(|()| check_not_volatile_reveal(s, op, template));
        let spec = Spec::tokenizer(op, template, tokens.len(), Some(purpose), request_id);
        let call = s
            .admit(meta, spec, Scope::new(op, template), validate, true)
            .await?;
        let vault = Arc::clone(&s.vault);
        let now = s
            .now(&call, || {
                let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
                vault
                    .try_detokenize_now(template, &refs, key_version)
                    .map(Ok)
            })
            .await;
        let results = match now {
            Some(r) => r?,
            None => {
                let t = template.to_owned();
                let toks = tokens.clone();
                s.run(&call, move || {
                    let refs: Vec<&str> = toks.iter().map(String::as_str).collect();
                    call_level(vault.detokenize_batch(&t, &refs, key_version))
                })
                .await?
            }
        };
        let results = results
            .into_iter()
            .map(|r| match r {
                Ok(d) => match call.grant.confirm(&d.metadata) {
                    Ok(()) => Ok(d),
                    Err(denied) => Err(error::item_denied(&denied)),
                },
                Err(e) => Err(error::item(&e)),
            })
            .collect();
        Ok((call, results))
    }

    fn done<T, E>(
        &self,
        tokens: &[String],
        results: &[Result<T, E>],
        version: impl Fn(&T) -> u32,
    ) -> Done {
        Done {
            failed: results.iter().filter(|r| r.is_err()).count() as u32,
            key_versions: results.iter().flatten().map(version).collect(),
            token_refs: tokens.iter().map(|t| self.0.audit.token_ref(t)).collect(),
        }
    }
}

impl Tokenizer {
    pub(crate) async fn tokenize(
        &self,
        meta: Incoming,
        req: TokenizeRequest,
    ) -> Result<TokenizeResponse, CallError> {
        let s = &self.0;
        let validate = check_batch(req.items.len(), s.limits.max_batch).and_then(|()| {
            check_template(s, &req.template)?;
            if req
                .items
                .iter()
                .any(|i| i.idempotency_key.as_ref().is_some_and(|k| k.len() > 128))
            {
                return Err(CallError::invalid_argument(
                    "idempotency_key: at most 128 bytes",
                ));
            }
            Ok(())
        });
        let spec = Spec::tokenizer(
            Operation::Tokenize,
            &req.template,
            req.items.len(),
            None,
            req.request_id.as_deref(),
        );
        let call = s
            .admit(
                &meta,
                spec,
                Scope::new(Operation::Tokenize, &req.template),
                validate,
                true,
            )
            .await?;
        let vault = Arc::clone(&s.vault);
        let template = req.template.clone();
        let pinned = req.key_version;
        let mut items = req.items;
        let metadata: Vec<BTreeMap<String, String>> = items
            .iter()
            .map(|i| i.metadata.clone().into_iter().collect())
            .collect();
        // A pinned key version is checked against the key table (storage): blocking path only.
        let now = match pinned {
            Some(_) => None,
            None => {
                s.now(&call, || {
                    let core = core_items(&items, &metadata);
                    vault.try_tokenize_now(&template, &core).map(call_level)
                })
                .await
            }
        };
        let results = match now {
            Some(r) => {
                // The request's values are wiped as soon as they are no longer needed.
                for i in &mut items {
                    zeroize::Zeroize::zeroize(&mut i.value);
                }
                r?
            }
            None => {
                // Idempotency keys are the caller's own (scoped per caller and template in the
                // vault).
                let caller = call.identity.id.clone();
                s.run(&call, move || {
                    if let Some(v) = pinned {
                        let active = active_version(&vault, &template)?;
                        if active != Some(v) {
                            return Err(CallError::failed_precondition(
                                "key_version is not the template's active version",
                            ));
                        }
                    }
                    let core = core_items(&items, &metadata);
                    let out = call_level(vault.tokenize_batch_as(&caller, &template, &core));
                    drop(core);
                    for mut i in items {
                        zeroize::Zeroize::zeroize(&mut i.value);
                    }
                    out
                })
                .await?
            }
        };
        let issued: Vec<String> = results.iter().flatten().map(|t| t.token.clone()).collect();
        let mut done = self.done(&[], &results, |t| t.key_version);
        done.token_refs = issued.iter().map(|t| s.audit.token_ref(t)).collect();
        s.finish(&call, done).await?;
        let results = results
            .into_iter()
            .map(|r| TokenizeResult {
                outcome: Some(match r {
                    Ok(t) => tokenize_result::Outcome::Token(Token {
                        token: t.token,
                        key_version: t.key_version,
                        existing: t.existing,
                        expires_at: t.expires_at.map(timestamp),
                    }),
                    Err(e) => tokenize_result::Outcome::Error(error::item(&e)),
                }),
            })
            .collect();
        Ok(TokenizeResponse {
            request_id: call.spec.request_id.clone(),
            results,
        })
    }

    pub(crate) async fn detokenize(
        &self,
        meta: Incoming,
        req: DetokenizeRequest,
    ) -> Result<DetokenizeResponse, CallError> {
        let tokens: Vec<String> = req.items.into_iter().map(|i| i.token).collect();
        let (call, results) = self
            .resolve(
                &meta,
                Lookup {
                    op: Operation::Detokenize,
                    request_id: req.request_id.as_deref(),
                    template: &req.template,
                    key_version: req.key_version,
                    purpose: &req.purpose,
                    tokens: tokens.clone(),
                },
            )
            .await?;
        let done = self.done(&tokens, &results, |d| d.key_version);
        // Audit first; on failure `results` (Zeroizing values) is dropped unsent.
        self.0.finish(&call, done).await?;
        let results = results
            .into_iter()
            .map(|r| DetokenizeResult {
                outcome: Some(match r {
                    Ok(d) => detokenize_result::Outcome::Value(DetokenizedValue {
                        value: (*d.value).clone(),
                        key_version: d.key_version,
                        metadata: d.metadata.clone().into_iter().collect::<HashMap<_, _>>(),
                        expires_at: d.expires_at.map(timestamp),
                    }),
                    Err(e) => detokenize_result::Outcome::Error(e),
                }),
            })
            .collect();
        Ok(DetokenizeResponse {
            request_id: call.spec.request_id.clone(),
            results,
        })
    }

    pub(crate) async fn reveal(
        &self,
        meta: Incoming,
        req: RevealRequest,
    ) -> Result<RevealResponse, CallError> {
        let mask_ok = req
            .mask
            .as_deref()
            .is_none_or(|m| m.is_empty() || m == "default");
        let tokens: Vec<String> = req.items.into_iter().map(|i| i.token).collect();
        if !mask_ok {
            // Validated after authentication like every other argument: route it through admit.
            let spec = Spec::tokenizer(
                Operation::Reveal,
                &req.template,
                tokens.len(),
                Some(&req.purpose),
                req.request_id.as_deref(),
            );
            return Err(self
                .0
                .admit(
                    &meta,
                    spec,
                    Scope::new(Operation::Reveal, &req.template),
                    Err(CallError::invalid_argument("unknown mask")),
                    true,
                )
                .await
                .err()
                .unwrap_or_else(|| CallError::invalid_argument("unknown mask")));
        }
        let (call, results) = self
            .resolve(
                &meta,
                Lookup {
                    op: Operation::Reveal,
                    request_id: req.request_id.as_deref(),
                    template: &req.template,
                    key_version: req.key_version,
                    purpose: &req.purpose,
                    tokens: tokens.clone(),
                },
            )
            .await?;
        let template = self
            .0
            .vault
            .templates()
            .find(|t| t.template.name() == req.template)
            .map(|t| t.template.clone());
        let Some(template) = template else {
            return Err(self
                .0
                .fail(&call, CallError::not_found("unknown template"))
                .await);
        };
        // Mask before auditing: the full values are dropped here, whatever happens next.
        let masked: Vec<Result<(String, Detokenized), vault_proto::v1::ItemError>> = results
            .into_iter()
            .map(|r| {
                r.and_then(|d| match template.mask(&d.value) {
                    Ok(m) => Ok((m, d)),
                    Err(e) => Err(error::item(&VaultError::Template(e))),
                })
            })
            .collect();
        let done = self.done(&tokens, &masked, |(_, d)| d.key_version);
        self.0.finish(&call, done).await?;
        let results = masked
            .into_iter()
            .map(|r| RevealResult {
                outcome: Some(match r {
                    Ok((m, d)) => reveal_result::Outcome::Value(MaskedValue {
                        masked_value: m,
                        key_version: d.key_version,
                        metadata: d.metadata.clone().into_iter().collect(),
                        expires_at: d.expires_at.map(timestamp),
                    }),
                    Err(e) => reveal_result::Outcome::Error(e),
                }),
            })
            .collect();
        Ok(RevealResponse {
            request_id: call.spec.request_id.clone(),
            results,
        })
    }

    pub(crate) async fn delete_tokens(
        &self,
        meta: Incoming,
        req: DeleteTokensRequest,
    ) -> Result<DeleteTokensResponse, CallError> {
        let s = &self.0;
        let tokens: Vec<String> = req.items.into_iter().map(|i| i.token).collect();
        let validate = check_batch(tokens.len(), s.limits.max_batch)
            .and_then(|()| check_template(s, &req.template));
        let spec = Spec::tokenizer(
            Operation::Delete,
            &req.template,
            tokens.len(),
            None,
            req.request_id.as_deref(),
        );
        let call = s
            .admit(
                &meta,
                spec,
                Scope::new(Operation::Delete, &req.template),
                validate,
                true,
            )
            .await?;
        let vault = Arc::clone(&s.vault);
        let template = req.template.clone();
        let toks = tokens.clone();
        let results = s
            .run(&call, move || {
                let refs: Vec<&str> = toks.iter().map(String::as_str).collect();
                call_level(vault.delete(&template, &refs))
            })
            .await?;
        let done = self.done(&tokens, &results, |()| 0);
        let done = Done {
            key_versions: Vec::new(),
            ..done
        };
        s.finish(&call, done).await?;
        let results = results
            .into_iter()
            .map(|r| DeleteTokensResult {
                outcome: Some(match r {
                    Ok(()) => delete_tokens_result::Outcome::Deleted(Deleted {}),
                    Err(e) => delete_tokens_result::Outcome::Error(error::item(&e)),
                }),
            })
            .collect();
        Ok(DeleteTokensResponse {
            request_id: call.spec.request_id.clone(),
            results,
        })
    }
}

/// A stored expiry (Unix seconds) as the proto's `Timestamp`.
fn timestamp(unix_seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: unix_seconds,
        nanos: 0,
    }
}

/// The active version of the key a template tokenizes under.
fn active_version(
    vault: &vault_core::vault::Vault,
    template: &str,
) -> Result<Option<u32>, CallError> {
    let keys = call_level(vault.key_status())?;
    let names = [format!("fpe/{template}"), format!("data/{template}")];
    Ok(keys.iter().find(|k| names.contains(&k.name)).and_then(|k| {
        k.versions
            .iter()
            .find(|v| v.state == vault_core::keys::State::Active)
            .map(|v| v.version)
    }))
}
