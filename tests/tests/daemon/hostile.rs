//! The hostile-request corpus (`tests/data/hostile/corpus.jsonl`, see its `generate.py`) run
//! against the real daemon over real TLS, once per protocol its listener serves (gRPC with
//! tonic's client, gRPC-Web and Connect over HTTP/2, with the same message bytes): every case
//! gets its expected code (call level, or per item; the one difference between protocols is in
//! the corpus as `expect_connect`), no status or item message contains what the case
//! submitted, and the daemon is still serving at the end.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Buf, BufMut};
use serde_json::Value;
use tonic::Code;
use tonic::client::Grpc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use vault_proto::v1::{
    CreateCallerRequest, DeleteTokensItem, DeleteTokensRequest, DeleteTokensResponse,
    DetokenizeItem, DetokenizeRequest, DetokenizeResponse, ErrorCode, RevealItem, RevealRequest,
    RevealResponse, RevokeCallerRequest, TokenizeItem, TokenizeRequest, TokenizeResponse,
    delete_tokens_result, detokenize_result, reveal_result, tokenize_result,
};

use crate::common::{Daemon, req, tokenize, tokenize_req};
use prost::Message as _;

const CORPUS: &str = include_str!("../../data/hostile/corpus.jsonl");

/// Sends and receives raw protobuf bytes, so a case can carry invalid UTF-8 or a broken
/// message that no generated client would produce.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

/// A string of the corpus: literal, or `{"repeat": s, "n": k}`.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(o) => {
            let s = o["repeat"].as_str().unwrap();
            s.repeat(o["n"].as_u64().unwrap() as usize)
        }
        other => panic!("not a corpus string: {other}"),
    }
}

fn opt_text(case: &Value, key: &str) -> Option<String> {
    case.get(key).map(text)
}

fn code_name(c: Code) -> String {
    format!("{c:?}")
        .chars()
        .enumerate()
        .flat_map(|(i, ch)| {
            let sep = (i > 0 && ch.is_uppercase()).then_some('_');
            sep.into_iter().chain(ch.to_uppercase())
        })
        .collect()
}

fn item_code_name(code: i32) -> String {
    ErrorCode::try_from(code)
        .map(|c| c.as_str_name().trim_start_matches("ERROR_CODE_").to_owned())
        .unwrap_or_else(|_| format!("unknown {code}"))
}

/// What one call came back with.
struct Answer {
    code: String,
    message: String,
    /// The response message (OK answers).
    body: Vec<u8>,
    items: Vec<(String, String)>,
}

impl Answer {
    fn status(s: tonic::Status) -> Answer {
        Answer {
            code: code_name(s.code()),
            message: s.message().to_owned(),
            body: Vec::new(),
            items: Vec::new(),
        }
    }
}

/// Tokens issued for the placeholders, and the API keys of the credential variants.
struct Fixtures {
    tokens: HashMap<String, String>,
    keys: HashMap<&'static str, String>,
}

impl Fixtures {
    fn token(&self, spec: &str) -> String {
        let (kind, template) = spec[1..].split_once(':').unwrap();
        let t = self.tokens[template].clone();
        match kind {
            "token" => t,
            "forged" => {
                // One character changed in the middle, same alphabet (still well-shaped).
                let mut b = t.into_bytes();
                let i = b.len() / 2;
                b[i] = if b[i] == b'2' { b'3' } else { b'2' };
                String::from_utf8(b).unwrap()
            }
            "cut" => t[..t.len() / 2].to_owned(),
            other => panic!("placeholder {other}"),
        }
    }
}

fn strings(case: &Value, key: &str, fx: &Fixtures) -> Vec<String> {
    let one: Vec<String> = case
        .get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|v| match v.as_str() {
                    Some(s) if s.starts_with('$') => fx.token(s),
                    _ => text(v),
                })
                .collect()
        })
        .unwrap_or_default();
    match case.get("batch").and_then(Value::as_u64) {
        Some(n) if !one.is_empty() => std::iter::repeat_n(one[0].clone(), n as usize).collect(),
        _ => one,
    }
}

/// A case as bytes on the wire: the procedure's path and the encoded request message (the
/// same bytes for every protocol).
struct Built {
    path: String,
    body: Vec<u8>,
}

const T: &str = "/vault.v1.Tokenizer/";

