//! The Connect protocol, unary (connectrpc.com/docs/protocol), the second transport: `POST
//! /vault.v1.Tokenizer/Tokenize` with a JSON (`application/json`, the proto3 JSON mapping) or
//! binary (`application/proto`) body, over HTTP/1.1 or HTTP/2, on the gRPC listener. Like
//! `grpc/`, an adapter only: it reads an [`Incoming`] from the request (`Authorization`, the
//! client certificate, `x-end-user-token`, `Connect-Timeout-Ms` as the deadline), calls the same
//! rpc in `rpc/`, and maps the outcome with the table in [`status`].
//!
//! Why our own adapter and not a Connect crate: the Rust implementation (`connectrpc`) brings
//! its own message types (buffa, not prost) and its own handler runtime with its own deadline
//! handling, the very thing `listen.rs` avoids for tonic's; unary Connect is an HTTP request
//! with a body and a status, small enough to read here in full.
//!
//! What the HTTP layer refuses is refused like bad input over gRPC: after authentication, with
//! an audit event (operation of the rpc, no template), and a message that says what is wrong
//! without repeating it. Unknown paths get 404 and other methods than POST 405, unaudited, as
//! an unknown gRPC method is.

pub(crate) mod codec;
pub(crate) mod status;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, Version, header};
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use prost::Message;
use prost_reflect::{DescriptorPool, MessageDescriptor};

use self::codec::Encoding;
use crate::error::StartError;
use crate::policy::{AdminOp, Operation};
use crate::request::error::CallError;
use crate::request::{Incoming, Shared, Unreadable};
use crate::rpc::admin::Admin;
use crate::rpc::tokenizer::Tokenizer;

/// The response body type of every protocol on the listener.
type Body = tonic::body::Body;

/// The Connect face of the Tokenizer and Admin rpcs.
pub(crate) struct Connect {
    tokenizer: Tokenizer,
    admin: Admin,
    shared: Arc<Shared>,
    /// `/vault.v1.Service/Method` → the rpc and its message types.
    routes: HashMap<String, Route>,
    max_message_bytes: usize,
    read_timeout: Duration,
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect")
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

struct Route {
    rpc: Rpc,
    input: MessageDescriptor,
    output: MessageDescriptor,
}

/// A request past the HTTP checks: who, how encoded, and the body.
struct Call {
    incoming: Incoming,
    encoding: Encoding,
    body: Bytes,
}

/// Every rpc of `vault.v1` over Connect: its path, the rpc group and method that serve it, and
/// what a call whose body cannot be read is audited as. Written once, so the path, the handler
/// and the audit record cannot disagree; `every_rpc_has_a_route` checks the list against the
/// descriptor set.
macro_rules! rpcs {
    ($( $variant:ident: $service:literal / $method:literal => $group:ident . $name:ident, $unreadable:expr; )*) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        enum Rpc { $($variant),* }

        impl Rpc {
            const ALL: &[Rpc] = &[$(Rpc::$variant),*];

            fn path(self) -> (&'static str, &'static str) {
                match self { $(Rpc::$variant => ($service, $method)),* }
            }

            fn unreadable(self) -> Unreadable {
                match self { $(Rpc::$variant => $unreadable),* }
            }
        }

        impl Connect {
            async fn dispatch(&self, route: &Route, call: Call) -> Response<Body> {
                match route.rpc {
                    $(Rpc::$variant => {
                        let group = self.$group.clone();
                        self.unary(route, call, move |i, m| async move { group.$name(i, m).await })
                            .await
                    })*
                }
            }
        }
    };
}

use Unreadable::{Admin as A, Tokenizer as T};

