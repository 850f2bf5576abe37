//! The daemon's background jobs, each on its own task: the storage probe that drives health,
//! the fleet loop that keeps daemons sharing a store in step (key reloads, orphaned rewrap
//! jobs), and the rewrap runners themselves. One module, so what runs without a caller, and
//! when it stops (the server stopping, the vault sealing), is read in one place.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::request::Shared;

/// Default rewrap batch (records re-encrypted per transaction).
pub(crate) const REWRAP_BATCH: usize = 500;

/// Run (or resume) a rewrap job in the background until done, sealed or shutting down. At most
/// once per job in this process; across daemons, the job's lease admits one runner.
pub(crate) fn spawn_rewrap(shared: &Arc<Shared>, id: u64, batch: usize) {
    let mut running = shared
        .rewraps
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !running.insert(id) {
        return;
    }
    drop(running);
    let shared = Arc::clone(shared);
    tokio::task::spawn_blocking(move || {
        let vault = Arc::clone(&shared.vault);
        let result = vault.rewrap_run(id, batch, &mut |_| {
            !shared.stopping.load(Ordering::SeqCst) && !vault.is_sealed()
        });
        shared
            .rewraps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
        match result {
            Ok(job) => tracing::info!(job = id, state = job.state.as_str(), "rewrap stopped"),
            Err(vault_core::vault::Error::JobLeased { owner, .. }) => {
                tracing::debug!(job = id, %owner, "rewrap runs on another daemon")
            }
            Err(e) => tracing::warn!(job = id, error = %e, "rewrap stopped with an error"),
        }
    });
}

/// Probe storage with a cheap read (the vault id row) and publish health; while storage is
/// marked failed (by the probe or by a call), the probe also writes (`Store::probe_write`: a
/// committed write and room to grow), so a full or read-only disk stays NOT_SERVING until
/// writes succeed again. Stops when the server
/// is gone.
pub(crate) async fn probe_storage(shared: Weak<Shared>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let Some(s) = shared.upgrade() else { return };
        if s.stopping.load(Ordering::SeqCst) {
            return;
        }
        let vault = Arc::clone(&s.vault);
        let write = !s.storage_ok.load(Ordering::SeqCst);
        let ok = tokio::task::spawn_blocking(move || {
            let store = vault.store();
            store.meta_get("vault_id").is_ok() && (!write || store.probe_write().is_ok())
        })
        .await
        .unwrap_or(false);
        if s.storage_ok.swap(ok, Ordering::SeqCst) != ok {
            if ok {
                tracing::info!("storage probe recovered");
            } else {
                tracing::error!("storage probe failed: health NOT_SERVING");
            }
        }
        s.update_health().await;
    }
}

/// What keeps daemons sharing a store in step, on a timer: keys reloaded when the key table
/// changed (so an idle daemon is current too), and rewrap jobs left `running` without a live
/// runner taken over (a crashed daemon's job, after its lease lapses; this daemon's own job
/// after a restart, at once). Other daemons' live jobs refuse the claim and are left alone.
pub(crate) async fn fleet(shared: Weak<Shared>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(s) = shared.upgrade() else { return };
        if s.stopping.load(Ordering::SeqCst) {
            return;
        }
        if s.vault.is_sealed() {
            continue;
        }
        let vault = Arc::clone(&s.vault);
        let jobs = tokio::task::spawn_blocking(move || {
            match vault.refresh_keys() {
                Ok(true) => tracing::info!("key table changed: keys reloaded"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "key table check failed"),
            }
            vault.rewrap_jobs()
        })
        .await;
        let Ok(Ok(jobs)) = jobs else { continue };
        for job in jobs {
            if job.state != vault_core::vault::JobState::Running {
                continue;
            }
            if s.rewraps
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(&job.id)
            {
                continue;
            }
            spawn_rewrap(&s, job.id, REWRAP_BATCH);
        }
    }
}
