//! Who may do what: callers, roles, grants of scopes (operation × template), conditions.
//!
//! Deny by default. A caller (identified as `spiffe://…`, `cn:…` or `key:…`) has roles and may
//! have grants of its own; each grant lists scopes (`tokenize:pan`, `reveal:*`, `admin:keys`) and
//! conditions: a rate quota per caller and scope, source networks, a required purpose, a required
//! end-user token (JWT from a configured issuer) whose subject may have to match a record's
//! metadata. A request is allowed when some grant covering its scope has all its conditions met;
//! `detokenize` always needs a non-empty purpose.
//!
//! Two-phase use for metadata conditions: the server calls [`PolicyStore::authorize`] before the
//! record lookup (quota charged once, here) and, when [`Grant::pending_metadata`] is set,
//! [`Grant::confirm`] with each record's metadata after it. A server that already has the metadata
//! passes it in [`Context::metadata`] and gets a complete decision at once.

mod decision;
mod end_user;
mod eval;
mod loader;
mod quota;
mod reload;
mod scope;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

pub use self::end_user::{EndUser, TokenRejection};
pub use self::quota::{Clock, Rate, SystemClock};
pub use self::scope::{
    ADMIN_AREAS, AdminArea, AdminOp, ApiOperation, Operation, Scope, ScopeError, Target,
    TokenizerOp,
};

use self::decision::subject_matches;
pub use self::decision::{Context, DenialKind, Denied, Explanation, Grant, Match, Metadata, Via};
use self::end_user::{Issuer, RawIssuer};
use self::quota::Quotas;
pub use self::reload::{PolicyStore, check};

/// Templates whose domain is below 10^this are guessable by anyone who may tokenize them when
/// tokens are deterministic (PCI tokenization guidelines; NIST SP 800-38G §5.2 on small domains).
pub const SMALL_DOMAIN_LOG10: f64 = 9.0;

/// How a template makes tokens, as the server describes it to the policy loader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Format-preserving encryption (FF1): always deterministic.
    Fpe,
    /// Random tokens stored in the vault.
    Vaulted,
}

/// What the loader needs to know about a template.
#[derive(Clone, Debug, PartialEq)]
pub struct TemplateInfo {
    /// Template name.
    pub name: String,
    /// Token mode.
    pub mode: Mode,
    /// Same value, same token.
    pub deterministic: bool,
    /// log10 of the number of possible values.
    pub domain_log10: f64,
}

impl TemplateInfo {
    fn guessable(&self) -> bool {
        (self.mode == Mode::Fpe || self.deterministic) && self.domain_log10 < SMALL_DOMAIN_LOG10
    }
}

/// A policy that loads but deserves attention.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Warning {
    /// A caller may tokenize a deterministic small-domain template without a rate quota, so it
    /// can enumerate the domain and map tokens back to values.
    SmallDomainWithoutQuota {
        /// The caller.
        caller: String,
        /// The template.
        template: String,
        /// Line of the grant.
        line: usize,
    },
    /// A scope names a template the server does not know.
    UnknownTemplate {
        /// The template.
        template: String,
        /// Line of the scope.
        line: usize,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::SmallDomainWithoutQuota {
                caller,
                template,
                line,
            } => write!(
                f,
                "line {line}: {caller} may tokenize `{template}`, a deterministic template with a domain \
                 below 10^9, without a rate quota: it can tokenize every possible value and reverse \
                 any token; add `rate` to the grant or narrow it"
            ),
            Warning::UnknownTemplate { template, line } => {
                write!(f, "line {line}: unknown template `{template}`")
            }
        }
    }
}

/// A policy file that cannot be used. The old policy stays in force.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Syntax or meaning, with the position in the file.
    #[error("{origin}:{line}:{column}: {message}")]
    Invalid {
        /// The file (or `<policy>`).
        origin: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
}

/// One compiled grant.
#[derive(Debug)]
struct Rule {
    via: Via,
    index: usize,
    line: usize,
    scopes: Vec<Scope>,
    rate: Option<Rate>,
    networks: Vec<IpNet>,
    require_purpose: bool,
    require_end_user: bool,
    end_user_issuer: Option<String>,
    subject_matches_metadata: Option<String>,
}

impl Rule {
    fn conditions(&self, scope: &Scope) -> Vec<String> {
        let mut c = Vec::new();
        if let Some(rate) = self.rate {
            c.push(format!("within rate {rate}"));
        }
        if !self.networks.is_empty() {
            let nets: Vec<String> = self.networks.iter().map(ToString::to_string).collect();
            c.push(format!("source in {}", nets.join(", ")));
        }
        if self.require_purpose || scope.operation == Operation::Detokenize {
            c.push("purpose given".into());
        }
        if self.require_end_user {
            match &self.end_user_issuer {
                Some(i) => c.push(format!("end-user token from issuer `{i}`")),
                None => c.push("end-user token".into()),
            }
        }
        if let Some(key) = &self.subject_matches_metadata {
            c.push(format!("end-user subject = record metadata `{key}`"));
        }
        c
    }
}

#[derive(Debug)]
struct CallerEntry {
    roles: Vec<String>,
    rules: Vec<Arc<Rule>>,
}

/// A loaded, validated policy. Immutable; [`PolicyStore`] swaps whole policies on reload.
#[derive(Debug)]
pub struct Policy {
    callers: HashMap<String, CallerEntry>,
    roles: HashMap<String, Vec<Arc<Rule>>>,
    issuers: Vec<Issuer>,
}

/// What the caller registry (API-key callers created through the Admin API) holds for one
/// caller: role names (defined in the policy file, conditions included) and scopes of its own.
/// The authorizer adds these to whatever the policy file says about the same identity.
#[derive(Clone, Copy, Debug, Default)]
pub struct Registered<'a> {
    /// Roles of the policy file; a role the file does not (or no longer) define grants nothing.
    pub roles: &'a [String],
    /// Scopes granted directly, without conditions.
    pub scopes: &'a [Scope],
}

#[cfg(test)]
mod tests;
