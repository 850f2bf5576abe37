//! Backup and restore of a SQLite vault, as an operator does it: `vaultctl backup` of a running
//! `vaultd` while callers keep tokenizing, `vaultctl restore` into a new data directory, and a
//! daemon on the restored copy.
//!
//! Checked: every token acknowledged before the backup began detokenizes to its value; a token
//! acknowledged while or after it ran detokenizes to its own value or is NOT_FOUND, never
//! another value; restore refuses a directory that holds a vault; and no GCM nonce of the
//! restored vault's new records equals any nonce the original vault used (the restored store
//! hands out the same nonce counters again: only the random field per reservation keeps them
//! apart, which is the property shown).

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use assert_cmd::Command as Cmd;
use support::{dev_api_key, spawn_dev};
use vault_proto::v1::tokenize_result;
use vault_proto::v1::tokenizer_client::TokenizerClient;
use vault_test_support::{figure, tokenize_request, with_key, with_luhn};

/// A distinct card number per `i`.
fn pan(i: u64) -> String {
    with_luhn(&format!("4{:014}", 100_000_000 + i * 7_919))
}

/// Tokenizes `values` (pan_vault) in one call: (token, value) of each.
async fn tokenize(
    c: &mut TokenizerClient<tonic::transport::Channel>,
    key: &str,
    values: &[String],
) -> Vec<(String, String)> {
    let resp = c
        .tokenize(with_key(
            tokenize_request("pan_vault", values.iter().cloned()),
            key,
        ))
        .await
        .unwrap()
        .into_inner();
    resp.results
        .iter()
        .zip(values)
        .map(|(r, v)| match &r.outcome {
            Some(tokenize_result::Outcome::Token(t)) => (t.token.clone(), v.clone()),
            other => panic!("tokenize failed: {other:?}"),
        })
        .collect()
}

fn ctl() -> Cmd {
    let mut c = Cmd::new(env!("CARGO_BIN_EXE_vaultctl"));
    c.env_remove("VAULT_API_KEY")
        .env_remove("VAULT_API_KEY_FILE")
        .env_remove("VAULT_ENDPOINT")
        .env_remove("VAULT_DATABASE_URL")
        .timeout(Duration::from_secs(120));
    c
}

/// (record id, key version, 12-byte nonce) of every stored record.
fn nonces(db: &Path) -> Vec<(i64, Vec<u8>, Vec<u8>)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn
        .prepare("SELECT id, ciphertext FROM records WHERE template = 'pan_vault'")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
        .unwrap()
        .map(|row| {
            let (id, ct) = row.unwrap();
            // [format 1][version 4][nonce 12][ciphertext][tag 16]
            (id, ct[1..5].to_vec(), ct[5..17].to_vec())
        })
        .collect()
}

