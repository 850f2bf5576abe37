//! `vault-client` end to end against the real daemon (`vault_daemon::spawn`, dev mode:
//! plaintext on loopback, built-in templates, the dev API key with every scope). What the fake
//! server tests of `vault-client` show in isolation is shown here against `vaultd`, with the
//! daemon's audit log as the witness of how many times a call really reached it.

use std::path::Path;
use std::time::{Duration, Instant};

use vault_client::proto as pb;
use vault_client::{
    AdminClient, BreakerPolicy, BreakerState, CallOptions, Config, Error, ExposeSecret,
    RetryPolicy, TokenizeItem, VaultClient,
};
use vault_daemon::Running;
use vault_daemon::config::Config as DaemonConfig;

#[allow(dead_code, unreachable_pub)]
#[path = "../../vault-client/examples/checkout.rs"]
mod checkout;

async fn start(dir: &Path, tweak: impl FnOnce(&mut DaemonConfig)) -> (Running, String, String) {
    let mut cfg = DaemonConfig::dev(dir);
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    tweak(&mut cfg);
    let running = vault_daemon::spawn(cfg).await.unwrap();
    let endpoint = format!("http://{}", running.addr());
    let key = running.dev_api_key().unwrap().to_owned();
    (running, endpoint, key)
}

fn config(endpoint: &str, key: &str) -> Config {
    Config::new(endpoint).api_key(key.to_owned().into())
}

async fn admin(endpoint: &str, key: &str) -> AdminClient {
    AdminClient::connect(config(endpoint, key)).await.unwrap()
}

/// Audit events recorded for one request id.
async fn audit_count(admin: &AdminClient, request_id: &str) -> usize {
    admin
        .query_audit_events(pb::QueryAuditEventsRequest {
            request_id: Some(request_id.to_owned()),
            ..Default::default()
        })
        .await
        .unwrap()
        .events
        .len()
}

