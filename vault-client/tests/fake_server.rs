//! The client's behaviour against an in-process FAKE `Tokenizer` server on 127.0.0.1:0.
//!
//! The fake is not a vault: its "token" for a value is `tok-<value>`, and it exists only to
//! count attempts, fail on command, sleep past deadlines and record what the client sent. The
//! end-to-end tests against the real daemon live in the workspace's `tests/` crate.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status};
use vault_client::proto as pb;
use vault_client::proto::tokenizer_server::{Tokenizer, TokenizerServer};
use vault_client::{
    BreakerPolicy, BreakerState, CallOptions, Config, Error, ExposeSecret, ItemErrorCode,
    RetryPolicy, Tls, TokenizeItem, VaultClient,
};

const API_KEY: &str = "test-api-key";

/// What the fake does and what it saw.
#[derive(Default)]
struct Fake {
    /// Calls (of any rpc) that reach the fake.
    calls: AtomicUsize,
    /// The next this-many calls fail with `fail_code`.
    fail_next: AtomicUsize,
    fail_code: Mutex<Option<Code>>,
    /// Every call sleeps this long before answering.
    delay: Mutex<Duration>,
    /// Items per call, in arrival order.
    batch_sizes: Mutex<Vec<usize>>,
    /// The idempotency keys of each tokenize call's items.
    idempotency_keys: Mutex<Vec<Vec<Option<String>>>>,
    /// The `grpc-timeout` header of each call.
    timeouts: Mutex<Vec<Option<String>>>,
}

impl Fake {
    fn fail(&self, n: usize, code: Code) {
        *self.fail_code.lock().unwrap() = Some(code);
        self.fail_next.store(n, Ordering::SeqCst);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Authentication, counting, injected failures and delays, shared by every rpc.
    async fn enter<T>(&self, request: &Request<T>, items: usize) -> Result<(), Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let timeout = request
            .metadata()
            .get("grpc-timeout")
            .map(|v| v.to_str().unwrap().to_owned());
        self.timeouts.lock().unwrap().push(timeout);
        let auth = request.metadata().get("authorization");
        if auth.map(|v| v.to_str().unwrap()) != Some(&format!("Bearer {API_KEY}")) {
            return Err(Status::unauthenticated("missing or bad API key"));
        }
        self.batch_sizes.lock().unwrap().push(items);
        let delay = *self.delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let failing = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            let code = self.fail_code.lock().unwrap().unwrap_or(Code::Unavailable);
            return Err(Status::new(code, "injected failure"));
        }
        Ok(())
    }
}

fn item_error(code: pb::ErrorCode, message: &str) -> pb::ItemError {
    pb::ItemError {
        code: code as i32,
        message: message.into(),
        reason: String::new(),
    }
}

/// The gRPC face of a shared [`Fake`].
struct Service(Arc<Fake>);

impl std::ops::Deref for Service {
    type Target = Fake;

    fn deref(&self) -> &Fake {
        &self.0
    }
}

#[tonic::async_trait]
impl Tokenizer for Service {
    async fn tokenize(
        &self,
        request: Request<pb::TokenizeRequest>,
    ) -> Result<Response<pb::TokenizeResponse>, Status> {
        self.idempotency_keys.lock().unwrap().push(
            request
                .get_ref()
                .items
                .iter()
                .map(|i| i.idempotency_key.clone())
                .collect(),
        );
        self.enter(&request, request.get_ref().items.len()).await?;
        let request = request.into_inner();
        let results = request
            .items
            .into_iter()
            .map(|item| pb::TokenizeResult {
                outcome: Some(if item.value.starts_with("bad") {
                    pb::tokenize_result::Outcome::Error(item_error(
                        pb::ErrorCode::InvalidArgument,
                        "value does not fit the template",
                    ))
                } else {
                    pb::tokenize_result::Outcome::Token(pb::Token {
                        token: format!("tok-{}", item.value),
                        key_version: 1,
                        existing: false,
                        expires_at: None,
                    })
                }),
            })
            .collect();
        Ok(Response::new(pb::TokenizeResponse {
            request_id: request.request_id.unwrap_or_default(),
            results,
        }))
    }

