//! Commands that talk to a running daemon through `vault-client`.

use std::collections::VecDeque;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use vault_client::proto as pb;
use vault_client::{
    AdminClient, Config, Error, ExposeSecret, NewRootKey, SecretString, Tls, TokenizeItem,
    VaultClient,
};
use zeroize::Zeroizing;

pub(crate) use self::audit::{audit_export, audit_tail, audit_verify};
pub(crate) use self::callers::{callers_add, callers_list, callers_revoke};
pub(crate) use self::data::{detokenize, tokenize};
use crate::args::{
    AuditExportArgs, AuditTailArgs, CallersAddArgs, DetokenizeArgs, Global, RewrapArgs,
    RotateRootArgs, TokenizeArgs, UnsealArgs,
};
use crate::failure::Failure;
use crate::output::{self, print_json, table};

/// The dev daemon's API key file, used when no key is given.
const DEV_KEY_FILE: &str = "./vault-data/dev-api-key";
mod audit;
mod callers;
mod data;

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, Failure> {
    std::fs::read(path)
        .map_err(|e| Failure::other(format!("reading {what} {}: {e}", path.display())))
}

/// The API key: --api-key-file / VAULT_API_KEY_FILE, then VAULT_API_KEY, then the dev key file.
fn api_key(g: &Global) -> Result<Option<SecretString>, Failure> {
    let from_file = |p: &Path| -> Result<SecretString, Failure> {
        let text = Zeroizing::new(read_file(p, "the API key file")?);
        let text = std::str::from_utf8(&text)
            .map_err(|_| Failure::other(format!("{} is not text", p.display())))?;
        Ok(SecretString::from(text.trim().to_owned()))
    };
    if let Some(p) = &g.api_key_file {
        return from_file(p).map(Some);
    }
    if let Ok(key) = std::env::var("VAULT_API_KEY") {
        return Ok(Some(SecretString::from(key.trim().to_owned())));
    }
    if g.client_cert.is_none() && Path::new(DEV_KEY_FILE).exists() {
        return from_file(Path::new(DEV_KEY_FILE)).map(Some);
    }
    Ok(None)
}

pub(crate) fn client_config(g: &Global) -> Result<Config, Failure> {
    let mut config = Config::new(g.endpoint.clone()).deadline(Duration::from_secs(g.timeout));
    if let Some(key) = api_key(g)? {
        config = config.api_key(key);
    }
    if let Some(ca) = &g.ca_cert {
        let mut tls = Tls::new(read_file(ca, "the CA certificate")?);
        if let (Some(cert), Some(key)) = (&g.client_cert, &g.client_key) {
            let key = read_file(key, "the client key")?;
            tls = tls.identity(read_file(cert, "the client certificate")?, key.into());
        }
        if let Some(name) = &g.tls_server_name {
            tls = tls.domain_name(name.clone());
        }
        config = config.tls(tls);
    } else if g.client_cert.is_some() {
        return Err(Failure::other(
            "--client-cert needs --ca-cert (the CA of the daemon's certificate) and an https:// \
             endpoint",
        ));
    }
    Ok(config)
}

async fn admin(g: &Global) -> Result<AdminClient, Failure> {
    Ok(AdminClient::connect(client_config(g)?).await?)
}

async fn client(g: &Global) -> Result<VaultClient, Failure> {
    Ok(VaultClient::connect(client_config(g)?).await?)
}

pub(crate) async fn status(g: &Global) -> Result<(), Failure> {
    let s = admin(g).await?.seal_status().await?;
    output::print_seal_status(&s, g.json);
    Ok(())
}

/// Reads one secret: from the terminal without echo, or one line of stdin.
pub(crate) fn read_secret(prompt: &str, stdin: bool) -> Result<SecretString, Failure> {
    let line = if stdin {
        let mut line = Zeroizing::new(String::new());
        let n = std::io::stdin().read_line(&mut line)?;
        if n == 0 {
            return Err(Failure::other("stdin ended before the secret"));
        }
        Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_owned())
    } else {
        Zeroizing::new(rpassword::prompt_password(prompt).map_err(|e| {
            Failure::other(format!(
                "cannot read from the terminal ({e}); in scripts use --stdin / --passphrase-stdin"
            ))
        })?)
    };
    if line.is_empty() {
        return Err(Failure::other("empty secret"));
    }
    Ok(SecretString::from(line.to_string()))
}

