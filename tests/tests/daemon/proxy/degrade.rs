//! The flow while things fail: the processor refusing connections, timing out, failing with
//! 5xx, stalling or cutting its answer short; retries (only with an `Idempotency-Key`); the
//! circuit breaker; and the vault itself sealed, or its audit log unwritable, under the
//! inbound route. Every case fails closed, and the audit log says what the caller may not
//! know (an outcome that is unknown).

use std::time::{Duration, Instant};

use vault_daemon::audit::{FaultSwitch, Outcome};

use super::{
    CARD, CVV, Mode, Upstream, assert_canary_clean, daemon_with, daemon_with_config, events, post,
    raw, routes,
};
use crate::common::Daemon;

/// Tokenize a card and a code through the inbound route; their tokens.
async fn tokens(d: &Daemon, merchant: &Upstream) -> (String, String) {
    let before = merchant.seen().len();
    let body = format!(r#"{{"card": {{"number": "{CARD}", "cvv": "{CVV}"}}}}"#);
    let r = raw(d.route("shop"), None, &post("/pay", "", &body)).await;
    assert!(r.status < 300, "{} {}", r.status, r.text());
    let seen: serde_json::Value = serde_json::from_slice(&merchant.seen()[before].body).unwrap();
    (
        seen["card"]["number"].as_str().unwrap().to_owned(),
        seen["card"]["cvv"].as_str().unwrap().to_owned(),
    )
}

async fn charge(d: &Daemon, card: &str, cvv: &str, headers: &str) -> super::Reply {
    let body = format!(r#"{{"card": {{"number": "{card}", "cvv": "{cvv}"}}}}"#);
    raw(
        d.route("psp"),
        Some(Some("checkout")),
        &post("/charges", headers, &body),
    )
    .await
}

/// The delivery follow-ups of the outbound route, in order.
fn deliveries(d: &Daemon) -> Vec<(Outcome, String)> {
    events(d)
        .into_iter()
        .filter(|e| e.route.as_deref() == Some("outbound:psp/charge"))
        .filter_map(|e| Some((e.outcome, e.detail?)))
        .collect()
}

#[tokio::test]
async fn processor_refusing_connections_sends_nothing_and_gives_the_code_back() {
    let merchant = Upstream::start(Mode::Json(200, "{}".into()), false).await;
    let gone = Upstream::start(Mode::Echo, true).await;
    let (m, p) = (merchant.addr, gone.addr);
    drop(gone);
    let mut d = daemon_with(|dir| routes(dir, m, p, "")).await;
    let (card, cvv) = tokens(&d, &merchant).await;
    for _ in 0..2 {
        // The code's one use is given back each time: nothing was sent.
        let r = charge(&d, &card, &cvv, "").await;
        assert_eq!(r.status, 502, "{}", r.text());
        assert_eq!(r.json()["error"], "upstream_unreachable");
    }
    let ds = deliveries(&d);
    assert_eq!(ds.len(), 2, "{ds:?}");
    for (outcome, detail) in ds {
        assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
        assert!(
            detail.contains("not delivered") && detail.contains("1 single-use"),
            "{detail}"
        );
    }
    d.stop().await;
    assert_canary_clean(&d);
}

#[tokio::test]
async fn processor_timing_out_is_a_504_and_an_unknown_outcome() {
    let merchant = Upstream::start(Mode::Json(200, "{}".into()), false).await;
    let psp = Upstream::start(Mode::Hang, true).await;
    let (m, p) = (merchant.addr, psp.addr);
    let mut d = daemon_with(|dir| routes(dir, m, p, "")).await;
    for mode in [Mode::Hang, Mode::Stall] {
        psp.set(mode.clone());
        let (card, cvv) = tokens(&d, &merchant).await;
        let started = Instant::now();
        let r = charge(&d, &card, &cvv, "").await;
        assert_eq!(r.status, 504, "{mode:?}: {}", r.text());
        // The route's 1.5 s deadline, not the processor's 30 s.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
    let ds = deliveries(&d);
    assert_eq!(ds.len(), 2);
    assert!(
        ds.iter().all(|(o, _)| matches!(o, Outcome::Unknown { .. })),
        "{ds:?}"
    );
    d.stop().await;
    assert_canary_clean(&d);
}

#[tokio::test]
async fn processor_5xx_and_cut_answers() {
    let merchant = Upstream::start(Mode::Json(200, "{}".into()), false).await;
    // Echoed as sent, and spaced as a person would write it.
    let echo_card =
        format!(r#"{{"error":"card {CARD} declined", "display": "4111 1111-1111 1111"}}"#);
    let psp = Upstream::start(Mode::Json(500, echo_card), true).await;
    let (m, p) = (merchant.addr, psp.addr);
    let mut d = daemon_with(|dir| routes(dir, m, p, "")).await;
    let (card, cvv) = tokens(&d, &merchant).await;
    // A 5xx is the processor's answer: passed back, with the card it echoed scrubbed.
    let r = charge(&d, &card, &cvv, "").await;
    assert_eq!(r.status, 500);
    assert!(
        !r.text().contains(CARD) && r.text().contains(&card),
        "{}",
        r.text()
    );
    assert!(!r.text().contains("4111 1111"), "{}", r.text());

    psp.set(Mode::Truncate);
    let (card, cvv) = tokens(&d, &merchant).await;
    let r = charge(&d, &card, &cvv, "").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream_incomplete");
    let ds = deliveries(&d);
    assert!(matches!(ds[0].0, Outcome::Ok), "{ds:?}");
    assert!(matches!(ds[1].0, Outcome::Unknown { .. }), "{ds:?}");
    d.stop().await;
    assert_canary_clean(&d);
}

#[tokio::test]
async fn retries_only_with_an_idempotency_key() {
    let merchant = Upstream::start(Mode::Json(200, "{}".into()), false).await;
    let ok = Mode::Json(200, r#"{"status":"approved"}"#.into());
    let psp = Upstream::start(Mode::FailFirst(1, Box::new(ok.clone())), true).await;
    let (m, p) = (merchant.addr, psp.addr);
    let retry = "retry = { attempts = 3, backoff_ms = 50 }";
    let mut d = daemon_with(|dir| routes(dir, m, p, retry)).await;

    let (card, cvv) = tokens(&d, &merchant).await;
    let r = charge(&d, &card, &cvv, "idempotency-key: order-1\r\n").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = psp.seen();
    assert_eq!(seen.len(), 2, "one failure, one retry");
    assert!(
        seen.iter()
            .all(|s| s.header("idempotency-key").as_deref() == Some("order-1"))
    );
    // Both attempts carried the code, revealed once.
    assert!(seen.iter().all(|s| s.text().contains(CVV)));

    psp.set(Mode::FailFirst(1, Box::new(ok)));
    let (card, cvv) = tokens(&d, &merchant).await;
    let r = charge(&d, &card, &cvv, "").await;
    assert_eq!(r.status, 503, "no key, no retry: {}", r.text());
    assert_eq!(psp.seen().len(), 3);
    d.stop().await;
    assert_canary_clean(&d);
}

#[tokio::test]
async fn the_breaker_opens_and_refuses_before_revealing() {
    let merchant = Upstream::start(Mode::Json(200, "{}".into()), false).await;
    let psp = Upstream::start(Mode::Json(502, "{}".into()), true).await;
    let (m, p) = (merchant.addr, psp.addr);
    let breaker = "breaker = { failures = 2, open_ms = 60000 }";
    let mut d = daemon_with(|dir| routes(dir, m, p, breaker)).await;
    for _ in 0..2 {
        let (card, cvv) = tokens(&d, &merchant).await;
        assert_eq!(charge(&d, &card, &cvv, "").await.status, 502);
    }
    let reveals = |d: &Daemon| {
        events(d)
            .iter()
            .filter(|e| e.route.as_deref() == Some("outbound:psp/charge") && e.detail.is_none())
            .count()
    };
    assert_eq!(reveals(&d), 2);
    let (card, cvv) = tokens(&d, &merchant).await;
    let started = Instant::now();
    let r = charge(&d, &card, &cvv, "").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "circuit_open");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(psp.seen().len(), 2, "nothing sent while open");
    assert_eq!(reveals(&d), 2, "nothing revealed while open");
    d.stop().await;
}

#[tokio::test]
async fn inbound_fails_closed() {
    let merchant = Upstream::start(Mode::Json(200, "{}".into()), false).await;
    let psp = Upstream::start(Mode::Echo, true).await;
    let (m, p) = (merchant.addr, psp.addr);
    let switch = FaultSwitch::new();
    let s = switch.clone();
    let mut d = daemon_with_config(
        |dir| routes(dir, m, p, ""),
        move |cfg| cfg.testing.audit_fault = Some(s),
    )
    .await;
    let shop = d.route("shop");
    // Not a card number, and a number where a string belongs: 422, nothing forwarded, the
    // value not echoed.
    for body in [
        r#"{"card": {"number": "4111111111111112"}}"#.to_owned(),
        format!(r#"{{"card": {{"number": {CARD}}}}}"#),
    ] {
        let r = raw(shop, None, &post("/pay", "", &body)).await;
        assert_eq!(r.status, 422, "{}", r.text());
        assert!(!r.text().contains("411111111111111"), "{}", r.text());
    }
    // The audit log cannot take the event: 503, nothing forwarded.
    switch.set(true);
    let body = format!(r#"{{"card": {{"number": "{CARD}"}}}}"#);
    let r = raw(shop, None, &post("/pay", "", &body)).await;
    assert_eq!(r.status, 503, "{}", r.text());
    switch.set(false);
    // Sealed: 503, nothing forwarded.
    let mut admin = d.admin(Some("all")).await;
    admin
        .seal(tonic::Request::new(vault_proto::v1::SealRequest::default()))
        .await
        .unwrap();
    let r = raw(shop, None, &post("/pay", "", &body)).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(merchant.seen().is_empty(), "{:?}", merchant.seen());
    d.stop().await;
    assert_canary_clean(&d);
}

#[tokio::test]
async fn inbound_on_a_full_disk_forwards_nothing() {
    let merchant = Upstream::start(Mode::Json(200, "{}".into()), false).await;
    let psp = Upstream::start(Mode::Echo, true).await;
    let (m, p) = (merchant.addr, psp.addr);
    let limit = vault_core::store::PageLimit::new();
    let l = limit.clone();
    let mut d = daemon_with_config(
        |dir| routes(dir, m, p, ""),
        move |cfg| cfg.testing.store_page_limit = Some(l),
    )
    .await;
    // Fill the database until it cannot grow: batches over gRPC, then single items (a small
    // write can still fit a page after a batch no longer does).
    limit.set(1);
    let mut c = d.tokenizer(Some("all")).await;
    let mut next = 0u64;
    for size in [100u64, 1] {
        let mut refused = false;
        for _ in 0..5_000 {
            let values: Vec<String> = (next..next + size)
                .map(vault_test_support::luhn_pan)
                .collect();
            next += size;
            let r = c
                .tokenize(crate::common::req(
                    vault_test_support::tokenize_request("pan_vault", values),
                    None,
                ))
                .await;
            if r.is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused, "the database never filled ({size} at a time)");
    }
    let body = format!(r#"{{"card": {{"number": "{CARD}"}}}}"#);
    let r = raw(d.route("shop"), None, &post("/pay", "", &body)).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "vault_unavailable");
    assert!(merchant.seen().is_empty(), "{:?}", merchant.seen());
    d.stop().await;
    assert_canary_clean(&d);
}
