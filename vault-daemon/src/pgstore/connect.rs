//! Connecting: the pool, TLS to the server, the identifier check, and the durability settings a server must have before the store uses it.

use super::*;

impl PgStore {
    /// Connects, checks durability settings and runs pending migrations (creating the schema
    /// on an empty database). Several daemons may do this at once: migrations hold an advisory
    /// lock. A plaintext connection is refused unless every host is loopback or a Unix socket.
    pub fn connect(url: &str, opts: &PgOptions) -> Result<PgStore, StoreError> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|_| StoreError::unavailable("the database URL does not parse".into()))?;
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
            .map_err(|e| {
                StoreError::unavailable("starting the database runtime".into()).because(e)
            })?;
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
                .map_err(|e| StoreError::unavailable("database pool".into()).because(e))?
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
                    Err(e) => return Err(map_pg(e)),
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
    pub(super) fn one_id(
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
    pub(super) fn delete_counted(
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
    pub(super) fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Pool) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| StoreError::unavailable("store closed".into()))?;
        let fut = f(self.pool.clone());
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let result = match tokio::time::timeout(CALL_TIMEOUT, fut).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::unavailable("database call timed out".into())),
            };
            let _ = tx.send(result);
        });
        rx.recv()
            .map_err(|_| StoreError::unavailable("database task ended".into()))?
    }
}

/// Refuses anything but a plain SQL identifier (it is spliced into `search_path`).
pub(super) fn check_identifier(s: &str) -> Result<(), StoreError> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::unavailable(
            "schema name: lowercase letters, digits and _ only".into(),
        ))
    }
}

/// TLS: rustls when `sslmode=require` (with the configured CA), none for loopback and Unix
/// sockets; anything else is refused rather than sent in the clear.
pub(super) fn tls_for(
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
                StoreError::unavailable(
                    "sslmode=require needs database_ca (the server's CA)".into(),
                )
            })?;
            Ok(Some(rustls_connector(ca)?))
        }
        _ if local => Ok(None),
        _ => Err(StoreError::unavailable(
            "refusing a plaintext connection to a non-loopback database: add sslmode=require \
             and database_ca"
                .into(),
        )),
    }
}

pub(super) fn rustls_connector(
    ca: &Path,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bad =
        |e: Cause| StoreError::unavailable(format!("database_ca {}", ca.display())).because(e);
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(e.into()))? {
        roots
            .add(cert.map_err(|e| bad(e.into()))?)
            .map_err(|e| bad(e.into()))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.into()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

pub(super) type Client = deadpool_postgres::Client;

pub(super) async fn get(pool: &Pool) -> Result<Client, StoreError> {
    pool.get().await.map_err(|e| {
        let what = "database connection".to_owned();
        match e {
            // Mapped as any server error: without the server's words (they may quote a row).
            deadpool_postgres::PoolError::Backend(pg) => map_pg(pg).within(&what),
            deadpool_postgres::PoolError::Timeout(_) => {
                StoreError::unavailable(format!("{what}: timed out"))
            }
            _ => StoreError::unavailable(format!("{what}: unavailable")),
        }
    })
}

pub(super) async fn check_durability(c: &Client) -> Result<(), StoreError> {
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
            return Err(StoreError::Durability {
                setting: name,
                expected: ok.join(" or "),
                found: value,
            });
        }
    }
    Ok(())
}
