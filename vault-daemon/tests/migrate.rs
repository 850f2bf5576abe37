//! `vaultctl migrate` from a SQLite vault to PostgreSQL, as an operator runs it: a vault with
//! two key versions, deterministic and formatted tokens (fingerprints, lookup hashes) and
//! idempotency keys; the first run killed with SIGKILL after its first batch; the same command
//! resuming and verifying; a daemon on the PostgreSQL vault answering every token, and an
//! idempotent retry returning the token it returned on SQLite.
//!
//! `VAULT_LONG_TESTS=1` migrates 1,000,000 records instead of 3,000 (the records/s figure in
//! BENCHMARKS.md; run with `--release`).

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use support::{dev_api_key, dev_command, listening, spawn_dev};
use vault_proto::v1::tokenizer_client::TokenizerClient;
use vault_proto::v1::{TokenizeItem, TokenizeRequest, tokenize_result};
use vault_test_support::{figure, pg_url_or_skip, with_key, with_luhn};

type Client = TokenizerClient<tonic::transport::Channel>;

/// Tokenizes `values` under `template`, with idempotency keys where given.
async fn tokenize(
    c: &mut Client,
    key: &str,
    template: &str,
    values: &[(String, Option<String>)],
) -> Vec<String> {
    let request = TokenizeRequest {
        request_id: None,
        template: template.into(),
        key_version: None,
        items: values
            .iter()
            .map(|(v, k)| TokenizeItem {
                value: v.clone(),
                idempotency_key: k.clone(),
                ..TokenizeItem::default()
            })
            .collect(),
    };
    let resp = c
        .tokenize(with_key(request, key))
        .await
        .unwrap()
        .into_inner();
    resp.results
        .into_iter()
        .map(|r| match r.outcome {
            Some(tokenize_result::Outcome::Token(t)) => t.token,
            other => panic!("tokenize: {other:?}"),
        })
        .collect()
}

async fn detokenize(c: &mut Client, key: &str, template: &str, tokens: &[String]) -> Vec<String> {
    support::detokenize(c, key, template, tokens)
        .await
        .into_iter()
        .map(|v| v.expect("every migrated token resolves"))
        .collect()
}

fn pan(i: u64) -> String {
    with_luhn(&format!("5{:014}", 200_000_000 + i * 7_919))
}

fn migrate_cmd(data: &Path, url: &str, schema: &str, batch: usize) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vaultctl"));
    c.args(["--json", "migrate", "--data-dir"])
        .arg(data)
        .args(["--schema", schema, "--batch-size", &batch.to_string()])
        .env("VAULT_DATABASE_URL", url)
        .env_remove("VAULT_DATABASE_SCHEMA");
    c
}

