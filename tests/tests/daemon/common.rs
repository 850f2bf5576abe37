//! The harness: a test PKI made with rcgen, the real daemon started in-process on
//! `127.0.0.1:0` with real TLS, and tonic clients for each test identity.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request};
use vault_daemon::audit::{self, Filter};
use vault_daemon::config::{Config, TestHooks, Tls};
use vault_daemon::{Running, spawn};
use vault_proto::v1::admin_client::AdminClient;
use vault_proto::v1::tokenizer_client::TokenizerClient;
use vault_proto::v1::{
    DetokenizeRequest, ErrorCode, TokenizeRequest, TokenizeResponse, detokenize_result,
    tokenize_result,
};

/// The well-known Visa test card number (Luhn-valid).
pub(crate) const PAN: &str = "4111111111111111";

/// The policy every daemon of these tests loads (the issuer's key file is added in front).
pub(crate) const POLICY: &str = r#"
[roles.helpdesk]
[[roles.helpdesk.grants]]
scopes = ["reveal:pan_vault"]
require_end_user = true
end_user_issuer = "corp"
subject_matches_metadata = "owner"
require_purpose = true

[callers."spiffe://test.example/helpdesk"]
roles = ["helpdesk"]

# Detokenizes for an end user, who must own each record (the timing test).
[roles.agent]
[[roles.agent.grants]]
scopes = ["detokenize:pan_vault"]
require_end_user = true
end_user_issuer = "corp"
subject_matches_metadata = "owner"
require_purpose = true

[callers."spiffe://test.example/agent"]
roles = ["agent"]
[roles.checkout]
[[roles.checkout.grants]]
scopes = ["tokenize:*"]
rate = "100000/s"

[roles.payments]
[[roles.payments.grants]]
scopes = ["tokenize:pan", "detokenize:pan", "tokenize:pan_vault", "detokenize:pan_vault"]

[roles.support]
[[roles.support.grants]]
scopes = ["reveal:pan", "reveal:pan_vault"]

[roles.ops]
[[roles.ops.grants]]
scopes = ["admin:keys", "admin:audit", "admin:callers", "delete:*"]

[roles.all]
[[roles.all.grants]]
scopes = ["tokenize:*", "detokenize:*", "reveal:*", "delete:*", "admin:keys", "admin:audit", "admin:callers"]
rate = "1000000/s"

[callers."spiffe://test.example/checkout"]
roles = ["checkout"]

[callers."spiffe://test.example/payments"]
roles = ["payments"]

[callers."cn:support-tool"]
roles = ["support"]

[callers."spiffe://test.example/all"]
roles = ["all"]
"#;

/// PEM files of the test PKI.
pub(crate) struct Pki {
    pub(crate) ca: String,
    pub(crate) server: (String, String),
    pub(crate) clients: HashMap<&'static str, (String, String)>,
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    cn: &str,
    sans: Vec<SanType>,
    eku: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.subject_alt_names = sans;
    p.extended_key_usages = vec![eku];
    let cert = p.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let cert = p.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(p, key))
}

fn uri(u: &str) -> SanType {
    SanType::URI(u.try_into().unwrap())
}

/// The PKI, generated once per test binary.
pub(crate) fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let (ca_pem, issuer) = ca("vault test CA");
        let (_, other) = ca("some other CA");
        let server = leaf(
            &issuer,
            "vault server",
            vec![
                SanType::DnsName("localhost".try_into().unwrap()),
                SanType::IpAddress("127.0.0.1".parse().unwrap()),
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = ExtendedKeyUsagePurpose::ClientAuth;
        let mut clients = HashMap::new();
        for name in ["checkout", "payments", "all", "helpdesk", "agent"] {
            clients.insert(
                name,
                leaf(
                    &issuer,
                    name,
                    vec![uri(&format!("spiffe://test.example/{name}"))],
                    client.clone(),
                ),
            );
        }
        clients.insert(
            "support",
            leaf(&issuer, "support-tool", vec![], client.clone()),
        );
        clients.insert(
            "two-spiffe",
            leaf(
                &issuer,
                "two",
                vec![
                    uri("spiffe://test.example/all"),
                    uri("spiffe://test.example/checkout"),
                ],
                client.clone(),
            ),
        );
        clients.insert(
            "other-ca",
            leaf(
                &other,
                "intruder",
                vec![uri("spiffe://test.example/all")],
                client,
            ),
        );
        Pki {
            ca: ca_pem,
            server,
            clients,
        }
    })
}

