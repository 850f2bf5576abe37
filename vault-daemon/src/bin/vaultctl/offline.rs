//! Commands on the files of a data directory while the daemon is stopped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use vault_client::ExposeSecret;
use vault_core::keys::root::{self, KdfParams};
use vault_core::vault::{JobState, RootInit, SealMethod, TemplateConfig, Vault};
use vault_daemon::audit::{self, Filter, Keys, PublicKey, VerifyKeys};
use vault_daemon::callers;
use vault_daemon::config::{Config, builtin_templates};
use vault_daemon::policy::{self, Policy, Registered, Scope, TemplateInfo};
use vault_daemon::server::DEV_POLICY_FILE;
use zeroize::Zeroizing;

use crate::args::{
    AuditExportArgs, AuditTailArgs, AuditVerifyArgs, ExplainArgs, Global, InitArgs, Offline,
    RewrapArgs, RootKeyArgs, resolve_offline,
};
use crate::failure::Failure;
use crate::online::{new_passphrase, print_shares, progress, read_secret, write_secret_file};
use crate::output::{print_json, table};

/// The config's templates, as `vaultctl` reports a template that does not build.
fn templates(cfg: &Config) -> Result<Vec<TemplateConfig>, Failure> {
    vault_daemon::storage::templates(cfg).map_err(|e| Failure::other(e.to_string()))
}

fn template_infos(config: Option<&Path>) -> Result<Vec<TemplateInfo>, Failure> {
    let specs = match config {
        Some(p) => Config::from_file(p)
            .map_err(|e| Failure::other(e.to_string()))?
            .template_specs(),
        None => builtin_templates(),
    };
    Ok(specs.iter().map(|t| t.info()).collect())
}

fn vault_error(e: vault_core::vault::Error) -> Failure {
    use vault_core::vault::Error as E;
    match e {
        E::Sealed => Failure::Sealed("the vault is sealed".into()),
        e => Failure::other(e.to_string()),
    }
}

/// The configured store (SQLite in the data directory, or `[database] url`), with this data
/// directory's node id so a rewrap this command resumes is the daemon's own job.
fn open_vault(cfg: &Config) -> Result<Vault, Failure> {
    let opened = vault_daemon::storage::open(cfg, false).map_err(|e| match e {
        vault_core::store::StoreError::NotFound { .. } => Failure::other(format!(
            "no vault at {}: create one with `vaultctl init --data-dir {}`",
            vault_daemon::storage::location(cfg),
            cfg.data_dir.display()
        )),
        e => Failure::other(format!("{}: {e}", vault_daemon::storage::location(cfg))),
    })?;
    if !opened.has_vault {
        return Err(Failure::other(format!(
            "no vault in {}: create one with `vaultctl init`",
            opened.location
        )));
    }
    vault_daemon::storage::open_vault(cfg, opened.store, templates(cfg)?).map_err(storage_error)
}

/// A store that did not become a vault, as `vaultctl` reports it.
fn storage_error(e: vault_daemon::storage::VaultError) -> Failure {
    match e {
        vault_daemon::storage::VaultError::Vault(e) => vault_error(e),
        e => Failure::other(e.to_string()),
    }
}

fn unseal(vault: &Vault, cfg: &Config, args: &RootKeyArgs) -> Result<(), Failure> {
    let wrong = |e: vault_core::vault::Error| match e {
        vault_core::vault::Error::Key(vault_core::keys::KeyError::WrongRootKey) => {
            Failure::Denied("wrong passphrase, shares or root key".into())
        }
        e => vault_error(e),
    };
    match vault.status().seal_method {
        SealMethod::RootKey => {
            let path = args
                .root_key_file
                .clone()
                .or_else(|| cfg.root_key_file.clone().filter(|p| p.exists()))
                .ok_or_else(|| {
                    Failure::other("this vault unseals with a root key file: give --root-key-file")
                })?;
            let key = root::from_file(&path)
                .map_err(|e| Failure::other(format!("{}: {e}", path.display())))?;
            vault.unseal_key(key).map_err(wrong)
        }
        SealMethod::Passphrase => {
            let pass = read_secret("Passphrase: ", args.stdin)?;
            vault.unseal_passphrase(&pass).map_err(wrong)
        }
        SealMethod::Wrapped => {
            let hsm = cfg.hsm.as_ref().ok_or_else(|| {
                Failure::other(
                    "this vault's root key is wrapped by an HSM: give --config with its [hsm] \
                     section",
                )
            })?;
            vault_daemon::hsm::unseal(hsm, vault).map_err(wrong)
        }
        SealMethod::Shares => loop {
            let (have, need) = vault.status().progress.unwrap_or((0, 0));
            let share = read_secret(&format!("Share {} of {need}: ", have + 1), args.stdin)?;
            let p = vault.submit_share(share.expose_secret()).map_err(wrong)?;
            if p.unsealed {
                return Ok(());
            }
        },
    }
}

