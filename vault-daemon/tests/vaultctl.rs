//! Drives `vaultctl` as a user would, against a real `vaultd serve --dev` on port 0 (and
//! offline on its data directory once it is stopped).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use assert_cmd::Command as Cmd;
use predicates::prelude::*;
use serde_json::Value;
use support::spawn_dev;
use vault_test_support::with_luhn;

/// A `vaultd serve --dev` child; SIGTERM on drop.
struct Daemon {
    child: Option<Child>,
    endpoint: String,
    data: PathBuf,
}

impl Daemon {
    fn start(data: &Path) -> Daemon {
        Daemon::start_on(data, "127.0.0.1:0")
    }

    fn start_on(data: &Path, listen: &str) -> Daemon {
        let (child, addr, lines) = spawn_dev(data, listen);
        // Keep draining stdout so the daemon never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Daemon {
            child: Some(child),
            endpoint: format!("http://{addr}"),
            data: data.to_owned(),
        }
    }

    /// `vaultctl` with this daemon's endpoint and the dev admin key.
    fn ctl(&self) -> Cmd {
        let mut c = Cmd::new(env!("CARGO_BIN_EXE_vaultctl"));
        c.env("VAULT_ENDPOINT", &self.endpoint)
            .env("VAULT_API_KEY_FILE", self.data.join("dev-api-key"))
            .env_remove("VAULT_API_KEY");
        c
    }

    fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let status = child.wait().unwrap();
            assert!(status.success(), "vaultd exited with {status:?}");
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `vaultctl` for offline commands (no daemon).
fn offline() -> Cmd {
    let mut c = Cmd::new(env!("CARGO_BIN_EXE_vaultctl"));
    c.env_remove("VAULT_API_KEY")
        .env_remove("VAULT_API_KEY_FILE")
        .env_remove("VAULT_ENDPOINT");
    c
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

#[test]
fn callers_tokenize_detokenize_rotate_rewrap_verify() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("vault-data");
    let d = Daemon::start(&data);
    let key = dir.path().join("checkout.key");

    // callers add → its key, written 0600.
    d.ctl()
        .args(["callers", "add", "checkout"])
        .args([
            "--scope",
            "tokenize:pan_vault",
            "--scope",
            "detokenize:pan_vault",
        ])
        .arg("--key-out")
        .arg(&key)
        .assert()
        .success()
        .stdout(predicate::str::contains("created caller checkout"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let list = d
        .ctl()
        .args(["--json", "callers", "list"])
        .output()
        .unwrap();
    let list = json(&list);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "checkout"),
        "{list}"
    );

    // tokenize with that key, values on stdin; detokenize them back.
    let cards = "4111111111111111\n5500 0000 0000 0004\n";
    let out = d
        .ctl()
        .env("VAULT_API_KEY_FILE", &key)
        .args(["tokenize", "pan_vault"])
        .write_stdin(cards)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let tokens = stdout(&out);
    assert_eq!(tokens.lines().count(), 2, "{tokens}");
    assert!(!tokens.contains("4111111111111111"));
    let out = d
        .ctl()
        .env("VAULT_API_KEY_FILE", &key)
        .args(["detokenize", "pan_vault", "--purpose", "test"])
        .write_stdin(tokens.clone())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), cards);
    // --json: one object per line.
    let out = d
        .ctl()
        .env("VAULT_API_KEY_FILE", &key)
        .args(["--json", "tokenize", "pan_vault"])
        .write_stdin("4111111111111111\n")
        .output()
        .unwrap();
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        line["token"].as_str().unwrap().starts_with("tok_"),
        "{line}"
    );
    // The checkout key may not administer.
    d.ctl()
        .env("VAULT_API_KEY_FILE", &key)
        .args(["keys", "list"])
        .assert()
        .code(6);
    // A bad line is reported by number, never by value, and the exit code is 1.
    d.ctl()
        .env("VAULT_API_KEY_FILE", &key)
        .args(["tokenize", "pan_vault"])
        .write_stdin("4111111111111111\n12ab\n")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("line 2").and(predicate::str::contains("12ab").not()));

    // rotate, then rewrap online: every record ends under version 2.
    d.ctl()
        .args(["keys", "rotate", "pan_vault"])
        .assert()
        .success()
        .stdout(predicate::str::contains("data/pan_vault to version 2"));
    let out = d
        .ctl()
        .args(["--json", "keys", "rewrap", "pan_vault"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json(&out)["state"], "succeeded");
    let keys = json(
        &d.ctl()
            .args(["--json", "keys", "list", "--template", "pan_vault"])
            .output()
            .unwrap(),
    );
    let data_key = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "data/pan_vault")
        .unwrap()
        .clone();
    assert_eq!(data_key["active_version"], 2, "{data_key}");
    assert_eq!(data_key["versions"][0]["record_count"], 0, "{data_key}");
    // Old tokens still detokenize after the rewrap.
    d.ctl()
        .env("VAULT_API_KEY_FILE", &key)
        .args(["detokenize", "pan_vault", "--purpose", "test"])
        .write_stdin(tokens)
        .assert()
        .success()
        .stdout(cards);
    d.ctl()
        .args(["keys", "retire", "data/pan_vault", "1"])
        .assert()
        .success();

    // The audit log verifies, online; tail and export show events.
    d.ctl()
        .args(["audit", "verify"])
        .assert()
        .success()
        .stdout(predicate::str::contains("audit log OK"));
    let out = d
        .ctl()
        .args(["--json", "audit", "verify"])
        .output()
        .unwrap();
    assert_eq!(json(&out)["ok"], true);
    let out = d.ctl().args(["audit", "export"]).output().unwrap();
    for line in stdout(&out).lines() {
        let _: Value = serde_json::from_str(line).unwrap();
    }
    d.ctl()
        .args(["audit", "tail", "-n", "3"])
        .assert()
        .success()
        .stdout(predicate::str::contains("verify_audit_log"));

    // revoke → the key stops working (6); seal → 4 with the hint.
    d.ctl()
        .args(["callers", "revoke", "checkout"])
        .assert()
        .success();
    d.ctl()
        .env("VAULT_API_KEY_FILE", &key)
        .args(["tokenize", "pan_vault"])
        .write_stdin("4111111111111111\n")
        .assert()
        .code(6);
    d.ctl().args(["seal"]).assert().success();
    d.ctl()
        .args(["keys", "list"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("vaultctl unseal"));
    d.stop();
}

