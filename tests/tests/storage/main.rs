//! One storage suite, two backends: every case below runs against SQLite (`sqlite_*`) and
//! against PostgreSQL (`pg_*`), through the `Store` trait only.
//!
//! PostgreSQL cases need a server: `eval "$(bash tests/pg/start.sh)"` starts a throwaway one and
//! sets `VAULT_TEST_PG_URL` (`.ci/run` does this). Without it they are skipped with a message on
//! stderr (not captured by the test harness) and listed by `pg_server_is_configured`, which
//! fails when `VAULT_REQUIRE_PG=1` (CI) so a missing server can never pass silently. Each case
//! gets its own schema, so cases run in parallel on one server.
//!
//! A backend gives "handles": independent stores on the same data (two `SqliteStore`s on one
//! file, two `PgStore` pools on one schema), standing for two daemons.

mod cases;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use vault_core::store::{Options, SqliteStore, Store};
use vault_daemon::pgstore::{PgOptions, PgStore};
use vault_test_support::{pg_url, pg_url_or_skip, say};

/// A fresh, empty store and a way to open more handles on the same data.
pub(crate) trait Backend: Sized {
    /// A new empty store, or `None` (skipped) when the backend is not available here.
    fn new(case: &str) -> Option<Self>;
    /// Another handle on the same data (another "daemon").
    fn handle(&self) -> Arc<dyn Store>;
    /// A backup of the data as it is now, taken the way an operator would (a copy of the
    /// SQLite files; `pg_dump`), while no handle writes.
    fn backup(&self) -> Backup;
    /// Puts a backup back (copying the files; dropping the schema and `pg_restore`), while no
    /// handle is open: the store goes back in time.
    fn restore(&self, backup: &Backup);
}

/// A backup: files and their bytes, or a `pg_dump` archive.
pub(crate) enum Backup {
    Files(Vec<(std::path::PathBuf, Vec<u8>)>),
    Dump(tempfile::NamedTempFile),
}

fn sqlite_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    ["vault.db", "vault.db-wal", "vault.db-shm"]
        .iter()
        .map(|f| dir.join(f))
        .collect()
}

pub(crate) struct Sqlite {
    dir: tempfile::TempDir,
}

impl Backend for Sqlite {
    fn new(_case: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        SqliteStore::create(dir.path().join("vault.db"), &Options::default()).unwrap();
        Some(Sqlite { dir })
    }

    fn handle(&self) -> Arc<dyn Store> {
        Arc::new(SqliteStore::open(self.dir.path().join("vault.db"), &Options::default()).unwrap())
    }

    fn backup(&self) -> Backup {
        Backup::Files(
            sqlite_files(self.dir.path())
                .into_iter()
                .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
                .collect(),
        )
    }

    fn restore(&self, backup: &Backup) {
        let Backup::Files(files) = backup else {
            unreachable!("a SQLite backup is files")
        };
        for p in sqlite_files(self.dir.path()) {
            let _ = std::fs::remove_file(p);
        }
        for (p, b) in files {
            std::fs::write(p, b).unwrap();
        }
    }
}

pub(crate) struct Postgres {
    url: String,
    schema: String,
}

impl Backend for Postgres {
    fn new(case: &str) -> Option<Self> {
        static N: AtomicU64 = AtomicU64::new(0);
        let url = pg_url_or_skip(&format!("{case} on PostgreSQL"))?;
        let schema = format!(
            "t_{}_{}_{}",
            case.chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .take(24)
                .collect::<String>()
                .to_ascii_lowercase(),
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        Some(Postgres { url, schema })
    }

    fn handle(&self) -> Arc<dyn Store> {
        let opts = PgOptions {
            pool_size: 8,
            schema: Some(self.schema.clone()),
            ca_file: None,
        };
        Arc::new(PgStore::connect(&self.url, &opts).unwrap())
    }

    fn backup(&self) -> Backup {
        let file = tempfile::NamedTempFile::new().unwrap();
        let out = std::process::Command::new(pg_tool("pg_dump"))
            .args(["--format=custom", "--schema", &self.schema, "--file"])
            .arg(file.path())
            .arg(&self.url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Backup::Dump(file)
    }

    fn restore(&self, backup: &Backup) {
        let Backup::Dump(file) = backup else {
            unreachable!("a PostgreSQL backup is a dump")
        };
        let drop = std::process::Command::new(pg_tool("psql"))
            .args(["-q", "-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!("DROP SCHEMA \"{}\" CASCADE", self.schema))
            .arg(&self.url)
            .output()
            .unwrap();
        assert!(
            drop.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&drop.stderr)
        );
        let out = std::process::Command::new(pg_tool("pg_restore"))
            .args(["--exit-on-error", "--dbname"])
            .arg(&self.url)
            .arg(file.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_restore: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A PostgreSQL client tool: beside the server the tests run (`VAULT_TEST_PG_BIN`), else from
/// `PATH` (Debian's wrappers pick the installed version).
fn pg_tool(name: &str) -> std::path::PathBuf {
    std::env::var_os("VAULT_TEST_PG_BIN")
        .map(|bin| std::path::Path::new(&bin).join(name))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| name.into())
}

/// Generates `sqlite_<case>` and `pg_<case>` for each case function `cases::<case><B>(&B)`.
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $case() {
                    if let Some(b) = <crate::Sqlite as crate::Backend>::new(stringify!($case)) {
                        crate::cases::$case(&b);
                    }
                }
            )*
        }
        mod pg {
            $(
                #[test]
                fn $case() {
                    if let Some(b) = <crate::Postgres as crate::Backend>::new(stringify!($case)) {
                        crate::cases::$case(&b);
                    }
                }
            )*
        }
    };
}

