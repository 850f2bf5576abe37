//! The daemon: [`spawn`] starts it from a [`Config`] and returns a [`Running`] handle
//! with the bound address; `vaultd` and the end-to-end tests use the same function, so the
//! tests exercise the real start-up path (TLS, policy, audit log, vault) on `127.0.0.1:0`
//! without sleeping to wait for it.
//!
//! Start-up order, and why:
//! 1. Validate the config (plaintext only on loopback, and only in dev or when allowed).
//! 2. Open the audit log first: it must verify before anything can be served (fail closed).
//! 3. Open (or in dev, create) the SQLite vault; the store asserts WAL and the configured
//!    `synchronous` on every connection and refuses otherwise ([`StartError::Storage`] says so).
//! 4. Unseal with the root key file if one is given; otherwise start sealed.
//! 5. Load the policy (warnings logged) and the caller registry; dev mode writes a policy and
//!    an API key allowed every scope.
//! 6. Bind, then serve health (no credentials), reflection (configured; on by default in
//!    dev), Tokenizer and Admin over gRPC (`grpc/`). Health reports NOT_SERVING while sealed or while the storage probe fails.
//!
//! Shutdown ([`Running::shutdown`]): stop accepting, let calls in flight finish (HTTP/2
//! GOAWAY), give up after `limits.drain_timeout_secs`, then drop the audit log (its writer
//! writes a final checkpoint).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;
use vault_core::keys::root;
use vault_core::store::StoreError;
use vault_core::vault::{RootInit, Vault};
use zeroize::Zeroizing;

use crate::audit::{self, AuditLog};
use crate::callers::Registry;
use crate::config::{Config, ConfigError};
pub use crate::error::StartError;
use crate::jobs;
use crate::listen;
use crate::policy::{PolicyError, PolicyStore, Warning};
use crate::request::Shared;
/// Database file name in the data directory.
pub use crate::storage::DB_FILE;

/// Where dev mode writes its API key (0600), for scripts.
pub const DEV_KEY_FILE: &str = "dev-api-key";
/// The policy dev mode writes (a role `all` with every scope).
pub const DEV_POLICY_FILE: &str = "dev-policy.toml";

const DEV_POLICY: &str = "\
# Written by `vaultd serve --dev` at every start. Role `all` grants every scope; the dev API key
# (a caller of the registry) has it.
[roles.all]
description = \"dev mode: everything\"
[[roles.all.grants]]
scopes = [\"tokenize:*\", \"detokenize:*\", \"reveal:*\", \"delete:*\", \"admin:keys\", \"admin:audit\", \"admin:callers\"]
";

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
    let what = what.into();
    move |source| StartError::Io { what, source }
}

/// A running daemon.
pub struct Running {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    /// The metrics listener's address and task, when configured.
    metrics: Option<(SocketAddr, JoinHandle<()>)>,
    /// The proxy's routes.
    proxies: Vec<crate::proxy::Running>,
    drain: Duration,
    dev_api_key: Option<Zeroizing<String>>,
    warnings: Vec<Warning>,
}

/// The dev API key is a credential allowed every scope: shown as present or not, never itself
/// (`Zeroizing` wipes memory on drop, it does not redact).
impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("addr", &self.addr)
            .field("drain", &self.drain)
            .field(
                "dev_api_key",
                &self.dev_api_key.as_ref().map(|_| "<redacted>"),
            )
            .field("warnings", &self.warnings.len())
            .finish_non_exhaustive()
    }
}

impl Running {
    /// The address the server is bound to (the real port when the config said port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Dev mode: the API key allowed every scope (also in `<data-dir>/dev-api-key`).
    pub fn dev_api_key(&self) -> Option<&str> {
        self.dev_api_key.as_deref().map(String::as_str)
    }

    /// The policy loader's warnings at start.
    pub fn policy_warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// Re-read the policy file (SIGHUP). On error the old policy stays in force.
    pub fn reload_policy(&self) -> Result<Vec<Warning>, PolicyError> {
        let warnings = self.shared.policy.reload()?;
        for w in &warnings {
            tracing::warn!(warning = %w, "policy");
        }
        tracing::info!("policy reloaded");
        Ok(warnings)
    }

    /// The address of the proxy route `name` (`[[proxy.inbound]]`, `[[proxy.outbound]]`).
    pub fn proxy_addr(&self, name: &str) -> Option<SocketAddr> {
        self.proxies.iter().find(|p| p.name == name).map(|p| p.addr)
    }