rpcs! {
    Tokenize: "vault.v1.Tokenizer" / "Tokenize" => tokenizer.tokenize, T(Operation::Tokenize);
    Detokenize: "vault.v1.Tokenizer" / "Detokenize" => tokenizer.detokenize, T(Operation::Detokenize);
    Reveal: "vault.v1.Tokenizer" / "Reveal" => tokenizer.reveal, T(Operation::Reveal);
    DeleteTokens: "vault.v1.Tokenizer" / "DeleteTokens" => tokenizer.delete_tokens, T(Operation::Delete);
    GetSealStatus: "vault.v1.Admin" / "GetSealStatus" => admin.get_seal_status, A(AdminOp::GetSealStatus);
    Unseal: "vault.v1.Admin" / "Unseal" => admin.unseal, A(AdminOp::Unseal);
    Seal: "vault.v1.Admin" / "Seal" => admin.seal, A(AdminOp::Seal);
    GetKeyStatus: "vault.v1.Admin" / "GetKeyStatus" => admin.get_key_status, A(AdminOp::GetKeyStatus);
    RotateKey: "vault.v1.Admin" / "RotateKey" => admin.rotate_key, A(AdminOp::RotateKey);
    StartRewrap: "vault.v1.Admin" / "StartRewrap" => admin.start_rewrap, A(AdminOp::Rewrap);
    ResumeRewrap: "vault.v1.Admin" / "ResumeRewrap" => admin.resume_rewrap, A(AdminOp::Rewrap);
    GetRewrap: "vault.v1.Admin" / "GetRewrap" => admin.get_rewrap, A(AdminOp::GetRewrap);
    ListRewraps: "vault.v1.Admin" / "ListRewraps" => admin.list_rewraps, A(AdminOp::GetRewrap);
    RaiseMinDecryptionVersion: "vault.v1.Admin" / "RaiseMinDecryptionVersion" => admin.raise_min_decryption_version, A(AdminOp::RaiseMinDecryptionVersion);
    RetireKeyVersion: "vault.v1.Admin" / "RetireKeyVersion" => admin.retire_key_version, A(AdminOp::RetireKeyVersion);
    DestroyKeyVersion: "vault.v1.Admin" / "DestroyKeyVersion" => admin.destroy_key_version, A(AdminOp::DestroyKeyVersion);
    RotateRootKey: "vault.v1.Admin" / "RotateRootKey" => admin.rotate_root_key, A(AdminOp::RotateRootKey);
    CreateCaller: "vault.v1.Admin" / "CreateCaller" => admin.create_caller, A(AdminOp::CreateCaller);
    ListCallers: "vault.v1.Admin" / "ListCallers" => admin.list_callers, A(AdminOp::ListCallers);
    RevokeCaller: "vault.v1.Admin" / "RevokeCaller" => admin.revoke_caller, A(AdminOp::RevokeCaller);
    SetCallerScopes: "vault.v1.Admin" / "SetCallerScopes" => admin.set_caller_scopes, A(AdminOp::SetCallerScopes);
    QueryAuditEvents: "vault.v1.Admin" / "QueryAuditEvents" => admin.query_audit_events, A(AdminOp::QueryAuditEvents);
    VerifyAuditLog: "vault.v1.Admin" / "VerifyAuditLog" => admin.verify_audit_log, A(AdminOp::VerifyAuditLog);
}

/// The contract's descriptor set, in the form prost-reflect reads.
fn pool() -> Result<DescriptorPool, StartError> {
    DescriptorPool::decode(vault_proto::FILE_DESCRIPTOR_SET)
        .map_err(|e| StartError::Tls(format!("the contract's descriptor set: {e}")))
}

impl Connect {
    /// The Connect adapter over the rpcs, with their message types from the descriptor set.
    pub(crate) fn new(shared: &Arc<Shared>) -> Result<Connect, StartError> {
        let pool = pool()?;
        let mut routes = HashMap::new();
        for &rpc in Rpc::ALL {
            let (service, method) = rpc.path();
            let m = pool
                .get_service_by_name(service)
                .and_then(|s| s.methods().find(|m| m.name() == method))
                .ok_or_else(|| {
                    StartError::Tls(format!("{service}/{method} is not in the contract"))
                })?;
            let route = Route {
                rpc,
                input: m.input(),
                output: m.output(),
            };
            routes.insert(format!("/{service}/{method}"), route);
        }
        Ok(Connect {
            tokenizer: Tokenizer(Arc::clone(shared)),
            admin: Admin(Arc::clone(shared)),
            shared: Arc::clone(shared),
            routes,
            max_message_bytes: shared.limits.max_message_bytes,
            read_timeout: Duration::from_millis(shared.limits.http_read_timeout_ms.max(1)),
        })
    }

    /// Serve one Connect request.
    pub(crate) async fn serve(&self, req: http::Request<hyper::body::Incoming>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let Some(route) = self.routes.get(parts.uri.path()) else {
            return reply_error(
                StatusCode::NOT_FOUND,
                &CallError::unimplemented("no such procedure"),
            );
        };
        if parts.method != Method::POST {
            let mut r = reply_error(
                StatusCode::METHOD_NOT_ALLOWED,
                &CallError::unimplemented("Connect unary calls are POST requests"),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return r;
        }
        let timeout = header(&parts, "connect-timeout-ms").map(parse_timeout);
        let incoming = crate::peer::incoming(
            &parts.headers,
            &parts.extensions,
            timeout.clone().and_then(Result::ok),
        );
        let encoding = match self.check(&parts, timeout) {
            Ok(e) => e,
            Err((why, status)) => return self.refuse(&incoming, route.rpc, why, status).await,
        };
        let read = tokio::time::timeout(
            self.read_timeout,
            Limited::new(body, self.max_message_bytes).collect(),
        )
        .await;
        let body = match read {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
                return self
                    .refuse(&incoming, route.rpc, self.too_large(), None)
                    .await;
            }
            Ok(Err(_)) => {
                let why = CallError::invalid_argument("the request body could not be read");
                return self.refuse(&incoming, route.rpc, why, None).await;
            }
            Err(_) => {
                let why = CallError::DeadlineExceeded;
                let status = Some(StatusCode::REQUEST_TIMEOUT);
                return self.refuse(&incoming, route.rpc, why, status).await;
            }
        };
        let call = Call {
            incoming,
            encoding,
            body,
        };
        self.dispatch(route, call).await
    }