/// A new passphrase: one stdin line, or asked twice on the terminal.
pub(crate) fn new_passphrase(stdin: bool) -> Result<SecretString, Failure> {
    let first = read_secret("New passphrase: ", stdin)?;
    if !stdin {
        let second = read_secret("Repeat the passphrase: ", false)?;
        if first.expose_secret() != second.expose_secret() {
            return Err(Failure::other(
                "the passphrases differ; nothing was changed",
            ));
        }
    }
    if first.expose_secret().chars().count() < 12 {
        return Err(Failure::other("a passphrase needs at least 12 characters"));
    }
    Ok(first)
}

pub(crate) async fn unseal(g: &Global, a: UnsealArgs) -> Result<(), Failure> {
    let admin = admin(g).await?;
    let mut status = if a.reset {
        admin.reset_unseal().await?
    } else {
        admin.seal_status().await?
    };
    if !status.sealed {
        if !g.json {
            outln!("the vault is unsealed");
        } else {
            print_json(&output::seal_status_json(&status));
        }
        return Ok(());
    }
    match pb::UnsealMethod::try_from(status.unseal_method) {
        Ok(pb::UnsealMethod::Hsm) => {
            status = admin.unseal_with_hsm().await?;
        }
        Ok(_) if a.hsm => {
            return Err(Failure::other(format!(
                "this vault unseals with {}, not an HSM",
                output::unseal_method(status.unseal_method)
            )));
        }
        Ok(pb::UnsealMethod::Passphrase) => {
            let pass = read_secret("Passphrase: ", a.stdin)?;
            status = admin
                .unseal_with_passphrase(&pass)
                .await
                .map_err(wrong_secret)?;
        }
        Ok(pb::UnsealMethod::Shamir) => {
            while status.sealed {
                let prompt = format!(
                    "Share {} of {}: ",
                    status.shares_received + 1,
                    status.shares_threshold
                );
                let share = read_secret(&prompt, a.stdin)?;
                status = admin
                    .unseal_with_share(&share)
                    .await
                    .map_err(wrong_secret)?;
                if status.sealed && !g.json {
                    eprintln!(
                        "{} of {} shares received",
                        status.shares_received, status.shares_threshold
                    );
                }
            }
        }
        Ok(pb::UnsealMethod::RootKey) => {
            return Err(Failure::Sealed(
                "this vault unseals with a root key file given to vaultd at start \
                 (root_key_file in its config): restart vaultd with it"
                    .into(),
            ));
        }
        _ => {
            return Err(Failure::other(
                "the daemon reports an unknown unseal method",
            ));
        }
    }
    if g.json {
        print_json(&output::seal_status_json(&status));
    } else {
        outln!("unsealed (vault {})", status.vault_id);
    }
    Ok(())
}

fn wrong_secret(e: Error) -> Failure {
    match e {
        Error::PermissionDenied { .. } => Failure::Denied(
            "wrong passphrase or shares: the shares given so far were discarded; run `vaultctl \
             unseal` again"
                .into(),
        ),
        Error::InvalidInput { message, .. } => Failure::other(format!(
            "{message}: check the share (a repeated share, or one of another set?)"
        )),
        e => e.into(),
    }
}

pub(crate) async fn seal(g: &Global) -> Result<(), Failure> {
    let s = admin(g).await?.seal().await?;
    if g.json {
        print_json(&output::seal_status_json(&s));
    } else {
        outln!("sealed: keys dropped from memory; `vaultctl unseal` to unseal");
    }
    Ok(())
}

pub(crate) async fn keys_list(g: &Global, template: Option<String>) -> Result<(), Failure> {
    let keys = admin(g)
        .await?
        .key_status(None, template.as_deref())
        .await?;
    output::print_keys(&keys, g.json);
    Ok(())
}

