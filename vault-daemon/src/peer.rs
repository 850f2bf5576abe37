//! What every transport knows of a request before its message: the connection it came on
//! ([`Peer`]), when it [`Arrived`], and the request path's [`Incoming`](request::Incoming) read
//! from its HTTP headers. Apart from `listen.rs` (which sets the extensions) so that the
//! protocol adapters, which the listener calls, can read them without importing it back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use zeroize::Zeroizing;

use crate::auth::Credentials;
use crate::request::{self, Protocol};

/// The connection a request came on.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    /// The client's address.
    pub(crate) addr: SocketAddr,
    /// The client certificate chain rustls verified against the client CA, if one was sent.
    pub(crate) certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

/// When the request's headers were read: its timeout counts from here.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Arrived(pub(crate) Instant);

/// Metadata header carrying a forwarded end-user JWT (gRPC and Connect alike).
pub(crate) const END_USER_HEADER: &str = "x-end-user-token";

/// What the request path needs of an HTTP request, read from its headers and extensions, with
/// the client's timeout as its protocol spells it.
pub(crate) fn incoming(
    headers: &http::HeaderMap,
    extensions: &http::Extensions,
    timeout: Option<Duration>,
) -> request::Incoming {
    let peer = extensions.get::<Peer>();
    let arrived = extensions
        .get::<Arrived>()
        .map_or_else(Instant::now, |a| a.0);
    request::Incoming {
        credentials: Credentials {
            certs: peer.and_then(|p| p.certs.clone()),
            authorization: headers
                .get(http::header::AUTHORIZATION)
                .map(|v| Zeroizing::new(v.as_bytes().to_vec())),
        },
        source: peer.map(|p| p.addr.ip()),
        // A timeout past what `Instant` can hold is no deadline at all.
        deadline: timeout.and_then(|d| arrived.checked_add(d)),
        end_user_token: headers
            .get(END_USER_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        protocol: extensions
            .get::<Protocol>()
            .copied()
            .unwrap_or(Protocol::Grpc),
        arrived,
    }
}
