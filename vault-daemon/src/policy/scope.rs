//! Scopes: an operation on a template (or on an admin area), e.g. `tokenize:pan`, `admin:keys`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a call does. Shared by the policy (scopes) and the audit log (events).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Operation {
    /// Turn values into tokens.
    Tokenize,
    /// Turn tokens back into full values (privileged, purpose required).
    Detokenize,
    /// Turn tokens into masked values only (e.g. last four digits).
    Reveal,
    /// Delete vaulted records.
    Delete,
    /// Administration (keys, audit, callers).
    Admin,
}

impl Operation {
    /// The lower-case name used in scopes and audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Tokenize => "tokenize",
            Operation::Detokenize => "detokenize",
            Operation::Reveal => "reveal",
            Operation::Delete => "delete",
            Operation::Admin => "admin",
        }
    }

    /// Every operation, in a fixed order (for matrices and `explain`).
    pub const ALL: [Operation; 5] = [
        Operation::Tokenize,
        Operation::Detokenize,
        Operation::Reveal,
        Operation::Delete,
        Operation::Admin,
    ];
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Operation {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Operation::ALL
            .into_iter()
            .find(|op| op.as_str() == s)
            .ok_or_else(|| ScopeError(format!("unknown operation `{s}`")))
    }
}

/// An admin area: what a scope `admin:<area>` names. Only areas some rpc checks exist, so a
/// policy naming another (a typo, or `policy`/`templates`, which no rpc administers) is refused
/// at load instead of being a grant that silently matches nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AdminArea {
    /// Seal state, key versions, rotation, rewrap, the root key.
    Keys,
    /// Reading and verifying the audit log.
    Audit,
    /// The caller registry (API keys).
    Callers,
}

impl AdminArea {
    /// The name in `admin:<area>`.
    pub const fn as_str(self) -> &'static str {
        match self {
            AdminArea::Keys => "keys",
            AdminArea::Audit => "audit",
            AdminArea::Callers => "callers",
        }
    }
}

/// The name of every [`AdminArea`]: what a policy's `admin:<area>` may say.
pub const ADMIN_AREAS: [&str; 3] = [
    AdminArea::Keys.as_str(),
    AdminArea::Audit.as_str(),
    AdminArea::Callers.as_str(),
];

/// What an admin rpc does, as the audit log records it (`action`) and the policy authorizes it
/// (`area`). Every `vault.v1.Admin` rpc names one when it is admitted, and the two `match`es
/// below are exhaustive: an rpc cannot be served without an area, and a new variant without
/// one does not compile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AdminOp {
    /// `GetSealStatus`.
    GetSealStatus,
    /// `Unseal`.
    Unseal,
    /// `Seal`.
    Seal,
    /// `GetKeyStatus`.
    GetKeyStatus,
    /// `RotateKey`.
    RotateKey,
    /// `StartRewrap`, `ResumeRewrap`.
    Rewrap,
    /// `GetRewrap`, `ListRewraps`.
    GetRewrap,
    /// `RaiseMinDecryptionVersion`.
    RaiseMinDecryptionVersion,
    /// `RetireKeyVersion`.
    RetireKeyVersion,
    /// `DestroyKeyVersion`.
    DestroyKeyVersion,
    /// `RotateRootKey`.
    RotateRootKey,
    /// `CreateCaller`.
    CreateCaller,
    /// `ListCallers`.
    ListCallers,
    /// `RevokeCaller`.
    RevokeCaller,
    /// `SetCallerScopes`.
    SetCallerScopes,
    /// `QueryAuditEvents`.
    QueryAuditEvents,
    /// `VerifyAuditLog`.
    VerifyAuditLog,
}

impl AdminOp {
    /// Every admin operation.
    pub const ALL: [AdminOp; 17] = [
        AdminOp::GetSealStatus,
        AdminOp::Unseal,
        AdminOp::Seal,
        AdminOp::GetKeyStatus,
        AdminOp::RotateKey,
        AdminOp::Rewrap,
        AdminOp::GetRewrap,
        AdminOp::RaiseMinDecryptionVersion,
        AdminOp::RetireKeyVersion,
        AdminOp::DestroyKeyVersion,
        AdminOp::RotateRootKey,
        AdminOp::CreateCaller,
        AdminOp::ListCallers,
        AdminOp::RevokeCaller,
        AdminOp::SetCallerScopes,
        AdminOp::QueryAuditEvents,
        AdminOp::VerifyAuditLog,
    ];

