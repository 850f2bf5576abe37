//! The PostgreSQL store: many daemons, one vault.
//!
//! [`PgStore`] implements `vault-core`'s [`Store`] trait on PostgreSQL with `tokio-postgres` and a
//! `deadpool-postgres` pool. It lives in the daemon crate, not in `vault-core`, because the
//! library carries no network code; the crypto code does not change: rows arrive already
//! encrypted or keyed-hashed, as with SQLite.
//!
//! # Why tokio-postgres and deadpool (not sqlx)
//! - The daemon already runs tokio; tokio-postgres is the protocol client the `postgres` and
//!   `deadpool` ecosystems build on, with statement caching and pipelining, and no compile-time
//!   database (sqlx's checked macros need a live server or an offline cache at build time).
//! - deadpool is a small pool with timeouts on waiting and connecting; both map to
//!   [`StoreError::Unavailable`] so a vanished database fails calls quickly (fail closed).
//!
//! # The sync trait on an async client
//! [`Store`] is synchronous (the vault runs on blocking threads). The store owns a small tokio
//! runtime (two workers) where connections live; each call is spawned there and the calling
//! thread waits for its result on a channel. So it works from any thread, inside another
//! runtime's blocking pool (the daemon) or not (tests, `vaultctl`).
//!
//! # Many daemons
//! What the trait documents for shared stores (`vault_core::store` module docs) is done in the
//! database:
//! - record ids: a counter row advanced by `UPDATE … RETURNING` in its own transaction, in
//!   blocks of [`vault_core::store::ID_BLOCK`] (65,536) cached per store
//!   ([`vault_core::store::IdBlocks`], shared with SQLite), so ids are unique across every
//!   daemon with no other coordination (a row lock held for one statement per block);
//! - inserts take a shared advisory lock per key version they write under and refuse a
//!   non-active one; a state change takes it exclusively, so a rotation and a stale daemon's
//!   insert are serialized (advisory rather than `FOR SHARE`: a row lock writes the key row and
//!   WAL on every insert);
//! - records are counted per key version through an index, not SQLite's counts table, whose
//!   rows every insert from every daemon would update;
//! - the key-table generation is a counter row bumped in every key-table transaction;
//! - rewrap leases use the database's clock (`clock_timestamp()`), so daemons' clocks may
//!   differ.
//!
//! # Durability
//! A call returns after `COMMIT`. The store refuses a server whose `fsync` is off or whose
//! `synchronous_commit` is `off` or `local`-less (it checks at connect): an acknowledged token
//! is committed, as with SQLite's `synchronous=FULL`.

mod schema;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use vault_core::store::{
    IdBlocks, IdempotencyHit, InsertOutcome, KeyNameRow, KeyTable, KeyVersionRow, NewRecord,
    Record, RecordUpdate, RewrapJobRow, Store, StoreError,
};

/// How long a call waits for a pooled connection or a new one before failing as unavailable.
const POOL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one store call may take in all before failing as unavailable.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings beside the URL.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections in the pool (per daemon).
    pub pool_size: usize,
    /// Schema holding the vault's tables (created if missing); `None` uses the URL's
    /// `search_path` (normally `public`). One database can hold several vaults this way.
    pub schema: Option<String>,
    /// CA certificate (PEM) that signs the server's certificate, for `sslmode=require`.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            pool_size: 16,
            schema: None,
            ca_file: None,
        }
    }
}

/// A vault's storage on PostgreSQL.
pub struct PgStore {
    rt: Option<tokio::runtime::Runtime>,
    pool: Pool,
    /// Ids reserved from the shared counter and not yet handed out.
    ids: IdBlocks,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: never printed.
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // The store may be dropped on an async thread (daemon shutdown), where dropping a
        // runtime blocks and panics: let its threads go in the background instead.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Whether a URL names PostgreSQL (`postgres://` or `postgresql://`).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl PgStore {
    /// Connects, checks durability settings and runs pending migrations (creating the schema
    /// on an empty database). Several daemons may do this at once: migrations hold an advisory
    /// lock. A plaintext connection is refused unless every host is loopback or a Unix socket.
    pub fn connect(url: &str, opts: &PgOptions) -> Result<PgStore, StoreError> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|_| StoreError::Unavailable("the database URL does not parse".into()))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(POOL_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("vaultd");
        }
        if let Some(schema) = &opts.schema {
            check_identifier(schema)?;
            let mut options = config.get_options().unwrap_or("").to_owned();
            options.push_str(&format!(" -c search_path={schema}"));
            config.options(options.trim());
        }
        let tls = tls_for(&config, opts)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("vault-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable(format!("starting the database runtime: {e}")))?;
        let manager = match tls {
            Some(tls) => Manager::from_config(
                config,
                tls,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            ),
            None => Manager::from_config(
                config,
                tokio_postgres::NoTls,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            ),
        };
        let pool = {
            let _guard = rt.enter();
            Pool::builder(manager)
                .max_size(opts.pool_size.max(1))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(POOL_TIMEOUT))
                .create_timeout(Some(POOL_TIMEOUT))
                .recycle_timeout(Some(POOL_TIMEOUT))
                .build()
                .map_err(|e| StoreError::Unavailable(format!("database pool: {e}")))?
        };
        let store = PgStore {
            rt: Some(rt),
            pool,
            ids: IdBlocks::new(),
        };
        let schema = opts.schema.clone();
        store.run(move |pool| async move {
            let mut c = get(&pool).await?;
            check_durability(&c).await?;
            if let Some(s) = schema {
                // IF NOT EXISTS races between daemons starting together; the advisory lock in
                // `migrate` does not cover it, so a unique violation here is success.
                match c
                    .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {s}"))
                    .await
                {
                    Ok(()) => {}
                    Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {}
                    Err(e) => return Err(map_pg(&e)),
                }
            }
            schema::migrate(&mut c, schema::current()).await?;
            Ok(())
        })?;
        Ok(store)
    }

    /// Whether this store's connections are encrypted (PostgreSQL's own view, `pg_stat_ssl`).
    pub fn connection_is_tls(&self) -> Result<bool, StoreError> {
        self.run(|pool| async move {
            let c = get(&pool).await?;
            let row = c
                .query_one(
                    "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), \
                     false)",
                    &[],
                )
                .await
                .pg()?;
            Ok(row.get(0))
        })
    }

    /// The id (first column) of the one row a cached query finds, if any.
    fn one_id(
        &self,
        sql: &'static str,
        params: Vec<Box<dyn ToSql + Sync + Send>>,
    ) -> Result<Option<u64>, StoreError> {
        self.run(move |pool| async move {
            let c = get(&pool).await?;
            let stmt = c.prepare_cached(sql).await.pg()?;
            let refs: Vec<&(dyn ToSql + Sync)> = params
                .iter()
                .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                .collect();
            c.query_opt(&stmt, &refs)
                .await
                .pg()?
                .map(|r| u64_of(r.get(0)))
                .transpose()
        })
    }

    /// Runs a `DELETE … RETURNING id` with one parameter and returns the deleted ids.
    fn delete_counted(
        &self,
        sql: &'static str,
        param: Box<dyn ToSql + Sync + Send>,
    ) -> Result<Vec<i64>, StoreError> {
        self.run(move |pool| async move {
            let c = get(&pool).await?;
            let p: &(dyn ToSql + Sync) = param.as_ref();
            let gone = c.query(sql, &[p]).await.pg()?;
            Ok(gone.iter().map(|r| r.get(0)).collect())
        })
    }

    /// Runs `f` on the store's runtime and waits for it.
    fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Pool) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("store closed".into()))?;
        let fut = f(self.pool.clone());
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let result = match tokio::time::timeout(CALL_TIMEOUT, fut).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::Unavailable("database call timed out".into())),
            };
            let _ = tx.send(result);
        });
        rx.recv()
            .map_err(|_| StoreError::Unavailable("database task ended".into()))?
    }
}