    async fn detokenize(
        &self,
        request: Request<pb::DetokenizeRequest>,
    ) -> Result<Response<pb::DetokenizeResponse>, Status> {
        self.enter(&request, request.get_ref().items.len()).await?;
        let results = request
            .into_inner()
            .items
            .into_iter()
            .map(|item| pb::DetokenizeResult {
                outcome: Some(match item.token.strip_prefix("tok-") {
                    Some(value) => pb::detokenize_result::Outcome::Value(pb::DetokenizedValue {
                        value: value.to_owned(),
                        key_version: 1,
                        metadata: Default::default(),
                        expires_at: None,
                    }),
                    None => pb::detokenize_result::Outcome::Error(item_error(
                        pb::ErrorCode::NotFound,
                        "no such token",
                    )),
                }),
            })
            .collect();
        Ok(Response::new(pb::DetokenizeResponse {
            request_id: String::new(),
            results,
        }))
    }

    async fn reveal(
        &self,
        request: Request<pb::RevealRequest>,
    ) -> Result<Response<pb::RevealResponse>, Status> {
        self.enter(&request, request.get_ref().items.len()).await?;
        let results = request
            .into_inner()
            .items
            .into_iter()
            .map(|item| {
                let value = item.token.strip_prefix("tok-").unwrap_or_default();
                let keep = value.len().saturating_sub(4);
                let masked = "*".repeat(keep) + &value[keep..];
                pb::RevealResult {
                    outcome: Some(pb::reveal_result::Outcome::Value(pb::MaskedValue {
                        masked_value: masked,
                        key_version: 1,
                        metadata: Default::default(),
                        expires_at: None,
                    })),
                }
            })
            .collect();
        Ok(Response::new(pb::RevealResponse {
            request_id: String::new(),
            results,
        }))
    }

    async fn delete_tokens(
        &self,
        request: Request<pb::DeleteTokensRequest>,
    ) -> Result<Response<pb::DeleteTokensResponse>, Status> {
        self.enter(&request, request.get_ref().items.len()).await?;
        let results = request
            .into_inner()
            .items
            .iter()
            .map(|_| pb::DeleteTokensResult {
                outcome: Some(pb::delete_tokens_result::Outcome::Deleted(pb::Deleted {})),
            })
            .collect();
        Ok(Response::new(pb::DeleteTokensResponse {
            request_id: String::new(),
            results,
        }))
    }
}

/// Serves a fresh fake on 127.0.0.1:0. The listener is bound before this returns, so the
/// client can connect at once (no sleep).
async fn serve() -> (Arc<Fake>, SocketAddr) {
    let fake = Arc::new(Fake::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = TokenizerServer::new(Service(fake.clone()));
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (fake, addr)
}

/// Serves a fresh fake over mTLS (test certificates in `tests/data/tls/`).
async fn serve_tls() -> (Arc<Fake>, SocketAddr) {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let fake = Arc::new(Fake::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            tls_file("server.pem"),
            tls_file("server.key"),
        ))
        .client_ca_root(Certificate::from_pem(tls_file("ca.pem")));
    let service = TokenizerServer::new(Service(fake.clone()));
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (fake, addr)
}

