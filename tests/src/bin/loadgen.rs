//! `vault-loadgen`: drives `vaultd` over loopback with N concurrent callers and reports
//! throughput and latency percentiles (HdrHistogram) for tokenize and detokenize, single-item
//! and batched, next to two "empty" rpcs on the same server in the same run:
//!
//! - `Check` (`grpc.health.v1`): the transport and tonic only — no authentication, no blocking
//!   thread, no audit event.
//! - `GetSealStatus` (`vault.v1.Admin`): an authenticated rpc that does no work but takes the
//!   whole request path of every Tokenizer call (API-key HMAC, load-shedding permit,
//!   authorization, `spawn_blocking`, and an audit event fsynced before the response). It is the
//!   fair floor for a tokenize: the difference between the two is the cost of the vault itself.
//!
//! Every scenario is bounded: it stops after `--duration` seconds (and `--requests` calls, if
//! given), and every call has a 10-second deadline. Only loopback is targeted.
//!
//! ```sh
//! cargo run --release -p vault-tests --bin vault-loadgen -- --concurrency 1,8,32
//! # or against a running daemon:
//! vaultd serve --dev --data-dir /tmp/v --listen 127.0.0.1:50051 &
//! cargo run --release -p vault-tests --bin vault-loadgen -- \
//!     --endpoint http://127.0.0.1:50051 --api-key-file /tmp/v/dev-api-key
//! ```
//!
//! Several daemons sharing one PostgreSQL vault are driven together by giving each endpoint
//! (`--endpoint http://127.0.0.1:50051,http://127.0.0.1:50052`): connections are spread over
//! them round-robin, so tokens made through one daemon are detokenized through the others.
//! They must accept the same API key (tests/bench/cluster.sh copies one registry to all).
//!
//! The Connect protocol is measured the same way: `Connect GetSealStatus` is the empty Connect
//! call (JSON over HTTP/1.1 keep-alive, the whole request path) and `Connect Tokenize` a
//! single-item tokenize in Connect JSON, next to their gRPC twins in the same round.
//!
//! The result is a Markdown table on stdout; progress goes to stderr.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use vault_core::store::Synchronous;
use vault_daemon::Config;
use vault_proto::v1::admin_client::AdminClient;
use vault_proto::v1::tokenizer_client::TokenizerClient;
use vault_proto::v1::{
    DetokenizeRequest, GetSealStatusRequest, TokenizeRequest, detokenize_result, tokenize_result,
};

/// Each call's deadline: a stuck server cannot hold the generator.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Tokens per template made before the detokenize scenarios (they cycle through them).
const POOL: usize = 1000;

#[derive(Parser, Debug)]
#[command(
    name = "vault-loadgen",
    about = "Load generator for vaultd: throughput and p50/p99 latency over loopback."
)]
struct Cli {
    /// Running daemons (`http://127.0.0.1:50051`, loopback only; comma-separated for several
    /// daemons on one vault). Without it a dev daemon is started in-process on 127.0.0.1:0 in a
    /// temporary directory.
    #[arg(long, requires = "api_key_file", value_delimiter = ',')]
    endpoint: Option<Vec<String>>,
    /// The API key file for --endpoint (`<data-dir>/dev-api-key` of `vaultd serve --dev`).
    #[arg(long)]
    api_key_file: Option<PathBuf>,
    /// Concurrent callers; one round of every scenario per value.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    concurrency: Vec<usize>,
    /// Seconds measured per scenario and concurrency, in total over the rounds (an upper bound).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Rounds the measured time of each scenario is split into; the scenarios take turns.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Seconds of unmeasured calls before each scenario (first round only).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Also stop a scenario after this many calls (in total over the rounds).
    #[arg(long)]
    requests: Option<u64>,
    /// Templates to tokenize and detokenize under (`pan`: FF1, nothing stored; `pan_vault`:
    /// a stored, encrypted record per token).
    #[arg(long, value_delimiter = ',', default_value = "pan,pan_vault")]
    templates: Vec<String>,
    /// Items per batched call.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// HTTP/2 connections the callers share (round-robin).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// In-process daemon: make its temporary data directory under this directory (default: the
    /// system's temp dir). A tmpfs such as /dev/shm shows the rates without fsync costs.
    #[arg(long, conflicts_with = "endpoint")]
    data_dir: Option<PathBuf>,
    /// In-process daemon: SQLite `synchronous` (`full`, the default of vaultd, or `normal`).
    #[arg(long, default_value = "full")]
    synchronous: String,
    /// In-process daemon: log filter like vaultd's VAULT_LOG (default `info`, one line per
    /// call), written to a file in its data directory; `off` for none.
    #[arg(long, default_value = "info")]
    server_log: String,
    /// Scenarios to run (default all): check, seal-status, connect-seal-status,
    /// connect-tokenize, proxy-direct, proxy-inbound (in-process daemon only: one JSON request
    /// with a card field, to the upstream directly and through an inbound route), tokenize,
    /// tokenize-batch, detokenize, detokenize-batch.
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
}

