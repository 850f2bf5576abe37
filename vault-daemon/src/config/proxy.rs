//! `[[proxy.inbound]]` and `[[proxy.outbound]]`: the routes of the HTTP proxy (`proxy/`).
//!
//! ```toml
//! [[proxy.inbound]]                      # in front of a merchant service
//! name = "checkout"
//! listen = "127.0.0.1:8080"
//! upstream = "http://127.0.0.1:9000"
//! [[proxy.inbound.rules]]
//! name = "pay"
//! method = "POST"
//! path = "^/pay$"
//! content_type = "application/json"
//! fields = [{ json = "$.card.number", template = "pan_vault" },
//!           { json = "$.card.cvv", template = "cvv" }]
//!
//! [[proxy.outbound]]                     # toward a payment processor
//! name = "psp"
//! listen = "127.0.0.1:8081"
//! upstream = "https://api.psp.example/v1"
//! purpose = "payment authorization"
//! callers = ["key:checkout-1a2b3c4d"]
//! [[proxy.outbound.rules]]
//! name = "charge"
//! method = "POST"
//! path = "^/charges$"
//! content_type = "application/json"
//! fields = [{ json = "$.card.number", template = "pan_vault" },
//!           { json = "$.card.cvv", template = "cvv" }]
//! ```
//!
//! Checked at start by `proxy::validate` (paths, JSONPaths, upstreams, templates).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::Tls;

/// `[proxy]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Proxy {
    /// Reverse-proxy routes in front of merchant services.
    pub inbound: Vec<Inbound>,
    /// Forward routes toward payment processors.
    pub outbound: Vec<Outbound>,
}

/// Where a field is.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    /// A JSONPath (`$.card.number`) in a JSON body.
    #[serde(default)]
    pub json: Option<String>,
    /// A field name in a form body.
    #[serde(default)]
    pub form: Option<String>,
    /// A header name.
    #[serde(default)]
    pub header: Option<String>,
    /// The template its value is tokenized with (inbound) or its token belongs to (outbound).
    pub template: String,
}

/// A rule: which requests it takes, and the fields it rewrites.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The name in audit events.
    pub name: String,
    /// The HTTP method.
    pub method: String,
    /// A regex the whole path (without the query) must match (anchored by the proxy).
    pub path: String,
    /// The request's media type (`application/json`, `application/x-www-form-urlencoded`);
    /// unset takes any, which only a rule without body fields may do.
    #[serde(default)]
    pub content_type: Option<String>,
    /// The request's fields.
    #[serde(default)]
    pub fields: Vec<Field>,
    /// The response's fields (tokenized before the answer leaves the proxy).
    #[serde(default)]
    pub response: Vec<Field>,
}

/// Retries of an outbound request (only with an `Idempotency-Key` header).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retry {
    /// Attempts in all (1: no retry).
    pub attempts: u32,
    /// The wait before the first retry, doubled each time.
    pub backoff_ms: u64,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 1,
            backoff_ms: 100,
        }
    }
}

/// The circuit breaker of an outbound route.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Breaker {
    /// Failures in a row (refused, timed out, 5xx, truncated) that open it.
    pub failures: u32,
    /// How long it stays open before one trial request.
    pub open_ms: u64,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            failures: 5,
            open_ms: 30_000,
        }
    }
}

/// An inbound route.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inbound {
    /// Its name; it acts as the caller `route:<name>`.
    pub name: String,
    /// Where it listens.
    pub listen: SocketAddr,
    /// TLS for its clients; without it, only a loopback address.
    #[serde(default)]
    pub tls: Option<Tls>,
    /// The merchant service (`http://host:port` or `https://…`, optional base path).
    pub upstream: String,
    /// A PEM file of roots for an `https` upstream (else the system's).
    #[serde(default)]
    pub upstream_ca: Option<PathBuf>,
    /// Allow a private, loopback or link-local upstream address.
    #[serde(default)]
    pub allow_private: bool,
    /// Upstream exchange time limit.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Largest request or response body read.
    #[serde(default = "default_body")]
    pub max_body_bytes: usize,
    /// The rules, first match wins; a request no rule takes is refused (404).
    pub rules: Vec<Rule>,
}

/// An outbound route.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outbound {
    /// Its name; it reveals as the caller `route:<name>`.
    pub name: String,
    /// Where it listens.
    pub listen: SocketAddr,
    /// TLS (with `client_ca`, mTLS) for the services calling it.
    #[serde(default)]
    pub tls: Option<Tls>,
    /// The processor: `https://host[:port][/base]` (`http` only with `allow_private`).
    pub upstream: String,
    /// Pinned roots (PEM) for the upstream's certificate, instead of the system's.
    #[serde(default)]
    pub upstream_ca: Option<PathBuf>,
    /// Allow a private, loopback or link-local upstream address.
    #[serde(default)]
    pub allow_private: bool,
    /// The purpose its reveals are made for (audited, and checked by the policy).
    pub purpose: String,
    /// Identities allowed to send requests through it (`key:…`, `spiffe://…`, `cn:…`).
    pub callers: Vec<String>,
    /// Upstream exchange time limit (504 past it).
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Largest request or response body read.
    #[serde(default = "default_body")]
    pub max_body_bytes: usize,
    /// Retries.
    #[serde(default)]
    pub retry: Retry,
    /// The circuit breaker.
    #[serde(default)]
    pub breaker: Breaker,
    /// The rules, first match wins; a request no rule takes is refused (404).
    pub rules: Vec<Rule>,
}

fn default_timeout() -> u64 {
    10_000
}

fn default_body() -> usize {
    1024 * 1024
}