fn tls_file(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/tls/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Fast retries so the tests do not wait on backoff.
fn fast_retry() -> RetryPolicy {
    let mut retry = RetryPolicy::default();
    retry.initial_backoff = Duration::from_millis(1);
    retry.max_backoff = Duration::from_millis(5);
    retry
}

fn config(addr: SocketAddr) -> Config {
    Config::new(format!("http://{addr}"))
        .api_key(API_KEY.into())
        .retry(fast_retry())
}

async fn client(addr: SocketAddr) -> VaultClient {
    VaultClient::connect(config(addr)).await.unwrap()
}

#[tokio::test]
async fn round_trip_and_api_key_metadata() {
    let (fake, addr) = serve().await;
    let client = client(addr).await;
    let token = client.tokenize("pan", "4111111111111111").await.unwrap();
    assert_eq!(token.token, "tok-4111111111111111");
    let value = client
        .detokenize("pan", &token.token, "test")
        .await
        .unwrap();
    assert_eq!(value.value.expose_secret(), "4111111111111111");
    let masked = client.reveal("pan", &token.token, "receipt").await.unwrap();
    assert_eq!(masked.masked, "************1111");
    client.delete("pan", &token.token).await.unwrap();
    assert_eq!(fake.calls(), 4);

    // Without the key the fake refuses: the error is typed and not retried.
    let anonymous = VaultClient::connect(Config::new(format!("http://{addr}")))
        .await
        .unwrap();
    let before = fake.calls();
    let err = anonymous
        .detokenize("pan", "tok-1", "test")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthenticated), "{err:?}");
    assert_eq!(fake.calls(), before + 1);
}

#[tokio::test]
async fn single_item_errors_become_call_errors() {
    let (_fake, addr) = serve().await;
    let client = client(addr).await;
    let err = client.detokenize("pan", "nope", "test").await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    let err = client.tokenize("pan", "bad-value").await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidInput { index: None, .. }),
        "{err:?}"
    );
    // The value never appears in the error.
    assert!(!err.to_string().contains("bad-value"));
}

