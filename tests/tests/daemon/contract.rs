//! The contract from outside: each test names the `.proto` comment (or doc) whose promise it
//! checks, and checks it through a real tonic client against the real daemon (TLS, policy,
//! audit log, SQLite). They were written against a `main` that broke each of these promises.
//!
//! | promise | test |
//! |---|---|
//! | tokenizer.proto `TokenizeItem.idempotency_key`: same key and value → first token, `existing`; same key, other value → item `ALREADY_EXISTS` | `idempotency_key_replays_or_refuses` |
//! | the same, keys per caller and template, and atomic under concurrency | `idempotency_keys_are_per_caller_and_template`, `concurrent_calls_on_one_idempotency_key` |
//! | tokenizer.proto `Token.expires_at`, `DetokenizedValue.expires_at`, `MaskedValue.expires_at` ("unset when it does not"), `ttl_seconds` ("the template's default applies") | `expires_at_is_set_where_documented` |
//! | admin.proto `RaiseMinDecryptionVersion`: "lower or equal fails with FAILED_PRECONDITION", "never above the Active version" | `raise_min_decryption_version_only_rises` |
//! | ARCHITECTURE.md / SECURITY.md: a torn audit tail (an unanswered append) does not keep the vault down; anything else still refuses | `torn_audit_tail_of_every_length_is_recovered`, `damage_before_the_tail_still_refuses_to_start` |

use std::time::{SystemTime, UNIX_EPOCH};

use tonic::Code;
use vault_daemon::audit::{self, Filter};
use vault_daemon::config::TemplateSpec;
use vault_proto::v1::{
    DetokenizeItem, DetokenizeRequest, ErrorCode, GetKeyStatusRequest,
    RaiseMinDecryptionVersionRequest, RevealItem, RevealRequest, RotateKeyRequest, TokenizeItem,
    TokenizeRequest, TokenizeResponse, detokenize_result, reveal_result, tokenize_result,
};

use crate::common::{Daemon, PAN, detokenize, outcomes, records, req, tokenize, tokenize_req};

const PAN2: &str = "5500000000000004";

fn keyed(template: &str, items: &[(&str, &str)]) -> TokenizeRequest {
    TokenizeRequest {
        request_id: None,
        template: template.into(),
        key_version: None,
        items: items
            .iter()
            .map(|(value, key)| TokenizeItem {
                value: (*value).into(),
                idempotency_key: Some((*key).into()),
                ..TokenizeItem::default()
            })
            .collect(),
    }
}

/// Values of `template` kinds, two different ones each.
fn two_values(template: &str) -> (&'static str, &'static str) {
    if template.starts_with("email") {
        ("jane.doe@example.com", "john.roe@example.org")
    } else if template.starts_with("ssn") {
        ("123-45-6789", "234-56-7890")
    } else {
        (PAN, PAN2)
    }
}

