//! The client's configuration and the one HTTP/2 channel built from it.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretSlice, SecretString};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

use crate::breaker::BreakerPolicy;
use crate::error::Error;
use crate::retry::RetryPolicy;

/// The largest batch the client sends in one call unless told otherwise. The contract leaves
/// the server's bound to the server (`TokenizeRequest.items`); set [`Config::max_batch`] to the
/// daemon's configured limit if it is lower.
pub const DEFAULT_MAX_BATCH: usize = 1000;

/// How to reach and authenticate to the vault, and how patient to be.
///
/// ```no_run
/// # use std::time::Duration;
/// # use vault_client::{Config, VaultClient};
/// # async fn f() -> Result<(), vault_client::Error> {
/// let config = Config::new("http://127.0.0.1:8200")
///     .api_key(std::env::var("VAULT_API_KEY").unwrap_or_default().into())
///     .deadline(Duration::from_millis(500));
/// let client = VaultClient::connect(config).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Config {
    pub(crate) endpoint: String,
    pub(crate) api_key: Option<SecretString>,
    pub(crate) tls: Option<Tls>,
    pub(crate) insecure_plaintext: bool,
    pub(crate) connect_timeout: Duration,
    pub(crate) deadline: Duration,
    pub(crate) max_batch: usize,
    pub(crate) retry: RetryPolicy,
    pub(crate) breaker: BreakerPolicy,
    pub(crate) deterministic_templates: BTreeSet<String>,
    pub(crate) auto_idempotency_keys: bool,
}

impl Config {
    /// A configuration for the daemon at `endpoint` (`https://host:port`, or `http://` for a
    /// daemon on this machine), with the defaults: 5 s deadline per call, 5 s connect timeout,
    /// batches of at most [`DEFAULT_MAX_BATCH`], [`RetryPolicy::default`],
    /// [`BreakerPolicy::default`], no template marked deterministic, no automatic idempotency
    /// keys.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            api_key: None,
            tls: None,
            insecure_plaintext: false,
            connect_timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(5),
            max_batch: DEFAULT_MAX_BATCH,
            retry: RetryPolicy::default(),
            breaker: BreakerPolicy::default(),
            deterministic_templates: BTreeSet::new(),
            auto_idempotency_keys: false,
        }
    }

    /// Authenticates every call with this API key (`authorization: Bearer <key>`).
    pub fn api_key(mut self, key: SecretString) -> Self {
        self.api_key = Some(key);
        self
    }

    /// Uses TLS (and mTLS when the [`Tls`] has an identity). Needs an `https://` endpoint.
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Allows plaintext HTTP to a host that is not a loopback address. Values, tokens and the
    /// API key then cross the network in the clear: only for test networks.
    pub fn insecure_plaintext(mut self, allow: bool) -> Self {
        self.insecure_plaintext = allow;
        self
    }

    /// The time limit for establishing the connection.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The default deadline of a call, retries and backoff included (override it per call with
    /// [`crate::CallOptions::deadline`]).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The most items sent in one call; larger batches are split into chunks of this size.
    /// Values below 1 are treated as 1.
    pub fn max_batch(mut self, max: usize) -> Self {
        self.max_batch = max.max(1);
        self
    }

    /// When and how often safe calls are retried.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// When the circuit breaker opens and how long it stays open.
    pub fn breaker(mut self, policy: BreakerPolicy) -> Self {
        self.breaker = policy;
        self
    }

    /// Declares that `template` tokenizes deterministically (the same value always gives the
    /// same token), which makes its `tokenize` calls safe to retry. Declare only templates the
    /// daemon's configuration makes deterministic: a wrong declaration can mint two tokens for
    /// one value on a retry.
    pub fn deterministic_template(mut self, template: impl Into<String>) -> Self {
        self.deterministic_templates.insert(template.into());
        self
    }

    /// Gives every tokenize item that has no idempotency key a random one, so every tokenize
    /// call is safe to retry. The key lives only for the call's retries.
    pub fn auto_idempotency_keys(mut self, enabled: bool) -> Self {
        self.auto_idempotency_keys = enabled;
        self
    }

    /// Builds the channel: parses the endpoint, refuses plaintext to a remote host, applies TLS.
    pub(crate) fn endpoint(&self) -> Result<Endpoint, Error> {
        let mut endpoint =
            Endpoint::from_shared(self.endpoint.clone()).map_err(|_| Error::Config {
                message: "the endpoint is not a valid URI".into(),
            })?;
        endpoint = endpoint
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        let https = endpoint.uri().scheme_str() == Some("https");
        match (&self.tls, https) {
            (Some(tls), true) => {
                endpoint = endpoint
                    .tls_config(tls.client_config())
                    .map_err(Error::Transport)?;
            }
            (Some(_), false) => {
                return Err(Error::Config {
                    message: "TLS is configured but the endpoint is not https://".into(),
                });
            }
            (None, true) => {
                return Err(Error::Config {
                    message: "an https:// endpoint needs a TLS configuration (CA certificate)"
                        .into(),
                });
            }
            (None, false) => {
                let loopback = endpoint.uri().host().is_some_and(is_loopback);
                if !loopback && !self.insecure_plaintext {
                    return Err(Error::Config {
                        message: "refusing plaintext HTTP to a non-loopback host; configure TLS \
                                  or allow insecure_plaintext"
                            .into(),
                    });
                }
            }
        }
        Ok(endpoint)
    }

    pub(crate) fn auth(&self) -> Result<Auth, Error> {
        let header = match &self.api_key {
            None => None,
            Some(key) => {
                let mut value: AsciiMetadataValue = MetadataValue::try_from(format!(
                    "Bearer {}",
                    key.expose_secret()
                ))
                .map_err(|_| Error::Config {
                    message: "the API key contains characters not allowed in a header".into(),
                })?;
                // Keeps the header out of `http`'s Debug output and HPACK's dynamic table.
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(Auth { header })
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("endpoint", &self.endpoint)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("insecure_plaintext", &self.insecure_plaintext)
            .field("connect_timeout", &self.connect_timeout)
            .field("deadline", &self.deadline)
            .field("max_batch", &self.max_batch)
            .field("retry", &self.retry)
            .field("breaker", &self.breaker)
            .field("deterministic_templates", &self.deterministic_templates)
            .field("auto_idempotency_keys", &self.auto_idempotency_keys)
            .finish_non_exhaustive()
    }
}

/// TLS settings (rustls): the CA that signed the daemon's certificate and, for mTLS, the
/// client's certificate and private key, all PEM.
#[derive(Clone)]
pub struct Tls {
    ca_pem: Vec<u8>,
    identity: Option<(Vec<u8>, SecretSlice<u8>)>,
    domain_name: Option<String>,
}

impl Tls {
    /// Trusts the CA certificate(s) in `ca_pem` (and no others) for the daemon's certificate.
    pub fn new(ca_pem: impl Into<Vec<u8>>) -> Self {
        Self {
            ca_pem: ca_pem.into(),
            identity: None,
            domain_name: None,
        }
    }

    /// Presents this certificate chain and private key (PEM) to the daemon (mTLS).
    pub fn identity(mut self, cert_pem: impl Into<Vec<u8>>, key_pem: SecretSlice<u8>) -> Self {
        self.identity = Some((cert_pem.into(), key_pem));
        self
    }

    /// Verifies the daemon's certificate for this name instead of the endpoint's host.
    pub fn domain_name(mut self, name: impl Into<String>) -> Self {
        self.domain_name = Some(name.into());
        self
    }

    fn client_config(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.identity {
            // tonic copies the key into its own buffer for rustls; ours is zeroized on drop.
            config = config.identity(Identity::from_pem(cert, key.expose_secret()));
        }
        if let Some(name) = &self.domain_name {
            config = config.domain_name(name.clone());
        }
        config
    }
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("ca_pem_len", &self.ca_pem.len())
            .field("client_identity", &self.identity.is_some())
            .field("domain_name", &self.domain_name)
            .finish_non_exhaustive()
    }
}

