//! gRPC, the first transport (and gRPC-Web, which tonic-web turns into gRPC in front of these
//! services): tonic's services over our own listener (`listen.rs`), each rpc a thin adapter
//! that reads the call's [`Incoming`] from the HTTP/2 request (peer certificate, source
//! address, `authorization`, `x-end-user-token`, `grpc-timeout`), calls the rpc in `rpc/`, and
//! maps its error with the table in [`status`]. The request path itself (`request/`) has no
//! gRPC in it.

pub(crate) mod status;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tonic::service::Routes;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use vault_proto::v1 as pb;
use vault_proto::v1::admin_server::AdminServer;
use vault_proto::v1::tokenizer_server::TokenizerServer;

use crate::error::StartError;
use crate::request::Incoming;
use crate::request::shared::{Health, HealthSink};
use crate::rpc::admin::Admin;
use crate::rpc::tokenizer::Tokenizer;

const TOKENIZER_SERVICE: &str = "vault.v1.Tokenizer";
const ADMIN_SERVICE: &str = "vault.v1.Admin";

/// What the request path needs of a gRPC request (its `grpc-timeout` the deadline), and the
/// message.
fn incoming<T>(req: Request<T>) -> (Incoming, T) {
    let (metadata, extensions, message) = req.into_parts();
    let headers = metadata.into_headers();
    let timeout = headers
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_timeout);
    (
        crate::peer::incoming(&headers, &extensions, timeout),
        message,
    )
}

/// `grpc-timeout`: up to 8 digits and a unit (gRPC over HTTP/2 spec).
fn parse_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// One gRPC service over an rpc group: every method reads the `Incoming`, calls the rpc of the
/// same name, and maps the error. Written once, so no adapter can differ from another.
macro_rules! adapter {
    ($wrapper:ident, $service:path, $rpcs:ty, { $($name:ident: $req:ty => $resp:ty;)* }) => {
        /// The gRPC face of the rpc group.
        #[derive(Debug, Clone)]
        pub(crate) struct $wrapper(pub(crate) $rpcs);

        #[tonic::async_trait]
        impl $service for $wrapper {
            $(
                async fn $name(&self, request: Request<$req>) -> Result<Response<$resp>, Status> {
                    let (incoming, message) = incoming(request);
                    self.0
                        .$name(incoming, message)
                        .await
                        .map(Response::new)
                        .map_err(|e| status::status(&e))
                }
            )*
        }
    };
}

adapter!(GrpcTokenizer, pb::tokenizer_server::Tokenizer, Tokenizer, {
    tokenize: pb::TokenizeRequest => pb::TokenizeResponse;
    detokenize: pb::DetokenizeRequest => pb::DetokenizeResponse;
    reveal: pb::RevealRequest => pb::RevealResponse;
    delete_tokens: pb::DeleteTokensRequest => pb::DeleteTokensResponse;
});

adapter!(GrpcAdmin, pb::admin_server::Admin, Admin, {
    get_seal_status: pb::GetSealStatusRequest => pb::SealStatus;
    unseal: pb::UnsealRequest => pb::SealStatus;
    seal: pb::SealRequest => pb::SealStatus;
    get_key_status: pb::GetKeyStatusRequest => pb::GetKeyStatusResponse;
    rotate_key: pb::RotateKeyRequest => pb::RotateKeyResponse;
    start_rewrap: pb::StartRewrapRequest => pb::RewrapJob;
    resume_rewrap: pb::ResumeRewrapRequest => pb::RewrapJob;
    get_rewrap: pb::GetRewrapRequest => pb::RewrapJob;
    list_rewraps: pb::ListRewrapsRequest => pb::ListRewrapsResponse;
    raise_min_decryption_version: pb::RaiseMinDecryptionVersionRequest => pb::KeyStatus;
    retire_key_version: pb::RetireKeyVersionRequest => pb::KeyStatus;
    destroy_key_version: pb::DestroyKeyVersionRequest => pb::KeyStatus;
    rotate_root_key: pb::RotateRootKeyRequest => pb::RotateRootKeyResponse;
    create_caller: pb::CreateCallerRequest => pb::CreateCallerResponse;
    list_callers: pb::ListCallersRequest => pb::ListCallersResponse;
    revoke_caller: pb::RevokeCallerRequest => pb::Caller;
    set_caller_scopes: pb::SetCallerScopesRequest => pb::Caller;
    query_audit_events: pb::QueryAuditEventsRequest => pb::QueryAuditEventsResponse;
    verify_audit_log: pb::VerifyAuditLogRequest => pb::VerifyAuditLogResponse;
});

/// Health as gRPC's health service reports it: the overall service and Tokenizer follow data
/// health, Admin its own.
struct GrpcHealth(HealthReporter);

impl HealthSink for GrpcHealth {
    fn publish(&self, health: Health) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let serving = |ok: bool| {
            if ok {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            }
        };
        Box::pin(async move {
            let data = serving(health.data);
            self.0.set_service_status("", data).await;
            self.0.set_service_status(TOKENIZER_SERVICE, data).await;
            self.0
                .set_service_status(ADMIN_SERVICE, serving(health.admin))
                .await;
        })
    }
}

/// The health publisher, and the routes of the health service it feeds (served without
/// credentials).
pub(crate) fn health() -> (Box<dyn HealthSink>, Routes) {
    let (reporter, service) = tonic_health::server::health_reporter();
    (Box::new(GrpcHealth(reporter)), Routes::new(service))
}

/// Every gRPC service: health, Tokenizer, Admin, and reflection when configured.
pub(crate) fn routes(
    shared: &Arc<crate::request::Shared>,
    health: Routes,
    max_message_bytes: usize,
    reflection: bool,
) -> Result<Routes, StartError> {
    let max = max_message_bytes;
    let mut routes = health;
    routes = routes
        .add_service(
            TokenizerServer::new(GrpcTokenizer(Tokenizer(Arc::clone(shared))))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            AdminServer::new(GrpcAdmin(Admin(Arc::clone(shared))))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        );
    if reflection {
        // Both versions, as grpc-go serves them: `v1` for grpcurl and current tools, `v1alpha`
        // for the reflection client that ships with Python's grpcio and several GUI clients
        // (they get UNIMPLEMENTED otherwise).
        let builder = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(vault_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let bad = |e: tonic_reflection::server::Error| StartError::Tls(format!("reflection: {e}"));
        routes = routes
            .add_service(builder().build_v1().map_err(bad)?)
            .add_service(builder().build_v1alpha().map_err(bad)?);
    }
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout("5x"), None);
        assert_eq!(parse_timeout("123456789m"), None);
        assert_eq!(parse_timeout("m"), None);
    }
}
