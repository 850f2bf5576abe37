//! A plain HTTP/1.1 (or HTTP/2) client of the Connect protocol (hyper, no Connect library) over the suite's
//! real TLS and client certificates, so tests can put the same request to the daemon over gRPC
//! and over Connect and compare the answers. Bodies are binary protobuf (`application/proto`,
//! the same prost messages the gRPC calls send); the Python and Node suites cover JSON.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioExecutor;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::sync::Arc;
use tonic::Code;

use crate::common::Daemon;

/// One keep-alive Connect connection, optionally with a client certificate.
pub(crate) struct ConnectClient {
    send: Sender,
    /// `scheme://authority` for HTTP/2's pseudo-headers.
    origin: String,
}

/// The connection's HTTP version.
enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// Which HTTP version a connection speaks (ALPN over TLS, prior knowledge without).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Http {
    H1,
    H2,
}

/// A Connect error code's gRPC twin (written from the Connect specification, not from the
/// daemon's table, so the two are checked against each other).
pub(crate) fn code_of(name: &str) -> Code {
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

/// The code the Connect specification gives an HTTP error without a Connect error body (a
/// proxy's or the HTTP stack's answer: the gRPC HTTP-to-status mapping).
pub(crate) fn code_of_http(status: u16) -> Code {
    match status {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// One HTTP exchange as it came back.
pub(crate) struct Exchange {
    pub(crate) status: u16,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: Bytes,
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
        self.try_connect(cert).await.unwrap()
    }

    /// [`Daemon::connect`], with a refused handshake as an error.
    pub(crate) async fn try_connect(&self, cert: Option<&str>) -> Result<ConnectClient, String> {
        self.try_connect_over(cert, Http::H1).await
    }

    /// An HTTP/1.1 or HTTP/2 connection, authenticated by the named client certificate.
    pub(crate) async fn try_connect_over(
        &self,
        cert: Option<&str>,
        http: Http,
    ) -> Result<ConnectClient, String> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| e.to_string())?;
        let send = if self.tls {
            let alpn = match http {
                Http::H1 => &b"http/1.1"[..],
                Http::H2 => &b"h2"[..],
            };
            let cfg = crate::common::client_tls(cert, alpn);
            let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .map_err(|e| e.to_string())?;
            handshake(TokioIo::new(tls), http).await?
        } else {
            handshake(TokioIo::new(tcp), http).await?
        };
        let origin = match self.tls {
            true => "https://localhost".to_owned(),
            false => format!("http://{}", self.addr),
        };
        Ok(ConnectClient { send, origin })
    }
}

async fn handshake<T>(io: TokioIo<T>, http: Http) -> Result<Sender, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    Ok(match http {
        Http::H1 => {
            let (send, conn) = http1::handshake(io).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Sender::H1(send)
        }
        Http::H2 => {
            let (send, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Sender::H2(send)
        }
    })
}

impl ConnectClient {
    /// `POST path` with `body` and the given headers (`Host` is set); a connection the server
    /// dropped is an error.
    pub(crate) async fn post(
        &mut self,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<Exchange, String> {
        let mut req = match &self.send {
            Sender::H1(_) => http::Request::post(path).header(http::header::HOST, "localhost"),
            Sender::H2(_) => http::Request::post(format!("{}{path}", self.origin)),
        };
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let req = req.body(Full::new(Bytes::from(body))).unwrap();
        let e = |e: hyper::Error| e.to_string();
        let resp = match &mut self.send {
            Sender::H1(s) => {
                s.ready().await.map_err(e)?;
                s.send_request(req).await.map_err(e)?
            }
            Sender::H2(s) => {
                s.ready().await.map_err(e)?;
                s.send_request(req).await.map_err(e)?
            }
        };
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Exchange {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    /// `POST /<service>/<method>` with `msg` as binary protobuf and `key` as the bearer key.
    /// Checks that an error's HTTP status is the one the specification gives its code.
    pub(crate) async fn call(
        &mut self,
        path: &str,
        msg: &impl prost::Message,
        key: Option<&str>,
    ) -> Answer {
        let mut headers = connect_headers();
        if let Some(k) = key {
            headers.push(("authorization", format!("Bearer {k}")));
        }
        let ex = self
            .post(path, &headers, msg.encode_to_vec())
            .await
            .unwrap();
        Answer::of(ex)
    }
}

/// A binary Connect unary request's headers.
pub(crate) fn connect_headers() -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/proto".into()),
        ("connect-protocol-version", "1".into()),
    ]
}

impl Answer {
    /// Reads a Connect answer. A Connect error must come with the HTTP status the specification
    /// gives its code, except routing refusals (404 for an unknown procedure, 405 for a method
    /// other than POST, both `unimplemented`); an HTTP error without a Connect body (the HTTP
    /// stack's, such as 431 for over-size headers) reads as the specification's HTTP mapping.
    pub(crate) fn of(ex: Exchange) -> Answer {
        let Exchange { status, body, .. } = ex;
        if status == 200 {
            return Answer {
                code: Code::Ok,
                message: String::new(),
                body,
            };
        }
        let Ok(err) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return Answer {
                code: code_of_http(status),
                message: String::from_utf8_lossy(&body).into_owned(),
                body,
            };
        };
        let code = code_of(err["code"].as_str().unwrap_or_default());
        let routing = matches!(status, 404 | 405) && code == Code::Unimplemented;
        assert!(routing || status == http_status_of(code), "{status}: {err}");
        Answer {
            code,
            message: err["message"].as_str().unwrap_or_default().to_owned(),
            body,
        }
    }
}
