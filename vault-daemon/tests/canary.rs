//! Canary scan: the real `vaultd` (dev mode, `VAULT_LOG=debug`, stdout and stderr captured)
//! is exercised on every built-in template with canary values (tokenize, detokenize, reveal,
//! delete, and bad requests that carry canaries where they do not belong), stopped, and then
//! every byte it left (database, WAL, audit log, caller registry, policy, logs) is scanned: no
//! canary, and no Luhn-valid 13–19 digit run that is not a token or a timestamp (a run is a
//! maximal string of ASCII digits not touching a letter: digits inside hex MACs are not numbers).
//!
//! The same process is checked for its hardening while it runs (Linux): core dumps off
//! (`/proc/<pid>/limits`) and, when it reports locking memory, `VmLck` above zero.

mod support;

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/proxy_checkout.rs"]
mod proxy_checkout;

use std::collections::HashSet;
use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use support::dev_api_key;

use vault_proto::v1::tokenizer_client::TokenizerClient;
use vault_proto::v1::{
    DeleteTokensItem, DeleteTokensRequest, DetokenizeItem, DetokenizeRequest, RevealItem,
    RevealRequest, detokenize_result, tokenize_result,
};
use vault_test_support::{
    contains_word, figure, files_under, luhn_valid, tokenize_request, with_key,
};

/// (template, canary value). Luhn-valid PANs of 13 to 19 digits, SSNs, e-mails, and the rest.
const CANARIES: &[(&str, &str)] = &[
    ("pan", "4929730917531859"),
    ("pan", "4222222222222"),
    ("pan", "6011000990139424"),
    ("pan_vault", "5105105105105100"),
    ("pan_vault", "3566002020360505"),
    ("pan_vault_fmt", "4012888888881881"),
    ("pan_vault_fmt", "6304000000000000018"),
    ("pan_vault_det", "4539578763621486"),
    ("ssn", "219-09-9999"),
    ("ssn_vault", "078-05-1120"),
    ("digits", "55501987654321"),
    ("digits_vault", "31415926535897"),
    ("alphanumeric", "CanaryAlnum7Q2X9"),
    ("alphanumeric_vault", "VaultCanary8K3Z"),
    ("email", "canary.local.part@example.org"),
    ("email_vault", "secret.person@example.net"),
];

/// Canaries sent only in bad requests (they must not be echoed or logged either).
const BAD_CANARIES: &[&str] = &["4716108999716531", "987-65-4320", "leaky.mail@example.com"];

/// Unix times around now, in s, ms, µs or ns: the digit runs logs and audit events carry.
fn is_timestamp(run: &str, from: u64, to: u64) -> bool {
    let Ok(v) = run.parse::<u128>() else {
        return false;
    };
    [1u128, 1_000, 1_000_000, 1_000_000_000]
        .iter()
        .any(|&unit| (u128::from(from) * unit..=u128::from(to) * unit).contains(&v))
}