/// What one call does.
#[derive(Clone, Debug)]
enum Scenario {
    Check,
    SealStatus,
    ConnectSealStatus,
    ConnectTokenize {
        template: String,
    },
    /// A JSON request with one card field to the echo upstream, directly.
    ProxyDirect {
        template: String,
    },
    /// The same request through the inbound proxy route (the card tokenized on the way).
    ProxyInbound {
        template: String,
    },
    Tokenize {
        template: String,
        batch: usize,
    },
    Detokenize {
        template: String,
        batch: usize,
    },
}

impl Scenario {
    fn kind(&self) -> &'static str {
        match self {
            Scenario::Check => "check",
            Scenario::SealStatus => "seal-status",
            Scenario::ConnectSealStatus => "connect-seal-status",
            Scenario::ConnectTokenize { .. } => "connect-tokenize",
            Scenario::ProxyDirect { .. } => "proxy-direct",
            Scenario::ProxyInbound { .. } => "proxy-inbound",
            Scenario::Tokenize { batch: 1, .. } => "tokenize",
            Scenario::Tokenize { .. } => "tokenize-batch",
            Scenario::Detokenize { batch: 1, .. } => "detokenize",
            Scenario::Detokenize { .. } => "detokenize-batch",
        }
    }

    fn label(&self) -> String {
        match self {
            Scenario::Check => "Health/Check (no auth, no audit)".into(),
            Scenario::SealStatus => "Admin/GetSealStatus (auth + audit)".into(),
            Scenario::ConnectSealStatus => "Connect JSON Admin/GetSealStatus".into(),
            Scenario::ConnectTokenize { template } => {
                format!("Connect JSON Tokenize `{template}` ×1")
            }
            Scenario::ProxyDirect { template } => {
                format!("HTTP POST to the upstream directly ({template} field)")
            }
            Scenario::ProxyInbound { template } => {
                format!("HTTP POST through the inbound route (`{template}`)")
            }
            Scenario::Tokenize { template, batch } => format!("Tokenize `{template}` ×{batch}"),
            Scenario::Detokenize { template, batch } => {
                format!("Detokenize `{template}` ×{batch}")
            }
        }
    }

    fn items(&self) -> usize {
        match self {
            Scenario::Check
            | Scenario::SealStatus
            | Scenario::ConnectSealStatus
            | Scenario::ConnectTokenize { .. }
            | Scenario::ProxyDirect { .. }
            | Scenario::ProxyInbound { .. } => 1,
            Scenario::Tokenize { batch, .. } | Scenario::Detokenize { batch, .. } => *batch,
        }
    }
}

/// The clients of one connection.
#[derive(Clone)]
struct Clients {
    tokenizer: TokenizerClient<Channel>,
    admin: AdminClient<Channel>,
    health: HealthClient<Channel>,
    connect: ConnectClient,
    /// The in-process daemon's inbound proxy route, and the upstream behind it.
    proxy: Option<ConnectClient>,
    direct: Option<ConnectClient>,
}

/// A Connect JSON client: one HTTP/1.1 keep-alive connection per caller, opened on first use
/// (a clone starts without one, so every caller task has its own).
struct ConnectClient {
    addr: String,
    conn: Option<hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>>,
}

impl Clone for ConnectClient {
    fn clone(&self) -> Self {
        ConnectClient {
            addr: self.addr.clone(),
            conn: None,
        }
    }
}

impl ConnectClient {
    /// POST `body` (JSON) to `path`; the response's JSON, or why not.
    async fn call(
        &mut self,
        path: &str,
        key: &str,
        body: Vec<u8>,
    ) -> Result<serde_json::Value, String> {
        let headers = [
            (
                http::header::AUTHORIZATION.as_str(),
                format!("Bearer {key}"),
            ),
            ("connect-protocol-version", "1".to_owned()),
            ("connect-timeout-ms", CALL_TIMEOUT.as_millis().to_string()),
        ];
        self.post(path, &headers, body).await
    }