    /// Every proxy route's name and address, in config order (inbound first).
    pub fn proxy_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.proxies
            .iter()
            .map(|p| (p.name.clone(), p.addr))
            .collect()
    }

    /// The metrics listener's address, when `[metrics] listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(a, _)| *a)
    }

    /// Tokenizer and Admin calls in flight now (past authentication).
    pub fn in_flight(&self) -> usize {
        self.shared.limits.max_concurrent_calls - self.shared.permits.available_permits()
    }

    /// Whether the server task has stopped (it should not before `shutdown`).
    pub fn is_finished(&self) -> bool {
        self.server.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stop accepting, drain calls in flight for at most the configured drain time, and
    /// release everything (the audit log writes its final checkpoint). Returns whether the
    /// drain completed in time.
    pub async fn shutdown(mut self) -> bool {
        tracing::info!("shutting down: draining calls in flight");
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Some((_, task)) = self.metrics.take() {
            task.abort();
        }
        for p in std::mem::take(&mut self.proxies) {
            p.stop(self.drain).await;
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let mut drained = true;
        if let Some(mut server) = self.server.take() {
            match tokio::time::timeout(self.drain, &mut server).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "server task failed"),
                Err(_) => {
                    tracing::warn!("drain time limit reached: aborting calls still in flight");
                    server.abort();
                    drained = false;
                }
            }
        }
        drained
    }
}

/// Write a fresh random root key file (64 hex digits, 0600).
fn generate_root_key_file(path: &Path) -> Result<(), StartError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut *bytes).map_err(|_| StartError::Io {
        what: "OS random number generator".into(),
        source: std::io::Error::other("getrandom failed"),
    })?;
    let text = Zeroizing::new(format!("{}\n", hex::encode(*bytes)));
    crate::durable::write_atomic(path, text.as_bytes(), 0o600)
        .map_err(io(format!("writing the root key file {}", path.display())))?;
    tracing::info!(path = %path.display(), "generated a root key file");
    Ok(())
}

/// Opens the configured vault, or creates it (`create_if_missing`, with a root key file that
/// is generated if absent), and unseals it with the root key file if one is given. Opening and
/// creating themselves are `storage`'s, shared with `vaultctl`.
fn open_vault(
    config: &Config,
    metrics: &crate::metrics::StoreMetrics,
) -> Result<(Vault, Option<crate::pgstore::PoolProbe>), StartError> {
    let location = crate::storage::location(config);
    let storage = |source| StartError::Storage {
        path: PathBuf::from(&location),
        source,
    };
    let vault_error = |e: crate::storage::VaultError| match e {
        crate::storage::VaultError::NodeId(source) => StartError::Io {
            what: "reading or writing the node id".into(),
            source,
        },
        crate::storage::VaultError::Vault(e) => StartError::Vault(e),
    };
    // Templates first: a config whose templates do not build is refused before any file is
    // created.
    let templates = crate::storage::templates(config)?;
    let root_key = |path: &Path| {
        root::from_file(path).map_err(|source| StartError::RootKey {
            path: path.to_owned(),
            source,
        })
    };
    let opened = crate::storage::open(config, config.create_if_missing).map_err(|e| match e {
        StoreError::NotFound { .. } => storage(StoreError::not_found(
            "no vault database; set create_if_missing = true with a root key file to create one"
                .into(),
        )),
        e => storage(e),
    })?;
    let pool = opened.pool.clone();
    let store = metrics.wrap(Arc::clone(&opened.store));
    if !opened.has_vault {
        if !config.create_if_missing {
            return Err(storage(StoreError::not_found(
                "no vault in the database; set create_if_missing = true with a root key file \
                 (or run `vaultctl init`)"
                    .into(),
            )));
        }
        let Some(key_path) = &config.root_key_file else {
            return Err(ConfigError::Invalid {
                key: "root_key_file".into(),
                message: "creating a vault needs a root key file".into(),
            }
            .into());
        };
        if !key_path.exists() {
            generate_root_key_file(key_path)?;
        }
        let key = root_key(key_path)?;
        match crate::storage::create_vault(
            config,
            Arc::clone(&store),
            templates.clone(),
            RootInit::Key(key),
        ) {
            Ok((vault, _)) => {
                tracing::info!(store = %location, vault_id = %vault.vault_id(),
                    "created a new vault");
                return Ok((vault, pool));
            }
            // Another daemon on the same database created it first: open theirs.
            Err(crate::storage::VaultError::Vault(
                vault_core::vault::Error::AlreadyInitialised,
            )) => {
                tracing::info!(store = %location, "another daemon created the vault; opening it");
            }
            Err(e) => return Err(vault_error(e)),
        }
    }
    let vault = crate::storage::open_vault(config, store, templates).map_err(vault_error)?;
    if vault.status().seal_method == vault_core::vault::SealMethod::Wrapped {
        auto_unseal(config, &vault, &location);
    } else if let Some(key_path) = &config.root_key_file {
        vault.unseal_key(root_key(key_path)?)?;
        tracing::info!(store = %location, "unsealed with the root key file");
    } else {
        tracing::warn!("no root key file: starting sealed (Admin.Unseal to unseal)");
    }
    Ok((vault, pool))
}