#[test]
fn sqlite_vault_moves_to_postgres_resuming_after_kill() {
    let Some(url) = pg_url_or_skip("vaultctl migrate") else {
        return;
    };
    let long = std::env::var("VAULT_LONG_TESTS").as_deref() == Ok("1");
    let n: u64 = if long { 1_000_000 } else { 3_000 };
    let dir = tempfile::tempdir().unwrap();
    let (data, data_pg) = (dir.path().join("sqlite"), dir.path().join("pg"));
    let schema = format!("migrate_{}", std::process::id());
    let rt = tokio::runtime::Runtime::new().unwrap();

    // The SQLite vault: pan_vault under two key versions, a deterministic and a formatted
    // template, idempotency keys on every tenth item.
    let (child, addr, lines) = spawn_dev(&data, "127.0.0.1:0");
    let child = support::KillOnDrop(Some(child));
    std::thread::spawn(move || for _ in lines {});
    let key = dev_api_key(&data);
    let item = |i: u64| (pan(i), i.is_multiple_of(10).then(|| format!("order-{i}")));
    let (vault1, det, fmt) = rt.block_on(async {
        let mut c = support::tokenizer(&addr).await;
        let mut vault1 = Vec::new();
        let mut i = 0;
        while i < n / 2 {
            let values: Vec<_> = (i..(i + 1000).min(n / 2)).map(item).collect();
            vault1.extend(tokenize(&mut c, &key, "pan_vault", &values).await);
            i += 1000;
        }
        let det_values: Vec<_> = (0..200).map(|i| (pan(i), None)).collect();
        let det = tokenize(&mut c, &key, "pan_vault_det", &det_values).await;
        let fmt = tokenize(&mut c, &key, "pan_vault_fmt", &det_values).await;
        (vault1, det, fmt)
    });
    let out = Command::new(env!("CARGO_BIN_EXE_vaultctl"))
        .args(["keys", "rotate", "pan_vault"])
        .env("VAULT_ENDPOINT", format!("http://{addr}"))
        .env("VAULT_API_KEY_FILE", data.join("dev-api-key"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let vault2 = rt.block_on(async {
        let mut c = support::tokenizer(&addr).await;
        let mut out = Vec::new();
        let mut i = n / 2;
        while i < n {
            let values: Vec<_> = (i..(i + 1000).min(n)).map(item).collect();
            out.extend(tokenize(&mut c, &key, "pan_vault", &values).await);
            i += 1000;
        }
        out
    });
    child.stop();

    // A daemon is running? Refused. (The WAL and shm files of an open vault.)
    let (running, _addr, lines) = spawn_dev(&data, "127.0.0.1:0");
    let running = support::KillOnDrop(Some(running));
    std::thread::spawn(move || for _ in lines {});
    let refused = migrate_cmd(&data, &url, &schema, 100).output().unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("in use"),
        "{refused:?}"
    );
    running.stop();

    // A backup of the same vault, for its rate beside the migration's (BENCHMARKS.md).
    let backup_file = dir.path().join("before-migration.db");
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_vaultctl"))
        .args(["--json", "backup", "--data-dir"])
        .arg(&data)
        .arg("--out")
        .arg(&backup_file)
        .output()
        .unwrap();
    let backup_secs = started.elapsed().as_secs_f64();
    assert!(out.status.success(), "{out:?}");
    let backup: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(backup["records"], n + 400);

    // First run: SIGKILL once it reports its first committed batch.
    let mut first = migrate_cmd(&data, &url, &schema, 50)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(first.stderr.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    assert!(line.starts_with("copied "), "{line}");
    first.kill().unwrap();
    first.wait().unwrap();

    // The same command resumes, copies the rest and verifies.
    let started = Instant::now();
    let out = migrate_cmd(&data, &url, &schema, 5_000).output().unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verified"], true);
    assert_eq!(report["resumed"], true, "{report}");
    assert_eq!(report["records"], n + 400);
    let copied_now = report["copied_now"].as_u64().unwrap();
    assert!(
        copied_now < n + 400,
        "the first run's batches were copied again"
    );
    let versions = report["per_version"].as_array().unwrap();
    assert!(
        versions
            .iter()
            .any(|v| v["template"] == "pan_vault" && v["key_version"] == 2),
        "{report}"
    );
    // Once done, the command only verifies again.
    let again = migrate_cmd(&data, &url, &schema, 5_000).output().unwrap();
    assert!(again.status.success(), "{again:?}");
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["copied_now"], 0);

    // A daemon on the PostgreSQL vault answers every token; an idempotent retry returns the
    // token SQLite returned.
    std::fs::create_dir_all(&data_pg).unwrap();
    // The root key, and the caller registry: idempotency keys are per caller, so the same
    // caller must keep its identity (what an operator moving a vault copies besides the store).
    for file in ["root.key", "callers.json", "callers.key", "dev-api-key"] {
        std::fs::copy(data.join(file), data_pg.join(file)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data_pg.join(file), std::fs::Permissions::from_mode(0o600))
            .unwrap();
    }
    let mut cmd = dev_command(&data_pg, "127.0.0.1:0");
    cmd.env("VAULT_DATABASE_URL", &url)
        .env("VAULT_DATABASE_SCHEMA", &schema);
    let mut child = cmd.spawn().unwrap();
    let (addr, lines) = listening(&mut child);
    let child = support::KillOnDrop(Some(child));
    std::thread::spawn(move || for _ in lines {});
    let key = dev_api_key(&data_pg);
    rt.block_on(async {
        let mut c = support::tokenizer(&addr).await;
        // Every token in short runs, a sample in the long variant.
        let step = if long { 997 } else { 1 };
        let pick = |v: &[String]| v.iter().step_by(step).cloned().collect::<Vec<_>>();
        let (s1, s2) = (pick(&vault1), pick(&vault2));
        let got = detokenize(&mut c, &key, "pan_vault", &s1).await;
        for (k, g) in got.iter().enumerate() {
            assert_eq!(*g, pan((k * step) as u64));
        }
        let got = detokenize(&mut c, &key, "pan_vault", &s2).await;
        for (k, g) in got.iter().enumerate() {
            assert_eq!(*g, pan(n / 2 + (k * step) as u64));
        }
        for (template, tokens) in [("pan_vault_det", &det), ("pan_vault_fmt", &fmt)] {
            let got = detokenize(&mut c, &key, template, tokens).await;
            for (i, g) in got.iter().enumerate() {
                assert_eq!(*g, pan(i as u64));
            }
        }
        // The deterministic template finds the migrated fingerprint; the idempotency key its
        // migrated record.
        let again = tokenize(&mut c, &key, "pan_vault_det", &[(pan(7), None)]).await;
        assert_eq!(again[0], det[7]);
        let retry = tokenize(&mut c, &key, "pan_vault", &[item(10)]).await;
        assert_eq!(retry[0], vault1[10]);
    });
    child.stop();
    let rate = copied_now as f64 / report["copy_secs"].as_f64().unwrap().max(1e-3);
    figure(&format!(
        "migrate SQLite -> PostgreSQL: {} records ({} pan_vault in 2 key versions, 400 \
         deterministic/formatted), killed after its first batch, resumed: {copied_now} copied by \
         the second run at {rate:.0} records/s; whole second run with verification {secs:.1} s; \
         `vaultctl backup` of the same vault ({} MB) {backup_secs:.2} s = {:.0} records/s",
        n + 400,
        n,
        backup["bytes"].as_u64().unwrap() / 1_000_000,
        (n + 400) as f64 / backup_secs.max(1e-3)
    ));
    let _ = Command::new(
        Path::new(&std::env::var("VAULT_TEST_PG_BIN").unwrap_or_default()).join("psql"),
    )
    .args(["-c", &format!("DROP SCHEMA {schema} CASCADE")])
    .arg(format!("--dbname={url}"))
    .output();
}
