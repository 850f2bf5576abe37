//! [`AdminClient`]: thin typed wrappers over the `Admin` service, for `vaultctl` and tooling.
//!
//! The same deadline and retry rules as [`VaultClient`](crate::VaultClient): reads and the
//! calls the contract makes idempotent (seal, revoke, set scopes) are retried on UNAVAILABLE /
//! RESOURCE_EXHAUSTED; key lifecycle changes, unsealing and caller creation are not. There is
//! no circuit breaker: an operator wants each real error, not a fast failure.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use vault_proto::v1 as pb;
use vault_proto::v1::admin_client::AdminClient as GrpcAdmin;

use crate::breaker::BreakerPolicy;
use crate::call::Shared;
use crate::client::Grpc;
use crate::config::{self, Config};
use crate::error::Error;
use crate::retry::Safety;

/// A client of the vault's `Admin` service. Cheap to clone.
#[derive(Clone)]
pub struct AdminClient {
    shared: Arc<Shared>,
    grpc: GrpcAdmin<Grpc>,
    deadline: Option<Duration>,
}

/// A new caller and its API key, which the vault returns only once.
#[non_exhaustive]
pub struct CreatedCaller {
    /// The caller.
    pub caller: pb::Caller,
    /// Its API key, for `authorization: Bearer <key>`.
    pub api_key: SecretString,
}

impl fmt::Debug for CreatedCaller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedCaller")
            .field("caller", &self.caller)
            .field("api_key", &"<redacted>")
            .finish()
    }
}

/// Where a rotated root key comes from.
#[non_exhaustive]
pub enum NewRootKey {
    /// A new passphrase.
    Passphrase(SecretString),
    /// A random key split into `shares` Shamir shares, `threshold` of which rebuild it.
    Shamir {
        /// Shares needed (m).
        threshold: u32,
        /// Shares issued (n).
        shares: u32,
    },
    /// A random key returned once, for a root key file.
    Generated,
    /// A random key wrapped by the daemon's HSM (its `[hsm]` section); nothing is returned.
    Hsm,
}

impl fmt::Debug for NewRootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Passphrase(_) => f.write_str("Passphrase(<redacted>)"),
            Self::Shamir { threshold, shares } => f
                .debug_struct("Shamir")
                .field("threshold", threshold)
                .field("shares", shares)
                .finish(),
            Self::Generated => f.write_str("Generated"),
            Self::Hsm => f.write_str("Hsm"),
        }
    }
}

/// The secrets of a rotated root key, returned once.
#[non_exhaustive]
pub struct RootKeyRotation {
    /// The Shamir shares, one per custodian (Shamir only).
    pub shares: Vec<SecretString>,
    /// The new root key, hex (generated key only).
    pub root_key_hex: Option<SecretString>,
    /// The seal status after rotation.
    pub status: Option<pb::SealStatus>,
}

impl fmt::Debug for RootKeyRotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootKeyRotation")
            .field("shares", &format_args!("<{} redacted>", self.shares.len()))
            .field(
                "root_key_hex",
                &self.root_key_hex.as_ref().map(|_| "<redacted>"),
            )
            .field("status", &self.status)
            .finish()
    }
}

macro_rules! rpc {
    ($self:ident, $safety:expr, $method:ident, $request:expr) => {{
        let request = $request;
        $self
            .shared
            .run($safety, $self.deadline(), &request, |r| {
                let mut grpc = $self.grpc.clone();
                async move { grpc.$method(r).await }
            })
            .await
    }};
}

impl AdminClient {
    /// Connects to the daemon now.
    pub async fn connect(config: Config) -> Result<Self, Error> {
        let channel = config::channel(&config, false).await?;
        Self::with_channel(config, channel)
    }

    /// Connects on the first call.
    pub fn connect_lazy(config: Config) -> Result<Self, Error> {
        let endpoint = config.endpoint()?;
        Self::with_channel(config, endpoint.connect_lazy())
    }

    fn with_channel(config: Config, channel: tonic::transport::Channel) -> Result<Self, Error> {
        let auth = config.auth()?;
        Ok(Self {
            grpc: GrpcAdmin::with_interceptor(channel, auth),
            shared: Arc::new(Shared::new(config, BreakerPolicy::disabled())),
            deadline: None,
        })
    }

    /// A handle whose calls use this deadline (for long operations such as root key rotation
    /// or verifying a large audit log).
    pub fn with_deadline(&self, deadline: Duration) -> Self {
        Self {
            deadline: Some(deadline),
            ..self.clone()
        }
    }

    fn deadline(&self) -> Duration {
        self.deadline.unwrap_or(self.shared.config.deadline)
    }

    /// Whether the vault is sealed and how far unsealing has come.
    pub async fn seal_status(&self) -> Result<pb::SealStatus, Error> {
        rpc!(
            self,
            Safety::Idempotent,
            get_seal_status,
            pb::GetSealStatusRequest {}
        )
    }

    /// Gives the vault its passphrase.
    pub async fn unseal_with_passphrase(
        &self,
        passphrase: &SecretString,
    ) -> Result<pb::SealStatus, Error> {
        let secret = pb::unseal_request::Secret::Passphrase(passphrase.expose_secret().to_owned());
        self.unseal(Some(secret), false).await
    }

