//! What an authorization decides: a refusal (`Denied`), or a `Grant` with the conditions still to check per record, and `explain`'s account of either.

use super::*;

/// How the server maps a denial onto its status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DenialKind {
    /// `PERMISSION_DENIED`.
    PermissionDenied,
    /// `RESOURCE_EXHAUSTED` (retry later).
    ResourceExhausted,
}

/// Why a request was refused: the scope and the condition that failed, nothing sensitive.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Denied {
    /// No grant of the caller covers the scope (also for unknown callers).
    #[error("permission denied: missing scope {scope}")]
    MissingScope {
        /// The requested scope.
        scope: String,
    },
    /// The source address is outside the grant's networks.
    #[error("permission denied: {scope} is not allowed from this source address")]
    Network {
        /// The requested scope.
        scope: String,
    },
    /// A non-empty purpose is required.
    #[error("permission denied: {scope} requires a purpose")]
    PurposeRequired {
        /// The requested scope.
        scope: String,
    },
    /// An end-user token is required.
    #[error("permission denied: {scope} requires an end-user token")]
    EndUserRequired {
        /// The requested scope.
        scope: String,
    },
    /// The forwarded end-user token was refused.
    #[error("permission denied: end-user token rejected: {reason}")]
    EndUserInvalid {
        /// Which check failed.
        reason: TokenRejection,
    },
    /// The end user is not the record's owner.
    #[error("permission denied: end-user subject does not match the record's `{key}`")]
    SubjectMismatch {
        /// The requested scope.
        scope: String,
        /// The metadata key compared.
        key: String,
    },
    /// The rate quota is used up.
    #[error("quota exhausted for {scope}; retry in {} ms", retry_after.as_millis())]
    Quota {
        /// The requested scope.
        scope: String,
        /// When a request will be allowed again.
        retry_after: Duration,
    },
}

impl Denied {
    /// Which status code the server answers with.
    pub fn kind(&self) -> DenialKind {
        match self {
            Denied::Quota { .. } => DenialKind::ResourceExhausted,
            _ => DenialKind::PermissionDenied,
        }
    }
}

/// Record metadata as the policy sees it (after the server's lookup).
pub trait Metadata {
    /// The string value under `key`.
    fn get(&self, key: &str) -> Option<&str>;
}

impl Metadata for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<&str> {
        HashMap::get(self, key).map(String::as_str)
    }
}

impl Metadata for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<&str> {
        BTreeMap::get(self, key).map(String::as_str)
    }
}

impl Metadata for serde_json::Map<String, serde_json::Value> {
    fn get(&self, key: &str) -> Option<&str> {
        serde_json::Map::get(self, key).and_then(serde_json::Value::as_str)
    }
}

/// What the server knows about a request besides caller and scope.
#[derive(Clone, Copy, Default)]
pub struct Context<'a> {
    /// Declared purpose.
    pub purpose: Option<&'a str>,
    /// The peer's address.
    pub source: Option<IpAddr>,
    /// A forwarded end-user JWT.
    pub end_user_token: Option<&'a str>,
    /// The record's metadata, once looked up.
    pub metadata: Option<&'a dyn Metadata>,
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("purpose", &self.purpose)
            .field("source", &self.source)
            .field("end_user_token", &self.end_user_token.map(|_| "<present>"))
            .field("metadata", &self.metadata.map(|_| "<present>"))
            .finish()
    }
}

/// Where a grant comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    /// A role the caller has.
    Role(String),
    /// The caller's own `grants`.
    Caller,
    /// Scopes stored with an API-key caller in the caller registry (Admin API), unconditioned
    /// except for the purpose every detokenize needs.
    Registry,
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Via::Role(r) => write!(f, "role `{r}`"),
            Via::Caller => f.write_str("the caller's own grants"),
            Via::Registry => f.write_str("the caller registry's scopes"),
        }
    }
}

/// An allowed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The requested scope.
    pub scope: Scope,
    /// Where the grant that allowed it comes from.
    pub via: Via,
    /// 1-based index of that grant within its role (or the caller's own grants).
    pub grant: usize,
    /// The verified end user, if a token was forwarded (goes into the audit event).
    pub end_user: Option<EndUser>,
    pub(super) pending_metadata: Option<String>,
}

impl Grant {
    /// The verified end-user subject.
    pub fn subject(&self) -> Option<&str> {
        self.end_user.as_ref().map(|u| u.subject.as_str())
    }

    /// The metadata key still to be checked with [`Grant::confirm`] after the record lookup.
    pub fn pending_metadata(&self) -> Option<&str> {
        self.pending_metadata.as_deref()
    }

    /// Complete the decision for one record. A no-op when nothing is pending.
    pub fn confirm(&self, metadata: &dyn Metadata) -> Result<(), Denied> {
        match &self.pending_metadata {
            None => Ok(()),
            Some(key) => subject_matches(&self.scope, self.subject(), key, metadata),
        }
    }
}

pub(super) fn subject_matches(
    scope: &Scope,
    subject: Option<&str>,
    key: &str,
    metadata: &dyn Metadata,
) -> Result<(), Denied> {
    match (subject, metadata.get(key)) {
        (Some(s), Some(owner)) if s == owner => Ok(()),
        _ => Err(Denied::SubjectMismatch {
            scope: scope.to_string(),
            key: key.to_owned(),
        }),
    }
}

/// Why a scope is or is not allowed to a caller, statically (conditions listed, not evaluated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// The caller.
    pub caller: String,
    /// The scope asked about.
    pub scope: Scope,
    /// Whether the caller appears in the policy.
    pub known_caller: bool,
    /// The caller's roles.
    pub roles: Vec<String>,
    /// Grants covering the scope (empty: denied).
    pub matches: Vec<Match>,
}

/// One grant covering a scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    /// Where it comes from.
    pub via: Via,
    /// 1-based index within its role or caller.
    pub grant: usize,
    /// Line in the policy file.
    pub line: usize,
    /// The granted scope that covers the request.
    pub granted: String,
    /// Conditions that must hold at request time.
    pub conditions: Vec<String>,
}

impl Explanation {
    /// Whether some grant covers the scope (subject to its conditions).
    pub fn allowed(&self) -> bool {
        !self.matches.is_empty()
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.allowed() {
            write!(f, "DENY {} {}: ", self.caller, self.scope)?;
            return if !self.known_caller {
                f.write_str("caller is not in the policy (deny by default)")
            } else {
                write!(f, "no grant covers it (roles: {})", self.roles.join(", "))
            };
        }
        write!(f, "ALLOW {} {}", self.caller, self.scope)?;
        for m in &self.matches {
            write!(
                f,
                "\n  via {}, grant {} (line {}): {}",
                m.via, m.grant, m.line, m.granted
            )?;
            if !m.conditions.is_empty() {
                write!(f, "; if {}", m.conditions.join(", "))?;
            }
        }
        Ok(())
    }
}
