//! The proxy end to end: a daemon with an inbound route in front of a fake merchant service
//! and an outbound route in front of a fake payment processor (TLS, the test CA), both fakes
//! written here on raw sockets, so a test decides byte by byte what an upstream answers (a
//! hang, a body cut short) and sees byte by byte what reached it (a smuggled request).

mod checkout;
mod degrade;
mod routes_hostile;
mod volatile;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use vault_test_support::contains_word;

use super::common::{Daemon, pki};

/// A card number, an expiry and a code the canary scans look for.
pub(crate) const CARD: &str = "4111111111111111";
pub(crate) const CVV: &str = "7391";

/// What the route policy adds to the suite's: the inbound route tokenizes cards and codes,
/// the outbound route reveals them for payments (and tokenizes what the processor echoes).
pub(crate) const ROUTE_POLICY: &str = r#"
[roles.shop_route]
[[roles.shop_route.grants]]
scopes = ["tokenize:pan_vault", "tokenize:cvv"]

[roles.psp_route]
[[roles.psp_route.grants]]
scopes = ["detokenize:pan_vault", "detokenize:cvv", "tokenize:pan_vault"]
require_purpose = true

[callers."route:shop"]
roles = ["shop_route"]

[callers."route:psp"]
roles = ["psp_route"]
"#;

/// What a fake upstream does with a request.
#[derive(Clone, Debug)]
pub(crate) enum Mode {
    /// Answer this status and JSON body.
    Json(u16, String),
    /// Answer 200 with the request's body (an upstream that echoes what it was sent).
    Echo,
    /// Never answer.
    Hang,
    /// Send the head and a few bytes, then stall.
    Stall,
    /// Promise 100 bytes, send 10, close.
    Truncate,
    /// Answer 503 this many times, then the mode after.
    FailFirst(u32, Box<Mode>),
    /// Write these bytes as the whole answer.
    Raw(&'static str),
}

/// A request a fake upstream read.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) head: String,
    pub(crate) body: Vec<u8>,
    /// Bytes after the request on its connection (a smuggled second request).
    pub(crate) leftover: Vec<u8>,
}

impl Seen {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// A fake upstream on loopback.
pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    pub(crate) seen: Arc<Mutex<Vec<Seen>>>,
    pub(crate) mode: Arc<Mutex<Mode>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Plain HTTP (`tls: false`) or TLS with the test server certificate.
    pub(crate) async fn start(mode: Mode, tls: bool) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mode = Arc::new(Mutex::new(mode));
        let acceptor = tls.then(|| {
            let pki = pki();
            let chain = CertificateDer::pem_slice_iter(pki.server.0.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(pki.server.1.as_bytes()).unwrap();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let cfg = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
        });
        let (s, m) = (Arc::clone(&seen), Arc::clone(&mode));
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (s, m, acceptor) = (Arc::clone(&s), Arc::clone(&m), acceptor.clone());
                tokio::spawn(async move {
                    match acceptor {
                        None => serve_one(tcp, s, m).await,
                        Some(a) => {
                            if let Ok(t) = a.accept(tcp).await {
                                serve_one(t, s, m).await;
                            }
                        }
                    }
                });
            }
        });
        Upstream {
            addr,
            seen,
            mode,
            task,
        }
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub(crate) fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .skip(1)
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// Read one request, record it, answer by the mode, close.
async fn serve_one<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    seen: Arc<Mutex<Vec<Seen>>>,
    mode: Arc<Mutex<Mode>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len = content_length(&head);
    while buf.len() < head_end + len {
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    // Anything more the peer sent right behind the request (a smuggled one).
    if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(20), io.read(&mut chunk)).await {
        buf.extend_from_slice(&chunk[..n]);
    }
    let end = (head_end + len).min(buf.len());
    let body = buf[head_end..end].to_vec();
    seen.lock().unwrap().push(Seen {
        head,
        body: body.clone(),
        leftover: buf[end..].to_vec(),
    });
    let mut m = mode.lock().unwrap().clone();
    if let Mode::FailFirst(n, next) = &m {
        let now = if *n > 0 {
            Mode::FailFirst(n - 1, next.clone())
        } else {
            (**next).clone()
        };
        *mode.lock().unwrap() = now;
        m = if *n > 0 {
            Mode::Json(503, r#"{"error":"try later"}"#.into())
        } else {
            (**next).clone()
        };
    }
    let reply = |status: u16, body: &[u8]| {
        let mut r = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    match m {
        Mode::Json(status, text) => {
            let _ = io.write_all(&reply(status, text.as_bytes())).await;
        }
        Mode::Echo => {
            let _ = io.write_all(&reply(200, &body)).await;
        }
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        Mode::Stall => {
            let _ = io
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123")
                .await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        Mode::Truncate => {
            let _ = io
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
                .await;
        }
        Mode::Raw(bytes) => {
            let _ = io.write_all(bytes.as_bytes()).await;
        }
        Mode::FailFirst(..) => {}
    }
    let _ = io.flush().await;
    let _ = io.shutdown().await;
}

/// An HTTP answer as a raw client read it.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) head: String,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, self.text()))
    }
}