#[tokio::test]
async fn large_batches_are_chunked_in_order_with_item_indices_mapped_back() {
    let (fake, addr) = serve().await;
    let client = VaultClient::connect(config(addr).max_batch(1000))
        .await
        .unwrap();
    let bad = [5usize, 1500, 2499];
    let items: Vec<TokenizeItem> = (0..2500)
        .map(|i| {
            if bad.contains(&i) {
                TokenizeItem::new(format!("bad{i}"))
            } else {
                TokenizeItem::new(format!("{i:016}"))
            }
        })
        .collect();
    let results = client.tokenize_batch("pan", items).await.unwrap();
    assert_eq!(results.len(), 2500);
    assert_eq!(*fake.batch_sizes.lock().unwrap(), vec![1000, 1000, 500]);
    for (i, result) in results.iter().enumerate() {
        match result {
            Ok(token) => {
                assert!(!bad.contains(&i));
                assert_eq!(token.token, format!("tok-{i:016}"));
            }
            Err(e) => {
                assert!(bad.contains(&i), "item {i} failed: {e}");
                assert_eq!(e.index, i);
                assert_eq!(e.code, ItemErrorCode::InvalidArgument);
            }
        }
    }

    // Detokenize chunks the same way and keeps order; item errors carry global indices.
    let mut tokens: Vec<String> = (0..1203).map(|i| format!("tok-{i}")).collect();
    tokens[1201] = "garbage".into();
    let client = client.with_options(CallOptions::new().deadline(Duration::from_secs(5)));
    let values = client
        .detokenize_batch("pan", &tokens, "test")
        .await
        .unwrap();
    assert_eq!(
        fake.batch_sizes.lock().unwrap()[3..],
        [1000, 203],
        "detokenize chunks"
    );
    for (i, v) in values.iter().enumerate() {
        match v {
            Ok(v) => assert_eq!(v.value.expose_secret(), i.to_string()),
            Err(e) => assert_eq!((i, e.index, e.code), (1201, 1201, ItemErrorCode::NotFound)),
        }
    }

    // An empty batch is answered locally.
    assert!(
        client
            .tokenize_batch("pan", Vec::new())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn reads_are_retried_on_unavailable_and_resource_exhausted() {
    let (fake, addr) = serve().await;
    let client = client(addr).await;
    fake.fail(2, Code::Unavailable);
    let v = client.detokenize("pan", "tok-42", "test").await.unwrap();
    assert_eq!(v.value.expose_secret(), "42");
    assert_eq!(fake.calls(), 3);

    fake.fail(1, Code::ResourceExhausted);
    client.reveal("pan", "tok-4242", "test").await.unwrap();
    assert_eq!(fake.calls(), 5);

    // Attempts are bounded: 4 by default.
    fake.fail(10, Code::Unavailable);
    let err = client.detokenize("pan", "tok-1", "test").await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert_eq!(fake.calls(), 9);
}

#[tokio::test]
async fn other_codes_are_never_retried() {
    let (fake, addr) = serve().await;
    let client = client(addr).await;
    for (code, check) in [
        (Code::Internal, "Server"),
        (Code::FailedPrecondition, "FailedPrecondition"),
        (Code::DeadlineExceeded, "DeadlineExceeded"),
        (Code::PermissionDenied, "PermissionDenied"),
    ] {
        let before = fake.calls();
        fake.fail(1, code);
        let err = client.detokenize("pan", "tok-1", "test").await.unwrap_err();
        assert!(format!("{err:?}").starts_with(check), "{code:?}: {err:?}");
        assert_eq!(fake.calls(), before + 1, "{code:?} was retried");
    }
}

#[tokio::test]
async fn tokenize_is_retried_only_when_safe() {
    let (fake, addr) = serve().await;
    // A vaulted, non-deterministic template: a retry could mint a second token.
    let client = VaultClient::connect(config(addr).deterministic_template("pan-fpe"))
        .await
        .unwrap();
    fake.fail(1, Code::Unavailable);
    let err = client.tokenize("card", "4111").await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert_eq!(fake.calls(), 1, "unsafe tokenize was retried");

    // Deletes are never retried either.
    fake.fail(1, Code::Unavailable);
    assert!(client.delete("card", "tok-4111").await.is_err());
    assert_eq!(fake.calls(), 2);

    // A template declared deterministic in the config is retried.
    fake.fail(1, Code::Unavailable);
    client.tokenize("pan-fpe", "4111").await.unwrap();
    assert_eq!(fake.calls(), 4);

    // ... and so is one declared deterministic for the call.
    fake.fail(1, Code::Unavailable);
    client
        .with_options(CallOptions::new().deterministic(true))
        .tokenize("card", "4111")
        .await
        .unwrap();
    assert_eq!(fake.calls(), 6);

    // Caller-supplied idempotency keys on every item make it safe; one item without is not.
    fake.fail(1, Code::Unavailable);
    let items = vec![
        TokenizeItem::new("1").idempotency_key("order-1"),
        TokenizeItem::new("2").idempotency_key("order-2"),
    ];
    client.tokenize_batch("card", items).await.unwrap();
    assert_eq!(fake.calls(), 8);
    fake.fail(1, Code::Unavailable);
    let items = vec![
        TokenizeItem::new("1").idempotency_key("order-1"),
        TokenizeItem::new("2"),
    ];
    assert!(client.tokenize_batch("card", items).await.is_err());
    assert_eq!(fake.calls(), 9);

    // An over-long key is refused before anything is sent, naming the item.
    let items = vec![
        TokenizeItem::new("1"),
        TokenizeItem::new("2").idempotency_key("k".repeat(129)),
    ];
    let err = client.tokenize_batch("card", items).await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidInput { index: Some(1), .. }),
        "{err:?}"
    );
    assert_eq!(fake.calls(), 9);
}

#[tokio::test]
async fn auto_idempotency_keys_make_tokenize_retryable_with_stable_keys() {
    let (fake, addr) = serve().await;
    let client = VaultClient::connect(config(addr).auto_idempotency_keys(true))
        .await
        .unwrap();
    fake.fail(2, Code::Unavailable);
    let items = vec![
        TokenizeItem::new("a"),
        TokenizeItem::new("b").idempotency_key("mine"),
    ];
    client.tokenize_batch("card", items).await.unwrap();
    assert_eq!(fake.calls(), 3);
    let keys = fake.idempotency_keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| k == &keys[0]), "keys changed: {keys:?}");
    assert_eq!(keys[0][1].as_deref(), Some("mine"));
    assert!(keys[0][0].as_deref().unwrap().starts_with("vc-"));

    // Each call gets fresh keys.
    client.tokenize("card", "a").await.unwrap();
    let keys = fake.idempotency_keys.lock().unwrap().clone();
    assert_ne!(keys[3][0], keys[0][0]);
}

