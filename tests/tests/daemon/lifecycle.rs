//! Sealed start, health, deadlines, load shedding, graceful shutdown, dev mode.

use std::time::Duration;

use tonic::{Code, Request};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use vault_daemon::config::Config;
use vault_proto::v1::tokenizer_client::TokenizerClient;
use vault_proto::v1::{
    GetSealStatusRequest, SealRequest, UnsealMethod, UnsealRequest, unseal_request,
};

use crate::common::{Daemon, code, config, req, tokenize, tokenize_req};

async fn health(d: &Daemon, service: &str) -> i32 {
    let mut h = HealthClient::new(d.channel(None).await);
    h.check(HealthCheckRequest {
        service: service.into(),
    })
    .await
    .unwrap()
    .into_inner()
    .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_daemon_refuses_and_reports_not_serving() {
    // First start creates the vault with a root key file; the second starts without it.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let mut d = Daemon::start_in(dir, cfg).await;
    assert_eq!(health(&d, "").await, ServingStatus::Serving as i32);
    d.stop().await;
    let mut cfg = config(d.dir.path());
    cfg.root_key_file = None;
    cfg.create_if_missing = false;
    let mut d = Daemon::start_in(d.dir, cfg).await;

    // Health answers without credentials.
    assert_eq!(health(&d, "").await, ServingStatus::NotServing as i32);
    assert_eq!(
        health(&d, "vault.v1.Tokenizer").await,
        ServingStatus::NotServing as i32
    );
    let mut c = d.tokenizer(Some("all")).await;
    let err = c
        .tokenize(req(tokenize_req("pan", &["4111111111111111"]), None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let mut admin = d.admin(Some("all")).await;
    let st = admin
        .get_seal_status(req(GetSealStatusRequest {}, None))
        .await
        .unwrap()
        .into_inner();
    assert!(st.sealed);
    assert_eq!(st.unseal_method, UnsealMethod::RootKey as i32);
    // A passphrase does not unseal a root-key vault.
    let err = admin
        .unseal(req(
            UnsealRequest {
                secret: Some(unseal_request::Secret::Passphrase("hunter2".into())),
                reset: false,
            },
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(!err.message().contains("hunter2"));
    // Other admin calls need an unsealed vault.
    let err = admin
        .list_callers(req(Default::default(), None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    // An unauthenticated caller gets UNAUTHENTICATED, not the seal state.
    let mut anon = d.tokenizer(None).await;
    assert_eq!(
        code(
            &anon
                .tokenize(req(tokenize_req("pan", &["4111111111111111"]), None))
                .await
        ),
        Code::Unauthenticated
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealing_flips_health_at_once() {
    let mut d = Daemon::start(|_| {}).await;
    let mut admin = d.admin(Some("all")).await;
    assert_eq!(health(&d, "").await, ServingStatus::Serving as i32);
    let st = admin
        .seal(req(SealRequest {}, None))
        .await
        .unwrap()
        .into_inner();
    assert!(st.sealed);
    assert_eq!(health(&d, "").await, ServingStatus::NotServing as i32);
    assert_eq!(
        health(&d, "vault.v1.Admin").await,
        ServingStatus::Serving as i32
    );
    let mut c = d.tokenizer(Some("all")).await;
    assert_eq!(
        code(
            &c.tokenize(req(tokenize_req("pan", &["4111111111111111"]), None))
                .await
        ),
        Code::FailedPrecondition
    );
    d.stop().await;
}

/// A call whose work outlives its deadline is answered DEADLINE_EXCEEDED by the server, well
/// before the work would have finished. The raw client has no timer of its own (tonic's would
/// race the server's answer and report CANCELLED), so the status seen is the server's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_exceeded() {
    let (mut d, key) =
        Daemon::start_dev(|cfg| cfg.testing.call_delay = Some(Duration::from_secs(2))).await;
    let started = std::time::Instant::now();
    let answer = crate::raw::unary(
        d.addr,
        "/vault.v1.Tokenizer/Tokenize",
        &[
            ("authorization", &format!("Bearer {key}")),
            ("grpc-timeout", "200m"),
        ],
        &prost::Message::encode_to_vec(&tokenize_req("pan", &["4111111111111111"])),
    )
    .await;
    assert_eq!(answer.grpc_status, Some(4), "DEADLINE_EXCEEDED: {answer:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "answered at the deadline, not after the work: {:?}",
        started.elapsed()
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_is_shed_not_queued() {
    let mut d = Daemon::start(|cfg| {
        cfg.limits.max_concurrent_calls = 1;
        cfg.testing.call_delay = Some(Duration::from_millis(600));
    })
    .await;
    let mut a = d.tokenizer(Some("all")).await;
    let mut b = d.tokenizer(Some("all")).await;
    let (ra, rb) = tokio::join!(
        a.tokenize(req(tokenize_req("pan", &["4111111111111111"]), None)),
        b.tokenize(req(tokenize_req("pan", &["5555555555554444"]), None)),
    );
    let mut codes = [code(&ra), code(&rb)];
    codes.sort_by_key(|c| *c as i32);
    assert_eq!(codes, [Code::Ok, Code::ResourceExhausted]);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_calls_in_flight() {
    let mut d =
        Daemon::start(|cfg| cfg.testing.call_delay = Some(Duration::from_millis(400))).await;
    let mut c = d.tokenizer(Some("all")).await;
    let call = tokio::spawn(async move {
        c.tokenize(req(tokenize_req("pan", &["4111111111111111"]), None))
            .await
    });
    // Wait (without sleeping a guessed time) until the call holds its slot.
    let running = d.running.as_ref().unwrap();
    while running.in_flight() == 0 {
        tokio::task::yield_now().await;
    }
    assert!(d.stop().await, "drain did not finish in time");
    let resp = call.await.unwrap().expect("the call in flight completed");
    assert_eq!(resp.into_inner().results.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_plaintext_with_the_dev_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::dev(dir.path().join("vault-data"));
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    let running = vault_daemon::spawn(cfg).await.unwrap();
    let key = running.dev_api_key().unwrap().to_owned();
    let addr = running.addr();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["dev-api-key", "root.key"] {
            let mode = std::fs::metadata(dir.path().join("vault-data").join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
    }
    let file_key = std::fs::read_to_string(dir.path().join("vault-data/dev-api-key")).unwrap();
    assert_eq!(file_key.trim(), key);
    let mut c = TokenizerClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let t = tokenize(&mut c, Some(&key), "email_vault", &["dev@example.com"]).await;
    assert!(t[0].starts_with("tok_"));
    // Without the key: UNAUTHENTICATED, loopback or not.
    let err = c
        .tokenize(Request::new(tokenize_req("pan", &["4111111111111111"])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(running.shutdown().await);

    // Plaintext on a non-loopback address is refused at start.
    let mut bad = Config::dev(dir.path().join("other"));
    bad.listen = "0.0.0.0:0".parse().unwrap();
    assert!(vault_daemon::spawn(bad).await.is_err());
}
