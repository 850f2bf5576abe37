//! A route's calls into the vault: tokenize (inbound) and reveal (outbound) the values a rule
//! selected, as one call of the request path (`request/`) under the route's own identity
//! (`route:<name>`): authorized by the policy for every template the rule touches, run under
//! the route's deadline, and one durable audit event (route, rule, templates, item count,
//! token references; never a value) before anything is forwarded.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use vault_core::vault::TokenizeItem;
use zeroize::Zeroizing;

use super::rules::{Hit, Spot};
use crate::auth::{Credentials, Identity};
use crate::policy::{Operation, Scope};
use crate::request::error::{self, CallError};
use crate::request::{Admitted, Done, Incoming, Protocol, Shared, Spec};

/// Why a route's request is refused, and what the client is told (a fixed text: never a
/// value, and never more than the field's configured name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A selected value did not tokenize, or a selected token did not reveal.
    Field(String),
    /// The policy refused the route, or the caller may not use it.
    Denied,
    /// The caller did not authenticate.
    Unauthenticated,
    /// The vault cannot answer now (sealed, storage or audit log down, busy).
    Unavailable,
    /// The route's deadline passed.
    Deadline,
}

impl Refusal {
    fn of(e: &CallError) -> Refusal {
        use crate::request::Code;
        match e.code() {
            Code::PermissionDenied => Refusal::Denied,
            Code::Unauthenticated => Refusal::Unauthenticated,
            Code::DeadlineExceeded => Refusal::Deadline,
            _ => Refusal::Unavailable,
        }
    }
}

/// A route as a caller of the vault.
#[derive(Debug, Clone)]
pub(crate) struct RouteCaller {
    pub(crate) shared: Arc<Shared>,
    /// `route:<name>`.
    pub(crate) identity: Identity,
    /// `inbound:<name>` or `outbound:<name>`.
    pub(crate) tag: String,
}

/// The request-path metadata of a route's call.
pub(crate) struct Meta {
    pub(crate) source: Option<IpAddr>,
    pub(crate) deadline: Instant,
    pub(crate) arrived: Instant,
    pub(crate) rule: String,
    pub(crate) on_behalf_of: Option<String>,
}

impl RouteCaller {
    pub(crate) fn new(shared: &Arc<Shared>, direction: &str, name: &str) -> RouteCaller {
        RouteCaller {
            shared: Arc::clone(shared),
            identity: Identity {
                id: format!("route:{name}"),
                registered: None,
            },
            tag: format!("{direction}:{name}"),
        }
    }

    fn incoming(meta: &Meta) -> Incoming {
        Incoming {
            credentials: Credentials::default(),
            source: meta.source,
            deadline: Some(meta.deadline),
            end_user_token: None,
            protocol: Protocol::Proxy,
            arrived: meta.arrived,
        }
    }

    async fn admit(
        &self,
        meta: &Meta,
        op: Operation,
        spots: &[Spot],
        hits: &[Hit],
        purpose: Option<&str>,
    ) -> Result<Admitted, Refusal> {
        let mut templates: Vec<&str> = Vec::new();
        for h in hits {
            let t = spots[h.spot].template.as_str();
            if !templates.contains(&t) {
                templates.push(t);
            }
        }
        let scopes: Vec<Scope> = templates.iter().map(|t| Scope::new(op, *t)).collect();
        let mut spec = Spec::tokenizer(op, &templates.join(","), hits.len(), purpose, None);
        spec.route = Some(format!("{}/{}", self.tag, meta.rule));
        spec.on_behalf_of = meta.on_behalf_of.clone();
        let (first, more) = scopes.split_first().ok_or(Refusal::Unavailable)?;
        self.shared
            .admit_as(
                &Self::incoming(meta),
                spec,
                self.identity.clone(),
                (first, more),
                Ok(()),
                true,
            )
            .await
            .map_err(|e| Refusal::of(&e))
    }