    /// Gives the vault one Shamir share (its printed text form).
    pub async fn unseal_with_share(&self, share: &SecretString) -> Result<pb::SealStatus, Error> {
        let secret = pb::unseal_request::Secret::Share(share.expose_secret().to_owned());
        self.unseal(Some(secret), false).await
    }

    /// Asks the daemon to unseal with its HSM (a vault whose root key the HSM wraps).
    pub async fn unseal_with_hsm(&self) -> Result<pb::SealStatus, Error> {
        self.unseal(
            Some(pb::unseal_request::Secret::Hsm(pb::HsmUnseal {})),
            false,
        )
        .await
    }

    /// Discards the shares received so far.
    pub async fn reset_unseal(&self) -> Result<pb::SealStatus, Error> {
        self.unseal(None, true).await
    }

    async fn unseal(
        &self,
        secret: Option<pb::unseal_request::Secret>,
        reset: bool,
    ) -> Result<pb::SealStatus, Error> {
        // Not retried: a share that arrived would be counted twice or reported as repeated.
        let mut request = pb::UnsealRequest { secret, reset };
        let result = rpc!(self, Safety::NotIdempotent, unseal, request.clone());
        zeroize_unseal(&mut request);
        result
    }

    /// Drops the vault's keys from memory.
    pub async fn seal(&self) -> Result<pb::SealStatus, Error> {
        // Sealing a sealed vault changes nothing (admin.proto): safe to retry.
        rpc!(self, Safety::Idempotent, seal, pb::SealRequest {})
    }

    /// The keys (optionally one key by name, or the keys of one template) and their versions.
    pub async fn key_status(
        &self,
        key_name: Option<&str>,
        template: Option<&str>,
    ) -> Result<Vec<pb::KeyStatus>, Error> {
        let request = pb::GetKeyStatusRequest {
            key_name: key_name.map(str::to_owned),
            template: template.map(str::to_owned),
        };
        rpc!(self, Safety::Idempotent, get_key_status, request).map(|r| r.keys)
    }

    /// Creates a new Active version of the named key.
    pub async fn rotate_key(&self, key_name: &str) -> Result<pb::RotateKeyResponse, Error> {
        let request = pb::RotateKeyRequest {
            key: Some(pb::rotate_key_request::Key::KeyName(key_name.to_owned())),
        };
        rpc!(self, Safety::NotIdempotent, rotate_key, request)
    }

    /// Starts re-encrypting the key's records under its Active version.
    pub async fn start_rewrap(
        &self,
        key_name: &str,
        batch_size: Option<u32>,
    ) -> Result<pb::RewrapJob, Error> {
        let request = pb::StartRewrapRequest {
            key_name: key_name.to_owned(),
            batch_size,
        };
        rpc!(self, Safety::NotIdempotent, start_rewrap, request)
    }

    /// Resumes a paused or failed rewrap job.
    pub async fn resume_rewrap(&self, job_id: &str) -> Result<pb::RewrapJob, Error> {
        let request = pb::ResumeRewrapRequest {
            job_id: job_id.to_owned(),
        };
        rpc!(self, Safety::NotIdempotent, resume_rewrap, request)
    }

    /// One rewrap job's progress.
    pub async fn rewrap(&self, job_id: &str) -> Result<pb::RewrapJob, Error> {
        let request = pb::GetRewrapRequest {
            job_id: job_id.to_owned(),
        };
        rpc!(self, Safety::Idempotent, get_rewrap, request)
    }

    /// A page of rewrap jobs, newest first.
    pub async fn list_rewraps(
        &self,
        request: pb::ListRewrapsRequest,
    ) -> Result<pb::ListRewrapsResponse, Error> {
        rpc!(self, Safety::Idempotent, list_rewraps, request)
    }

    /// Raises the key's minimum decryption version.
    pub async fn raise_min_decryption_version(
        &self,
        key_name: &str,
        min_decryption_version: u32,
    ) -> Result<pb::KeyStatus, Error> {
        let request = pb::RaiseMinDecryptionVersionRequest {
            key_name: key_name.to_owned(),
            min_decryption_version,
        };
        rpc!(
            self,
            Safety::NotIdempotent,
            raise_min_decryption_version,
            request
        )
    }

    /// Moves a DecryptOnly version with no records left to Retired.
    pub async fn retire_key_version(
        &self,
        key_name: &str,
        version: u32,
    ) -> Result<pb::KeyStatus, Error> {
        let request = pb::RetireKeyVersionRequest {
            key_name: key_name.to_owned(),
            version,
        };
        rpc!(self, Safety::NotIdempotent, retire_key_version, request)
    }

    /// Erases a Retired version's key material. Irreversible.
    pub async fn destroy_key_version(
        &self,
        key_name: &str,
        version: u32,
    ) -> Result<pb::KeyStatus, Error> {
        let request = pb::DestroyKeyVersionRequest {
            key_name: key_name.to_owned(),
            version,
        };
        rpc!(self, Safety::NotIdempotent, destroy_key_version, request)
    }