fn is_key_name(s: &str) -> bool {
    s.contains('/') || s == "token" || s == "lookup"
}

pub(crate) async fn keys_rotate(g: &Global, key: &str) -> Result<(), Failure> {
    let admin = admin(g).await?;
    let names: Vec<String> = if is_key_name(key) {
        vec![key.to_owned()]
    } else {
        let keys = admin.key_status(None, Some(key)).await?;
        if keys.is_empty() {
            return Err(Failure::other(format!(
                "no template or key named `{key}`: see `vaultctl keys list`"
            )));
        }
        keys.into_iter().map(|k| k.name).collect()
    };
    let mut rotated = Vec::new();
    for name in &names {
        let r = admin.rotate_key(name).await?;
        if !g.json {
            outln!("rotated {name} to version {}", r.new_version);
        }
        rotated.push(json!({"key": name, "new_version": r.new_version}));
    }
    if g.json {
        print_json(&json!(rotated));
    } else if names.iter().any(|n| n.starts_with("data/")) {
        outln!("stored records stay under older versions until `vaultctl keys rewrap {key}`");
    }
    Ok(())
}

pub(crate) async fn rewrap(g: &Global, a: RewrapArgs) -> Result<(), Failure> {
    let admin = admin(g).await?;
    let key_name = if is_key_name(&a.key) {
        a.key.clone()
    } else {
        format!("data/{}", a.key)
    };
    let job = match admin.start_rewrap(&key_name, Some(a.batch_size)).await {
        Ok(job) => job,
        Err(Error::AlreadyExists { .. }) => {
            let jobs = admin
                .list_rewraps(pb::ListRewrapsRequest {
                    key_name: Some(key_name.clone()),
                    page_size: 0,
                    page_token: String::new(),
                })
                .await?
                .jobs;
            let job = jobs
                .into_iter()
                .find(|j| j.state != pb::RewrapState::Succeeded as i32)
                .ok_or_else(|| Failure::other("the daemon reports a job but lists none"))?;
            if job.state == pb::RewrapState::Paused as i32
                || job.state == pb::RewrapState::Failed as i32
            {
                if !g.json {
                    eprintln!("resuming rewrap job {}", job.job_id);
                }
                admin.resume_rewrap(&job.job_id).await?
            } else {
                if !g.json {
                    eprintln!("rewrap job {} is already running: watching it", job.job_id);
                }
                job
            }
        }
        Err(e) => return Err(e.into()),
    };
    if a.detach {
        if g.json {
            print_json(&output::job_json(&job));
        } else {
            outln!(
                "rewrap job {} started for {key_name}; `vaultctl keys rewrap {}` watches it",
                job.job_id,
                a.key
            );
        }
        return Ok(());
    }
    let bar = progress(job.total, g.json);
    bar.set_position(job.processed);
    let started = Instant::now();
    let mut job = job;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        bar.set_length(job.total.max(job.processed));
        bar.set_position(job.processed);
        match pb::RewrapState::try_from(job.state) {
            Ok(pb::RewrapState::Succeeded) => break,
            Ok(pb::RewrapState::Failed) => {
                bar.abandon();
                return Err(Failure::other(format!(
                    "rewrap job {} failed ({}): run the same command to resume from its cursor",
                    job.job_id, job.failure_reason
                )));
            }
            // Right after a resume the job may still read as paused for a moment.
            Ok(pb::RewrapState::Paused) if started.elapsed() > Duration::from_secs(2) => {
                bar.abandon();
                return Err(Failure::other(format!(
                    "rewrap job {} paused (the vault was sealed or the daemon is stopping): run \
                     the same command to resume",
                    job.job_id
                )));
            }
            _ => {}
        }
        tokio::select! {
            _ = &mut ctrl_c => {
                bar.abandon();
                return Err(Failure::Interrupted(format!(
                    "stopped watching; rewrap job {} goes on in the daemon: `vaultctl keys rewrap \
                     {}` watches it again",
                    job.job_id, a.key
                )));
            }
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        job = admin.rewrap(&job.job_id).await?;
    }
    bar.finish_and_clear();
    if g.json {
        print_json(&output::job_json(&job));
    } else {
        outln!(
            "rewrap of {} complete: {} records under version {}",
            job.key_name,
            job.processed,
            job.target_version
        );
    }
    Ok(())
}