#[test]
fn offline_rewrap_resumes_and_audit_tamper_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("vault-data");
    let d = Daemon::start(&data);
    let values: String = (0..23)
        .map(|i| format!("{}\n", with_luhn(&format!("4111111{i:08}"))))
        .collect();
    d.ctl()
        .args(["tokenize", "pan_vault"])
        .write_stdin(values)
        .assert()
        .success();
    d.ctl()
        .args(["keys", "rotate", "data/pan_vault"])
        .assert()
        .success();
    d.stop();

    // Interrupted after one batch of 5, then resumed to completion.
    let out = offline()
        .args(["--json", "keys", "rewrap", "pan_vault", "--data-dir"])
        .arg(&data)
        .args(["--batch-size", "5", "--max-batches", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let job = json(&out);
    assert_eq!(job["state"], "paused", "{job}");
    assert_eq!(job["processed"], 5, "{job}");
    assert_eq!(job["remaining"], 18, "{job}");
    let out = offline()
        .args(["--json", "keys", "rewrap", "pan_vault", "--data-dir"])
        .arg(&data)
        .args(["--batch-size", "5"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let done = json(&out);
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["job_id"], job["job_id"], "the same job resumed");
    assert_eq!(done["processed"], 23, "{done}");
    assert_eq!(done["remaining"], 0, "{done}");
    offline()
        .args(["status", "--data-dir"])
        .arg(&data)
        .assert()
        .success()
        .stdout(predicate::str::contains("unseal method"));

    // The log verifies offline with the key file...
    offline()
        .args(["audit", "verify", "--data-dir"])
        .arg(&data)
        .assert()
        .success()
        .stdout(predicate::str::contains("MACs checked"));
    offline()
        .args(["audit", "tail", "-n", "2", "--data-dir"])
        .arg(&data)
        .assert()
        .success();
    // ...and an edited byte in one event field is caught and named.
    let log = data.join("audit.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let (i, line) = lines
        .iter()
        .enumerate()
        .find(|(_, l)| l.contains("\"kind\":\"event\"") && l.contains("\"items\":23"))
        .unwrap();
    let seq: Value = serde_json::from_str(line).unwrap();
    let seq = seq["seq"].as_u64().unwrap();
    lines[i] = line.replace("\"items\":23", "\"items\":24");
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    offline()
        .args(["audit", "verify", "--data-dir"])
        .arg(&data)
        .assert()
        .code(3)
        .stderr(predicate::str::contains(format!("event {seq} is bad")));
    let out = offline()
        .args(["--json", "audit", "verify", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(json(&out)["first_bad_index"], seq);
}

#[test]
fn init_with_root_key_file_and_shares() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let key = dir.path().join("root.key");
    offline()
        .args(["init", "--data-dir"])
        .arg(&a)
        .arg("--root-key-file")
        .arg(&key)
        .assert()
        .success()
        .stdout(predicate::str::contains("created vault"));
    assert!(key.exists());
    // A second init refuses.
    offline()
        .args(["init", "--data-dir"])
        .arg(&a)
        .arg("--root-key-file")
        .arg(&key)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("already holds a vault"));
    let b = dir.path().join("b");
    let out = offline()
        .args([
            "--json",
            "init",
            "--shares",
            "3",
            "--threshold",
            "2",
            "--data-dir",
        ])
        .arg(&b)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v = json(&out);
    assert_eq!(v["shares"].as_array().unwrap().len(), 3);
    assert_eq!(v["unseal_method"], "shares");
    let c = dir.path().join("c");
    offline()
        .args(["init", "--passphrase-stdin", "--data-dir"])
        .arg(&c)
        .write_stdin("correct horse battery staple\n")
        .assert()
        .success();
    offline()
        .args(["--json", "status", "--data-dir"])
        .arg(&c)
        .assert()
        .success()
        .stdout(predicate::str::contains("\"passphrase\""));
}

#[test]
fn policy_check_and_explain() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[roles.x]\n[[roles.x.grants]]\nscopes = [\"tokenize:pan\", \"frob:pan\"]\n",
    )
    .unwrap();
    offline()
        .args(["policy", "check"])
        .arg(&bad)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("bad.toml:3:").and(predicate::str::contains("frob")));
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/policy.toml");
    offline()
        .args(["policy", "check", example])
        .assert()
        .success()
        .stdout(predicate::str::contains("OK"));
    offline()
        .args([
            "policy",
            "explain",
            "key:ops",
            "admin:keys",
            "--policy",
            example,
        ])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("ALLOW"));
    let out = offline()
        .args([
            "--json",
            "policy",
            "explain",
            "key:analytics",
            "detokenize:pan",
        ])
        .args(["--policy", example])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(json(&out)["allowed"], false);
}

