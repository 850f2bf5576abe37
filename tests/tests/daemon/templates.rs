//! Every built-in template, FPE and vaulted, round-trips through the daemon.

use vault_proto::v1::{RevealItem, RevealRequest, reveal_result, tokenize_result};

use crate::common::{Daemon, detokenize, req, tokenize, tokenize_req};

/// (template, values) for each built-in template.
const CASES: &[(&str, &[&str])] = &[
    ("pan", &["4111 1111 1111 1111", "5555555555554444"]),
    ("ssn", &["123-45-6789"]),
    ("digits", &["+1 (555) 010-9999"]),
    ("alphanumeric", &["Abc123XYZ"]),
    ("email", &["jane.doe@example.com"]),
    ("pan_vault", &["4111 1111 1111 1111", "4111 1111 1111 1111"]),
    ("pan_vault_fmt", &["4111111111111111"]),
    ("pan_vault_det", &["4111111111111111", "4111111111111111"]),
    ("ssn_vault", &["123-45-6789"]),
    ("digits_vault", &["12345"]),
    ("alphanumeric_vault", &["abc"]),
    ("email_vault", &["a@example.com"]),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_builtin_template_round_trips() {
    let mut d = Daemon::start(|_| {}).await;
    let mut c = d.tokenizer(Some("all")).await;
    for (template, values) in CASES {
        let tokens = tokenize(&mut c, None, template, values).await;
        for (t, v) in tokens.iter().zip(values.iter()) {
            assert_ne!(t, v, "{template}: token equals value");
        }
        let back = detokenize(&mut c, None, template, &tokens).await;
        assert_eq!(&back, values, "{template}");
    }
    // Deterministic and FPE templates give equal tokens for equal values; random ones do not.
    let det = tokenize(&mut c, None, "pan_vault_det", &["4111111111111111"; 2]).await;
    assert_eq!(det[0], det[1]);
    let rnd = tokenize(&mut c, None, "pan_vault", &["4111111111111111"; 2]).await;
    assert_ne!(rnd[0], rnd[1]);
    let fpe = tokenize(&mut c, None, "pan", &["4111111111111111"]).await;
    assert_eq!(fpe[0].len(), 16);
    assert!(fpe[0].starts_with("411111") && fpe[0].ends_with("1111"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_item_errors_and_masked_reveal() {
    let mut d = Daemon::start(|_| {}).await;
    let mut c = d.tokenizer(Some("all")).await;
    // One bad item does not fail the batch, and its error carries no value.
    let resp = c
        .tokenize(req(
            tokenize_req("pan", &["4111111111111111", "4111111111111112"]),
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        resp.results[0].outcome,
        Some(tokenize_result::Outcome::Token(_))
    ));
    match &resp.results[1].outcome {
        Some(tokenize_result::Outcome::Error(e)) => {
            assert_eq!(e.code, vault_proto::v1::ErrorCode::InvalidArgument as i32);
            assert!(!e.message.contains("4111111111111112"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    assert!(!resp.request_id.is_empty());

    let tokens = tokenize(&mut c, None, "pan_vault", &["4111 1111 1111 1111"]).await;
    let revealed = c
        .reveal(req(
            RevealRequest {
                request_id: Some("reveal-1".into()),
                template: "pan_vault".into(),
                key_version: None,
                purpose: "support call".into(),
                mask: None,
                items: vec![RevealItem {
                    token: tokens[0].clone(),
                }],
            },
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revealed.request_id, "reveal-1");
    match &revealed.results[0].outcome {
        Some(reveal_result::Outcome::Value(m)) => {
            assert!(m.masked_value.ends_with("1111"));
            assert!(!m.masked_value.contains("4111 1111 1111 1111"));
        }
        other => panic!("{other:?}"),
    }
    // Unknown template: NOT_FOUND for the call.
    let err = c
        .tokenize(req(tokenize_req("nope", &["1"]), None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    // Empty batch: INVALID_ARGUMENT.
    let err = c
        .tokenize(req(tokenize_req("pan", &[]), None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    d.stop().await;
}