#[tokio::test]
async fn deadlines_are_sent_and_enforced() {
    let (fake, addr) = serve().await;
    let client = client(addr).await;
    *fake.delay.lock().unwrap() = Duration::from_secs(3);
    let started = Instant::now();
    let err = client
        .with_options(CallOptions::new().deadline(Duration::from_millis(200)))
        .detokenize("pan", "tok-1", "test")
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, Error::DeadlineExceeded), "{err:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(fake.calls(), 1, "a deadline is not retried");
    // The server was told the remaining time (grpc-timeout, e.g. "199999u").
    let timeout = fake.timeouts.lock().unwrap()[0].clone().unwrap();
    let (digits, unit) = timeout.split_at(timeout.len() - 1);
    let micros: u64 = match unit {
        "u" => digits.parse().unwrap(),
        "m" => digits.parse::<u64>().unwrap() * 1000,
        "n" => digits.parse::<u64>().unwrap() / 1000,
        other => panic!("unexpected unit {other}"),
    };
    assert!(micros <= 200_000 && micros > 100_000, "{timeout}");

    // The config default applies when no per-call deadline is set.
    let client = VaultClient::connect(config(addr).deadline(Duration::from_millis(150)))
        .await
        .unwrap();
    let err = client.reveal("pan", "tok-1", "test").await.unwrap_err();
    assert!(matches!(err, Error::DeadlineExceeded), "{err:?}");
}

#[tokio::test]
async fn retries_stop_at_the_deadline() {
    let (fake, addr) = serve().await;
    let mut retry = RetryPolicy::default();
    retry.max_attempts = 100;
    retry.initial_backoff = Duration::from_millis(40);
    retry.max_backoff = Duration::from_millis(40);
    let client = VaultClient::connect(
        config(addr)
            .retry(retry)
            .deadline(Duration::from_millis(300))
            .breaker(BreakerPolicy::disabled()),
    )
    .await
    .unwrap();
    fake.fail(1000, Code::Unavailable);
    let started = Instant::now();
    let err = client.detokenize("pan", "tok-1", "test").await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(600));
    // Between 20 and 40 ms per backoff within 300 ms: far fewer than 100 attempts.
    assert!(fake.calls() <= 16, "{} attempts", fake.calls());
}

#[tokio::test]
async fn retry_budget_limits_a_retry_storm() {
    let (fake, addr) = serve().await;
    let mut retry = fast_retry();
    retry.budget_burst = 3.0;
    retry.budget_floor_per_second = 0.0;
    retry.budget_ratio = 0.0;
    let client = VaultClient::connect(config(addr).retry(retry).breaker(BreakerPolicy::disabled()))
        .await
        .unwrap();
    fake.fail(usize::MAX, Code::Unavailable);
    for _ in 0..10 {
        assert!(client.detokenize("pan", "tok-1", "test").await.is_err());
    }
    // 10 first attempts and only the 3 retries the budget held.
    assert_eq!(fake.calls(), 13);
}

