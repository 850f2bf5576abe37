//! Runs the real `vaultd` binary: `vaultd serve --dev` on port 0, reads the bound address from
//! its first stdout line and the dev key from `<data-dir>/dev-api-key`, tokenizes and
//! detokenizes, then stops it with SIGTERM and expects a clean exit.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use support::{dev_api_key, dev_command, listening, spawn_dev};
use vault_proto::v1::tokenizer_client::TokenizerClient;
use vault_proto::v1::{detokenize_result, tokenize_result};
use vault_test_support::{detokenize_request, tokenize_request, with_key};

#[test]
fn vaultd_serve_dev() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("vault-data");
    let (mut child, addr, mut lines) = spawn_dev(&data, "127.0.0.1:0");
    let rest: Vec<String> = lines.by_ref().take(3).map(Result::unwrap).collect();
    let key = dev_api_key(&data);
    assert!(rest.iter().any(|l| l.contains(&key)), "{rest:?}");

    round_trip(&addr, &key, "pan", "4111 1111 1111 1111");

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
    let envs: Vec<(&str, &std::ffi::OsStr)> = envs.iter().map(|(k, v)| (*k, v.as_ref())).collect();
    serve_dev_log(
        dir.path(),
        &["--data-dir".as_ref(), data.as_os_str()],
        &envs,
    )
    .unwrap_or_else(|log| panic!("vaultd did not start:\n{log}"))
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

/// Runs `vaultd serve --dev` with `args` and `envs` in `cwd` until it listens, stops it with
/// SIGTERM, and returns its JSON log events; `Err(log)` if it exits without listening.
fn serve_dev(
    cwd: &std::path::Path,
    args: &[&std::ffi::OsStr],
    envs: &[(&str, &std::ffi::OsStr)],
) -> Result<Vec<serde_json::Value>, String> {
    let mut envs = envs.to_vec();
    envs.push(("VAULT_LOG_FORMAT", "json".as_ref()));
    let text = serve_dev_log(cwd, args, &envs)?;
    Ok(text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect())
}

/// [`serve_dev`]'s run, returning the log as written (stderr to a file, `NO_COLOR` unset, none
/// of the overrides under test inherited from the test's own environment).
fn serve_dev_log(
    cwd: &std::path::Path,
    args: &[&std::ffi::OsStr],
    envs: &[(&str, &std::ffi::OsStr)],
) -> Result<String, String> {
    let log = cwd.join(format!("vaultd-{}.log", std::process::id()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vaultd"));
    cmd.current_dir(cwd)
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("VAULT_LOG", "info")
        .env_remove("NO_COLOR")
        .env_remove("VAULT_DATA_DIR")
        .env_remove("VAULT_ROOT_KEY_FILE")
        .env_remove("VAULT_SYNCHRONOUS")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok);
    let listening = first
        .as_deref()
        .is_some_and(|l| l.starts_with("listening on "));
    if listening {
        std::thread::spawn(move || for _ in lines {});
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
    }
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    if !listening || !status.success() {
        return Err(text);
    }
    Ok(text)
}

fn listening_event(events: &[serde_json::Value]) -> &serde_json::Value {
    events
        .iter()
        .find(|v| v["message"] == "listening")
        .expect("the listening event")
}

/// `vaultd serve --dev --data-dir D` honours every environment override (it used to rebuild
/// the dev defaults for `D` and drop them: `VAULT_SYNCHRONOUS=normal` ran with `full`, and
/// `VAULT_ROOT_KEY_FILE` was ignored); `VAULT_DATA_DIR` alone moves the whole dev vault, root
/// key file included (it used to fail writing `./vault-data/root.tmp`); and `--data-dir` that
/// disagrees with `VAULT_DATA_DIR` is refused rather than one of them silently winning.
#[test]
fn dev_mode_honours_or_refuses_every_override() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let events = serve_dev(
        dir.path(),
        &["--data-dir".as_ref(), data.as_os_str()],
        &[("VAULT_SYNCHRONOUS", "normal".as_ref())],
    )
    .unwrap();
    let l = listening_event(&events);
    assert_eq!(l["synchronous"], "normal", "{l}");
    assert_eq!(l["data_dir"], data.display().to_string(), "{l}");
    assert_eq!(
        l["store"],
        data.join("vault.db").display().to_string(),
        "{l}"
    );

    let data = dir.path().join("e");
    let key = dir.path().join("keys-elsewhere.key");
    serve_dev(
        dir.path(),
        &["--data-dir".as_ref(), data.as_os_str()],
        &[("VAULT_ROOT_KEY_FILE", key.as_os_str())],
    )
    .unwrap();
    assert!(
        key.is_file(),
        "the root key file is where VAULT_ROOT_KEY_FILE says"
    );
    assert!(!data.join("root.key").exists());

    // A root key file that cannot be written is named as such (not as the caller registry).
    let unwritable = dir.path().join("no-such-dir").join("root.key");
    let err = serve_dev(
        dir.path(),
        &["--data-dir".as_ref(), dir.path().join("f").as_os_str()],
        &[("VAULT_ROOT_KEY_FILE", unwritable.as_os_str())],
    )
    .unwrap_err();
    assert!(err.contains("root key file"), "{err}");
    assert!(!err.contains("caller registry"), "{err}");

    let moved = dir.path().join("x");
    let cwd = tempfile::tempdir().unwrap();
    let events = serve_dev(cwd.path(), &[], &[("VAULT_DATA_DIR", moved.as_os_str())]).unwrap();
    assert_eq!(
        listening_event(&events)["data_dir"],
        moved.display().to_string()
    );
    assert!(moved.join("vault.db").is_file() && moved.join("root.key").is_file());
    assert!(
        !cwd.path().join("vault-data").exists(),
        "nothing in ./vault-data"
    );

    let err = serve_dev(
        dir.path(),
        &["--data-dir".as_ref(), dir.path().join("y").as_os_str()],
        &[("VAULT_DATA_DIR", moved.as_os_str())],
    )
    .unwrap_err();
    assert!(err.contains("VAULT_DATA_DIR"), "{err}");
}