/// tokenizer.proto, `TokenizeItem.idempotency_key`: "a second Tokenize on the same template
/// with the same key and value returns the first token (with existing = true) instead of
/// creating another; the same key with a different value fails the item with ALREADY_EXISTS."
/// On every vaulted template shape, across calls and within one batch; the refusal echoes no
/// value, and the first token still resolves to the first value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_replays_or_refuses() {
    let mut d = Daemon::start(|_| {}).await;
    let mut c = d.tokenizer(Some("all")).await;
    for t in [
        "pan_vault",
        "pan_vault_fmt",
        "pan_vault_det",
        "email_vault",
        "ssn_vault",
    ] {
        let (a, b) = two_values(t);
        let call = |items: &[(&str, &str)]| req(keyed(t, items), None);
        let first = outcomes(
            c.tokenize(call(&[(a, "order-1")]))
                .await
                .unwrap()
                .into_inner(),
        );
        let (token, existing) = first[0].clone().unwrap();
        assert!(!existing, "{t}");
        let again = outcomes(
            c.tokenize(call(&[(a, "order-1")]))
                .await
                .unwrap()
                .into_inner(),
        );
        assert_eq!(again[0], Ok((token.clone(), true)), "{t}");
        let other = outcomes(
            c.tokenize(call(&[(b, "order-1")]))
                .await
                .unwrap()
                .into_inner(),
        );
        let (code, message) = other[0].clone().unwrap_err();
        assert_eq!(code, ErrorCode::AlreadyExists, "{t}");
        assert!(
            !message.contains(a) && !message.contains(b),
            "{t}: {message}"
        );
        assert_eq!(
            detokenize(&mut c, None, t, &[token]).await,
            vec![a.to_owned()],
            "{t}"
        );
        // Within one batch: the first item wins, the other value is refused, a repeat replays.
        let batch = outcomes(
            c.tokenize(call(&[(a, "batch-1"), (b, "batch-1"), (a, "batch-1")]))
                .await
                .unwrap()
                .into_inner(),
        );
        let (bt, existing) = batch[0].clone().unwrap();
        // A deterministic template has seen the value before (under another key).
        assert_eq!(existing, t.ends_with("_det"), "{t}");
        assert_eq!(
            batch[1].clone().unwrap_err().0,
            ErrorCode::AlreadyExists,
            "{t}"
        );
        assert_eq!(batch[2], Ok((bt.clone(), true)), "{t}");
        assert_eq!(
            detokenize(&mut c, None, t, &[bt]).await,
            vec![a.to_owned()],
            "{t}"
        );
    }
    // Same key, same value, other metadata or TTL: a different request.
    let mut with_ttl = keyed("pan_vault", &[(PAN, "order-1")]);
    with_ttl.items[0].ttl_seconds = Some(3600);
    let r = outcomes(c.tokenize(req(with_ttl, None)).await.unwrap().into_inner());
    assert_eq!(r[0].clone().unwrap_err().0, ErrorCode::AlreadyExists);
    let mut with_meta = keyed("pan_vault", &[(PAN, "order-1")]);
    with_meta.items[0]
        .metadata
        .insert("order".into(), "2".into());
    let r = outcomes(c.tokenize(req(with_meta, None)).await.unwrap().into_inner());
    assert_eq!(r[0].clone().unwrap_err().0, ErrorCode::AlreadyExists);
    d.stop().await;
}

/// The key is the caller's, per template: two callers with one key get their own tokens, and a
/// key first used on `pan_vault` works on `ssn_vault` too (it once failed with NOT_FOUND).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_are_per_caller_and_template() {
    let mut d = Daemon::start(|_| {}).await;
    let mut all = d.tokenizer(Some("all")).await;
    let mut checkout = d.tokenizer(Some("checkout")).await;
    let a = outcomes(
        all.tokenize(req(keyed("pan_vault", &[(PAN, "k")]), None))
            .await
            .unwrap()
            .into_inner(),
    );
    let b = outcomes(
        checkout
            .tokenize(req(keyed("pan_vault", &[(PAN2, "k")]), None))
            .await
            .unwrap()
            .into_inner(),
    );
    let (ta, ea) = a[0].clone().unwrap();
    let (tb, eb) = b[0].clone().unwrap();
    assert!(!ea && !eb);
    assert_eq!(
        detokenize(&mut all, None, "pan_vault", &[ta]).await,
        vec![PAN]
    );
    assert_eq!(
        detokenize(&mut all, None, "pan_vault", &[tb]).await,
        vec![PAN2]
    );
    let s = outcomes(
        all.tokenize(req(keyed("ssn_vault", &[("123-45-6789", "k")]), None))
            .await
            .unwrap()
            .into_inner(),
    );
    let (ts, es) = s[0].clone().unwrap();
    assert!(!es);
    assert_eq!(
        detokenize(&mut all, None, "ssn_vault", &[ts]).await,
        vec!["123-45-6789"]
    );
    d.stop().await;
}