fn key_version(case: &Value) -> Option<u32> {
    case.get("key_version")
        .and_then(Value::as_u64)
        .map(|v| v as u32)
}

fn build(case: &Value, fx: &Fixtures) -> Built {
    let template = opt_text(case, "template").unwrap_or_default();
    let purpose = opt_text(case, "purpose").unwrap_or_default();
    let request_id = opt_text(case, "request_id");
    let rpc = case["rpc"].as_str().unwrap();
    let (method, body) = match rpc {
        "Tokenize" => {
            let metadata: HashMap<String, String> = case
                .get("metadata")
                .and_then(Value::as_object)
                .map(|m| m.iter().map(|(k, v)| (k.clone(), text(v))).collect())
                .unwrap_or_default();
            let items = strings(case, "values", fx)
                .into_iter()
                .map(|value| TokenizeItem {
                    value,
                    idempotency_key: opt_text(case, "idempotency_key"),
                    metadata: metadata.clone(),
                    ttl_seconds: None,
                })
                .collect();
            let r = TokenizeRequest {
                request_id,
                template,
                key_version: key_version(case),
                items,
            };
            ("Tokenize", r.encode_to_vec())
        }
        "Detokenize" => {
            let r = DetokenizeRequest {
                request_id,
                template,
                key_version: key_version(case),
                purpose,
                items: strings(case, "tokens", fx)
                    .into_iter()
                    .map(|token| DetokenizeItem { token })
                    .collect(),
            };
            ("Detokenize", r.encode_to_vec())
        }
        "Reveal" => {
            let r = RevealRequest {
                request_id,
                template,
                key_version: None,
                purpose,
                mask: opt_text(case, "mask"),
                items: strings(case, "tokens", fx)
                    .into_iter()
                    .map(|token| RevealItem { token })
                    .collect(),
            };
            ("Reveal", r.encode_to_vec())
        }
        "Delete" => {
            let r = DeleteTokensRequest {
                request_id,
                template,
                items: strings(case, "tokens", fx)
                    .into_iter()
                    .map(|token| DeleteTokensItem { token })
                    .collect(),
            };
            ("DeleteTokens", r.encode_to_vec())
        }
        "Raw" => {
            let raw = &case["raw"];
            return Built {
                path: raw["method"].as_str().unwrap().to_owned(),
                body: hex_decode(raw["hex"].as_str().unwrap()),
            };
        }
        other => panic!("unknown rpc {other}"),
    };
    Built {
        path: format!("{T}{method}"),
        body,
    }
}

/// The per-item outcomes of an OK answer's message (none for `Raw` cases).
fn items(rpc: &str, body: &[u8]) -> Vec<(String, String)> {
    /// Each result of a `$resp` as (code, message): `OK` for `$ok`, the item error otherwise.
    macro_rules! outcomes {
        ($resp:ty, $outcome:path, $ok:ident) => {{
            use $outcome as O;
            <$resp>::decode(body)
                .unwrap()
                .results
                .into_iter()
                .map(|r| match r.outcome.expect("an outcome per item") {
                    O::$ok(_) => ("OK".to_owned(), String::new()),
                    O::Error(e) => (item_code_name(e.code), e.message),
                })
                .collect()
        }};
    }
    match rpc {
        "Tokenize" => outcomes!(TokenizeResponse, tokenize_result::Outcome, Token),
        "Detokenize" => outcomes!(DetokenizeResponse, detokenize_result::Outcome, Value),
        "Reveal" => outcomes!(RevealResponse, reveal_result::Outcome, Value),
        "Delete" => outcomes!(DeleteTokensResponse, delete_tokens_result::Outcome, Deleted),
        _ => Vec::new(),
    }
}

/// The protocols the listener serves, each running the whole corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// tonic's client over HTTP/2.
    Grpc,
    /// gRPC-Web (binary) over HTTP/2 (as browsers speak it to a TLS server), framed and read
    /// byte by byte here.
    GrpcWeb,
    /// Connect unary with `application/proto` over HTTP/2.
    ///
    /// Both HTTP protocols run over HTTP/2: over HTTP/1.1 a server refusing an over-size body
    /// before reading it closes the connection under the client's write, and hyper's client
    /// then reports its write error, not the answer (a race, so a flaky case). The HTTP/1.1
    /// hostile cases, over-size bodies included, are the Python suite's (raw sockets).
    Connect,
}

