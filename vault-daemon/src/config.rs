//! The daemon's configuration: a TOML file (`vaultd serve --config vault.toml`), environment
//! overrides, and the embedded dev default (`vaultd serve --dev`).
//!
//! Why one struct for all three: the tests start the real server from a [`Config`] built in
//! code, `vaultd` builds the same struct from a file or from `--dev`, so both run exactly the
//! same start-up path ([`crate::server::spawn`]). See `examples/vault.toml` for every key.
//!
//! Environment overrides (applied after the file, before command-line flags):
//!
//! | variable | key |
//! |---|---|
//! | `VAULT_LISTEN` | `listen` |
//! | `VAULT_DATA_DIR` | `data_dir` |
//! | `VAULT_POLICY` | `policy` |
//! | `VAULT_ROOT_KEY_FILE` | `root_key_file` |
//! | `VAULT_TLS_CERT`, `VAULT_TLS_KEY`, `VAULT_TLS_CLIENT_CA` | `tls.cert`, `tls.key`, `tls.client_ca` |
//! | `VAULT_SYNCHRONOUS` | `synchronous` (`full` or `normal`) |
//! | `VAULT_DATABASE_URL` | `database.url` (`postgres://…`; unset: SQLite in `data_dir`) |
//! | `VAULT_DATABASE_SCHEMA` | `database.schema` |
//! | `VAULT_NODE_ID` | `cluster.node_id` |
//! | `VAULT_KEY_REFRESH_MS`, `VAULT_REWRAP_LEASE_MS` | `cluster.key_refresh_ms`, `cluster.rewrap_lease_ms` |
//! | `VAULT_MAX_CONCURRENT_CALLS` | `limits.max_concurrent_calls` |
//! | `VAULT_HTTP_READ_TIMEOUT_MS` | `limits.http_read_timeout_ms` |
//! | `VAULT_METRICS_LISTEN` | `metrics.listen` (also with `--dev`) |
//! | `VAULT_REFLECTION` | `reflection` (`true`/`false`) |
//! | `VAULT_LOG` | log filter (`info`, `vault_daemon=debug`), read by `vaultd` |

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use vault_core::store::Synchronous;

use crate::audit::FaultSwitch;

pub mod hsm;
pub mod proxy;
mod templates;
pub use self::templates::{TemplateSpec, builtin_templates};

/// Default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./vault-data";

/// Configuration errors, naming the file or key at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file does not parse.
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why (with line and column).
        message: String,
    },
    /// A key has an unusable value.
    #[error("{key}: {message}")]
    Invalid {
        /// The key (or environment variable).
        key: String,
        /// Why.
        message: String,
    },
}

pub(crate) fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// TLS files (PEM).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Server certificate chain.
    pub cert: PathBuf,
    /// Server private key.
    pub key: PathBuf,
    /// CA that signs client certificates. Without it, no mTLS: callers use API keys over TLS.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// Resource limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request or response message, bytes.
    pub max_message_bytes: usize,
    /// Most items in one Tokenizer call (at most the vault's own limit, 10,000).
    pub max_batch: usize,
    /// Calls served at once (Tokenizer and Admin); more are refused with RESOURCE_EXHAUSTED
    /// at once rather than queued.
    pub max_concurrent_calls: usize,
    /// How long shutdown waits for calls in flight, seconds.
    pub drain_timeout_secs: u64,
    /// How often health checking probes storage, milliseconds.
    pub health_probe_interval_ms: u64,
    /// How long before a client's deadline (`grpc-timeout`, counted from the request's
    /// arrival) the server gives up with DEADLINE_EXCEEDED, milliseconds: room for the answer
    /// to reach the client before it stops waiting. A call with less time left does no work.
    pub deadline_margin_ms: u64,
    /// How long an HTTP/1.1 client may take to send its request headers, and a Connect client
    /// its body, milliseconds: a client that trickles them is cut off (answered 408 when the
    /// headers were complete), not waited for.
    pub http_read_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 4 * 1024 * 1024,
            max_batch: 1000,
            max_concurrent_calls: 256,
            drain_timeout_secs: 10,
            health_probe_interval_ms: 5000,
            deadline_margin_ms: 5,
            http_read_timeout_ms: 10_000,
        }
    }
}