    /// What the HTTP layer checks before reading the body: the HTTP version, the content
    /// type (the body's encoding), the Connect protocol version, the timeout, compression, a
    /// declared length over the limit. A refusal, with the HTTP status when it has its own.
    fn check(
        &self,
        parts: &http::request::Parts,
        timeout: Option<Result<Duration, CallError>>,
    ) -> Result<Encoding, (CallError, Option<StatusCode>)> {
        if parts.version < Version::HTTP_11 {
            return Err((
                CallError::unimplemented("HTTP/1.1 or HTTP/2 is required"),
                Some(StatusCode::HTTP_VERSION_NOT_SUPPORTED),
            ));
        }
        let content_type = header(parts, header::CONTENT_TYPE.as_str()).unwrap_or_default();
        let Some(encoding) = Encoding::of_content_type(content_type) else {
            let why = CallError::invalid_argument(
                "unsupported content type: Connect unary takes application/json or \
                 application/proto",
            );
            return Err((why, Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)));
        };
        if header(parts, "connect-protocol-version").is_some_and(|v| v != "1") {
            let why = CallError::invalid_argument("connect-protocol-version must be 1");
            return Err((why, None));
        }
        if let Some(Err(why)) = timeout {
            return Err((why, None));
        }
        if header(parts, header::CONTENT_ENCODING.as_str())
            .is_some_and(|v| !v.eq_ignore_ascii_case("identity"))
        {
            let why = CallError::unimplemented("compressed request bodies are not supported");
            return Err((why, None));
        }
        let declared =
            header(parts, header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_message_bytes as u64) {
            return Err((self.too_large(), None));
        }
        Ok(encoding)
    }

    fn too_large(&self) -> CallError {
        CallError::resource_exhausted(format!(
            "request body exceeds the limit of {} bytes",
            self.max_message_bytes
        ))
    }

    /// Refuse a request the adapter could not read: audited, then answered with the error the
    /// request path returns (an unauthenticated caller hears that first), under `status` when
    /// the HTTP layer has a more exact one for the refusal itself (415, 505, 408).
    async fn refuse(
        &self,
        incoming: &Incoming,
        rpc: Rpc,
        why: CallError,
        status: Option<StatusCode>,
    ) -> Response<Body> {
        let sent = self
            .shared
            .refuse_unreadable(incoming, rpc.unreadable(), why.clone())
            .await;
        let status = match status {
            Some(s) if sent == why => s,
            _ => status::code(sent.code()).1,
        };
        reply_error(status, &sent)
    }

    /// Decode, call, encode.
    async fn unary<Req, Resp, F, Fut>(&self, route: &Route, call: Call, f: F) -> Response<Body>
    where
        Req: Message + Default,
        Resp: Message,
        F: FnOnce(Incoming, Req) -> Fut,
        Fut: Future<Output = Result<Resp, CallError>>,
    {
        let Call {
            incoming,
            encoding,
            body,
        } = call;
        let msg = match codec::decode::<Req>(encoding, &route.input, &body) {
            Ok(m) => m,
            Err(why) => return self.refuse(&incoming, route.rpc, why, None).await,
        };
        drop(body);
        let result = f(incoming, msg)
            .await
            .and_then(|resp| codec::encode(encoding, &route.output, &resp));
        match result {
            Ok(bytes) => {
                let mut r = Response::new(Body::new(Full::new(Bytes::from(bytes))));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(encoding.content_type()),
                );
                r
            }
            Err(e) => reply_error(status::code(e.code()).1, &e),
        }
    }
}

/// A request header as text (a header that is not text reads as one no check accepts).
fn header<'a>(parts: &'a http::request::Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get(name)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"))
}

/// A Connect error response: `status`, the error body as JSON.
fn reply_error(status: StatusCode, e: &CallError) -> Response<Body> {
    let (_, body) = status::error(e);
    let mut r = Response::new(Body::new(Full::new(Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// `Connect-Timeout-Ms`: a positive integer of at most 10 digits.
fn parse_timeout(v: &str) -> Result<Duration, CallError> {
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CallError::invalid_argument(
            "connect-timeout-ms: at most 10 digits",
        ));
    }
    v.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| CallError::invalid_argument("connect-timeout-ms: at most 10 digits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new rpc in the `.proto` files without a Connect route fails here, not in production.
    #[test]
    fn every_rpc_has_a_route() {
        let pool = pool().unwrap();
        let mut contract: Vec<(String, String)> = pool
            .services()
            .filter(|s| s.package_name() == "vault.v1")
            .flat_map(|s| {
                let name = s.full_name().to_owned();
                s.methods()
                    .map(move |m| (name.clone(), m.name().to_owned()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut routed: Vec<(String, String)> = Rpc::ALL
            .iter()
            .map(|r| (r.path().0.to_owned(), r.path().1.to_owned()))
            .collect();
        contract.sort();
        routed.sort();
        assert_eq!(contract, routed);
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("250"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_timeout("0"), Ok(Duration::ZERO));
        assert!(parse_timeout("").is_err());
        assert!(parse_timeout("12345678901").is_err());
        assert!(parse_timeout("-5").is_err());
        assert!(parse_timeout("1.5").is_err());
    }
}
