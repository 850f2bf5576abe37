//! A forwarded end-user token (`x-end-user-token`): verified by the policy, the record's
//! `owner` metadata confirmed after the lookup (per item), and the subject audited.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tonic::Code;
use vault_proto::v1::{
    ErrorCode, RevealItem, RevealRequest, TokenizeItem, reveal_result, tokenize_result,
};

use crate::common::{Daemon, req, tokenize_req};

const RSA_KEY: &[u8] = include_bytes!("../../../vault-daemon/tests/data/end-user-rs256.pem");

pub(crate) fn jwt(sub: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("corp-1".into());
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = serde_json::json!({
        "iss": "https://id.example.com", "aud": "vault", "sub": sub, "exp": exp
    });
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(RSA_KEY).unwrap(),
    )
    .unwrap()
}

fn reveal(tokens: &[String], end_user: Option<&str>) -> tonic::Request<RevealRequest> {
    let mut r = req(
        RevealRequest {
            request_id: Some("eu-1".into()),
            template: "pan_vault".into(),
            key_version: None,
            purpose: "customer call".into(),
            mask: None,
            items: tokens
                .iter()
                .map(|t| RevealItem { token: t.clone() })
                .collect(),
        },
        None,
    );
    if let Some(t) = end_user {
        r.metadata_mut()
            .insert("x-end-user-token", t.parse().unwrap());
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_user_must_own_the_record() {
    let mut d = Daemon::start(|_| {}).await;
    let mut all = d.tokenizer(Some("all")).await;
    let mut tr = tokenize_req("pan_vault", &["4111111111111111", "5555555555554444"]);
    for (item, owner) in tr.items.iter_mut().zip(["cust-1", "cust-2"]) {
        *item = TokenizeItem {
            metadata: [("owner".to_owned(), owner.to_owned())].into(),
            ..item.clone()
        };
    }
    let tokens: Vec<String> = all
        .tokenize(req(tr, None))
        .await
        .unwrap()
        .into_inner()
        .results
        .into_iter()
        .map(|r| match r.outcome {
            Some(tokenize_result::Outcome::Token(t)) => t.token,
            other => panic!("{other:?}"),
        })
        .collect();

    let mut helpdesk = d.tokenizer(Some("helpdesk")).await;
    // No end-user token: the grant's condition fails.
    let err = helpdesk.reveal(reveal(&tokens, None)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("end-user token"),
        "{}",
        err.message()
    );
    // A forged one.
    let forged = jwt("cust-1").replace('.', ".x");
    let err = helpdesk
        .reveal(reveal(&tokens, Some(&forged)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // cust-1 sees its own card, not cust-2's.
    let resp = helpdesk
        .reveal(reveal(&tokens, Some(&jwt("cust-1"))))
        .await
        .unwrap()
        .into_inner();
    match &resp.results[0].outcome {
        Some(reveal_result::Outcome::Value(m)) => assert!(m.masked_value.ends_with("1111")),
        other => panic!("{other:?}"),
    }
    match &resp.results[1].outcome {
        Some(reveal_result::Outcome::Error(e)) => {
            // Answered as an unknown token: existence is not revealed to other end users.
            assert_eq!(e.code, ErrorCode::NotFound as i32);
            assert_eq!(e.reason, "TOKEN_NOT_FOUND");
            assert!(!e.message.contains("5555"));
        }
        other => panic!("{other:?}"),
    }
    d.stop().await;
    // The verified subject is in the audit event.
    let log = std::fs::read_to_string(d.data().join("audit.log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("\"eu-1\"") && l.contains("\"partial\""))
        .expect("reveal event");
    assert!(line.contains("\"subject\":\"cust-1\""), "{line}");
}
