//! Why the daemon did not start: [`StartError`], each variant naming the file or setting at
//! fault. Its own module because start-up spans several (the server, the listener's TLS, the
//! storage).

use std::path::PathBuf;

use vault_core::store::StoreError;

use crate::audit::AuditError;
use crate::callers::RegistryError;
use crate::config::ConfigError;
use crate::policy::PolicyError;

/// Why the daemon did not start. Each names the file or setting at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// The audit log cannot be opened or does not verify.
    #[error("audit log: {0}")]
    Audit(#[from] AuditError),
    /// The database refused to open.
    #[error(
        "storage ({path}): {source}{hint}",
        path = path.display(),
        hint = match source {
            StoreError::Pragma { .. } => {
                " — the store requires WAL journaling and the configured synchronous level; \
                 is the data directory on a filesystem without WAL support (network or FUSE)?"
            }
            StoreError::Durability { .. } => {
                " — the PostgreSQL server must run with fsync = on and synchronous_commit = on \
                 (or remote_apply, remote_write), so an acknowledged token is committed"
            }
            _ => "",
        }
    )]
    Storage {
        /// The database file.
        path: PathBuf,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// The vault refused (wrong root key, not initialised…).
    #[error("vault: {0}")]
    Vault(#[from] vault_core::vault::Error),
    /// The root key file is unusable.
    #[error("root key file {}: {source}", path.display())]
    RootKey {
        /// The file.
        path: PathBuf,
        /// Why (never key bytes).
        #[source]
        source: vault_core::keys::KeyError,
    },
    /// The policy file is unusable.
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
    /// The caller registry is unusable.
    #[error("caller registry: {0}")]
    Registry(#[from] RegistryError),
    /// TLS files or settings.
    #[error("tls: {0}")]
    Tls(String),
    /// Files, binding.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
