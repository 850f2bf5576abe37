//! Unit tests of `policy`.

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};

use super::*;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/policy.toml");
const RSA_KEY: &[u8] = include_bytes!("../../tests/data/end-user-rs256.pem");
const T0: u64 = 1_700_000_000;

#[derive(Debug)]
struct ManualClock(AtomicU64);

impl ManualClock {
    fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::SeqCst))
    }
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock(AtomicU64::new(T0 * 1000)))
}

fn templates() -> Vec<TemplateInfo> {
    let t = |name: &str, mode, deterministic, domain_log10| TemplateInfo {
        name: name.into(),
        mode,
        deterministic,
        domain_log10,
    };
    vec![
        t("pan", Mode::Fpe, true, 15.0),
        t("email", Mode::Vaulted, false, 40.0),
        t("zip", Mode::Fpe, true, 5.0),
    ]
}

fn example() -> (PolicyStore, Arc<ManualClock>, Vec<Warning>) {
    let c = clock();
    let (store, warnings) = PolicyStore::with_clock(EXAMPLE, templates(), c.clone()).unwrap();
    (store, c, warnings)
}

fn scope(s: &str) -> Scope {
    s.parse().unwrap()
}

fn claims(iss: &str, aud: &str, sub: &str, exp: u64) -> serde_json::Value {
    serde_json::json!({ "iss": iss, "aud": aud, "sub": sub, "exp": exp, "iat": T0 })
}

fn rs256(claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("corp-1".into());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(RSA_KEY).unwrap(),
    )
    .unwrap()
}

const PAYMENTS: &str = "spiffe://prod.example/ns/pay/sa/payments";
const CHECKOUT: &str = "spiffe://prod.example/ns/shop/sa/checkout";

/// Every caller × operation × template of the example policy, with a context that meets the
/// network and purpose conditions but carries no end-user token. `A` allows; `-` is a missing
/// scope; `E` needs an end-user token.
#[test]
fn example_matrix() {
    let (store, _, _) = example();
    let ctx = Context {
        purpose: Some("chargeback"),
        source: "10.1.2.3".parse().ok(),
        ..Context::default()
    };
    let ops = [
        Operation::Tokenize,
        Operation::Detokenize,
        Operation::Reveal,
        Operation::Delete,
    ];
    let templates = ["pan", "email", "zip"];
    // Columns: for each op (tokenize, detokenize, reveal, delete), templates pan email zip.
    let matrix = [
        (CHECKOUT, "AA- --- --- ---"),
        (PAYMENTS, "A-- A-- --- ---"),
        ("cn:support-tool", "--- --- EA- ---"),
        ("key:analytics", "AAA --- --- ---"),
        ("key:ops", "--- --- --- AAA"),
        ("key:marketing", "--A --- --- ---"),
        ("key:unknown", "--- --- --- ---"),
    ];
    for (caller, row) in matrix {
        let cells: Vec<char> = row.chars().filter(|c| !c.is_whitespace()).collect();
        for (i, op) in ops.iter().enumerate() {
            for (j, t) in templates.iter().enumerate() {
                let s = Scope::new(*op, *t);
                let got = match store.authorize(caller, &s, &ctx) {
                    Ok(_) => 'A',
                    Err(Denied::MissingScope { .. }) => '-',
                    Err(Denied::EndUserRequired { .. }) => 'E',
                    Err(other) => panic!("{caller} {s}: unexpected {other}"),
                };
                assert_eq!(got, cells[i * 3 + j], "{caller} {s}");
                assert_eq!(
                    store.explain(caller, &s).allowed(),
                    got != '-',
                    "explain {caller} {s}"
                );
            }
        }
        for area in ADMIN_AREAS {
            let s = Scope::new(Operation::Admin, area);
            let allowed = store.authorize(caller, &s, &ctx).is_ok();
            let expected = caller == "key:ops" && ["keys", "audit", "callers"].contains(&area);
            assert_eq!(allowed, expected, "{caller} {s}");
        }
    }
    // A request for `*` is never allowed, even to a caller granted `tokenize:*`.
    assert!(
        store
            .authorize("key:analytics", &scope("tokenize:*"), &ctx)
            .is_err()
    );
}