#[test]
fn no_canary_survives_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("vault-data");
    let out_path = dir.path().join("stdout.log");
    let err_path = dir.path().join("stderr.log");
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 60;
    let mut child = Command::new(env!("CARGO_BIN_EXE_vaultd"))
        .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("VAULT_LOG", "debug")
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        if let Some(a) = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("listening on "))
            && text.contains('\n')
        {
            break a.to_owned();
        }
        assert!(Instant::now() < deadline, "vaultd did not start: {text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let key = dev_api_key(&data);

    // Hardening of the running process.
    #[cfg(target_os = "linux")]
    {
        let pid = child.id();
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let core = limits
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .unwrap();
        let fields: Vec<&str> = core.split_whitespace().collect();
        assert_eq!(&fields[4..6], ["0", "0"], "{core}");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let vmlck = status.lines().find(|l| l.starts_with("VmLck:")).unwrap();
        let rss = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        // The start-up line says whether memory was locked (ANSI colours aside).
        let log = std::fs::read_to_string(&err_path).unwrap();
        let locked = log
            .lines()
            .find(|l| l.contains("memory_locked"))
            .is_some_and(|l| l.contains("true"));
        if locked {
            assert!(!vmlck.contains(" 0 kB"), "{vmlck}");
        }
        figure(&format!(
            "hardening: {}; {}; {}; memory locked: {locked}",
            core.split_whitespace().collect::<Vec<_>>().join(" "),
            vmlck.replace('\t', " "),
            rss.replace('\t', " ")
        ));
    }

    let mut tokens: HashSet<String> = HashSet::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = TokenizerClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        for (template, value) in CANARIES {
            let resp = c
                .tokenize(with_key(tokenize_request(template, [*value]), &key))
                .await
                .unwrap()
                .into_inner();
            let Some(tokenize_result::Outcome::Token(t)) = &resp.results[0].outcome else {
                panic!("{template}: {resp:?}");
            };
            tokens.insert(t.token.clone());
            let resp = c
                .detokenize(with_key(
                    DetokenizeRequest {
                        request_id: None,
                        template: (*template).into(),
                        key_version: None,
                        purpose: "canary scan".into(),
                        items: vec![DetokenizeItem {
                            token: t.token.clone(),
                        }],
                    },
                    &key,
                ))
                .await
                .unwrap()
                .into_inner();
            let Some(detokenize_result::Outcome::Value(v)) = &resp.results[0].outcome else {
                panic!("{template}: {resp:?}");
            };
            assert_eq!(v.value, *value);
            let resp = c
                .reveal(with_key(
                    RevealRequest {
                        request_id: None,
                        template: (*template).into(),
                        key_version: None,
                        purpose: "canary scan".into(),
                        mask: None,
                        items: vec![RevealItem {
                            token: t.token.clone(),
                        }],
                    },
                    &key,
                ))
                .await
                .unwrap()
                .into_inner();
            assert!(resp.results[0].outcome.is_some());
            // Errors with canaries where they do not belong: the value as a token, the value
            // under a template of another kind, the value as the template's name.
            for (t, tok) in [
                (*template, *value),
                ("pan_vault", *value),
                (*value, t.token.as_str()),
            ] {
                let _ = c
                    .detokenize(with_key(
                        DetokenizeRequest {
                            request_id: None,
                            template: t.into(),
                            key_version: None,
                            purpose: "canary scan".into(),
                            items: vec![DetokenizeItem { token: tok.into() }],
                        },
                        &key,
                    ))
                    .await;
            }
            if template.ends_with("_vault") {
                let _ = c
                    .delete_tokens(with_key(
                        DeleteTokensRequest {
                            request_id: None,
                            template: (*template).into(),
                            items: vec![DeleteTokensItem {
                                token: t.token.clone(),
                            }],
                        },
                        &key,
                    ))
                    .await
                    .unwrap();
            }
        }
        for bad in BAD_CANARIES {
            for template in ["pan", "ssn", "email", "pan_vault", "alphanumeric", "digits"] {
                // Luhn-invalid variants and wrong templates: every one refused per item.
                let broken = format!("{bad}x");
                for v in [*bad, broken.as_str()] {
                    let _ = c
                        .tokenize(with_key(tokenize_request(template, [v]), &key))
                        .await;
                }
            }
        }
    });
    // Tokenize of BAD_CANARIES under a template that accepts them would store them: those are
    // not bad for that template, and are tokens' values like any other (sealed at rest).

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());

    let mut paths = files_under(&data);
    paths.push(out_path);
    paths.push(err_path);
    let mut needles: Vec<String> = CANARIES.iter().map(|(_, v)| (*v).to_owned()).collect();
    needles.extend(BAD_CANARIES.iter().map(|v| (*v).to_owned()));
    // Canonical forms too (digits without separators, e-mail local parts).
    let extra: Vec<String> = needles
        .iter()
        .flat_map(|v| {
            let digits: String = v.chars().filter(char::is_ascii_digit).collect();
            let local = v.split('@').next().unwrap_or("").to_owned();
            [digits, local]
        })
        .filter(|s| s.len() >= 9)
        .collect();
    needles.extend(extra);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let (mut bytes, mut hits, mut luhn_runs, mut token_runs, mut time_runs) = (0, 0, 0, 0, 0);
    let mut word_runs = 0;
    let mut report = Vec::new();
    for p in &paths {
        let mut buf = Vec::new();
        std::fs::File::open(p)
            .unwrap()
            .read_to_end(&mut buf)
            .unwrap();
        bytes += buf.len();
        for n in &needles {
            if buf.windows(n.len()).any(|w| w == n.as_bytes()) {
                hits += 1;
                report.push(format!("{}: canary {n}", p.display()));
            }
        }
        // Maximal runs of ASCII digits of 13 to 19 digits that pass Luhn.
        let mut i = 0;
        while i < buf.len() {
            if buf[i].is_ascii_digit() {
                let start = i;
                while i < buf.len() && buf[i].is_ascii_digit() {
                    i += 1;
                }
                let run = &buf[start..i];
                // Inside a word (hex MACs and hashes are full of digit runs) it is not a number.
                let letter = |j: Option<&u8>| j.is_some_and(u8::is_ascii_alphabetic);
                let in_word =
                    letter(start.checked_sub(1).and_then(|j| buf.get(j))) || letter(buf.get(i));
                if in_word {
                    word_runs += 1;
                } else if (13..=19).contains(&run.len()) && luhn_valid(run) {
                    let s = std::str::from_utf8(run).unwrap();
                    if tokens.contains(s) {
                        token_runs += 1;
                    } else if is_timestamp(s, started, now) {
                        time_runs += 1;
                    } else {
                        luhn_runs += 1;
                        report.push(format!("{}: Luhn-valid run {s}", p.display()));
                    }
                }
            } else {
                i += 1;
            }
        }
    }
    figure(&format!(
        "canary scan: {} files, {bytes} bytes, {} canaries (+ canonical forms), hits = {hits}, \
         Luhn-valid 13-19 digit runs not a token = {luhn_runs} ({token_runs} tokens, \
         {time_runs} timestamps skipped; {word_runs} digit runs inside hex/words not numbers)",
        paths.len(),
        CANARIES.len() + BAD_CANARIES.len(),
    ));
    assert!(report.is_empty(), "{}", report.join("\n"));
}

