//! The state every call shares (the vault, the audit log, the policy, the registry, limits),
//! and the daemon's health as the transports publish it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Semaphore;
use vault_core::vault::Vault;

use crate::audit::AuditLog;
use crate::callers::Registry;
use crate::config::{Limits, TestHooks};
use crate::policy::PolicyStore;

/// What health says: whether data calls (Tokenizer) and admin calls can be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Health {
    /// Unsealed with working storage.
    pub(crate) data: bool,
    /// Working storage (Admin is how a sealed vault gets unsealed).
    pub(crate) admin: bool,
}

/// Where a transport publishes health (gRPC: its health service). Awaited, so a change is
/// visible to the next health check once the call that made it has answered.
pub(crate) trait HealthSink: Send + Sync {
    /// Publish the current health.
    fn publish(&self, health: Health) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// State shared by the services.
pub(crate) struct Shared {
    pub(crate) vault: Arc<Vault>,
    /// The configured HSM (`[hsm]`), for `Unseal` and `RotateRootKey` by the HSM.
    pub(crate) hsm: Option<crate::config::hsm::Hsm>,
    pub(crate) audit: AuditLog,
    pub(crate) policy: PolicyStore,
    pub(crate) registry: Registry,
    pub(crate) limits: Limits,
    pub(crate) permits: Arc<Semaphore>,
    /// Where health is published (the gRPC health service).
    pub(crate) health: Box<dyn HealthSink>,
    pub(crate) hooks: TestHooks,
    pub(crate) storage_ok: AtomicBool,
    pub(crate) stopping: AtomicBool,
    /// What `/metrics` reports of the calls (`metrics/`).
    pub(crate) metrics: crate::metrics::Metrics,
    /// Rewrap jobs running in this process (the fleet loop does not start them twice).
    pub(crate) rewraps: std::sync::Mutex<std::collections::HashSet<u64>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("vault", &self.vault)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// A call met a storage failure (disk full, read-only, I/O error): health goes
    /// NOT_SERVING at once, and the probe, which then writes as well as reads, brings it back
    /// when storage accepts writes again. A read-only probe alone would miss a full disk.
    pub(crate) async fn storage_failed(&self) {
        if self.storage_ok.swap(false, Ordering::SeqCst) {
            tracing::error!("storage failed under a call: health NOT_SERVING until it recovers");
            self.update_health().await;
        }
    }

    /// Publish health: the overall service and Tokenizer serve only while unsealed with working
    /// storage; Admin serves while storage works (it is how a sealed vault gets unsealed).
    pub(crate) async fn update_health(&self) {
        let storage = self.storage_ok.load(Ordering::SeqCst);
        self.health
            .publish(Health {
                data: storage && !self.vault.is_sealed(),
                admin: storage,
            })
            .await;
    }
}
