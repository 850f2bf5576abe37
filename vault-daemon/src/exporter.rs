//! The metrics listener (the exporter of `metrics/`): `GET /metrics` (Prometheus text / OpenMetrics), `GET /livez` (the
//! process answers), `GET /readyz` (200 while data calls can be served: unsealed, storage
//! working, not shutting down; the gRPC health service's SERVING; 503 otherwise).
//!
//! Plaintext HTTP/1.1 and HTTP/2 without authentication, like every Prometheus exporter: bind it
//! to loopback or a private interface. Nothing it serves is sensitive (see `metrics/mod.rs`).
//! Key versions, their record counts and rewrap progress come from a snapshot refreshed every
//! [`KEY_REFRESH`] off the async threads (the counts are queries), so a scrape costs no query.
//! Rewrap jobs are reported per template and state (job ids would grow without bound).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::error::StartError;
use crate::pgstore::PoolProbe;
use crate::request::Shared;

/// How often the key snapshot is refreshed.
pub(crate) const KEY_REFRESH: Duration = Duration::from_secs(15);

/// One key version as the last snapshot saw it.
#[derive(Debug, Clone)]
struct KeyVersion {
    key: String,
    version: u32,
    state: &'static str,
    records: Option<u64>,
}

/// Rewrap jobs of one template in one state, as the last snapshot saw them.
#[derive(Debug, Clone)]
struct Rewraps {
    template: String,
    state: &'static str,
    jobs: u64,
    processed: u64,
}

/// The last snapshot of what costs a query to read.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    keys: Vec<KeyVersion>,
    rewraps: Vec<Rewraps>,
}

/// What is read at scrape time.
#[derive(Debug)]
struct Live {
    shared: Weak<Shared>,
    snapshot: Arc<Mutex<Snapshot>>,
    /// The PostgreSQL pool, read at scrape time (no query); `None` on SQLite.
    pool: Option<PoolProbe>,
}

