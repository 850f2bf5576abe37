//! The store as the daemon sees it, timed: a [`Store`] that forwards every call to the opened
//! store (SQLite or PostgreSQL) and records how long it took, by operation. vault-core has no
//! metrics (it is a library without opinions on exporters); wrapping the trait object here
//! measures both backends the same way and leaves their code alone.
//!
//! Writes (each one a commit: SQLite's group commit through the writer thread, a PostgreSQL
//! transaction) go to `vault_store_commit_duration_seconds{op}`, reads to
//! `vault_store_read_duration_seconds{op}`, failures of either to `vault_store_errors{op}`.
//! `op` is the trait method's name: a fixed set.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Registry, Unit};
use vault_core::keys::State;
use vault_core::store::{
    IdempotencyHit, InsertOutcome, JobState, KeyNameRow, KeyTable, KeyVersionRow, NewRecord,
    Record, RecordUpdate, RewrapJobRow, Store, StoreError,
};

use super::{Histograms, latency};

/// The label of store metrics: the [`Store`] method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OpLabel {
    pub(crate) op: &'static str,
}

/// The store families (shared: cheap to clone).
#[derive(Clone, Debug)]
pub(crate) struct StoreMetrics {
    commit_seconds: Histograms<OpLabel>,
    read_seconds: Histograms<OpLabel>,
    errors: Family<OpLabel, Counter>,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            commit_seconds: Family::new_with_constructor(latency),
            read_seconds: Family::new_with_constructor(latency),
            errors: Family::default(),
        }
    }
}

impl StoreMetrics {
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "vault_store_commit_duration",
            "Store writes (each one durable commit), by operation",
            Unit::Seconds,
            self.commit_seconds.clone(),
        );
        registry.register_with_unit(
            "vault_store_read_duration",
            "Store reads, by operation",
            Unit::Seconds,
            self.read_seconds.clone(),
        );
        registry.register(
            "vault_store_errors",
            "Store calls that failed, by operation",
            self.errors.clone(),
        );
    }

    /// Wraps `store` so that every call is timed into these families.
    pub(crate) fn wrap(&self, store: Arc<dyn Store>) -> Arc<dyn Store> {
        Arc::new(Metered {
            inner: store,
            metrics: self.clone(),
        })
    }

    fn time<T>(
        &self,
        family: &Histograms<OpLabel>,
        op: &'static str,
        f: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let start = Instant::now();
        let out = f();
        let label = OpLabel { op };
        family
            .get_or_create(&label)
            .observe(start.elapsed().as_secs_f64());
        if out.is_err() {
            self.errors.get_or_create(&label).inc();
        }
        out
    }
}

/// A store whose every call is timed.
struct Metered {
    inner: Arc<dyn Store>,
    metrics: StoreMetrics,
}

impl Metered {
    fn write<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let m = &self.metrics;
        m.time(&m.commit_seconds, op, || f(&*self.inner))
    }

    fn read<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let m = &self.metrics;
        m.time(&m.read_seconds, op, || f(&*self.inner))
    }
}

