//! Unit tests of `config`.

use super::*;

#[test]
fn example_config_parses_and_builtins_build() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/vault.toml"));
    let cfg = Config::from_file(path).unwrap();
    cfg.validate().unwrap();
    assert!(cfg.data_dir.is_absolute());
    for t in builtin_templates() {
        t.build().unwrap();
    }
}

#[test]
fn env_overrides() {
    let mut cfg = Config::dev("/tmp/x");
    let vars = [
        ("VAULT_LISTEN", "127.0.0.1:6000"),
        ("VAULT_SYNCHRONOUS", "normal"),
        ("VAULT_MAX_CONCURRENT_CALLS", "3"),
    ];
    cfg.apply_vars(|k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    })
    .unwrap();
    assert_eq!(cfg.listen.port(), 6000);
    assert_eq!(cfg.synchronous, Synchronous::Normal);
    assert_eq!(cfg.limits.max_concurrent_calls, 3);
}

/// `vaultd serve --dev --data-dir D` with overrides in the environment: every one is
/// honoured (the bug: dev mode rebuilt its defaults for `D` and dropped them), the root key
/// file follows the data directory, and a flag that disagrees with its variable is refused.
#[test]
fn serve_keeps_every_override_with_dev_and_data_dir() {
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    };
    let vars: &[(&str, &str)] = &[
        ("VAULT_SYNCHRONOUS", "normal"),
        ("VAULT_MAX_CONCURRENT_CALLS", "7"),
        ("VAULT_REFLECTION", "false"),
        ("VAULT_NODE_ID", "n1"),
    ];
    let cfg = Config::for_serve_with(None, Some("/d".into()), None, env(vars)).unwrap();
    assert_eq!(cfg.data_dir, Path::new("/d"));
    assert_eq!(cfg.synchronous, Synchronous::Normal);
    assert_eq!(cfg.limits.max_concurrent_calls, 7);
    assert!(!cfg.reflection);
    assert_eq!(cfg.cluster.node_id.as_deref(), Some("n1"));
    assert_eq!(cfg.root_key_file.as_deref(), Some(Path::new("/d/root.key")));
    assert!(cfg.dev);

    let key: &[(&str, &str)] = &[("VAULT_ROOT_KEY_FILE", "/keys/root.key")];
    let cfg = Config::for_serve_with(None, Some("/d".into()), None, env(key)).unwrap();
    assert_eq!(
        cfg.root_key_file.as_deref(),
        Some(Path::new("/keys/root.key"))
    );

    // VAULT_DATA_DIR alone moves the whole dev vault, root key file included.
    let dir: &[(&str, &str)] = &[("VAULT_DATA_DIR", "/x")];
    let cfg = Config::for_serve_with(None, None, None, env(dir)).unwrap();
    assert_eq!(cfg.data_dir, Path::new("/x"));
    assert_eq!(cfg.root_key_file.as_deref(), Some(Path::new("/x/root.key")));
    // The same directory twice is fine; two different ones are refused.
    Config::for_serve_with(None, Some("/x".into()), None, env(dir)).unwrap();
    let err = Config::for_serve_with(None, Some("/d".into()), None, env(dir)).unwrap_err();
    assert!(err.to_string().contains("VAULT_DATA_DIR"), "{err}");

    let listen: &[(&str, &str)] = &[("VAULT_LISTEN", "127.0.0.1:7000")];
    let cfg = Config::for_serve_with(None, None, None, env(listen)).unwrap();
    assert_eq!(cfg.listen.port(), 7000);
    let err = Config::for_serve_with(
        None,
        None,
        Some("127.0.0.1:7001".parse().unwrap()),
        env(listen),
    )
    .unwrap_err();
    assert!(err.to_string().contains("VAULT_LISTEN"), "{err}");
}

#[test]
fn database_url_is_redacted() {
    let u = DatabaseUrl::new("postgres://vault:s3cret@db.internal:5432/vault");
    assert_eq!(
        format!("{u:?}"),
        "postgres://vault:***@db.internal:5432/vault"
    );
    let q =
        DatabaseUrl::new("postgres://db.internal/vault?user=vault&password=s3cret&sslmode=require");
    assert_eq!(
        q.redacted(),
        "postgres://db.internal/vault?user=vault&password=***&sslmode=require"
    );
    let mut cfg = Config::dev("/tmp/x");
    cfg.database.url = Some(u);
    assert!(!format!("{cfg:?}").contains("s3cret"));
    cfg.validate().unwrap();
    cfg.database.url = Some(DatabaseUrl::new("mysql://x"));
    assert!(cfg.validate().is_err());
}

#[test]
fn plaintext_rules() {
    let mut cfg = Config::dev("/tmp/x");
    cfg.listen = "0.0.0.0:1".parse().unwrap();
    assert!(cfg.validate().is_err());
    let mut cfg = Config::dev("/tmp/x");
    cfg.dev = false;
    cfg.allow_plaintext_loopback = false;
    cfg.policy = Some("p.toml".into());
    assert!(cfg.validate().is_err());
}

/// A card code is never format-preserving encrypted (PCI DSS: never stored, and no FF1 domain
/// that small): `kind = "cvv"` is volatile or refused; volatile limits are bounded.
#[test]
fn cvv_is_volatile_or_refused() {
    let mut t = builtin_templates()
        .into_iter()
        .find(|t| t.name == "cvv")
        .unwrap();
    assert!(t.build().is_ok());
    for mode in ["fpe", "vaulted"] {
        t.mode = mode.into();
        let e = t.build().unwrap_err().to_string();
        assert!(e.contains("volatile"), "{mode}: {e}");
    }
    t.mode = "volatile".into();
    t.default_ttl_secs = Some(3601);
    assert!(t.build().is_err());
    t.default_ttl_secs = None;
    t.max_reveals = Some(11);
    assert!(t.build().is_err());
}
