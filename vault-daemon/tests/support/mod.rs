//! What the `vault-daemon` test binaries share (each declares `mod support;`): the bearer-key
//! request wrapper and the Luhn arithmetic test card numbers need. Not every binary uses every
//! helper, hence the `dead_code` allowance.
#![allow(dead_code, reason = "each test binary uses a subset")]

use std::io::{BufRead, BufReader, Lines};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

/// Starts `vaultd serve --dev` on `listen` (`127.0.0.1:0` for any port) with data directory
/// `data` (`VAULT_LOG=warn`, stderr inherited) and waits for its first stdout line: returns the
/// child, the address it says it listens on, and the rest of its stdout.
pub(crate) fn spawn_dev(
    data: &Path,
    listen: &str,
) -> (Child, String, Lines<BufReader<ChildStdout>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vaultd"))
        .args(["serve", "--dev", "--listen", listen, "--data-dir"])
        .arg(data)
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
    (child, addr, lines)
}

/// `msg` with `authorization: Bearer <key>`.
pub(crate) fn with_key<T>(msg: T, key: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}

/// The Luhn sum of ASCII digits, the rightmost counted as position 0.
fn luhn_sum(digits: &[u8], doubled_parity: usize) -> u32 {
    digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(d - b'0');
            if i % 2 == doubled_parity {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum()
}

/// `prefix` followed by its Luhn check digit.
pub(crate) fn luhn(prefix: &str) -> String {
    let sum = luhn_sum(prefix.as_bytes(), 0);
    format!("{prefix}{}", (10 - sum % 10) % 10)
}

/// Whether ASCII digits (check digit last) pass the Luhn check.
pub(crate) fn luhn_valid(digits: &[u8]) -> bool {
    luhn_sum(digits, 1).is_multiple_of(10)
}