    /// Tokenize every hit's value; the tokens, in the hits' order.
    pub(crate) async fn tokenize(
        &self,
        meta: &Meta,
        spots: &[Spot],
        hits: &[Hit],
    ) -> Result<Vec<Zeroizing<String>>, Refusal> {
        let call = self
            .admit(meta, Operation::Tokenize, spots, hits, None)
            .await?;
        let vault = Arc::clone(&self.shared.vault);
        let caller = self.identity.id.clone();
        let work: Vec<(String, Zeroizing<String>)> = hits
            .iter()
            .map(|h| (spots[h.spot].template.clone(), h.value.clone()))
            .collect();
        let results = self
            .shared
            .run(&call, move || {
                work.iter()
                    .map(|(t, v)| {
                        let item = TokenizeItem::new(v);
                        let mut r = vault
                            .tokenize_batch_as(&caller, t, &[item])
                            .map_err(|e| error::vault(&e))?;
                        Ok(r.pop().and_then(Result::ok))
                    })
                    .collect::<Result<Vec<_>, CallError>>()
            })
            .await
            .map_err(|e| Refusal::of(&e))?;
        if let Some(bad) = results.iter().position(Option::is_none) {
            let label = spots[hits[bad].spot].label.clone();
            let why = CallError::invalid_argument(format!("field `{label}` did not tokenize"));
            self.shared.fail(&call, why).await;
            return Err(Refusal::Field(label));
        }
        let tokens: Vec<_> = results.into_iter().flatten().collect();
        let done = Done {
            failed: 0,
            key_versions: tokens.iter().map(|t| t.key_version).collect(),
            token_refs: tokens
                .iter()
                .map(|t| self.shared.audit.token_ref(&t.token))
                .collect(),
        };
        self.shared
            .finish(&call, done)
            .await
            .map_err(|e| Refusal::of(&e))?;
        Ok(tokens
            .into_iter()
            .map(|t| Zeroizing::new(t.token))
            .collect())
    }

    /// Reveal every hit's token for `purpose`; the values, in the hits' order, and the call
    /// (its event is durable; [`Shared::follow_up`] records what became of the values).
    pub(crate) async fn reveal(
        &self,
        meta: &Meta,
        spots: &[Spot],
        hits: &[Hit],
        purpose: &str,
    ) -> Result<(Admitted, Vec<Zeroizing<String>>), Refusal> {
        let call = self
            .admit(meta, Operation::Detokenize, spots, hits, Some(purpose))
            .await?;
        let vault = Arc::clone(&self.shared.vault);
        let work: Vec<(String, String)> = hits
            .iter()
            .map(|h| (spots[h.spot].template.clone(), h.value.to_string()))
            .collect();
        let results = self
            .shared
            .run(&call, move || {
                work.iter()
                    .map(|(t, token)| {
                        let mut r = vault
                            .detokenize_batch(t, &[token.as_str()], None)
                            .map_err(|e| error::vault(&e))?;
                        Ok(r.pop().and_then(Result::ok))
                    })
                    .collect::<Result<Vec<_>, CallError>>()
            })
            .await
            .map_err(|e| Refusal::of(&e))?;
        let mut values = Vec::with_capacity(results.len());
        for (n, r) in results.into_iter().enumerate() {
            // The route's own reveals carry no end-user subject: a grant with an ownership
            // condition refuses them here, as for any caller.
            match r.filter(|d| call.grant.confirm(&d.metadata).is_ok()) {
                Some(d) => values.push(d.value),
                None => {
                    let label = spots[hits[n].spot].label.clone();
                    let why = CallError::not_found(format!("field `{label}` did not reveal"));
                    self.shared.fail(&call, why).await;
                    return Err(Refusal::Field(label));
                }
            }
        }
        let done = Done {
            failed: 0,
            key_versions: Vec::new(),
            token_refs: hits
                .iter()
                .map(|h| self.shared.audit.token_ref(&h.value))
                .collect(),
        };
        self.shared
            .finish(&call, done)
            .await
            .map_err(|e| Refusal::of(&e))?;
        Ok((call, values))
    }
}
