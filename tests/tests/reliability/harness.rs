//! Shared pieces: a small PRNG, Luhn-valid PANs, child processes (a daemon or an offline
//! rewrap) that can be SIGKILLed, in-process daemons, gRPC helpers, figures.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use vault_core::keys::root;
use vault_core::store::{Options, SqliteStore};
use vault_core::vault::{RootInit, TemplateConfig, Vault};
use vault_daemon::config::{Config, builtin_templates};
use vault_daemon::server::DB_FILE;
use vault_proto::v1::tokenizer_client::TokenizerClient;
use vault_proto::v1::{DetokenizeRequest, TokenizeRequest, detokenize_result, tokenize_result};

/// The environment variable that turns this binary into a child process (see [`child`]).
const CHILD_ENV: &str = "VAULT_RELIABILITY_CHILD";
/// The child's data directory.
const CHILD_DIR_ENV: &str = "VAULT_RELIABILITY_DIR";
/// The template every test uses: vaulted, opaque, non-deterministic.
pub(crate) const TEMPLATE: &str = "pan_vault";

/// Held by each test for its whole run: the figures (capacity, latency, kill timing) are
/// measured on a quiet machine, not against the other tests of this binary.
pub(crate) static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether the long variants run (`VAULT_LONG_TESTS=1`).
pub(crate) fn long() -> bool {
    std::env::var("VAULT_LONG_TESTS").is_ok_and(|v| v == "1")
}

/// A figure named `name` ([`vault_test_support::figure`]).
pub(crate) fn figure(name: &str, text: &str) {
    vault_test_support::figure(&format!("{name}: {text}"));
}

/// xorshift64*: reproducible from the printed seed, no dependency.
#[derive(Debug, Clone)]
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// Seeded from `VAULT_SEED` or the clock; the seed is printed so a failure can be replayed.
    pub(crate) fn new(test: &str) -> Rng {
        let seed = std::env::var("VAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            })
            | 1;
        eprintln!("{test}: VAULT_SEED={seed}");
        Rng(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }

    /// A random Luhn-valid 16-digit PAN starting with 4.
    pub(crate) fn pan(&mut self) -> String {
        let body: String = std::iter::once('4')
            .chain((0..14).map(|_| char::from(b'0' + (self.next() % 10) as u8)))
            .collect();
        vault_test_support::with_luhn(&body)
    }
}

/// The vault templates the daemon builds from its built-in set.
pub(crate) fn vault_templates() -> Vec<TemplateConfig> {
    builtin_templates()
        .iter()
        .map(|t| t.build().unwrap())
        .collect()
}

/// Write a fresh root key file (64 hex digits, 0600) as dev mode does.
pub(crate) fn write_root_key(path: &Path) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ std::process::id() as u64);
    let hex: String = (0..32)
        .map(|_| format!("{:02x}", rng.next() as u8))
        .collect();
    std::fs::write(path, format!("{hex}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// Create a vault in `data` (as `vaultd serve --dev` would on first start), unsealed.
pub(crate) fn create_vault(data: &Path) -> Vault {
    std::fs::create_dir_all(data).unwrap();
    let key = data.join("root.key");
    write_root_key(&key);
    let store = SqliteStore::create(data.join(DB_FILE), &Options::default()).unwrap();
    let (vault, _) = Vault::create(
        Arc::new(store),
        vault_templates(),
        RootInit::Key(root::from_file(&key).unwrap()),
    )
    .unwrap();
    vault
}

/// Open the vault in `data` and unseal it with its root key file (as `vaultctl` offline does).
pub(crate) fn open_vault(data: &Path) -> (Arc<SqliteStore>, Vault) {
    let store = Arc::new(SqliteStore::open(data.join(DB_FILE), &Options::default()).unwrap());
    // One node id for every child on this data directory, as vaultctl uses the directory's
    // node id: a child resumes the rewrap job a killed child held, without waiting for its lease.
    let vault = Vault::open(store.clone(), vault_templates())
        .unwrap()
        .with_node_id("reliability");
    vault
        .unseal_key(root::from_file(&data.join("root.key")).unwrap())
        .unwrap();
    (store, vault)
}

/// `PRAGMA integrity_check` on a separate read-only connection (the daemon may be running).
pub(crate) fn integrity(data: &Path) -> String {
    let c = rusqlite::Connection::open_with_flags(
        data.join(DB_FILE),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// One SQL count on a separate read-only connection.
pub(crate) fn count(data: &Path, sql: &str) -> u64 {
    let c = rusqlite::Connection::open_with_flags(
        data.join(DB_FILE),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// What a child process does.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Role {
    /// `vault_daemon::spawn(Config::dev(dir))` on `127.0.0.1:0`, until killed.
    Serve,
    /// Rewrap `pan_vault` to its active version in batches of 500, to the end (resumes an
    /// unfinished job), as `vaultctl keys rewrap --data-dir` does.
    Rewrap,
    /// Rotate `data/pan_vault`, then rewrap as above.
    RotateRewrap,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Serve => "serve",
            Role::Rewrap => "rewrap",
            Role::RotateRewrap => "rotate-rewrap",
        }
    }
}

/// Start this binary as a child playing `role` on `dir`.
pub(crate) fn start_child(role: Role, dir: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "harness::child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(CHILD_ENV, role.name())
        .env(CHILD_DIR_ENV, dir)
        .env("VAULT_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// SIGKILL (`Child::kill` sends SIGKILL on Unix) and reap.
pub(crate) fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A daemon in a child process.
#[derive(Debug)]
pub(crate) struct DaemonProcess {
    pub(crate) child: Child,
    pub(crate) addr: String,
    pub(crate) key: String,
}

impl DaemonProcess {
    /// Start a dev daemon on `dir` and wait for its `listening on` line.
    pub(crate) fn start(dir: &Path) -> DaemonProcess {
        let mut child = start_child(Role::Serve, dir);
        let out = child.stdout.take().unwrap();
        let mut lines = BufReader::new(out).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(a) = l.strip_prefix("listening on ") {
                        break a.trim().to_owned();
                    }
                }
                other => panic!("daemon child ended before listening: {other:?}"),
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let key = std::fs::read_to_string(dir.join("dev-api-key"))
            .unwrap()
            .trim()
            .to_owned();
        DaemonProcess { child, addr, key }
    }
}

/// The child's entry point: a no-op unless started by [`start_child`].
#[test]
#[ignore = "child process of the reliability tests; does nothing when run directly"]
fn child() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(CHILD_DIR_ENV).unwrap());
    match role.as_str() {
        "serve" => {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let mut cfg = Config::dev(&dir);
                cfg.listen = "127.0.0.1:0".parse().unwrap();
                let running = vault_daemon::spawn(cfg).await.unwrap();
                println!("listening on {}", running.addr());
                std::io::stdout().flush().unwrap();
                std::future::pending::<()>().await;
            });
        }
        "rewrap" | "rotate-rewrap" => {
            let (_store, vault) = open_vault(&dir);
            if role == "rotate-rewrap" {
                vault.rotate(&format!("data/{TEMPLATE}")).unwrap();
            }
            let job = vault.rewrap_start(TEMPLATE).unwrap();
            let job = vault.rewrap_run(job.id, 500, &mut |_| true).unwrap();
            println!("rewrap done: {} processed", job.processed);
        }
        other => panic!("unknown child role {other}"),
    }
}