#[test]
fn example_warnings() {
    let (_, _, warnings) = example();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let Warning::SmallDomainWithoutQuota {
        caller,
        template,
        line,
    } = &warnings[0]
    else {
        panic!("{warnings:?}");
    };
    assert_eq!(
        (caller.as_str(), template.as_str()),
        ("key:marketing", "zip")
    );
    assert!(*line > 1);
    // analytics has tokenize:* over zip too, but with a rate: no warning.
    assert!(warnings[0].to_string().contains("rate"));
    // Checking without template descriptions cannot know what is small.
    assert!(check(Path::new(EXAMPLE), &[]).unwrap().is_empty());
}

#[test]
fn quota_exhaustion_and_refill() {
    let (store, clock, _) = example();
    let ctx = Context::default();
    let s = scope("tokenize:pan");
    for _ in 0..200 {
        store.authorize(CHECKOUT, &s, &ctx).unwrap();
    }
    let denied = store.authorize(CHECKOUT, &s, &ctx).unwrap_err();
    assert_eq!(denied.kind(), DenialKind::ResourceExhausted);
    assert!(
        matches!(denied, Denied::Quota { retry_after, .. } if retry_after == Duration::from_millis(10))
    );
    // Per scope: e-mail has its own bucket.
    store
        .authorize(CHECKOUT, &scope("tokenize:email"), &ctx)
        .unwrap();
    clock.advance(Duration::from_millis(50));
    for _ in 0..5 {
        store.authorize(CHECKOUT, &s, &ctx).unwrap();
    }
    assert!(store.authorize(CHECKOUT, &s, &ctx).is_err());
    // A reload that keeps the limits keeps the buckets.
    store.reload().unwrap();
    assert!(store.authorize(CHECKOUT, &s, &ctx).is_err());
    clock.advance(Duration::from_secs(10));
    for _ in 0..200 {
        store.authorize(CHECKOUT, &s, &ctx).unwrap();
    }
}

#[test]
fn networks_allow_and_deny() {
    let (store, _, _) = example();
    let s = scope("tokenize:pan");
    for (source, ok) in [
        ("10.200.0.1", true),
        ("fd12::1", true),
        ("192.168.1.1", false),
        ("11.0.0.1", false),
    ] {
        let ctx = Context {
            source: source.parse().ok(),
            ..Context::default()
        };
        let r = store.authorize(PAYMENTS, &s, &ctx);
        assert_eq!(r.is_ok(), ok, "{source}");
        if !ok {
            assert!(matches!(r, Err(Denied::Network { .. })));
        }
    }
    // No known source address: deny.
    assert!(matches!(
        store.authorize(PAYMENTS, &s, &Context::default()),
        Err(Denied::Network { .. })
    ));
}

#[test]
fn detokenize_requires_purpose() {
    let (store, _, _) = example();
    let s = scope("detokenize:pan");
    let source = "10.0.0.1".parse().ok();
    for purpose in [None, Some(""), Some("  ")] {
        let ctx = Context {
            purpose,
            source,
            ..Context::default()
        };
        let denied = store.authorize(PAYMENTS, &s, &ctx).unwrap_err();
        assert_eq!(
            denied,
            Denied::PurposeRequired {
                scope: "detokenize:pan".into()
            }
        );
        assert_eq!(denied.kind(), DenialKind::PermissionDenied);
    }
    let ctx = Context {
        purpose: Some("refund"),
        source,
        ..Context::default()
    };
    let grant = store.authorize(PAYMENTS, &s, &ctx).unwrap();
    assert_eq!((grant.via, grant.grant), (Via::Role("payments".into()), 1));
}

