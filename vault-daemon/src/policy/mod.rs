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

mod end_user;
mod quota;
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

use self::end_user::{Issuer, RawIssuer};
use self::quota::Quotas;

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
    pending_metadata: Option<String>,
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

fn subject_matches(
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

// ----- the file format -----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    issuers: BTreeMap<String, Spanned<RawIssuer>>,
    #[serde(default)]
    roles: BTreeMap<String, Spanned<RawRole>>,
    #[serde(default)]
    callers: BTreeMap<String, Spanned<RawCaller>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    grants: Vec<Spanned<RawGrant>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCaller {
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    roles: Vec<Spanned<String>>,
    #[serde(default)]
    grants: Vec<Spanned<RawGrant>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    scopes: Vec<Spanned<String>>,
    rate: Option<Spanned<String>>,
    burst: Option<u32>,
    #[serde(default)]
    networks: Vec<Spanned<String>>,
    #[serde(default)]
    require_purpose: bool,
    #[serde(default)]
    require_end_user: bool,
    end_user_issuer: Option<Spanned<String>>,
    subject_matches_metadata: Option<String>,
}

struct Loader<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Loader<'_> {
    fn error(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> PolicyError {
        let (line, column) = self.position(span.start);
        PolicyError::Invalid {
            origin: self.origin.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }

    fn position(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }

    fn rule(
        &self,
        via: Via,
        index: usize,
        raw: Spanned<RawGrant>,
        issuers: &[Issuer],
    ) -> Result<Rule, PolicyError> {
        let span = raw.span();
        let line = self.position(span.start).0;
        let raw = raw.into_inner();
        if raw.scopes.is_empty() {
            return Err(self.error(span, "a grant needs at least one scope"));
        }
        let scopes = raw
            .scopes
            .iter()
            .map(|s| {
                s.get_ref()
                    .parse::<Scope>()
                    .map_err(|e| self.error(s.span(), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let rate = match &raw.rate {
            Some(r) => {
                Some(Rate::parse(r.get_ref(), raw.burst).map_err(|e| self.error(r.span(), e))?)
            }
            None if raw.burst.is_some() => return Err(self.error(span, "`burst` needs `rate`")),
            None => None,
        };
        let networks = raw
            .networks
            .iter()
            .map(|n| {
                n.get_ref().parse::<IpNet>().map_err(|_| {
                    self.error(n.span(), format!("`{}` is not a CIDR network", n.get_ref()))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(issuer) = &raw.end_user_issuer {
            if !raw.require_end_user {
                return Err(self.error(
                    issuer.span(),
                    "`end_user_issuer` needs `require_end_user = true`",
                ));
            }
            if !issuers.iter().any(|i| i.name == *issuer.get_ref()) {
                return Err(self.error(
                    issuer.span(),
                    format!("unknown issuer `{}`", issuer.get_ref()),
                ));
            }
        }
        if raw.subject_matches_metadata.is_some() && !raw.require_end_user {
            return Err(self.error(
                span,
                "`subject_matches_metadata` needs `require_end_user = true`",
            ));
        }
        if raw.require_end_user && issuers.is_empty() {
            return Err(self.error(
                span,
                "`require_end_user` needs at least one `[issuers.<name>]`",
            ));
        }
        Ok(Rule {
            via,
            index,
            line,
            scopes,
            rate,
            networks,
            require_purpose: raw.require_purpose,
            require_end_user: raw.require_end_user,
            end_user_issuer: raw.end_user_issuer.map(Spanned::into_inner),
            subject_matches_metadata: raw.subject_matches_metadata,
        })
    }
}

fn check_identity(id: &str) -> Result<(), String> {
    let ok = if let Some(rest) = id.strip_prefix("spiffe://") {
        rest.split('/')
            .next()
            .is_some_and(|domain| !domain.is_empty())
    } else if let Some(rest) = id.strip_prefix("cn:").or_else(|| id.strip_prefix("key:")) {
        !rest.is_empty()
    } else {
        false
    };
    if ok && !id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Ok(())
    } else {
        Err(format!(
            "caller `{id}` must be `spiffe://<trust domain>/…`, `cn:<name>` or `key:<name>`"
        ))
    }
}

impl Policy {
    /// Load and validate a policy file (relative key files resolve against its directory).
    pub fn load(
        path: &Path,
        templates: &[TemplateInfo],
    ) -> Result<(Policy, Vec<Warning>), PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Policy::parse(&text, &path.display().to_string(), path.parent(), templates)
    }

    /// Parse and validate policy text. `origin` names it in errors.
    pub fn parse(
        text: &str,
        origin: &str,
        base_dir: Option<&Path>,
        templates: &[TemplateInfo],
    ) -> Result<(Policy, Vec<Warning>), PolicyError> {
        let loader = Loader { text, origin };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            loader.error(span, e.message().to_owned())
        })?;
        let mut issuers = Vec::new();
        for (name, raw_issuer) in raw.issuers {
            let span = raw_issuer.span();
            issuers.push(
                Issuer::compile(&name, raw_issuer.into_inner(), base_dir)
                    .map_err(|e| loader.error(span, e))?,
            );
        }
        let mut roles: HashMap<String, Vec<Arc<Rule>>> = HashMap::new();
        for (name, role) in raw.roles {
            let grants = role.into_inner().grants;
            let mut rules = Vec::with_capacity(grants.len());
            for (i, g) in grants.into_iter().enumerate() {
                rules.push(Arc::new(loader.rule(
                    Via::Role(name.clone()),
                    i + 1,
                    g,
                    &issuers,
                )?));
            }
            roles.insert(name, rules);
        }
        let mut callers = HashMap::new();
        for (id, caller) in raw.callers {
            let span = caller.span();
            check_identity(&id).map_err(|e| loader.error(span.clone(), e))?;
            let caller = caller.into_inner();
            let mut rules = Vec::new();
            for (i, g) in caller.grants.into_iter().enumerate() {
                rules.push(Arc::new(loader.rule(Via::Caller, i + 1, g, &issuers)?));
            }
            let mut role_names = Vec::new();
            for role in &caller.roles {
                let found = roles.get(role.get_ref()).ok_or_else(|| {
                    loader.error(role.span(), format!("unknown role `{}`", role.get_ref()))
                })?;
                rules.extend(found.iter().cloned());
                role_names.push(role.get_ref().clone());
            }
            callers.insert(
                id,
                CallerEntry {
                    roles: role_names,
                    rules,
                },
            );
        }
        let mut policy = Policy {
            callers,
            roles: HashMap::new(),
            issuers,
        };
        let warnings = policy.warnings(&roles, templates);
        policy.roles = roles;
        Ok((policy, warnings))
    }

    fn warnings(
        &self,
        roles: &HashMap<String, Vec<Arc<Rule>>>,
        templates: &[TemplateInfo],
    ) -> Vec<Warning> {
        let mut warnings = Vec::new();
        if !templates.is_empty() {
            let known: HashSet<&str> = templates.iter().map(|t| t.name.as_str()).collect();
            let all_rules = roles
                .values()
                .flatten()
                .chain(self.callers.values().flat_map(|c| &c.rules));
            let mut seen = HashSet::new();
            for rule in all_rules {
                for scope in &rule.scopes {
                    if let Some(t) = scope.template()
                        && !known.contains(t)
                        && seen.insert((t.to_owned(), rule.line))
                    {
                        warnings.push(Warning::UnknownTemplate {
                            template: t.to_owned(),
                            line: rule.line,
                        });
                    }
                }
            }
        }
        let mut callers: Vec<(&String, &CallerEntry)> = self.callers.iter().collect();
        callers.sort_by_key(|(id, _)| *id);
        for (id, entry) in callers {
            let mut warned = HashSet::new();
            for rule in entry.rules.iter().filter(|r| r.rate.is_none()) {
                for scope in rule
                    .scopes
                    .iter()
                    .filter(|s| s.operation == Operation::Tokenize)
                {
                    for t in templates.iter().filter(|t| t.guessable()) {
                        if scope.covers(&Scope::new(Operation::Tokenize, &t.name))
                            && warned.insert(&t.name)
                        {
                            warnings.push(Warning::SmallDomainWithoutQuota {
                                caller: id.clone(),
                                template: t.name.clone(),
                                line: rule.line,
                            });
                        }
                    }
                }
            }
        }
        warnings
    }

    /// The callers named in the policy.
    pub fn callers(&self) -> impl Iterator<Item = &str> {
        self.callers.keys().map(String::as_str)
    }

    /// Whether the policy defines a role of this name (the Admin API refuses unknown roles).
    pub fn has_role(&self, name: &str) -> bool {
        self.roles.contains_key(name)
    }

    /// Which grants allow `scope` to `caller`, with their conditions, or why none does.
    pub fn explain(&self, caller: &str, scope: &Scope) -> Explanation {
        self.explain_registered(caller, None, scope)
    }

    /// [`Policy::explain`] for a caller that may also be in the caller registry: its registry
    /// roles (as this file defines them) and scopes count, as they do in `authorize`.
    pub fn explain_registered(
        &self,
        caller: &str,
        registered: Option<Registered<'_>>,
        scope: &Scope,
    ) -> Explanation {
        let entry = self.callers.get(caller);
        let registry_rule = registered.filter(|r| !r.scopes.is_empty()).map(|r| Rule {
            via: Via::Registry,
            index: 1,
            line: 0,
            scopes: r.scopes.to_vec(),
            rate: None,
            networks: Vec::new(),
            require_purpose: false,
            require_end_user: false,
            end_user_issuer: None,
            subject_matches_metadata: None,
        });
        let registry_roles = registered.map(|r| r.roles).unwrap_or_default();
        let role_rules = registry_roles
            .iter()
            .filter_map(|name| self.roles.get(name))
            .flatten();
        let matches = entry
            .map(|e| e.rules.as_slice())
            .unwrap_or_default()
            .iter()
            .chain(role_rules)
            .map(Arc::as_ref)
            .chain(registry_rule.as_ref())
            .filter_map(|r| {
                let granted = r.scopes.iter().find(|s| s.covers(scope))?;
                Some(Match {
                    via: r.via.clone(),
                    grant: r.index,
                    line: r.line,
                    granted: granted.to_string(),
                    conditions: r.conditions(scope),
                })
            })
            .collect();
        let mut roles = entry.map(|e| e.roles.clone()).unwrap_or_default();
        roles.extend(registry_roles.iter().cloned());
        Explanation {
            caller: caller.to_owned(),
            scope: scope.clone(),
            known_caller: entry.is_some() || registered.is_some(),
            roles,
            matches,
        }
    }

    fn authorize(
        &self,
        caller: &str,
        registered: Option<Registered<'_>>,
        scope: &Scope,
        ctx: &Context<'_>,
        quotas: &Quotas,
        clock: &dyn Clock,
    ) -> Result<Grant, Denied> {
        let missing = || Denied::MissingScope {
            scope: scope.to_string(),
        };
        // Requests name one template; `*` is only ever granted.
        if scope.target == Target::All {
            return Err(missing());
        }
        // The registry's own scopes as one unconditioned rule (built per call: registry callers
        // change at runtime, the policy file only on reload).
        let registry_rule = registered.filter(|r| !r.scopes.is_empty()).map(|r| Rule {
            via: Via::Registry,
            index: 1,
            line: 0,
            scopes: r.scopes.to_vec(),
            rate: None,
            networks: Vec::new(),
            require_purpose: false,
            require_end_user: false,
            end_user_issuer: None,
            subject_matches_metadata: None,
        });
        let file_rules = self.callers.get(caller).map(|e| e.rules.as_slice());
        let role_rules = registered
            .map(|r| r.roles)
            .unwrap_or_default()
            .iter()
            .filter_map(|name| self.roles.get(name))
            .flatten();
        let candidates: Vec<&Rule> = file_rules
            .unwrap_or_default()
            .iter()
            .chain(role_rules)
            .map(Arc::as_ref)
            .chain(registry_rule.as_ref())
            .filter(|r| r.scopes.iter().any(|s| s.covers(scope)))
            .collect();
        if candidates.is_empty() {
            return Err(missing());
        }
        // A forwarded token is verified once, and an invalid one refuses the request even where
        // no grant requires it: a caller forwarding a bad token is a signal, not noise.
        let end_user = match ctx.end_user_token {
            Some(token) => Some(
                end_user::verify(&self.issuers, None, token, clock.now())
                    .map_err(|reason| Denied::EndUserInvalid { reason })?,
            ),
            None => None,
        };
        let mut denials = Vec::new();
        for rule in candidates {
            match check_rule(rule, caller, scope, ctx, end_user.as_ref(), quotas, clock) {
                Ok(grant) => return Ok(grant),
                Err(denied) => denials.push(denied),
            }
        }
        // Prefer the quota denial: it is the one the caller can act on by retrying.
        let quota = denials
            .iter()
            .position(|d| d.kind() == DenialKind::ResourceExhausted);
        Err(denials.swap_remove(quota.unwrap_or(0)))
    }
}

fn check_rule(
    rule: &Rule,
    caller: &str,
    scope: &Scope,
    ctx: &Context<'_>,
    end_user: Option<&EndUser>,
    quotas: &Quotas,
    clock: &dyn Clock,
) -> Result<Grant, Denied> {
    let scope_text = || scope.to_string();
    if !rule.networks.is_empty()
        && !ctx
            .source
            .is_some_and(|ip| rule.networks.iter().any(|n| n.contains(&ip)))
    {
        return Err(Denied::Network {
            scope: scope_text(),
        });
    }
    let needs_purpose = rule.require_purpose || scope.operation == Operation::Detokenize;
    if needs_purpose && ctx.purpose.is_none_or(|p| p.trim().is_empty()) {
        return Err(Denied::PurposeRequired {
            scope: scope_text(),
        });
    }
    if rule.require_end_user {
        let user = end_user.ok_or_else(|| Denied::EndUserRequired {
            scope: scope_text(),
        })?;
        if rule
            .end_user_issuer
            .as_ref()
            .is_some_and(|i| *i != user.issuer)
        {
            return Err(Denied::EndUserInvalid {
                reason: TokenRejection::UnknownIssuer,
            });
        }
    }
    let mut pending_metadata = None;
    if let Some(key) = &rule.subject_matches_metadata {
        match ctx.metadata {
            Some(md) => subject_matches(scope, end_user.map(|u| u.subject.as_str()), key, md)?,
            None => pending_metadata = Some(key.clone()),
        }
    }
    // Last, so a request refused for another reason does not use up quota.
    if let Some(rate) = rule.rate {
        quotas
            .take(caller, &scope.to_string(), rate, clock.now())
            .map_err(|retry_after| Denied::Quota {
                scope: scope_text(),
                retry_after,
            })?;
    }
    Ok(Grant {
        scope: scope.clone(),
        via: rule.via.clone(),
        grant: rule.index,
        end_user: end_user.cloned(),
        pending_metadata,
    })
}

/// Validate a policy file without loading it into a server (`vaultctl policy check`).
pub fn check(path: &Path, templates: &[TemplateInfo]) -> Result<Vec<Warning>, PolicyError> {
    Policy::load(path, templates).map(|(_, warnings)| warnings)
}

/// The policy in force, reloadable without restart, plus the quota buckets and the clock.
#[derive(Debug)]
pub struct PolicyStore {
    path: PathBuf,
    templates: RwLock<Vec<TemplateInfo>>,
    current: RwLock<Arc<Policy>>,
    quotas: Quotas,
    clock: Arc<dyn Clock>,
}

impl PolicyStore {
    /// Load the policy at `path`. Returns the load warnings for the server to log.
    pub fn open(
        path: impl Into<PathBuf>,
        templates: Vec<TemplateInfo>,
    ) -> Result<(Self, Vec<Warning>), PolicyError> {
        PolicyStore::with_clock(path, templates, Arc::new(SystemClock))
    }

    /// [`PolicyStore::open`] with a given clock (tests).
    pub fn with_clock(
        path: impl Into<PathBuf>,
        templates: Vec<TemplateInfo>,
        clock: Arc<dyn Clock>,
    ) -> Result<(Self, Vec<Warning>), PolicyError> {
        let path = path.into();
        let (policy, warnings) = Policy::load(&path, &templates)?;
        let store = PolicyStore {
            path,
            templates: RwLock::new(templates),
            current: RwLock::new(Arc::new(policy)),
            quotas: Quotas::default(),
            clock,
        };
        Ok((store, warnings))
    }

    /// Re-read the file. The new policy replaces the old only if it loads completely; on error
    /// the old one stays in force.
    pub fn reload(&self) -> Result<Vec<Warning>, PolicyError> {
        let templates = self
            .templates
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (policy, warnings) = Policy::load(&self.path, &templates)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
        Ok(warnings)
    }

    /// Replace the template descriptions (after a template is created or changed) and reload.
    pub fn set_templates(&self, templates: Vec<TemplateInfo>) -> Result<Vec<Warning>, PolicyError> {
        let (policy, warnings) = Policy::load(&self.path, &templates)?;
        *self.templates.write().unwrap_or_else(|e| e.into_inner()) = templates;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
        Ok(warnings)
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        // A poisoned lock still holds a complete `Arc<Policy>` (assignment is the only write).
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Decide a request. Charges the quota of the grant that allows it.
    pub fn authorize(
        &self,
        caller: &str,
        scope: &Scope,
        ctx: &Context<'_>,
    ) -> Result<Grant, Denied> {
        self.policy()
            .authorize(caller, None, scope, ctx, &self.quotas, self.clock.as_ref())
    }

    /// [`PolicyStore::authorize`] for a caller of the registry: its roles and scopes are
    /// considered together with the policy file's entry for the same identity (if any).
    pub fn authorize_registered(
        &self,
        caller: &str,
        registered: Registered<'_>,
        scope: &Scope,
        ctx: &Context<'_>,
    ) -> Result<Grant, Denied> {
        self.policy().authorize(
            caller,
            Some(registered),
            scope,
            ctx,
            &self.quotas,
            self.clock.as_ref(),
        )
    }

    /// [`Policy::explain`] on the policy in force.
    pub fn explain(&self, caller: &str, scope: &Scope) -> Explanation {
        self.policy().explain(caller, scope)
    }
}

#[cfg(test)]
mod tests;
