//! The proxy's side toward an upstream: a fixed target from the config, its addresses checked
//! after DNS, TLS verified against the system's or pinned roots, one HTTP/1.1 exchange per
//! connection, under a deadline, with the response body read under a size limit.
//!
//! Never an open forwarder: the target is the route's, whatever the request says (`Host`,
//! an absolute-form URI and `CONNECT` never choose it); redirects are answers passed back, not
//! followed; and an address that resolves to a loopback, private, link-local or otherwise
//! special range is refused unless the route says `allow_private` (DNS rebinding: the check is
//! on the addresses connected to, not on the name).
//!
//! One connection per exchange, on purpose: a request that carried revealed values is never
//! sent on a connection an earlier exchange left in an unknown state, and a failure is never
//! the artefact of a stale pooled connection (which a client would be tempted to retry).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use zeroize::Zeroizing;

/// A route's upstream.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) tls: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The base path (no trailing `/`), prefixed to every request's path.
    pub(crate) base: String,
}

impl Target {
    /// `http[s]://host[:port][/base]`, nothing else (no user info, query or fragment).
    pub(crate) fn parse(url: &str) -> Result<Target, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err("an upstream is `http://` or `https://`".into());
        };
        if rest.contains(['@', '?', '#', '\\']) {
            return Err("an upstream has no user info, query or fragment".into());
        }
        let (authority, base) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| "the upstream's port is a number")?,
            ),
            _ => (authority, if tls { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err("the upstream has no host".into());
        }
        if base.contains("//") || base.split('/').any(|s| s == ".." || s == ".") {
            return Err("the upstream's base path has no `//`, `.` or `..` segments".into());
        }
        Ok(Target {
            tls,
            host: host.to_owned(),
            port,
            base: base.to_owned(),
        })
    }
}

/// Whether `ip` is somewhere an upstream may not be without `allow_private`.
pub(crate) fn is_special(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10, carrier-grade NAT
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0/24
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18/15
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_special(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64 (embeds an IPv4 address)
                || s[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible
        }
    }
}

/// Why an exchange failed, and what that says about whether the upstream acted on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Failure {
    /// No connection was made (refused, unreachable, DNS, a refused address, TLS): the request
    /// was not sent.
    #[error("upstream not reached: {0}")]
    NotSent(String),
    /// The deadline passed after the request may have been sent: outcome unknown.
    #[error("upstream timed out")]
    TimedOut,
    /// The connection broke or the response was cut short after the request was sent:
    /// outcome unknown.
    #[error("upstream response incomplete: {0}")]
    Broken(String),
    /// The response body is larger than the route allows.
    #[error("upstream response larger than the route's limit")]
    TooLarge,
}

/// The status and the header names, never the body or header values (an upstream may echo
/// what it was sent).
impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl Failure {
    /// Whether the upstream may have acted on the request.
    pub(crate) fn maybe_sent(&self) -> bool {
        !matches!(self, Failure::NotSent(_))
    }
}

/// A response read whole.
pub(crate) struct Answer {
    pub(crate) status: http::StatusCode,
    pub(crate) headers: http::HeaderMap,
    /// Wiped on drop: an upstream may echo what it was sent.
    pub(crate) body: Zeroizing<Vec<u8>>,
}

