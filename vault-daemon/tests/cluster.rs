//! Three real `vaultd` processes on one PostgreSQL database (the end-to-end test):
//! - they start together on an empty schema (one creates the vault, the others open it);
//! - concurrent tokenize through all three; every token is detokenized through a different
//!   daemon than the one that made it; no token is lost or duplicated;
//! - a rotation through one daemon is used by the others (vaulted at once, FPE within the
//!   configured refresh bound);
//! - a rewrap started on one daemon, which is then killed with SIGKILL, is finished by another
//!   once the lease lapses; afterwards nothing is left under the old version and every token
//!   still detokenizes everywhere;
//! - each daemon's audit chain verifies (`vaultctl audit verify`), the killed one's included.
//!
//! Needs `VAULT_TEST_PG_URL` (`eval "$(bash tests/pg/start.sh)"`); without it the test says so on
//! stderr and returns, and fails instead under `VAULT_REQUIRE_PG=1` (CI).

mod support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{dev_api_key, dev_command, listening};
use tonic::transport::Channel;
use vault_proto::v1::admin_client::AdminClient;
use vault_proto::v1::tokenizer_client::TokenizerClient;
use vault_proto::v1::{
    GetRewrapRequest, RewrapState, RotateKeyRequest, StartRewrapRequest, TokenizeItem,
    TokenizeRequest, detokenize_result, rotate_key_request, tokenize_result,
};
use vault_test_support::{
    detokenize_request, figure, pg_url_or_skip, say, tokenize_request, with_key, with_luhn,
};

const LEASE_MS: u64 = 1500;
const REFRESH_MS: u64 = 300;

struct Daemon {
    child: Child,
    addr: String,
    key: String,
    data: PathBuf,
    /// The metrics listener's address, when started with one.
    metrics: Option<String>,
}

impl Daemon {
    /// Starts a dev daemon on the shared schema; `metrics` adds a metrics listener on a free
    /// loopback port.
    fn start(data: &Path, url: &str, schema: &str, metrics: bool) -> Child {
        let mut cmd = dev_command(data, "127.0.0.1:0");
        if metrics {
            cmd.env("VAULT_METRICS_LISTEN", "127.0.0.1:0");
        }
        cmd.env("VAULT_DATABASE_URL", url)
            .env("VAULT_DATABASE_SCHEMA", schema)
            .env("VAULT_REWRAP_LEASE_MS", LEASE_MS.to_string())
            .env("VAULT_KEY_REFRESH_MS", REFRESH_MS.to_string())
            .spawn()
            .unwrap()
    }