/// A vault whose root key an HSM wraps unseals itself here. Any failure (module missing, token
/// absent, wrong PIN, key gone) leaves it sealed, health NOT_SERVING, with one error line
/// saying what failed: the daemon still starts, so `vaultctl status` and the probes work and
/// `vaultctl unseal --hsm` can retry once the HSM is back.
fn auto_unseal(config: &Config, vault: &Vault, location: &str) {
    let key = vault.wrapping_key().unwrap_or_default();
    let Some(hsm) = &config.hsm else {
        tracing::error!(store = %location, wrapping_key = %key,
            "the vault's root key is wrapped by an HSM but no [hsm] is configured: starting sealed");
        return;
    };
    match crate::hsm::unseal(hsm, vault) {
        Ok(()) => tracing::info!(store = %location, wrapping_key = %key, "unsealed by the HSM"),
        Err(e) => tracing::error!(store = %location, wrapping_key = %key, error = %e,
            "HSM auto-unseal failed: starting sealed (fix the HSM, then restart or run \
             `vaultctl unseal --hsm`)"),
    }
}

/// Dev mode: reuse the dev key if it still authenticates, else create a new dev caller.
fn dev_key(data_dir: &Path, registry: &Registry) -> Result<Zeroizing<String>, StartError> {
    let path = data_dir.join(DEV_KEY_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let key = Zeroizing::new(text.trim().to_owned());
        if registry.authenticate(&key).is_some() {
            return Ok(key);
        }
    }
    let mut suffix = [0u8; 3];
    let _ = getrandom::fill(&mut suffix);
    let name = format!("dev-{}", hex::encode(suffix));
    let (_, key) = registry.create(
        &name,
        "dev mode: every scope (role `all`)",
        vec!["all".into()],
        Vec::new(),
        None,
    )?;
    crate::durable::write_atomic(&path, format!("{}\n", &*key.0).as_bytes(), 0o600).map_err(io(
        format!("writing the dev API key file {}", path.display()),
    ))?;
    Ok(key.0)
}