/// Audit log settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Audit {
    /// Signed checkpoint after this many events.
    pub checkpoint_every: u64,
    /// Signed checkpoint at least this often while events arrive, seconds.
    pub checkpoint_interval_secs: u64,
    /// Seal the active segment and start a new one at this size (0: one file forever).
    pub segment_max_bytes: u64,
    /// Also at this age, seconds (0: by size only).
    pub segment_max_age_secs: u64,
    /// A second sink events are copied to once durable (`[audit.ship]`).
    pub ship: Option<crate::audit::ship::ShipConfig>,
}

impl Default for Audit {
    fn default() -> Self {
        let d = crate::audit::Config::default();
        Audit {
            checkpoint_every: d.checkpoint_every,
            checkpoint_interval_secs: d.checkpoint_interval.as_secs(),
            segment_max_bytes: d.segment_bytes,
            segment_max_age_secs: 0,
            ship: None,
        }
    }
}

/// A database URL. Its `Debug` hides the password, so the config can be logged.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// A URL.
    pub fn new(url: impl Into<String>) -> DatabaseUrl {
        DatabaseUrl(url.into())
    }

    /// The URL, password included: for the store's connection only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL without its password: neither the one in the user part nor a `password=` query
    /// parameter (both are accepted by the driver).
    pub fn redacted(&self) -> String {
        let (base, query) = match self.0.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (self.0.as_str(), None),
        };
        let mut out = match (base.find("://"), base.rfind('@')) {
            (Some(s), Some(at)) if at > s => {
                let userinfo = &base[s + 3..at];
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{}{user}:***{}", &base[..s + 3], &base[at..])
            }
            _ => base.to_owned(),
        };
        if let Some(q) = query {
            let params: Vec<String> = q
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_owned(),
                })
                .collect();
            out.push('?');
            out.push_str(&params.join("&"));
        }
        out
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Storage. Without `url`, the vault is a SQLite file in `data_dir` (one daemon). With a
/// `postgres://` URL, several daemons serve one vault (ARCHITECTURE.md, "Many daemons").
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    /// `postgres://user:password@host:port/dbname[?sslmode=require]`.
    pub url: Option<DatabaseUrl>,
    /// Schema holding the vault's tables (created if missing); default: the URL's search path.
    pub schema: Option<String>,
    /// CA (PEM) that signs the database server's certificate, for `sslmode=require`.
    pub ca_file: Option<PathBuf>,
    /// Pooled connections per daemon.
    pub pool_size: usize,
}

impl Default for Database {
    fn default() -> Self {
        Database {
            url: None,
            schema: None,
            ca_file: None,
            pool_size: 16,
        }
    }
}

/// Settings for several daemons on one store.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cluster {
    /// This daemon's name as a rewrap-lease owner and in logs; default: generated once and
    /// kept in `<data_dir>/node-id`.
    pub node_id: Option<String>,
    /// At most this long before a key change made through another daemon is used here,
    /// milliseconds (the key-table generation is checked this often).
    pub key_refresh_ms: u64,
    /// A rewrap runner's lease: without a committed batch for this long, another daemon takes
    /// the job over, milliseconds.
    pub rewrap_lease_ms: u64,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            node_id: None,
            key_refresh_ms: 1000,
            rewrap_lease_ms: 30_000,
        }
    }
}

/// `[metrics]`: Prometheus text at `/metrics`, and `/livez`, `/readyz` for orchestrators, on
/// a listener of their own (plaintext: bind it to loopback or a private interface; it carries
/// no value, token or key, only counts and names of configured templates).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// Where to listen (`127.0.0.1:9464`); unset, no metrics listener.
    pub listen: Option<SocketAddr>,
}

/// Test-only knobs. Never set by `vaultd`; hidden from the docs so nobody mistakes them for
/// features.
#[doc(hidden)]
#[derive(Clone, Debug, Default)]
pub struct TestHooks {
    /// Makes audit appends fail while on.
    pub audit_fault: Option<FaultSwitch>,
    /// Every Tokenizer/Admin call sleeps this long after authorization (a "slow call" for the
    /// deadline, load-shedding and drain tests).
    pub call_delay: Option<Duration>,
    /// A disk that fills on demand (SQLite `max_page_count`) for the storage-failure tests.
    pub store_page_limit: Option<vault_core::store::PageLimit>,
}

