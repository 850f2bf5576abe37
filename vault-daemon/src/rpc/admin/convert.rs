//! The contract's messages built from the vault's, audit log's and registry's types.

use prost_types::Timestamp;
use vault_core::keys::{Purpose, State};
use vault_core::vault::{JobState, SealMethod, Vault};
use vault_proto::v1::{
    self as pb, AuditEvent, Caller as PbCaller, KeyPurpose, KeyVersionState, NonceBudget,
    RewrapState, SealStatus, UnsealMethod,
};

use crate::audit::{Outcome, Record};
use crate::callers::Caller;
use crate::policy::ApiOperation;
use crate::request::error::{self, CallError, Code};

/// A GCM data key should be rotated past this many nonces (SP 800-38D §8.3; ARCHITECTURE.md).
const NONCE_ROTATE: u64 = 1 << 31;
/// ... and refuses to seal at this many.
const NONCE_LIMIT: u64 = 1 << 32;

pub(super) fn ts(ms: u64) -> Timestamp {
    Timestamp {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

pub(super) fn ts_ms(t: &Timestamp) -> u64 {
    u64::try_from(t.seconds).unwrap_or(0) * 1000 + u64::try_from(t.nanos).unwrap_or(0) / 1_000_000
}

pub(crate) fn seal_status(v: &Vault) -> SealStatus {
    let st = v.status();
    let method = match st.seal_method {
        SealMethod::Passphrase => UnsealMethod::Passphrase,
        SealMethod::RootKey => UnsealMethod::RootKey,
        SealMethod::Shares => UnsealMethod::Shamir,
        SealMethod::Wrapped => UnsealMethod::Hsm,
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

pub(super) fn key_status(k: &vault_core::vault::KeyStatus) -> pb::KeyStatus {
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

pub(super) fn one_key(vault: &Vault, name: &str) -> Result<pb::KeyStatus, CallError> {
    vault
        .key_status()
        .map_err(|e| error::vault(&e))?
        .iter()
        .find(|k| k.name == name)
        .map(key_status)
        .ok_or_else(|| CallError::not_found(format!("no key named {name:?}")))
}

pub(super) fn rewrap_job(vault: &Vault, j: &vault_core::vault::RewrapJob) -> pb::RewrapJob {
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

pub(super) fn pb_caller(c: &Caller) -> PbCaller {
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

/// One stored record as the API shows it.
pub(super) fn audit_event(r: &Record) -> AuditEvent {
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