fn gauge(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

/// Unsealed, storage working, not stopping: what gRPC health calls SERVING for Tokenizer.
fn ready(s: &Shared) -> bool {
    s.storage_ok.load(Ordering::SeqCst)
        && !s.vault.is_sealed()
        && !s.stopping.load(Ordering::SeqCst)
}

impl Collector for Live {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let Some(s) = self.shared.upgrade() else {
            return Ok(());
        };
        let in_flight = s.limits.max_concurrent_calls - s.permits.available_permits();
        gauge(
            &mut enc,
            "vault_calls_in_flight",
            "Calls past authentication and not yet answered",
            in_flight as i64,
        )?;
        gauge(
            &mut enc,
            "vault_sealed",
            "1 while the vault is sealed",
            i64::from(s.vault.is_sealed()),
        )?;
        gauge(
            &mut enc,
            "vault_storage_healthy",
            "1 while the store takes reads and writes (the health probe)",
            i64::from(s.storage_ok.load(Ordering::SeqCst)),
        )?;
        gauge(
            &mut enc,
            "vault_ready",
            "1 while data calls can be served (health SERVING)",
            i64::from(ready(&s)),
        )?;
        if let Some(pool) = &self.pool {
            let p = pool.state();
            gauge(
                &mut enc,
                "vault_pg_pool_max_connections",
                "PostgreSQL pool: [database] pool_size",
                p.max as i64,
            )?;
            gauge(
                &mut enc,
                "vault_pg_pool_open_connections",
                "PostgreSQL pool: connections open (idle or in use)",
                p.open as i64,
            )?;
            gauge(
                &mut enc,
                "vault_pg_pool_idle_connections",
                "PostgreSQL pool: open connections not in use",
                p.idle as i64,
            )?;
            gauge(
                &mut enc,
                "vault_pg_pool_waiting",
                "PostgreSQL pool: store calls waiting for a connection",
                p.waiting as i64,
            )?;
        }
        let snapshot = self
            .snapshot
            .lock()
            .map(|k| k.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        let keys = &snapshot.keys;
        let mut e = enc.encode_descriptor(
            "vault_key_versions",
            "Versions of each key (any state)",
            None,
            MetricType::Gauge,
        )?;
        let mut names: Vec<&str> = keys.iter().map(|k| k.key.as_str()).collect();
        names.dedup();
        for name in names {
            let n = keys.iter().filter(|k| k.key == name).count();
            ConstGauge::new(n as i64).encode(e.encode_family(&[("key", name)])?)?;
        }
        let mut e = enc.encode_descriptor(
            "vault_key_version_records",
            "Records stored under each key version (what a rewrap has left to move)",
            None,
            MetricType::Gauge,
        )?;
        for k in keys.iter() {
            let Some(records) = k.records else { continue };
            let labels = vec![
                ("key", k.key.clone()),
                ("version", k.version.to_string()),
                ("state", k.state.to_owned()),
            ];
            ConstGauge::new(records as i64).encode(e.encode_family(&labels)?)?;
        }
        let mut e = enc.encode_descriptor(
            "vault_rewrap_jobs",
            "Rewrap jobs by template and state",
            None,
            MetricType::Gauge,
        )?;
        for r in &snapshot.rewraps {
            let labels = [("template", r.template.as_str()), ("state", r.state)];
            ConstGauge::new(r.jobs as i64).encode(e.encode_family(&labels)?)?;
        }
        let mut e = enc.encode_descriptor(
            "vault_rewrap_processed_records",
            "Records rewrapped so far by the jobs of a template in a state",
            None,
            MetricType::Gauge,
        )?;
        for r in &snapshot.rewraps {
            let labels = [("template", r.template.as_str()), ("state", r.state)];
            ConstGauge::new(r.processed as i64).encode(e.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Refresh the snapshot until the daemon is gone.
async fn refresh(shared: Weak<Shared>, snapshot: Arc<Mutex<Snapshot>>) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        let vault = Arc::clone(&s.vault);
        drop(s);
        let read = tokio::task::spawn_blocking(move || (vault.key_status(), vault.rewrap_jobs()))
            .await
            .ok();
        let (keys, jobs) = match read {
            Some((k, j)) => (k.ok(), j.ok()),
            None => (None, None),
        };
        let mut rewraps: Vec<Rewraps> = Vec::new();
        for j in jobs.unwrap_or_default() {
            let state = j.state.as_str();
            match rewraps
                .iter_mut()
                .find(|r| r.template == j.template && r.state == state)
            {
                Some(r) => {
                    r.jobs += 1;
                    r.processed += j.processed;
                }
                None => rewraps.push(Rewraps {
                    template: j.template,
                    state,
                    jobs: 1,
                    processed: j.processed,
                }),
            }
        }
        let rows = keys
            .unwrap_or_default()
            .into_iter()
            .flat_map(|k| {
                let name = k.name;
                k.versions.into_iter().map(move |v| KeyVersion {
                    key: name.clone(),
                    version: v.version,
                    state: v.state.as_str(),
                    records: v.records,
                })
            })
            .collect();
        if let Ok(mut s) = snapshot.lock() {
            *s = Snapshot {
                keys: rows,
                rewraps,
            };
        }
        tokio::time::sleep(KEY_REFRESH).await;
    }
}

/// Bind the metrics listener on `addr` and serve it until the returned task is aborted.
pub(crate) async fn bind(
    addr: SocketAddr,
    shared: &Arc<Shared>,
    pool: Option<PoolProbe>,
) -> Result<(SocketAddr, JoinHandle<()>), StartError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Io {
            what: format!("binding the metrics listener {addr}"),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| StartError::Io {
        what: "metrics listener address".into(),
        source,
    })?;
    let snapshot = Arc::new(Mutex::new(Snapshot::default()));
    let mut registry = Registry::default();
    shared.metrics.register(&mut registry);
    registry.register_collector(Box::new(Live {
        shared: Arc::downgrade(shared),
        snapshot: Arc::clone(&snapshot),
        pool,
    }));
    let registry = Arc::new(registry);
    let weak = Arc::downgrade(shared);
    let task = tokio::spawn(async move {
        let refresher = tokio::spawn(refresh(weak.clone(), snapshot));
        let _abort_with_us = AbortOnDrop(refresher);
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let (registry, weak) = (Arc::clone(&registry), weak.clone());
            tokio::spawn(async move {
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10));
                let service = hyper::service::service_fn(move |req: http::Request<_>| {
                    let answer = answer(&req, &registry, &weak);
                    async move { Ok::<_, std::convert::Infallible>(answer) }
                });
                let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
            });
        }
    });
    Ok((local, task))
}

/// Aborts a background task when dropped (with the listener task that owns it).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn answer<B>(
    req: &http::Request<B>,
    registry: &Registry,
    shared: &Weak<Shared>,
) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, ct: &'static str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = http::HeaderValue::from_str(ct) {
            r.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        r
    };
    if req.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let mut body = String::new();
            match prometheus_client::encoding::text::encode(&mut body, registry) {
                Ok(()) => text(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    body,
                ),
                Err(_) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    "metrics encoding failed\n".into(),
                ),
            }
        }
        "/livez" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => match shared.upgrade() {
            Some(s) if ready(&s) => text(StatusCode::OK, "text/plain", "ready\n".into()),
            _ => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "not ready\n".into(),
            ),
        },
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}