/// Adds the API key to every request's metadata.
#[derive(Clone)]
pub(crate) struct Auth {
    header: Option<AsciiMetadataValue>,
}

impl Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("api_key", &self.header.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The channel every clone of a client shares.
pub(crate) fn channel(config: &Config, lazy: bool) -> impl Future<Output = Result<Channel, Error>> {
    let endpoint = config.endpoint();
    async move {
        let endpoint = endpoint?;
        if lazy {
            Ok(endpoint.connect_lazy())
        } else {
            endpoint.connect().await.map_err(Error::Transport)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_api_key_or_private_key() {
        let config = Config::new("https://vault.internal:8200")
            .api_key("vk_live_SUPERSECRET".into())
            .tls(Tls::new(b"CA PEM".to_vec()).identity(
                b"CERT PEM".to_vec(),
                b"-----BEGIN PRIVATE KEY----- KEYBYTES".to_vec().into(),
            ));
        let debug = format!("{config:?}");
        assert!(!debug.contains("SUPERSECRET"), "{debug}");
        assert!(!debug.contains("KEYBYTES"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        let auth = config.auth().unwrap();
        let debug = format!("{auth:?}");
        assert!(!debug.contains("SUPERSECRET"), "{debug}");
    }

    #[test]
    fn auth_header_is_bearer_and_sensitive() {
        let config = Config::new("http://127.0.0.1:1").api_key("k123".into());
        let mut auth = config.auth().unwrap();
        let request = auth.call(Request::new(())).unwrap();
        let value = request.metadata().get("authorization").unwrap();
        assert_eq!(value.to_str().unwrap(), "Bearer k123");
        assert!(value.is_sensitive());
        assert!(!format!("{:?}", request.metadata()).contains("k123"));
        assert!(
            Config::new("http://127.0.0.1:1")
                .api_key("bad\nkey".into())
                .auth()
                .is_err()
        );
    }

    #[test]
    fn plaintext_only_to_loopback_unless_allowed() {
        for ok in [
            "http://127.0.0.1:8200",
            "http://localhost:8200",
            "http://[::1]:8200",
        ] {
            assert!(Config::new(ok).endpoint().is_ok(), "{ok}");
        }
        let remote = Config::new("http://vault.internal:8200");
        assert!(matches!(remote.endpoint(), Err(Error::Config { .. })));
        assert!(remote.insecure_plaintext(true).endpoint().is_ok());
        assert!(matches!(
            Config::new("https://vault.internal:8200").endpoint(),
            Err(Error::Config { .. })
        ));
        assert!(matches!(
            Config::new("http://127.0.0.1:1")
                .tls(Tls::new(Vec::new()))
                .endpoint(),
            Err(Error::Config { .. })
        ));
        assert!(matches!(
            Config::new("not a uri").endpoint(),
            Err(Error::Config { .. })
        ));
    }
}