/// The client certificates of the test PKI that the daemon trusts (`other-ca`'s it does not).
const CERTS: [&str; 6] = [
    "all",
    "payments",
    "checkout",
    "support",
    "helpdesk",
    "two-spiffe",
];

/// The client certificate a case presents (`None`: none) and the API key it sends.
fn credentials(case: &Value, fx: &Fixtures) -> (Option<&'static str>, Option<String>) {
    let cred = case["cred"].as_str().unwrap();
    match cred {
        "none" => (None, None),
        c if c.starts_with("key:") => {
            let v = &c[4..];
            let cert = (v == "both").then_some("all");
            (cert, Some(fx.keys[v].clone()))
        }
        c => {
            let name = CERTS
                .into_iter()
                .chain(["other-ca"])
                .find(|n| *n == c)
                .unwrap_or_else(|| panic!("credential {c}"));
            (Some(name), None)
        }
    }
}

/// The case's credential header and extra headers, as HTTP headers.
fn headers(case: &Value, key: Option<&str>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(k) = key {
        let v = if k.starts_with("Basic ") || k.is_empty() {
            k.to_owned()
        } else {
            format!("Bearer {k}")
        };
        out.push(("authorization".to_owned(), v));
    }
    if let Some(h) = case.get("headers").and_then(Value::as_object) {
        for (name, v) in h {
            out.push((name.clone(), text(v)));
        }
    }
    out
}

async fn call(
    d: &Daemon,
    channels: &HashMap<&'static str, Channel>,
    protocol: Protocol,
    case: &Value,
    fx: &Fixtures,
) -> Result<Answer, String> {
    let (cert, key) = credentials(case, fx);
    let headers = headers(case, key.as_deref());
    let built = build(case, fx);
    let rpc = case["rpc"].as_str().unwrap();
    let answer = match protocol {
        Protocol::Grpc => {
            let channel = match cert {
                Some("other-ca") => d
                    .try_channel(Some("other-ca"))
                    .await
                    .map_err(|e| format!("handshake refused: {e}"))?,
                c => channels[c.unwrap_or("none")].clone(),
            };
            grpc(channel, &built, &headers).await?
        }
        Protocol::GrpcWeb | Protocol::Connect => {
            let mut c = d
                .try_connect_over(cert, crate::connect::Http::H2)
                .await
                .map_err(|e| format!("handshake refused: {e}"))?;
            let mut h: Vec<(&str, String)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            if protocol == Protocol::Connect {
                h.extend(crate::connect::connect_headers());
                h.push(("connect-timeout-ms", "20000".into()));
                let ex = c.post(&built.path, &h, built.body).await?;
                let a = crate::connect::Answer::of(ex);
                Answer {
                    code: code_name(a.code),
                    message: a.message,
                    body: a.body.to_vec(),
                    items: Vec::new(),
                }
            } else {
                h.push(("content-type", "application/grpc-web+proto".into()));
                h.push(("x-grpc-web", "1".into()));
                h.push(("grpc-timeout", "20S".into()));
                let ex = c.post(&built.path, &h, frame(&built.body, 0)).await?;
                grpc_web(ex)
            }
        }
    };
    Ok(Answer {
        items: if answer.code == "OK" {
            items(rpc, &answer.body)
        } else {
            Vec::new()
        },
        ..answer
    })
}

/// One unary call over gRPC with tonic's client, the message as raw bytes.
async fn grpc(
    channel: Channel,
    built: &Built,
    headers: &[(String, String)],
) -> Result<Answer, String> {
    let path: http::uri::PathAndQuery = built.path.parse().unwrap();
    let mut g = Grpc::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    g.ready().await.map_err(|e| format!("not ready: {e}"))?;
    let mut r = tonic::Request::new(built.body.clone());
    for (name, v) in headers {
        let name: tonic::metadata::MetadataKey<tonic::metadata::Ascii> = name.parse().unwrap();
        r.metadata_mut().insert(name, v.parse().unwrap());
    }
    r.set_timeout(Duration::from_secs(20));
    Ok(match g.unary(r, path, RawCodec).await {
        Err(s) => Answer::status(s),
        Ok(resp) => Answer {
            code: "OK".into(),
            message: String::new(),
            body: resp.into_inner(),
            items: Vec::new(),
        },
    })
}