    /// POST a JSON `body` to `path` with `headers`; the response's JSON, or why not.
    async fn post(
        &mut self,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<serde_json::Value, String> {
        if self.conn.as_ref().is_none_or(|c| c.is_closed()) {
            let tcp = tokio::net::TcpStream::connect(&self.addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let _ = tcp.set_nodelay(true);
            let (send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(conn);
            self.conn = Some(send);
        }
        let send = self.conn.as_mut().ok_or("no connection")?;
        send.ready().await.map_err(|e| format!("connection: {e}"))?;
        let mut req = http::Request::post(path)
            .header(http::header::HOST, &self.addr)
            .header(http::header::CONTENT_TYPE, "application/json");
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status();
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        let json: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| format!("response JSON: {e}"))?;
        if status != http::StatusCode::OK {
            return Err(format!("HTTP {status}: {json}"));
        }
        Ok(json)
    }
}

/// A small PRNG (SplitMix64) for test card numbers: no cryptographic need here.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A Luhn-valid 16-digit number in the Visa test range `4…`.
    fn pan(&mut self) -> String {
        let body: String = std::iter::once('4')
            .chain((0..14).map(|_| char::from(b'0' + (self.next() % 10) as u8)))
            .collect();
        vault_test_support::with_luhn(&body)
    }
}

fn authed<T>(msg: T, key: &str) -> Result<Request<T>> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse()?);
    r.set_timeout(CALL_TIMEOUT);
    Ok(r)
}

fn tokenize_request(template: &str, values: Vec<String>) -> TokenizeRequest {
    vault_test_support::tokenize_request(template, values)
}

fn detokenize_request(template: &str, tokens: &[String]) -> DetokenizeRequest {
    vault_test_support::detokenize_request(template, tokens, "load test")
}