/// Refuses anything but a plain SQL identifier (it is spliced into `search_path`).
fn check_identifier(s: &str) -> Result<(), StoreError> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Unavailable(
            "schema name: lowercase letters, digits and _ only".into(),
        ))
    }
}

/// TLS: rustls when `sslmode=require` (with the configured CA), none for loopback and Unix
/// sockets; anything else is refused rather than sent in the clear.
fn tls_for(
    config: &tokio_postgres::Config,
    opts: &PgOptions,
) -> Result<Option<tokio_postgres_rustls::MakeRustlsConnect>, StoreError> {
    use tokio_postgres::config::{Host, SslMode};
    let local = config.get_hosts().iter().all(|h| match h {
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Host::Unix(_) => true,
    });
    match config.get_ssl_mode() {
        SslMode::Require => {
            let ca = opts.ca_file.as_deref().ok_or_else(|| {
                StoreError::Unavailable(
                    "sslmode=require needs database_ca (the server's CA)".into(),
                )
            })?;
            Ok(Some(rustls_connector(ca)?))
        }
        _ if local => Ok(None),
        _ => Err(StoreError::Unavailable(
            "refusing a plaintext connection to a non-loopback database: add sslmode=require \
             and database_ca"
                .into(),
        )),
    }
}

fn rustls_connector(ca: &Path) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bad = |m: String| StoreError::Unavailable(format!("database_ca {}: {m}", ca.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(e.to_string()))? {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

type Client = deadpool_postgres::Client;

async fn get(pool: &Pool) -> Result<Client, StoreError> {
    pool.get()
        .await
        .map_err(|e| StoreError::Unavailable(format!("database connection: {}", pool_error(&e))))
}

/// A pool error without the server's words (which may quote a row).
fn pool_error(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(pg) => map_pg(pg).to_string(),
        deadpool_postgres::PoolError::Timeout(_) => "timed out".into(),
        _ => "unavailable".into(),
    }
}

/// Maps a PostgreSQL error to a store error naming only the SQLSTATE and the constraint: the
/// server's message and detail can quote stored values (`Key (lookup)=(\x…) already exists`).
fn map_pg(e: &tokio_postgres::Error) -> StoreError {
    let Some(db) = e.as_db_error() else {
        // Not the server's words: a closed connection, an I/O error, or a client-side encoding
        // error (which names types, never values).
        if e.is_closed() {
            return StoreError::Unavailable("database connection closed".into());
        }
        return StoreError::Unavailable(format!("database client: {e}"));
    };
    let code = db.code();
    // Our own refusals from `vault_insert_guard` (schema.rs): their words are ours.
    match code.code() {
        "VK001" => {
            return StoreError::KeyNotActive {
                name: db.message().to_owned(),
                version: db.detail().and_then(|d| d.parse().ok()).unwrap_or(0),
            };
        }
        "VK002" => return StoreError::Conflict("record id was not allocated".into()),
        _ => {}
    }
    let what = match db.constraint() {
        Some(c) => format!("SQLSTATE {} ({c})", code.code()),
        None => format!("SQLSTATE {}", code.code()),
    };
    let class = &code.code()[..2];
    if *code == SqlState::UNIQUE_VIOLATION
        || *code == SqlState::CHECK_VIOLATION
        || *code == SqlState::FOREIGN_KEY_VIOLATION
        || *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
    {
        StoreError::Conflict(what)
    } else if class == "XX" {
        StoreError::Corrupt(what)
    } else {
        // 08 connection, 53 insufficient resources (disk full), 57 operator intervention
        // (shutdown), 25 read-only transaction, and the rest: the database cannot serve now.
        StoreError::Unavailable(what)
    }
}

trait PgResult<T> {
    fn pg(self) -> Result<T, StoreError>;
}

impl<T> PgResult<T> for Result<T, tokio_postgres::Error> {
    fn pg(self) -> Result<T, StoreError> {
        self.map_err(|e| map_pg(&e))
    }
}

/// The database's clock in milliseconds since the Unix epoch (rewrap leases).
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::int8";

async fn check_durability(c: &Client) -> Result<(), StoreError> {
    for (name, ok) in [
        ("fsync", &["on"][..]),
        (
            "synchronous_commit",
            &["on", "remote_apply", "remote_write"][..],
        ),
    ] {
        let row = c.query_one(&format!("SHOW {name}"), &[]).await.pg()?;
        let value: String = row.get(0);
        if !ok.contains(&value.as_str()) {
            return Err(StoreError::Pragma {
                pragma: name,
                expected: ok.join(" or "),
                found: value,
            });
        }
    }
    Ok(())
}

fn i64_of(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Conflict("value out of range".into()))
}

fn u64_of(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt("negative value stored".into()))
}

fn u32_of(v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt("value out of range stored".into()))
}

const RECORD_COLUMNS: &str = "id, template, key_version, ciphertext, expires_at, metadata, \
                              fp_version, fingerprint, lookup, created_at, token_check";

fn record_from(r: &tokio_postgres::Row) -> Result<Record, StoreError> {
    let fp_version: Option<i64> = r.get(6);
    let fingerprint: Option<Vec<u8>> = r.get(7);
    let fingerprint = match (fp_version, fingerprint) {
        (Some(v), Some(f)) => Some((u32_of(v)?, f)),
        _ => None,
    };
    Ok(Record {
        id: u64_of(r.get(0))?,
        template: r.get(1),
        key_version: u32_of(r.get(2))?,
        ciphertext: r.get(3),
        expires_at: r.get(4),
        metadata: r.get(5),
        fingerprint,
        lookup: r.get(8),
        created_at: r.get(9),
        // Stored as the signed 64-bit integer of the same bits.
        token_check: r.get::<_, Option<i64>>(10).map(|c| c as u64),
    })
}

const JOB_COLUMNS: &str = "id, template, target_version, target_fp_version, state, cursor, \
                           processed, created_at, updated_at, owner";

