//! The command line: every command with its `--help` examples.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    error (the message says what to do next)
  2    usage error (bad flags or arguments)
  3    the audit log does not verify (tampered, truncated or corrupt)
  4    the vault is sealed (run `vaultctl unseal`)
  5    the daemon is unavailable (not running, wrong --endpoint, TLS)
  6    not authenticated, or the admin identity lacks the scope
  130  interrupted (Ctrl-C); a rewrap stops after its current batch and resumes later

Environment:
  VAULT_ENDPOINT       the daemon (default http://127.0.0.1:50051)
  VAULT_API_KEY_FILE   file holding the admin API key
  VAULT_API_KEY        the admin API key itself (prefer the file)
  Without either, ./vault-data/dev-api-key (written by `vaultd serve --dev`) is used if present.

Examples:
  vaultd serve --dev &                     # a dev daemon on 127.0.0.1:50051
  vaultctl status
  vaultctl callers add checkout --scope tokenize:pan --scope reveal:pan
  echo 4111111111111111 | vaultctl tokenize pan
  vaultctl audit verify";

/// The vault's admin CLI.
#[derive(Parser, Debug)]
#[command(name = "vaultctl", version, about, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// How to reach the daemon and how to print.
#[derive(Args, Debug, Clone)]
pub(crate) struct Global {
    /// The daemon's gRPC endpoint (`https://…`, or `http://` on loopback).
    #[arg(
        long,
        global = true,
        env = "VAULT_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    pub(crate) endpoint: String,
    /// A file holding the admin API key (one line).
    #[arg(long, global = true, env = "VAULT_API_KEY_FILE", value_name = "FILE")]
    pub(crate) api_key_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed the daemon's certificate; needed for `https://`.
    #[arg(long, global = true, env = "VAULT_CA_CERT", value_name = "PEM")]
    pub(crate) ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS; with --client-key.
    #[arg(
        long,
        global = true,
        env = "VAULT_CLIENT_CERT",
        value_name = "PEM",
        requires = "client_key"
    )]
    pub(crate) client_cert: Option<PathBuf>,
    /// Client private key (PEM) for mTLS; with --client-cert.
    #[arg(
        long,
        global = true,
        env = "VAULT_CLIENT_KEY",
        value_name = "PEM",
        requires = "client_cert"
    )]
    pub(crate) client_key: Option<PathBuf>,
    /// Verify the daemon's certificate for this name instead of the endpoint's host.
    #[arg(long, global = true, value_name = "NAME")]
    pub(crate) tls_server_name: Option<String>,
    /// Deadline of each call to the daemon, in seconds.
    #[arg(long, global = true, default_value_t = 30, value_name = "SECS")]
    pub(crate) timeout: u64,
    /// Print JSON (one object, or JSON lines for streams) instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

/// Where the files of a stopped daemon are.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct Offline {
    /// Work offline on this data directory (the daemon must be stopped).
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// The daemon's config file: templates, `synchronous` and (without --data-dir) the data
    /// directory.
    #[arg(long, short, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
}

impl Offline {
    pub(crate) fn data_dir_given(&self) -> bool {
        self.data_dir.is_some()
    }
}