#[test]
fn usage_unavailable_and_help() {
    offline().arg("frobnicate").assert().code(2);
    offline()
        .args(["--endpoint", "http://127.0.0.1:1", "status"])
        .assert()
        .code(5)
        .stderr(predicate::str::contains("vaultd serve"));
    offline()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("Exit codes"));
    for cmd in [
        &["init"][..],
        &["status"],
        &["unseal"],
        &["seal"],
        &["keys", "list"],
        &["keys", "rotate"],
        &["keys", "rewrap"],
        &["keys", "min-version"],
        &["keys", "retire"],
        &["keys", "destroy"],
        &["keys", "rotate-root"],
        &["callers", "add"],
        &["callers", "list"],
        &["callers", "revoke"],
        &["policy", "check"],
        &["policy", "explain"],
        &["audit", "tail"],
        &["audit", "export"],
        &["audit", "verify"],
        &["tokenize"],
        &["detokenize"],
    ] {
        offline()
            .args(cmd)
            .arg("--help")
            .assert()
            .success()
            .stdout(predicate::str::contains("Example"));
    }
}

/// Whether `s` starts with an RFC 3339 UTC time (`2026-12-02T03:00:22` then `Z` or `.123Z`).
fn starts_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && (b[19] == b'Z' || b[19] == b'.')
}

/// `tokenize --ttl` shows the expiry (RFC 3339) after the token and still pipes into
/// `detokenize`; `audit tail` prints RFC 3339 UTC times (raw milliseconds in `--json`); and
/// after a crash tore the audit log's last line, the daemon starts again and `audit verify`
/// names the recovered tail.
#[test]
fn expiry_audit_times_and_a_recovered_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("vault-data");
    let d = Daemon::start(&data);
    let out = d
        .ctl()
        .args(["tokenize", "pan_vault", "--ttl", "3600"])
        .write_stdin("4111111111111111\n")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let line = stdout(&out);
    let (token, expiry) = line
        .trim_end()
        .split_once('\t')
        .expect("token, tab, expiry");
    assert!(token.starts_with("tok_"), "{line}");
    let when = expiry.strip_prefix("expires ").expect("expires …");
    assert!(starts_rfc3339(when), "{when}");
    d.ctl()
        .args(["detokenize", "pan_vault", "--purpose", "test"])
        .write_stdin(line.clone())
        .assert()
        .success()
        .stdout("4111111111111111\n");
    let out = d
        .ctl()
        .args(["--json", "tokenize", "pan_vault", "--ttl", "60"])
        .write_stdin("4111111111111111\n")
        .output()
        .unwrap();
    assert!(starts_rfc3339(json(&out)["expires_at"].as_str().unwrap()));

    let out = d.ctl().args(["audit", "tail", "-n", "2"]).output().unwrap();
    let rows: Vec<String> = stdout(&out).lines().skip(1).map(str::to_owned).collect();
    assert_eq!(rows.len(), 2, "{}", stdout(&out));
    for row in &rows {
        let time = row.split_whitespace().nth(1).unwrap();
        assert!(starts_rfc3339(time), "{row}");
    }
    let out = d
        .ctl()
        .args(["--json", "audit", "tail", "-n", "1"])
        .output()
        .unwrap();
    let first = stdout(&out);
    let v: Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert!(v["time_ms"].is_u64(), "{v}");
    d.stop();

    // A crash during an append: the last line is half written.
    let log = data.join("audit.log");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.extend_from_slice(b"{\"kind\":\"event\",\"seq\":");
    std::fs::write(&log, &bytes).unwrap();
    let d = Daemon::start(&data);
    d.stop();
    let out = offline()
        .args(["audit", "verify", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("audit log OK"), "{text}");
    assert!(
        text.contains("recovered torn tail")
            && text.contains("22 bytes")
            && text.contains("sha256"),
        "{text}"
    );
    let out = offline()
        .args(["--json", "audit", "verify", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let v = json(&out);
    assert_eq!(v["ok"], true);
    assert_eq!(
        v["recovered_torn_tails"].as_array().unwrap().len(),
        1,
        "{v}"
    );
    let quarantined = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("audit.log.torn-")
        })
        .count();
    assert_eq!(quarantined, 1);
}