fn job_from(r: &tokio_postgres::Row) -> Result<RewrapJobRow, StoreError> {
    Ok(RewrapJobRow {
        id: u64_of(r.get(0))?,
        template: r.get(1),
        target_version: u32_of(r.get(2))?,
        target_fp_version: u32_of(r.get(3))?,
        state: r.get(4),
        cursor: u64_of(r.get(5))?,
        processed: u64_of(r.get(6))?,
        created_at: r.get(7),
        updated_at: r.get(8),
        owner: r.get(9),
    })
}

type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// Takes a key version's lock exclusively for the transaction: inserts under it hold it shared
/// (`vault_insert_guard`), so a state change waits for inserts in flight to commit, and inserts
/// after it see the new state.
async fn lock_key_version(tx: &Tx<'_>, name: &str, version: i64) -> Result<(), StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1::text), ($2::int8)::int4)",
        &[&name, &version],
    )
    .await
    .pg()?;
    Ok(())
}

async fn bump_key_generation(tx: &Tx<'_>) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE counters SET value = value + 1 WHERE name = 'key_generation'",
        &[],
    )
    .await
    .pg()?;
    Ok(())
}

/// `Conflict` if the row exists (its state differs), else `NotFound`.
async fn not_found_or_conflict(
    tx: &Tx<'_>,
    exists_sql: &str,
    params: &[&(dyn ToSql + Sync)],
    what: &str,
) -> StoreError {
    match tx.query_opt(exists_sql, params).await {
        Ok(Some(_)) => StoreError::Conflict(format!("{what}: current state differs")),
        Ok(None) => StoreError::NotFound(what.to_owned()),
        Err(e) => map_pg(&e),
    }
}

async fn count_key_version(
    c: &impl deadpool_postgres::GenericClient,
    template: &str,
    version: i64,
) -> Result<u64, StoreError> {
    let row = c
        .query_one(
            "SELECT count(*) FROM records WHERE template = $1 AND key_version = $2",
            &[&template, &version],
        )
        .await
        .pg()?;
    u64_of(row.get(0))
}

async fn count_fp_version(
    c: &impl deadpool_postgres::GenericClient,
    template: &str,
    version: i64,
) -> Result<u64, StoreError> {
    let row = c
        .query_one(
            "SELECT count(*) FROM records WHERE template = $1 AND fp_version = $2 \
             AND fingerprint IS NOT NULL",
            &[&template, &version],
        )
        .await
        .pg()?;
    u64_of(row.get(0))
}

async fn put_meta(tx: &Tx<'_>, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .await
        .pg()?;
    for (k, v) in entries {
        tx.execute(&stmt, &[k, v]).await.pg()?;
    }
    Ok(())
}

fn owned_meta(entries: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
        .collect()
}

async fn insert_version(tx: &Tx<'_>, v: &KeyVersionRow) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO key_versions (name, version, state, wrapped, nonce_count, created_at, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &v.name,
            &i64::from(v.version),
            &v.state,
            &v.wrapped,
            &i64_of(v.nonce_count)?,
            &v.created_at,
            &v.updated_at,
        ],
    )
    .await
    .pg()?;
    Ok(())
}

impl Store for PgStore {
    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_owned();
        self.run(|pool| async move {
            let c = get(&pool).await?;
            let row = c
                .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])
                .await
                .pg()?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn meta_put(&self, entries: &[(&str, &[u8])]) -> Result<(), StoreError> {
        let entries = owned_meta(entries);
        self.run(|pool| async move {
            let mut c = get(&pool).await?;
            let tx = c.transaction().await.pg()?;
            put_meta(&tx, &entries).await?;
            tx.commit().await.pg()
        })
    }

    fn meta_insert_new(&self, entries: &[(&str, &[u8])]) -> Result<(), StoreError> {
        let entries = owned_meta(entries);
        self.run(|pool| async move {
            let mut c = get(&pool).await?;
            let tx = c.transaction().await.pg()?;
            for (k, v) in &entries {
                let n = tx
                    .execute(
                        "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                        &[k, v],
                    )
                    .await
                    .pg()?;
                if n == 0 {
                    return Err(StoreError::Conflict(format!("metadata {k} exists")));
                }
            }
            tx.commit().await.pg()
        })
    }