/// The proxy's flow through a real `vaultd` process (`VAULT_LOG=debug`, both outputs kept): a
/// card and its code through the inbound route to a shop, the tokens through the outbound route
/// to a processor that echoes them, a second charge refused; then no byte the daemon left
/// (database, WAL, audit log, registry, logs) holds the card or the code.
#[test]
fn proxied_cards_and_codes_leave_no_trace() {
    use std::io::{BufRead as _, BufReader};
    use std::sync::{Arc, Mutex};
    const CARD: &str = "4916338506082832";
    const CODE: &str = "7391";

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("vault-data");
    std::fs::create_dir_all(&data).unwrap();
    let registry = vault_daemon::callers::Registry::open(&data).unwrap();
    let (_, key) = registry
        .create("shop", "canary scan", vec![], vec![], None)
        .unwrap();
    let shop_key = key.0.to_string();
    drop(registry);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let at_psp: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&at_psp);
    let echo = |body: String| async move { body };
    let psp = rt.block_on(proxy_checkout::serve(move |body: String| {
        seen.lock().unwrap().push(body.clone());
        async move { body }
    }));
    let shop = rt.block_on(proxy_checkout::serve(echo));
    let policy = r#"
[roles.edge]
[[roles.edge.grants]]
scopes = ["tokenize:pan_vault", "tokenize:cvv"]
[roles.exit]
[[roles.exit.grants]]
scopes = ["detokenize:pan_vault", "detokenize:cvv"]
require_purpose = true
[callers."route:shop"]
roles = ["edge"]
[callers."route:psp"]
roles = ["exit"]
"#;
    std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
    let fields = r#"fields = [{ json = "$.card.number", template = "pan_vault" }, { json = "$.card.cvv", template = "cvv" }]"#;
    let config = format!(
        r#"listen = "127.0.0.1:0"
allow_plaintext_loopback = true
data_dir = "vault-data"
policy = "policy.toml"
root_key_file = "vault-data/root.key"
create_if_missing = true
[[proxy.inbound]]
name = "shop"
listen = "127.0.0.1:0"
upstream = "http://{shop}"
allow_private = true
[[proxy.inbound.rules]]
name = "pay"
method = "POST"
path = "/pay"
content_type = "application/json"
{fields}
[[proxy.outbound]]
name = "psp"
listen = "127.0.0.1:0"
upstream = "http://{psp}/v1"
allow_private = true
purpose = "payment authorization"
callers = ["key:shop"]
[[proxy.outbound.rules]]
name = "charge"
method = "POST"
path = "/charges"
content_type = "application/json"
{fields}
"#
    );
    let config_path = dir.path().join("vaultd.toml");
    std::fs::write(&config_path, config).unwrap();
    let err_path = dir.path().join("stderr.log");
    let out_path = dir.path().join("stdout.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vaultd"))
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("VAULT_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut routes = std::collections::HashMap::new();
    let mut out = String::new();
    while routes.len() < 2 {
        let line = lines.next().expect("vaultd's stdout").unwrap();
        out.push_str(&line);
        out.push('\n');
        if let Some(rest) = line.strip_prefix("proxy route ") {
            let (name, addr) = rest.split_once(" on ").unwrap();
            routes.insert(
                name.to_owned(),
                addr.parse::<std::net::SocketAddr>().unwrap(),
            );
        }
    }
    let auth = [("proxy-authorization", format!("Bearer {shop_key}"))];
    let (first, second) = rt.block_on(async {
        let order = format!(r#"{{"card": {{"number": "{CARD}", "cvv": "{CODE}"}}}}"#);
        let (status, tokens) = proxy_checkout::post(routes["shop"], "/pay", &[], order).await;
        assert_eq!(status, 200, "{tokens}");
        let (status, answer) =
            proxy_checkout::post(routes["psp"], "/charges", &auth, tokens.clone()).await;
        assert_eq!(status, 200, "{answer}");
        assert!(!answer.contains(CARD), "{answer}");
        let (again, _) = proxy_checkout::post(routes["psp"], "/charges", &auth, tokens).await;
        (status, again)
    });
    assert_eq!((first, second), (200, 422));
    let got = at_psp.lock().unwrap().clone();
    assert!(got[0].contains(CARD) && got[0].contains(CODE), "{got:?}");

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    out.extend(lines.map_while(Result::ok).map(|l| l + "\n"));
    assert!(child.wait().unwrap().success());
    std::fs::write(&out_path, out).unwrap();

    let mut paths = files_under(&data);
    paths.push(out_path);
    paths.push(err_path);
    let mut report = Vec::new();
    let mut bytes = 0;
    for p in &paths {
        let buf = std::fs::read(p).unwrap();
        bytes += buf.len();
        if buf.windows(CARD.len()).any(|w| w == CARD.as_bytes()) {
            report.push(format!("{}: the card", p.display()));
        }
        if contains_word(&buf, CODE.as_bytes()) {
            report.push(format!("{}: the card code", p.display()));
        }
    }
    figure(&format!(
        "canary scan of the proxy: {} files, {bytes} bytes (debug logs included), card and code found {} times",
        paths.len(),
        report.len()
    ));
    assert!(report.is_empty(), "{}", report.join("\n"));
}