#[tokio::test]
async fn breaker_opens_fails_fast_and_recovers_after_a_probe() {
    let (fake, addr) = serve().await;
    let client = VaultClient::connect(config(addr).retry(RetryPolicy::none()).breaker({
        let mut b = BreakerPolicy::default();
        b.failure_threshold = 3;
        b.cool_down = Duration::from_millis(200);
        b
    }))
    .await
    .unwrap();
    fake.fail(usize::MAX, Code::Unavailable);
    for _ in 0..3 {
        let err = client.detokenize("pan", "tok-1", "test").await.unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    }
    assert_eq!(client.breaker_state(), BreakerState::Open);
    // Open: fails fast without reaching the daemon, for every clone.
    let clone = client.clone();
    for c in [&client, &clone] {
        let err = c.detokenize("pan", "tok-1", "test").await.unwrap_err();
        assert!(matches!(err, Error::CircuitOpen), "{err:?}");
    }
    assert_eq!(fake.calls(), 3);

    // After the cool-down a failed probe reopens it.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(client.breaker_state(), BreakerState::HalfOpen);
    assert!(client.detokenize("pan", "tok-1", "test").await.is_err());
    assert_eq!(fake.calls(), 4);
    assert_eq!(client.breaker_state(), BreakerState::Open);

    // The daemon recovers; after the cool-down the probe succeeds and closes the breaker.
    fake.fail(0, Code::Unavailable);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let v = client.detokenize("pan", "tok-7", "test").await.unwrap();
    assert_eq!(v.value.expose_secret(), "7");
    assert_eq!(client.breaker_state(), BreakerState::Closed);
}

#[tokio::test]
async fn a_daemon_that_is_down_is_unavailable_then_circuit_open() {
    // Bind and drop a listener to get a port nothing listens on.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let client = VaultClient::connect_lazy(config(addr).breaker({
        let mut b = BreakerPolicy::default();
        b.failure_threshold = 2;
        b
    }))
    .unwrap();
    let err = client.detokenize("pan", "tok-1", "test").await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    // The retries counted towards the breaker, which is now open.
    assert_eq!(client.breaker_state(), BreakerState::Open);
    let err = client.tokenize("pan", "4111").await.unwrap_err();
    assert!(matches!(err, Error::CircuitOpen), "{err:?}");
    // `connect` (eager) reports the transport failure.
    assert!(matches!(
        VaultClient::connect(config(addr)).await,
        Err(Error::Transport(_))
    ));
}

#[tokio::test]
async fn debug_of_client_shows_no_secrets() {
    let (_fake, addr) = serve().await;
    let client = client(addr).await;
    let debug = format!("{client:?}");
    assert!(!debug.contains(API_KEY), "{debug}");
    assert!(debug.contains("VaultClient"));
}

#[tokio::test]
async fn admin_client_has_no_breaker_and_reports_each_error() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let admin = vault_client::AdminClient::connect_lazy(config(addr)).unwrap();
    for _ in 0..8 {
        let err = admin.seal_status().await.unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    }
    let debug = format!("{admin:?}");
    assert!(!debug.contains(API_KEY), "{debug}");
}

#[tokio::test]
async fn mutual_tls_with_client_identity() {
    let (fake, addr) = serve_tls().await;
    let tls = Tls::new(tls_file("ca.pem")).domain_name("vault.test");
    let base = Config::new(format!("https://127.0.0.1:{}", addr.port()))
        .api_key(API_KEY.into())
        .retry(RetryPolicy::none());
    let client = VaultClient::connect(
        base.clone().tls(
            tls.clone()
                .identity(tls_file("client.pem"), tls_file("client.key").into()),
        ),
    )
    .await
    .unwrap();
    let token = client.tokenize("pan", "4111111111111111").await.unwrap();
    assert_eq!(token.token, "tok-4111111111111111");
    assert_eq!(fake.calls(), 1);

    // Without a client certificate the server refuses the handshake: nothing reaches it.
    // (With TLS 1.3 the client's side of the handshake completes before the server checks the
    // certificate, so the failure shows on the first call, as tonic's "transport error".)
    let result = match VaultClient::connect(base.tls(tls)).await {
        Ok(anonymous) => anonymous.tokenize("pan", "4111").await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(
        matches!(
            result,
            Err(Error::Transport(_)
                | Error::Unavailable { .. }
                | Error::Server {
                    code: Code::Unknown,
                    ..
                })
        ),
        "{result:?}"
    );
    assert_eq!(fake.calls(), 1);
}