/// How an offline command gets the root key (a passphrase, shares or a key file).
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct RootKeyArgs {
    /// Raw root key file (64 hex digits, mode 0600). Default: `<data-dir>/root.key` if present.
    #[arg(long, value_name = "FILE")]
    pub(crate) root_key_file: Option<PathBuf>,
    /// Read the passphrase (or the shares, one per line) from stdin instead of the terminal.
    #[arg(long)]
    pub(crate) stdin: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Create a new vault in a data directory (offline).
    #[command(after_help = "\
Examples:
  vaultctl init --data-dir /var/lib/vault                       # passphrase, asked twice
  vaultctl init --data-dir /var/lib/vault --root-key-file /etc/vault/root.key
  vaultctl init --data-dir /var/lib/vault --shares 5 --threshold 3
  vaultctl init --config /etc/vault/vaultd.toml --hsm             # root key wrapped by the HSM
  printf '%s\\n' \"$PASS\" | vaultctl init --data-dir d --passphrase-stdin

Shares are printed once: hand each to its custodian and keep no copy together.")]
    Init(InitArgs),
    /// Whether the vault is sealed, how it unseals and its id.
    #[command(after_help = "\
Examples:
  vaultctl status                          # online
  vaultctl status --data-dir ./vault-data  # offline, daemon stopped")]
    Status(StatusArgs),
    /// Unseal a running daemon: a passphrase, or one Shamir share at a time (no echo).
    #[command(after_help = "\
Examples:
  vaultctl unseal                          # prompts until the threshold is met
  vaultctl unseal --stdin < share.txt      # scripts: passphrase or shares, one per line
  vaultctl unseal --reset                  # discard shares given so far
  vaultctl unseal --hsm                    # the daemon's HSM ([hsm] in its config)")]
    Unseal(UnsealArgs),
    /// Seal a running daemon: its keys leave memory until it is unsealed.
    #[command(after_help = "Example:\n  vaultctl seal")]
    Seal,
    /// Keys: list, rotate, rewrap, minimum version, retire, destroy, root key rotation.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// API-key callers: add, list, revoke.
    #[command(subcommand)]
    Callers(CallersCmd),
    /// Policy files: lint, and explain a decision (offline).
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// The audit log: tail, export, verify.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Copy a running (or stopped) SQLite vault to one file: a consistent snapshot.
    #[command(after_help = "\
Examples:
  vaultctl backup --data-dir /var/lib/vault --out /backup/vault-2026-12-03.db
  vaultctl backup --config /etc/vault/vaultd.toml --out vault.db.bak

SQLite's online backup API, from a read-only connection: the daemon keeps serving. The copy is
checked (integrity, vault id), fsynced and renamed into place; it holds what the vault file
holds (ciphertext, wrapped keys) and opens nothing without the root key. The caller registry and
the audit log are not in it: copy callers.json, callers.key and the audit files yourself.
PostgreSQL vaults: pg_dump -Fc and pg_restore (docs/operations.md).")]
    Backup(BackupArgs),
    /// Restore a backup into a new data directory (never over an existing vault).
    #[command(after_help = "\
Example:
  vaultctl restore --from /backup/vault-2026-12-03.db --data-dir /var/lib/vault-restored

Then start vaultd on that data directory with the vault's root key source. Tokens issued after
the backup are not in it (they answer NOT_FOUND, never another value); new tokens never reuse a
GCM nonce (each nonce reservation takes a fresh random 64-bit field).")]
    Restore(RestoreArgs),
    /// Copy a stopped SQLite vault into an empty PostgreSQL vault; resumable, then verified.
    #[command(after_help = "\
Examples:
  vaultctl migrate --data-dir /var/lib/vault --to 'postgres://vault@db.internal/vault?sslmode=require' \\
      --ca-file /etc/vault/tls/db-ca.pem
  VAULT_DATABASE_URL=postgres://vault@127.0.0.1/vault vaultctl migrate --data-dir ./vault-data --schema vault

Stop vaultd first. Copies records, keys and their states, counters, rewrap jobs, fingerprints,
lookup hashes and idempotency keys as stored (nothing is decrypted), in batches that each commit
with the migration's cursor: after Ctrl-C or kill -9 the same command resumes. The vault's
metadata is written last, so no daemon sees a half-copied vault. Ends with a verification:
record counts per key version and a keyed checksum of every record on both sides. Then point
vaultd's [database] url at the target and detokenize a few known tokens.")]
    Migrate(MigrateArgs),
    /// The HSM that wraps the root key: create its wrapping key (offline).
    #[command(subcommand)]
    Hsm(HsmCmd),
    /// Tokenize values read from stdin, one per line (never from argv: shell history).
    #[command(after_help = "\
Examples:
  echo 4111111111111111 | vaultctl tokenize pan
  vaultctl tokenize pan_vault < cards.txt > tokens.txt
  VAULT_API_KEY_FILE=checkout.key vaultctl tokenize pan --json < cards.txt

One token per input line, in order. A line that fails is reported on stderr with its line
number (never its value) and the exit code is 1.")]
    Tokenize(TokenizeArgs),
    /// Detokenize tokens read from stdin, one per line; prints the values.
    #[command(after_help = "\
Examples:
  echo \"$TOKEN\" | vaultctl detokenize pan --purpose 'refund #1234'
  vaultctl detokenize pan_vault --purpose audit < tokens.txt

Every detokenize is audited with its purpose.")]
    Detokenize(DetokenizeArgs),
}

