//! The `cvv` template over gRPC: a random token, the code held in memory only, one reveal,
//! and each way a token ends said by its reason: used, expired, issued by another process
//! (the restart), masked reveal refused; nothing in any file the daemon wrote.

use tonic::Code;
use vault_proto::v1::{
    RevealItem, RevealRequest, TokenizeItem, TokenizeRequest, detokenize_result,
};

use vault_test_support::{contains_word, files_under};

use super::CVV;
use crate::common::{Daemon, config, detokenize_req, req, tokenize};

/// The reason of the one item of a detokenize, or its value.
async fn detokenize_one(d: &Daemon, token: &str) -> Result<String, String> {
    let mut c = d.tokenizer(Some("all")).await;
    let resp = c
        .detokenize(req(
            detokenize_req("cvv", &[token.to_owned()], "authorization"),
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    match resp.results[0].outcome.clone().unwrap() {
        detokenize_result::Outcome::Value(v) => Ok(v.value),
        detokenize_result::Outcome::Error(e) => Err(e.reason),
    }
}

#[tokio::test]
async fn card_codes_are_volatile() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let mut d = Daemon::start_in(dir, cfg).await;
    let mut c = d.tokenizer(Some("all")).await;
    let tokens = tokenize(&mut c, None, "cvv", &[CVV, "8254"]).await;
    assert!(
        tokens
            .iter()
            .all(|t| t.starts_with("cvt_") && t.len() == 39),
        "{tokens:?}"
    );
    assert_ne!(tokens[0], tokens[1]);

    // Not a code: a clear item error, the value not echoed.
    let bad = c
        .tokenize(req(
            vault_test_support::tokenize_request("cvv", ["12", "12345", "abc"]),
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(bad.results.iter().all(|r| matches!(
        &r.outcome,
        Some(vault_proto::v1::tokenize_result::Outcome::Error(e)) if e.reason == "VALUE_FORMAT"
    )));

    // One reveal, then gone: used.
    assert_eq!(detokenize_one(&d, &tokens[0]).await.as_deref(), Ok(CVV));
    assert_eq!(
        detokenize_one(&d, &tokens[0]).await,
        Err("VOLATILE_USED".into())
    );
    // A masked reveal would spend the use: refused.
    let masked = c
        .reveal(req(
            RevealRequest {
                request_id: None,
                template: "cvv".into(),
                key_version: None,
                purpose: "receipt".into(),
                mask: None,
                items: vec![RevealItem {
                    token: tokens[1].clone(),
                }],
            },
            None,
        ))
        .await;
    assert_eq!(masked.unwrap_err().code(), Code::FailedPrecondition);

    // A TTL of one second: expired.
    let short = c
        .tokenize(req(
            TokenizeRequest {
                template: "cvv".into(),
                items: vec![TokenizeItem {
                    value: "6019".into(),
                    ttl_seconds: Some(1),
                    ..TokenizeItem::default()
                }],
                ..TokenizeRequest::default()
            },
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    let Some(vault_proto::v1::tokenize_result::Outcome::Token(t)) = &short.results[0].outcome
    else {
        panic!("{short:?}");
    };
    assert!(t.expires_at.is_some());
    // At most an hour.
    let long = c
        .tokenize(req(
            TokenizeRequest {
                template: "cvv".into(),
                items: vec![TokenizeItem {
                    value: "6019".into(),
                    ttl_seconds: Some(3601),
                    ..TokenizeItem::default()
                }],
                ..TokenizeRequest::default()
            },
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        matches!(
            &long.results[0].outcome,
            Some(vault_proto::v1::tokenize_result::Outcome::Error(e)) if e.reason == "METADATA"
        ),
        "{long:?}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(
        detokenize_one(&d, &t.token).await,
        Err("VOLATILE_EXPIRED".into())
    );

    // A restart: the code was in the old process's memory only.
    d.stop().await;
    let cfg = config(d.dir.path());
    let mut d = Daemon::start_in(d.dir, cfg).await;
    assert_eq!(
        detokenize_one(&d, &tokens[1]).await,
        Err("VOLATILE_OTHER_PROCESS".into())
    );
    d.stop().await;
    for path in files_under(&d.data()) {
        let bytes = std::fs::read(&path).unwrap();
        for code in [CVV, "8254", "6019"] {
            assert!(
                !contains_word(&bytes, code.as_bytes()),
                "{code} in {}",
                path.display()
            );
        }
    }
}
