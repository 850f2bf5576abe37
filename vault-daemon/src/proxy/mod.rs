//! The HTTP proxy: card data rewritten at the trust boundary, so services never hold it.
//!
//! - **Inbound routes** (`inbound.rs`) sit in front of a merchant service: a request a rule
//!   takes has its selected fields (JSON paths, form fields, headers) tokenized before it is
//!   forwarded; the response has the rule's response fields tokenized, and any value the
//!   request carried scrubbed, before it goes back.
//! - **Outbound routes** (`outbound.rs`) sit in front of a payment processor: the merchant's
//!   request has its selected tokens revealed, and the processor's response has every revealed
//!   value replaced by its token again (a processor that echoes the card in an error body does
//!   not hand it to the merchant).
//!
//! Each route listens on its own address (its own TLS), acts in the vault under its own
//! identity, `route:<name>`, so the policy decides what it may tokenize or reveal, and writes
//! its audit events through the same request path as every rpc (`calls.rs`).
//!
//! What every route refuses before any rule runs (fixed answers that echo nothing):
//! `CONNECT`, an absolute-form target over HTTP/1.1, a path with `//`, `.` or `..` segments,
//! a backslash, or an encoded `/`, `\`, `.` or NUL (a regex and an upstream that read one path
//! two ways is how a request slips past a rule), a body over the route's limit, and a body
//! that does not arrive within `limits.http_read_timeout_ms`. A request no rule takes is
//! refused (404): deny by default. The request forwarded is rebuilt (method, path, the
//! client's end-to-end headers, the rewritten body with its length), never the client's bytes,
//! so nothing the client framed (a second request behind a `Transfer-Encoding` trick) reaches
//! the upstream.

pub(crate) mod breaker;
pub(crate) mod calls;
mod check;
pub(crate) mod form;
mod inbound;
pub(crate) mod json;
mod outbound;
pub(crate) mod rules;
pub(crate) mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

pub(crate) use self::check::validate;
use crate::config::proxy::Proxy;
use crate::error::StartError;
use crate::listen;
use crate::request::Shared;

/// A running route.
#[derive(Debug)]
pub(crate) struct Running {
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    /// Stop accepting and let requests in flight finish.
    pub(crate) async fn stop(mut self, within: Duration) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if tokio::time::timeout(within, &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

/// Bind and start every configured route.
pub(crate) async fn start(
    cfg: &Proxy,
    shared: &Arc<Shared>,
    read_timeout: Duration,
) -> Result<Vec<Running>, StartError> {
    let mut out = Vec::new();
    for r in &cfg.inbound {
        let handler = inbound::Route::new(r, shared, read_timeout)
            .map_err(|e| StartError::Tls(format!("proxy.inbound.{}: {e}", r.name)))?;
        out.push(bind(&r.name, r.listen, r.tls.as_ref(), handler).await?);
    }
    for r in &cfg.outbound {
        let handler = outbound::Route::new(r, shared, read_timeout)
            .map_err(|e| StartError::Tls(format!("proxy.outbound.{}: {e}", r.name)))?;
        out.push(bind(&r.name, r.listen, r.tls.as_ref(), handler).await?);
    }
    Ok(out)
}

async fn bind<H: listen::Handler>(
    name: &str,
    at: SocketAddr,
    tls: Option<&crate::config::Tls>,
    handler: H,
) -> Result<Running, StartError> {
    let tls = tls.map(listen::tls_acceptor).transpose()?;
    let listener = TcpListener::bind(at)
        .await
        .map_err(|source| StartError::Io {
            what: format!("binding proxy route {name} on {at}"),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Io {
        what: "local address".into(),
        source,
    })?;
    let (stop, stopped) = oneshot::channel();
    let task = listen::serve(listener, tls, handler, stopped);
    tracing::info!(route = name, %addr, "proxy route listening");
    Ok(Running {
        name: name.to_owned(),
        addr,
        stop: Some(stop),
        task,
    })
}

/// A fixed answer: a status and a JSON body naming the error (and at most a configured field
/// name), never anything the request carried.
pub(crate) fn answer(
    status: http::StatusCode,
    code: &str,
    message: &str,
) -> http::Response<tonic::body::Body> {
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    respond(status, headers, Zeroizing::new(body.into_bytes()))
}

/// A refusal answered before the request's work (boxed: a response is large).
pub(crate) type Refused = Box<http::Response<tonic::body::Body>>;

/// What every route reads of a request before its body: when it arrived, from where, its
/// media type, and the first rule that takes it (a 404 if none does: deny by default).
pub(crate) struct Head<'r> {
    pub(crate) arrived: std::time::Instant,
    pub(crate) source: Option<std::net::IpAddr>,
    pub(crate) media: Option<String>,
    pub(crate) rule: &'r rules::Rule,
}

pub(crate) fn head<'r>(
    req: &http::Request<Incoming>,
    all: &'r [rules::Rule],
) -> Result<Head<'r>, Refused> {
    let arrived = req
        .extensions()
        .get::<crate::peer::Arrived>()
        .map_or_else(std::time::Instant::now, |a| a.0);
    let source = req
        .extensions()
        .get::<crate::peer::Peer>()
        .map(|p| p.addr.ip());
    let media = rules::media_type(req.headers());
    let rule = all
        .iter()
        .find(|r| r.takes(req.method(), req.uri().path(), media.as_deref()))
        .ok_or_else(|| {
            Box::new(answer(
                http::StatusCode::NOT_FOUND,
                "no_rule",
                "no rule of this route takes the request",
            ))
        })?;
    Ok(Head {
        arrived,
        source,
        media,
        rule,
    })
}