#[derive(Args, Debug)]
pub(crate) struct InitArgs {
    /// The data directory to create the vault in.
    #[arg(long, value_name = "DIR", required_unless_present = "config")]
    pub(crate) data_dir: Option<PathBuf>,
    /// The daemon's config file (templates, data directory).
    #[arg(long, short, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Use a raw root key file; generated (mode 0600) if it does not exist.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["shares", "passphrase_stdin"])]
    pub(crate) root_key_file: Option<PathBuf>,
    /// Split a random root key into this many Shamir shares (with --threshold).
    #[arg(long, requires = "threshold", conflicts_with = "passphrase_stdin")]
    pub(crate) shares: Option<u8>,
    /// Shares needed to unseal (with --shares), at least 2.
    #[arg(long, requires = "shares")]
    pub(crate) threshold: Option<u8>,
    /// Read the passphrase from stdin (one line) instead of prompting.
    #[arg(long)]
    pub(crate) passphrase_stdin: bool,
    /// Wrap a random root key with the HSM of the config's [hsm] section (the key is created
    /// on the token if absent); vaultd then unseals itself.
    #[arg(long, requires = "config", conflicts_with_all = ["root_key_file", "shares", "passphrase_stdin"])]
    pub(crate) hsm: bool,
}

#[derive(Args, Debug)]
pub(crate) struct BackupArgs {
    /// Where to write the backup (must not exist).
    #[arg(long, value_name = "FILE")]
    pub(crate) out: PathBuf,
    #[command(flatten)]
    pub(crate) offline: Offline,
}

#[derive(Args, Debug)]
pub(crate) struct MigrateArgs {
    /// The target PostgreSQL URL (default VAULT_DATABASE_URL). It may carry a password: prefer
    /// the environment or a ~/.pgpass file.
    #[arg(
        long,
        value_name = "URL",
        env = "VAULT_DATABASE_URL",
        hide_env_values = true
    )]
    pub(crate) to: String,
    /// The schema to create the vault's tables in (default: the URL's search_path).
    #[arg(long, env = "VAULT_DATABASE_SCHEMA")]
    pub(crate) schema: Option<String>,
    /// CA certificate (PEM) of the database server, for sslmode=require.
    #[arg(long, value_name = "PEM")]
    pub(crate) ca_file: Option<PathBuf>,
    /// Records per transaction.
    #[arg(long, default_value_t = 5000)]
    pub(crate) batch_size: usize,
    /// The stopped vault's data directory (its vault.db).
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: PathBuf,
}

#[derive(Args, Debug)]
pub(crate) struct RestoreArgs {
    /// The backup file.
    #[arg(long, value_name = "FILE")]
    pub(crate) from: PathBuf,
    /// The new data directory (created if missing; must not hold a vault).
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: PathBuf,
}

#[derive(Args, Debug)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) offline: Offline,
}