#[test]
fn end_user_subject_must_match_owner() {
    let (store, clock, _) = example();
    let s = scope("reveal:pan");
    let token = rs256(&claims(
        "https://id.example.com",
        "vault",
        "cust-42",
        T0 + 300,
    ));
    let ctx = Context {
        purpose: Some("support ticket 7"),
        end_user_token: Some(&token),
        ..Context::default()
    };

    // Before the lookup: allowed, metadata check pending.
    let grant = store.authorize("cn:support-tool", &s, &ctx).unwrap();
    assert_eq!(grant.subject(), Some("cust-42"));
    assert_eq!(grant.pending_metadata(), Some("owner"));
    let owner = |o: &str| BTreeMap::from([("owner".to_owned(), o.to_owned())]);
    grant.confirm(&owner("cust-42")).unwrap();
    assert!(matches!(
        grant.confirm(&owner("cust-43")),
        Err(Denied::SubjectMismatch { .. })
    ));
    assert!(grant.confirm(&BTreeMap::new()).is_err());

    // With the metadata in the context: decided at once.
    let md = owner("cust-42");
    let full = Context {
        metadata: Some(&md),
        ..ctx
    };
    let grant = store.authorize("cn:support-tool", &s, &full).unwrap();
    assert_eq!(grant.pending_metadata(), None);
    let other = serde_json::json!({ "owner": "cust-1" });
    let other = other.as_object().unwrap();
    let wrong = Context {
        metadata: Some(other),
        ..ctx
    };
    assert!(matches!(
        store.authorize("cn:support-tool", &s, &wrong),
        Err(Denied::SubjectMismatch { .. })
    ));

    // Without a token, or without a purpose.
    let no_token = Context {
        end_user_token: None,
        ..ctx
    };
    assert!(matches!(
        store.authorize("cn:support-tool", &s, &no_token),
        Err(Denied::EndUserRequired { .. })
    ));
    let no_purpose = Context {
        purpose: None,
        ..ctx
    };
    assert!(matches!(
        store.authorize("cn:support-tool", &s, &no_purpose),
        Err(Denied::PurposeRequired { .. })
    ));

    // The same token after it expired (leeway 30 s).
    clock.advance(Duration::from_secs(329));
    store.authorize("cn:support-tool", &s, &ctx).unwrap();
    clock.advance(Duration::from_secs(2));
    assert_eq!(
        store.authorize("cn:support-tool", &s, &ctx),
        Err(Denied::EndUserInvalid {
            reason: TokenRejection::Expired
        })
    );
}

#[test]
fn end_user_token_rejections() {
    let (store, _, _) = example();
    let s = scope("reveal:pan");
    let reject = |token: &str| {
        let ctx = Context {
            purpose: Some("p"),
            end_user_token: Some(token),
            ..Context::default()
        };
        match store.authorize("cn:support-tool", &s, &ctx) {
            Err(Denied::EndUserInvalid { reason }) => reason,
            other => panic!("{other:?}"),
        }
    };
    let iss = "https://id.example.com";
    assert_eq!(
        reject(&rs256(&claims(iss, "vault", "u", T0 - 100))),
        TokenRejection::Expired
    );
    assert_eq!(
        reject(&rs256(&claims(iss, "other-service", "u", T0 + 100))),
        TokenRejection::WrongAudience
    );
    assert_eq!(
        reject(&rs256(&claims(
            "https://evil.example",
            "vault",
            "u",
            T0 + 100
        ))),
        TokenRejection::UnknownIssuer
    );
    let mut nbf = claims(iss, "vault", "u", T0 + 1000);
    nbf["nbf"] = (T0 + 500).into();
    assert_eq!(reject(&rs256(&nbf)), TokenRejection::NotYetValid);
    let mut no_sub = claims(iss, "vault", "u", T0 + 100);
    no_sub.as_object_mut().unwrap().remove("sub");
    assert_eq!(reject(&rs256(&no_sub)), TokenRejection::MissingClaim);
    // Bad signature: flip a byte of the signature; or sign with another key.
    let good = rs256(&claims(iss, "vault", "u", T0 + 100));
    let (head, sig) = good.rsplit_once('.').unwrap();
    let mut sig = B64.decode(sig).unwrap();
    sig[10] ^= 1;
    assert_eq!(
        reject(&format!("{head}.{}", B64.encode(sig))),
        TokenRejection::BadSignature
    );
    let (ec_pkcs8, _) = ec_key();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("corp-1".into());
    let forged = jsonwebtoken::encode(
        &header,
        &claims(iss, "vault", "u", T0 + 100),
        &EncodingKey::from_ec_der(&ec_pkcs8),
    )
    .unwrap();
    assert_eq!(reject(&forged), TokenRejection::UnknownKey);
    // HMAC tokens are never accepted.
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(iss, "vault", "u", T0 + 100),
        &EncodingKey::from_secret(b"k"),
    )
    .unwrap();
    assert_eq!(reject(&hs), TokenRejection::UnsupportedAlgorithm);
    assert_eq!(reject("not.a.jwt"), TokenRejection::Malformed);
    // A forwarded invalid token refuses even a grant that does not need one.
    let ctx = Context {
        end_user_token: Some("garbage"),
        ..Context::default()
    };
    assert!(
        store
            .authorize("cn:support-tool", &scope("reveal:email"), &ctx)
            .is_err()
    );
}