/// Start the daemon. Returns once the listener is bound (the address is in [`Running::addr`]).
pub async fn spawn(config: Config) -> Result<Running, StartError> {
    config.validate()?;
    let template_names: Vec<String> = config
        .template_specs()
        .into_iter()
        .map(|t| t.name)
        .collect();
    crate::proxy::validate(&config.proxy, &template_names)?;
    std::fs::create_dir_all(&config.data_dir)
        .map_err(io(format!("creating {}", config.data_dir.display())))?;

    let audit_cfg = audit::Config {
        checkpoint_every: config.audit.checkpoint_every.max(1),
        checkpoint_interval: Duration::from_secs(config.audit.checkpoint_interval_secs),
        segment_bytes: config.audit.segment_max_bytes,
        segment_age: (config.audit.segment_max_age_secs > 0)
            .then(|| Duration::from_secs(config.audit.segment_max_age_secs)),
        ship: match &config.audit.ship {
            Some(ship) => Some(Arc::new(audit::ship::Shipper::start(ship).map_err(
                |message| ConfigError::Invalid {
                    key: "audit.ship".into(),
                    message,
                },
            )?)),
            None => None,
        },
        ..audit::Config::default()
    };
    let audit_log = match &config.testing.audit_fault {
        Some(switch) => AuditLog::open_with_faults(&config.data_dir, audit_cfg, switch.clone())?,
        None => AuditLog::open(&config.data_dir, audit_cfg)?,
    };
    if let Some(torn) = audit_log.recovered_tail() {
        // Loud: an operator should know a crash interrupted an append, and where its bytes are.
        tracing::error!(
            bytes = torn.bytes,
            sha256 = %torn.sha256,
            quarantine = %torn.quarantine.display(),
            "audit log: a torn final line (an append cut short by a crash or power loss; no \
             caller was answered for it) was moved aside and the recovery recorded in the chain"
        );
    }

    let metrics = crate::metrics::Metrics::default();
    let cfg = config.clone();
    let store_metrics = metrics.store.clone();
    let (vault, pool) = tokio::task::spawn_blocking(move || open_vault(&cfg, &store_metrics))
        .await
        .map_err(|e| StartError::Io {
            what: "opening the vault".into(),
            source: std::io::Error::other(e.to_string()),
        })??;

    let registry = Registry::open(&config.data_dir)?;
    let policy_path = match (&config.policy, config.dev) {
        (Some(p), _) => p.clone(),
        (None, true) => {
            let p = config.data_dir.join(DEV_POLICY_FILE);
            std::fs::write(&p, DEV_POLICY).map_err(io(format!("writing {}", p.display())))?;
            p
        }
        (None, false) => {
            return Err(ConfigError::Invalid {
                key: "policy".into(),
                message: "required".into(),
            }
            .into());
        }
    };
    let infos = config.template_specs().iter().map(|t| t.info()).collect();
    let (policy, warnings) = PolicyStore::open(&policy_path, infos)?;
    for w in &warnings {
        tracing::warn!(warning = %w, "policy");
    }
    let dev_api_key = if config.dev {
        Some(dev_key(&config.data_dir, &registry)?)
    } else {
        None
    };

    let (health, health_routes) = crate::grpc::health();
    let shared = Arc::new(Shared {
        vault: Arc::new(vault),
        hsm: config.hsm.clone(),
        audit: audit_log,
        policy,
        registry,
        limits: config.limits.clone(),
        permits: Arc::new(Semaphore::new(config.limits.max_concurrent_calls)),
        health,
        hooks: config.testing.clone(),
        storage_ok: AtomicBool::new(true),
        stopping: AtomicBool::new(false),
        rewraps: std::sync::Mutex::new(std::collections::HashSet::new()),
        metrics,
    });
    {
        let metrics = shared.metrics.clone();
        shared
            .audit
            .observe_commits(Arc::new(move |c| metrics.audit_commit(c)));
    }
    let metrics = match config.metrics.listen {
        Some(addr) => Some(crate::exporter::bind(addr, &shared, pool).await?),
        None => None,
    };
    shared.update_health().await;

    let tls = config.tls.as_ref().map(listen::tls_acceptor).transpose()?;
    let routes = crate::grpc::routes(
        &shared,
        health_routes,
        config.limits.max_message_bytes,
        config.reflection,
    )?;

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(io(format!("binding {}", config.listen)))?;
    let addr = listener.local_addr().map_err(io("local address"))?;
    let (stop, stopped) = oneshot::channel::<()>();
    let services = listen::Services::new(
        routes.prepare(),
        crate::connect::Connect::new(&shared)?,
        Duration::from_millis(config.limits.http_read_timeout_ms.max(1)),
    );
    let server = listen::serve(listener, tls, services, stopped);
    let proxies = crate::proxy::start(
        &config.proxy,
        &shared,
        Duration::from_millis(config.limits.http_read_timeout_ms.max(1)),
    )
    .await?;
    tokio::spawn(jobs::probe_storage(
        Arc::downgrade(&shared),
        Duration::from_millis(config.limits.health_probe_interval_ms.max(10)),
    ));
    tokio::spawn(jobs::fleet(
        Arc::downgrade(&shared),
        Duration::from_millis(
            config
                .cluster
                .key_refresh_ms
                .min(config.cluster.rewrap_lease_ms / 3)
                .max(50),
        ),
    ));
    tracing::info!(
        %addr,
        tls = config.tls.is_some(),
        mtls = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
        sealed = shared.vault.is_sealed(),
        dev = config.dev,
        data_dir = %config.data_dir.display(),
        store = %crate::storage::location(&config),
        synchronous = if config.synchronous == vault_core::store::Synchronous::Normal {
            "normal"
        } else {
            "full"
        },
        "listening"
    );
    Ok(Running {
        addr,
        shared,
        stop: Some(stop),
        server: Some(server),
        metrics,
        proxies,
        drain: Duration::from_secs(config.limits.drain_timeout_secs),
        dev_api_key,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store refuses a connection whose journal mode or `synchronous` level reads back
    /// otherwise than configured (vault-core: `pragma_read_back_mismatch_refuses`); the daemon
    /// then refuses to start and says why.
    #[test]
    fn pragma_failure_names_the_cause() {
        let e = StartError::Storage {
            path: "/data/vault.db".into(),
            source: StoreError::Pragma {
                pragma: "journal_mode",
                expected: "wal".into(),
                found: "delete".into(),
            },
        };
        let text = e.to_string();
        assert!(text.contains("journal_mode"), "{text}");
        assert!(text.contains("requires WAL journaling"), "{text}");
    }
}