/// A rustls client config trusting the test CA, with the named client certificate (`None`:
/// none) and one ALPN protocol.
pub(crate) fn client_tls(cert: Option<&str>, alpn: &[u8]) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pki = pki();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pki.ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
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
    cfg.alpn_protocols = vec![alpn.to_vec()];
    cfg
}

/// A running daemon and its data directory.
pub(crate) struct Daemon {
    pub(crate) running: Option<Running>,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) tls: bool,
}

/// A config for a TLS daemon in a fresh data dir: mTLS, the test policy, the built-in
/// templates, created on first start with a root key file.
pub(crate) fn config(dir: &std::path::Path) -> Config {
    let pki = pki();
    let w = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let mut cfg = Config::dev(dir.join("data"));
    cfg.dev = false;
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.allow_plaintext_loopback = false;
    cfg.reflection = false;
    let issuer = format!(
        "[issuers.corp]\nissuer = \"https://id.example.com\"\naudience = \"vault\"\n\
         keys = [{{ algorithm = \"RS256\", kid = \"corp-1\", pem_file = \"{}\" }}]\n",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../vault-daemon/examples/end-user-rs256.pub.pem"
        )
    );
    cfg.policy = Some(w("policy.toml", &format!("{issuer}{POLICY}")));
    cfg.tls = Some(Tls {
        cert: w("server.pem", &pki.server.0),
        key: w("server.key", &pki.server.1),
        client_ca: Some(w("ca.pem", &pki.ca)),
    });
    cfg.limits.health_probe_interval_ms = 50;
    cfg.limits.drain_timeout_secs = 5;
    cfg.audit.checkpoint_every = 10;
    cfg.testing = TestHooks::default();
    cfg
}

impl Daemon {
    /// Start with the test config, adjusted by `f`.
    pub(crate) async fn start(f: impl FnOnce(&mut Config)) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        f(&mut cfg);
        Daemon::start_in(dir, cfg).await
    }

    /// A dev-mode daemon (plaintext loopback, the dev API key allowed every scope) with `f`
    /// applied to its config, and that key.
    pub(crate) async fn start_dev(f: impl FnOnce(&mut Config)) -> (Daemon, String) {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::dev(dir.path().join("data"));
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        f(&mut cfg);
        let d = Daemon::start_in(dir, cfg).await;
        let key = d
            .running
            .as_ref()
            .unwrap()
            .dev_api_key()
            .unwrap()
            .to_owned();
        (d, key)
    }

    pub(crate) async fn start_in(dir: tempfile::TempDir, cfg: Config) -> Daemon {
        let tls = cfg.tls.is_some();
        let running = spawn(cfg).await.unwrap();
        Daemon {
            addr: running.addr(),
            running: Some(running),
            dir,
            tls,
        }
    }

    pub(crate) fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn endpoint(&self) -> Endpoint {
        let scheme = if self.tls { "https" } else { "http" };
        Endpoint::from_shared(format!("{scheme}://{}", self.addr))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
    }

    /// A channel authenticated by the named client certificate (`None`: no certificate).
    pub(crate) async fn try_channel(
        &self,
        cert: Option<&str>,
    ) -> Result<Channel, tonic::transport::Error> {
        let mut ep = self.endpoint();
        if self.tls {
            let pki = pki();
            let mut tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&pki.ca))
                .domain_name("localhost");
            if let Some(name) = cert {
                let (c, k) = &pki.clients[name];
                tls = tls.identity(Identity::from_pem(c, k));
            }
            ep = ep.tls_config(tls).unwrap();
        }
        ep.connect().await
    }

    pub(crate) async fn channel(&self, cert: Option<&str>) -> Channel {
        self.try_channel(cert).await.unwrap()
    }

    pub(crate) async fn tokenizer(&self, cert: Option<&str>) -> TokenizerClient<Channel> {
        TokenizerClient::new(self.channel(cert).await)
    }

    pub(crate) async fn admin(&self, cert: Option<&str>) -> AdminClient<Channel> {
        AdminClient::new(self.channel(cert).await)
    }

    /// Stop, draining; returns whether the drain finished in time.
    pub(crate) async fn stop(&mut self) -> bool {
        match self.running.take() {
            Some(r) => r.shutdown().await,
            None => true,
        }
    }
}