pub(crate) async fn init(g: &Global, a: InitArgs) -> Result<(), Failure> {
    let mut cfg = resolve_offline(&Offline {
        data_dir: a.data_dir.clone(),
        config: a.config.clone(),
    })?;
    cfg.root_key_file = None;
    let location = vault_daemon::storage::location(&cfg);
    if !vault_daemon::storage::is_postgres(&cfg)
        && vault_daemon::storage::sqlite_exists(&cfg.data_dir)
    {
        return Err(Failure::other(format!(
            "{location} already holds a vault: nothing was changed"
        )));
    }
    let init = if let Some(path) = &a.root_key_file {
        if !path.exists() {
            let mut bytes = Zeroizing::new([0u8; 32]);
            getrandom::fill(&mut *bytes)
                .map_err(|_| Failure::other("the OS random number generator failed"))?;
            write_secret_file(path, &format!("{}\n", hex::encode(*bytes)))?;
            eprintln!("generated root key file {} (mode 0600)", path.display());
        }
        RootInit::Key(
            root::from_file(path)
                .map_err(|e| Failure::other(format!("{}: {e}", path.display())))?,
        )
    } else if a.hsm {
        let hsm = cfg.hsm.as_ref().ok_or_else(|| {
            Failure::other("--hsm needs --config with an [hsm] section (module, token, key, PIN)")
        })?;
        let wrapper = vault_daemon::hsm::open(hsm).map_err(|e| Failure::other(e.to_string()))?;
        if wrapper
            .create_key()
            .map_err(|e| Failure::other(e.to_string()))?
        {
            eprintln!("created the wrapping key {}", wrapper.key_ref_text());
        }
        RootInit::Wrapped(wrapper)
    } else if let (Some(shares), Some(threshold)) = (a.shares, a.threshold) {
        if threshold < 2 || threshold > shares {
            return Err(Failure::other(
                "--threshold must be at least 2 and at most --shares",
            ));
        }
        RootInit::Shares { threshold, shares }
    } else {
        let pass = new_passphrase(a.passphrase_stdin)?;
        let params = KdfParams::generate().map_err(|e| Failure::other(e.to_string()))?;
        RootInit::Passphrase(pass, params)
    };
    std::fs::create_dir_all(&cfg.data_dir)?;
    let opened = vault_daemon::storage::open(&cfg, true)
        .map_err(|e| Failure::other(format!("{location}: {e}")))?;
    if opened.has_vault {
        return Err(Failure::other(format!(
            "{location} already holds a vault: nothing was changed"
        )));
    }
    let store = opened.store;
    let templates = templates(&cfg)?;
    let create_cfg = cfg.clone();
    let (vault, shares) = tokio::task::spawn_blocking(move || {
        vault_daemon::storage::create_vault(&create_cfg, store, templates, init)
    })
    .await
    .map_err(|e| Failure::other(e.to_string()))?
    .map_err(storage_error)?;
    let status = vault.status();
    if g.json {
        print_json(&json!({
            "vault_id": status.vault_id,
            "unseal_method": status.seal_method.as_str(),
            "data_dir": cfg.data_dir,
            "store": location,
            "shares": shares.iter().map(|s| s.expose_secret().to_owned()).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    outln!(
        "created vault {} in {} (unsealed by {})",
        status.vault_id,
        location,
        status.seal_method.as_str()
    );
    if !shares.is_empty() {
        print_shares(&shares);
    }
    match &a.root_key_file {
        Some(p) => outln!(
            "next: start vaultd with `root_key_file = \"{}\"` in its config",
            p.display()
        ),
        None if a.hsm => outln!("next: start vaultd with the same config: it unseals itself"),
        None => outln!("next: start vaultd (it starts sealed), then run `vaultctl unseal`"),
    }
    Ok(())
}

pub(crate) async fn status(g: &Global, o: &Offline) -> Result<(), Failure> {
    let cfg = resolve_offline(o)?;
    let vault = open_vault(&cfg)?;
    let s = vault.status();
    if g.json {
        print_json(&json!({
            "sealed": true,
            "unseal_method": s.seal_method.as_str(),
            "vault_id": s.vault_id,
            "data_dir": cfg.data_dir,
        }));
    } else {
        table(
            &["", ""],
            &[
                vec!["vault id".into(), s.vault_id.clone()],
                vec!["unseal method".into(), s.seal_method.as_str().into()],
                vec!["data dir".into(), cfg.data_dir.display().to_string()],
            ],
        );
    }
    Ok(())
}

pub(crate) async fn rewrap(g: &Global, a: RewrapArgs) -> Result<(), Failure> {
    let cfg = resolve_offline(&a.offline)?;
    let template = a
        .key
        .strip_prefix("data/")
        .or_else(|| a.key.strip_prefix("fp/"))
        .unwrap_or(&a.key)
        .to_owned();
    let vault = Arc::new(open_vault(&cfg)?);
    unseal(&vault, &cfg, &a.root)?;
    let job = vault.rewrap_start(&template).map_err(vault_error)?;
    let remaining = vault.rewrap_remaining(&job).map_err(vault_error)?;
    if job.processed > 0 && !g.json {
        eprintln!(
            "resuming rewrap job {} of {template} ({} records done)",
            job.id, job.processed
        );
    }
    let bar = progress(job.processed + remaining, g.json);
    bar.set_position(job.processed);

    // Ctrl-C sets the flag; the job stops after the batch in progress commits.
    let stop = Arc::new(AtomicBool::new(false));
    let interrupted = Arc::clone(&stop);
    let watcher = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            interrupted.store(true, Ordering::SeqCst);
        }
    });
    let (batch, max, id) = (a.batch_size.max(1) as usize, a.max_batches, job.id);
    let (v, b, s) = (Arc::clone(&vault), bar.clone(), Arc::clone(&stop));
    let result = tokio::task::spawn_blocking(move || {
        let mut batches = 0u64;
        v.rewrap_run(id, batch, &mut |j| {
            batches += 1;
            b.set_position(j.processed);
            !s.load(Ordering::SeqCst) && max.is_none_or(|m| batches < m)
        })
    })
    .await
    .map_err(|e| Failure::other(e.to_string()))?;
    watcher.abort();
    let job = result.map_err(|e| {
        Failure::other(format!(
            "rewrap stopped on an error ({e}); run the same command to resume from its cursor"
        ))
    })?;
    let left = vault.rewrap_remaining(&job).map_err(vault_error)?;
    bar.finish_and_clear();
    if g.json {
        print_json(&json!({
            "job_id": job.id,
            "template": job.template,
            "target_version": job.target_version,
            "state": job.state.as_str(),
            "processed": job.processed,
            "remaining": left,
        }));
    }
    match job.state {
        JobState::Completed => {
            if !g.json {
                outln!(
                    "rewrap of {template} complete: {} records moved to version {}",
                    job.processed,
                    job.target_version
                );
            }
            Ok(())
        }
        _ if stop.load(Ordering::SeqCst) => Err(Failure::Interrupted(format!(
            "interrupted: rewrap job {} paused after {} records ({left} left); run the same \
             command to resume",
            job.id, job.processed
        ))),
        _ => {
            if !g.json {
                outln!(
                    "rewrap job {} paused after {} records ({left} left); run the same command \
                     to resume",
                    job.id,
                    job.processed
                );
            }
            Ok(())
        }
    }
}

pub(crate) fn policy_check(
    g: &Global,
    file: &Path,
    config: Option<PathBuf>,
) -> Result<(), Failure> {
    let infos = template_infos(config.as_deref())?;
    let warnings = policy::check(file, &infos).map_err(|e| Failure::other(e.to_string()))?;
    if g.json {
        print_json(&json!({
            "ok": true,
            "warnings": warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    for w in &warnings {
        outln!("warning: {}: {w}", file.display());
    }
    outln!(
        "{}: OK ({} warning{})",
        file.display(),
        warnings.len(),
        if warnings.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

pub(crate) fn policy_explain(g: &Global, a: ExplainArgs) -> Result<(), Failure> {
    let data_dir = a
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(vault_daemon::config::DEFAULT_DATA_DIR));
    let path = a
        .policy
        .clone()
        .unwrap_or_else(|| data_dir.join(DEV_POLICY_FILE));
    let infos = template_infos(a.config.as_deref())?;
    let (policy, _) = Policy::load(&path, &infos).map_err(|e| match e {
        policy::PolicyError::Read { .. } => {
            Failure::other(format!("{e}: give the policy file with --policy"))
        }
        e => Failure::other(e.to_string()),
    })?;
    let scope: Scope = a
        .scope
        .parse()
        .map_err(|e: policy::ScopeError| Failure::other(e.to_string()))?;
    // A `key:` caller of the registry adds its roles and scopes (read from callers.json).
    let registered = a.caller.strip_prefix("key:").and_then(|name| {
        read_registry(&data_dir)
            .into_iter()
            .find(|c| c.name == name)
    });
    let scopes: Vec<Scope> = registered
        .as_ref()
        .map(|c| c.scopes.iter().map(callers::StoredScope::scope).collect())
        .unwrap_or_default();
    let explanation = policy.explain_registered(
        &a.caller,
        registered.as_ref().map(|c| Registered {
            roles: &c.roles,
            scopes: &scopes,
        }),
        &scope,
    );
    if g.json {
        print_json(&json!({
            "caller": explanation.caller,
            "scope": explanation.scope.to_string(),
            "allowed": explanation.allowed(),
            "known_caller": explanation.known_caller,
            "roles": explanation.roles,
            "matches": explanation.matches.iter().map(|m| json!({
                "via": m.via.to_string(),
                "grant": m.grant,
                "line": m.line,
                "granted": m.granted,
                "conditions": m.conditions,
            })).collect::<Vec<_>>(),
        }));
    } else {
        outln!("{explanation}");
    }
    Ok(())
}

fn read_registry(dir: &Path) -> Vec<callers::Caller> {
    #[derive(serde::Deserialize)]
    struct Stored {
        #[serde(default)]
        callers: Vec<callers::Caller>,
    }
    std::fs::read(dir.join(callers::FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<Stored>(&b).ok())
        .map(|s| s.callers)
        .unwrap_or_default()
}

fn log_path(o: &Offline) -> Result<(Config, PathBuf), Failure> {
    let cfg = resolve_offline(o)?;
    let log = cfg.data_dir.join(audit::LOG_FILE);
    if !log.exists() {
        return Err(Failure::other(format!("no audit log at {}", log.display())));
    }
    Ok((cfg, log))
}

fn audit_error(e: audit::AuditError) -> Failure {
    Failure::other(e.to_string())
}

pub(crate) fn audit_tail(g: &Global, a: AuditTailArgs) -> Result<(), Failure> {
    let (_, log) = log_path(&a.offline)?;
    let records = audit::tail(&log, a.count).map_err(audit_error)?;
    if g.json {
        for r in &records {
            print_json(&serde_json::to_value(r).unwrap_or_default());
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let e = &r.event;
            let outcome = serde_json::to_value(&e.outcome)
                .ok()
                .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(str::to_owned))
                .unwrap_or_default();
            vec![
                r.seq.to_string(),
                (r.time_ms / 1000).to_string(),
                e.caller.clone(),
                match &e.action {
                    Some(action) => format!("{}:{action}", e.operation),
                    None => e.operation.to_string(),
                },
                e.template.clone().unwrap_or_default(),
                e.items.to_string(),
                outcome,
                e.request_id.clone(),
            ]
        })
        .collect();
    table(
        &[
            "seq",
            "time",
            "caller",
            "operation",
            "template",
            "items",
            "outcome",
            "request id",
        ],
        &rows,
    );
    Ok(())
}

pub(crate) fn audit_export(_g: &Global, a: AuditExportArgs) -> Result<(), Failure> {
    let (_, log) = log_path(&a.offline)?;
    let filter = Filter {
        caller: a.caller,
        request_id: a.request_id,
        ..Filter::default()
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    audit::export(&log, &filter, &mut out).map_err(audit_error)?;
    Ok(())
}

pub(crate) fn audit_verify(g: &Global, a: AuditVerifyArgs) -> Result<(), Failure> {
    let (cfg, log) = log_path(&a.offline)?;
    let keys = match &a.public_key {
        Some(hex) => VerifyKeys::public_only(PublicKey::from_hex(hex).map_err(audit_error)?),
        None => {
            let path = a
                .key_file
                .clone()
                .unwrap_or_else(|| cfg.data_dir.join(audit::KEY_FILE));
            Keys::load(&path)
                .map_err(|e| {
                    Failure::other(format!(
                        "{e}: give the audit key file with --key-file, or verify signatures \
                         only with --public-key"
                    ))
                })?
                .verify_keys()
        }
    };
    let dir = log.parent().unwrap_or(Path::new(".")).to_owned();
    let range = match (a.from_seq, a.to_seq) {
        (None, None) => None,
        (lo, hi) => Some((lo.unwrap_or(0), hi.unwrap_or(u64::MAX))),
    };
    let report = audit::segments::verify_all(&dir, &keys, range).map_err(audit_error)?;
    // Torn tails the daemon set aside at a start (chained events, so verified with the rest).
    let recovered = audit::query(
        &log,
        &Filter {
            action: Some(audit::TORN_TAIL_ACTION.into()),
            ..Filter::default()
        },
    )
    .map_err(audit_error)?;
    if g.json {
        print_json(&json!({
            "ok": report.first_bad.is_none(),
            "segments": report.segments,
            "first_index": report.first_seq,
            "last_index": report.last_seq,
            "events_checked": report.events,
            "checkpoints_checked": report.checkpoints,
            "macs_checked": report.macs_checked,
            "first_bad_index": report.first_bad.as_ref().map(|(_, seq, _)| seq),
            "first_bad_file": report.first_bad.as_ref().map(|(f, _, _)| f),
            "reason": report.first_bad.as_ref().map(|(_, _, d)| d.to_string()),
            "recovered_torn_tails": recovered.iter().map(|r| json!({
                "index": r.seq, "time_ms": r.time_ms, "detail": r.event.detail,
            })).collect::<Vec<_>>(),
        }));
    }
    match report.first_bad {
        None => {
            if !g.json {
                outln!(
                    "audit log OK: {} segment(s), {} events (index {} to {}) and {} checkpoints \
                     verified{}",
                    report.segments,
                    report.events,
                    report.first_seq,
                    report.last_seq,
                    report.checkpoints,
                    if report.macs_checked {
                        " (MACs checked)"
                    } else {
                        " (signatures and links only: no audit key)"
                    }
                );
                for r in &recovered {
                    outln!(
                        "recovered torn tail: event {} at {}: {}",
                        r.seq,
                        vault_daemon::timefmt::rfc3339_millis(
                            i64::try_from(r.time_ms).unwrap_or(i64::MAX)
                        ),
                        r.event.detail.as_deref().unwrap_or("")
                    );
                }
            }
            Ok(())
        }
        Some((file, seq, defect)) => Err(Failure::Tampered(format!(
            "audit log {} does NOT verify: event {seq} is bad ({defect}); {} events before it \
             verified. Keep the file as evidence",
            file.display(),
            report.events
        ))),
    }
}

/// `vaultctl hsm create-key`: the wrapping key on the configured token.
pub(crate) fn hsm_create_key(g: &Global, config: &Path) -> Result<(), Failure> {
    let cfg = Config::from_file(config).map_err(|e| Failure::other(e.to_string()))?;
    let hsm = cfg
        .hsm
        .as_ref()
        .ok_or_else(|| Failure::other(format!("{} has no [hsm] section", config.display())))?;
    let wrapper = vault_daemon::hsm::open(hsm).map_err(|e| Failure::other(e.to_string()))?;
    let created = wrapper
        .create_key()
        .map_err(|e| Failure::other(e.to_string()))?;
    if g.json {
        print_json(&json!({ "key": wrapper.key_ref_text(), "created": created }));
    } else if created {
        outln!(
            "created {} (AES-256, sensitive, not extractable)",
            wrapper.key_ref_text()
        );
    } else {
        outln!("{} exists already: left as it is", wrapper.key_ref_text());
    }
    Ok(())
}

fn copied_json(c: &vault_core::store::sqlite::backup::Copied, path: &Path) -> serde_json::Value {
    json!({
        "path": path,
        "vault_id": c.vault_id,
        "records": c.records,
        "key_versions": c.key_versions,
        "bytes": c.bytes,
    })
}

/// `vaultctl backup`: SQLite's online backup of the configured vault.
pub(crate) fn backup(g: &Global, a: &crate::args::BackupArgs) -> Result<(), Failure> {
    let cfg = resolve_offline(&a.offline)?;
    if vault_daemon::storage::is_postgres(&cfg) {
        return Err(Failure::other(
            "this vault is on PostgreSQL: back it up with `pg_dump -Fc` (docs/operations.md)",
        ));
    }
    let db = cfg.data_dir.join(vault_daemon::storage::DB_FILE);
    let started = std::time::Instant::now();
    let c = vault_core::store::sqlite::backup::backup(&db, &a.out)
        .map_err(|e| Failure::other(e.to_string()))?;
    if g.json {
        print_json(&copied_json(&c, &a.out));
    } else {
        outln!(
            "backed up vault {} to {}: {} records, {} key versions, {} bytes in {:.1} s",
            c.vault_id,
            a.out.display(),
            c.records,
            c.key_versions,
            c.bytes,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// `vaultctl restore`: a backup as the vault of a new data directory.
pub(crate) fn restore(g: &Global, a: &crate::args::RestoreArgs) -> Result<(), Failure> {
    std::fs::create_dir_all(&a.data_dir)?;
    let db = a.data_dir.join(vault_daemon::storage::DB_FILE);
    let c = vault_core::store::sqlite::backup::restore(&a.from, &db)
        .map_err(|e| Failure::other(e.to_string()))?;
    if g.json {
        print_json(&copied_json(&c, &db));
    } else {
        outln!(
            "restored vault {} into {}: {} records, {} key versions",
            c.vault_id,
            a.data_dir.display(),
            c.records,
            c.key_versions
        );
        outln!(
            "next: start vaultd on {} with the vault's root key",
            a.data_dir.display()
        );
    }
    Ok(())
}

/// `vaultctl migrate`: SQLite to PostgreSQL, resumable, verified.
pub(crate) async fn migrate(g: &Global, a: &crate::args::MigrateArgs) -> Result<(), Failure> {
    if !vault_daemon::pgstore::is_postgres_url(&a.to) {
        return Err(Failure::other("--to must be a postgres:// URL"));
    }
    let db = a.data_dir.join(vault_daemon::storage::DB_FILE);
    let opts = vault_daemon::pgstore::PgOptions {
        pool_size: 2,
        schema: a.schema.clone(),
        ca_file: a.ca_file.clone(),
    };
    let (url, batch) = (a.to.clone(), a.batch_size);
    let report = tokio::task::spawn_blocking(move || {
        let target = vault_daemon::pgstore::PgStore::connect(&url, &opts)
            .map_err(|e| Failure::other(format!("the target: {e}")))?;
        let started = std::time::Instant::now();
        // The first batch is reported at once, then one line a second.
        let mut last_print: Option<std::time::Instant> = None;
        vault_daemon::migrate::migrate(&db, &target, batch, |p| {
            let due = last_print.is_none_or(|t| t.elapsed().as_secs_f64() >= 1.0);
            if !due && p.records < p.total {
                return;
            }
            last_print = Some(std::time::Instant::now());
            let rate = p.records as f64 / started.elapsed().as_secs_f64().max(1e-3);
            eprintln!(
                "copied {}/{} records{} ({rate:.0}/s)",
                p.records,
                p.total,
                if p.resumed { ", resumed" } else { "" }
            );
        })
        .map_err(|e| Failure::other(e.to_string()))
    })
    .await
    .map_err(|e| Failure::other(e.to_string()))??;
    let rate = report.copied_now as f64 / report.copy_secs.max(1e-3);
    if g.json {
        print_json(&json!({
            "records": report.records,
            "copied_now": report.copied_now,
            "copy_secs": report.copy_secs,
            "records_per_sec": rate,
            "resumed": report.resumed,
            "idempotency_keys": report.idempotency,
            "key_versions": report.key_versions,
            "per_version": report.per_version.iter().map(|(t, v, n)| json!({
                "template": t, "key_version": v, "records": n
            })).collect::<Vec<_>>(),
            "checksum": report.checksum,
            "verified": true,
        }));
    } else {
        outln!(
            "migrated {} records ({} by this run, {rate:.0}/s), {} idempotency keys, {} key \
             versions",
            report.records,
            report.copied_now,
            report.idempotency,
            report.key_versions
        );
        for (t, v, n) in &report.per_version {
            outln!("  {t} v{v}: {n} records on both sides");
        }
        outln!(
            "verified: keyed checksum {} on both sides",
            &report.checksum[..16]
        );
        outln!(
            "next: set [database] url to the target in vaultd's config, start it, and detokenize \
             a few known tokens"
        );
    }
    Ok(())
}