    fn ready(mut child: Child, data: &Path, metrics: bool) -> Daemon {
        let (addr, lines) = listening(&mut child);
        // Keep reading stdout in the background so the daemon never blocks on a full pipe;
        // the metrics line (after the dev-mode banner) is passed back.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("metrics on http://") {
                    let _ = tx.send(rest.split('/').next().unwrap_or_default().to_owned());
                }
            }
        });
        let metrics = metrics.then(|| {
            rx.recv_timeout(Duration::from_secs(30))
                .expect("the metrics line")
        });
        let key = dev_api_key(data);
        Daemon {
            child,
            addr,
            key,
            data: data.to_owned(),
            metrics,
        }
    }

    /// `GET /metrics` from the metrics listener (HTTP/1.1, one request).
    fn scrape(&self) -> String {
        use std::io::{Read, Write};
        let addr = self.metrics.as_deref().expect("started with metrics");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        out
    }

    async fn tokenizer(&self) -> TokenizerClient<Channel> {
        TokenizerClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    async fn admin(&self) -> AdminClient<Channel> {
        AdminClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Daemon 0's metrics after the load: the PostgreSQL pool's state and the store's commits.
fn pool_metrics(d: &Daemon) {
    let text = d.scrape();
    let value = |name: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("{name} missing from /metrics"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    // Dev mode's pool size (`[database] pool_size`, default 16); the load opened connections.
    let max = value("vault_pg_pool_max_connections");
    let open = value("vault_pg_pool_open_connections");
    let idle = value("vault_pg_pool_idle_connections");
    assert!(
        max >= 1.0 && open >= 1.0 && open <= max,
        "max {max}, open {open}"
    );
    assert!(idle <= open, "idle {idle}, open {open}");
    assert_eq!(value("vault_pg_pool_waiting"), 0.0, "nothing in flight");
    let inserts = value("vault_store_commit_duration_seconds_count{op=\"insert_records\"}");
    assert!(inserts >= 1.0, "record commits counted: {inserts}");
    say(&format!(
        "metrics: pool max {max}, open {open}, idle {idle}; {inserts} record commits on daemon 0\n"
    ));
}

/// Luhn-valid 16-digit PAN number `i`.
fn pan(i: u64) -> String {
    with_luhn(&format!("4{:014}", i * 7919 + 13))
}

async fn tokenize(
    key: &str,
    c: &mut TokenizerClient<Channel>,
    template: &str,
    values: &[String],
) -> Vec<(String, u32)> {
    let resp = c
        .tokenize(with_key(
            tokenize_request(template, values.iter().cloned()),
            key,
        ))
        .await
        .unwrap()
        .into_inner();
    resp.results
        .into_iter()
        .map(|r| match r.outcome {
            Some(tokenize_result::Outcome::Token(t)) => (t.token, t.key_version),
            other => panic!("tokenize failed: {other:?}"),
        })
        .collect()
}

async fn detokenize(d: &Daemon, template: &str, tokens: &[String]) -> Vec<String> {
    let mut c = d.tokenizer().await;
    let resp = c
        .detokenize(with_key(
            detokenize_request(template, tokens, "cluster test"),
            &d.key,
        ))
        .await
        .unwrap()
        .into_inner();
    resp.results
        .into_iter()
        .map(|r| match r.outcome {
            Some(detokenize_result::Outcome::Value(v)) => v.value,
            other => panic!("detokenize failed: {other:?}"),
        })
        .collect()
}

/// The limit of volatile tokens on a shared vault (SECURITY.md, "The proxy"): a card code lives
/// in the memory of the daemon that tokenized it; another daemon answers with its own reason,
/// not a generic "not found", and the issuing daemon still reveals it.
async fn volatile_codes_stay_with_their_daemon(daemons: &[Daemon]) {
    let mut c = daemons[0].tokenizer().await;
    let (token, _) = tokenize(&daemons[0].key, &mut c, "cvv", &["8254".to_owned()])
        .await
        .remove(0);
    let mut other = daemons[1].tokenizer().await;
    let resp = other
        .detokenize(with_key(
            detokenize_request("cvv", std::slice::from_ref(&token), "authorization"),
            &daemons[1].key,
        ))
        .await
        .unwrap()
        .into_inner();
    match &resp.results[0].outcome {
        Some(detokenize_result::Outcome::Error(e)) => {
            assert_eq!(e.reason, "VOLATILE_OTHER_PROCESS", "{e:?}");
        }
        other => panic!("another daemon revealed a volatile code: {other:?}"),
    }
    assert_eq!(detokenize(&daemons[0], "cvv", &[token]).await, vec!["8254"]);
    say(
        "volatile cvv on a shared vault: refused by another daemon (VOLATILE_OTHER_PROCESS), revealed by its own",
    );
}

async fn rotate(d: &Daemon, key_name: &str) -> u32 {
    d.admin()
        .await
        .rotate_key(with_key(
            RotateKeyRequest {
                key: Some(rotate_key_request::Key::KeyName(key_name.into())),
            },
            &d.key,
        ))
        .await
        .unwrap()
        .into_inner()
        .new_version
}

/// `pg_ctl` on the test cluster (as the `postgres` user when running as root, like
/// tests/pg/start.sh).
fn pg_ctl(dir: &str, bin: &str, args: &[&str]) {
    let pg_ctl = format!("{bin}/pg_ctl");
    let mut cmd = if rustix::process::geteuid().is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &pg_ctl]);
        c
    } else {
        Command::new(&pg_ctl)
    };
    let status = cmd
        .args([
            "-D",
            &format!("{dir}/data"),
            "-l",
            &format!("{dir}/server.log"),
            "-w",
        ])
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "pg_ctl {args:?}: {status:?}");
}