/// A plaintext channel to a dev daemon.
pub(crate) async fn channel(addr: &str) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// A request with the API key and a deadline.
pub(crate) fn req<T>(msg: T, key: &str, deadline: Duration) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    r.set_timeout(deadline);
    r
}

pub(crate) fn tokenize_req(values: &[String]) -> TokenizeRequest {
    vault_test_support::tokenize_request(TEMPLATE, values.iter().cloned())
}

pub(crate) fn detokenize_req(tokens: &[String]) -> DetokenizeRequest {
    vault_test_support::detokenize_request(TEMPLATE, tokens, "reliability test")
}

/// Tokenize: the tokens if the call and every item succeeded, else the status (an item error
/// is reported as that item's code).
pub(crate) async fn tokenize(
    c: &mut TokenizerClient<Channel>,
    key: &str,
    values: &[String],
    deadline: Duration,
) -> Result<Vec<String>, Status> {
    let resp = c
        .tokenize(req(tokenize_req(values), key, deadline))
        .await?
        .into_inner();
    resp.results
        .into_iter()
        .map(|r| match r.outcome {
            Some(tokenize_result::Outcome::Token(t)) => Ok(t.token),
            Some(tokenize_result::Outcome::Error(e)) => {
                Err(Status::new(Code::from_i32(e.code), e.message))
            }
            None => Err(Status::internal("empty result")),
        })
        .collect()
}

/// Detokenize: one `Ok(value)` or item error per token, or the call's status.
pub(crate) async fn detokenize(
    c: &mut TokenizerClient<Channel>,
    key: &str,
    tokens: &[String],
    deadline: Duration,
) -> Result<Vec<Result<String, Status>>, Status> {
    let resp = c
        .detokenize(req(detokenize_req(tokens), key, deadline))
        .await?
        .into_inner();
    Ok(resp
        .results
        .into_iter()
        .map(|r| match r.outcome {
            Some(detokenize_result::Outcome::Value(v)) => Ok(v.value),
            Some(detokenize_result::Outcome::Error(e)) => {
                Err(Status::new(Code::from_i32(e.code), e.message))
            }
            None => Err(Status::internal("empty result")),
        })
        .collect())
}

/// Health of `service` (`""` is the whole server): the raw `ServingStatus` value.
pub(crate) async fn health(ch: Channel, service: &str) -> i32 {
    HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
        .unwrap_or(-1)
}

/// Wait until `f` is true (polling every 10 ms), at most `limit`; returns the time it took.
pub(crate) async fn wait_until<F, Fut>(limit: Duration, mut f: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if f().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// A dev config on a fresh directory, port 0, fast health probe.
pub(crate) fn dev_config(dir: &Path) -> Config {
    let mut cfg = Config::dev(dir);
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.limits.health_probe_interval_ms = 50;
    cfg.limits.drain_timeout_secs = 5;
    cfg
}

/// Resident and peak memory of a process, KiB (`/proc/<pid>/status`).
pub(crate) fn memory_kib(pid: &str) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The p-th percentile (0..=100) of sorted durations.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p / 100.0).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
