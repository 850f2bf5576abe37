//! Tables for people, JSON for scripts.

use serde_json::{Value, json};
use vault_client::proto as pb;

/// Print rows as a left-aligned table under a header.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        outln!("{}", out.trim_end());
    };
    line(header.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        line(row.clone());
    }
}

pub(crate) fn print_json(value: &Value) {
    outln!("{value}");
}

fn ts(t: Option<&prost_types::Timestamp>) -> Value {
    t.map_or(Value::Null, |t| {
        json!(t.seconds.saturating_mul(1000) + i64::from(t.nanos / 1_000_000))
    })
}

pub(crate) fn unseal_method(m: i32) -> &'static str {
    match pb::UnsealMethod::try_from(m) {
        Ok(pb::UnsealMethod::Passphrase) => "passphrase",
        Ok(pb::UnsealMethod::Shamir) => "shamir",
        Ok(pb::UnsealMethod::RootKey) => "root-key",
        Ok(pb::UnsealMethod::Hsm) => "hsm",
        _ => "unknown",
    }
}

pub(crate) fn seal_status_json(s: &pb::SealStatus) -> Value {
    json!({
        "sealed": s.sealed,
        "unseal_method": unseal_method(s.unseal_method),
        "shares_received": s.shares_received,
        "shares_threshold": s.shares_threshold,
        "shares_total": s.shares_total,
        "vault_id": s.vault_id,
        "server_version": s.server_version,
    })
}

pub(crate) fn print_seal_status(s: &pb::SealStatus, json_out: bool) {
    if json_out {
        return print_json(&seal_status_json(s));
    }
    let mut rows = vec![
        vec![
            "sealed".into(),
            if s.sealed { "yes" } else { "no" }.to_owned(),
        ],
        vec![
            "unseal method".into(),
            unseal_method(s.unseal_method).into(),
        ],
    ];
    if s.shares_threshold > 0 {
        rows.push(vec![
            "shares".into(),
            format!(
                "{} of {} received ({} issued)",
                s.shares_received, s.shares_threshold, s.shares_total
            ),
        ]);
    }
    rows.push(vec!["vault id".into(), s.vault_id.clone()]);
    if !s.server_version.is_empty() {
        rows.push(vec!["server version".into(), s.server_version.clone()]);
    }
    table(&["", ""], &rows);
}

pub(crate) fn state_name(s: i32) -> &'static str {
    match pb::KeyVersionState::try_from(s) {
        Ok(pb::KeyVersionState::Active) => "active",
        Ok(pb::KeyVersionState::DecryptOnly) => "decrypt-only",
        Ok(pb::KeyVersionState::Retired) => "retired",
        Ok(pb::KeyVersionState::Destroyed) => "destroyed",
        _ => "unknown",
    }
}

fn purpose_name(p: i32) -> &'static str {
    match pb::KeyPurpose::try_from(p) {
        Ok(pb::KeyPurpose::Fpe) => "fpe",
        Ok(pb::KeyPurpose::Data) => "data",
        Ok(pb::KeyPurpose::Fingerprint) => "fingerprint",
        Ok(pb::KeyPurpose::Token) => "token",
        _ => "unknown",
    }
}

pub(crate) fn key_json(k: &pb::KeyStatus) -> Value {
    json!({
        "name": k.name,
        "purpose": purpose_name(k.purpose),
        "template": k.template,
        "active_version": k.active_version,
        "min_decryption_version": k.min_decryption_version,
        "versions": k.versions.iter().map(|v| json!({
            "version": v.version,
            "state": state_name(v.state),
            "nonce_count": v.nonce_count,
            "record_count": v.record_count,
            "created_at_ms": ts(v.created_at.as_ref()),
        })).collect::<Vec<_>>(),
    })
}

pub(crate) fn print_keys(keys: &[pb::KeyStatus], json_out: bool) {
    if json_out {
        return print_json(&Value::Array(keys.iter().map(key_json).collect()));
    }
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            let versions: Vec<String> = k
                .versions
                .iter()
                .map(|v| {
                    let mut s = format!("v{} {}", v.version, state_name(v.state));
                    if v.record_count > 0 {
                        s += &format!(" ({} records)", v.record_count);
                    }
                    s
                })
                .collect();
            vec![
                k.name.clone(),
                purpose_name(k.purpose).into(),
                k.active_version.to_string(),
                k.min_decryption_version.to_string(),
                versions.join(", "),
            ]
        })
        .collect();
    table(&["key", "purpose", "active", "min", "versions"], &rows);
}

