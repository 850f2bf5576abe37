//! Opening the configured store: a SQLite file in the data directory (the default, one daemon)
//! or PostgreSQL (`[database] url`, many daemons). `vaultd` and `vaultctl`'s offline commands
//! both open storage here, so they agree on where a vault is.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vault_core::secret::SecretString;
use vault_core::store::{Options, SqliteStore, Store, StoreError};
use vault_core::vault::{RootInit, TemplateConfig, Vault};

use crate::config::{Config, ConfigError};
use crate::pgstore::{PgOptions, PgStore, PoolProbe};

/// Database file name in the data directory.
pub const DB_FILE: &str = "vault.db";

/// File in the data directory holding a generated node id.
pub const NODE_ID_FILE: &str = "node-id";

/// An opened store.
pub struct Opened {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Whether it already holds a vault.
    pub has_vault: bool,
    /// Where it is, for messages: the SQLite path, or the PostgreSQL URL without password.
    pub location: String,
    /// The PostgreSQL pool's probe (metrics); `None` for SQLite.
    pub pool: Option<PoolProbe>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("has_vault", &self.has_vault)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// Whether the configuration names PostgreSQL.
pub fn is_postgres(config: &Config) -> bool {
    config.database.url.is_some()
}

/// Where the configured store is (no password).
pub fn location(config: &Config) -> String {
    match &config.database.url {
        Some(url) => url.redacted(),
        None => config.data_dir.join(DB_FILE).display().to_string(),
    }
}

/// Opens the configured store. Without a vault in it: a SQLite file is created only when
/// `create` is set (else [`StoreError::NotFound`]); a PostgreSQL database is migrated either way
/// (its schema is not a vault) and reported as `has_vault: false`.
///
/// Creating is crash-safe: the vault exists from the one insert-only transaction that writes
/// its metadata (`Vault::create`), and the root key file is durable before it. A SQLite file
/// that an interrupted first start left behind (zero bytes, a header, the schema without a
/// vault row: `SqliteStore::is_unfinished`) holds nothing anyone was answered for; with
/// `create` it is removed, with a log line saying so, and created again. Without `create` it is
/// refused as before.
pub fn open(config: &Config, create: bool) -> Result<Opened, StoreError> {
    let location = location(config);
    if let Some(url) = &config.database.url {
        let opts = PgOptions {
            pool_size: config.database.pool_size,
            schema: config.database.schema.clone(),
            ca_file: config.database.ca_file.clone(),
        };
        let store = PgStore::connect(url.expose(), &opts)?;
        let has_vault = store.meta_get("vault_id")?.is_some();
        let pool = Some(store.pool_probe());
        return Ok(Opened {
            store: Arc::new(store),
            has_vault,
            location,
            pool,
        });
    }
    let db = config.data_dir.join(DB_FILE);
    let mut opts = Options::default();
    opts.synchronous = config.synchronous;
    opts.page_limit = config.testing.store_page_limit.clone();
    if db.exists() {
        if create && SqliteStore::is_unfinished(&db)? {
            tracing::warn!(
                path = %db.display(),
                "the vault database was left unfinished by an interrupted first start (it \
                 holds no vault data): creating it again"
            );
            SqliteStore::remove_unfinished(&db)?;
        } else {
            return Ok(Opened {
                store: Arc::new(SqliteStore::open(&db, &opts)?),
                has_vault: true,
                location,
                pool: None,
            });
        }
    }
    if !create {
        return Err(StoreError::not_found(format!(
            "no vault database at {location}"
        )));
    }
    Ok(Opened {
        store: Arc::new(SqliteStore::create(&db, &opts)?),
        has_vault: false,
        location,
        pool: None,
    })
}

/// This daemon's node id: configured, or generated once and kept in the data directory (so a
/// restarted daemon resumes its own rewrap job at once instead of waiting for the lease).
pub fn node_id(config: &Config) -> std::io::Result<String> {
    if let Some(id) = &config.cluster.node_id {
        return Ok(id.clone());
    }
    let path = config.data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut b = [0u8; 6];
    getrandom::fill(&mut b)
        .map_err(|_| std::io::Error::other("the OS random number generator failed"))?;
    let id = format!("vaultd-{}", hex::encode(b));
    crate::durable::write_atomic(&path, format!("{id}\n").as_bytes(), 0o644)
        .map_err(|e| std::io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))?;
    Ok(id)
}

/// Applies the cluster settings to a vault.
pub fn configure(vault: Vault, config: &Config, node_id: &str) -> Vault {
    vault
        .with_node_id(node_id)
        .with_key_refresh_interval(Duration::from_millis(config.cluster.key_refresh_ms))
        .with_rewrap_lease(Duration::from_millis(config.cluster.rewrap_lease_ms))
}

/// Why an opened store did not become a vault.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The node id file cannot be read or written.
    #[error("node id: {0}")]
    NodeId(#[source] std::io::Error),
    /// The vault refused (not initialised, already initialised, keys…).
    #[error(transparent)]
    Vault(#[from] vault_core::vault::Error),
}

/// The vault templates of the config.
pub fn templates(config: &Config) -> Result<Vec<TemplateConfig>, ConfigError> {
    config.template_specs().iter().map(|t| t.build()).collect()
}

/// Opens the vault an opened store holds, with `templates` (the config's: [`templates`]), the
/// config's cluster settings and this data directory's node id (so a rewrap resumed here is
/// this node's job). Sealed.
pub fn open_vault(
    config: &Config,
    store: Arc<dyn Store>,
    templates: Vec<TemplateConfig>,
) -> Result<Vault, VaultError> {
    let node = node_id(config).map_err(VaultError::NodeId)?;
    Ok(configure(Vault::open(store, templates)?, config, &node))
}

/// Creates a vault in an empty store: keys for `templates` (the config's) under a new root of
/// `init`, with the cluster settings and node id. Returns it unsealed, with the custodians'
/// shares for [`RootInit::Shares`] (shown once). Another creator that won a race makes this
/// fail with `AlreadyInitialised`.
pub fn create_vault(
    config: &Config,
    store: Arc<dyn Store>,
    templates: Vec<TemplateConfig>,
    init: RootInit,
) -> Result<(Vault, Vec<SecretString>), VaultError> {
    let node = node_id(config).map_err(VaultError::NodeId)?;
    let (vault, shares) = Vault::create(store, templates, init)?;
    Ok((configure(vault, config, &node), shares))
}

/// Whether `path` looks like a data directory holding a SQLite vault.
pub fn sqlite_exists(data_dir: &Path) -> bool {
    data_dir.join(DB_FILE).exists()
}