    /// The audit event's `action`.
    pub fn action(self) -> &'static str {
        match self {
            AdminOp::GetSealStatus => "get_seal_status",
            AdminOp::Unseal => "unseal",
            AdminOp::Seal => "seal",
            AdminOp::GetKeyStatus => "get_key_status",
            AdminOp::RotateKey => "rotate_key",
            AdminOp::Rewrap => "rewrap",
            AdminOp::GetRewrap => "get_rewrap",
            AdminOp::RaiseMinDecryptionVersion => "raise_min_decryption_version",
            AdminOp::RetireKeyVersion => "retire_key_version",
            AdminOp::DestroyKeyVersion => "destroy_key_version",
            AdminOp::RotateRootKey => "rotate_root_key",
            AdminOp::CreateCaller => "create_caller",
            AdminOp::ListCallers => "list_callers",
            AdminOp::RevokeCaller => "revoke_caller",
            AdminOp::SetCallerScopes => "set_caller_scopes",
            AdminOp::QueryAuditEvents => "query_audit_events",
            AdminOp::VerifyAuditLog => "verify_audit_log",
        }
    }

    /// The area whose scope (`admin:<area>`) the operation needs.
    pub fn area(self) -> AdminArea {
        match self {
            AdminOp::GetSealStatus
            | AdminOp::Unseal
            | AdminOp::Seal
            | AdminOp::GetKeyStatus
            | AdminOp::RotateKey
            | AdminOp::Rewrap
            | AdminOp::GetRewrap
            | AdminOp::RaiseMinDecryptionVersion
            | AdminOp::RetireKeyVersion
            | AdminOp::DestroyKeyVersion
            | AdminOp::RotateRootKey => AdminArea::Keys,
            AdminOp::CreateCaller
            | AdminOp::ListCallers
            | AdminOp::RevokeCaller
            | AdminOp::SetCallerScopes => AdminArea::Callers,
            AdminOp::QueryAuditEvents | AdminOp::VerifyAuditLog => AdminArea::Audit,
        }
    }

    /// The scope the operation needs.
    pub fn scope(self) -> Scope {
        Scope::new(Operation::Admin, self.area().as_str())
    }

    /// The operation an audit `action` names.
    pub fn from_action(action: &str) -> Option<AdminOp> {
        AdminOp::ALL.into_iter().find(|op| op.action() == action)
    }
}

/// A value of the API's `vault.v1.Operation`, typed: what registry scopes store and audit
/// queries filter on. The conversions to and from the proto enum are exhaustive matches, so a
/// new proto operation does not compile until it is given a meaning here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApiOperation {
    /// A Tokenizer operation (never [`Operation::Admin`]).
    Tokenizer(TokenizerOp),
    /// An admin operation.
    Admin(AdminOp),
}

/// The four operations of `vault.v1.Tokenizer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenizerOp {
    /// `Tokenize`.
    Tokenize,
    /// `Detokenize`.
    Detokenize,
    /// `Reveal`.
    Reveal,
    /// `DeleteTokens`.
    Delete,
}

impl TokenizerOp {
    /// The policy and audit operation.
    pub fn operation(self) -> Operation {
        match self {
            TokenizerOp::Tokenize => Operation::Tokenize,
            TokenizerOp::Detokenize => Operation::Detokenize,
            TokenizerOp::Reveal => Operation::Reveal,
            TokenizerOp::Delete => Operation::Delete,
        }
    }
}