/// Loads daemons 0 and 2 with single tokenize calls, crashes PostgreSQL, checks that calls fail
/// (never succeed unrecorded) while it is down, restarts it, and detokenizes every token that
/// was acknowledged.
async fn database_crash(daemons: &[Daemon], pg_dir: &str, pg_bin: &str) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let mut loaders = Vec::new();
    for (n, i) in [0usize, 2].into_iter().enumerate() {
        let (addr, key, stop) = (
            daemons[i].addr.clone(),
            daemons[i].key.clone(),
            Arc::clone(&stop),
        );
        loaders.push(tokio::spawn(async move {
            let mut c = TokenizerClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            let (mut acked, mut failed) = (Vec::new(), 0u64);
            let mut k = 0u64;
            while !stop.load(Ordering::SeqCst) {
                k += 1;
                let value = pan(2_000_000 + n as u64 * 1_000_000 + k);
                let mut req = with_key(tokenize_request("pan_vault", [value.clone()]), &key);
                req.set_timeout(Duration::from_secs(10));
                match c.tokenize(req).await {
                    Ok(resp) => match resp.into_inner().results.pop().and_then(|r| r.outcome) {
                        Some(tokenize_result::Outcome::Token(t)) => acked.push((value, t.token)),
                        other => panic!("item outcome {other:?}"),
                    },
                    Err(status) => {
                        assert!(
                            matches!(
                                status.code(),
                                tonic::Code::Unavailable
                                    | tonic::Code::DeadlineExceeded
                                    | tonic::Code::Aborted
                            ),
                            "a failed call fails closed: {status:?}"
                        );
                        failed += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (acked, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg_ctl(pg_dir, pg_bin, &["-m", "immediate", "stop"]);
    let crashed = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    pg_ctl(pg_dir, pg_bin, &["-t", "60", "start"]);
    // Calls succeed again once the pools reconnect.
    let back = loop {
        let mut c = daemons[2].tokenizer().await;
        let req = with_key(
            tokenize_request("pan_vault", [pan(5_000_000)]),
            &daemons[2].key,
        );
        if c.tokenize(req).await.is_ok() {
            break crashed.elapsed();
        }
        assert!(
            crashed.elapsed() < Duration::from_secs(60),
            "never recovered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let (mut acked, mut failed) = (Vec::new(), 0);
    for l in loaders {
        let (a, f) = l.await.unwrap();
        acked.extend(a);
        failed += f;
    }
    assert!(failed > 0, "calls made while the database was down failed");
    for chunk in acked.chunks(300) {
        let toks: Vec<String> = chunk.iter().map(|(_, t)| t.clone()).collect();
        let values = detokenize(&daemons[0], "pan_vault", &toks).await;
        for ((v, _), got) in chunk.iter().zip(values) {
            assert_eq!(&got, v, "an acknowledged token survived the database crash");
        }
    }
    figure(&format!(
        "cluster_database_crash: {} tokens acknowledged around an immediate shutdown of \
         PostgreSQL, all detokenized after the restart (0 lost); {failed} calls failed closed \
         while it was down; serving again {} ms after the crash (1500 ms down)",
        acked.len(),
        back.as_millis()
    ));
}

/// Occurrences of any of `values` (16-digit PANs) in the bytes of every file under `dir`.
fn scan_for(dir: &Path, values: &[String]) -> usize {
    let wanted: HashSet<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
    let mut hits = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                hits += bytes
                    .windows(16)
                    .filter(|w| w[0] == b'4' && wanted.contains(w))
                    .count();
            }
        }
    }
    hits
}

/// One caller identity (`key:racer`, created on each daemon: registries are per daemon, the
/// identity is the name) sends one idempotency key through all three daemons at once: with a
/// different value per call exactly one record is made and every other call is refused with
/// ALREADY_EXISTS; with one value every call gets the same token.
async fn idempotency_race(daemons: &[Daemon]) {
    use vault_proto::v1::{CreateCallerRequest, ErrorCode, Operation, Scope};
    let mut keys = Vec::new();
    for d in daemons {
        let created = d
            .admin()
            .await
            .create_caller(with_key(
                CreateCallerRequest {
                    name: "racer".into(),
                    description: "idempotency race".into(),
                    roles: vec![],
                    scopes: vec![
                        Scope {
                            operation: Operation::Tokenize as i32,
                            template: "pan_vault".into(),
                        },
                        Scope {
                            operation: Operation::Detokenize as i32,
                            template: "pan_vault".into(),
                        },
                    ],
                    expires_at: None,
                },
                &d.key,
            ))
            .await
            .unwrap()
            .into_inner();
        keys.push(created.api_key);
    }
    for same in [false, true] {
        let idem = format!("cluster-race-{same}");
        let mut tasks = Vec::new();
        for (i, d) in daemons.iter().enumerate() {
            for k in 0..6u64 {
                let (addr, key, idem) = (d.addr.clone(), keys[i].clone(), idem.clone());
                let value = if same {
                    pan(500_000)
                } else {
                    pan(500_001 + i as u64 * 6 + k)
                };
                tasks.push(tokio::spawn(async move {
                    let mut c = TokenizerClient::connect(format!("http://{addr}"))
                        .await
                        .unwrap();
                    let resp = c
                        .tokenize(with_key(
                            TokenizeRequest {
                                request_id: None,
                                template: "pan_vault".into(),
                                key_version: None,
                                items: vec![TokenizeItem {
                                    value: value.clone(),
                                    idempotency_key: Some(idem),
                                    ..TokenizeItem::default()
                                }],
                            },
                            &key,
                        ))
                        .await
                        .unwrap()
                        .into_inner();
                    (value, resp.results[0].outcome.clone().unwrap())
                }));
            }
        }
        let mut created = 0;
        let mut refused = 0;
        let mut handed = HashSet::new();
        for t in tasks {
            match t.await.unwrap() {
                (value, tokenize_result::Outcome::Token(t)) => {
                    if !t.existing {
                        created += 1;
                    }
                    handed.insert(t.token.clone());
                    let got = detokenize(&daemons[0], "pan_vault", &[t.token]).await;
                    assert_eq!(got, vec![value], "a token of the caller's own value");
                }
                (_, tokenize_result::Outcome::Error(e)) => {
                    assert_eq!(e.code(), ErrorCode::AlreadyExists, "{e:?}");
                    refused += 1;
                }
            }
        }
        assert_eq!(
            created, 1,
            "same value {same}: one record across three daemons"
        );
        assert_eq!(handed.len(), 1);
        assert_eq!(refused, if same { 0 } else { 17 });
    }
    figure("cluster idempotency race: 18 calls, 3 daemons, 1 key: 1 record, 17 refused");
}

#[test]
fn three_daemons_one_postgres() {
    let Some(url) = pg_url_or_skip("three_daemons_one_postgres") else {
        return;
    };
    let schema = format!("cluster_{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    // One root key for the vault, copied to each daemon's data directory (dev mode reads
    // `<data-dir>/root.key`); each daemon keeps its own audit chain and caller registry.
    let root = format!("{}\n", "5a".repeat(32));
    let datas: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("d{i}"))).collect();
    for d in &datas {
        std::fs::create_dir_all(d).unwrap();
        let key = d.join("root.key");
        std::fs::write(&key, &root).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // All three start at once on the empty schema.
    let children: Vec<Child> = datas
        .iter()
        .enumerate()
        .map(|(i, d)| Daemon::start(d, &url, &schema, i == 0))
        .collect();
    let mut daemons: Vec<Daemon> = children
        .into_iter()
        .zip(&datas)
        .enumerate()
        .map(|(i, (c, d))| Daemon::ready(c, d, i == 0))
        .collect();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let values: Vec<String> = rt.block_on(async {
        // Concurrent tokenize through all three: 3 daemons x 4 callers x 25 calls x 4 values.
        let mut tasks = Vec::new();
        for (i, d) in daemons.iter().enumerate() {
            for caller in 0..4u64 {
                let (addr, key) = (d.addr.clone(), d.key.clone());
                tasks.push(tokio::spawn(async move {
                    let mut c = TokenizerClient::connect(format!("http://{addr}"))
                        .await
                        .unwrap();
                    let mut out = Vec::new();
                    for call in 0..25u64 {
                        let values: Vec<String> = (0..4u64)
                            .map(|k| pan(((i as u64 * 4 + caller) * 25 + call) * 4 + k))
                            .collect();
                        let tokens = tokenize(&key, &mut c, "pan_vault", &values).await;
                        out.extend(values.into_iter().zip(tokens).map(|(v, (t, _))| (v, t, i)));
                    }
                    out
                }));
            }
        }
        let mut made: Vec<(String, String, usize)> = Vec::new();
        for t in tasks {
            made.extend(t.await.unwrap());
        }
        assert_eq!(made.len(), 1200);
        let tokens: HashSet<&String> = made.iter().map(|(_, t, _)| t).collect();
        assert_eq!(tokens.len(), made.len(), "no token handed out twice");
        pool_metrics(&daemons[0]);

        idempotency_race(&daemons).await;
        volatile_codes_stay_with_their_daemon(&daemons).await;

        // Every token detokenized through a different daemon than the one that made it.
        let mut by_reader: HashMap<usize, Vec<(String, String)>> = HashMap::new();
        for (v, t, i) in &made {
            by_reader
                .entry((i + 1) % 3)
                .or_default()
                .push((v.clone(), t.clone()));
        }
        for (reader, pairs) in &by_reader {
            for chunk in pairs.chunks(200) {
                let toks: Vec<String> = chunk.iter().map(|(_, t)| t.clone()).collect();
                let values = detokenize(&daemons[*reader], "pan_vault", &toks).await;
                for ((v, _), got) in chunk.iter().zip(values) {
                    assert_eq!(&got, v);
                }
            }
        }

        // A rotation through daemon 0: the others write under the new version at once (their
        // stale insert is refused and retried after a reload) ...
        assert_eq!(rotate(&daemons[0], "data/pan_vault").await, 2);
        for d in &daemons[1..] {
            let mut c = d.tokenizer().await;
            let got = tokenize(&d.key, &mut c, "pan_vault", &[pan(900_001)]).await;
            assert_eq!(got[0].1, 2, "vaulted tokenize uses the rotated key at once");
        }
        // ... and FPE (nothing stored to refuse) within the refresh bound.
        let ssn = "123-45-6789".to_owned();
        assert_eq!(rotate(&daemons[0], "fpe/ssn").await, 2);
        tokio::time::sleep(Duration::from_millis(REFRESH_MS * 2 + 200)).await;
        for d in &daemons[1..] {
            let mut c = d.tokenizer().await;
            let got = tokenize(&d.key, &mut c, "ssn", std::slice::from_ref(&ssn)).await;
            assert_eq!(
                got[0].1, 2,
                "FPE tokenize uses the rotated key within the bound"
            );
        }

        // Rewrap started on daemon 1 in batches of one record; daemon 1 is killed once the job
        // is under way; another daemon finishes it after the lease lapses.
        let job = daemons[1]
            .admin()
            .await
            .start_rewrap(with_key(
                StartRewrapRequest {
                    key_name: "data/pan_vault".into(),
                    batch_size: Some(1),
                },
                &daemons[1].key,
            ))
            .await
            .unwrap()
            .into_inner();
        let conns: Vec<(String, String)> = daemons
            .iter()
            .map(|d| (d.addr.clone(), d.key.clone()))
            .collect();
        let get = |d: usize| {
            let (addr, key, id) = (conns[d].0.clone(), conns[d].1.clone(), job.job_id.clone());
            async move {
                AdminClient::connect(format!("http://{addr}"))
                    .await
                    .unwrap()
                    .get_rewrap(with_key(GetRewrapRequest { job_id: id }, &key))
                    .await
                    .unwrap()
                    .into_inner()
            }
        };
        let started = Instant::now();
        let at_kill = loop {
            let j = get(0).await;
            if j.processed >= 5 {
                break j;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "rewrap never started"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        daemons[1].kill();
        assert_eq!(at_kill.state(), RewrapState::Running);
        assert!(
            at_kill.processed < 1200,
            "killed while the job was still running ({} done)",
            at_kill.processed
        );
        let killed_at = Instant::now();
        let done = loop {
            let j = get(2).await;
            if j.state() == RewrapState::Succeeded {
                break j;
            }
            assert!(
                killed_at.elapsed() < Duration::from_secs(60),
                "rewrap not taken over: {j:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let took_over_after = killed_at.elapsed();
        figure(&format!(
            "cluster_rewrap_takeover: killed at {} records; completed by another daemon \
             {} ms after the kill (lease {LEASE_MS} ms); total processed {}",
            at_kill.processed,
            took_over_after.as_millis(),
            done.processed
        ));
        assert!(
            done.processed >= 1200 - 1,
            "every old record rewrapped once: {done:?}"
        );

        // Zero lost: every token still detokenizes, through both surviving daemons.
        let all: Vec<(String, String)> = made
            .iter()
            .map(|(v, t, _)| (v.clone(), t.clone()))
            .collect();
        for reader in [0usize, 2] {
            for chunk in all.chunks(300) {
                let toks: Vec<String> = chunk.iter().map(|(_, t)| t.clone()).collect();
                let values = detokenize(&daemons[reader], "pan_vault", &toks).await;
                for ((v, _), got) in chunk.iter().zip(values) {
                    assert_eq!(&got, v);
                }
            }
        }

        // The database crashes under load (immediate shutdown: no checkpoint, WAL replay at
        // restart). Calls fail closed while it is down; every token acknowledged before the
        // crash is there after the restart.
        match (
            std::env::var("VAULT_TEST_PG_DIR"),
            std::env::var("VAULT_TEST_PG_BIN"),
        ) {
            (Ok(pg_dir), Ok(pg_bin)) => {
                database_crash(&daemons, &pg_dir, &pg_bin).await;
            }
            _ => say(
                "SKIPPED the database-crash part of three_daemons_one_postgres: \
                 VAULT_TEST_PG_DIR/VAULT_TEST_PG_BIN not set (tests/pg/start.sh sets them)\n",
            ),
        }
        made.into_iter().map(|(v, _, _)| v).collect()
    });

    // The survivors stop cleanly; every daemon's audit chain verifies.
    for (i, d) in daemons.iter_mut().enumerate() {
        if i == 1 {
            continue;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &d.child.id().to_string()])
            .status();
        let exit = d.child.wait().unwrap();
        assert!(exit.success(), "daemon {i}: {exit:?}");
    }
    // No plaintext in the database's files (tables, indexes, WAL): every value tokenized above
    // is searched for in the raw bytes of the cluster's data directory.
    if let Ok(pg_dir) = std::env::var("VAULT_TEST_PG_DIR") {
        // Positive control: a value written in the clear (a metadata row) is found.
        let canary = pan(9_999_999);
        use vault_core::store::Store;
        let store = vault_daemon::pgstore::PgStore::connect(
            &url,
            &vault_daemon::pgstore::PgOptions {
                schema: Some(schema.clone()),
                ..Default::default()
            },
        )
        .unwrap();
        store
            .meta_put(&[("scan_canary", canary.as_bytes())])
            .unwrap();
        drop(store);
        assert!(
            scan_for(
                &Path::new(&pg_dir).join("data"),
                std::slice::from_ref(&canary)
            ) > 0,
            "the scan finds a value stored in the clear"
        );
        let hits = scan_for(&Path::new(&pg_dir).join("data"), &values);
        figure(&format!(
            "cluster_postgres_raw_scan: {} values searched in PostgreSQL's data directory \
             (heap, indexes, WAL): {hits} hits",
            values.len()
        ));
        assert_eq!(hits, 0, "plaintext found in PostgreSQL's files");
    }
    for d in &daemons {
        let out = Command::new(env!("CARGO_BIN_EXE_vaultctl"))
            .args(["audit", "verify", "--data-dir"])
            .arg(&d.data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "audit verify {}: {}{}",
            d.data.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