/// Why a call did not fully succeed (counted, the first one printed).
fn call_error(s: &Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// One call of `scenario`. `Err` is a failed call or a failed item.
async fn call(
    scenario: &Scenario,
    c: &mut Clients,
    key: &str,
    rng: &mut Rng,
    pool: &[String],
    cursor: &mut usize,
) -> Result<(), String> {
    match scenario {
        Scenario::Check => {
            let mut r = Request::new(HealthCheckRequest {
                service: String::new(),
            });
            r.set_timeout(CALL_TIMEOUT);
            c.health.check(r).await.map_err(|s| call_error(&s))?;
        }
        Scenario::SealStatus => {
            let r = authed(GetSealStatusRequest {}, key).map_err(|e| e.to_string())?;
            c.admin
                .get_seal_status(r)
                .await
                .map_err(|s| call_error(&s))?;
        }
        Scenario::ConnectSealStatus => {
            c.connect
                .call("/vault.v1.Admin/GetSealStatus", key, b"{}".to_vec())
                .await?;
        }
        Scenario::ConnectTokenize { template } => {
            let body =
                serde_json::json!({ "template": template, "items": [{ "value": rng.pan() }] });
            let resp = c
                .connect
                .call(
                    "/vault.v1.Tokenizer/Tokenize",
                    key,
                    body.to_string().into_bytes(),
                )
                .await?;
            if resp["results"][0]["token"]["token"].as_str().is_none() {
                return Err(format!("item: {}", resp["results"][0]));
            }
        }
        Scenario::ProxyDirect { template } | Scenario::ProxyInbound { template } => {
            let client = match scenario {
                Scenario::ProxyDirect { .. } => c.direct.as_mut(),
                _ => c.proxy.as_mut(),
            }
            .ok_or("the proxy scenarios need the in-process daemon")?;
            let body = format!(
                r#"{{"order": "o-1", "amount": 1250, "card": {{"number": "{}", "exp": "12/30"}}}}"#,
                rng.pan()
            );
            client
                .post(&format!("/pay/{template}"), &[], body.into_bytes())
                .await?;
        }
        Scenario::Tokenize { template, batch } => {
            let values = (0..*batch).map(|_| rng.pan()).collect();
            let r = authed(tokenize_request(template, values), key).map_err(|e| e.to_string())?;
            let resp = c
                .tokenizer
                .tokenize(r)
                .await
                .map_err(|s| call_error(&s))?
                .into_inner();
            for r in resp.results {
                if let Some(tokenize_result::Outcome::Error(e)) = r.outcome {
                    return Err(format!("item: {e:?}"));
                }
            }
        }
        Scenario::Detokenize { template, batch } => {
            let mut tokens = Vec::with_capacity(*batch);
            for _ in 0..*batch {
                tokens.push(pool[*cursor % pool.len()].clone());
                *cursor += 1;
            }
            let r =
                authed(detokenize_request(template, &tokens), key).map_err(|e| e.to_string())?;
            let resp = c
                .tokenizer
                .detokenize(r)
                .await
                .map_err(|s| call_error(&s))?
                .into_inner();
            for r in resp.results {
                if let Some(detokenize_result::Outcome::Error(e)) = r.outcome {
                    return Err(format!("item: {e:?}"));
                }
            }
        }
    }
    Ok(())
}

/// What one scenario at one concurrency measured.
struct Measured {
    scenario: Scenario,
    concurrency: usize,
    calls: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    /// Latency of successful calls, microseconds.
    hist: Histogram<u64>,
}

impl Measured {
    /// Add another round of the same scenario.
    fn merge(&mut self, other: Measured) -> Result<()> {
        self.calls += other.calls;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.elapsed += other.elapsed;
        self.hist
            .add(&other.hist)
            .map_err(|e| anyhow::anyhow!("histogram: {e}"))
    }

    fn calls_per_sec(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

struct Target {
    clients: Vec<Clients>,
    key: String,
}

/// Run `scenario` with `concurrency` callers until `until` (and at most `max` calls).
async fn drive(
    target: &Target,
    scenario: &Scenario,
    concurrency: usize,
    pool: Arc<Vec<String>>,
    for_time: Duration,
    max: Option<u64>,
    seed: u64,
) -> Result<Measured> {
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let until = start + for_time;
    let mut tasks = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        let mut clients = target.clients[i % target.clients.len()].clone();
        let key = target.key.clone();
        let scenario = scenario.clone();
        let pool = Arc::clone(&pool);
        let issued = Arc::clone(&issued);
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                .map_err(|e| anyhow::anyhow!("histogram: {e}"))?;
            let mut rng = Rng(seed ^ ((i as u64 + 1) << 32));
            let mut cursor = i * 997;
            let mut errors = 0u64;
            let mut first_error = None;
            loop {
                if Instant::now() >= until {
                    break;
                }
                if max.is_some_and(|m| issued.fetch_add(1, Ordering::Relaxed) >= m) {
                    break;
                }
                let t = Instant::now();
                match call(&scenario, &mut clients, &key, &mut rng, &pool, &mut cursor).await {
                    Ok(()) => {
                        let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                        hist.saturating_record(us.max(1));
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            anyhow::Ok((hist, errors, first_error))
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .map_err(|e| anyhow::anyhow!("histogram: {e}"))?;
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        let (h, e, f) = t.await.context("caller task")??;
        hist.add(&h)
            .map_err(|e| anyhow::anyhow!("histogram: {e}"))?;
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    let elapsed = start.elapsed();
    Ok(Measured {
        scenario: scenario.clone(),
        concurrency,
        calls: hist.len(),
        errors,
        first_error,
        elapsed,
        hist,
    })
}

/// Tokens to detokenize: `POOL` values per template, tokenized in batches.
async fn make_pool(target: &Target, template: &str, batch: usize) -> Result<Vec<String>> {
    let mut rng = Rng(0x5EED);
    let mut c = target.clients[0].clone();
    let mut tokens = Vec::with_capacity(POOL);
    let step = batch.clamp(1, 1000);
    while tokens.len() < POOL {
        let n = step.min(POOL - tokens.len());
        let values = (0..n).map(|_| rng.pan()).collect();
        let resp = c
            .tokenizer
            .tokenize(authed(tokenize_request(template, values), &target.key)?)
            .await
            .with_context(|| format!("tokenizing the detokenize pool of {template}"))?
            .into_inner();
        for r in resp.results {
            match r.outcome {
                Some(tokenize_result::Outcome::Token(t)) => tokens.push(t.token),
                other => bail!("tokenizing the pool of {template}: {other:?}"),
            }
        }
    }
    Ok(tokens)
}

async fn connect(
    endpoints: &[String],
    n: usize,
    proxy: Option<(String, String)>,
) -> Result<Vec<Clients>> {
    let mut out = Vec::with_capacity(n);
    // At least one connection per daemon; connections cycle through the daemons.
    for i in 0..n.max(endpoints.len()).max(1) {
        let endpoint = &endpoints[i % endpoints.len()];
        // One Endpoint::connect per connection: each is its own HTTP/2 connection.
        let channel = Endpoint::from_shared(endpoint.to_owned())?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connecting to {endpoint}"))?;
        let addr = endpoint
            .strip_prefix("http://")
            .unwrap_or(endpoint)
            .trim_end_matches('/')
            .to_owned();
        out.push(Clients {
            tokenizer: TokenizerClient::new(channel.clone()),
            admin: AdminClient::new(channel.clone()),
            health: HealthClient::new(channel),
            connect: ConnectClient { addr, conn: None },
            proxy: proxy.as_ref().map(|(p, _)| ConnectClient {
                addr: p.clone(),
                conn: None,
            }),
            direct: proxy.as_ref().map(|(_, u)| ConnectClient {
                addr: u.clone(),
                conn: None,
            }),
        });
    }
    Ok(out)
}

fn scenarios(cli: &Cli) -> Vec<Scenario> {
    let mut all = vec![
        Scenario::Check,
        Scenario::SealStatus,
        Scenario::ConnectSealStatus,
    ];
    for t in &cli.templates {
        all.push(Scenario::ConnectTokenize {
            template: t.clone(),
        });
        if cli.endpoint.is_none() {
            all.push(Scenario::ProxyDirect {
                template: t.clone(),
            });
            all.push(Scenario::ProxyInbound {
                template: t.clone(),
            });
        }
        for batch in [1, cli.batch] {
            all.push(Scenario::Tokenize {
                template: t.clone(),
                batch,
            });
        }
        for batch in [1, cli.batch] {
            all.push(Scenario::Detokenize {
                template: t.clone(),
                batch,
            });
        }
    }
    match &cli.only {
        Some(only) => all
            .into_iter()
            .filter(|s| only.iter().any(|o| o == s.kind()))
            .collect(),
        None => all,
    }
}

/// The Markdown table: one row per scenario and concurrency, with the ratio of each call rate
/// to the empty rpcs of the same round.
fn table(results: &[Measured]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| callers | rpc | calls | errors | calls/s | items/s | p50 ms | p99 ms | max ms | ÷ Check | ÷ GetSealStatus | ÷ twin (gRPC; direct upstream) |"
    );
    let _ = writeln!(
        out,
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for m in results {
        let base = |kind: &str| {
            results
                .iter()
                .find(|b| b.concurrency == m.concurrency && b.scenario.kind() == kind)
                .map(Measured::calls_per_sec)
        };
        let ratio = |b: Option<f64>| match b {
            Some(b) if b > 0.0 => format!("{:.0}%", 100.0 * m.calls_per_sec() / b),
            _ => "–".into(),
        };
        // A Connect scenario against the same call over gRPC, in the same round.
        let twin = match &m.scenario {
            Scenario::ConnectSealStatus => base("seal-status"),
            Scenario::ProxyInbound { template } => results
                .iter()
                .find(|b| {
                    b.concurrency == m.concurrency
                        && matches!(&b.scenario, Scenario::ProxyDirect { template: t } if t == template)
                })
                .map(Measured::calls_per_sec),
            Scenario::ConnectTokenize { template } => results
                .iter()
                .find(|b| {
                    b.concurrency == m.concurrency
                        && matches!(&b.scenario, Scenario::Tokenize { template: t, batch: 1 } if t == template)
                })
                .map(Measured::calls_per_sec),
            _ => None,
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.1} | {} | {} | {} |",
            m.concurrency,
            m.scenario.label(),
            m.calls,
            m.errors,
            m.calls_per_sec(),
            m.calls_per_sec() * m.scenario.items() as f64,
            m.ms(0.5),
            m.ms(0.99),
            m.hist.max() as f64 / 1000.0,
            ratio(base("check")),
            ratio(base("seal-status")),
            ratio(twin),
        );
    }
    out
}

/// An in-process dev daemon on its own runtime (so its scheduler is not the callers').
struct InProcess {
    runtime: tokio::runtime::Runtime,
    running: Option<vault_daemon::Running>,
    /// The inbound proxy route's address, and the echo upstream's.
    proxy: (String, String),
    _dir: tempfile::TempDir,
}

/// The upstream behind the benchmark's inbound route: reads the request, answers a small JSON.
async fn echo_upstream() -> Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let _ = http_body_util::BodyExt::collect(req.into_body()).await;
                        let mut r = http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(br#"{"order":"o-1","status":"created"}"#),
                        ));
                        r.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, std::convert::Infallible>(r)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The in-process daemon's policy: dev mode's role `all`, and the benchmark's inbound route.
const BENCH_POLICY: &str = r#"
[roles.all]
[[roles.all.grants]]
scopes = ["tokenize:*", "detokenize:*", "reveal:*", "delete:*", "admin:keys", "admin:audit", "admin:callers"]
[roles.edge]
[[roles.edge.grants]]
scopes = ["tokenize:*"]
[callers."route:bench"]
roles = ["edge"]
"#;

fn start_in_process(cli: &Cli) -> Result<(InProcess, String, String)> {
    let dir = match &cli.data_dir {
        Some(parent) => tempfile::tempdir_in(parent),
        None => tempfile::tempdir(),
    }
    .context("temporary data directory")?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    if cli.server_log != "off" {
        let file = std::fs::File::create(dir.path().join("vaultd.log"))?;
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.server_log))
            .with_writer(std::sync::Mutex::new(file))
            .init();
    }
    let mut cfg = Config::dev(&data);
    cfg.listen = "127.0.0.1:0".parse()?;
    cfg.reflection = false;
    cfg.synchronous = match cli.synchronous.as_str() {
        "full" => Synchronous::Full,
        "normal" => Synchronous::Normal,
        other => bail!("--synchronous: full or normal, not {other:?}"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("vaultd")
        .build()?;
    // An inbound route in front of an echo upstream, one rule per template.
    let upstream = runtime.block_on(echo_upstream())?;
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, BENCH_POLICY)?;
    cfg.policy = Some(policy);
    let rules: String = cli
        .templates
        .iter()
        .map(|t| {
            format!(
                "[[inbound.rules]]\nname = \"{t}\"\nmethod = \"POST\"\npath = \"/pay/{t}\"\n\
                 content_type = \"application/json\"\n\
                 fields = [{{ json = \"$.card.number\", template = \"{t}\" }}]\n"
            )
        })
        .collect();
    let routes = format!(
        "[[inbound]]\nname = \"bench\"\nlisten = \"127.0.0.1:0\"\n\
         upstream = \"http://{upstream}\"\nallow_private = true\n{rules}"
    );
    cfg.proxy = toml::from_str(&routes).context("the benchmark's proxy route")?;
    let running = runtime
        .block_on(vault_daemon::spawn(cfg))
        .context("starting the in-process daemon")?;
    let route = running
        .proxy_addr("bench")
        .context("the benchmark's inbound route")?;
    let key = running
        .dev_api_key()
        .context("dev mode gives an API key")?
        .to_owned();
    let endpoint = format!("http://{}", running.addr());
    Ok((
        InProcess {
            runtime,
            running: Some(running),
            proxy: (route.to_string(), upstream.to_string()),
            _dir: dir,
        },
        endpoint,
        key,
    ))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if cli.concurrency.contains(&0) || cli.batch == 0 {
        bail!("--concurrency and --batch must be at least 1");
    }
    if !cli.duration.is_finite()
        || cli.duration <= 0.0
        || cli.duration > 600.0
        || !(0.0..=60.0).contains(&cli.warmup)
    {
        bail!("--duration must be in (0, 600] seconds and --warmup in [0, 60]");
    }
    let (server, endpoints, key) = match (&cli.endpoint, &cli.api_key_file) {
        (Some(e), Some(f)) => {
            let key = std::fs::read_to_string(f)
                .with_context(|| format!("reading {}", f.display()))?
                .trim()
                .to_owned();
            (None, e.clone(), key)
        }
        _ => {
            let (s, e, k) = start_in_process(&cli)?;
            (Some(s), vec![e], k)
        }
    };
    for endpoint in &endpoints {
        let host = endpoint
            .split("://")
            .nth(1)
            .and_then(|rest| rest.rsplit_once(':'))
            .map(|(h, _)| h.trim_matches(['[', ']']))
            .unwrap_or_default();
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            bail!("--endpoint must be a loopback address (127.0.0.0/8, [::1], localhost)");
        }
    }

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("loadgen")
        .build()?;
    let proxy = server.as_ref().map(|s| s.proxy.clone());
    let outcome = client_rt.block_on(run(&cli, &endpoints, key, proxy));
    if let Some(mut s) = server
        && let Some(r) = s.running.take()
    {
        s.runtime.block_on(r.shutdown());
    }
    let (results, fsync) = outcome?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", table(&results).trim_end())?;
    writeln!(
        out,
        "\nthis disk's fdatasync of a 128-byte append, {} samples taken between the rounds \
         (same file system as the daemon's data): p50 {:.2} ms, p99 {:.2} ms",
        fsync.len(),
        fsync.value_at_quantile(0.5) as f64 / 1000.0,
        fsync.value_at_quantile(0.99) as f64 / 1000.0
    )?;
    let errors: u64 = results.iter().map(|m| m.errors).sum();
    if errors > 0 {
        for m in results.iter().filter(|m| m.errors > 0) {
            eprintln!(
                "{} at {} callers: {} errors, first: {}",
                m.scenario.label(),
                m.concurrency,
                m.errors,
                m.first_error.as_deref().unwrap_or("?")
            );
        }
        bail!("{errors} calls failed");
    }
    Ok(())
}

async fn run(
    cli: &Cli,
    endpoints: &[String],
    key: String,
    proxy: Option<(String, String)>,
) -> Result<(Vec<Measured>, Histogram<u64>)> {
    let target = Target {
        clients: connect(endpoints, cli.connections, proxy).await?,
        key,
    };
    let scenarios = scenarios(cli);
    let mut pools = std::collections::HashMap::new();
    for s in &scenarios {
        if let Scenario::Detokenize { template, .. } = s
            && !pools.contains_key(template)
        {
            let pool = make_pool(&target, template, cli.batch).await?;
            pools.insert(template.clone(), Arc::new(pool));
        }
    }
    let empty = Arc::new(Vec::new());
    let rounds = cli.rounds.max(1);
    let per_round = Duration::from_secs_f64(cli.duration / f64::from(rounds));
    let max = cli.requests.map(|n| n.div_ceil(u64::from(rounds)));
    let mut results = Vec::new();
    let mut seed = 1u64;
    let mut fsync = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let probe_dir = match &cli.data_dir {
        Some(parent) => tempfile::tempdir_in(parent),
        None => tempfile::tempdir(),
    }
    .context("a directory for the fdatasync probe")?;
    for &concurrency in &cli.concurrency {
        let mut round: Vec<Option<Measured>> = scenarios.iter().map(|_| None).collect();
        // Rounds interleave the scenarios, so that a slow patch of the disk (fsync latency on
        // a VM varies by the second) is shared by all of them rather than by whichever ran then.
        for r in 0..rounds {
            for (j, s) in scenarios.iter().enumerate() {
                let pool = match s {
                    Scenario::Detokenize { template, .. } => Arc::clone(&pools[template]),
                    _ => Arc::clone(&empty),
                };
                seed += 1;
                if r == 0 && cli.warmup > 0.0 {
                    drive(
                        &target,
                        s,
                        concurrency,
                        Arc::clone(&pool),
                        Duration::from_secs_f64(cli.warmup),
                        None,
                        seed << 40,
                    )
                    .await?;
                }
                let m = drive(&target, s, concurrency, pool, per_round, max, seed).await?;
                match &mut round[j] {
                    Some(acc) => acc.merge(m)?,
                    slot @ None => *slot = Some(m),
                }
            }
            fsync_probe(probe_dir.path(), 100, &mut fsync)?;
        }
        for m in round.into_iter().flatten() {
            eprintln!(
                "{:>3} callers  {:<40} {:>8.0} calls/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}",
                concurrency,
                m.scenario.label(),
                m.calls_per_sec(),
                m.ms(0.5),
                m.ms(0.99),
                m.errors
            );
            results.push(m);
        }
    }
    Ok((results, fsync))
}

/// `n` appends of 128 bytes to a file in `dir`, each followed by `fdatasync`, timed into
/// `hist` (µs): the disk's own durable-write latency, next to the calls that wait for it.
fn fsync_probe(dir: &std::path::Path, n: usize, hist: &mut Histogram<u64>) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("fsync-probe"))?;
    for _ in 0..n {
        let started = Instant::now();
        f.write_all(&[0x5a; 128])?;
        f.sync_data()?;
        hist.record(
            u64::try_from(started.elapsed().as_micros())
                .unwrap_or(u64::MAX)
                .max(1),
        )?;
    }
    Ok(())
}