impl ApiOperation {
    /// The typed operation of a proto value (`None` for `OPERATION_UNSPECIFIED`).
    pub fn from_proto(op: vault_proto::v1::Operation) -> Option<ApiOperation> {
        use vault_proto::v1::Operation as P;
        let admin = ApiOperation::Admin;
        Some(match op {
            P::Unspecified => return None,
            P::Tokenize => ApiOperation::Tokenizer(TokenizerOp::Tokenize),
            P::Detokenize => ApiOperation::Tokenizer(TokenizerOp::Detokenize),
            P::Reveal => ApiOperation::Tokenizer(TokenizerOp::Reveal),
            P::DeleteTokens => ApiOperation::Tokenizer(TokenizerOp::Delete),
            P::GetSealStatus => admin(AdminOp::GetSealStatus),
            P::Unseal => admin(AdminOp::Unseal),
            P::Seal => admin(AdminOp::Seal),
            P::GetKeyStatus => admin(AdminOp::GetKeyStatus),
            P::RotateKey => admin(AdminOp::RotateKey),
            P::Rewrap => admin(AdminOp::Rewrap),
            P::GetRewrap => admin(AdminOp::GetRewrap),
            P::RaiseMinDecryptionVersion => admin(AdminOp::RaiseMinDecryptionVersion),
            P::RetireKeyVersion => admin(AdminOp::RetireKeyVersion),
            P::DestroyKeyVersion => admin(AdminOp::DestroyKeyVersion),
            P::RotateRootKey => admin(AdminOp::RotateRootKey),
            P::CreateCaller => admin(AdminOp::CreateCaller),
            P::ListCallers => admin(AdminOp::ListCallers),
            P::RevokeCaller => admin(AdminOp::RevokeCaller),
            P::SetCallerScopes => admin(AdminOp::SetCallerScopes),
            P::QueryAuditEvents => admin(AdminOp::QueryAuditEvents),
            P::VerifyAuditLog => admin(AdminOp::VerifyAuditLog),
        })
    }

    /// The proto value.
    pub fn proto(self) -> vault_proto::v1::Operation {
        use vault_proto::v1::Operation as P;
        match self {
            ApiOperation::Tokenizer(TokenizerOp::Tokenize) => P::Tokenize,
            ApiOperation::Tokenizer(TokenizerOp::Detokenize) => P::Detokenize,
            ApiOperation::Tokenizer(TokenizerOp::Reveal) => P::Reveal,
            ApiOperation::Tokenizer(TokenizerOp::Delete) => P::DeleteTokens,
            ApiOperation::Admin(op) => match op {
                AdminOp::GetSealStatus => P::GetSealStatus,
                AdminOp::Unseal => P::Unseal,
                AdminOp::Seal => P::Seal,
                AdminOp::GetKeyStatus => P::GetKeyStatus,
                AdminOp::RotateKey => P::RotateKey,
                AdminOp::Rewrap => P::Rewrap,
                AdminOp::GetRewrap => P::GetRewrap,
                AdminOp::RaiseMinDecryptionVersion => P::RaiseMinDecryptionVersion,
                AdminOp::RetireKeyVersion => P::RetireKeyVersion,
                AdminOp::DestroyKeyVersion => P::DestroyKeyVersion,
                AdminOp::RotateRootKey => P::RotateRootKey,
                AdminOp::CreateCaller => P::CreateCaller,
                AdminOp::ListCallers => P::ListCallers,
                AdminOp::RevokeCaller => P::RevokeCaller,
                AdminOp::SetCallerScopes => P::SetCallerScopes,
                AdminOp::QueryAuditEvents => P::QueryAuditEvents,
                AdminOp::VerifyAuditLog => P::VerifyAuditLog,
            },
        }
    }

    /// The operation of an audit event (its `operation` and, for admin, its `action`).
    pub fn of_event(operation: Operation, action: Option<&str>) -> Option<ApiOperation> {
        Some(match operation {
            Operation::Tokenize => ApiOperation::Tokenizer(TokenizerOp::Tokenize),
            Operation::Detokenize => ApiOperation::Tokenizer(TokenizerOp::Detokenize),
            Operation::Reveal => ApiOperation::Tokenizer(TokenizerOp::Reveal),
            Operation::Delete => ApiOperation::Tokenizer(TokenizerOp::Delete),
            Operation::Admin => ApiOperation::Admin(AdminOp::from_action(action?)?),
        })
    }

    /// The scope a registry entry `(self, template)` grants: a Tokenizer operation on the
    /// template (every template if empty), an admin operation's area (the template ignored).
    pub fn scope(self, template: &str) -> Scope {
        match self {
            ApiOperation::Tokenizer(op) if template.is_empty() => Scope {
                operation: op.operation(),
                target: Target::All,
            },
            ApiOperation::Tokenizer(op) => Scope::new(op.operation(), template),
            ApiOperation::Admin(op) => op.scope(),
        }
    }
}

/// Stored by its proto name (`OPERATION_TOKENIZE`), so a registry file reads as the API does.
impl Serialize for ApiOperation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.proto().as_str_name())
    }
}

impl<'de> Deserialize<'de> for ApiOperation {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        vault_proto::v1::Operation::from_str_name(&name)
            .and_then(ApiOperation::from_proto)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown operation `{name}`")))
    }
}