/// Everything `spawn` needs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to listen. Port 0 picks a free port (the bound address is reported).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Vault database, audit log, caller registry.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Dev mode (set by `--dev`, not by the file).
    #[serde(skip)]
    pub dev: bool,
    /// TLS; without it only loopback plaintext is possible (dev, or `allow_plaintext_loopback`).
    #[serde(default)]
    pub tls: Option<Tls>,
    /// Allow plaintext on a loopback address outside dev mode.
    #[serde(default)]
    pub allow_plaintext_loopback: bool,
    /// The policy file (required outside dev mode; dev writes its own).
    #[serde(default)]
    pub policy: Option<PathBuf>,
    /// Raw root key file (0600/0400). Without it (or [`Config::hsm`]) the daemon starts sealed.
    #[serde(default)]
    pub root_key_file: Option<PathBuf>,
    /// The HSM that wraps the root key (`[hsm]`): a vault sealed that way unseals itself at
    /// start. Used only when the vault's seal method is `hsm`.
    #[serde(default)]
    pub hsm: Option<hsm::Hsm>,
    /// Create the vault (and a root key file, if missing) when the database does not exist.
    #[serde(default)]
    pub create_if_missing: bool,
    /// Templates; omitted means the built-in set.
    #[serde(default)]
    pub templates: Vec<TemplateSpec>,
    /// SQLite `synchronous`: `full` (default) or `normal`.
    #[serde(default = "default_sync", deserialize_with = "de_sync")]
    pub synchronous: Synchronous,
    /// Serve gRPC reflection (the dev default turns it on; `VAULT_REFLECTION=false` turns it
    /// off again).
    #[serde(default)]
    pub reflection: bool,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
    /// Audit log settings.
    #[serde(default)]
    pub audit: Audit,
    /// Storage (SQLite by default, or PostgreSQL).
    #[serde(default)]
    pub database: Database,
    /// Several daemons on one store.
    #[serde(default)]
    pub cluster: Cluster,
    /// The metrics and probes listener (off unless `listen` is set).
    #[serde(default)]
    pub metrics: Metrics,
    /// The HTTP proxy's routes (`[[proxy.inbound]]`, `[[proxy.outbound]]`).
    #[serde(default)]
    pub proxy: proxy::Proxy,
    /// Test-only knobs.
    #[doc(hidden)]
    #[serde(skip)]
    pub testing: TestHooks,
}

#[expect(
    clippy::expect_used,
    reason = "a literal socket address: parsed by every config test"
)]
fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("valid default address")
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}

fn default_sync() -> Synchronous {
    Synchronous::Full
}

fn parse_sync(s: &str) -> Option<Synchronous> {
    match s.to_ascii_lowercase().as_str() {
        "full" => Some(Synchronous::Full),
        "normal" => Some(Synchronous::Normal),
        _ => None,
    }
}

fn de_sync<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Synchronous, D::Error> {
    let s = String::deserialize(d)?;
    parse_sync(&s).ok_or_else(|| serde::de::Error::custom("expected `full` or `normal`"))
}

impl Config {
    /// The dev default: loopback plaintext, `data_dir`, built-in templates, created and
    /// unsealed on first start with a generated root key file, reflection on.
    pub fn dev(data_dir: impl Into<PathBuf>) -> Config {
        let data_dir = data_dir.into();
        Config {
            listen: default_listen(),
            root_key_file: Some(data_dir.join("root.key")),
            hsm: None,
            data_dir,
            dev: true,
            tls: None,
            allow_plaintext_loopback: true,
            policy: None,
            create_if_missing: true,
            templates: Vec::new(),
            synchronous: Synchronous::Full,
            reflection: true,
            limits: Limits::default(),
            audit: Audit::default(),
            database: Database::default(),
            cluster: Cluster::default(),
            metrics: Metrics::default(),
            proxy: proxy::Proxy::default(),
            testing: TestHooks::default(),
        }
    }