pub(crate) fn rewrap_state(s: i32) -> &'static str {
    match pb::RewrapState::try_from(s) {
        Ok(pb::RewrapState::Running) => "running",
        Ok(pb::RewrapState::Paused) => "paused",
        Ok(pb::RewrapState::Succeeded) => "succeeded",
        Ok(pb::RewrapState::Failed) => "failed",
        _ => "unknown",
    }
}

pub(crate) fn job_json(j: &pb::RewrapJob) -> Value {
    json!({
        "job_id": j.job_id,
        "key_name": j.key_name,
        "target_version": j.target_version,
        "state": rewrap_state(j.state),
        "processed": j.processed,
        "total": j.total,
        "failure_reason": j.failure_reason,
    })
}

pub(crate) fn scope_text(s: &pb::Scope) -> String {
    let op = pb::Operation::try_from(s.operation).unwrap_or(pb::Operation::Unspecified);
    let name = match op {
        pb::Operation::Tokenize => "tokenize",
        pb::Operation::Detokenize => "detokenize",
        pb::Operation::Reveal => "reveal",
        pb::Operation::DeleteTokens => "delete",
        other => {
            return other
                .as_str_name()
                .to_lowercase()
                .replace("operation_", "admin:");
        }
    };
    let t = if s.template.is_empty() {
        "*"
    } else {
        &s.template
    };
    format!("{name}:{t}")
}

pub(crate) fn caller_json(c: &pb::Caller) -> Value {
    json!({
        "caller_id": c.caller_id,
        "name": c.name,
        "description": c.description,
        "roles": c.roles,
        "scopes": c.scopes.iter().map(scope_text).collect::<Vec<_>>(),
        "api_key_prefix": c.api_key_prefix,
        "created_at_ms": ts(c.created_at.as_ref()),
        "revoked_at_ms": ts(c.revoked_at.as_ref()),
        "expires_at_ms": ts(c.expires_at.as_ref()),
    })
}

pub(crate) fn caller_row(c: &pb::Caller) -> Vec<String> {
    let mut grants: Vec<String> = c.roles.iter().map(|r| format!("role:{r}")).collect();
    grants.extend(c.scopes.iter().map(scope_text));
    vec![
        c.caller_id.clone(),
        c.name.clone(),
        c.api_key_prefix.clone(),
        if c.revoked_at.is_some() {
            "revoked"
        } else {
            "active"
        }
        .into(),
        grants.join(" "),
    ]
}

pub(crate) const CALLER_HEADER: [&str; 5] = ["id", "name", "key prefix", "state", "grants"];

pub(crate) fn event_json(e: &pb::AuditEvent) -> Value {
    let op = pb::Operation::try_from(e.operation).unwrap_or(pb::Operation::Unspecified);
    json!({
        "index": e.index,
        "time_ms": ts(e.time.as_ref()),
        "request_id": e.request_id,
        "caller_id": e.caller_id,
        "operation": op.as_str_name().trim_start_matches("OPERATION_").to_lowercase(),
        "template": e.template,
        "purpose": e.purpose,
        "item_count": e.item_count,
        "failed_item_count": e.failed_item_count,
        "status_code": e.status_code,
        "detail": e.detail,
        "hash": hex::encode(&e.hash),
        "previous_hash": hex::encode(&e.previous_hash),
    })
}

pub(crate) fn event_row(e: &pb::AuditEvent) -> Vec<String> {
    let op = pb::Operation::try_from(e.operation).unwrap_or(pb::Operation::Unspecified);
    vec![
        e.index.to_string(),
        // RFC 3339 UTC for people; `--json` keeps the raw milliseconds (`time_ms`).
        e.time.as_ref().map_or_else(String::new, |t| {
            vault_daemon::timefmt::rfc3339_millis(
                t.seconds.saturating_mul(1000) + i64::from(t.nanos / 1_000_000),
            )
        }),
        e.caller_id.clone(),
        op.as_str_name()
            .trim_start_matches("OPERATION_")
            .to_lowercase(),
        e.template.clone(),
        e.item_count.to_string(),
        e.status_code.to_string(),
        e.request_id.clone(),
    ]
}

pub(crate) const EVENT_HEADER: [&str; 8] = [
    "seq",
    "time",
    "caller",
    "operation",
    "template",
    "items",
    "code",
    "request id",
];