/// A kill -9 at any moment of a new vault's first start (store file, schema, root key file,
/// vault metadata, keys, audit log, caller registry, dev key) leaves a directory the next start
/// opens: either it finds the complete vault, or it recognises the unfinished one (which holds
/// nothing anyone was answered for), says so, and creates it again. The kill times spread over
/// the whole first start, measured first. `VAULT_LONG_TESTS=1` runs 200 kills instead of 30.
#[test]
fn a_kill_at_any_moment_of_the_first_start_leaves_a_vault_that_starts() {
    use std::time::{Duration, Instant};
    let long = std::env::var("VAULT_LONG_TESTS").is_ok_and(|v| v == "1");
    let kills: u32 = if long { 200 } else { 30 };
    let root = tempfile::tempdir().unwrap();
    let start = |data: &std::path::Path| {
        dev_command(data, "127.0.0.1:0")
            .env_remove("VAULT_DATA_DIR")
            .env_remove("VAULT_ROOT_KEY_FILE")
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // How long an uninterrupted first start takes, to the `listening on` line.
    let t0 = Instant::now();
    let mut c = start(&root.path().join("measure"));
    let mut lines = BufReader::new(c.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().starts_with("listening on "));
    let first_start = t0.elapsed();
    c.kill().unwrap();
    c.wait().unwrap();

    let (mut restarted, mut recreated) = (0, 0);
    for i in 0..kills {
        let data = root.path().join(format!("v{i}"));
        let mut c = start(&data);
        // Spread over [0, 1.2 × first start], with a little jitter from the loop index.
        let at = first_start.mul_f64(1.2 * f64::from(i) / f64::from(kills))
            + Duration::from_micros(u64::from(i * 37 % 500));
        std::thread::sleep(at);
        c.kill().unwrap();
        c.wait().unwrap();

        let events = serve_dev(root.path(), &["--data-dir".as_ref(), data.as_os_str()], &[])
            .unwrap_or_else(|log| panic!("kill {i} at {at:?}: the next start failed:\n{log}"));
        restarted += 1;
        if events.iter().any(|v| {
            v["fields"]["message"]
                .as_str()
                .or(v["message"].as_str())
                .is_some_and(|m| m.contains("left unfinished"))
        }) {
            recreated += 1;
        }
        // The vault works: a vaulted token round trip through the binary's own API.
        check_round_trip(&data);
        let _ = std::fs::remove_dir_all(&data);
    }
    eprintln!(
        "FIGURE first-start kills: {kills} kills over {first_start:?}, {restarted} next starts \
         succeeded, {recreated} found an unfinished vault database and created it again"
    );
    assert_eq!(restarted, kills);
}

/// Starts `vaultd` on `data` once more and tokenizes and detokenizes a vaulted PAN.
fn check_round_trip(data: &std::path::Path) {
    let mut child = dev_command(data, "127.0.0.1:0")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (addr, lines) = listening(&mut child);
    std::thread::spawn(move || for _ in lines {});
    let key = dev_api_key(data);
    round_trip(&addr, &key, "pan_vault", "4111111111111111");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Tokenizes `value` with `template` through the daemon at `addr`, detokenizes the token, and
/// checks the value comes back.
fn round_trip(addr: &str, key: &str, template: &str, value: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = TokenizerClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let resp = c
            .tokenize(with_key(tokenize_request(template, [value]), key))
            .await
            .unwrap()
            .into_inner();
        let Some(tokenize_result::Outcome::Token(t)) = &resp.results[0].outcome else {
            panic!("{resp:?}");
        };
        let resp = c
            .detokenize(with_key(
                detokenize_request(template, std::slice::from_ref(&t.token), "binary test"),
                key,
            ))
            .await
            .unwrap()
            .into_inner();
        let Some(detokenize_result::Outcome::Value(v)) = &resp.results[0].outcome else {
            panic!("{resp:?}");
        };
        assert_eq!(v.value, value);
    });
}
