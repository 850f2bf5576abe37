//! Runs the README's walk-through exactly as written (the shell block between
//! `readme-test:begin` and `readme-test:end`), in order, against a fresh `vaultd serve --dev`
//! started in a temporary directory. The only difference from a newcomer's terminal: the daemon
//! listens on a free port and `VAULT_ENDPOINT` points there. The `cargo run … --example checkout`
//! line runs the example's flow in-process (its `run` function) with the same environment.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

#[allow(dead_code, unreachable_pub)]
#[path = "../../vault-client/examples/checkout.rs"]
mod checkout;

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/proxy_checkout.rs"]
mod proxy_checkout;

fn walkthrough() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let block = readme
        .split("<!-- readme-test:begin -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- readme-test:end -->").next())
        .expect("README has a readme-test block");
    block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("```"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn readme_walkthrough() {
    let commands = walkthrough();
    assert!(commands.len() >= 10, "{commands:?}");
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();

    // `cargo run --release -p vault-daemon --bin vaultd -- serve --dev`, on a free port.
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_vaultd"))
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .current_dir(cwd)
        .env("VAULT_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(daemon.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let endpoint = format!("http://{}", first.strip_prefix("listening on ").unwrap());
    std::thread::spawn(move || for _ in lines {});

    let bin_dir = Path::new(env!("CARGO_BIN_EXE_vaultctl")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut outputs = Vec::new();
    for command in &commands {
        let out = if command.contains("cargo run -p vault-client --example checkout") {
            run_checkout_example(command, cwd, &endpoint)
        } else {
            let out = Command::new("sh")
                .args(["-c", command])
                .current_dir(cwd)
                .env("PATH", &path)
                .env("VAULT_ENDPOINT", &endpoint)
                .env_remove("VAULT_API_KEY")
                .env_remove("VAULT_API_KEY_FILE")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "README command failed: {command}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        outputs.push((command.clone(), out));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    assert!(daemon.wait().unwrap().success());

    let find = |prefix: &str| {
        outputs
            .iter()
            .find(|(c, _)| c.starts_with(prefix) || c.contains(prefix))
            .map(|(_, o)| o.clone())
            .unwrap_or_else(|| panic!("no README command {prefix:?}"))
    };
    let status = find("vaultctl status");
    assert!(
        status.contains("sealed") && status.contains("no"),
        "{status}"
    );
    assert!(cwd.join("checkout.key").exists());
    // FPE `pan`: same length, last four kept, and not the card itself.
    let token = find("vaultctl tokenize pan");
    let token = token.trim();
    assert_eq!(token.len(), 16, "{token}");
    assert!(token.ends_with("1111") && token != "4111111111111111");
    let receipt = find("--example checkout");
    assert!(receipt.contains("Paid with card"), "{receipt}");
    assert!(!receipt.contains("4111111111111111"), "{receipt}");
    assert_eq!(
        find("vaultctl detokenize pan_vault").trim(),
        "5500000000000004"
    );
    assert!(find("vaultctl keys rewrap").contains("complete"));
    // curl over Connect JSON: the token it got back detokenizes to the card it sent.
    assert!(
        std::fs::read_to_string(cwd.join("curl-token.txt"))
            .unwrap()
            .starts_with("tok_")
    );
    let detokenized = find("/vault.v1.Tokenizer/Detokenize");
    assert!(
        detokenized.contains(r#""value":"4000056655665556""#),
        "{detokenized}"
    );
    assert!(find("vaultctl keys list").contains("v2 active"));
    assert!(find("vaultctl audit verify").contains("audit log OK"));
}

/// `VAR=value … cargo run -p vault-client --example checkout`: the example's `run` with the
/// environment the line sets, against the walk-through's daemon.
fn run_checkout_example(command: &str, cwd: &Path, endpoint: &str) -> String {
    let key_file = command
        .split_whitespace()
        .find_map(|w| w.strip_prefix("VAULT_API_KEY_FILE="))
        .expect("the README gives the checkout key file");
    let key = std::fs::read_to_string(cwd.join(key_file)).unwrap();
    let config = vault_client::Config::new(endpoint)
        .api_key(key.trim().to_owned().into())
        .deadline(Duration::from_secs(5));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(checkout::run(
        config,
        "pan".to_owned(),
        "4111111111111111".to_owned().into(),
    ))
    .unwrap_or_else(|e| panic!("checkout example failed: {e}"))
}

/// "Keep cards out of your checkout service": the README's command runs the proxy example,
/// whose flow is checked here in-process (its `run`): the shop sees tokens only, the processor
/// the card and code, the browser tokens again, and the code token reveals once.
#[test]
fn readme_proxy_checkout_example() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    assert!(readme.contains("cargo run -p vault-daemon --example proxy_checkout"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt.block_on(proxy_checkout::run());
    let (card, code) = (proxy_checkout::CARD, proxy_checkout::CVV);
    assert!(
        r.shop_saw.contains("tok_") && r.shop_saw.contains("cvt_"),
        "{r:?}"
    );
    assert!(!r.shop_saw.contains(card) && !r.shop_saw.contains(&format!("\"{code}\"")));
    assert!(
        r.processor_saw.contains(card) && r.processor_saw.contains(code),
        "{r:?}"
    );
    assert!(
        !r.browser_got.contains(card) && r.browser_got.contains("approved"),
        "{r:?}"
    );
    assert_eq!(r.second_charge, 422);
}