    /// Read a config file. Relative paths in it resolve against the file's directory.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut cfg.data_dir);
        if let Some(p) = cfg.policy.as_mut() {
            abs(p);
        }
        if let Some(p) = cfg.root_key_file.as_mut() {
            abs(p);
        }
        if let Some(h) = cfg.hsm.as_mut() {
            h.resolve(base);
        }
        if let Some(p) = cfg.database.ca_file.as_mut() {
            abs(p);
        }
        if let Some(t) = cfg.tls.as_mut() {
            abs(&mut t.cert);
            abs(&mut t.key);
            if let Some(ca) = t.client_ca.as_mut() {
                abs(ca);
            }
        }
        Ok(cfg)
    }

    /// Apply `VAULT_*` environment overrides (see the module docs).
    pub fn apply_env(&mut self) -> Result<(), ConfigError> {
        self.apply_vars(|k| std::env::var(k).ok())
    }

    /// What `vaultd serve` runs with: the file (`Some(path)`) or the dev default (`None`),
    /// then every `VAULT_*` override, then the command line's `--data-dir` and `--listen`.
    /// Nothing given is dropped: in dev mode the data directory (flag, else `VAULT_DATA_DIR`,
    /// else `./vault-data`) is chosen first, so the files that follow it (the root key file,
    /// unless `VAULT_ROOT_KEY_FILE` names one) are where the vault is; and a flag and a
    /// variable that disagree are an error rather than one silently winning.
    pub fn for_serve(
        file: Option<&Path>,
        data_dir: Option<PathBuf>,
        listen: Option<SocketAddr>,
    ) -> Result<Config, ConfigError> {
        Config::for_serve_with(file, data_dir, listen, |k| std::env::var(k).ok())
    }

    fn for_serve_with(
        file: Option<&Path>,
        data_dir: Option<PathBuf>,
        listen: Option<SocketAddr>,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        if let (Some(flag), Some(var)) = (&data_dir, get("VAULT_DATA_DIR"))
            && *flag != Path::new(&var)
        {
            return Err(invalid(
                "--data-dir",
                format!("disagrees with VAULT_DATA_DIR={var}; give one of them"),
            ));
        }
        if let (Some(flag), Some(var)) = (listen, get("VAULT_LISTEN"))
            && var.parse::<SocketAddr>().ok() != Some(flag)
        {
            return Err(invalid(
                "--listen",
                format!("disagrees with VAULT_LISTEN={var}; give one of them"),
            ));
        }
        let mut cfg = match file {
            Some(path) => Config::from_file(path)?,
            None => Config::dev(
                data_dir
                    .clone()
                    .or_else(|| get("VAULT_DATA_DIR").map(PathBuf::from))
                    .unwrap_or_else(default_data_dir),
            ),
        };
        cfg.apply_vars(&get)?;
        if let Some(d) = data_dir {
            cfg.data_dir = d;
        }
        if let Some(l) = listen {
            cfg.listen = l;
        }
        Ok(cfg)
    }

    fn apply_vars(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get("VAULT_LISTEN") {
            self.listen = v
                .parse()
                .map_err(|_| invalid("VAULT_LISTEN", "not an address:port"))?;
        }
        if let Some(v) = get("VAULT_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = get("VAULT_POLICY") {
            self.policy = Some(v.into());
        }
        if let Some(v) = get("VAULT_ROOT_KEY_FILE") {
            self.root_key_file = Some(v.into());
        }
        let cert = get("VAULT_TLS_CERT");
        let key = get("VAULT_TLS_KEY");
        if cert.is_some() || key.is_some() {
            let tls = self.tls.get_or_insert_with(|| Tls {
                cert: PathBuf::new(),
                key: PathBuf::new(),
                client_ca: None,
            });
            if let Some(c) = cert {
                tls.cert = c.into();
            }
            if let Some(k) = key {
                tls.key = k.into();
            }
        }
        if let Some(ca) = get("VAULT_TLS_CLIENT_CA") {
            match self.tls.as_mut() {
                Some(t) => t.client_ca = Some(ca.into()),
                None => {
                    return Err(invalid(
                        "VAULT_TLS_CLIENT_CA",
                        "needs a server cert and key",
                    ));
                }
            }
        }
        if let Some(v) = get("VAULT_SYNCHRONOUS") {
            self.synchronous =
                parse_sync(&v).ok_or_else(|| invalid("VAULT_SYNCHRONOUS", "`full` or `normal`"))?;
        }
        if let Some(v) = get("VAULT_MAX_CONCURRENT_CALLS") {
            self.limits.max_concurrent_calls = v
                .parse()
                .map_err(|_| invalid("VAULT_MAX_CONCURRENT_CALLS", "not a number"))?;
        }
        if let Some(v) = get("VAULT_METRICS_LISTEN") {
            let addr = v
                .parse()
                .map_err(|_| invalid("VAULT_METRICS_LISTEN", "not an address:port"))?;
            self.metrics.listen = Some(addr);
        }
        if let Some(v) = get("VAULT_HTTP_READ_TIMEOUT_MS") {
            self.limits.http_read_timeout_ms = v
                .parse()
                .map_err(|_| invalid("VAULT_HTTP_READ_TIMEOUT_MS", "not a number"))?;
        }
        if let Some(v) = get("VAULT_DATABASE_URL") {
            self.database.url = Some(DatabaseUrl(v));
        }
        if let Some(v) = get("VAULT_DATABASE_SCHEMA") {
            self.database.schema = Some(v);
        }
        if let Some(v) = get("VAULT_NODE_ID") {
            self.cluster.node_id = Some(v);
        }
        if let Some(v) = get("VAULT_KEY_REFRESH_MS") {
            self.cluster.key_refresh_ms = v
                .parse()
                .map_err(|_| invalid("VAULT_KEY_REFRESH_MS", "not a number"))?;
        }
        if let Some(v) = get("VAULT_REWRAP_LEASE_MS") {
            self.cluster.rewrap_lease_ms = v
                .parse()
                .map_err(|_| invalid("VAULT_REWRAP_LEASE_MS", "not a number"))?;
        }
        if let Some(v) = get("VAULT_REFLECTION") {
            self.reflection = v
                .parse()
                .map_err(|_| invalid("VAULT_REFLECTION", "`true` or `false`"))?;
        }
        Ok(())
    }

    /// The templates in force: the configured ones, or the built-in set.
    pub fn template_specs(&self) -> Vec<TemplateSpec> {
        if self.templates.is_empty() {
            builtin_templates()
        } else {
            self.templates.clone()
        }
    }

    /// Check the combination of settings (called by `spawn`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tls.is_none() {
            if !self.listen.ip().is_loopback() {
                return Err(invalid(
                    "listen",
                    "plaintext is only allowed on a loopback address; configure [tls]",
                ));
            }
            if !self.dev && !self.allow_plaintext_loopback {
                return Err(invalid(
                    "tls",
                    "no TLS configured: set [tls], or allow_plaintext_loopback = true for a \
                     loopback-only daemon",
                ));
            }
        }
        if self.dev && !self.listen.ip().is_loopback() {
            return Err(invalid("listen", "dev mode listens on loopback only"));
        }
        if !self.dev && self.policy.is_none() {
            return Err(invalid(
                "policy",
                "a policy file is required outside dev mode",
            ));
        }
        if let Some(h) = &self.hsm {
            h.validate()?;
        }
        let l = &self.limits;
        if l.max_batch == 0 || l.max_batch > vault_core::vault::MAX_BATCH {
            return Err(invalid(
                "limits.max_batch",
                format!("between 1 and {}", vault_core::vault::MAX_BATCH),
            ));
        }
        if l.max_concurrent_calls == 0 {
            return Err(invalid("limits.max_concurrent_calls", "at least 1"));
        }
        if let Some(url) = &self.database.url
            && !crate::pgstore::is_postgres_url(url.expose())
        {
            return Err(invalid(
                "database.url",
                "a postgres:// or postgresql:// URL (omit it for SQLite in data_dir)",
            ));
        }
        if self.database.pool_size == 0 {
            return Err(invalid("database.pool_size", "at least 1"));
        }
        if self.cluster.rewrap_lease_ms < 100 {
            return Err(invalid("cluster.rewrap_lease_ms", "at least 100"));
        }
        if let Some(id) = &self.cluster.node_id
            && (id.is_empty()
                || id.len() > 64
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        {
            return Err(invalid(
                "cluster.node_id",
                "1 to 64 letters, digits, '-', '_' or '.'",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for t in self.template_specs() {
            t.build()?;
            if !names.insert(t.name.clone()) {
                return Err(invalid("templates", format!("`{}` defined twice", t.name)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