#[derive(Args, Debug)]
pub(crate) struct UnsealArgs {
    /// Read the passphrase, or the shares one per line, from stdin.
    #[arg(long)]
    pub(crate) stdin: bool,
    /// Discard the shares received so far first.
    #[arg(long)]
    pub(crate) reset: bool,
    /// Ask the daemon to unseal with its HSM (after a seal, or once the HSM is back).
    #[arg(long, conflicts_with_all = ["stdin", "reset"])]
    pub(crate) hsm: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum KeysCmd {
    /// The keys, their versions, states and record counts.
    #[command(after_help = "\
Examples:
  vaultctl keys list
  vaultctl keys list --template pan_vault --json")]
    List {
        /// Only the keys of this template.
        #[arg(long)]
        template: Option<String>,
    },
    /// Add a new Active version to a key, or to every key of a template.
    #[command(after_help = "\
Examples:
  vaultctl keys rotate pan_vault           # every key of the template (data/, fp/, fpe/)
  vaultctl keys rotate data/pan_vault      # one key

Older versions keep decrypting; `vaultctl keys rewrap` moves stored records forward.")]
    Rotate {
        /// A template name, or a key name such as `data/pan_vault`.
        key: String,
    },
    /// Re-encrypt a template's records under its Active key version, with progress.
    #[command(after_help = "\
Examples:
  vaultctl keys rewrap pan_vault                     # online: starts (or resumes) the job and watches it
  vaultctl keys rewrap pan_vault --detach            # start it and return
  vaultctl keys rewrap pan_vault --data-dir ./vault-data   # offline, daemon stopped

Resumable and Ctrl-C safe: each batch commits with the job's cursor. Offline, Ctrl-C stops after
the current batch and the same command resumes. Online the job runs in the daemon: Ctrl-C stops
watching and the job goes on; the same command watches it again.")]
    Rewrap(RewrapArgs),
    /// Raise a key's minimum decryption version (older versions stop decrypting).
    #[command(after_help = "Example:\n  vaultctl keys min-version data/pan_vault 2")]
    MinVersion {
        /// The key's name.
        key: String,
        /// The new minimum.
        version: u32,
    },
    /// Retire a DecryptOnly version that no longer protects any record.
    #[command(after_help = "Example:\n  vaultctl keys retire data/pan_vault 1")]
    Retire {
        /// The key's name.
        key: String,
        /// The version.
        version: u32,
    },
    /// Erase a Retired version's key material (irreversible).
    #[command(after_help = "Example:\n  vaultctl keys destroy data/pan_vault 1 --yes")]
    Destroy {
        /// The key's name.
        key: String,
        /// The version.
        version: u32,
        /// Confirm the irreversible erasure.
        #[arg(long)]
        yes: bool,
    },
    /// Replace the root key (new passphrase, new shares, or a generated key file).
    #[command(after_help = "\
Examples:
  vaultctl keys rotate-root                         # new passphrase, asked twice
  vaultctl keys rotate-root --shares 5 --threshold 3
  vaultctl keys rotate-root --generate --out /etc/vault/root.key.new
  vaultctl keys rotate-root --hsm                   # wrapped by the daemon's HSM from now on

The old passphrase, shares or key file stop working at once.")]
    RotateRoot(RotateRootArgs),
}

#[derive(Args, Debug)]
pub(crate) struct RewrapArgs {
    /// A template name, or its data key (`data/<template>`).
    pub(crate) key: String,
    /// Records per transaction.
    #[arg(long, default_value_t = 500)]
    pub(crate) batch_size: u32,
    /// Online: start or resume the job and return without watching it.
    #[arg(long)]
    pub(crate) detach: bool,
    /// Stop (pause) after this many batches. For tests of resumption.
    #[arg(long, hide = true)]
    pub(crate) max_batches: Option<u64>,
    #[command(flatten)]
    pub(crate) offline: Offline,
    #[command(flatten)]
    pub(crate) root: RootKeyArgs,
}

#[derive(Args, Debug)]
pub(crate) struct RotateRootArgs {
    /// Split a random root key into this many Shamir shares (with --threshold).
    #[arg(long, requires = "threshold", conflicts_with = "generate")]
    pub(crate) shares: Option<u32>,
    /// Shares needed (with --shares).
    #[arg(long, requires = "shares")]
    pub(crate) threshold: Option<u32>,
    /// Generate a random root key and write it to --out (mode 0600).
    #[arg(long, requires = "out")]
    pub(crate) generate: bool,
    /// Where --generate writes the new key file (must not exist).
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
    /// Read the new passphrase from stdin instead of prompting.
    #[arg(long, conflicts_with_all = ["shares", "generate"])]
    pub(crate) passphrase_stdin: bool,
    /// A random root key wrapped by the daemon's HSM ([hsm] in its config); the old
    /// passphrase, shares or key file stop working.
    #[arg(long, conflicts_with_all = ["shares", "generate", "passphrase_stdin"])]
    pub(crate) hsm: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum HsmCmd {
    /// Create the AES-256 wrapping key (sensitive, not extractable) on the config's token.
    #[command(after_help = "\
Example:
  vaultctl hsm create-key --config /etc/vault/vaultd.toml

The [hsm] section names the PKCS#11 module, the token (token_label or slot), the key's label
and where the PIN is (pin_file or pin_env; never on the command line). An existing key with
the label is left as it is. Then `vaultctl init --hsm` or `vaultctl keys rotate-root --hsm`.")]
    CreateKey {
        /// The daemon's config file, with its [hsm] section.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum CallersCmd {
    /// Create an API-key caller; its key is printed once (or written to --key-out).
    #[command(after_help = "\
Examples:
  vaultctl callers add checkout --scope tokenize:pan --scope reveal:pan
  vaultctl callers add payments --role payments --key-out payments.key
  vaultctl callers add ops --scope admin:keys --scope admin:audit

Scopes: tokenize:<template>, detokenize:<template>, reveal:<template>, delete:<template>
(`*` for every template), admin:keys, admin:callers, admin:audit. Roles come from the
policy file.")]
    Add(CallersAddArgs),
    /// The callers (active ones; --all adds revoked ones).
    #[command(
        after_help = "Examples:\n  vaultctl callers list\n  vaultctl callers list --all --json"
    )]
    List {
        /// Include revoked callers.
        #[arg(long)]
        all: bool,
    },
    /// Revoke a caller by id or name: its API key stops working at once.
    #[command(after_help = "Example:\n  vaultctl callers revoke checkout")]
    Revoke {
        /// The caller's id (`c_…`) or name.
        caller: String,
    },
}

#[derive(Args, Debug)]
pub(crate) struct CallersAddArgs {
    /// A unique name; the caller's identity is `key:<name>`.
    pub(crate) name: String,
    /// A policy role to grant (repeatable).
    #[arg(long = "role", value_name = "ROLE")]
    pub(crate) roles: Vec<String>,
    /// A scope to grant (repeatable), e.g. `tokenize:pan`.
    #[arg(long = "scope", value_name = "SCOPE")]
    pub(crate) scopes: Vec<String>,
    /// Free text about the caller.
    #[arg(long, default_value = "")]
    pub(crate) description: String,
    /// The key stops working after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub(crate) expires_in: Option<u64>,
    /// Write the API key to this file (mode 0600, must not exist) instead of printing it.
    #[arg(long, value_name = "FILE")]
    pub(crate) key_out: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum PolicyCmd {
    /// Lint a policy file: errors with line and column, warnings about risky grants.
    #[command(after_help = "\
Examples:
  vaultctl policy check policy.toml
  vaultctl policy check policy.toml --config vault.toml   # the daemon's templates")]
    Check {
        /// The policy file.
        file: PathBuf,
        /// The daemon's config (for its templates; default the built-in ones).
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Why a caller is allowed or denied a scope.
    #[command(after_help = "\
Examples:
  vaultctl policy explain key:checkout detokenize:pan --policy policy.toml
  vaultctl policy explain spiffe://prod/ns/pay/sa/payments detokenize:pan --policy policy.toml
  vaultctl policy explain key:checkout tokenize:pan --data-dir ./vault-data   # dev policy + registry

Conditions (rate, networks, purpose, end-user token) are listed, not evaluated.")]
    Explain(ExplainArgs),
}

#[derive(Args, Debug)]
pub(crate) struct ExplainArgs {
    /// The caller: `key:<name>`, `spiffe://…` or `cn:<name>`.
    pub(crate) caller: String,
    /// The scope, e.g. `detokenize:pan` or `admin:keys`.
    pub(crate) scope: String,
    /// The policy file. Default: `<data-dir>/dev-policy.toml`.
    #[arg(long, value_name = "FILE")]
    pub(crate) policy: Option<PathBuf>,
    /// The data directory (its caller registry adds `key:` callers' roles and scopes).
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// The daemon's config (templates).
    #[arg(long, short, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum AuditCmd {
    /// The latest audit events.
    #[command(after_help = "\
Examples:
  vaultctl audit tail -n 20
  vaultctl audit tail --data-dir ./vault-data --json")]
    Tail(AuditTailArgs),
    /// Audit events as JSON lines.
    #[command(after_help = "\
Examples:
  vaultctl audit export > audit.jsonl
  vaultctl audit export --caller c_0123456789abcdef --data-dir ./vault-data

Offline, the stored lines are written as they are (with their MACs). For a copy an auditor can
verify, copy audit.log and audit.checkpoint.")]
    Export(AuditExportArgs),
    /// Walk the hash chain and checkpoints; exit 3 naming the first bad event.
    #[command(after_help = "\
Examples:
  vaultctl audit verify                                  # online
  vaultctl audit verify --data-dir ./vault-data          # offline, with audit.key (MACs too)
  vaultctl audit verify --data-dir copy/ --public-key HEX   # an auditor: signatures and links
  vaultctl audit verify --data-dir ./vault-data --from-seq 1000000 --to-seq 2000000

Every segment present is verified in order (closed audit-<first>-<last>.log files, then
audit.log): each on its own, each starting where the one before was sealed. Segments moved
away (archived) are skipped; the first one present is checked from its signed opening
checkpoint.")]
    Verify(AuditVerifyArgs),
}

#[derive(Args, Debug)]
pub(crate) struct AuditTailArgs {
    /// How many events.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub(crate) count: usize,
    #[command(flatten)]
    pub(crate) offline: Offline,
}

#[derive(Args, Debug)]
pub(crate) struct AuditExportArgs {
    /// Only this caller (its id).
    #[arg(long)]
    pub(crate) caller: Option<String>,
    /// Only this request id.
    #[arg(long)]
    pub(crate) request_id: Option<String>,
    #[command(flatten)]
    pub(crate) offline: Offline,
}

#[derive(Args, Debug)]
pub(crate) struct AuditVerifyArgs {
    /// The audit key file (default `<data-dir>/audit.key`): MACs are checked too.
    #[arg(long, value_name = "FILE", conflicts_with = "public_key")]
    pub(crate) key_file: Option<PathBuf>,
    /// Verify with the checkpoint public key only (hex): signatures, order and links.
    #[arg(long, value_name = "HEX")]
    pub(crate) public_key: Option<String>,
    /// Only the segments holding events from this index on (offline).
    #[arg(long, value_name = "INDEX")]
    pub(crate) from_seq: Option<u64>,
    /// Only the segments holding events up to this index (offline).
    #[arg(long, value_name = "INDEX")]
    pub(crate) to_seq: Option<u64>,
    #[command(flatten)]
    pub(crate) offline: Offline,
}

#[derive(Args, Debug)]
pub(crate) struct TokenizeArgs {
    /// The template, e.g. `pan` or `pan_vault`.
    pub(crate) template: String,
    /// Items per call (larger inputs are sent in chunks).
    #[arg(long, default_value_t = 500)]
    pub(crate) batch_size: usize,
    /// Seconds until the tokens expire (vaulted templates; the template's default otherwise).
    #[arg(long, value_name = "SECONDS")]
    pub(crate) ttl: Option<u64>,
}

#[derive(Args, Debug)]
pub(crate) struct DetokenizeArgs {
    /// The template the tokens belong to.
    pub(crate) template: String,
    /// Why the values are needed (audited).
    #[arg(long)]
    pub(crate) purpose: String,
    /// Items per call.
    #[arg(long, default_value_t = 500)]
    pub(crate) batch_size: usize,
}

/// The data directory and config of an offline command, resolved.
pub(crate) fn resolve_offline(
    offline: &Offline,
) -> Result<vault_daemon::Config, crate::failure::Failure> {
    let mut cfg = match &offline.config {
        Some(path) => vault_daemon::Config::from_file(path)
            .map_err(|e| crate::failure::Failure::other(e.to_string()))?,
        None => vault_daemon::Config::dev(vault_daemon::config::DEFAULT_DATA_DIR),
    };
    // The same VAULT_* overrides as vaultd (VAULT_DATABASE_URL: the PostgreSQL vault a fleet
    // shares); flags still win.
    cfg.apply_env()
        .map_err(|e| crate::failure::Failure::other(e.to_string()))?;
    if let Some(d) = &offline.data_dir {
        cfg.data_dir = d.clone();
    }
    if offline.config.is_none() {
        // No config: the dev layout, with the root key file beside the data if present.
        cfg.root_key_file = Some(cfg.data_dir.join("root.key"));
    }
    Ok(cfg)
}
