//! `vaultctl`'s own error type: what went wrong, what to do next, and the exit code.

use std::process::ExitCode;

/// Why a command failed. Each kind has its exit code (see `vaultctl --help`).
#[derive(Debug)]
pub(crate) enum Failure {
    /// Anything else (exit 1).
    Other(String),
    /// The audit log does not verify (exit 3).
    Tampered(String),
    /// The vault is sealed (exit 4).
    Sealed(String),
    /// The daemon cannot be reached (exit 5).
    Unavailable(String),
    /// Not authenticated or not allowed (exit 6).
    Denied(String),
    /// Ctrl-C (exit 130).
    Interrupted(String),
}

impl Failure {
    pub(crate) fn other(message: impl Into<String>) -> Self {
        Failure::Other(message.into())
    }

    pub(crate) fn code(&self) -> u8 {
        match self {
            Failure::Other(_) => 1,
            Failure::Tampered(_) => 3,
            Failure::Sealed(_) => 4,
            Failure::Unavailable(_) => 5,
            Failure::Denied(_) => 6,
            Failure::Interrupted(_) => 130,
        }
    }

    fn message(&self) -> &str {
        match self {
            Failure::Other(m)
            | Failure::Tampered(m)
            | Failure::Sealed(m)
            | Failure::Unavailable(m)
            | Failure::Denied(m)
            | Failure::Interrupted(m) => m,
        }
    }

    /// Print to stderr and return the exit code.
    pub(crate) fn report(self) -> ExitCode {
        eprintln!("vaultctl: {}", self.message());
        ExitCode::from(self.code())
    }
}

impl From<vault_client::Error> for Failure {
    fn from(e: vault_client::Error) -> Self {
        use vault_client::Error as E;
        match e {
            E::Sealed { .. } => Failure::Sealed(
                "the vault is sealed: run `vaultctl unseal` (or start vaultd with its root key \
                 file)"
                    .into(),
            ),
            E::Unavailable { message } => Failure::Unavailable(format!(
                "the daemon is unavailable ({message}): is `vaultd serve` running, and is \
                 --endpoint / VAULT_ENDPOINT right?"
            )),
            E::Transport(t) => Failure::Unavailable(format!(
                "cannot connect to the daemon ({}): is `vaultd serve` running, and is \
                 --endpoint / VAULT_ENDPOINT right?",
                source_chain(&t)
            )),
            E::CircuitOpen => Failure::Unavailable(e.to_string()),
            E::DeadlineExceeded => Failure::Unavailable(
                "the call's deadline passed: the daemon is slow or the job is long; retry with a \
                 larger --timeout"
                    .into(),
            ),
            E::Unauthenticated => Failure::Denied(
                "not authenticated: give an admin API key with --api-key-file or \
                 VAULT_API_KEY_FILE (dev: ./vault-data/dev-api-key), or a client certificate"
                    .into(),
            ),
            E::PermissionDenied { message } => Failure::Denied(format!(
                "{message}: use an identity granted that scope (see `vaultctl policy explain`)"
            )),
            E::Config { message } => Failure::Other(format!("client configuration: {message}")),
            other => Failure::Other(other.to_string()),
        }
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Other(e.to_string())
    }
}
