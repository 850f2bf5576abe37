//! The deadline promises from outside, through tonic clients and a raw HTTP/2 client:
//!
//! | promise | test |
//! |---|---|
//! | ARCHITECTURE.md request path: `DEADLINE_EXCEEDED` under the client's `grpc-timeout`; the audit event says what the caller was sent | `deadline_already_passed_does_no_work`, `sub_millisecond_deadlines`, `audit_says_what_the_caller_saw` |

use std::collections::HashMap;
use std::time::Duration;

use tonic::Code;
use vault_daemon::audit::Outcome;
use vault_proto::v1::TokenizeResponse;

use crate::common::{Daemon, PAN, events_of, outcomes, records, req, tokenize_req};

/// What a request id's events say the caller got: the last event's outcome.
fn final_outcome(d: &Daemon, request_id: &str) -> Option<Outcome> {
    events_of(d, request_id)
        .last()
        .map(|r| r.event.outcome.clone())
}

fn is_deadline_or_gone(o: &Outcome) -> bool {
    match o {
        Outcome::Failed { code } => code == "DEADLINE_EXCEEDED" || code == "CANCELLED",
        Outcome::Unknown { .. } => true,
        _ => false,
    }
}

/// Request path (ARCHITECTURE.md): a deadline that has already passed answers
/// DEADLINE_EXCEEDED — the server's own status, sent by the server (a raw HTTP/2 client that
/// enforces no deadline of its own reads it from the trailers) — and does no work: nothing is
/// stored, and the audit event says DEADLINE_EXCEEDED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_already_passed_does_no_work() {
    let (d, key) = Daemon::start_dev(|_| {}).await;
    let before = records(&d);
    for (i, timeout) in ["1n", "1u", "500u", "1m", "4m"].iter().enumerate() {
        let id = format!("raw-deadline-{i}");
        let mut r = tokenize_req("pan_vault", &[PAN]);
        r.request_id = Some(id.clone());
        let status = crate::raw::unary(
            d.addr,
            "/vault.v1.Tokenizer/Tokenize",
            &[
                ("authorization", &format!("Bearer {key}")),
                ("grpc-timeout", timeout),
            ],
            &prost::Message::encode_to_vec(&r),
        )
        .await;
        assert_eq!(
            status.grpc_status,
            Some(4),
            "{timeout}: DEADLINE_EXCEEDED, {status:?}"
        );
        assert_eq!(status.grpc_message.as_deref(), Some("deadline%20exceeded"));
        let events = events_of(&d, &id);
        assert_eq!(events.len(), 1, "{timeout}");
        assert_eq!(
            events[0].event.outcome,
            Outcome::Failed {
                code: "DEADLINE_EXCEEDED".into()
            }
        );
    }
    assert_eq!(records(&d), before, "no work was done");
    // A deadline with room answers.
    let mut r = tokenize_req("pan_vault", &[PAN]);
    r.request_id = Some("raw-room".into());
    let status = crate::raw::unary(
        d.addr,
        "/vault.v1.Tokenizer/Tokenize",
        &[
            ("authorization", &format!("Bearer {key}")),
            ("grpc-timeout", "10S"),
        ],
        &prost::Message::encode_to_vec(&r),
    )
    .await;
    assert_eq!(status.grpc_status, Some(0), "{status:?}");
    let resp: TokenizeResponse = prost::Message::decode(status.message.as_slice()).unwrap();
    assert_eq!(outcomes(resp).len(), 1);
    assert_eq!(final_outcome(&d, "raw-room"), Some(Outcome::Ok));
    let mut d = d;
    d.stop().await;
}

/// Twenty Tokenize calls with sub-millisecond deadlines (the observation: 17 answered OK and
/// audited OK, some clients saw CANCELLED while the audit said OK). Now none does work or is
/// audited OK, whatever the client saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_millisecond_deadlines() {
    let mut d = Daemon::start(|_| {}).await;
    let channel = d.channel(Some("all")).await;
    let calls: Vec<_> = (0..20u64)
        .map(|i| {
            let mut c = vault_proto::v1::tokenizer_client::TokenizerClient::new(channel.clone());
            tokio::spawn(async move {
                let mut r = tokenize_req("pan_vault", &[PAN]);
                r.request_id = Some(format!("sub-ms-{i}"));
                let mut r = req(r, None);
                r.set_timeout(Duration::from_micros(1 + i * 45));
                c.tokenize(r).await.map(|_| ())
            })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let r = call.await.unwrap();
        let code = crate::common::code(&r);
        assert_ne!(code, Code::Ok, "call {i}");
        // Events are durable before the server answers, but a client that gave up on its own
        // may look before the server's event is written: wait for it (bounded).
        let id = format!("sub-ms-{i}");
        let mut outcome = None;
        for _ in 0..100 {
            outcome = final_outcome(&d, &id);
            if outcome.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(o) = outcome {
            assert!(
                is_deadline_or_gone(&o),
                "call {i}: client saw {code:?}, audit {o:?}"
            );
        }
    }
    d.stop().await;
}

/// Deadlines around the time a call takes (a 30 ms delay; deadlines from 20 to 80 ms; a 20 ms
/// margin): some calls answer, some run out of time at each step of the path. For every call,
/// the last audit event of its request id says what the client saw: OK only when it got its
/// tokens, DEADLINE_EXCEEDED, CANCELLED or unknown when it did not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_says_what_the_caller_saw() {
    let mut d = Daemon::start(|cfg| {
        cfg.testing.call_delay = Some(Duration::from_millis(30));
        cfg.limits.deadline_margin_ms = 20;
    })
    .await;
    let channel = d.channel(Some("all")).await;
    let calls: Vec<_> = (0..40u64)
        .map(|i| {
            let mut c = vault_proto::v1::tokenizer_client::TokenizerClient::new(channel.clone());
            tokio::spawn(async move {
                let mut r = tokenize_req("pan_vault", &[PAN]);
                r.request_id = Some(format!("mixed-{i}"));
                let mut r = req(r, None);
                r.set_timeout(Duration::from_millis(20 + (i * 3) % 61));
                crate::common::code(&c.tokenize(r).await)
            })
        })
        .collect();
    let mut seen: HashMap<Code, usize> = HashMap::new();
    let mut results = Vec::new();
    for (i, call) in calls.into_iter().enumerate() {
        let code = call.await.unwrap();
        *seen.entry(code).or_default() += 1;
        results.push((i, code));
    }
    // Let follow-up events (a caller gone) reach the log.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, code) in results {
        let o = final_outcome(&d, &format!("mixed-{i}"))
            .unwrap_or_else(|| panic!("call {i}: no audit event"));
        if code == Code::Ok {
            assert_eq!(o, Outcome::Ok, "call {i}");
        } else {
            assert!(
                is_deadline_or_gone(&o),
                "call {i}: client saw {code:?}, audit {o:?}"
            );
        }
    }
    assert!(seen.get(&Code::Ok).copied().unwrap_or(0) > 0, "{seen:?}");
    assert!(seen.len() > 1, "some calls ran out of time: {seen:?}");
    d.stop().await;
}