impl Store for Metered {
    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read("meta_get", |s| s.meta_get(key))
    }
    fn meta_put(&self, entries: &[(&str, &[u8])]) -> Result<(), StoreError> {
        self.write("meta_put", |s| s.meta_put(entries))
    }
    fn meta_insert_new(&self, entries: &[(&str, &[u8])]) -> Result<(), StoreError> {
        self.write("meta_insert_new", |s| s.meta_insert_new(entries))
    }
    fn probe_write(&self) -> Result<(), StoreError> {
        self.write("probe_write", |s| s.probe_write())
    }
    fn keys_load(&self) -> Result<KeyTable, StoreError> {
        self.read("keys_load", |s| s.keys_load())
    }
    fn keys_generation(&self) -> Result<u64, StoreError> {
        self.read("keys_generation", |s| s.keys_generation())
    }
    fn key_create(&self, name: &KeyNameRow, first: &KeyVersionRow) -> Result<(), StoreError> {
        self.write("key_create", |s| s.key_create(name, first))
    }
    fn key_rotate(&self, new: &KeyVersionRow) -> Result<(), StoreError> {
        self.write("key_rotate", |s| s.key_rotate(new))
    }
    fn key_set_state(
        &self,
        name: &str,
        version: u32,
        from: State,
        to: State,
        erase_material: bool,
    ) -> Result<(), StoreError> {
        self.write("key_set_state", |s| {
            s.key_set_state(name, version, from, to, erase_material)
        })
    }
    fn key_raise_min_version(&self, name: &str, min: u32) -> Result<(), StoreError> {
        self.write("key_raise_min_version", |s| {
            s.key_raise_min_version(name, min)
        })
    }
    fn keys_rewrap_all(
        &self,
        wraps: &[(String, u32, Vec<u8>)],
        meta: &[(&str, &[u8])],
    ) -> Result<(), StoreError> {
        self.write("keys_rewrap_all", |s| s.keys_rewrap_all(wraps, meta))
    }
    fn key_reserve_nonces(&self, name: &str, version: u32, n: u64) -> Result<u64, StoreError> {
        self.write("key_reserve_nonces", |s| {
            s.key_reserve_nonces(name, version, n)
        })
    }
    fn allocate_ids(&self, n: u64) -> Result<Range<u64>, StoreError> {
        self.write("allocate_ids", |s| s.allocate_ids(n))
    }
    fn insert_records(&self, rows: &[NewRecord]) -> Result<Vec<InsertOutcome>, StoreError> {
        self.write("insert_records", |s| s.insert_records(rows))
    }
    fn get_records(&self, ids: &[u64]) -> Result<Vec<Option<Record>>, StoreError> {
        self.read("get_records", |s| s.get_records(ids))
    }
    fn find_by_fingerprint(
        &self,
        template: &str,
        fp_version: u32,
        fingerprint: &[u8],
    ) -> Result<Option<u64>, StoreError> {
        self.read("find_by_fingerprint", |s| {
            s.find_by_fingerprint(template, fp_version, fingerprint)
        })
    }
    fn find_by_lookup(&self, template: &str, lookup: &[u8]) -> Result<Option<u64>, StoreError> {
        self.read("find_by_lookup", |s| s.find_by_lookup(template, lookup))
    }
    fn find_by_idempotency(&self, key: &[u8]) -> Result<Option<IdempotencyHit>, StoreError> {
        self.read("find_by_idempotency", |s| s.find_by_idempotency(key))
    }
    fn delete_records(&self, ids: &[u64]) -> Result<Vec<bool>, StoreError> {
        self.write("delete_records", |s| s.delete_records(ids))
    }
    fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        self.write("purge_expired", |s| s.purge_expired(now))
    }
    fn count_by_key_version(&self, template: &str, key_version: u32) -> Result<u64, StoreError> {
        self.read("count_by_key_version", |s| {
            s.count_by_key_version(template, key_version)
        })
    }
    fn count_by_fp_version(&self, template: &str, fp_version: u32) -> Result<u64, StoreError> {
        self.read("count_by_fp_version", |s| {
            s.count_by_fp_version(template, fp_version)
        })
    }
    fn records_to_rewrap(
        &self,
        template: &str,
        target_version: u32,
        target_fp_version: u32,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        self.read("records_to_rewrap", |s| {
            s.records_to_rewrap(template, target_version, target_fp_version, after_id, limit)
        })
    }
    fn rewrap_commit(
        &self,
        updates: &[RecordUpdate],
        job: &RewrapJobRow,
    ) -> Result<u64, StoreError> {
        self.write("rewrap_commit", |s| s.rewrap_commit(updates, job))
    }
    fn rewrap_job_get(&self, id: u64) -> Result<Option<RewrapJobRow>, StoreError> {
        self.read("rewrap_job_get", |s| s.rewrap_job_get(id))
    }
    fn rewrap_jobs(&self) -> Result<Vec<RewrapJobRow>, StoreError> {
        self.read("rewrap_jobs", |s| s.rewrap_jobs())
    }
    fn rewrap_job_create(&self, job: &RewrapJobRow) -> Result<u64, StoreError> {
        self.write("rewrap_job_create", |s| s.rewrap_job_create(job))
    }
    fn rewrap_job_update(
        &self,
        job: &RewrapJobRow,
        from_state: JobState,
    ) -> Result<(), StoreError> {
        self.write("rewrap_job_update", |s| {
            s.rewrap_job_update(job, from_state)
        })
    }
    fn rewrap_job_claim(&self, id: u64, owner: &str, lease_ms: u64) -> Result<bool, StoreError> {
        self.write("rewrap_job_claim", |s| {
            s.rewrap_job_claim(id, owner, lease_ms)
        })
    }
}