/// A client for one route's upstream.
#[derive(Clone)]
pub(crate) struct Client {
    pub(crate) target: Target,
    allow_private: bool,
    tls: Option<tokio_rustls::TlsConnector>,
    max_body: usize,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `target`, trusting the PEM roots in `ca` (else the system's).
    pub(crate) fn new(
        target: Target,
        ca: Option<&std::path::Path>,
        allow_private: bool,
        max_body: usize,
    ) -> Result<Client, String> {
        let tls = if target.tls {
            let mut roots = rustls::RootCertStore::empty();
            match ca {
                Some(path) => {
                    let pem = std::fs::read(path)
                        .map_err(|e| format!("reading {}: {e}", path.display()))?;
                    for c in CertificateDer::pem_slice_iter(&pem) {
                        let c = c.map_err(|e| format!("{}: {e}", path.display()))?;
                        roots
                            .add(c)
                            .map_err(|e| format!("{}: {e}", path.display()))?;
                    }
                }
                None => {
                    let found = rustls_native_certs::load_native_certs();
                    for c in found.certs {
                        let _ = roots.add(c);
                    }
                }
            }
            if roots.is_empty() {
                return Err("no trusted roots for the upstream's certificate".into());
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
        } else {
            None
        };
        Ok(Client {
            target,
            allow_private,
            tls,
            max_body,
        })
    }

    async fn addresses(&self) -> Result<Vec<SocketAddr>, Failure> {
        let addrs: Vec<SocketAddr> =
            tokio::net::lookup_host((self.target.host.as_str(), self.target.port))
                .await
                .map_err(|e| Failure::NotSent(format!("resolving the upstream: {e}")))?
                .collect();
        let allowed: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| self.allow_private || !is_special(a.ip()))
            .collect();
        if allowed.is_empty() {
            return Err(Failure::NotSent(if addrs.is_empty() {
                "the upstream's name has no address".into()
            } else {
                "the upstream resolves only to private or special addresses (allow_private is off)"
                    .into()
            }));
        }
        Ok(allowed)
    }

    /// Send one request (its path and query relative to the base) and read the response, all
    /// before `deadline`.
    pub(crate) async fn exchange(
        &self,
        method: http::Method,
        path_and_query: &str,
        headers: http::HeaderMap,
        body: Bytes,
        deadline: Instant,
    ) -> Result<Answer, Failure> {
        let sent = std::sync::atomic::AtomicBool::new(false);
        let work = self.exchange_inner(method, path_and_query, headers, body, &sent);
        match tokio::time::timeout_at(deadline.into(), work).await {
            Ok(r) => r,
            Err(_) if sent.load(std::sync::atomic::Ordering::SeqCst) => Err(Failure::TimedOut),
            Err(_) => Err(Failure::NotSent("timed out connecting".into())),
        }
    }

    async fn exchange_inner(
        &self,
        method: http::Method,
        path_and_query: &str,
        mut headers: http::HeaderMap,
        body: Bytes,
        sent: &std::sync::atomic::AtomicBool,
    ) -> Result<Answer, Failure> {
        let addrs = self.addresses().await?;
        let mut last = String::from("no address");
        let mut tcp = None;
        for a in addrs {
            match TcpStream::connect(a).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = format!("connecting: {e}"),
            }
        }
        let tcp = tcp.ok_or(Failure::NotSent(last))?;
        let _ = tcp.set_nodelay(true);
        let host = if (self.target.tls && self.target.port == 443)
            || (!self.target.tls && self.target.port == 80)
        {
            self.target.host.clone()
        } else {
            format!("{}:{}", self.target.host, self.target.port)
        };
        headers.insert(
            http::header::HOST,
            http::HeaderValue::from_str(&host)
                .map_err(|_| Failure::NotSent("the upstream's host is not a header".into()))?,
        );
        let uri: http::Uri = format!("{}{}", self.target.base, path_and_query)
            .parse()
            .map_err(|_| Failure::NotSent("the request path is not a valid URI".into()))?;
        let mut req = http::Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        let response = match &self.tls {
            None => send(TokioIo::new(tcp), req, sent).await?,
            Some(connector) => {
                let name = ServerName::try_from(self.target.host.clone()).map_err(|_| {
                    Failure::NotSent("the upstream's host is not a TLS name".into())
                })?;
                let stream = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| Failure::NotSent(format!("TLS: {e}")))?;
                send(TokioIo::new(stream), req, sent).await?
            }
        };
        let (parts, incoming) = response.into_parts();
        let collected = Limited::new(incoming, self.max_body)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    Failure::TooLarge
                } else {
                    Failure::Broken(e.to_string())
                }
            })?;
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body: Zeroizing::new(collected.to_bytes().to_vec()),
        })
    }
}

async fn send<T>(
    io: T,
    req: http::Request<Full<Bytes>>,
    sent: &std::sync::atomic::AtomicBool,
) -> Result<http::Response<hyper::body::Incoming>, Failure>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| Failure::NotSent(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sent.store(true, std::sync::atomic::Ordering::SeqCst);
    sender
        .send_request(req)
        .await
        .map_err(|e| Failure::Broken(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_strictly() {
        let t = Target::parse("https://psp.example:8443/v1/").unwrap();
        assert!(t.tls && t.host == "psp.example" && t.port == 8443 && t.base == "/v1");
        let t = Target::parse("http://[::1]:9000").unwrap();
        assert!(t.host == "::1" && t.port == 9000);
        for bad in [
            "ftp://x",
            "https://user@x",
            "https://x/?q",
            "https://x/a/../b",
            "https://:80",
            "https://x:port",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn special_addresses() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(is_special(a.parse().unwrap()), "{a}");
        }
        for a in ["8.8.8.8", "2606:4700::1111"] {
            assert!(!is_special(a.parse().unwrap()), "{a}");
        }
    }
}
