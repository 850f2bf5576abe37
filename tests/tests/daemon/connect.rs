//! A plain HTTP/1.1 client of the Connect protocol (hyper, no Connect library) over the suite's
//! real TLS and client certificates, so tests can put the same request to the daemon over gRPC
//! and over Connect and compare the answers. Bodies are binary protobuf (`application/proto`,
//! the same prost messages the gRPC calls send); the Python and Node suites cover JSON.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::sync::Arc;
use tonic::Code;

use crate::common::{Daemon, pki};

/// One keep-alive Connect connection, optionally with a client certificate.
pub(crate) struct ConnectClient {
    send: SendRequest<Full<Bytes>>,
}

/// A Connect error code's gRPC twin (written from the Connect specification, not from the
/// daemon's table, so the two are checked against each other).
fn code_of(name: &str) -> Code {
    match name {
        "canceled" => Code::Cancelled,
        "invalid_argument" => Code::InvalidArgument,
        "deadline_exceeded" => Code::DeadlineExceeded,
        "not_found" => Code::NotFound,
        "already_exists" => Code::AlreadyExists,
        "permission_denied" => Code::PermissionDenied,
        "resource_exhausted" => Code::ResourceExhausted,
        "failed_precondition" => Code::FailedPrecondition,
        "aborted" => Code::Aborted,
        "out_of_range" => Code::OutOfRange,
        "unimplemented" => Code::Unimplemented,
        "internal" => Code::Internal,
        "unavailable" => Code::Unavailable,
        "data_loss" => Code::DataLoss,
        "unauthenticated" => Code::Unauthenticated,
        _ => Code::Unknown,
    }
}

/// The HTTP status the Connect specification gives a code.
fn http_status_of(c: Code) -> u16 {
    match c {
        Code::Ok => 200,
        Code::Cancelled => 499,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::DeadlineExceeded => 504,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::PermissionDenied => 403,
        Code::ResourceExhausted => 429,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::Unauthenticated => 401,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    }
}

/// What a Connect call answered.
pub(crate) struct Answer {
    pub(crate) code: Code,
    pub(crate) message: String,
    pub(crate) body: Bytes,
}

impl Daemon {
    /// A Connect connection, authenticated by the named client certificate (`None`: none).
    pub(crate) async fn connect(&self, cert: Option<&str>) -> ConnectClient {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let send = if self.tls {
            let pki = pki();
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(pki.ca.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots);
            let mut cfg = match cert {
                Some(name) => {
                    let (c, k) = &pki.clients[name];
                    let chain = CertificateDer::pem_slice_iter(c.as_bytes())
                        .collect::<Result<Vec<_>, _>>()
                        .unwrap();
                    let key = PrivateKeyDer::from_pem_slice(k.as_bytes()).unwrap();
                    builder.with_client_auth_cert(chain, key).unwrap()
                }
                None => builder.with_no_client_auth(),
            };
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .unwrap();
            tokio::spawn(conn);
            send
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .unwrap();
            tokio::spawn(conn);
            send
        };
        ConnectClient { send }
    }
}

impl ConnectClient {
    /// `POST /<service>/<method>` with `msg` as binary protobuf and `key` as the bearer key.
    /// Checks that an error's HTTP status is the one the specification gives its code.
    pub(crate) async fn call(
        &mut self,
        path: &str,
        msg: &impl prost::Message,
        key: Option<&str>,
    ) -> Answer {
        self.send.ready().await.unwrap();
        let mut req = http::Request::post(path)
            .header(http::header::HOST, "localhost")
            .header(http::header::CONTENT_TYPE, "application/proto")
            .header("connect-protocol-version", "1");
        if let Some(k) = key {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {k}"));
        }
        let req = req
            .body(Full::new(Bytes::from(msg.encode_to_vec())))
            .unwrap();
        let resp = self.send.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        if status == 200 {
            return Answer {
                code: Code::Ok,
                message: String::new(),
                body,
            };
        }
        let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let code = code_of(err["code"].as_str().unwrap_or_default());
        assert_eq!(status, http_status_of(code), "{err}");
        Answer {
            code,
            message: err["message"].as_str().unwrap_or_default().to_owned(),
            body,
        }
    }
}