pub(crate) fn progress(total: u64, hidden: bool) -> indicatif::ProgressBar {
    if hidden {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} records ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style);
    }
    bar
}

pub(crate) async fn keys_min_version(g: &Global, key: &str, version: u32) -> Result<(), Failure> {
    let k = admin(g)
        .await?
        .raise_min_decryption_version(key, version)
        .await?;
    print_key_change(
        g,
        &k,
        &format!("{key}: minimum decryption version is now {version}"),
    );
    Ok(())
}

pub(crate) async fn keys_retire(g: &Global, key: &str, version: u32) -> Result<(), Failure> {
    let k = admin(g)
        .await?
        .retire_key_version(key, version)
        .await
        .map_err(|e| match e {
            Error::FailedPrecondition { message } => Failure::other(format!(
                "{message}: a version can be retired once it is decrypt-only and no record is \
                 left under it (`vaultctl keys rewrap`)"
            )),
            e => e.into(),
        })?;
    print_key_change(g, &k, &format!("{key} version {version} retired"));
    Ok(())
}

pub(crate) async fn keys_destroy(
    g: &Global,
    key: &str,
    version: u32,
    yes: bool,
) -> Result<(), Failure> {
    if !yes {
        return Err(Failure::other(
            "destroying a key version is irreversible: add --yes to confirm",
        ));
    }
    let k = admin(g).await?.destroy_key_version(key, version).await?;
    print_key_change(g, &k, &format!("{key} version {version} destroyed"));
    Ok(())
}

fn print_key_change(g: &Global, k: &pb::KeyStatus, message: &str) {
    if g.json {
        print_json(&output::key_json(k));
    } else {
        outln!("{message}");
    }
}

pub(crate) async fn rotate_root(g: &Global, a: RotateRootArgs) -> Result<(), Failure> {
    let admin = admin(g)
        .await?
        .with_deadline(Duration::from_secs(g.timeout.max(120)));
    let new_root = match (a.shares, a.threshold, a.generate) {
        _ if a.hsm => NewRootKey::Hsm,
        (Some(shares), Some(threshold), _) => NewRootKey::Shamir { threshold, shares },
        (_, _, true) => NewRootKey::Generated,
        _ => NewRootKey::Passphrase(new_passphrase(a.passphrase_stdin)?),
    };
    if let (true, Some(out)) = (a.generate, &a.out)
        && out.exists()
    {
        return Err(Failure::other(format!(
            "{} exists: give a new file for the new root key",
            out.display()
        )));
    }
    let rotation = admin.rotate_root_key(new_root).await?;
    if let (Some(hex), Some(out)) = (&rotation.root_key_hex, &a.out) {
        write_secret_file(out, &format!("{}\n", hex.expose_secret()))?;
        outln!(
            "root key rotated; the new key is in {} (mode 0600): vaultd needs it (root_key_file) \
             at its next start",
            out.display()
        );
    } else if !rotation.shares.is_empty() {
        print_shares(&rotation.shares);
    } else if a.hsm {
        outln!(
            "root key rotated: the daemon's HSM wraps it, and vaultd unseals itself from now on"
        );
    } else {
        outln!("root key rotated: the new passphrase unseals from now on");
    }
    Ok(())
}

pub(crate) fn print_shares(shares: &[SecretString]) {
    outln!(
        "{} shares; give each to its custodian. They are shown once and not stored:",
        shares.len()
    );
    for (i, s) in shares.iter().enumerate() {
        outln!("share {}: {}", i + 1, s.expose_secret());
    }
}

/// Writes a secret to a new file with mode 0600.
pub(crate) fn write_secret_file(path: &Path, text: &str) -> Result<(), Failure> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| Failure::other(format!("creating {}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Failure::other(format!("writing {}: {e}", path.display())))
}

/// Non-blank input lines: (1-based line number, byte range in the text).
type Lines = Vec<(usize, std::ops::Range<usize>)>;