async fn caller(admin: &AdminClient, name: &str, scopes: &[(pb::Operation, &str)]) -> String {
    let created = admin
        .create_caller(pb::CreateCallerRequest {
            name: name.into(),
            scopes: scopes
                .iter()
                .map(|(op, t)| pb::Scope {
                    operation: *op as i32,
                    template: (*t).into(),
                })
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    created.api_key.expose_secret().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_typed_and_idempotent_retries_return_the_same_token() {
    let dir = tempfile::tempdir().unwrap();
    let (running, endpoint, key) = start(dir.path(), |_| {}).await;
    let client = VaultClient::connect(config(&endpoint, &key)).await.unwrap();
    let admin = admin(&endpoint, &key).await;

    // Round trip, and the same idempotency key gives back the same token.
    let item = || TokenizeItem::new("4111111111111111").idempotency_key("order-1");
    let first = client.tokenize("pan_vault", item()).await.unwrap();
    let again = client.tokenize("pan_vault", item()).await.unwrap();
    assert_eq!(first.token, again.token);
    assert!(again.existing);
    let value = client
        .detokenize("pan_vault", &first.token, "e2e")
        .await
        .unwrap();
    assert_eq!(value.value.expose_secret(), "4111111111111111");

    // A reveal-only caller may not detokenize.
    let reveal_key = caller(&admin, "support", &[(pb::Operation::Reveal, "pan_vault")]).await;
    let support = VaultClient::connect(config(&endpoint, &reveal_key))
        .await
        .unwrap();
    let masked = support
        .reveal("pan_vault", &first.token, "help")
        .await
        .unwrap();
    assert!(masked.masked.ends_with("1111"));
    assert!(matches!(
        support.detokenize("pan_vault", &first.token, "help").await,
        Err(Error::PermissionDenied { .. })
    ));

    // A bad key is Unauthenticated.
    let bad = VaultClient::connect(config(&endpoint, "vk_not_a_key"))
        .await
        .unwrap();
    assert!(matches!(
        bad.tokenize("pan", "4111111111111111").await,
        Err(Error::Unauthenticated)
    ));

    // Sealed is its own error.
    admin.seal().await.unwrap();
    assert!(matches!(
        client.tokenize("pan", "4111111111111111").await,
        Err(Error::Sealed { .. })
    ));
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_only_where_safe_as_counted_by_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    // One call at a time, each slow: a second call meanwhile is shed (RESOURCE_EXHAUSTED).
    let (running, endpoint, key) = start(dir.path(), |c| {
        c.limits.max_concurrent_calls = 1;
        c.testing.call_delay = Some(Duration::from_millis(400));
    })
    .await;
    let mut retry = RetryPolicy::default();
    retry.max_attempts = 10;
    retry.initial_backoff = Duration::from_millis(100);
    retry.max_backoff = Duration::from_millis(200);
    retry.budget_floor_per_second = 100.0;
    let client = VaultClient::connect(config(&endpoint, &key).retry(retry))
        .await
        .unwrap();
    let token = client
        .tokenize("pan_vault", "4111111111111111")
        .await
        .unwrap()
        .token;

    let busy = {
        let c = client.clone();
        let t = token.clone();
        tokio::spawn(async move { c.detokenize("pan_vault", &t, "hold").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Not safe to repeat (vaulted, random, no idempotency key): one attempt, one event.
    let r = client
        .with_options(CallOptions::new().request_id("e2e-tokenize-once"))
        .tokenize("pan_vault", "5500000000000004")
        .await;
    assert!(matches!(r, Err(Error::ResourceExhausted { .. })), "{r:?}");
    // Safe (detokenize): retried until the slot frees, then succeeds.
    let busy2 = {
        let c = client.clone();
        let t = token.clone();
        tokio::spawn(async move { c.detokenize("pan_vault", &t, "hold").await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let d = client
        .with_options(CallOptions::new().request_id("e2e-detokenize-retried"))
        .detokenize("pan_vault", &token, "e2e")
        .await;
    busy.await.unwrap().unwrap();
    let _ = busy2.await.unwrap();
    assert!(d.is_ok(), "{d:?}");

    let admin = AdminClient::connect(config(&endpoint, &key).retry(RetryPolicy::none()))
        .await
        .unwrap()
        .with_deadline(Duration::from_secs(5));
    // Wait for the slot (admin calls are shed too while a call is running).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(audit_count(&admin, "e2e-tokenize-once").await, 1);
    assert!(audit_count(&admin, "e2e-detokenize-retried").await >= 2);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_and_chunking() {
    let dir = tempfile::tempdir().unwrap();
    let (running, endpoint, key) = start(dir.path(), |c| {
        c.limits.max_batch = 3;
    })
    .await;
    // Chunks of 3 keep the input order.
    let client = VaultClient::connect(config(&endpoint, &key).max_batch(3))
        .await
        .unwrap();
    let values: Vec<String> = (0..10).map(|i| format!("user{i}@example.com")).collect();
    let items: Vec<TokenizeItem> = values
        .iter()
        .map(|v| TokenizeItem::new(v.as_str()))
        .collect();
    let tokens: Vec<String> = client
        .with_options(CallOptions::new().request_id("e2e-chunks"))
        .tokenize_batch("email_vault", items)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap().token)
        .collect();
    let back = client
        .detokenize_batch("email_vault", &tokens, "e2e")
        .await
        .unwrap();
    for (v, b) in values.iter().zip(back) {
        assert_eq!(b.unwrap().value.expose_secret(), v);
    }
    let admin = admin(&endpoint, &key).await;
    assert_eq!(
        audit_count(&admin, "e2e-chunks").await,
        4,
        "10 items in chunks of 3"
    );
    running.shutdown().await;

    // A slow daemon: the client's deadline wins, promptly.
    let dir = tempfile::tempdir().unwrap();
    let (running, endpoint, key) = start(dir.path(), |c| {
        c.testing.call_delay = Some(Duration::from_millis(1500));
    })
    .await;
    let client = VaultClient::connect(
        config(&endpoint, &key)
            .deadline(Duration::from_millis(200))
            .retry(RetryPolicy::none()),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let r = client.tokenize("pan", "4111111111111111").await;
    assert!(matches!(r, Err(Error::DeadlineExceeded)), "{r:?}");
    assert!(started.elapsed() < Duration::from_millis(1000));
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_when_the_daemon_is_down_and_closes_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let (running, endpoint, key) = start(dir.path(), |_| {}).await;
    let addr = running.addr();
    let mut breaker = BreakerPolicy::default();
    breaker.failure_threshold = 2;
    breaker.cool_down = Duration::from_millis(300);
    let client = VaultClient::connect(
        config(&endpoint, &key)
            .breaker(breaker)
            .retry(RetryPolicy::none())
            .connect_timeout(Duration::from_millis(300))
            .deadline(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    let token = client.tokenize("pan", "4111111111111111").await.unwrap();
    running.shutdown().await;

    for _ in 0..2 {
        let r = client.detokenize("pan", &token.token, "e2e").await;
        assert!(matches!(r, Err(Error::Unavailable { .. })), "{r:?}");
    }
    assert_eq!(client.breaker_state(), BreakerState::Open);
    assert!(matches!(
        client.detokenize("pan", &token.token, "e2e").await,
        Err(Error::CircuitOpen)
    ));

    // Back on the same port with the same data: after the cool-down a probe closes it.
    let (running, _, _) = start(dir.path(), |c| c.listen = addr).await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    let v = client.detokenize("pan", &token.token, "e2e").await.unwrap();
    assert_eq!(v.value.expose_secret(), "4111111111111111");
    assert_eq!(client.breaker_state(), BreakerState::Closed);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_example_runs_against_the_dev_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let (running, endpoint, key) = start(dir.path(), |_| {}).await;
    let page = checkout::run(
        config(&endpoint, &key),
        "pan".into(),
        "4111111111111111".to_owned().into(),
    )
    .await
    .unwrap();
    assert!(page.contains("stored order 1001"), "{page}");
    assert!(page.contains("Paid with card"), "{page}");
    assert!(!page.contains("4111111111111111"), "{page}");
    assert!(!page.contains("unavailable"), "{page}");
    running.shutdown().await;
}

/// A loopback TCP relay to `target` that loses the first response: on its first connection it
/// passes everything until the server speaks after the client has been quiet for `quiet` (a
/// response, when the daemon takes longer than that to answer), and then closes both sides
/// instead of passing it on. Later connections are relayed as they are.
async fn lossy_relay(target: std::net::SocketAddr, quiet: Duration) -> std::net::SocketAddr {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let first = Arc::new(AtomicBool::new(true));
        // Bounded: a test makes a handful of connections.
        for _ in 0..16 {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let lossy = first.swap(false, Ordering::SeqCst);
            let server = tokio::net::TcpStream::connect(target).await.unwrap();
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let epoch = Instant::now();
            let last_client = Arc::new(AtomicU64::new(0));
            let lc = Arc::clone(&last_client);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = cr.read(&mut buf).await {
                    if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    lc.store(epoch.elapsed().as_millis() as u64 + 1, Ordering::SeqCst);
                }
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = sr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    // Milliseconds since the client last spoke (stored as elapsed + 1; 0: never).
                    let since = (epoch.elapsed().as_millis() as u64 + 1)
                        .saturating_sub(last_client.load(Ordering::SeqCst));
                    if lossy
                        && last_client.load(Ordering::SeqCst) > 0
                        && since >= quiet.as_millis() as u64
                    {
                        // The response: lost with the connection.
                        let _ = cw.shutdown().await;
                        return;
                    }
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// tokenizer.proto, `TokenizeItem.idempotency_key` ("Makes a retry safe"), through the client's
/// own retry path: the first response is lost with its connection after the daemon stored the
/// record, the client retries on UNAVAILABLE with the same (automatic) idempotency key, and
/// gets the same token back, marked existing; exactly one record was made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_lost_response_returns_the_same_token() {
    let dir = tempfile::tempdir().unwrap();
    let (running, endpoint, key) = start(dir.path(), |c| {
        c.testing.call_delay = Some(Duration::from_millis(300));
    })
    .await;
    let relay = lossy_relay(running.addr(), Duration::from_millis(150)).await;
    let mut retry = RetryPolicy::default();
    retry.max_attempts = 3;
    retry.initial_backoff = Duration::from_millis(50);
    retry.budget_floor_per_second = 100.0;
    let client = VaultClient::connect(
        config(&format!("http://{relay}"), &key)
            .retry(retry)
            .auto_idempotency_keys(true),
    )
    .await
    .unwrap();
    let got = client
        .with_options(CallOptions::new().request_id("e2e-lost-response"))
        .tokenize("pan_vault", "4111111111111111")
        .await
        .unwrap();
    let admin = admin(&endpoint, &key).await;
    let events = admin
        .query_audit_events(pb::QueryAuditEventsRequest {
            request_id: Some("e2e-lost-response".to_owned()),
            ..Default::default()
        })
        .await
        .unwrap()
        .events;
    assert!(
        got.existing,
        "the retry found the record the lost attempt made: {events:?}"
    );
    let direct = VaultClient::connect(config(&endpoint, &key)).await.unwrap();
    assert_eq!(
        direct
            .detokenize("pan_vault", &got.token, "e2e")
            .await
            .unwrap()
            .value
            .expose_secret(),
        "4111111111111111"
    );
    assert_eq!(
        audit_count(&admin, "e2e-lost-response").await,
        2,
        "two attempts reached it"
    );
    running.shutdown().await;
}