fn ec_key() -> (Vec<u8>, Vec<u8>) {
    let rng = SystemRandom::new();
    let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
    (pkcs8.as_ref().to_vec(), pair.public_key().as_ref().to_vec())
}

/// ES256 and EdDSA keys generated here, published to the policy as an inline JWKS.
#[test]
fn es256_and_eddsa_via_jwks() {
    let (ec_pkcs8, ec_public) = ec_key();
    let ed_pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let ed_public = Ed25519KeyPair::from_pkcs8(ed_pkcs8.as_ref())
        .unwrap()
        .public_key()
        .as_ref()
        .to_vec();
    let jwks = serde_json::json!({ "keys": [
        { "kty": "EC", "crv": "P-256", "kid": "ec-1", "use": "sig",
          "x": B64.encode(&ec_public[1..33]), "y": B64.encode(&ec_public[33..65]) },
        { "kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "x": B64.encode(&ed_public) },
    ]});
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwks.json"), jwks.to_string()).unwrap();
    let policy = r#"
        [issuers.idp]
        issuer = "https://idp.example"
        audience = ["vault", "vault-staging"]
        jwks_file = "jwks.json"

        [callers."key:app"]
        [[callers."key:app".grants]]
        scopes = ["reveal:pan"]
        require_end_user = true
    "#;
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, policy).unwrap();
    let (store, _) = PolicyStore::with_clock(&path, vec![], clock()).unwrap();
    let c = claims("https://idp.example", "vault-staging", "user-9", T0 + 60);
    let sign = |alg, kid: &str, key: &EncodingKey| {
        let mut header = Header::new(alg);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, &c, key).unwrap()
    };
    let es = sign(
        Algorithm::ES256,
        "ec-1",
        &EncodingKey::from_ec_der(&ec_pkcs8),
    );
    let ed = sign(
        Algorithm::EdDSA,
        "ed-1",
        &EncodingKey::from_ed_der(ed_pkcs8.as_ref()),
    );
    for token in [&es, &ed] {
        let ctx = Context {
            end_user_token: Some(token),
            ..Context::default()
        };
        let grant = store
            .authorize("key:app", &scope("reveal:pan"), &ctx)
            .unwrap();
        assert_eq!(
            grant.end_user,
            Some(EndUser {
                issuer: "idp".into(),
                subject: "user-9".into()
            })
        );
    }
    // An EdDSA token claiming the EC key's id does not verify.
    let confused = sign(
        Algorithm::EdDSA,
        "ec-1",
        &EncodingKey::from_ed_der(ed_pkcs8.as_ref()),
    );
    let ctx = Context {
        end_user_token: Some(&confused),
        ..Context::default()
    };
    assert_eq!(
        store.authorize("key:app", &scope("reveal:pan"), &ctx),
        Err(Denied::EndUserInvalid {
            reason: TokenRejection::UnknownKey
        })
    );
}

