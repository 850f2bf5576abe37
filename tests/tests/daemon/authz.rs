//! Who may do what: the authorization matrix (callers × operations × templates, every cell
//! asserted, over gRPC and again over Connect with the same answer), and the authentication
//! failures.

use tonic::Code;
use vault_proto::v1::{
    CreateCallerRequest, DeleteTokensItem, DeleteTokensRequest, GetSealStatusRequest, Operation,
    RevealItem, RevealRequest, RevokeCallerRequest, Scope, SetCallerScopesRequest,
};

use tonic::transport::Channel;
use vault_proto::v1::tokenizer_client::TokenizerClient;
use vault_proto::v1::{DetokenizeRequest, TokenizeRequest};

use crate::common::{Daemon, code, detokenize_req, pki, req, tokenize, tokenize_req};
use crate::connect::ConnectClient;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Tokenize,
    Detokenize,
    Reveal,
    Delete,
}

/// Two FPE templates and a vaulted one.
const TEMPLATES: [&str; 3] = ["pan", "pan_vault", "email"];

fn value(template: &str) -> &'static str {
    if template == "email" {
        "someone@example.com"
    } else {
        "4111111111111111"
    }
}

/// The expected code for one cell (derived from the test policy and the registry grants).
fn expected(caller: &str, op: Op, template: &str) -> Code {
    let allowed = match caller {
        "checkout" => op == Op::Tokenize,
        "payments" => matches!(op, Op::Tokenize | Op::Detokenize) && template != "email",
        "support" => op == Op::Reveal && template != "email",
        "key:analytics" => op == Op::Tokenize && template == "email",
        "key:ops" => op == Op::Delete,
        _ => false,
    };
    match (allowed, op, template) {
        (false, _, _) => Code::PermissionDenied,
        // FPE tokens store nothing: delete is refused for the template, once allowed.
        (true, Op::Delete, "pan" | "email") => Code::FailedPrecondition,
        (true, _, _) => Code::Ok,
    }
}

/// One cell's request, sent over either protocol.
enum Cell {
    Tokenize(TokenizeRequest),
    Detokenize(DetokenizeRequest),
    Reveal(RevealRequest),
    Delete(DeleteTokensRequest),
}

impl Cell {
    fn new(op: Op, t: &str, tokens: &[String]) -> Cell {
        match op {
            Op::Tokenize => Cell::Tokenize(tokenize_req(t, &[value(t)])),
            Op::Detokenize => Cell::Detokenize(detokenize_req(t, tokens, "matrix")),
            Op::Reveal => Cell::Reveal(RevealRequest {
                request_id: None,
                template: t.into(),
                key_version: None,
                purpose: "matrix".into(),
                mask: None,
                items: vec![RevealItem {
                    token: tokens[0].clone(),
                }],
            }),
            Op::Delete => Cell::Delete(DeleteTokensRequest {
                request_id: None,
                template: t.into(),
                items: vec![DeleteTokensItem {
                    token: tokens[0].clone(),
                }],
            }),
        }
    }

    async fn grpc(&self, c: &mut TokenizerClient<Channel>, key: Option<&str>) -> Code {
        match self {
            Cell::Tokenize(m) => code(&c.tokenize(req(m.clone(), key)).await),
            Cell::Detokenize(m) => code(&c.detokenize(req(m.clone(), key)).await),
            Cell::Reveal(m) => code(&c.reveal(req(m.clone(), key)).await),
            Cell::Delete(m) => code(&c.delete_tokens(req(m.clone(), key)).await),
        }
    }