/// A gRPC(-Web) length-prefixed frame.
fn frame(message: &[u8], flags: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(flags);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// Reads a gRPC-Web answer: the status from the headers (trailers-only) or from the trailer
/// frame at the end of the body; an HTTP error (the HTTP stack's, before gRPC-Web) as the
/// gRPC HTTP mapping reads it.
fn grpc_web(ex: crate::connect::Exchange) -> Answer {
    if ex.status != 200 {
        return Answer {
            code: code_name(crate::connect::code_of_http(ex.status)),
            message: String::from_utf8_lossy(&ex.body).into_owned(),
            body: Vec::new(),
            items: Vec::new(),
        };
    }
    let mut fields: HashMap<String, String> = ex
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let mut body = ex.body.clone();
    let mut message = Vec::new();
    while body.len() >= 5 {
        let flags = body[0];
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        body.advance(5);
        let chunk = body.split_to(len.min(body.len()));
        if flags & 0x80 != 0 {
            for line in String::from_utf8_lossy(&chunk).split("\r\n") {
                if let Some((k, v)) = line.split_once(':') {
                    fields.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                }
            }
        } else {
            message = chunk.to_vec();
        }
    }
    let status: i32 = fields
        .get("grpc-status")
        .and_then(|s| s.parse().ok())
        .expect("a grpc-status");
    Answer {
        code: code_name(Code::from_i32(status)),
        message: percent_decode(fields.get("grpc-message").map_or("", String::as_str)),
        body: message,
        items: Vec::new(),
    }
}

/// `grpc-message` is percent-encoded: decoded before the echo check.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// What a case submitted that must never come back in a message: every value, token,
/// purpose, template, idempotency key and raw body long enough to be recognisable (6+
/// characters; shorter strings such as `pan` occur in ordinary words).
fn submitted(case: &Value, fx: &Fixtures) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for key in ["values", "tokens"] {
        let mut v = strings(case, key, fx);
        v.truncate(1);
        out.extend(v);
    }
    for key in ["purpose", "template", "idempotency_key", "mask"] {
        out.extend(opt_text(case, key));
    }
    if let Some(m) = case.get("metadata").and_then(Value::as_object) {
        out.extend(m.values().map(text));
    }
    if case.get("raw").is_some() {
        out.push("4111111111111111".into());
    }
    out.retain(|s| s.trim().chars().count() >= 6);
    // A well-known template name in the request is not a secret.
    out.retain(|s| !["pan_vault", "pan_vault_fmt", "pan_vault_det"].contains(&s.as_str()));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_corpus() {
    let mut d = Daemon::start(|_| {}).await;
    let mut admin = d.admin(Some("all")).await;
    let mut all = d.tokenizer(Some("all")).await;

    // Credential variants: an API key that expires in a moment, a revoked one, made-up ones.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let expiring = admin
        .create_caller(req(
            CreateCallerRequest {
                name: "expiring".into(),
                roles: vec!["all".into()],
                expires_at: Some(prost_types::Timestamp {
                    seconds: now + 2,
                    nanos: 0,
                }),
                ..CreateCallerRequest::default()
            },
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    let revoked = admin
        .create_caller(req(
            CreateCallerRequest {
                name: "revoked".into(),
                roles: vec!["all".into()],
                ..CreateCallerRequest::default()
            },
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    admin
        .revoke_caller(req(
            RevokeCallerRequest {
                caller_id: revoked.caller.unwrap().caller_id,
            },
            None,
        ))
        .await
        .unwrap();
    let keys: HashMap<&'static str, String> = HashMap::from([
        ("expired", expiring.api_key.clone()),
        ("revoked", revoked.api_key),
        (
            "bogus",
            "vk_0123abcd0123456789abcdef0123456789abcdef0123456789abcdef01234567".into(),
        ),
        ("empty", String::new()),
        ("basic", "Basic dXNlcjpwdw==".into()),
        ("both", expiring.api_key.clone()),
        ("huge", format!("vk_{}", "a".repeat(6000))),
    ]);

    // Tokens for the placeholders; pan_vault's is owned by `alice` (helpdesk cases).
    let mut tokens = HashMap::new();
    let mut tr = tokenize_req("pan_vault", &["4000056655665556"]);
    tr.items[0].metadata.insert("owner".into(), "alice".into());
    let resp = all.tokenize(req(tr, None)).await.unwrap().into_inner();
    let Some(tokenize_result::Outcome::Token(t)) = &resp.results[0].outcome else {
        panic!("pan_vault token")
    };
    tokens.insert("pan_vault".to_owned(), t.token.clone());
    for (t, v) in [
        ("pan_vault_fmt", "4000056655665556"),
        ("pan_vault_det", "4000056655665556"),
        ("ssn_vault", "123-45-6789"),
    ] {
        tokens.insert(
            t.to_owned(),
            tokenize(&mut all, None, t, &[v]).await.remove(0),
        );
    }
    let fx = Fixtures { tokens, keys };
    // Let the expiring key expire.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let mut channels = HashMap::new();
    for name in CERTS {
        channels.insert(name, d.channel(Some(name)).await);
    }
    channels.insert("none", d.channel(None).await);

    let mut failures = Vec::new();
    let mut n = 0;
    for protocol in [Protocol::Grpc, Protocol::GrpcWeb, Protocol::Connect] {
        let mut by_code: std::collections::BTreeMap<String, usize> = Default::default();
        let (mut cases, mut messages, failed) = (0, 0, failures.len());
        for line in CORPUS.lines().filter(|l| !l.trim().is_empty()) {
            let case: Value = serde_json::from_str(line).unwrap();
            let id = format!("{protocol:?} {}", case["id"].as_str().unwrap());
            cases += 1;
            let expect = match (protocol, case.get("expect_connect")) {
                (Protocol::Connect, Some(e)) => e.as_str().unwrap(),
                _ => case["expect"].as_str().unwrap(),
            };
            let answer = call(&d, &channels, protocol, &case, &fx).await;
            let got = match &answer {
                Err(_) => "HANDSHAKE".to_owned(),
                Ok(a) => a.code.clone(),
            };
            // A refused handshake may also surface as a failed first call (the server drops
            // the connection after TLS 1.3 sent the client certificate: UNAVAILABLE, UNKNOWN
            // or CANCELLED, depending on when the client notices).
            let matches = got == expect
                || (expect == "HANDSHAKE"
                    && matches!(got.as_str(), "UNAVAILABLE" | "UNKNOWN" | "CANCELLED"))
                || (expect == "TRANSPORT" && got != "OK");
            if !matches {
                failures.push(format!(
                    "{id}: expected {expect}, got {got} ({:?})",
                    answer.as_ref().map(|a| &a.message)
                ));
                continue;
            }
            *by_code.entry(expect.to_owned()).or_default() += 1;
            let Ok(answer) = answer else { continue };
            if let Some(item) = case.get("items").and_then(Value::as_str)
                && (answer.items.is_empty() || answer.items.iter().any(|(c, _)| c != item))
            {
                failures.push(format!(
                    "{id}: expected every item {item}, got {:?}",
                    answer.items
                ));
            }
            let secrets = submitted(&case, &fx);
            let texts = std::iter::once(&answer.message).chain(answer.items.iter().map(|(_, m)| m));
            for m in texts {
                messages += 1;
                for s in &secrets {
                    if m.contains(s.as_str()) || (s.len() > 64 && m.contains(&s[..64])) {
                        failures.push(format!("{id}: message echoes the submitted value: {m:?}"));
                    }
                }
                if m.len() > 1024 {
                    failures.push(format!("{id}: message of {} bytes", m.len()));
                }
            }
        }
        let failed = failures.len() - failed;
        vault_test_support::figure(&format!(
            "hostile corpus over {protocol:?}: {cases} cases, {} as expected ({by_code:?}), \
             {messages} messages checked for echoes, {failed} failures",
            cases - failed,
        ));
        n = cases;
    }

    // Still up and serving, and still doing its job.
    let mut health = HealthClient::new(d.channel(None).await);
    let h = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.status(), ServingStatus::Serving);
    let t = tokenize(&mut all, None, "pan_vault", &["4000056655665556"]).await;
    assert_eq!(
        crate::common::detokenize(&mut all, None, "pan_vault", &t).await,
        ["4000056655665556"]
    );
    assert!(n >= 200, "corpus has {n} cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    d.stop().await;
}