/// The object of a scope: one template (or admin area), or every template.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// `*`: every template. Only ever granted explicitly; never valid for `admin`.
    All,
    /// One template or admin area.
    Name(String),
}

/// An operation on a target, e.g. `tokenize:pan`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scope {
    /// The operation.
    pub operation: Operation,
    /// The template (or admin area).
    pub target: Target,
}

/// A scope string that does not parse. Carries the offending text, which is policy text or a
/// template name, never a sensitive value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope: {0}")]
pub struct ScopeError(String);

impl Scope {
    /// A concrete scope on one template or admin area.
    pub fn new(operation: Operation, target: impl Into<String>) -> Self {
        Scope {
            operation,
            target: Target::Name(target.into()),
        }
    }

    /// Whether a granted scope (possibly `op:*`) covers a requested one.
    pub fn covers(&self, requested: &Scope) -> bool {
        self.operation == requested.operation
            && match (&self.target, &requested.target) {
                (Target::All, _) => true,
                (Target::Name(a), Target::Name(b)) => a == b,
                (Target::Name(_), Target::All) => false,
            }
    }

    /// The template this scope names, if it is a concrete template scope.
    pub fn template(&self) -> Option<&str> {
        match (&self.operation, &self.target) {
            (Operation::Admin, _) | (_, Target::All) => None,
            (_, Target::Name(name)) => Some(name),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::All => write!(f, "{}:*", self.operation),
            Target::Name(name) => write!(f, "{}:{name}", self.operation),
        }
    }
}

impl FromStr for Scope {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (op, target) = s
            .split_once(':')
            .ok_or_else(|| ScopeError(format!("`{s}` is not of the form operation:template")))?;
        let operation: Operation = op.parse()?;
        let target = match target {
            "*" if operation == Operation::Admin => {
                return Err(ScopeError(
                    "`admin:*` is not allowed; grant each admin area explicitly".into(),
                ));
            }
            "*" => Target::All,
            name if !valid_name(name) => {
                return Err(ScopeError(format!(
                    "`{s}`: a template name is 1-64 characters of a-z, A-Z, 0-9, `_`, `-`, `.`"
                )));
            }
            name if operation == Operation::Admin && !ADMIN_AREAS.contains(&name) => {
                return Err(ScopeError(format!(
                    "unknown admin area `{name}` (one of {})",
                    ADMIN_AREAS.join(", ")
                )));
            }
            name => Target::Name(name.to_owned()),
        };
        Ok(Scope { operation, target })
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        for s in [
            "tokenize:pan",
            "reveal:*",
            "admin:keys",
            "detokenize:my-template.v2",
        ] {
            assert_eq!(s.parse::<Scope>().unwrap().to_string(), s);
        }
        for bad in [
            "tokenize",
            "read:pan",
            "admin:*",
            "admin:everything",
            "admin:policy",
            "admin:templates",
            "tokenize:",
            "tokenize:a b",
        ] {
            assert!(bad.parse::<Scope>().is_err(), "{bad}");
        }
    }

    #[test]
    fn wildcard_covers_only_its_operation() {
        let all: Scope = "tokenize:*".parse().unwrap();
        assert!(all.covers(&Scope::new(Operation::Tokenize, "pan")));
        assert!(!all.covers(&Scope::new(Operation::Detokenize, "pan")));
        let pan: Scope = "tokenize:pan".parse().unwrap();
        assert!(!pan.covers(&Scope::new(Operation::Tokenize, "ssn")));
        assert!(!pan.covers(&all));
    }

    #[test]
    fn every_proto_operation_round_trips() {
        for op in AdminOp::ALL {
            let api = ApiOperation::Admin(op);
            assert_eq!(ApiOperation::from_proto(api.proto()), Some(api));
            assert_eq!(AdminOp::from_action(op.action()), Some(op));
            assert_eq!(
                ApiOperation::of_event(Operation::Admin, Some(op.action())),
                Some(api)
            );
        }
        for n in 0..64 {
            if let Ok(p) = vault_proto::v1::Operation::try_from(n) {
                match ApiOperation::from_proto(p) {
                    Some(api) => assert_eq!(api.proto(), p),
                    None => assert_eq!(p, vault_proto::v1::Operation::Unspecified),
                }
            }
        }
    }
}
