//! The transport under the services: TCP, TLS (rustls), HTTP/2 (hyper), and graceful shutdown.
//!
//! Why not tonic's `Server`: it enforces the client's `grpc-timeout` itself, outside the
//! services, by dropping the call and answering `CANCELLED` when the deadline passes. That races
//! the request path, which must answer `DEADLINE_EXCEEDED` and write an audit event saying what
//! the caller was sent (`request/mod.rs`): with tonic's timer, a call could be audited `OK` while the
//! client was told `CANCELLED`. Here the deadline is the request path's alone. The services
//! themselves are still tonic's (`Routes`: codecs, message limits, health, reflection).
//!
//! Each request carries, as extensions, the connection's [`Peer`] (source address, verified
//! client certificate chain) and the instant it [`Arrived`], from which its deadline counts.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tonic::service::Routes;
use tower::ServiceExt as _;
use zeroize::Zeroizing;

use crate::error::StartError;

/// How long a client may take to finish the TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection a request came on.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    /// The client's address.
    pub(crate) addr: SocketAddr,
    /// The client certificate chain rustls verified against the client CA, if one was sent.
    pub(crate) certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

/// When the request's headers were read: its `grpc-timeout` counts from here.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Arrived(pub(crate) Instant);

/// The rustls server configuration of `[tls]`: the server's certificate and key, and, with a
/// client CA, optional client authentication (callers without a certificate use API keys over
/// TLS; a certificate that is presented must chain to the CA or the handshake fails). HTTP/2
/// only (ALPN `h2`).
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
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Accepts connections until `stop` fires, then stops accepting and lets every connection
/// finish its calls (HTTP/2 GOAWAY). Aborting the returned task drops every connection.
pub(crate) fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    routes: Routes,
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
                    let (tls, routes) = (tls.clone(), routes.clone());
                    conns.spawn(async move {
                        let builder = {
                            let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                            b.timer(TokioTimer::new());
                            b
                        };
                        match tls {
                            None => {
                                let peer = Peer { addr, certs: None };
                                let conn = builder.serve_connection(TokioIo::new(tcp), service(routes, peer));
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
                                let conn = builder.serve_connection(TokioIo::new(stream), service(routes, peer));
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

/// The services, with the connection's [`Peer`] and the request's [`Arrived`] as extensions.
fn service(
    routes: Routes,
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
        routes.clone().oneshot(req)
    })
}