/// A request with an optional API key.
pub(crate) fn req<T>(msg: T, key: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(k) = key {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {k}").parse().unwrap());
    }
    r
}

pub(crate) fn tokenize_req(template: &str, values: &[&str]) -> TokenizeRequest {
    vault_test_support::tokenize_request(template, values.iter().copied())
}

pub(crate) fn detokenize_req(
    template: &str,
    tokens: &[String],
    purpose: &str,
) -> DetokenizeRequest {
    vault_test_support::detokenize_request(template, tokens, purpose)
}

/// Tokenize values (every item must succeed) and return the tokens.
pub(crate) async fn tokenize(
    c: &mut TokenizerClient<Channel>,
    key: Option<&str>,
    template: &str,
    values: &[&str],
) -> Vec<String> {
    let resp = c
        .tokenize(req(tokenize_req(template, values), key))
        .await
        .unwrap()
        .into_inner();
    resp.results
        .into_iter()
        .map(|r| match r.outcome.unwrap() {
            tokenize_result::Outcome::Token(t) => t.token,
            tokenize_result::Outcome::Error(e) => panic!("{template}: item error {e:?}"),
        })
        .collect()
}

/// Detokenize tokens (every item must succeed) and return the values.
pub(crate) async fn detokenize(
    c: &mut TokenizerClient<Channel>,
    key: Option<&str>,
    template: &str,
    tokens: &[String],
) -> Vec<String> {
    let resp = c
        .detokenize(req(detokenize_req(template, tokens, "test"), key))
        .await
        .unwrap()
        .into_inner();
    resp.results
        .into_iter()
        .map(|r| match r.outcome.unwrap() {
            detokenize_result::Outcome::Value(v) => v.value,
            detokenize_result::Outcome::Error(e) => panic!("{template}: item error {e:?}"),
        })
        .collect()
}

/// The code of a call's result (OK for success).
pub(crate) fn code<T>(r: &Result<T, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

/// Per item: the token and `existing`, or the item error's code.
pub(crate) fn outcomes(resp: TokenizeResponse) -> Vec<Result<(String, bool), (ErrorCode, String)>> {
    resp.results
        .into_iter()
        .map(|r| match r.outcome.unwrap() {
            tokenize_result::Outcome::Token(t) => Ok((t.token, t.existing)),
            tokenize_result::Outcome::Error(e) => Err((e.code(), e.message)),
        })
        .collect()
}

/// The audit events of one request id, in order.
pub(crate) fn events_of(d: &Daemon, request_id: &str) -> Vec<audit::Record> {
    audit::query(
        &d.data().join(audit::LOG_FILE),
        &Filter {
            request_id: Some(request_id.into()),
            ..Filter::default()
        },
    )
    .unwrap()
}

/// Records stored in the daemon's SQLite file.
pub(crate) fn records(d: &Daemon) -> i64 {
    let c = rusqlite::Connection::open_with_flags(
        d.data().join("vault.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    c.query_row("SELECT count(*) FROM records", [], |r| r.get(0))
        .unwrap()
}