#[test]
fn reload_keeps_old_policy_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    let v1 = "[callers.\"key:a\"]\n[[callers.\"key:a\".grants]]\nscopes = [\"tokenize:pan\"]\n";
    std::fs::write(&path, v1).unwrap();
    let (store, _) = PolicyStore::with_clock(&path, vec![], clock()).unwrap();
    let ctx = Context::default();
    assert!(
        store
            .authorize("key:a", &scope("tokenize:pan"), &ctx)
            .is_ok()
    );

    // A broken file: the error names the line, and the old policy stays.
    let broken = "[callers.\"key:a\"]\nroles = [\"nope\"]\n";
    std::fs::write(&path, broken).unwrap();
    match store.reload() {
        Err(PolicyError::Invalid { line, message, .. }) => {
            assert_eq!(line, 2);
            assert!(message.contains("unknown role `nope`"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        store
            .authorize("key:a", &scope("tokenize:pan"), &ctx)
            .is_ok()
    );

    // A good new file takes effect.
    std::fs::write(&path, v1.replace("tokenize:pan", "tokenize:ssn")).unwrap();
    store.reload().unwrap();
    assert!(
        store
            .authorize("key:a", &scope("tokenize:pan"), &ctx)
            .is_err()
    );
    assert!(
        store
            .authorize("key:a", &scope("tokenize:ssn"), &ctx)
            .is_ok()
    );
}

#[test]
fn load_errors_have_line_numbers() {
    let cases = [
        ("[callers.\"key:a\"]\nroles = [\n", 2, "unclosed array"),
        ("[callers.\"bob\"]\n", 1, "must be"),
        (
            "[roles.r]\n[[roles.r.grants]]\nscopes = [\"tokenize:*\", \"admin:*\"]\n",
            3,
            "admin:*",
        ),
        (
            "[roles.r]\n[[roles.r.grants]]\nscopes = [\"read:pan\"]\n",
            3,
            "unknown operation",
        ),
        (
            "[roles.r]\n[[roles.r.grants]]\nscopes = [\"reveal:pan\"]\nnetworks = [\"10.0.0.0/33\"]\n",
            4,
            "CIDR",
        ),
        (
            "[roles.r]\n[[roles.r.grants]]\nscopes = [\"reveal:pan\"]\nrate = \"5/day\"\n",
            4,
            "unit",
        ),
        (
            "[roles.r]\n[[roles.r.grants]]\nscopes = [\"reveal:pan\"]\nrequire_end_user = true\n",
            2,
            "issuers",
        ),
        (
            "[roles.r]\n[[roles.r.grants]]\nscopes = [\"reveal:pan\"]\ncolour = \"red\"\n",
            4,
            "unknown field",
        ),
    ];
    for (text, line, needle) in cases {
        match Policy::parse(text, "p.toml", None, &[]) {
            Err(e @ PolicyError::Invalid { .. }) => {
                let PolicyError::Invalid {
                    line: got,
                    ref message,
                    ..
                } = e
                else {
                    unreachable!()
                };
                assert_eq!(got, line, "{text}: {e}");
                assert!(message.contains(needle), "{text}: {e}");
                assert!(e.to_string().starts_with(&format!("p.toml:{line}:")), "{e}");
            }
            other => panic!("{text}: {:?}", other.map(|(_, w)| w)),
        }
    }
}

#[test]
fn explain_names_role_grant_and_conditions() {
    let (store, _, _) = example();
    let e = store.explain("cn:support-tool", &scope("reveal:pan"));
    assert!(e.allowed());
    assert_eq!(e.matches.len(), 1);
    assert_eq!(
        (e.matches[0].via.clone(), e.matches[0].grant),
        (Via::Role("support".into()), 1)
    );
    let text = e.to_string();
    assert!(
        text.starts_with("ALLOW cn:support-tool reveal:pan"),
        "{text}"
    );
    assert!(
        text.contains("record metadata `owner`") && text.contains("issuer `corp`"),
        "{text}"
    );

    let e = store.explain("cn:support-tool", &scope("detokenize:pan"));
    assert!(!e.allowed());
    assert_eq!(
        e.to_string(),
        "DENY cn:support-tool detokenize:pan: no grant covers it (roles: support)"
    );
    let e = store.explain("key:nobody", &scope("tokenize:pan"));
    assert!(e.to_string().contains("not in the policy"));
    let e = store.explain("key:analytics", &scope("tokenize:zip"));
    assert_eq!(e.matches[0].granted, "tokenize:*");
}

#[test]
fn denials_carry_nothing_sensitive() {
    let (store, _, _) = example();
    let token = rs256(&claims(
        "https://id.example.com",
        "vault",
        "cust-secret-subject",
        T0 + 300,
    ));
    let md = BTreeMap::from([("owner".to_owned(), "owner-secret".to_owned())]);
    let ctx = Context {
        purpose: Some("p"),
        end_user_token: Some(&token),
        metadata: Some(&md),
        ..Context::default()
    };
    let denied = store
        .authorize("cn:support-tool", &scope("reveal:pan"), &ctx)
        .unwrap_err();
    let text = format!("{denied} {denied:?} {ctx:?}");
    for secret in ["cust-secret-subject", "owner-secret", token.as_str()] {
        assert!(!text.contains(secret), "{text}");
    }
}
