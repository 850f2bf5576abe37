//! `vaultd`: the tokenization daemon.
//!
//! `vaultd serve --dev` starts a vault a newcomer can try at once (loopback, plaintext, built-in
//! templates, a generated root key, a dev API key). `vaultd serve --config vault.toml` is for
//! deployments. Signals: SIGTERM/SIGINT drain and stop, SIGHUP reloads the policy.
#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use vault_daemon::config::Config;

#[derive(Parser)]
#[command(
    name = "vaultd",
    version,
    about = "The tokenization vault daemon (gRPC)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Development mode: loopback plaintext, built-in templates, a vault created on first
        /// start with a generated root key file, and an API key allowed every scope.
        #[arg(long, conflicts_with = "config")]
        dev: bool,
        /// The configuration file (see examples/vault.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Data directory (vault database, audit log, caller registry). Dev default
        /// `./vault-data`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Listen address (dev mode: loopback only).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
}

fn main() -> Result<()> {
    init_logging()?;
    let hardening = vault_daemon::hardening::harden();
    for failure in &hardening.failed {
        tracing::warn!(%failure, "process hardening");
    }
    tracing::info!(
        memory_locked = hardening.memory_locked,
        "process hardening: core dumps off, not dumpable"
    );
    let cli = Cli::parse();
    let Command::Serve {
        dev,
        config,
        data_dir,
        listen,
    } = cli.command;
    if config.is_none() && !dev {
        anyhow::bail!("give --dev or --config <file>");
    }
    let cfg = Config::for_serve(config.as_deref(), data_dir, listen)
        .context("configuration (file, VAULT_* environment, command line)")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(cfg))
}

/// Logs go to stderr: text by default, coloured only when stderr is a terminal (and `NO_COLOR`
/// is unset), so log files and journald get no escape codes; `VAULT_LOG_FORMAT=json` writes
/// one JSON object per line with the same fields, for log shippers. `VAULT_LOG` filters
/// (`info` by default).
fn init_logging() -> Result<()> {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("VAULT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match std::env::var("VAULT_LOG_FORMAT").as_deref() {
        Ok("json") => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        Ok("text") | Err(std::env::VarError::NotPresent) => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).init()
        }
        Ok(other) => anyhow::bail!("VAULT_LOG_FORMAT={other:?}: expected `text` or `json`"),
        Err(std::env::VarError::NotUnicode(_)) => {
            anyhow::bail!("VAULT_LOG_FORMAT is not UTF-8: expected `text` or `json`")
        }
    }
    Ok(())
}

async fn serve(cfg: Config) -> Result<()> {
    let data_dir = cfg.data_dir.clone();
    let dev = cfg.dev;
    // Handlers first: a SIGTERM sent as soon as `listening on` is read must drain and stop,
    // not kill the process with the default action.
    let signals = Signals::install();
    let running = vault_daemon::spawn(cfg).await.context("starting vaultd")?;
    let addr = running.addr();
    // The first stdout line is machine-readable, for scripts and tests that start vaultd on
    // port 0: `listening on <addr>`.
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {addr}")?;
    if dev && let Some(key) = running.dev_api_key() {
        let key_file = data_dir.join(vault_daemon::server::DEV_KEY_FILE);
        writeln!(
            out,
            "dev mode: NOT for production (plaintext on loopback, root key file next to the data)\n\
             dev API key (every scope), also in {}:\n  {key}\n\
             try:\n  grpcurl -plaintext -H \"authorization: Bearer $(cat {})\" \\\n    \
             -d '{{\"template\":\"pan\",\"items\":[{{\"value\":\"4111 1111 1111 1111\"}}]}}' \\\n    \
             {addr} vault.v1.Tokenizer/Tokenize",
            key_file.display(),
            key_file.display(),
        )?;
    }
    if let Some(metrics) = running.metrics_addr() {
        writeln!(
            out,
            "metrics on http://{metrics}/metrics (also /livez, /readyz)"
        )?;
    }
    for (name, addr) in running.proxy_addrs() {
        writeln!(out, "proxy route {name} on {addr}")?;
    }
    out.flush()?;
    drop(out);

    signals.wait_for_stop(&running).await;
    if !running.shutdown().await {
        tracing::warn!("some calls did not finish within the drain time");
    }
    Ok(())
}

/// SIGTERM, SIGINT and SIGHUP, installed before the daemon starts.
#[cfg(unix)]
struct Signals(
    Option<(
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
    )>,
);

#[cfg(unix)]
impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(term), Ok(int), Ok(hup)) => Signals(Some((term, int, hup))),
            _ => {
                tracing::error!("cannot install signal handlers; stopping on Ctrl-C only");
                Signals(None)
            }
        }
    }

    /// Wait for SIGTERM or SIGINT, reloading the policy on each SIGHUP meanwhile.
    async fn wait_for_stop(self, running: &vault_daemon::Running) {
        let Some((mut term, mut int, mut hup)) = self.0 else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = int.recv() => return,
                _ = hup.recv() => {
                    if let Err(e) = running.reload_policy() {
                        tracing::error!(error = %e, "policy reload failed; the old policy stays in force");
                    }
                }
            }
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> Signals {
        Signals
    }

    async fn wait_for_stop(self, _running: &vault_daemon::Running) {
        let _ = tokio::signal::ctrl_c().await;
    }
}
