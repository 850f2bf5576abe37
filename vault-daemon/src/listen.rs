//! The transport under every protocol: TCP, TLS (rustls), HTTP/1.1 and HTTP/2 on one port
//! (hyper-util's `auto` connection: ALPN or the HTTP/2 preface decides), graceful shutdown, and
//! the choice of protocol per request: `application/grpc…` goes to the gRPC services (tonic's,
//! with tonic-web in front for gRPC-Web), anything else to the Connect protocol (`connect/`).
//!
//! Why not tonic's `Server`: it enforces the client's `grpc-timeout` itself, outside the
//! services, by dropping the call and answering `CANCELLED` when the deadline passes. That races
//! the request path, which must answer `DEADLINE_EXCEEDED` and write an audit event saying what
//! the caller was sent (`request/mod.rs`): with tonic's timer, a call could be audited `OK` while the
//! client was told `CANCELLED`. Here the deadline is the request path's alone. The gRPC services
//! themselves are still tonic's (`Routes`: codecs, message limits, health, reflection).
//!
//! Slow clients: HTTP/1.1 request headers must arrive within `limits.http_read_timeout_ms`
//! (hyper closes the connection otherwise), and the Connect adapter reads a body under the same
//! limit, so a trickled request costs a timer, not a stuck task.
//!
//! Each request carries, as extensions, the connection's [`Peer`] (source address, verified
//! client certificate chain), the instant it [`Arrived`], from which its deadline counts, and
//! the [`Protocol`] it came in.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tonic::service::Routes;
use tower::{Layer as _, ServiceExt as _};
use zeroize::Zeroizing;

use crate::error::StartError;
use crate::peer::{Arrived, Peer};
use crate::request::Protocol;

/// How long a client may take to finish the TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most a request's head may take, on either HTTP version: HTTP/2's header list (hyper's
/// default, set here so both are ours) and HTTP/1.1's read buffer, which must hold the request
/// line and headers (hyper answers 431 past it). Enough for an API key and an end-user JWT;
/// a client sending more is refused before any handler, as over HTTP/2.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// What the listener serves: the gRPC services behind tonic-web, and the Connect protocol.
#[derive(Clone)]
pub(crate) struct Services {
    /// Health, Tokenizer, Admin, reflection; gRPC-Web translated in front.
    pub(crate) grpc: tonic_web::GrpcWebService<Routes>,
    /// Every Tokenizer and Admin rpc over the Connect protocol.
    pub(crate) connect: Arc<crate::connect::Connect>,
    /// `limits.http_read_timeout_ms`.
    pub(crate) read_timeout: Duration,
}

impl Services {
    /// The services over `routes`.
    pub(crate) fn new(
        routes: Routes,
        connect: crate::connect::Connect,
        read_timeout: Duration,
    ) -> Services {
        Services {
            grpc: tonic_web::GrpcWebLayer::new().layer(routes),
            connect: Arc::new(connect),
            read_timeout,
        }
    }
}

