//! The policy file: its TOML shape, and loading it into a `Policy` with the checks and warnings a loader owes the operator.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    #[serde(default)]
    issuers: BTreeMap<String, Spanned<RawIssuer>>,
    #[serde(default)]
    roles: BTreeMap<String, Spanned<RawRole>>,
    #[serde(default)]
    callers: BTreeMap<String, Spanned<RawCaller>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRole {
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    grants: Vec<Spanned<RawGrant>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCaller {
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
pub(super) struct RawGrant {
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

pub(super) struct Loader<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Loader<'_> {
    pub(super) fn error(
        &self,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
    ) -> PolicyError {
        let (line, column) = self.position(span.start);
        PolicyError::Invalid {
            origin: self.origin.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }

    pub(super) fn position(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }

    pub(super) fn rule(
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

pub(super) fn check_identity(id: &str) -> Result<(), String> {
    let ok = if let Some(rest) = id.strip_prefix("spiffe://") {
        rest.split('/')
            .next()
            .is_some_and(|domain| !domain.is_empty())
    } else if let Some(rest) = id
        .strip_prefix("cn:")
        .or_else(|| id.strip_prefix("key:"))
        .or_else(|| id.strip_prefix("route:"))
    {
        !rest.is_empty()
    } else {
        false
    };
    if ok && !id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Ok(())
    } else {
        Err(format!(
            "caller `{id}` must be `spiffe://<trust domain>/…`, `cn:<name>`, `key:<name>` or `route:<proxy route>`"
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

    pub(super) fn warnings(
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
}