/// Select `spots` in a request, or the answer that refuses it: 422 for a value of the wrong
/// type, 400 for a body the strict readers refuse.
pub(crate) fn select_request(
    spots: &[rules::Spot],
    headers: &http::HeaderMap,
    body: &[u8],
    media: Option<&str>,
) -> Result<rules::Selection, Refused> {
    rules::select(spots, headers, body, media).map_err(|e| {
        Box::new(match e {
            rules::SelectError::NotAString(_) => answer(
                http::StatusCode::UNPROCESSABLE_ENTITY,
                "field_refused",
                &e.to_string(),
            ),
            e => answer(http::StatusCode::BAD_REQUEST, "bad_body", &e.to_string()),
        })
    })
}

/// The client of a route's upstream, from its config.
pub(crate) fn upstream_client(
    url: &str,
    ca: Option<&std::path::Path>,
    allow_private: bool,
    max_body: usize,
) -> Result<upstream::Client, String> {
    upstream::Client::new(upstream::Target::parse(url)?, ca, allow_private, max_body)
}

/// Refuse targets and paths two parsers could read two ways (module docs). `None` if fine.
pub(crate) fn refuse_target(req: &http::Request<Incoming>) -> Option<&'static str> {
    if req.method() == http::Method::CONNECT {
        return Some("CONNECT is not proxied");
    }
    // HTTP/2 always carries :scheme and :authority (the URI then has both); over HTTP/1.1 a
    // scheme means an absolute-form target, which is a forward-proxy request.
    if req.version() <= http::Version::HTTP_11 && req.uri().scheme().is_some() {
        return Some("absolute-form targets are not proxied");
    }
    let path = req.uri().path();
    if !path.starts_with('/') {
        return Some("the path must start with /");
    }
    let lower = path.to_ascii_lowercase();
    if path.contains("//")
        || path.contains('\\')
        || path.split('/').any(|s| s == "." || s == "..")
        || ["%2f", "%5c", "%2e", "%00"]
            .iter()
            .any(|e| lower.contains(e))
    {
        return Some("the path has an empty, dot or encoded segment");
    }
    None
}

/// Headers that belong to one hop, never forwarded either way.
const HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "expect",
    "http2-settings",
];

/// The end-to-end headers of a message: hop-by-hop ones (and those `Connection` names)
/// removed, and `Accept-Encoding` dropped so the answer comes back in a form the proxy can
/// read (a compressed body could not be scrubbed).
pub(crate) fn end_to_end(headers: &http::HeaderMap) -> http::HeaderMap {
    let named: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    let mut out = http::HeaderMap::new();
    for (k, v) in headers {
        let n = k.as_str();
        if HOP.contains(&n) || named.iter().any(|x| x == n) || n == "accept-encoding" {
            continue;
        }
        out.append(k.clone(), v.clone());
    }
    out
}

/// Why a body could not be read.
pub(crate) enum BodyError {
    TooLarge,
    Slow,
    Broken,
}

/// Read a request body under the route's size limit and the read timeout, wiped on drop.
pub(crate) async fn read_body(
    body: Incoming,
    limit: usize,
    timeout: Duration,
) -> Result<Zeroizing<Vec<u8>>, BodyError> {
    let collect = Limited::new(body, limit).collect();
    match tokio::time::timeout(timeout, collect).await {
        Err(_) => Err(BodyError::Slow),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(BodyError::TooLarge)
        }
        Ok(Err(_)) => Err(BodyError::Broken),
        Ok(Ok(c)) => Ok(Zeroizing::new(c.to_bytes().to_vec())),
    }
}

impl BodyError {
    pub(crate) fn answer(&self) -> http::Response<tonic::body::Body> {
        match self {
            BodyError::TooLarge => answer(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the body is larger than the route allows",
            ),
            BodyError::Slow => answer(
                http::StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the body did not arrive in time",
            ),
            BodyError::Broken => answer(
                http::StatusCode::BAD_REQUEST,
                "body_incomplete",
                "the body was cut short",
            ),
        }
    }
}

/// The answer for a refused vault call.
pub(crate) fn refusal(r: &calls::Refusal) -> http::Response<tonic::body::Body> {
    use calls::Refusal;
    match r {
        Refusal::Field(label) => answer(
            http::StatusCode::UNPROCESSABLE_ENTITY,
            "field_refused",
            &format!("field `{label}` could not be processed"),
        ),
        Refusal::Denied => answer(
            http::StatusCode::FORBIDDEN,
            "denied",
            "the route is not allowed to do this",
        ),
        Refusal::Unauthenticated => answer(
            http::StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "present a client certificate or `Proxy-Authorization: Bearer <api key>`",
        ),
        Refusal::Unavailable => answer(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "vault_unavailable",
            "the vault cannot take this request now; nothing was forwarded",
        ),
        Refusal::Deadline => answer(
            http::StatusCode::GATEWAY_TIMEOUT,
            "deadline",
            "the route's time limit passed; nothing was forwarded",
        ),
    }
}

/// A response to send back: status, end-to-end headers, body (whose length is set here).
pub(crate) fn respond(
    status: http::StatusCode,
    mut headers: http::HeaderMap,
    body: Zeroizing<Vec<u8>>,
) -> http::Response<tonic::body::Body> {
    headers.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(body.len()),
    );
    let mut r = http::Response::new(tonic::body::Body::new(Full::new(Bytes::from(
        body.to_vec(),
    ))));
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

/// An upstream answer compressed or otherwise encoded cannot be scrubbed: refused.
pub(crate) fn encoded(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes() != b"identity")
}