#[test]
fn backup_under_load_restores_every_token_and_never_repeats_a_nonce() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let restored = dir.path().join("restored");
    let backup_file = dir.path().join("vault-backup.db");
    let rt = tokio::runtime::Runtime::new().unwrap();

    let (child, addr, lines) = spawn_dev(&data, "127.0.0.1:0");
    let child = support::KillOnDrop(Some(child));
    std::thread::spawn(move || for _ in lines {});
    let key = dev_api_key(&data);

    // Before the backup: acknowledged, so they must all come back.
    let before: Vec<(String, String)> = rt.block_on(async {
        let mut c = support::tokenizer(&addr).await;
        let mut all = Vec::new();
        for round in 0..3u64 {
            let values: Vec<String> = (round * 100..round * 100 + 100).map(pan).collect();
            all.extend(tokenize(&mut c, &key, &values).await);
        }
        all
    });

    // Load while the backup runs, and a while after it.
    let stop_load = Arc::new(AtomicBool::new(false));
    let load = {
        let (addr, key, stop_load) = (addr.clone(), key.clone(), stop_load.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let mut c = support::tokenizer(&addr).await;
                let mut acked = Vec::new();
                let mut i = 10_000u64;
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop_load.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let values: Vec<String> = (i..i + 5).map(pan).collect();
                    acked.extend(tokenize(&mut c, &key, &values).await);
                    i += 5;
                }
                acked
            })
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let out = ctl()
        .args(["--json", "backup", "--data-dir"])
        .arg(&data)
        .arg("--out")
        .arg(&backup_file)
        .output()
        .unwrap();
    let backup_secs = started.elapsed().as_secs_f64();
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    stop_load.store(true, Ordering::Relaxed);
    let during = load.join().unwrap();
    assert!(!during.is_empty());
    // A second backup to the same file is refused (never overwritten).
    ctl()
        .args(["backup", "--data-dir"])
        .arg(&data)
        .arg("--out")
        .arg(&backup_file)
        .assert()
        .code(1);
    child.stop();

    // Restore: never over a live vault; into a new directory, with the root key beside it.
    ctl()
        .args(["restore", "--from"])
        .arg(&backup_file)
        .arg("--data-dir")
        .arg(&data)
        .assert()
        .code(1)
        .stderr(predicates::str::contains("never overwritten"));
    ctl()
        .args(["restore", "--from"])
        .arg(&backup_file)
        .arg("--data-dir")
        .arg(&restored)
        .assert()
        .success();
    std::fs::copy(data.join("root.key"), restored.join("root.key")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            restored.join("root.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }

    let (child, addr, lines) = spawn_dev(&restored, "127.0.0.1:0");
    let child = support::KillOnDrop(Some(child));
    std::thread::spawn(move || for _ in lines {});
    let key = dev_api_key(&restored);
    let (found_during, after) = rt.block_on(async {
        let mut c = support::tokenizer(&addr).await;
        let tokens: Vec<String> = before.iter().map(|(t, _)| t.clone()).collect();
        let got = support::detokenize(&mut c, &key, "pan_vault", &tokens).await;
        for ((_, value), got) in before.iter().zip(&got) {
            assert_eq!(
                got.as_ref(),
                Some(value),
                "a token acknowledged before the backup"
            );
        }
        let tokens: Vec<String> = during.iter().map(|(t, _)| t.clone()).collect();
        let got = support::detokenize(&mut c, &key, "pan_vault", &tokens).await;
        let mut found = 0;
        for ((_, value), got) in during.iter().zip(&got) {
            if let Some(v) = got {
                assert_eq!(v, value, "a token resolved to another value");
                found += 1;
            }
        }
        // New tokens on the restored vault.
        let values: Vec<String> = (50_000..50_300).map(pan).collect();
        let after = tokenize(&mut c, &key, &values).await;
        let got = support::detokenize(
            &mut c,
            &key,
            "pan_vault",
            &after.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>(),
        )
        .await;
        for ((_, value), got) in after.iter().zip(&got) {
            assert_eq!(got.as_ref(), Some(value));
        }
        (found, after.len())
    });
    child.stop();

    // Nonces: records present in both files with the same nonce are the backup's own; every
    // other (version, nonce) must be unique across the original and the restored vault.
    let original = nonces(&data.join("vault.db"));
    let copy = nonces(&restored.join("vault.db"));
    let backed_up: HashSet<(i64, Vec<u8>, Vec<u8>)> = nonces(&backup_file).into_iter().collect();
    let mut seen: HashMap<(Vec<u8>, Vec<u8>), i64> = HashMap::new();
    let mut counters_reused = 0;
    let original_counters: HashSet<(Vec<u8>, Vec<u8>)> = original
        .iter()
        .filter(|r| !backed_up.contains(*r))
        .map(|(_, v, n)| (v.clone(), n[8..].to_vec()))
        .collect();
    for row in original
        .iter()
        .chain(copy.iter().filter(|r| !backed_up.contains(*r)))
    {
        let (id, version, nonce) = row;
        if let Some(other) = seen.insert((version.clone(), nonce.clone()), *id) {
            panic!("nonce reused: records {other} and {id}");
        }
    }
    for (_, v, n) in copy.iter().filter(|r| !backed_up.contains(*r)) {
        if original_counters.contains(&(v.clone(), n[8..].to_vec())) {
            counters_reused += 1;
        }
    }
    figure(&format!(
        "backup under load: {} records, {} bytes in {backup_secs:.2} s; {} tokens acknowledged \
         before it (all restored), {} while or after it ({found_during} in the copy, the rest \
         NOT_FOUND, none wrong); {after} new tokens on the restored vault, {counters_reused} of \
         them on a nonce counter the original also used, 0 nonces repeated",
        report["records"],
        report["bytes"],
        before.len(),
        during.len()
    ));
}

/// Starts a dev daemon on a PostgreSQL vault.
fn spawn_pg(data: &Path, url: &str, schema: &str) -> (Child, String) {
    let mut cmd = support::dev_command(data, "127.0.0.1:0");
    cmd.env("VAULT_DATABASE_URL", url)
        .env("VAULT_DATABASE_SCHEMA", schema);
    let mut child = cmd.spawn().unwrap();
    let (addr, lines) = support::listening(&mut child);
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// A PostgreSQL tool from the server's own directory (its version matches the server's).
fn pg_tool(name: &str) -> std::process::Command {
    let bin = std::env::var("VAULT_TEST_PG_BIN").unwrap_or_default();
    let path = Path::new(&bin).join(name);
    std::process::Command::new(if path.exists() {
        path.into_os_string()
    } else {
        name.into()
    })
}

/// The documented PostgreSQL path (docs/operations.md): `pg_dump -Fc` of the vault's schema,
/// `pg_restore` into a fresh database, a daemon on it, every token back.
#[test]
fn postgres_vault_moves_through_pg_dump_and_pg_restore() {
    let Some(url) = vault_test_support::pg_url_or_skip("pg_dump/pg_restore of a vault") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (data, data2) = (dir.path().join("a"), dir.path().join("b"));
    let schema = format!("backup_{}", std::process::id());
    let rt = tokio::runtime::Runtime::new().unwrap();

    let (child, addr) = spawn_pg(&data, &url, &schema);
    let child = support::KillOnDrop(Some(child));
    let key = dev_api_key(&data);
    let issued = rt.block_on(async {
        let mut c = support::tokenizer(&addr).await;
        let values: Vec<String> = (0..200).map(pan).collect();
        tokenize(&mut c, &key, &values).await
    });
    child.stop();

    // pg_dump of the vault's schema; a fresh database; pg_restore into it.
    let dump = dir.path().join("vault.dump");
    let out = pg_tool("pg_dump")
        .args(["-Fc", "--no-owner", "-n", &schema, "-f"])
        .arg(&dump)
        .arg(format!("--dbname={url}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_dump: {out:?}");
    let fresh = format!("vault_restore_{}", std::process::id());
    let (base, _) = url.rsplit_once('/').unwrap();
    let fresh_url = format!("{base}/{fresh}");
    let psql = |sql: &str| {
        let out = pg_tool("psql")
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
            .arg(format!("--dbname={url}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "psql {sql}: {out:?}");
    };
    psql(&format!("CREATE DATABASE {fresh}"));
    let out = pg_tool("pg_restore")
        .args(["--no-owner", "--exit-on-error"])
        .arg(format!("--dbname={fresh_url}"))
        .arg(&dump)
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_restore: {out:?}");

    // A daemon of its own on the restored database, with the vault's root key.
    std::fs::create_dir_all(&data2).unwrap();
    std::fs::copy(data.join("root.key"), data2.join("root.key")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            data2.join("root.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    let (child, addr) = spawn_pg(&data2, &fresh_url, &schema);
    let child = support::KillOnDrop(Some(child));
    let key = dev_api_key(&data2);
    rt.block_on(async {
        let mut c = support::tokenizer(&addr).await;
        let tokens: Vec<String> = issued.iter().map(|(t, _)| t.clone()).collect();
        let got = support::detokenize(&mut c, &key, "pan_vault", &tokens).await;
        for ((_, value), got) in issued.iter().zip(&got) {
            assert_eq!(got.as_ref(), Some(value));
        }
        // And it takes new tokens.
        let values: Vec<String> = (1_000..1_010).map(pan).collect();
        assert_eq!(tokenize(&mut c, &key, &values).await.len(), 10);
    });
    child.stop();
    psql(&format!("DROP DATABASE {fresh}"));
    psql(&format!("DROP SCHEMA {schema} CASCADE"));
}
