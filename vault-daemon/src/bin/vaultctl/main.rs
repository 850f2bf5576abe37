//! `vaultctl`: the vault's admin CLI.
//!
//! Online commands talk to a running `vaultd` through `vault-client` with an admin identity
//! (an API key, or a client certificate). Offline commands (`init`, `status --data-dir`,
//! `keys rewrap --data-dir`, `audit … --data-dir`, `policy …`) work on the files of a data
//! directory while the daemon is stopped.
//!
//! Secrets never come from argv: passphrases and shares are read from the terminal without
//! echo (or from stdin with `--stdin`), values to tokenize from stdin, API keys from a file or
//! the environment.
//!
//! Exit codes (also in `vaultctl --help`): 0 ok, 1 error, 2 usage, 3 audit log tampered,
//! 4 vault sealed, 5 daemon unavailable, 6 not authenticated or not allowed, 130 interrupted.

#![forbid(unsafe_code)]
// House rules as lints: a panic on `None`/`Err` outside tests needs a stated reason at its
// site (`#[expect(clippy::expect_used, reason = …)]`).
#![warn(clippy::unwrap_used, clippy::expect_used)]

/// `println!` that ends the process quietly when stdout is closed (`vaultctl … | head`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

mod args;
mod failure;
mod offline;
mod online;
mod output;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{AuditCmd, CallersCmd, Cli, Command, HsmCmd, KeysCmd, PolicyCmd};
use crate::failure::Failure;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::other(format!("starting the async runtime: {e}")))?;
    let g = cli.global;
    runtime.block_on(async move {
        match cli.command {
            Command::Init(a) => offline::init(&g, a).await,
            Command::Status(a) => match a.offline.data_dir_given() {
                true => offline::status(&g, &a.offline).await,
                false => online::status(&g).await,
            },
            Command::Unseal(a) => online::unseal(&g, a).await,
            Command::Seal => online::seal(&g).await,
            Command::Keys(k) => match k {
                KeysCmd::List { template } => online::keys_list(&g, template).await,
                KeysCmd::Rotate { key } => online::keys_rotate(&g, &key).await,
                KeysCmd::Rewrap(a) => match a.offline.data_dir_given() {
                    true => offline::rewrap(&g, a).await,
                    false => online::rewrap(&g, a).await,
                },
                KeysCmd::MinVersion { key, version } => {
                    online::keys_min_version(&g, &key, version).await
                }
                KeysCmd::Retire { key, version } => online::keys_retire(&g, &key, version).await,
                KeysCmd::Destroy { key, version, yes } => {
                    online::keys_destroy(&g, &key, version, yes).await
                }
                KeysCmd::RotateRoot(a) => online::rotate_root(&g, a).await,
            },
            Command::Callers(c) => match c {
                CallersCmd::Add(a) => online::callers_add(&g, a).await,
                CallersCmd::List { all } => online::callers_list(&g, all).await,
                CallersCmd::Revoke { caller } => online::callers_revoke(&g, &caller).await,
            },
            Command::Policy(p) => match p {
                PolicyCmd::Check { file, config } => offline::policy_check(&g, &file, config),
                PolicyCmd::Explain(a) => offline::policy_explain(&g, a),
            },
            Command::Audit(a) => match a {
                AuditCmd::Tail(t) => match t.offline.data_dir_given() {
                    true => offline::audit_tail(&g, t),
                    false => online::audit_tail(&g, t).await,
                },
                AuditCmd::Export(e) => match e.offline.data_dir_given() {
                    true => offline::audit_export(&g, e),
                    false => online::audit_export(&g, e).await,
                },
                AuditCmd::Verify(v) => match v.offline.data_dir_given() {
                    true => offline::audit_verify(&g, v),
                    false => online::audit_verify(&g).await,
                },
            },
            Command::Backup(a) => offline::backup(&g, &a),
            Command::Restore(a) => offline::restore(&g, &a),
            Command::Migrate(a) => offline::migrate(&g, &a).await,
            Command::Hsm(HsmCmd::CreateKey { config }) => offline::hsm_create_key(&g, &config),
            Command::Tokenize(a) => online::tokenize(&g, a).await,
            Command::Detokenize(a) => online::detokenize(&g, a).await,
        }
    })
}
