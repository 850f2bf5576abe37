//! An outbound route: the merchant's request to a payment processor, with its selected
//! tokens revealed on the way out and every revealed value turned back into its token on the
//! way back.
//!
//! Order, and why:
//! 1. Authenticate the caller (`Proxy-Authorization: Bearer <api key>` or a client
//!    certificate; `Authorization` belongs to the processor and passes untouched) and check it
//!    is one of the route's `callers`. Refusals are audited.
//! 2. The circuit breaker: open, 503 at once, nothing revealed.
//! 3. Reveal under the route's identity and purpose; the event is durable before any value
//!    leaves.
//! 4. Send. Retried only when the request has an `Idempotency-Key` header and the route allows
//!    retries (the processor's convention makes a retry with the same key safe; without it a
//!    retry could charge twice); never past the route's deadline.
//! 5. A follow-up event with the same request id says what became of the values: delivered
//!    (and the status), not sent (refused, unreachable), or unknown (timed out or cut short
//!    after sending: the processor may have acted on it).
//! 6. The answer, with revealed values scrubbed and the rule's response fields tokenized.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use zeroize::Zeroizing;

use super::breaker::{Admission, Breaker};
use super::calls::{Meta, Refusal, RouteCaller};
use super::inbound::scrub_headers;
use super::rules::{self, Rule, scrub, select};
use super::upstream::{Answer, Client, Failure};
use super::{answer, end_to_end, read_body, refusal, refuse_target, respond};
use crate::audit::Outcome;
use crate::auth::{self, Credentials};
use crate::config::proxy::Outbound;
use crate::listen::Handler;
use crate::peer::Peer;
use crate::policy::Operation;
use crate::request::{CallError, Shared, Spec, UNKNOWN_CALLER};

/// A configured outbound route.
#[derive(Clone, Debug)]
pub(crate) struct Route(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    name: String,
    caller: RouteCaller,
    client: Client,
    rules: Vec<Rule>,
    purpose: String,
    callers: Vec<String>,
    timeout: Duration,
    max_body: usize,
    attempts: u32,
    backoff: Duration,
    breaker: Breaker,
    read_timeout: Duration,
}

impl Route {
    pub(crate) fn new(
        cfg: &Outbound,
        shared: &Arc<Shared>,
        read_timeout: Duration,
    ) -> Result<Route, String> {
        let client = super::upstream_client(
            &cfg.upstream,
            cfg.upstream_ca.as_deref(),
            cfg.allow_private,
            cfg.max_body_bytes,
        )?;
        Ok(Route(Arc::new(Inner {
            name: cfg.name.clone(),
            caller: RouteCaller::new(shared, "outbound", &cfg.name),
            client,
            rules: cfg
                .rules
                .iter()
                .map(Rule::compile)
                .collect::<Result<_, _>>()?,
            purpose: cfg.purpose.clone(),
            callers: cfg.callers.clone(),
            timeout: Duration::from_millis(cfg.timeout_ms.max(1)),
            max_body: cfg.max_body_bytes,
            attempts: cfg.retry.attempts.max(1),
            backoff: Duration::from_millis(cfg.retry.backoff_ms),
            breaker: Breaker::new(
                cfg.breaker.failures,
                Duration::from_millis(cfg.breaker.open_ms),
            ),
            read_timeout,
        })))
    }
}

impl Handler for Route {
    async fn handle(&self, req: http::Request<Incoming>) -> http::Response<tonic::body::Body> {
        self.0.handle(req).await
    }

    fn read_timeout(&self) -> Duration {
        self.0.read_timeout
    }
}

/// What became of one forwarded request.
enum Delivery {
    Answered(Answer),
    Failed(Failure),
}

impl Inner {
    fn spec(&self, rule: &str) -> Spec {
        let mut spec = Spec::tokenizer(Operation::Detokenize, "", 0, Some(&self.purpose), None);
        spec.template = None;
        spec.route = Some(format!("{}/{rule}", self.caller.tag));
        spec
    }