/// Twenty concurrent Tokenize calls with one key: with twenty values exactly one creates a
/// record and nineteen get ALREADY_EXISTS (on `main` before the fix, nineteen callers were
/// handed a token of someone else's card); with one value all twenty get the same token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_on_one_idempotency_key() {
    let mut d = Daemon::start(|_| {}).await;
    let channel = d.channel(Some("all")).await;
    for same in [false, true] {
        let key = format!("race-{same}");
        let calls: Vec<_> = (0..20u64)
            .map(|i| {
                let mut c =
                    vault_proto::v1::tokenizer_client::TokenizerClient::new(channel.clone());
                let value = if same {
                    vault_test_support::luhn_pan(0)
                } else {
                    vault_test_support::luhn_pan(i)
                };
                let key = key.clone();
                tokio::spawn(async move {
                    let r = c
                        .tokenize(req(keyed("pan_vault", &[(&value, &key)]), None))
                        .await
                        .unwrap()
                        .into_inner();
                    (value, outcomes(r).remove(0))
                })
            })
            .collect();
        let mut results = Vec::new();
        for call in calls {
            results.push(call.await.unwrap());
        }
        let created = results
            .iter()
            .filter(|(_, r)| matches!(r, Ok((_, false))))
            .count();
        assert_eq!(created, 1, "same value {same}");
        let refused = results
            .iter()
            .filter(|(_, r)| matches!(r, Err((ErrorCode::AlreadyExists, _))))
            .count();
        assert_eq!(refused, if same { 0 } else { 19 });
        let mut c = d.tokenizer(Some("all")).await;
        for (value, r) in results {
            if let Ok((token, _)) = r {
                assert_eq!(
                    detokenize(&mut c, None, "pan_vault", &[token]).await,
                    vec![value],
                    "a token of the caller's own value"
                );
            }
        }
    }
    d.stop().await;
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// tokenizer.proto: `Token.expires_at`, `DetokenizedValue.expires_at` and
/// `MaskedValue.expires_at` are "When the token expires. Unset when it does not", and
/// `ttl_seconds` unset means "the template's default applies".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expires_at_is_set_where_documented() {
    let mut d = Daemon::start(|cfg| {
        let mut t = TemplateSpec::vaulted("pan_ttl", "pan");
        t.default_ttl_secs = Some(600);
        let mut specs = cfg.template_specs();
        specs.push(t);
        cfg.templates = specs;
    })
    .await;
    let mut c = d.tokenizer(Some("all")).await;
    let now = unix_now();
    let mut r = tokenize_req("pan_vault", &[PAN, PAN2]);
    r.items[0].ttl_seconds = Some(3600);
    let resp = c.tokenize(req(r, None)).await.unwrap().into_inner();
    let tokens: Vec<_> = resp
        .results
        .into_iter()
        .map(|r| match r.outcome.unwrap() {
            tokenize_result::Outcome::Token(t) => t,
            e => panic!("{e:?}"),
        })
        .collect();
    let exp = tokens[0].expires_at.expect("Token.expires_at with a TTL");
    assert!((exp.seconds - (now + 3600)).abs() <= 5, "{exp:?}");
    assert!(tokens[1].expires_at.is_none(), "no TTL, no default: unset");
    // The template's default TTL.
    let ttl_tokens = c
        .tokenize(req(tokenize_req("pan_ttl", &[PAN]), None))
        .await
        .unwrap()
        .into_inner();
    let tokenize_result::Outcome::Token(t) = ttl_tokens.results[0].outcome.clone().unwrap() else {
        panic!()
    };
    let exp = t.expires_at.expect("the template default sets expires_at");
    assert!((exp.seconds - (now + 600)).abs() <= 5, "{exp:?}");
    // FPE tokens never expire.
    let fpe = c
        .tokenize(req(tokenize_req("pan", &[PAN]), None))
        .await
        .unwrap()
        .into_inner();
    let tokenize_result::Outcome::Token(f) = fpe.results[0].outcome.clone().unwrap() else {
        panic!()
    };
    assert!(f.expires_at.is_none());
    // Detokenize and Reveal report it too.
    let names: Vec<String> = tokens.iter().map(|t| t.token.clone()).collect();
    let resp = c
        .detokenize(req(
            DetokenizeRequest {
                request_id: None,
                template: "pan_vault".into(),
                key_version: None,
                purpose: "test".into(),
                items: names
                    .iter()
                    .map(|t| DetokenizeItem { token: t.clone() })
                    .collect(),
            },
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    let values: Vec<_> = resp
        .results
        .into_iter()
        .map(|r| match r.outcome.unwrap() {
            detokenize_result::Outcome::Value(v) => v,
            e => panic!("{e:?}"),
        })
        .collect();
    assert_eq!(values[0].expires_at, tokens[0].expires_at);
    assert!(values[1].expires_at.is_none());
    let resp = c
        .reveal(req(
            RevealRequest {
                request_id: None,
                template: "pan_vault".into(),
                key_version: None,
                purpose: "test".into(),
                mask: None,
                items: names
                    .iter()
                    .map(|t| RevealItem { token: t.clone() })
                    .collect(),
            },
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    let masked: Vec<_> = resp
        .results
        .into_iter()
        .map(|r| match r.outcome.unwrap() {
            reveal_result::Outcome::Value(v) => v,
            e => panic!("{e:?}"),
        })
        .collect();
    assert_eq!(masked[0].expires_at, tokens[0].expires_at);
    assert!(masked[1].expires_at.is_none());
    d.stop().await;
}

/// admin.proto, `RaiseMinDecryptionVersion`: "It can only go up (lower or equal fails with
/// FAILED_PRECONDITION) and never above the Active version."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raise_min_decryption_version_only_rises() {
    let mut d = Daemon::start(|_| {}).await;
    let mut admin = d.admin(Some("all")).await;
    admin
        .rotate_key(req(
            RotateKeyRequest {
                key: Some(vault_proto::v1::rotate_key_request::Key::KeyName(
                    "data/ssn_vault".into(),
                )),
            },
            None,
        ))
        .await
        .unwrap();
    let raise = |v: u32| {
        req(
            RaiseMinDecryptionVersionRequest {
                key_name: "data/ssn_vault".into(),
                min_decryption_version: v,
            },
            None,
        )
    };
    for (v, code) in [
        (1, Code::FailedPrecondition), // equal to the current minimum
        (3, Code::FailedPrecondition), // above the Active version (2)
        (2, Code::Ok),
        (2, Code::FailedPrecondition), // equal again
        (1, Code::FailedPrecondition), // lower
    ] {
        let r = admin.raise_min_decryption_version(raise(v)).await;
        assert_eq!(crate::common::code(&r), code, "raise to {v}: {r:?}");
    }
    let keys = admin
        .get_key_status(req(GetKeyStatusRequest::default(), None))
        .await
        .unwrap()
        .into_inner();
    let k = keys
        .keys
        .iter()
        .find(|k| k.name == "data/ssn_vault")
        .unwrap();
    assert_eq!(k.min_decryption_version, 2);
    d.stop().await;
}

/// A torn final audit line — every length of the last event, from one byte short of complete
/// down to its first byte — is what a crash during an append leaves. The daemon starts, sets
/// the bytes aside, records the recovery in the chain, and the log verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_audit_tail_of_every_length_is_recovered() {
    let mut d = Daemon::start(|cfg| cfg.audit.checkpoint_every = 1_000_000).await;
    let mut c = d.tokenizer(Some("all")).await;
    tokenize(&mut c, None, "pan_vault", &[PAN]).await;
    d.stop().await;
    let log = d.data().join(audit::LOG_FILE);
    let keys = audit::Keys::load(&d.data().join(audit::KEY_FILE))
        .unwrap()
        .verify_keys();
    // What a crash leaves has no shutdown checkpoint: drop the one the clean stop wrote (the
    // only one, at this checkpoint_every) and its file. Its events end the log.
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    assert!(lines.last().unwrap().contains("\"kind\":\"checkpoint\""));
    lines.pop();
    assert!(lines.iter().all(|l| l.contains("\"kind\":\"event\"")));
    std::fs::remove_file(d.data().join(audit::CHECKPOINT_FILE)).unwrap();
    let whole = (lines.join("\n") + "\n").into_bytes();
    let last_start = whole[..whole.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let last_len = whole.len() - last_start;
    assert!(last_len > 100, "an event line");
    let cfg = crate::common::config(d.dir.path());
    let mut recovered = 0;
    for cut in 1..last_len {
        // The log as a crash `cut` bytes short of the end of the last event would leave it.
        std::fs::write(&log, &whole[..whole.len() - cut]).unwrap();
        // The last open's clean close wrote a checkpoint file (a crash writes none).
        let _ = std::fs::remove_file(d.data().join(audit::CHECKPOINT_FILE));
        let opened = audit::AuditLog::open(&d.data(), audit::Config::default()).unwrap();
        let torn = opened.recovered_tail().cloned().expect("a torn tail");
        assert_eq!(torn.bytes as usize, last_len - cut, "cut {cut}");
        drop(opened);
        let report = audit::verify(&log, &keys).unwrap();
        assert_eq!(report.first_bad, None, "cut {cut}");
        std::fs::remove_file(&torn.quarantine).unwrap();
        recovered += 1;
    }
    assert_eq!(recovered, last_len - 1);
    vault_test_support::figure(&format!(
        "torn audit tail: all {recovered} cut lengths of a {last_len}-byte last event recovered \
         (bytes set aside, recovery chained, log verifies after each)"
    ));
    // And the daemon itself starts on a torn log and says so in the chain.
    std::fs::write(&log, &whole[..whole.len() - last_len / 2]).unwrap();
    let _ = std::fs::remove_file(d.data().join(audit::CHECKPOINT_FILE));
    let running = vault_daemon::spawn(cfg)
        .await
        .expect("starts on a torn tail");
    let events = audit::query(
        &log,
        &Filter {
            action: Some(audit::TORN_TAIL_ACTION.into()),
            ..Filter::default()
        },
    )
    .unwrap();
    assert_eq!(events.len(), 1);
    let detail = events[0].event.detail.clone().unwrap();
    assert!(detail.contains("sha256"), "{detail}");
    running.shutdown().await;
    assert_eq!(audit::verify(&log, &keys).unwrap().first_bad, None);
}

/// Anything wrong before the tail (an edited or missing event) still refuses to start, even
/// when the log also ends in a partial line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_before_the_tail_still_refuses_to_start() {
    let mut d = Daemon::start(|cfg| cfg.audit.checkpoint_every = 1_000_000).await;
    let mut c = d.tokenizer(Some("all")).await;
    for _ in 0..3 {
        tokenize(&mut c, None, "pan_vault", &[PAN]).await;
    }
    d.stop().await;
    let log = d.data().join(audit::LOG_FILE);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // An edited event, then a torn tail.
    let edited = text.replacen("\"items\":1", "\"items\":2", 1) + "{\"kind\":\"event\",\"se";
    // A missing event, then a torn tail.
    let missing = {
        let mut l = lines.clone();
        l.remove(1);
        l.join("\n") + "\n{\"kind\":\"ev"
    };
    for (what, bytes) in [("edited", edited), ("missing", missing)] {
        std::fs::write(&log, bytes).unwrap();
        let err = vault_daemon::spawn(crate::common::config(d.dir.path()))
            .await
            .expect_err(what);
        assert!(
            matches!(
                err,
                vault_daemon::StartError::Audit(audit::AuditError::Corrupt { .. })
            ),
            "{what}: {err}"
        );
    }
}

/// `Running` holds the dev API key (every scope); its `Debug` says whether there is one, not
/// what it is (`Zeroizing` wipes memory, it does not redact).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_output_of_the_running_daemon_hides_the_dev_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = vault_daemon::Config::dev(dir.path().join("data"));
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    let mut d = Daemon::start_in(dir, cfg).await;
    let running = d.running.as_ref().unwrap();
    let key = running.dev_api_key().unwrap().to_owned();
    for text in [format!("{running:?}"), format!("{running:#?}")] {
        assert!(!text.contains(&key), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }
    d.stop().await;
}

/// The rest of tokenizer.proto's promises, one call each, in the order the file makes them:
/// the service comment's call-level codes, `request_id` ("Returned in the response", "at most
/// 128 printable ASCII characters"), `key_version` on Tokenize ("not the template's active
/// version → FAILED_PRECONDITION, nothing is tokenized"), `idempotency_key` ("at most 128
/// bytes"), `metadata` and `ttl_seconds` ("only templates that store a record accept …",
/// "Zero is INVALID_ARGUMENT"), results "in the order of the items", `purpose` ("Required, at
/// most 256 characters"), `mask` ("An unknown mask fails the call with INVALID_ARGUMENT"),
/// `DeleteTokensRequest.template` ("format-preserving tokens cannot be deleted …
/// FAILED_PRECONDITION") and `DeleteTokensResult.error` ("NOT_FOUND for an unknown, expired or
/// already deleted token"), and Detokenize/Reveal returning the stored metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenizer_proto_promises() {
    use vault_proto::v1::{DeleteTokensItem, DeleteTokensRequest, delete_tokens_result};
    let mut d = Daemon::start(|cfg| cfg.limits.max_batch = 5).await;
    let mut c = d.tokenizer(Some("all")).await;
    let call_code =
        |r: Result<tonic::Response<TokenizeResponse>, tonic::Status>| crate::common::code(&r);

    // request_id: returned as sent, generated when unset, refused past 128 or unprintable.
    let mut r = tokenize_req("pan", &[PAN]);
    r.request_id = Some("order-77".into());
    assert_eq!(
        c.tokenize(req(r, None))
            .await
            .unwrap()
            .into_inner()
            .request_id,
        "order-77"
    );
    let generated = c
        .tokenize(req(tokenize_req("pan", &[PAN]), None))
        .await
        .unwrap()
        .into_inner()
        .request_id;
    assert!(!generated.is_empty());
    for bad in ["x".repeat(129), "tab\there".to_owned()] {
        let mut r = tokenize_req("pan", &[PAN]);
        r.request_id = Some(bad);
        assert_eq!(
            call_code(c.tokenize(req(r, None)).await),
            Code::InvalidArgument
        );
    }
    // Service comment: empty or too large a batch, unknown template.
    assert_eq!(
        call_code(c.tokenize(req(tokenize_req("pan", &[]), None)).await),
        Code::InvalidArgument
    );
    let six = [PAN; 6];
    assert_eq!(
        call_code(c.tokenize(req(tokenize_req("pan", &six), None)).await),
        Code::InvalidArgument
    );
    let unknown = c
        .tokenize(req(tokenize_req(PAN, &[PAN]), None))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(!unknown.message().contains(PAN), "{}", unknown.message());
    // key_version pinned to a version that is not active: nothing tokenized.
    let mut r = tokenize_req("pan_vault", &[PAN]);
    r.key_version = Some(7);
    let before = records(&d);
    assert_eq!(
        call_code(c.tokenize(req(r, None)).await),
        Code::FailedPrecondition
    );
    assert_eq!(records(&d), before);
    let mut r = tokenize_req("pan_vault", &[PAN]);
    r.key_version = Some(1);
    assert_eq!(call_code(c.tokenize(req(r, None)).await), Code::Ok);
    // idempotency_key: at most 128 bytes.
    let mut r = tokenize_req("pan_vault", &[PAN]);
    r.items[0].idempotency_key = Some("k".repeat(129));
    assert_eq!(
        call_code(c.tokenize(req(r, None)).await),
        Code::InvalidArgument
    );
    // metadata and ttl on a template that stores nothing, and a zero TTL: item errors, the other
    // items served, results in item order.
    let mut r = tokenize_req("pan", &[PAN, PAN2, PAN]);
    r.items[0].metadata.insert("k".into(), "v".into());
    r.items[2].ttl_seconds = Some(60);
    let out = outcomes(c.tokenize(req(r, None)).await.unwrap().into_inner());
    assert_eq!(out[0].clone().unwrap_err().0, ErrorCode::InvalidArgument);
    assert!(out[1].is_ok());
    assert_eq!(out[2].clone().unwrap_err().0, ErrorCode::InvalidArgument);
    let mut r = tokenize_req("pan_vault", &[PAN, PAN2]);
    r.items[0].ttl_seconds = Some(0);
    r.items[1].metadata.insert("owner".into(), "u-1".into());
    let out = outcomes(c.tokenize(req(r, None)).await.unwrap().into_inner());
    assert_eq!(out[0].clone().unwrap_err().0, ErrorCode::InvalidArgument);
    let (labelled, _) = out[1].clone().unwrap();

    // purpose: required, at most 256 characters.
    for (purpose, code) in [
        ("", Code::InvalidArgument),
        (&*"p".repeat(257), Code::InvalidArgument),
        ("ok", Code::Ok),
    ] {
        let r = c
            .detokenize(req(
                crate::common::detokenize_req(
                    "pan_vault",
                    std::slice::from_ref(&labelled),
                    purpose,
                ),
                None,
            ))
            .await;
        assert_eq!(
            crate::common::code(&r),
            code,
            "purpose of {} chars",
            purpose.len()
        );
        if let Ok(resp) = r {
            // The metadata stored with the record comes back.
            let detokenize_result::Outcome::Value(v) =
                resp.into_inner().results[0].outcome.clone().unwrap()
            else {
                panic!()
            };
            assert_eq!(v.metadata.get("owner").map(String::as_str), Some("u-1"));
        }
    }
    // mask: unknown → INVALID_ARGUMENT; the default mask → the masked value and metadata.
    let reveal = |mask: Option<&str>| RevealRequest {
        request_id: None,
        template: "pan_vault".into(),
        key_version: None,
        purpose: "support".into(),
        mask: mask.map(str::to_owned),
        items: vec![RevealItem {
            token: labelled.clone(),
        }],
    };
    assert_eq!(
        crate::common::code(&c.reveal(req(reveal(Some("no-such-mask")), None)).await),
        Code::InvalidArgument
    );
    let masked = c
        .reveal(req(reveal(None), None))
        .await
        .unwrap()
        .into_inner();
    let reveal_result::Outcome::Value(m) = masked.results[0].outcome.clone().unwrap() else {
        panic!()
    };
    assert!(m.masked_value.ends_with("0004") && !m.masked_value.contains(PAN2));
    assert_eq!(m.metadata.get("owner").map(String::as_str), Some("u-1"));

    // DeleteTokens: FAILED_PRECONDITION on an FPE template; NOT_FOUND per item for an unknown
    // or already deleted token.
    let delete = |template: &str, tokens: &[&str]| DeleteTokensRequest {
        request_id: None,
        template: template.into(),
        items: tokens
            .iter()
            .map(|t| DeleteTokensItem {
                token: (*t).to_owned(),
            })
            .collect(),
    };
    assert_eq!(
        crate::common::code(&c.delete_tokens(req(delete("pan", &[PAN]), None)).await),
        Code::FailedPrecondition
    );
    for expect_deleted in [true, false] {
        let resp = c
            .delete_tokens(req(
                delete("pan_vault", &[&labelled, "tok_aaaaaaaaaaaaaaaaaaaaaaaaaa"]),
                None,
            ))
            .await
            .unwrap()
            .into_inner();
        let first = resp.results[0].outcome.clone().unwrap();
        match (expect_deleted, first) {
            (true, delete_tokens_result::Outcome::Deleted(_)) => {}
            (false, delete_tokens_result::Outcome::Error(e)) => {
                assert_eq!(e.code(), ErrorCode::NotFound)
            }
            (_, other) => panic!("{other:?}"),
        }
        let delete_tokens_result::Outcome::Error(e) = resp.results[1].outcome.clone().unwrap()
        else {
            panic!()
        };
        assert_eq!(e.code(), ErrorCode::NotFound);
    }
    d.stop().await;
}