/// Send raw request bytes (which should say `connection: close`) and read the answer; over
/// TLS with the named client certificate when `cert` is `Some` (`Some(None)`: TLS, no
/// certificate).
pub(crate) async fn raw(addr: SocketAddr, cert: Option<Option<&str>>, request: &[u8]) -> Reply {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let out = match cert {
        None => exchange(tcp, request).await,
        Some(cert) => {
            let cfg = crate::common::client_tls(cert, b"http/1.1");
            let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            exchange(tls, request).await
        }
    };
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(out.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&out[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        head,
        body: out[end..].to_vec(),
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, request: &[u8]) -> Vec<u8> {
    io.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), io.read_to_end(&mut out)).await;
    out
}

/// A request with a JSON body.
pub(crate) fn post(path: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nhost: shop.example\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{extra_headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The route config of these tests: the inbound route `shop` in front of `merchant`, the
/// outbound route `psp` (mTLS for the checkout service, or its API key) in front of `psp`.
pub(crate) fn routes(
    dir: &std::path::Path,
    merchant: SocketAddr,
    psp: SocketAddr,
    extra: &str,
) -> String {
    let ca = dir.join("ca.pem");
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    format!(
        r#"
[[inbound]]
name = "shop"
listen = "127.0.0.1:0"
upstream = "http://{merchant}"
allow_private = true
timeout_ms = 3000
[[inbound.rules]]
name = "pay"
method = "POST"
path = "/pay"
content_type = "application/json"
fields = [{{ json = "$.card.number", template = "pan_vault" }}, {{ json = "$.card.cvv", template = "cvv" }}]
response = [{{ json = "$.card.number", template = "pan_vault" }}]
[[inbound.rules]]
name = "form"
method = "POST"
path = "/pay-form"
content_type = "application/x-www-form-urlencoded"
fields = [{{ form = "card", template = "pan_vault" }}, {{ header = "x-card-cvv", template = "cvv" }}]

[[outbound]]
name = "psp"
listen = "127.0.0.1:0"
tls = {{ cert = "{cert}", key = "{key}", client_ca = "{ca}" }}
upstream = "https://localhost:{port}/v1"
upstream_ca = "{ca}"
allow_private = true
purpose = "payment authorization"
callers = ["spiffe://test.example/checkout", "key:merchant"]
timeout_ms = 1500
{extra}
[[outbound.rules]]
name = "charge"
method = "POST"
path = "/charges"
content_type = "application/json"
fields = [{{ json = "$.card.number", template = "pan_vault" }}, {{ json = "$.card.cvv", template = "cvv" }}]
"#,
        cert = cert.display(),
        key = key.display(),
        ca = ca.display(),
        port = psp.port(),
    )
}

/// A daemon of the suite's config with the route policy and `routes` (TOML of `[proxy]`).
pub(crate) async fn daemon_with(routes_toml: impl FnOnce(&std::path::Path) -> String) -> Daemon {
    daemon_with_config(routes_toml, |_| {}).await
}

/// [`daemon_with`], and `f` applied to the config.
pub(crate) async fn daemon_with_config(
    routes_toml: impl FnOnce(&std::path::Path) -> String,
    f: impl FnOnce(&mut vault_daemon::Config),
) -> Daemon {
    Daemon::start(|cfg| {
        f(cfg);
        let dir = cfg.policy.as_ref().unwrap().parent().unwrap().to_owned();
        let policy = cfg.policy.clone().unwrap();
        let text = std::fs::read_to_string(&policy).unwrap();
        std::fs::write(&policy, format!("{text}{ROUTE_POLICY}")).unwrap();
        cfg.proxy = toml::from_str(&routes_toml(&dir)).unwrap();
    })
    .await
}

impl Daemon {
    pub(crate) fn route(&self, name: &str) -> SocketAddr {
        self.running.as_ref().unwrap().proxy_addr(name).unwrap()
    }
}

/// Every event in the daemon's audit log.
pub(crate) fn events(d: &Daemon) -> Vec<vault_daemon::audit::Event> {
    vault_daemon::audit::query(
        &d.data().join(vault_daemon::audit::LOG_FILE),
        &vault_daemon::audit::Filter::default(),
    )
    .unwrap()
    .into_iter()
    .map(|r| r.event)
    .collect()
}

/// No file the daemon wrote holds the card or the code.
pub(crate) fn assert_canary_clean(d: &Daemon) {
    for path in vault_test_support::files_under(&d.data()) {
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !contains_word(&bytes, CARD.as_bytes()),
            "card number in {}",
            path.display()
        );
        assert!(
            !contains_word(&bytes, CVV.as_bytes()),
            "card code in {}",
            path.display()
        );
    }
}