    fn keys_load(&self) -> Result<KeyTable, StoreError> {
        self.run(|pool| async move {
            let mut c = get(&pool).await?;
            // One snapshot for both tables.
            let tx = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .pg()?;
            let names = tx
                .query(
                    "SELECT name, purpose, min_decrypt_version, created_at FROM key_names \
                     ORDER BY name",
                    &[],
                )
                .await
                .pg()?
                .iter()
                .map(|r| {
                    Ok(KeyNameRow {
                        name: r.get(0),
                        purpose: r.get(1),
                        min_decrypt_version: u32_of(r.get(2))?,
                        created_at: r.get(3),
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            let versions = tx
                .query(
                    "SELECT name, version, state, wrapped, nonce_count, created_at, updated_at \
                     FROM key_versions ORDER BY name, version",
                    &[],
                )
                .await
                .pg()?
                .iter()
                .map(|r| {
                    Ok(KeyVersionRow {
                        name: r.get(0),
                        version: u32_of(r.get(1))?,
                        state: r.get(2),
                        wrapped: r.get(3),
                        nonce_count: u64_of(r.get(4))?,
                        created_at: r.get(5),
                        updated_at: r.get(6),
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            tx.commit().await.pg()?;
            Ok(KeyTable { names, versions })
        })
    }

    fn keys_generation(&self) -> Result<u64, StoreError> {
        self.run(|pool| async move {
            let c = get(&pool).await?;
            let stmt = c
                .prepare_cached("SELECT value FROM counters WHERE name = 'key_generation'")
                .await
                .pg()?;
            let row = c.query_one(&stmt, &[]).await.pg()?;
            u64_of(row.get(0))
        })
    }

    fn key_create(&self, name: &KeyNameRow, first: &KeyVersionRow) -> Result<(), StoreError> {
        if first.name != name.name {
            return Err(StoreError::Conflict(
                "first version belongs to another key name".into(),
            ));
        }
        let (name, first) = (name.clone(), first.clone());
        self.run(|pool| async move {
            let mut c = get(&pool).await?;
            let tx = c.transaction().await.pg()?;
            let inserted = tx
                .execute(
                    "INSERT INTO key_names (name, purpose, min_decrypt_version, created_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    &[
                        &name.name,
                        &name.purpose,
                        &i64::from(name.min_decrypt_version),
                        &name.created_at,
                    ],
                )
                .await
                .pg()?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!("key {} exists", name.name)));
            }
            bump_key_generation(&tx).await?;
            insert_version(&tx, &first).await?;
            tx.commit().await.pg()
        })
    }

    fn key_rotate(&self, new: &KeyVersionRow) -> Result<(), StoreError> {
        if new.state != "active" || new.version < 2 {
            return Err(StoreError::Conflict(
                "a rotation inserts an active version above 1".into(),
            ));
        }
        let new = new.clone();
        self.run(|pool| async move {
            let mut c = get(&pool).await?;
            let tx = c.transaction().await.pg()?;
            let prev = i64::from(new.version - 1);
            lock_key_version(&tx, &new.name, prev).await?;
            let moved = tx
                .execute(
                    "UPDATE key_versions SET state = 'decrypt_only', updated_at = $3 \
                     WHERE name = $1 AND version = $2 AND state = 'active'",
                    &[&new.name, &prev, &new.created_at],
                )
                .await
                .pg()?;
            if moved == 0 {
                return Err(not_found_or_conflict(
                    &tx,
                    "SELECT 1 FROM key_versions WHERE name = $1 AND version = $2",
                    &[&new.name, &prev],
                    "previous key version",
                )
                .await);
            }
            bump_key_generation(&tx).await?;
            insert_version(&tx, &new).await?;
            tx.commit().await.pg()
        })
    }

    fn key_set_state(
        &self,
        name: &str,
        version: u32,
        from: &str,
        to: &str,
        erase_material: bool,
    ) -> Result<(), StoreError> {
        let (name, from, to) = (name.to_owned(), from.to_owned(), to.to_owned());
        let version = i64::from(version);
        self.run(move |pool| async move {
            let mut c = get(&pool).await?;
            let tx = c.transaction().await.pg()?;
            // The lock comes first: an insert under this version either committed before (and
            // is counted below) or waits and then sees the new state.
            lock_key_version(&tx, &name, version).await?;
            let changed = tx
                .execute(
                    "UPDATE key_versions SET state = $4, \
                     updated_at = extract(epoch from now())::int8, \
                     wrapped = CASE WHEN $5 THEN NULL ELSE wrapped END \
                     WHERE name = $1 AND version = $2 AND state = $3",
                    &[&name, &version, &from, &to, &erase_material],
                )
                .await
                .pg()?;
            if changed == 0 {
                return Err(not_found_or_conflict(
                    &tx,
                    "SELECT 1 FROM key_versions WHERE name = $1 AND version = $2",
                    &[&name, &version],
                    "key version",
                )
                .await);
            }
            if to == "retired" {
                let purpose: Option<String> = tx
                    .query_opt("SELECT purpose FROM key_names WHERE name = $1", &[&name])
                    .await
                    .pg()?
                    .map(|r| r.get(0));
                let left = match (purpose.as_deref(), name.split_once('/')) {
                    (Some("data"), Some(("data", t))) => count_key_version(&tx, t, version).await?,
                    (Some("fingerprint"), Some(("fp", t))) => {
                        count_fp_version(&tx, t, version).await?
                    }
                    _ => 0,
                };
                if left > 0 {
                    return Err(StoreError::Conflict(format!(
                        "{left} records are still stored under this version"
                    )));
                }
            }
            bump_key_generation(&tx).await?;
            tx.commit().await.pg()
        })
    }

    fn key_raise_min_version(&self, name: &str, min: u32) -> Result<(), StoreError> {
        let name = name.to_owned();
        let min = i64::from(min);
        self.run(move |pool| async move {
            let mut c = get(&pool).await?;
            let tx = c.transaction().await.pg()?;
            let changed = tx
                .execute(
                    "UPDATE key_names SET min_decrypt_version = $2 \
                     WHERE name = $1 AND min_decrypt_version < $2",
                    &[&name, &min],
                )
                .await
                .pg()?;
            if changed == 0 {
                return Err(not_found_or_conflict(
                    &tx,
                    "SELECT 1 FROM key_names WHERE name = $1",
                    &[&name],
                    "key name (minimum version only rises)",
                )
                .await);
            }
            bump_key_generation(&tx).await?;
            tx.commit().await.pg()
        })
    }

    fn keys_rewrap_all(
        &self,
        wraps: &[(String, u32, Vec<u8>)],
        meta: &[(&str, &[u8])],
    ) -> Result<(), StoreError> {
        let wraps = wraps.to_vec();
        let meta = owned_meta(meta);
        self.run(|pool| async move {
            let mut c = get(&pool).await?;
            let tx = c.transaction().await.pg()?;
            // Lock the whole key table: no rotation may slip in between.
            tx.batch_execute("LOCK TABLE key_versions IN SHARE ROW EXCLUSIVE MODE")
                .await
                .pg()?;
            for (name, version, wrapped) in &wraps {
                let n = tx
                    .execute(
                        "UPDATE key_versions SET wrapped = $3 \
                         WHERE name = $1 AND version = $2 AND wrapped IS NOT NULL",
                        &[name, &i64::from(*version), wrapped],
                    )
                    .await
                    .pg()?;
                if n == 0 {
                    return Err(StoreError::NotFound(format!(
                        "key {name} version {version} with material"
                    )));
                }
            }
            let held: i64 = tx
                .query_one(
                    "SELECT count(*) FROM key_versions WHERE wrapped IS NOT NULL",
                    &[],
                )
                .await
                .pg()?
                .get(0);
            if held != wraps.len() as i64 {
                return Err(StoreError::Conflict(format!(
                    "{held} wrapped keys stored, {} rewrapped",
                    wraps.len()
                )));
            }
            bump_key_generation(&tx).await?;
            put_meta(&tx, &meta).await?;
            tx.commit().await.pg()
        })
    }

    fn key_reserve_nonces(&self, name: &str, version: u32, n: u64) -> Result<u64, StoreError> {
        let name = name.to_owned();
        let version = i64::from(version);
        let n = i64_of(n)?;
        self.run(move |pool| async move {
            let mut c = get(&pool).await?;
            let tx = c.transaction().await.pg()?;
            let row = tx
                .query_opt(
                    "UPDATE key_versions SET nonce_count = nonce_count + $3::int8 \
                     WHERE name = $1 AND version = $2 AND nonce_count <= $4::int8 - $3::int8 \
                     RETURNING nonce_count",
                    &[&name, &version, &n, &i64::MAX],
                )
                .await
                .pg()?;
            match row {
                Some(r) => {
                    let total = u64_of(r.get(0))?;
                    tx.commit().await.pg()?;
                    Ok(total)
                }
                None => Err(not_found_or_conflict(
                    &tx,
                    "SELECT 1 FROM key_versions WHERE name = $1 AND version = $2",
                    &[&name, &version],
                    "key version (nonce count would overflow)",
                )
                .await),
            }
        })
    }

    fn allocate_ids(&self, n: u64) -> Result<Range<u64>, StoreError> {
        self.ids.take(n, |want| {
            let want_i = i64_of(want)?;
            let end = self.run(move |pool| async move {
                let c = get(&pool).await?;
                let stmt = c
                    .prepare_cached(
                        "UPDATE counters SET value = value + $1::int8 \
                         WHERE name = 'record_id' AND value <= $2::int8 - $1::int8 \
                         RETURNING value",
                    )
                    .await
                    .pg()?;
                let row = c.query_opt(&stmt, &[&want_i, &i64::MAX]).await.pg()?;
                let row = row.ok_or_else(|| StoreError::Conflict("record ids exhausted".into()))?;
                u64_of(row.get(0))
            })?;
            Ok(end - want..end)
        })
    }

    fn insert_records(&self, rows: &[NewRecord]) -> Result<Vec<InsertOutcome>, StoreError> {
        let rows = rows.to_vec();
        self.run(|pool| async move {
            let mut c = get(&pool).await?;
            if rows
                .iter()
                .all(|r| r.idempotency.is_none() && r.fingerprint.is_none() && r.lookup.is_none())
            {
                return insert_plain(&c, &rows).await;
            }
            let tx = c.transaction().await.pg()?;
            let out = insert_records(&tx, &rows).await?;
            tx.commit().await.pg()?;
            Ok(out)
        })
    }

    fn get_records(&self, ids: &[u64]) -> Result<Vec<Option<Record>>, StoreError> {
        let ids: Vec<i64> = ids.iter().map(|&i| i64_of(i)).collect::<Result<_, _>>()?;
        self.run(|pool| async move {
            let c = get(&pool).await?;
            let stmt = c
                .prepare_cached(&format!(
                    "SELECT {RECORD_COLUMNS} FROM records WHERE id = ANY($1)"
                ))
                .await
                .pg()?;
            let mut found: HashMap<u64, Record> = HashMap::new();
            for r in c.query(&stmt, &[&ids]).await.pg()? {
                let rec = record_from(&r)?;
                found.insert(rec.id, rec);
            }
            Ok(ids
                .iter()
                .map(|&id| {
                    u64::try_from(id)
                        .ok()
                        .and_then(|id| found.get(&id).cloned())
                })
                .collect())
        })
    }

    fn find_by_fingerprint(
        &self,
        template: &str,
        fp_version: u32,
        fingerprint: &[u8],
    ) -> Result<Option<u64>, StoreError> {
        self.one_id(
            "SELECT id FROM records WHERE template = $1 AND fp_version = $2 \
             AND fingerprint = $3",
            vec![
                Box::new(template.to_owned()),
                Box::new(i64::from(fp_version)),
                Box::new(fingerprint.to_vec()),
            ],
        )
    }

    fn find_by_lookup(&self, template: &str, lookup: &[u8]) -> Result<Option<u64>, StoreError> {
        self.one_id(
            "SELECT id FROM records WHERE template = $1 AND lookup = $2",
            vec![Box::new(template.to_owned()), Box::new(lookup.to_vec())],
        )
    }

    fn find_by_idempotency(&self, key: &[u8]) -> Result<Option<IdempotencyHit>, StoreError> {
        let key = key.to_vec();
        self.run(move |pool| async move {
            let c = get(&pool).await?;
            let stmt = c
                .prepare_cached("SELECT record_id, request FROM idempotency WHERE key = $1")
                .await
                .pg()?;
            c.query_opt(&stmt, &[&key])
                .await
                .pg()?
                .map(|r| idempotency_hit(r.get(0), r.get(1)))
                .transpose()
        })
    }

    fn delete_records(&self, ids: &[u64]) -> Result<Vec<bool>, StoreError> {
        let ids: Vec<i64> = ids.iter().map(|&i| i64_of(i)).collect::<Result<_, _>>()?;
        let gone = self.delete_counted(
            "DELETE FROM records WHERE id = ANY($1) RETURNING id",
            Box::new(ids.clone()),
        )?;
        let deleted: HashSet<i64> = gone.into_iter().collect();
        // An id given twice reports `true` once, like deleting one after the other.
        let mut seen = HashSet::new();
        Ok(ids
            .iter()
            .map(|id| deleted.contains(id) && seen.insert(*id))
            .collect())
    }

    fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        let gone = self.delete_counted(
            "DELETE FROM records WHERE expires_at <= $1 RETURNING id",
            Box::new(now),
        )?;
        Ok(gone.len() as u64)
    }

    fn count_by_key_version(&self, template: &str, key_version: u32) -> Result<u64, StoreError> {
        let t = template.to_owned();
        self.run(move |pool| async move {
            let c = get(&pool).await?;
            count_key_version(&c, &t, i64::from(key_version)).await
        })
    }

    fn count_by_fp_version(&self, template: &str, fp_version: u32) -> Result<u64, StoreError> {
        let t = template.to_owned();
        self.run(move |pool| async move {
            let c = get(&pool).await?;
            count_fp_version(&c, &t, i64::from(fp_version)).await
        })
    }

    fn records_to_rewrap(
        &self,
        template: &str,
        target_version: u32,
        target_fp_version: u32,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let t = template.to_owned();
        let after = i64_of(after_id)?;
        let limit = i64_of(limit as u64)?;
        self.run(move |pool| async move {
            let c = get(&pool).await?;
            let stmt = c
                .prepare_cached(&format!(
                    "SELECT {RECORD_COLUMNS} FROM records \
                     WHERE id > $1 AND template = $2 \
                       AND (key_version < $3 OR (fingerprint IS NOT NULL AND fp_version < $4)) \
                     ORDER BY id LIMIT $5"
                ))
                .await
                .pg()?;
            c.query(
                &stmt,
                &[
                    &after,
                    &t,
                    &i64::from(target_version),
                    &i64::from(target_fp_version),
                    &limit,
                ],
            )
            .await
            .pg()?
            .iter()
            .map(record_from)
            .collect()
        })
    }

    fn rewrap_commit(
        &self,
        updates: &[RecordUpdate],
        job: &RewrapJobRow,
    ) -> Result<u64, StoreError> {
        let job = job.clone();
        let mut ids = Vec::with_capacity(updates.len());
        let mut old = Vec::with_capacity(updates.len());
        let mut new = Vec::with_capacity(updates.len());
        let mut cts = Vec::with_capacity(updates.len());
        let mut fvs: Vec<Option<i64>> = Vec::with_capacity(updates.len());
        let mut fps: Vec<Option<Vec<u8>>> = Vec::with_capacity(updates.len());
        for u in updates {
            ids.push(i64_of(u.id)?);
            old.push(i64::from(u.old_key_version));
            new.push(i64::from(u.new_key_version));
            cts.push(u.ciphertext.clone());
            fvs.push(u.fingerprint.as_ref().map(|(v, _)| i64::from(*v)));
            fps.push(u.fingerprint.as_ref().map(|(_, f)| f.clone()));
        }
        let cursor = i64_of(job.cursor)?;
        self.run(move |pool| async move {
            let mut c = get(&pool).await?;
            let tx = c.transaction().await.pg()?;
            // One statement for the batch; each row is a compare-and-set on its old version
            // (and skipped when already at the new versions), as in the trait's contract.
            let changed = tx
                .query(
                    "UPDATE records r SET key_version = u.nv, ciphertext = u.ct, \
                       fp_version = CASE WHEN u.fv IS NULL THEN r.fp_version ELSE u.fv END, \
                       fingerprint = CASE WHEN u.fv IS NULL THEN r.fingerprint ELSE u.fp END \
                     FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::bytea[], $5::int8[], \
                                 $6::bytea[]) AS u(id, ov, nv, ct, fv, fp) \
                     WHERE r.id = u.id AND r.key_version = u.ov \
                       AND CASE WHEN u.fv IS NULL THEN r.key_version <> u.nv \
                           ELSE NOT (r.key_version = u.nv AND r.fp_version IS NOT DISTINCT FROM u.fv) \
                           END \
                     RETURNING r.id",
                    &[&ids, &old, &new, &cts, &fvs, &fps],
                )
                .await
                .pg()?;
            let updated = changed.len() as i64;
            let id = i64_of(job.id)?;
            let saved = tx
                .execute(
                    &format!(
                        "UPDATE rewrap_jobs SET state = $2, cursor = $3, \
                         processed = processed + $4, updated_at = $5, \
                         lease_until_ms = CASE WHEN owner = '' THEN 0 ELSE {NOW_MS} + lease_ms END \
                         WHERE id = $1 AND cursor <= $3 AND owner IN ('', $6)"
                    ),
                    &[&id, &job.state, &cursor, &updated, &job.updated_at, &job.owner],
                )
                .await
                .pg()?;
            if saved == 0 {
                return Err(not_found_or_conflict(
                    &tx,
                    "SELECT 1 FROM rewrap_jobs WHERE id = $1",
                    &[&id],
                    "rewrap job (cursor only moves forward; lease held by another owner)",
                )
                .await);
            }
            tx.commit().await.pg()?;
            u64_of(updated)
        })
    }

    fn rewrap_job_get(&self, id: u64) -> Result<Option<RewrapJobRow>, StoreError> {
        let id = i64_of(id)?;
        self.run(move |pool| async move {
            let c = get(&pool).await?;
            c.query_opt(
                &format!("SELECT {JOB_COLUMNS} FROM rewrap_jobs WHERE id = $1"),
                &[&id],
            )
            .await
            .pg()?
            .as_ref()
            .map(job_from)
            .transpose()
        })
    }

    fn rewrap_jobs(&self) -> Result<Vec<RewrapJobRow>, StoreError> {
        self.run(|pool| async move {
            let c = get(&pool).await?;
            c.query(
                &format!("SELECT {JOB_COLUMNS} FROM rewrap_jobs ORDER BY id DESC"),
                &[],
            )
            .await
            .pg()?
            .iter()
            .map(job_from)
            .collect()
        })
    }

    fn rewrap_job_create(&self, job: &RewrapJobRow) -> Result<u64, StoreError> {
        let job = job.clone();
        self.run(|pool| async move {
            let c = get(&pool).await?;
            let row = c
                .query_one(
                    "INSERT INTO rewrap_jobs (template, target_version, target_fp_version, \
                     state, cursor, processed, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                    &[
                        &job.template,
                        &i64::from(job.target_version),
                        &i64::from(job.target_fp_version),
                        &job.state,
                        &i64_of(job.cursor)?,
                        &i64_of(job.processed)?,
                        &job.created_at,
                        &job.updated_at,
                    ],
                )
                .await
                .pg()?;
            u64_of(row.get(0))
        })
    }

    fn rewrap_job_update(&self, job: &RewrapJobRow, from_state: &str) -> Result<(), StoreError> {
        let (job, from) = (job.clone(), from_state.to_owned());
        self.run(|pool| async move {
            let mut c = get(&pool).await?;
            let tx = c.transaction().await.pg()?;
            let id = i64_of(job.id)?;
            let changed = tx
                .execute(
                    "UPDATE rewrap_jobs SET state = $3, cursor = $4, processed = $5, \
                     updated_at = $6, \
                     owner = CASE WHEN $3 = 'running' THEN owner ELSE '' END, \
                     lease_until_ms = CASE WHEN $3 = 'running' THEN lease_until_ms ELSE 0 END \
                     WHERE id = $1 AND state = $2 AND owner IN ('', $7)",
                    &[
                        &id,
                        &from,
                        &job.state,
                        &i64_of(job.cursor)?,
                        &i64_of(job.processed)?,
                        &job.updated_at,
                        &job.owner,
                    ],
                )
                .await
                .pg()?;
            if changed == 0 {
                return Err(not_found_or_conflict(
                    &tx,
                    "SELECT 1 FROM rewrap_jobs WHERE id = $1",
                    &[&id],
                    "rewrap job (state changed, or lease held by another owner)",
                )
                .await);
            }
            tx.commit().await.pg()
        })
    }

    fn rewrap_job_claim(&self, id: u64, owner: &str, lease_ms: u64) -> Result<bool, StoreError> {
        let id = i64_of(id)?;
        let owner = owner.to_owned();
        let lease = i64::try_from(lease_ms).unwrap_or(i64::MAX / 2);
        self.run(move |pool| async move {
            let c = get(&pool).await?;
            let granted = c
                .execute(
                    &format!(
                        "UPDATE rewrap_jobs SET owner = $2, lease_ms = $3, \
                         lease_until_ms = {NOW_MS} + $3 \
                         WHERE id = $1 AND state <> 'completed' \
                           AND (owner IN ('', $2) OR lease_until_ms < {NOW_MS})"
                    ),
                    &[&id, &owner, &lease],
                )
                .await
                .pg()?;
            if granted == 0
                && c.query_opt("SELECT 1 FROM rewrap_jobs WHERE id = $1", &[&id])
                    .await
                    .pg()?
                    .is_none()
            {
                return Err(StoreError::NotFound("rewrap job".into()));
            }
            Ok(granted == 1)
        })
    }
}

/// The distinct key versions rows are written under, and their id range, for
/// `vault_insert_guard`.
fn guard_args(rows: &[NewRecord]) -> Result<(Vec<String>, Vec<i64>, i64, i64), StoreError> {
    let mut keys: Vec<(String, i64)> = Vec::new();
    for row in rows {
        let k = (format!("data/{}", row.template), i64::from(row.key_version));
        if !keys.contains(&k) {
            keys.push(k);
        }
        if let Some((v, _)) = &row.fingerprint {
            let k = (format!("fp/{}", row.template), i64::from(*v));
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    let (names, versions) = keys.into_iter().unzip();
    let min = rows.iter().map(|r| r.id).min().unwrap_or(0);
    let max = rows.iter().map(|r| r.id).max().unwrap_or(0);
    Ok((names, versions, i64_of(min)?, i64_of(max)?))
}

/// The common insert (opaque, non-deterministic tokens: no idempotency key, fingerprint or
/// lookup hash, so nothing can collide but the id): checks, rows and counts in one statement,
/// its own transaction, one round trip. A refused check or an existing id aborts it whole.
async fn insert_plain(c: &Client, rows: &[NewRecord]) -> Result<Vec<InsertOutcome>, StoreError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let (names, versions, min_id, max_id) = guard_args(rows)?;
    let ids: Vec<i64> = rows
        .iter()
        .map(|r| i64_of(r.id))
        .collect::<Result<_, _>>()?;
    let templates: Vec<&str> = rows.iter().map(|r| r.template.as_str()).collect();
    let kv: Vec<i64> = rows.iter().map(|r| i64::from(r.key_version)).collect();
    let cts: Vec<&[u8]> = rows.iter().map(|r| r.ciphertext.as_slice()).collect();
    let exp: Vec<Option<i64>> = rows.iter().map(|r| r.expires_at).collect();
    let meta: Vec<Option<&str>> = rows.iter().map(|r| r.metadata.as_deref()).collect();
    let created: Vec<i64> = rows.iter().map(|r| r.created_at).collect();
    let checks: Vec<Option<i64>> = rows
        .iter()
        .map(|r| r.token_check.map(|c| c as i64))
        .collect();
    let stmt = c
        .prepare_cached(
            "WITH g AS (SELECT vault_insert_guard($8::text[], $9::int8[], $10::int8, $11::int8)\
             AS ok), \
             ins AS (INSERT INTO records (id, template, key_version, ciphertext, expires_at, \
                 metadata, created_at, token_check) \
               SELECT u.id, u.t, u.kv, u.ct, u.exp, u.meta, u.created, u.chk \
               FROM g, unnest($1::int8[], $2::text[], $3::int8[], $4::bytea[], $5::int8[], \
                              $6::text[], $7::int8[], $12::int8[]) \
                    AS u(id, t, kv, ct, exp, meta, created, chk) \
               RETURNING id) \
             SELECT count(*) FROM ins",
        )
        .await
        .pg()?;
    let n: i64 = c
        .query_one(
            &stmt,
            &[
                &ids, &templates, &kv, &cts, &exp, &meta, &created, &names, &versions, &min_id,
                &max_id, &checks,
            ],
        )
        .await
        .pg()?
        .get(0);
    if n != rows.len() as i64 {
        return Err(StoreError::Corrupt(format!(
            "{n} of {} records inserted",
            rows.len()
        )));
    }
    Ok(vec![InsertOutcome::Inserted; rows.len()])
}

/// The body of [`Store::insert_records`] in one transaction.
///
/// Outcomes follow the trait: per row in order, idempotency key first, then fingerprint, then
/// lookup, counting earlier rows of the same call. Rows are resolved against the database in
/// batches (one query per kind of key), then inserted with one `INSERT … SELECT unnest(…) ON
/// CONFLICT DO NOTHING`; a row another daemon inserted meanwhile (the conflict waits for its
/// commit) is resolved after the insert, so concurrent daemons never both store one
/// fingerprint, lookup or idempotency key.
async fn insert_records(tx: &Tx<'_>, rows: &[NewRecord]) -> Result<Vec<InsertOutcome>, StoreError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    // Key versions written under must be active (a shared lock orders this against a rotation),
    // and ids must have been handed out by the counter: vault_insert_guard (schema.rs).
    let (names, versions, min_id, max_id) = guard_args(rows)?;
    tx.query_one(
        "SELECT vault_insert_guard($1::text[], $2::int8[], $3::int8, $4::int8)",
        &[&names, &versions, &min_id, &max_id],
    )
    .await
    .pg()?;

    // What the database already holds, one query per kind of key present in the batch.
    let idem_keys: Vec<&[u8]> = rows
        .iter()
        .filter_map(|r| r.idempotency.as_ref().map(|k| k.key.as_slice()))
        .collect();
    let mut db_idem: HashMap<Vec<u8>, IdempotencyHit> = HashMap::new();
    if !idem_keys.is_empty() {
        for r in tx
            .query(
                "SELECT key, record_id, request FROM idempotency WHERE key = ANY($1)",
                &[&idem_keys],
            )
            .await
            .pg()?
        {
            db_idem.insert(r.get(0), idempotency_hit(r.get(1), r.get(2))?);
        }
    }
    let mut db_fp: HashMap<(String, i64, Vec<u8>), u64> = HashMap::new();
    let fp_rows: Vec<&NewRecord> = rows.iter().filter(|r| r.fingerprint.is_some()).collect();
    if !fp_rows.is_empty() {
        let t: Vec<&str> = fp_rows.iter().map(|r| r.template.as_str()).collect();
        let v: Vec<i64> = fp_rows
            .iter()
            .filter_map(|r| r.fingerprint.as_ref().map(|(v, _)| i64::from(*v)))
            .collect();
        let f: Vec<&[u8]> = fp_rows
            .iter()
            .filter_map(|r| r.fingerprint.as_ref().map(|(_, f)| f.as_slice()))
            .collect();
        for r in tx
            .query(
                "SELECT r.template, r.fp_version, r.fingerprint, r.id FROM records r \
                 JOIN unnest($1::text[], $2::int8[], $3::bytea[]) AS q(t, v, f) \
                   ON r.template = q.t AND r.fp_version = q.v AND r.fingerprint = q.f",
                &[&t, &v, &f],
            )
            .await
            .pg()?
        {
            db_fp.insert((r.get(0), r.get(1), r.get(2)), u64_of(r.get(3))?);
        }
    }
    let mut db_lookup: HashSet<(String, Vec<u8>)> = HashSet::new();
    let lk_rows: Vec<&NewRecord> = rows.iter().filter(|r| r.lookup.is_some()).collect();
    if !lk_rows.is_empty() {
        let t: Vec<&str> = lk_rows.iter().map(|r| r.template.as_str()).collect();
        let l: Vec<&[u8]> = lk_rows.iter().filter_map(|r| r.lookup.as_deref()).collect();
        for r in tx
            .query(
                "SELECT r.template, r.lookup FROM records r \
                 JOIN unnest($1::text[], $2::bytea[]) AS q(t, l) \
                   ON r.template = q.t AND r.lookup = q.l",
                &[&t, &l],
            )
            .await
            .pg()?
        {
            db_lookup.insert((r.get(0), r.get(1)));
        }
    }

    // Outcomes in order, earlier rows of the call counting.
    let mut out: Vec<Option<InsertOutcome>> = vec![None; rows.len()];
    for (i, row) in rows.iter().enumerate() {
        if let Some(k) = &row.idempotency
            && let Some(&hit) = db_idem.get(&k.key)
        {
            out[i] = Some(InsertOutcome::ExistingIdempotency(hit));
            continue;
        }
        let fp_key = row
            .fingerprint
            .as_ref()
            .map(|(v, f)| (row.template.clone(), i64::from(*v), f.clone()));
        if let Some(k) = &fp_key
            && let Some(&id) = db_fp.get(k)
        {
            // Its idempotency key is bound to the record found (below, with the others).
            if let Some(idem) = &row.idempotency {
                db_idem.insert(
                    idem.key.clone(),
                    IdempotencyHit {
                        record_id: id,
                        request: idem.request,
                    },
                );
            }
            out[i] = Some(InsertOutcome::ExistingFingerprint(id));
            continue;
        }
        let lk_key = row
            .lookup
            .as_ref()
            .map(|l| (row.template.clone(), l.clone()));
        if let Some(k) = &lk_key
            && db_lookup.contains(k)
        {
            out[i] = Some(InsertOutcome::LookupCollision);
            continue;
        }
        // This row will be inserted: later rows with the same keys see it.
        if let Some(k) = &row.idempotency {
            db_idem.insert(
                k.key.clone(),
                IdempotencyHit {
                    record_id: row.id,
                    request: k.request,
                },
            );
        }
        if let Some(k) = fp_key {
            db_fp.insert(k, row.id);
        }
        if let Some(k) = lk_key {
            db_lookup.insert(k);
        }
    }

    let todo: Vec<&NewRecord> = rows
        .iter()
        .zip(&out)
        .filter(|(_, o)| o.is_none())
        .map(|(r, _)| r)
        .collect();
    let mut inserted: HashSet<i64> = HashSet::new();
    if !todo.is_empty() {
        let ids: Vec<i64> = todo
            .iter()
            .map(|r| i64_of(r.id))
            .collect::<Result<_, _>>()?;
        let templates: Vec<&str> = todo.iter().map(|r| r.template.as_str()).collect();
        let kv: Vec<i64> = todo.iter().map(|r| i64::from(r.key_version)).collect();
        let cts: Vec<&[u8]> = todo.iter().map(|r| r.ciphertext.as_slice()).collect();
        let exp: Vec<Option<i64>> = todo.iter().map(|r| r.expires_at).collect();
        let meta: Vec<Option<&str>> = todo.iter().map(|r| r.metadata.as_deref()).collect();
        let fv: Vec<Option<i64>> = todo
            .iter()
            .map(|r| r.fingerprint.as_ref().map(|(v, _)| i64::from(*v)))
            .collect();
        let fp: Vec<Option<&[u8]>> = todo
            .iter()
            .map(|r| r.fingerprint.as_ref().map(|(_, f)| f.as_slice()))
            .collect();
        let lk: Vec<Option<&[u8]>> = todo.iter().map(|r| r.lookup.as_deref()).collect();
        let created: Vec<i64> = todo.iter().map(|r| r.created_at).collect();
        let checks: Vec<Option<i64>> = todo
            .iter()
            .map(|r| r.token_check.map(|c| c as i64))
            .collect();
        let stmt = tx
            .prepare_cached(
                "INSERT INTO records (id, template, key_version, ciphertext, expires_at, \
                 metadata, fp_version, fingerprint, lookup, created_at, token_check) \
                 SELECT * FROM unnest($1::int8[], $2::text[], $3::int8[], $4::bytea[], \
                   $5::int8[], $6::text[], $7::int8[], $8::bytea[], $9::bytea[], $10::int8[], \
                   $11::int8[]) \
                 ON CONFLICT DO NOTHING RETURNING id",
            )
            .await
            .pg()?;
        for r in tx
            .query(
                &stmt,
                &[
                    &ids, &templates, &kv, &cts, &exp, &meta, &fv, &fp, &lk, &created, &checks,
                ],
            )
            .await
            .pg()?
        {
            inserted.insert(r.get(0));
        }
        // Rows another transaction won meanwhile: resolve them as the trait says.
        for (i, row) in rows.iter().enumerate() {
            if out[i].is_some() || inserted.contains(&i64_of(row.id)?) {
                continue;
            }
            out[i] = Some(resolve_lost(tx, row).await?);
        }
    }
    // Idempotency keys of the inserted rows, and of rows stopped by a fingerprint (bound to the
    // record found). A key another transaction took meanwhile wins: an inserted row is undone,
    // and either kind of row answers with that key's record.
    let idem: Vec<(usize, &[u8], i64, &[u8])> = rows
        .iter()
        .zip(&out)
        .enumerate()
        .filter_map(|(i, (r, o))| {
            let owner = match o {
                None => r.id,
                Some(InsertOutcome::ExistingFingerprint(id)) => *id,
                Some(_) => return None,
            };
            r.idempotency
                .as_ref()
                .map(|k| (i, k.key.as_slice(), owner as i64, k.request.as_slice()))
        })
        .collect();
    if !idem.is_empty() {
        let keys: Vec<&[u8]> = idem.iter().map(|i| i.1).collect();
        let owners: Vec<i64> = idem.iter().map(|i| i.2).collect();
        let requests: Vec<&[u8]> = idem.iter().map(|i| i.3).collect();
        let taken: HashSet<Vec<u8>> = tx
            .query(
                "INSERT INTO idempotency (key, record_id, request) \
                 SELECT * FROM unnest($1::bytea[], $2::int8[], $3::bytea[]) \
                 ON CONFLICT DO NOTHING RETURNING key",
                &[&keys, &owners, &requests],
            )
            .await
            .pg()?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for &(i, key, _, _) in &idem {
            if taken.contains(key) {
                continue;
            }
            if out[i].is_none() {
                let id = i64_of(rows[i].id)?;
                tx.execute("DELETE FROM records WHERE id = $1", &[&id])
                    .await
                    .pg()?;
            }
            let winner = tx
                .query_one(
                    "SELECT record_id, request FROM idempotency WHERE key = $1",
                    &[&key],
                )
                .await
                .pg()?;
            out[i] = Some(InsertOutcome::ExistingIdempotency(idempotency_hit(
                winner.get(0),
                winner.get(1),
            )?));
        }
    }
    Ok(out
        .into_iter()
        .map(|o| o.unwrap_or(InsertOutcome::Inserted))
        .collect())
}

/// An idempotency row as the trait returns it; a missing request hash (a row from before
/// schema v2) becomes all zeros, which no request hashes to: such a key fails closed.
fn idempotency_hit(record_id: i64, request: Option<Vec<u8>>) -> Result<IdempotencyHit, StoreError> {
    Ok(IdempotencyHit {
        record_id: u64_of(record_id)?,
        request: request
            .and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
            .unwrap_or([0; 32]),
    })
}

/// Why a row's insert did nothing: another transaction committed the same fingerprint or
/// lookup first, or (a bug, never expected) the id exists.
async fn resolve_lost(tx: &Tx<'_>, row: &NewRecord) -> Result<InsertOutcome, StoreError> {
    if let Some((v, f)) = &row.fingerprint
        && let Some(r) = tx
            .query_opt(
                "SELECT id FROM records WHERE template = $1 AND fp_version = $2 \
                 AND fingerprint = $3",
                &[&row.template, &i64::from(*v), f],
            )
            .await
            .pg()?
    {
        return Ok(InsertOutcome::ExistingFingerprint(u64_of(r.get(0))?));
    }
    if let Some(l) = &row.lookup
        && tx
            .query_opt(
                "SELECT 1 FROM records WHERE template = $1 AND lookup = $2",
                &[&row.template, l],
            )
            .await
            .pg()?
            .is_some()
    {
        return Ok(InsertOutcome::LookupCollision);
    }
    Err(StoreError::Conflict("record id exists".into()))
}