suite!(
    meta_round_trip_and_insert_only,
    keys_create_rotate_and_generation,
    key_state_compare_and_set_and_retire,
    min_version_only_rises,
    root_rewrap_must_cover_every_key,
    nonce_reservation_accumulates,
    ids_unique_across_handles,
    insert_outcomes_within_and_across_batches,
    unallocated_id_fails_the_whole_call,
    writes_refused_under_rotated_away_versions,
    reads_finds_deletes_and_purge,
    rewrap_batches_and_replay_is_safe,
    rewrap_jobs_crud,
    rewrap_lease_is_exclusive_and_lapses,
    concurrent_handles_store_one_record_per_fingerprint,
    vaults_on_two_handles,
    vaults_race_on_one_idempotency_key,
    token_checks_round_trip,
    a_restored_backup_never_resolves_a_token_to_another_value,
);

/// Lists whether the PostgreSQL half ran; fails when it is required (`VAULT_REQUIRE_PG=1`) and
/// no server is configured.
#[test]
fn pg_server_is_configured() {
    match pg_url() {
        Some(_) => say("storage suite: PostgreSQL cases ran against VAULT_TEST_PG_URL\n"),
        None if std::env::var("VAULT_REQUIRE_PG").is_ok_and(|v| v == "1") => {
            panic!("VAULT_REQUIRE_PG=1 but VAULT_TEST_PG_URL is not set")
        }
        None => say(
            "storage suite: PostgreSQL cases SKIPPED (no VAULT_TEST_PG_URL; \
             eval \"$(bash tests/pg/start.sh)\" to run them)\n",
        ),
    }
}

/// PostgreSQL only: `sslmode=require` verifies the server against the configured CA (and the
/// connection really is TLS, by the server's own view); a wrong CA is refused; TLS without a CA
/// and plaintext to a non-loopback host are refused before connecting.
#[test]
fn pg_tls_is_verified_and_plaintext_is_loopback_only() {
    // Refusals that need no server.
    let opts = |ca: Option<std::path::PathBuf>| PgOptions {
        pool_size: 2,
        schema: Some(format!("t_tls_{}", std::process::id())),
        ca_file: ca,
    };
    let err = PgStore::connect("postgres://v:secret@db.example.invalid/vault", &opts(None))
        .unwrap_err()
        .to_string();
    assert!(err.contains("plaintext"), "{err}");
    assert!(!err.contains("secret"), "{err}");
    let err = PgStore::connect(
        "postgres://v:secret@db.example.invalid/vault?sslmode=require",
        &opts(None),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("database_ca"), "{err}");

    let Some(url) = pg_url() else {
        say(
            "SKIPPED pg_tls_is_verified_and_plaintext_is_loopback_only on PostgreSQL: \
             VAULT_TEST_PG_URL is not set\n",
        );
        return;
    };
    let Some(ca) = std::env::var("VAULT_TEST_PG_CA")
        .ok()
        .filter(|c| !c.is_empty())
    else {
        if std::env::var("VAULT_REQUIRE_PG").is_ok_and(|v| v == "1") {
            panic!("VAULT_REQUIRE_PG=1 but VAULT_TEST_PG_CA is not set (openssl missing?)");
        }
        say(
            "SKIPPED the TLS part: VAULT_TEST_PG_CA is not set (tests/pg/start.sh needs openssl)\n",
        );
        return;
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let tls_url = format!("{url}{sep}sslmode=require");
    let store = PgStore::connect(&tls_url, &opts(Some(ca.into()))).unwrap();
    assert!(
        store.connection_is_tls().unwrap(),
        "sslmode=require gives a TLS connection"
    );
    store.meta_put(&[("tls", b"ok")]).unwrap();
    // The plaintext loopback store, for contrast, is not TLS.
    let plain = PgStore::connect(&url, &opts(None)).unwrap();
    assert!(!plain.connection_is_tls().unwrap());
    // Another CA: the server's certificate does not verify, nothing connects.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other-ca.pem");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(&other, params.self_signed(&key).unwrap().pem()).unwrap();
    let err = PgStore::connect(&tls_url, &opts(Some(other))).unwrap_err();
    assert!(
        matches!(err, vault_core::store::StoreError::Unavailable { .. }),
        "{err:?}"
    );
    let password = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('@').next())
        .and_then(|userinfo| userinfo.split(':').nth(1))
        .unwrap_or("");
    assert!(
        password.is_empty() || !err.to_string().contains(password),
        "{err}"
    );
}