/// The rustls server configuration of `[tls]`: the server's certificate and key, and, with a
/// client CA, optional client authentication (callers without a certificate use API keys over
/// TLS; a certificate that is presented must chain to the CA or the handshake fails). ALPN
/// offers `h2` first, then `http/1.1` (Connect and gRPC-Web clients, `curl`).
pub(crate) fn tls_acceptor(tls: &crate::config::Tls) -> Result<TlsAcceptor, StartError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| StartError::Io {
            what: format!("reading {}", p.display()),
            source,
        })
    };
    let bad = |what: &str, p: &Path, e: &dyn std::fmt::Display| {
        StartError::Tls(format!("{what} {}: {e}", p.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(&tls.cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| bad("certificate", &tls.cert, &e))?;
    if certs.is_empty() {
        return Err(bad("certificate", &tls.cert, &"no certificate in the file"));
    }
    let key_pem = Zeroizing::new(read(&tls.key)?);
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| bad("key", &tls.key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&read(ca)?) {
                let c = c.map_err(|e| bad("client CA", ca, &e))?;
                roots.add(c).map_err(|e| bad("client CA", ca, &e))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| bad("client CA", ca, &e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| StartError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Accepts connections until `stop` fires, then stops accepting and lets every connection
/// finish its calls (HTTP/2 GOAWAY). Aborting the returned task drops every connection.
pub(crate) fn serve<H: Handler>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    services: H,
    stop: oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let graceful = GracefulShutdown::new();
        // Owned here, so aborting this task aborts every connection with it.
        let mut conns = JoinSet::new();
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                accepted = listener.accept() => {
                    let (tcp, addr) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of file descriptors and the like: back off, keep serving.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    // Without it, Nagle holds the last small segment of a response (the
                    // trailers) until the client's delayed ACK: ~40 ms on a response of a few
                    // KiB, such as a batch of 100 tokens (BENCHMARKS.md, "Daemon").
                    let _ = tcp.set_nodelay(true);
                    let watcher = graceful.watcher();
                    let (tls, services) = (tls.clone(), services.clone());
                    conns.spawn(async move {
                        let mut builder = auto::Builder::new(TokioExecutor::new());
                        builder
                            .http1()
                            .timer(TokioTimer::new())
                            .header_read_timeout(services.read_timeout())
                            .max_buf_size(MAX_HEAD_BYTES);
                        builder
                            .http2()
                            .timer(TokioTimer::new())
                            .max_header_list_size(MAX_HEAD_BYTES as u32);
                        match tls {
                            None => {
                                let peer = Peer { addr, certs: None };
                                let conn = builder.serve_connection(TokioIo::new(tcp), service(services, peer));
                                let _ = watcher.watch(conn).await;
                            }
                            Some(acceptor) => {
                                let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                                    Ok(Ok(s)) => s,
                                    // Refused before any handler, so not in the audit log: the
                                    // server log says so (rustls's reason names no secret).
                                    Ok(Err(e)) => {
                                        tracing::info!(peer = %addr, error = %e, "TLS handshake refused");
                                        return;
                                    }
                                    Err(_) => {
                                        tracing::info!(peer = %addr, "TLS handshake timed out");
                                        return;
                                    }
                                };
                                let certs = stream
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .map(|c| Arc::new(c.iter().map(|c| c.clone().into_owned()).collect()));
                                let peer = Peer { addr, certs };
                                let conn = builder.serve_connection(TokioIo::new(stream), service(services, peer));
                                let _ = watcher.watch(conn).await;
                            }
                        }
                    });
                }
            }
        }
        drop(listener);
        graceful.shutdown().await;
    })
}

/// What a listener serves: the daemon's protocols ([`Services`]) or a proxy route
/// (`proxy/`). Requests carry the connection's [`Peer`] and their [`Arrived`] instant as
/// extensions.
pub(crate) trait Handler: Clone + Send + Sync + 'static {
    /// Answer one request.
    fn handle(
        &self,
        req: http::Request<Incoming>,
    ) -> impl Future<Output = http::Response<tonic::body::Body>> + Send;
    /// How long request headers may take to arrive (HTTP/1.1).
    fn read_timeout(&self) -> Duration;
}

impl Handler for Services {
    async fn handle(&self, mut req: http::Request<Incoming>) -> http::Response<tonic::body::Body> {
        let content_type = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let answer = if content_type.starts_with("application/grpc-web") {
            req.extensions_mut().insert(Protocol::GrpcWeb);
            self.grpc.clone().oneshot(req).await
        } else if content_type.starts_with("application/grpc") {
            req.extensions_mut().insert(Protocol::Grpc);
            self.grpc.clone().oneshot(req).await
        } else {
            req.extensions_mut().insert(Protocol::Connect);
            Ok(self.connect.serve(req).await)
        };
        match answer {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }

    fn read_timeout(&self) -> Duration {
        self.read_timeout
    }
}

/// The handler, with the connection's [`Peer`] and the request's [`Arrived`] as extensions.
fn service<H: Handler>(
    handler: H,
    peer: Peer,
) -> impl hyper::service::Service<
    http::Request<Incoming>,
    Response = http::Response<tonic::body::Body>,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<http::Response<tonic::body::Body>, std::convert::Infallible>>
             + Send,
> + Clone {
    hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
        req.extensions_mut().insert(Arrived(Instant::now()));
        req.extensions_mut().insert(peer.clone());
        let handler = handler.clone();
        async move { Ok(handler.handle(req).await) }
    })
}
