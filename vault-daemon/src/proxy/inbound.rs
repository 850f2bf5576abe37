//! An inbound route: a reverse proxy in front of a merchant service. The request's selected
//! values become tokens before it is forwarded; the service never receives them.
//!
//! Fails closed: a body the reader refuses (`json.rs`, `form.rs`) is a 400; a selected value
//! that does not tokenize (not a valid card number, a JSON number where a string belongs) a
//! 422 naming the field; a vault that cannot take the call (sealed, storage or audit log
//! down) a 503; in each case nothing is forwarded.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use zeroize::Zeroizing;

use super::calls::{Meta, RouteCaller};
use super::rules::{self, Rule, scrub, select};
use super::upstream::{Client, Failure};
use super::{answer, end_to_end, read_body, refusal, refuse_target, respond};
use crate::config::proxy::Inbound;
use crate::listen::Handler;
use crate::request::Shared;

/// A configured inbound route.
#[derive(Clone, Debug)]
pub(crate) struct Route(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    name: String,
    caller: RouteCaller,
    client: Client,
    rules: Vec<Rule>,
    timeout: Duration,
    max_body: usize,
    read_timeout: Duration,
}

impl Route {
    pub(crate) fn new(
        cfg: &Inbound,
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
            caller: RouteCaller::new(shared, "inbound", &cfg.name),
            client,
            rules: cfg
                .rules
                .iter()
                .map(Rule::compile)
                .collect::<Result<_, _>>()?,
            timeout: Duration::from_millis(cfg.timeout_ms.max(1)),
            max_body: cfg.max_body_bytes,
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

impl Inner {
    async fn handle(&self, req: http::Request<Incoming>) -> http::Response<tonic::body::Body> {
        if let Some(why) = refuse_target(&req) {
            return answer(http::StatusCode::BAD_REQUEST, "bad_target", why);
        }
        let super::Head {
            arrived,
            source,
            media,
            rule,
        } = match super::head(&req, &self.rules) {
            Ok(h) => h,
            Err(r) => return *r,
        };
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
            on_behalf_of: None,
        };
        let mut headers = end_to_end(&parts.headers);
        let selection =
            match super::select_request(&rule.fields, &parts.headers, &body, media.as_deref()) {
                Ok(s) => s,
                Err(r) => return *r,
            };
        let (forward, echoes) = if selection.hits.is_empty() {
            (body.clone(), Vec::new())
        } else {
            let tokens = match self
                .caller
                .tokenize(&meta, &rule.fields, &selection.hits)
                .await
            {
                Ok(t) => t,
                Err(r) => return refusal(&r),
            };
            let rewritten = match selection.apply(&mut headers, &body, &tokens) {
                Ok(b) => b,
                Err(e) => return answer(http::StatusCode::BAD_REQUEST, "bad_body", &e.to_string()),
            };
            let echoes: Vec<(Zeroizing<String>, Zeroizing<String>)> = selection
                .hits
                .iter()
                .map(|h| h.value.clone())
                .zip(tokens)
                .collect();
            (rewritten, echoes)
        };
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let answered = self
            .client
            .exchange(
                parts.method.clone(),
                &path_and_query,
                headers,
                Bytes::from(forward.to_vec()),
                meta.deadline,
            )
            .await;
        let upstream = match answered {
            Ok(a) => a,
            Err(Failure::TimedOut) => {
                return answer(
                    http::StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    "the service did not answer in time",
                );
            }
            Err(e) => {
                tracing::info!(route = %self.name, error = %e, "inbound upstream failed");
                return answer(
                    http::StatusCode::BAD_GATEWAY,
                    "upstream_failed",
                    "the service could not be reached or its answer was incomplete",
                );
            }
        };
        if super::encoded(&upstream.headers) {
            return answer(
                http::StatusCode::BAD_GATEWAY,
                "upstream_encoded",
                "the service's answer is encoded and cannot be checked",
            );
        }
        let mut back_headers = end_to_end(&upstream.headers);
        let mut back = upstream.body;
        if !rule.response.is_empty() {
            let media = rules::media_type(&upstream.headers);
            let sel = match select(&rule.response, &upstream.headers, &back, media.as_deref()) {
                Ok(s) => s,
                Err(_) => {
                    return answer(
                        http::StatusCode::BAD_GATEWAY,
                        "upstream_unreadable",
                        "the service's answer could not be checked",
                    );
                }
            };
            if !sel.hits.is_empty() {
                let meta = Meta {
                    rule: format!("{}/response", rule.name),
                    ..meta
                };
                let tokens = match self.caller.tokenize(&meta, &rule.response, &sel.hits).await {
                    Ok(t) => t,
                    Err(_) => {
                        return answer(
                            http::StatusCode::BAD_GATEWAY,
                            "upstream_unreadable",
                            "the service's answer could not be checked",
                        );
                    }
                };
                back = match sel.apply(&mut back_headers, &back, &tokens) {
                    Ok(b) => b,
                    Err(_) => {
                        return answer(
                            http::StatusCode::BAD_GATEWAY,
                            "upstream_unreadable",
                            "the service's answer could not be checked",
                        );
                    }
                };
            }
        }
        let pairs: Vec<(&str, &str)> = echoes
            .iter()
            .map(|(v, t)| (v.as_str(), t.as_str()))
            .collect();
        scrub(&mut back, &pairs);
        scrub_headers(&mut back_headers, &pairs);
        respond(upstream.status, back_headers, back)
    }
}

/// [`scrub`] over header values; a value that cannot be scrubbed into a header is dropped.
pub(crate) fn scrub_headers(headers: &mut http::HeaderMap, pairs: &[(&str, &str)]) {
    if pairs.is_empty() {
        return;
    }
    let names: Vec<http::HeaderName> = headers.keys().cloned().collect();
    for name in names {
        let values: Vec<http::HeaderValue> = headers.get_all(&name).iter().cloned().collect();
        headers.remove(&name);
        for v in values {
            let mut text = Zeroizing::new(v.as_bytes().to_vec());
            if scrub(&mut text, pairs) == 0 {
                headers.append(name.clone(), v);
            } else if let Ok(v) = http::HeaderValue::from_bytes(&text) {
                headers.append(name.clone(), v);
            }
        }
    }
}
