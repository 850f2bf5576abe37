//! Runs the real `vaultd` binary: `vaultd serve --dev` on port 0, reads the bound address from
//! its first stdout line and the dev key from `<data-dir>/dev-api-key`, tokenizes and
//! detokenizes, then stops it with SIGTERM and expects a clean exit.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use vault_proto::v1::tokenizer_client::TokenizerClient;
use vault_proto::v1::{
    DetokenizeItem, DetokenizeRequest, TokenizeItem, TokenizeRequest, detokenize_result,
    tokenize_result,
};

fn with_key<T>(msg: T, key: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}

#[test]
fn vaultd_serve_dev() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("vault-data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vaultd"))
        .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("VAULT_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    let rest: Vec<String> = lines.by_ref().take(3).map(Result::unwrap).collect();
    let key = std::fs::read_to_string(data.join("dev-api-key"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(rest.iter().any(|l| l.contains(&key)), "{rest:?}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = TokenizerClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let resp = c
            .tokenize(with_key(
                TokenizeRequest {
                    request_id: None,
                    template: "pan".into(),
                    key_version: None,
                    items: vec![TokenizeItem {
                        value: "4111 1111 1111 1111".into(),
                        ..TokenizeItem::default()
                    }],
                },
                &key,
            ))
            .await
            .unwrap()
            .into_inner();
        let Some(tokenize_result::Outcome::Token(t)) = &resp.results[0].outcome else {
            panic!("{resp:?}");
        };
        let resp = c
            .detokenize(with_key(
                DetokenizeRequest {
                    request_id: None,
                    template: "pan".into(),
                    key_version: None,
                    purpose: "binary test".into(),
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
            panic!("{resp:?}");
        };
        assert_eq!(v.value, "4111 1111 1111 1111");
    });

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(data.join("audit.log").exists());
}

/// Starts `vaultd serve --dev` with stderr to a file (as under systemd or a log shipper) and the
/// environment given, stops it with SIGTERM, and returns what it logged.
fn log_of(envs: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("vault-data");
    let log = dir.path().join("vaultd.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vaultd"));
    cmd.args(["serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("VAULT_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("listening on "), "{first}");
    std::thread::spawn(move || for _ in lines {});
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    std::fs::read_to_string(&log).unwrap()
}

/// Logs to a file carry no ANSI colour codes (colour only on a terminal), and
/// `VAULT_LOG_FORMAT=json` writes one JSON object per line with the same fields.
#[test]
fn logs_are_plain_off_a_terminal_and_json_on_request() {
    let text = log_of(&[]);
    assert!(text.contains("listening"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "escape codes in a log file: {text:?}"
    );

    let json = log_of(&[("VAULT_LOG_FORMAT", "json")]);
    let mut listening = None;
    for line in json.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
        if v["message"] == "listening" {
            listening = Some(v);
        }
    }
    let listening = listening.expect("the listening event");
    assert!(listening["addr"].is_string(), "{listening}");
    assert_eq!(listening["dev"], true, "{listening}");

    let out = Command::new(env!("CARGO_BIN_EXE_vaultd"))
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .env("VAULT_LOG_FORMAT", "yaml")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("VAULT_LOG_FORMAT"));
}