    /// Replaces the root key. The returned secrets exist only in this response.
    pub async fn rotate_root_key(&self, new_root: NewRootKey) -> Result<RootKeyRotation, Error> {
        use pb::rotate_root_key_request::NewRoot;
        let new_root = match new_root {
            NewRootKey::Passphrase(p) => NewRoot::Passphrase(p.expose_secret().to_owned()),
            NewRootKey::Shamir { threshold, shares } => {
                NewRoot::Shamir(pb::ShamirSplit { threshold, shares })
            }
            NewRootKey::Generated => NewRoot::GeneratedKey(pb::GeneratedRootKey {}),
            NewRootKey::Hsm => NewRoot::Hsm(pb::HsmWrap {}),
        };
        let mut request = pb::RotateRootKeyRequest {
            new_root: Some(new_root),
        };
        let result = rpc!(
            self,
            Safety::NotIdempotent,
            rotate_root_key,
            request.clone()
        );
        if let Some(NewRoot::Passphrase(p)) = &mut request.new_root {
            zeroize::Zeroize::zeroize(p);
        }
        let mut response = result?;
        Ok(RootKeyRotation {
            shares: response.shares.drain(..).map(SecretString::from).collect(),
            root_key_hex: response.root_key_hex.take().map(SecretString::from),
            status: response.status.take(),
        })
    }

    /// Creates a caller; its API key is in the answer only.
    pub async fn create_caller(
        &self,
        request: pb::CreateCallerRequest,
    ) -> Result<CreatedCaller, Error> {
        let mut response = rpc!(self, Safety::NotIdempotent, create_caller, request)?;
        let caller = response.caller.take().ok_or_else(|| Error::Protocol {
            message: "CreateCallerResponse without a caller".into(),
        })?;
        Ok(CreatedCaller {
            caller,
            api_key: SecretString::from(std::mem::take(&mut response.api_key)),
        })
    }

    /// A page of callers, oldest first.
    pub async fn list_callers(
        &self,
        request: pb::ListCallersRequest,
    ) -> Result<pb::ListCallersResponse, Error> {
        rpc!(self, Safety::Idempotent, list_callers, request)
    }

    /// Revokes a caller; its API key stops working at once.
    pub async fn revoke_caller(&self, caller_id: &str) -> Result<pb::Caller, Error> {
        // Revoking a revoked caller changes nothing (admin.proto): safe to retry.
        let request = pb::RevokeCallerRequest {
            caller_id: caller_id.to_owned(),
        };
        rpc!(self, Safety::Idempotent, revoke_caller, request)
    }

    /// Replaces a caller's roles and scopes.
    pub async fn set_caller_scopes(
        &self,
        caller_id: &str,
        roles: Vec<String>,
        scopes: Vec<pb::Scope>,
    ) -> Result<pb::Caller, Error> {
        // A replacement, not an increment: safe to retry.
        let request = pb::SetCallerScopesRequest {
            caller_id: caller_id.to_owned(),
            roles,
            scopes,
        };
        rpc!(self, Safety::Idempotent, set_caller_scopes, request)
    }

    /// A page of audit events matching the filter, oldest first.
    pub async fn query_audit_events(
        &self,
        request: pb::QueryAuditEventsRequest,
    ) -> Result<pb::QueryAuditEventsResponse, Error> {
        rpc!(self, Safety::Idempotent, query_audit_events, request)
    }

    /// Checks the audit log's hash chain between two indices (all of it when unset).
    pub async fn verify_audit_log(
        &self,
        from_index: Option<u64>,
        to_index: Option<u64>,
    ) -> Result<pb::VerifyAuditLogResponse, Error> {
        let request = pb::VerifyAuditLogRequest {
            from_index,
            to_index,
        };
        rpc!(self, Safety::Idempotent, verify_audit_log, request)
    }
}

fn zeroize_unseal(request: &mut pb::UnsealRequest) {
    use pb::unseal_request::Secret;
    if let Some(Secret::Passphrase(s) | Secret::Share(s)) = &mut request.secret {
        zeroize::Zeroize::zeroize(s);
    }
}

impl fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminClient")
            .field("config", &self.shared.config)
            .field("deadline", &self.deadline())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_returned_secrets() {
        let created = CreatedCaller {
            caller: pb::Caller {
                name: "payments".into(),
                ..Default::default()
            },
            api_key: "vk_SECRETKEY".into(),
        };
        let debug = format!("{created:?}");
        assert!(
            !debug.contains("SECRETKEY") && debug.contains("payments"),
            "{debug}"
        );
        let rotation = RootKeyRotation {
            shares: vec!["SHARE-ONE".into(), "SHARE-TWO".into()],
            root_key_hex: Some("00ff00ff".into()),
            status: None,
        };
        let debug = format!("{rotation:?}");
        assert!(
            !debug.contains("SHARE") && !debug.contains("00ff"),
            "{debug}"
        );
        assert!(debug.contains("<2 redacted>"), "{debug}");
        let debug = format!("{:?}", NewRootKey::Passphrase("hunter2".into()));
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