    /// Who is calling, and may they use this route? Refusals are audited.
    async fn authenticate(
        &self,
        req: &http::Request<Incoming>,
    ) -> Result<String, http::Response<tonic::body::Body>> {
        let shared = &self.caller.shared;
        let credentials = Credentials {
            certs: req.extensions().get::<Peer>().and_then(|p| p.certs.clone()),
            authorization: req
                .headers()
                .get(http::header::PROXY_AUTHORIZATION)
                .map(|v| Zeroizing::new(v.as_bytes().to_vec())),
        };
        let spec = self.spec("(authentication)");
        match auth::authenticate(&credentials, &shared.registry) {
            Err(why) => {
                let e = CallError::Unauthenticated(why.to_string());
                shared.refuse_unadmitted(&spec, UNKNOWN_CALLER, e).await;
                Err(refusal(&Refusal::Unauthenticated))
            }
            Ok(id) if !self.callers.contains(&id.id) => {
                let e = CallError::PermissionDenied(format!(
                    "not one of the callers of outbound route {}",
                    self.name
                ));
                shared.refuse_unadmitted(&spec, &id.id, e).await;
                Err(refusal(&Refusal::Denied))
            }
            Ok(id) => Ok(id.id),
        }
    }

    async fn handle(&self, req: http::Request<Incoming>) -> http::Response<tonic::body::Body> {
        if let Some(why) = refuse_target(&req) {
            return answer(http::StatusCode::BAD_REQUEST, "bad_target", why);
        }
        let who = match self.authenticate(&req).await {
            Ok(w) => w,
            Err(r) => return r,
        };
        let super::Head {
            arrived,
            source,
            media,
            rule,
        } = match super::head(&req, &self.rules) {
            Ok(h) => h,
            Err(r) => return *r,
        };
        let trial = match self.breaker.admit(Instant::now()) {
            Admission::Refused => {
                return answer(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "circuit_open",
                    "the processor failed repeatedly; requests are refused for a while, nothing was sent",
                );
            }
            a => a == Admission::Trial,
        };
        let response = self.forward(req, rule, who, source, arrived, media).await;
        if trial && self.breaker.state() == super::breaker::State::HalfOpen {
            self.breaker.abandon_trial();
        }
        response
    }

