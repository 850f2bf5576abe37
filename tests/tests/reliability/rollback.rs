//! The data directory goes back in time: copied while the daemon is stopped (a backup), more
//! tokens acknowledged, then the copy put back (a restore; the same as a power cut under
//! `synchronous = normal` that loses the last commits, or a copied file). Promised
//! (SECURITY.md, "A store that goes back in time"): every token ever acknowledged resolves to
//! its own value or to `NOT_FOUND`, never to another customer's value, and no token is handed
//! out twice. The daemons are in-process (`vault_daemon::spawn`, what `vaultd serve` runs) and
//! answer over gRPC. The same on both stores through the `Store` trait: the storage suite's
//! `a_restored_backup_never_resolves_a_token_to_another_value` (PostgreSQL: `pg_dump` and
//! `pg_restore`).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use tonic::Code;
use vault_proto::v1::tokenizer_client::TokenizerClient;
use vault_proto::v1::{detokenize_result, tokenize_result};

use crate::harness::{Rng, SERIAL, channel, detokenize_req, dev_config, figure, req, tokenize_req};

const DEADLINE: Duration = Duration::from_secs(10);
/// Opaque random, opaque deterministic, formatted, and an SSN template.
const TEMPLATES: [&str; 4] = ["pan_vault", "pan_vault_det", "pan_vault_fmt", "ssn_vault"];

fn ssn(i: u64) -> String {
    format!(
        "{:03}-{:02}-{:04}",
        100 + i % 800,
        10 + i % 89,
        1000 + i % 9000
    )
}

/// Starts a daemon on `dir`, tokenizes `n` new values per template, stops it. Returns the
/// tokens with their template and value.
async fn round(dir: &Path, rng: &mut Rng, n: usize) -> Vec<(String, &'static str, String)> {
    let running = vault_daemon::spawn(dev_config(dir)).await.unwrap();
    let key = running.dev_api_key().unwrap().to_owned();
    let mut c = TokenizerClient::new(channel(&running.addr().to_string()).await.unwrap());
    let mut out = Vec::new();
    for t in TEMPLATES {
        let values: Vec<String> = (0..n)
            .map(|_| {
                if t == "ssn_vault" {
                    ssn(rng.next())
                } else {
                    rng.pan()
                }
            })
            .collect();
        let mut msg = tokenize_req(&values);
        msg.template = t.into();
        let resp = c
            .tokenize(req(msg, &key, DEADLINE))
            .await
            .unwrap()
            .into_inner();
        for (v, r) in values.into_iter().zip(resp.results) {
            match r.outcome {
                Some(tokenize_result::Outcome::Token(tok)) => out.push((tok.token, t, v)),
                other => panic!("{t}: {other:?}"),
            }
        }
    }
    assert!(running.shutdown().await);
    out
}

/// Copies the files of `from` into a fresh `to` (contents and permissions, as `cp -p` would:
/// the daemon refuses key files readable by others).
fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_data_directory_never_resolves_a_token_to_another_value() {
    let _serial = SERIAL.lock().await;
    let mut rng = Rng::new("rollback");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("vault-data");
    let n = if crate::harness::long() { 500 } else { 50 };

    let copy = dir.path().join("backup");
    let kept = round(&data, &mut rng, n).await;
    copy_dir(&data, &copy);
    let lost = round(&data, &mut rng, n).await;
    copy_dir(&copy, &data);
    let after = round(&data, &mut rng, n).await;

    let mut issued: HashMap<&str, (&str, &str)> = HashMap::new();
    for (token, t, v) in kept.iter().chain(&lost).chain(&after) {
        if let Some((t0, v0)) = issued.insert(token, (t, v)) {
            assert_eq!((t0, v0), (*t, v.as_str()), "a token was handed out twice");
        }
    }

    let running = vault_daemon::spawn(dev_config(&data)).await.unwrap();
    let key = running.dev_api_key().unwrap().to_owned();
    let mut c = TokenizerClient::new(channel(&running.addr().to_string()).await.unwrap());
    let (mut own, mut not_found, mut wrong) = (0, 0, 0);
    for (set, must_resolve) in [(&kept, true), (&lost, false), (&after, true)] {
        for t in TEMPLATES {
            let mine: Vec<&(String, &str, String)> = set.iter().filter(|x| x.1 == t).collect();
            let tokens: Vec<String> = mine.iter().map(|x| x.0.clone()).collect();
            let mut msg = detokenize_req(&tokens);
            msg.template = t.into();
            let resp = c
                .detokenize(req(msg, &key, DEADLINE))
                .await
                .unwrap()
                .into_inner();
            for (x, r) in mine.iter().zip(resp.results) {
                match r.outcome {
                    Some(detokenize_result::Outcome::Value(v)) if v.value == x.2 => own += 1,
                    Some(detokenize_result::Outcome::Value(_)) => wrong += 1,
                    Some(detokenize_result::Outcome::Error(e))
                        if e.code == Code::NotFound as i32 =>
                    {
                        assert!(!must_resolve, "{t}: an acknowledged, kept token is gone");
                        not_found += 1;
                    }
                    other => panic!("{t}: {other:?}"),
                }
            }
        }
    }
    assert!(running.shutdown().await);
    figure(
        "rollback (data directory restored)",
        &format!(
            "{} tokens acknowledged, {} lost with the rollback: {own} resolve to their own \
             value, {not_found} NOT_FOUND, {wrong} to another value",
            kept.len() + lost.len() + after.len(),
            lost.len()
        ),
    );
    assert_eq!(wrong, 0, "a token resolved to another value");
    assert_eq!(not_found, lost.len());
}
