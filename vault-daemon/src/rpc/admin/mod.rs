//! `vault.v1.Admin`: sealing, keys and rotation, callers, the audit log.
//!
//! Scopes: every key and seal operation needs `admin:keys`, caller management `admin:callers`,
//! audit queries and verification `admin:audit` (the policy's admin areas are coarser than the
//! rpcs: a registry scope naming one admin rpc grants its whole area). While the vault is sealed
//! only GetSealStatus, Unseal and Seal run; the rest answer `FAILED_PRECONDITION`.

use std::sync::Arc;

use vault_proto::v1::{self as pb};

use crate::callers::{RegistryError, StoredScope};
use crate::policy::{AdminOp, ApiOperation};
use crate::request::error::CallError;
use crate::request::{Done, Incoming, Shared, Spec};

mod audit;
mod callers;
mod convert;
mod keys;
mod rewrap;

/// Default and largest page sizes.
const PAGE_DEFAULT: usize = 100;
const PAGE_MAX: usize = 1000;
/// Largest rewrap batch.
const REWRAP_BATCH_MAX: usize = 5000;

/// The Admin rpcs, on the contract's messages; a transport calls them.
#[derive(Debug, Clone)]
pub(crate) struct Admin(pub(crate) Arc<Shared>);

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