    async fn connect(&self, c: &mut ConnectClient, key: Option<&str>) -> Code {
        let answer = match self {
            Cell::Tokenize(m) => c.call("/vault.v1.Tokenizer/Tokenize", m, key).await,
            Cell::Detokenize(m) => c.call("/vault.v1.Tokenizer/Detokenize", m, key).await,
            Cell::Reveal(m) => c.call("/vault.v1.Tokenizer/Reveal", m, key).await,
            Cell::Delete(m) => c.call("/vault.v1.Tokenizer/DeleteTokens", m, key).await,
        };
        answer.code
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix() {
    let mut d = Daemon::start(|_| {}).await;
    let mut all = d.tokenizer(Some("all")).await;
    let mut admin = d.admin(Some("all")).await;

    // Registry callers: one with a scope of its own, one with a policy role.
    let analytics = admin
        .create_caller(req(
            CreateCallerRequest {
                name: "analytics".into(),
                description: "tokenizes e-mail".into(),
                roles: vec![],
                scopes: vec![Scope {
                    operation: Operation::Tokenize as i32,
                    template: "email".into(),
                }],
                expires_at: None,
            },
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    let ops = admin
        .create_caller(req(
            CreateCallerRequest {
                name: "ops".into(),
                description: String::new(),
                roles: vec!["ops".into()],
                scopes: vec![],
                expires_at: None,
            },
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        analytics
            .api_key
            .starts_with(&analytics.caller.as_ref().unwrap().api_key_prefix)
    );

    let mut existing = std::collections::HashMap::new();
    for t in TEMPLATES {
        existing.insert(t, tokenize(&mut all, None, t, &[value(t)]).await);
    }

    let callers: [(&str, Option<&str>, Option<String>); 5] = [
        ("checkout", Some("checkout"), None),
        ("payments", Some("payments"), None),
        ("support", Some("support"), None),
        ("key:analytics", None, Some(analytics.api_key.clone())),
        ("key:ops", None, Some(ops.api_key.clone())),
    ];
    let mut cells = 0;
    for (name, cert, key) in &callers {
        let mut c = d.tokenizer(*cert).await;
        let mut cc = d.connect(*cert).await;
        let key = key.as_deref();
        for op in [Op::Tokenize, Op::Detokenize, Op::Reveal, Op::Delete] {
            for t in TEMPLATES {
                let tokens = if op == Op::Delete && t == "pan_vault" {
                    // A fresh token per delete, so cells do not interfere.
                    tokenize(&mut all, None, t, &[value(t)]).await
                } else {
                    existing[t].clone()
                };
                let cell = Cell::new(op, t, &tokens);
                let got = cell.grpc(&mut c, key).await;
                assert_eq!(got, expected(name, op, t), "{name} {op:?} {t}");
                let over_connect = cell.connect(&mut cc, key).await;
                assert_eq!(over_connect, got, "over Connect: {name} {op:?} {t}");
                cells += 1;
            }
        }
    }
    assert_eq!(cells, 60);

    // A denial names the missing scope.
    let mut checkout = d.tokenizer(Some("checkout")).await;
    let err = checkout
        .detokenize(req(detokenize_req("pan", &existing["pan"], "x"), None))
        .await
        .unwrap_err();
    assert!(
        err.message().contains("detokenize:pan"),
        "{}",
        err.message()
    );
    // Admin needs its area.
    let mut admin_checkout = d.admin(Some("checkout")).await;
    let err = admin_checkout
        .get_seal_status(req(GetSealStatusRequest {}, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("admin:keys"), "{}", err.message());

    // Changing a registry caller's scopes takes effect at once.
    let id = analytics.caller.as_ref().unwrap().caller_id.clone();
    let mut anon = d.tokenizer(None).await;
    admin
        .set_caller_scopes(req(
            SetCallerScopesRequest {
                caller_id: id.clone(),
                roles: vec!["checkout".into()],
                scopes: vec![],
            },
            None,
        ))
        .await
        .unwrap();
    assert_eq!(
        code(
            &anon
                .tokenize(req(
                    tokenize_req("pan", &[value("pan")]),
                    Some(&analytics.api_key)
                ))
                .await
        ),
        Code::Ok
    );
    // Revocation takes effect at once.
    admin
        .revoke_caller(req(RevokeCallerRequest { caller_id: id }, None))
        .await
        .unwrap();
    let err = anon
        .tokenize(req(
            tokenize_req("email", &[value("email")]),
            Some(&analytics.api_key),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // Unknown roles are refused, and so is an expiry in the past.
    let err = admin
        .create_caller(req(
            CreateCallerRequest {
                name: "x".into(),
                roles: vec!["no-such-role".into()],
                ..CreateCallerRequest::default()
            },
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = admin
        .create_caller(req(
            CreateCallerRequest {
                name: "expired".into(),
                roles: vec!["ops".into()],
                expires_at: Some(prost_types::Timestamp {
                    seconds: 1,
                    nanos: 0,
                }),
                ..CreateCallerRequest::default()
            },
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // A future expiry is accepted and shown.
    let later = admin
        .create_caller(req(
            CreateCallerRequest {
                name: "temporary".into(),
                roles: vec!["ops".into()],
                expires_at: Some(prost_types::Timestamp {
                    seconds: 4_000_000_000,
                    nanos: 0,
                }),
                ..CreateCallerRequest::default()
            },
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        later.caller.unwrap().expires_at.map(|t| t.seconds),
        Some(4_000_000_000)
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_requests() {
    let mut d = Daemon::start(|_| {}).await;
    let t = || tokenize_req("pan", &["4111111111111111"]);

    // No credentials at all (TLS without a client certificate, no API key).
    let mut anon = d.tokenizer(None).await;
    let err = anon.tokenize(req(t(), None)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // A made-up key, and a malformed header.
    let bad = "vk_0123abcd0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let err = anon.tokenize(req(t(), Some(bad))).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut r = req(t(), None);
    r.metadata_mut()
        .insert("authorization", "Basic dXNlcjpwdw==".parse().unwrap());
    assert_eq!(
        anon.tokenize(r).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    // A certificate and a key at once.
    let mut all = d.tokenizer(Some("all")).await;
    let err = all.tokenize(req(t(), Some(bad))).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // Two SPIFFE URIs: no identity.
    let mut two = d.tokenizer(Some("two-spiffe")).await;
    let err = two.tokenize(req(t(), None)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        err.message().contains("more than one SPIFFE"),
        "{}",
        err.message()
    );
    // A certificate from another CA fails the TLS handshake (connect, or the first call).
    match d.try_channel(Some("other-ca")).await {
        Err(_) => {}
        Ok(ch) => {
            let mut c = TokenizerClient::new(ch);
            let r = c.tokenize(req(t(), None)).await;
            assert!(r.is_err(), "a certificate from another CA was accepted");
            assert_ne!(r.unwrap_err().code(), Code::Ok);
        }
    }
    // The CN-only certificate authenticates as `cn:support-tool` (allowed to reveal only).
    let mut support = d.tokenizer(Some("support")).await;
    let err = support.tokenize(req(t(), None)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(pki().clients.contains_key("support"));
    d.stop().await;
}