    async fn forward(
        &self,
        req: http::Request<Incoming>,
        rule: &Rule,
        who: String,
        source: Option<std::net::IpAddr>,
        arrived: Instant,
        media: Option<String>,
    ) -> http::Response<tonic::body::Body> {
        let (parts, body) = req.into_parts();
        let body = match read_body(body, self.max_body, self.read_timeout).await {
            Ok(b) => b,
            Err(e) => return e.answer(),
        };
        let meta = Meta {
            source,
            deadline: arrived + self.timeout,
            arrived,
            rule: rule.name.clone(),
            on_behalf_of: Some(who),
        };
        let mut headers = end_to_end(&parts.headers);
        let selection =
            match super::select_request(&rule.fields, &parts.headers, &body, media.as_deref()) {
                Ok(s) => s,
                Err(r) => return *r,
            };
        let (call, values) = if selection.hits.is_empty() {
            (None, Vec::new())
        } else {
            match self
                .caller
                .reveal(&meta, &rule.fields, &selection.hits, &self.purpose)
                .await
            {
                Ok((c, v)) => (Some(c), v),
                Err(r) => return refusal(&r),
            }
        };
        let outgoing = match selection.apply(&mut headers, &body, &values) {
            Ok(b) => b,
            Err(e) => return answer(http::StatusCode::BAD_REQUEST, "bad_body", &e.to_string()),
        };
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let attempts = if parts.headers.contains_key("idempotency-key") {
            self.attempts
        } else {
            1
        };
        let body = Bytes::from(outgoing.to_vec());
        drop(outgoing);
        let mut delivery = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                let wait = self.backoff * 2u32.saturating_pow(attempt - 1);
                if Instant::now() + wait >= meta.deadline {
                    break;
                }
                tokio::time::sleep(wait).await;
            }
            let got = self
                .client
                .exchange(
                    parts.method.clone(),
                    &path_and_query,
                    headers.clone(),
                    body.clone(),
                    meta.deadline,
                )
                .await;
            let failed = match &got {
                Ok(a) => a.status.is_server_error(),
                Err(_) => true,
            };
            if failed {
                self.breaker.failed(Instant::now());
            } else {
                self.breaker.succeeded();
            }
            delivery = Some(match got {
                Ok(a) => Delivery::Answered(a),
                Err(f) => Delivery::Failed(f),
            });
            if !failed || Instant::now() >= meta.deadline {
                break;
            }
        }
        drop(body);
        let Some(delivery) = delivery else {
            return answer(
                http::StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "the route's time limit passed",
            );
        };
        if let Some(call) = &call {
            let (outcome, detail) = match &delivery {
                Delivery::Answered(a) => (
                    Outcome::Ok,
                    format!(
                        "delivered to the upstream, which answered {}",
                        a.status.as_u16()
                    ),
                ),
                Delivery::Failed(f) if f.maybe_sent() => (
                    Outcome::Unknown {
                        reason: f.to_string(),
                    },
                    "the upstream may have acted on the revealed values".to_owned(),
                ),
                Delivery::Failed(f) => {
                    let given = self.give_back(rule, &selection.hits, &values);
                    (
                        Outcome::Failed {
                            code: "UNAVAILABLE".into(),
                        },
                        format!("not delivered: {f}; {given} single-use values given back"),
                    )
                }
            };
            if self
                .caller
                .shared
                .follow_up(call, outcome, detail)
                .await
                .is_err()
            {
                return answer(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "audit_unavailable",
                    "the outcome could not be recorded; check with the processor before retrying (use an Idempotency-Key)",
                );
            }
        }
        let upstream = match delivery {
            Delivery::Answered(a) => a,
            Delivery::Failed(Failure::TimedOut) => {
                return answer(
                    http::StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    "the processor did not answer in time; it may have acted on the request",
                );
            }
            Delivery::Failed(f) => {
                tracing::info!(route = %self.name, error = %f, "outbound upstream failed");
                let (code, text) = if f.maybe_sent() {
                    (
                        "upstream_incomplete",
                        "the processor's answer was cut short; it may have acted on the request",
                    )
                } else {
                    (
                        "upstream_unreachable",
                        "the processor could not be reached; nothing was sent",
                    )
                };
                return answer(http::StatusCode::BAD_GATEWAY, code, text);
            }
        };
        self.answer_back(upstream, rule, &selection.hits, &values, meta)
            .await
    }

    /// Nothing was sent: give back the uses the reveal spent on volatile tokens, so the
    /// merchant can retry with the same tokens. Returns how many.
    fn give_back(&self, rule: &Rule, hits: &[rules::Hit], values: &[Zeroizing<String>]) -> usize {
        // The vault refuses anything but a volatile token whose use was spent: stored tokens
        // are simply not counted.
        let vault = &self.caller.shared.vault;
        hits.iter()
            .zip(values)
            .filter(|(h, v)| {
                vault
                    .give_back_volatile(&rule.fields[h.spot].template, &h.value, v)
                    .is_ok()
            })
            .count()
    }

    /// The processor's answer, made safe for the merchant.
    async fn answer_back(
        &self,
        upstream: Answer,
        rule: &Rule,
        hits: &[rules::Hit],
        values: &[Zeroizing<String>],
        meta: Meta,
    ) -> http::Response<tonic::body::Body> {
        let unreadable = || {
            answer(
                http::StatusCode::BAD_GATEWAY,
                "upstream_unreadable",
                "the processor's answer could not be checked",
            )
        };
        if super::encoded(&upstream.headers) {
            return unreadable();
        }
        let mut back_headers = end_to_end(&upstream.headers);
        let mut back = upstream.body;
        let pairs: Vec<(&str, &str)> = values
            .iter()
            .zip(hits)
            .map(|(v, h)| (v.as_str(), h.value.as_str()))
            .collect();
        // Echoes first: the response rules then see tokens where the values were.
        scrub(&mut back, &pairs);
        scrub_headers(&mut back_headers, &pairs);
        if !rule.response.is_empty() {
            let media = rules::media_type(&upstream.headers);
            let Ok(mut sel) = select(&rule.response, &back_headers, &back, media.as_deref()) else {
                return unreadable();
            };
            // Values the scrub already turned back into their tokens stay as they are.
            sel.hits
                .retain(|s| !hits.iter().any(|h| *h.value == *s.value));
            if !sel.hits.is_empty() {
                let meta = Meta {
                    rule: format!("{}/response", rule.name),
                    on_behalf_of: meta.on_behalf_of.clone(),
                    ..meta
                };
                let tokens = match self.caller.tokenize(&meta, &rule.response, &sel.hits).await {
                    Ok(t) => t,
                    Err(_) => return unreadable(),
                };
                back = match sel.apply(&mut back_headers, &back, &tokens) {
                    Ok(b) => b,
                    Err(_) => return unreadable(),
                };
            }
        }
        respond(upstream.status, back_headers, back)
    }
}
