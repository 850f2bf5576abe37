//! What the `vault-daemon` test binaries share (each declares `mod support;`) beyond the
//! workspace's `vault-test-support`: starting the `vaultd` binary, which only this package's
//! tests can name (`CARGO_BIN_EXE_vaultd`). Not every binary uses every helper, hence the
//! `dead_code` allowance.
#![allow(dead_code, reason = "each test binary uses a subset")]

use std::io::{BufRead, BufReader, Lines};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

/// The `vaultd serve --dev` command on `listen` (`127.0.0.1:0` for any port) with data directory
/// `data`, `VAULT_LOG=warn`, stdout piped and stderr inherited: add environment, then spawn.
pub(crate) fn dev_command(data: &Path, listen: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vaultd"));
    cmd.args(["serve", "--dev", "--listen", listen, "--data-dir"])
        .arg(data)
        .env("VAULT_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    cmd
}

/// Waits for a started daemon's first stdout line: the address it says it listens on, and the
/// rest of its stdout.
pub(crate) fn listening(child: &mut Child) -> (String, Lines<BufReader<ChildStdout>>) {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    (addr, lines)
}

/// Starts `vaultd serve --dev` ([`dev_command`]) and waits until it listens: returns the child,
/// its address, and the rest of its stdout.
pub(crate) fn spawn_dev(
    data: &Path,
    listen: &str,
) -> (Child, String, Lines<BufReader<ChildStdout>>) {
    let mut child = dev_command(data, listen).spawn().unwrap();
    let (addr, lines) = listening(&mut child);
    (child, addr, lines)
}

/// The API key `vaultd serve --dev` wrote for itself in data directory `data`.
pub(crate) fn dev_api_key(data: &Path) -> String {
    std::fs::read_to_string(data.join("dev-api-key"))
        .unwrap()
        .trim()
        .to_owned()
}

/// A child process killed (SIGKILL) and reaped when dropped: a test that fails part-way never
/// leaves a daemon behind holding the test runner's output pipes open.
pub(crate) struct KillOnDrop(pub(crate) Option<Child>);

impl KillOnDrop {
    /// SIGTERM, and the daemon must exit cleanly.
    pub(crate) fn stop(mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let status = child.wait().unwrap();
            assert!(status.success(), "vaultd exited with {status:?}");
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A gRPC client of the tokenizer at `addr` (plaintext loopback).
pub(crate) async fn tokenizer(
    addr: &str,
) -> vault_proto::v1::tokenizer_client::TokenizerClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    vault_proto::v1::tokenizer_client::TokenizerClient::new(channel)
        .max_decoding_message_size(64 << 20)
}

/// Detokenizes `tokens` of `template` in calls of 500: `Some(value)`, or `None` for a token
/// that is NOT_FOUND (any other failure panics).
pub(crate) async fn detokenize(
    c: &mut vault_proto::v1::tokenizer_client::TokenizerClient<tonic::transport::Channel>,
    key: &str,
    template: &str,
    tokens: &[String],
) -> Vec<Option<String>> {
    use vault_proto::v1::{DetokenizeItem, DetokenizeRequest, detokenize_result};
    let mut out = Vec::new();
    for chunk in tokens.chunks(500) {
        let resp = c
            .detokenize(vault_test_support::with_key(
                DetokenizeRequest {
                    request_id: None,
                    template: template.into(),
                    key_version: None,
                    purpose: "data check".into(),
                    items: chunk
                        .iter()
                        .map(|t| DetokenizeItem { token: t.clone() })
                        .collect(),
                },
                key,
            ))
            .await
            .unwrap()
            .into_inner();
        for r in resp.results {
            out.push(match r.outcome {
                Some(detokenize_result::Outcome::Value(v)) => Some(v.value),
                Some(detokenize_result::Outcome::Error(e)) if e.reason == "TOKEN_NOT_FOUND" => None,
                other => panic!("detokenize: {other:?}"),
            });
        }
    }
    out
}
