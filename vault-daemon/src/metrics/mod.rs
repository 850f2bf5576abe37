//! Metrics for operators (Prometheus text / OpenMetrics, prometheus-client: the Prometheus
//! project's own Rust client) and the probes orchestrators use, on a listener of their own
//! (`exporter.rs`, which depends on this module and on the request path's state, not the
//! other way round).
//!
//! The request path reports every call once, where it writes the call's audit event: rpc,
//! template, protocol and outcome code, and the latency from the request's arrival. The audit
//! writer reports its group commits. The rest (calls in flight, sealed, storage health, key
//! versions and the records under each) is read when scraped.
//!
//! Labels never carry a value, a token, a key or a caller-supplied string: the rpc and code are
//! fixed names, the protocol one of three, the template a configured name or `(unknown)` (the
//! request path has already replaced any other), the key a configured template's key name. So
//! the number of series is bounded by the configuration.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::audit::Commit;

mod store;

pub(crate) use store::StoreMetrics;

/// Labels of a finished call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CallLabels {
    /// `tokenize`, `detokenize`, `reveal`, `delete`, or the admin action (`rotate_key`).
    pub(crate) rpc: &'static str,
    /// A configured template, `(unknown)`, or empty for admin calls.
    pub(crate) template: String,
    /// `grpc`, `grpc_web`, `connect`.
    pub(crate) protocol: &'static str,
    /// The canonical code sent (`OK`, `INVALID_ARGUMENT`, …).
    pub(crate) code: &'static str,
}

/// The label of per-rpc histograms.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RpcLabel {
    /// As in [`CallLabels::rpc`].
    pub(crate) rpc: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latencies from 0.1 ms to ~13 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// Group-commit sizes: 1, 2, 4, … 4096 events.
fn batch_sizes() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

/// The metrics the daemon updates as it works (cheap to clone: every family is shared).
#[derive(Clone, Debug)]
pub(crate) struct Metrics {
    calls: Family<CallLabels, Counter>,
    call_seconds: Histograms<RpcLabel>,
    work_seconds: Histograms<RpcLabel>,
    shed: Counter,
    audit_append_seconds: Histogram,
    audit_fsync_seconds: Histogram,
    audit_batch_events: Histogram,
    /// Store calls by operation (the store is wrapped with [`StoreMetrics::wrap`]).
    pub(crate) store: StoreMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            calls: Family::default(),
            call_seconds: Family::new_with_constructor(latency),
            work_seconds: Family::new_with_constructor(latency),
            shed: Counter::default(),
            audit_append_seconds: latency(),
            audit_fsync_seconds: latency(),
            audit_batch_events: batch_sizes(),
            store: StoreMetrics::default(),
        }
    }
}

impl Metrics {
    /// A call ended with `code` after `elapsed` since its request arrived.
    pub(crate) fn call(&self, labels: CallLabels, elapsed: Duration) {
        self.call_seconds
            .get_or_create(&RpcLabel { rpc: labels.rpc })
            .observe(elapsed.as_secs_f64());
        self.calls.get_or_create(&labels).inc();
    }

    /// A call's vault work (on a blocking thread: crypto and the store) took `elapsed`.
    pub(crate) fn work(&self, rpc: &'static str, elapsed: Duration) {
        self.work_seconds
            .get_or_create(&RpcLabel { rpc })
            .observe(elapsed.as_secs_f64());
    }

    /// A call was refused because too many were in flight.
    pub(crate) fn shed(&self) {
        self.shed.inc();
    }

    /// The audit writer made a group commit durable.
    pub(crate) fn audit_commit(&self, c: Commit) {
        self.audit_append_seconds.observe(c.append.as_secs_f64());
        self.audit_fsync_seconds.observe(c.fsync.as_secs_f64());
        self.audit_batch_events.observe(c.events as f64);
    }

    /// Register every family under `vault_` in `registry`.
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "vault_calls",
            "Tokenizer and Admin calls by rpc, template, protocol and the code sent",
            self.calls.clone(),
        );
        registry.register_with_unit(
            "vault_call_duration",
            "Call latency from the request's arrival to its answer, by rpc",
            Unit::Seconds,
            self.call_seconds.clone(),
        );
        registry.register_with_unit(
            "vault_work_duration",
            "The vault's work for a call (crypto and the store's commit), by rpc",
            Unit::Seconds,
            self.work_seconds.clone(),
        );
        registry.register(
            "vault_calls_shed",
            "Calls refused at once because limits.max_concurrent_calls were in flight",
            self.shed.clone(),
        );
        registry.register_with_unit(
            "vault_audit_append_duration",
            "Audit log group commit: the append",
            Unit::Seconds,
            self.audit_append_seconds.clone(),
        );
        registry.register_with_unit(
            "vault_audit_fsync_duration",
            "Audit log group commit: the fsync",
            Unit::Seconds,
            self.audit_fsync_seconds.clone(),
        );
        registry.register(
            "vault_audit_group_commit_events",
            "Events written by one audit log group commit (one fsync)",
            self.audit_batch_events.clone(),
        );
        self.store.register(registry);
    }
}
