//! Evaluation: which rules apply to a caller and a scope, and whether their conditions hold.

use super::*;

impl Policy {
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

    pub(super) fn authorize(
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

pub(super) fn check_rule(
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
