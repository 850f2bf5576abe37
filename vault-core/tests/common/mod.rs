//! What the vault's integration tests share: the templates, a vault on a real SQLite file in a
//! temporary directory, and a clock the tests move.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use vault_core::secret::{Key32, SecretString};
use vault_core::store::sqlite::{Options, SqliteStore};
use vault_core::template::Template;
use vault_core::vault::{Mode, RootInit, TemplateConfig, TokenShape, Vault};

pub(crate) const PAN: &str = "4111 1111 1111 1111";
pub(crate) const PAN2: &str = "5500-0000-0000-0004";
pub(crate) const SSN: &str = "123-45-6789";
pub(crate) const EMAIL: &str = "jane.doe@example.com";

pub(crate) fn vaulted(det: bool, shape: TokenShape) -> Mode {
    Mode::Vaulted {
        deterministic: det,
        shape,
    }
}

/// Every built-in template in FPE mode, plus vaulted variants.
pub(crate) fn templates() -> Vec<TemplateConfig> {
    let b = |n: &str| Template::builtin(n).unwrap();
    let named = |kind: &str, name: &str| match kind {
        "pan" => Template::pan(name, 6, 4).unwrap(),
        other => {
            // Builtins under another name: same kind, own keys.
            let t = Template::builtin(other).unwrap();
            let _ = name;
            t
        }
    };
    vec![
        TemplateConfig::new(b("pan"), Mode::Fpe),
        TemplateConfig::new(b("ssn"), Mode::Fpe),
        TemplateConfig::new(b("digits"), Mode::Fpe),
        TemplateConfig::new(b("alphanumeric"), Mode::Fpe),
        TemplateConfig::new(b("email"), Mode::Fpe),
        TemplateConfig::new(
            named("pan", "pan_vault"),
            vaulted(false, TokenShape::Opaque),
        ),
        TemplateConfig::new(named("pan", "pan_det"), vaulted(true, TokenShape::Opaque)),
        TemplateConfig::new(
            named("pan", "pan_fmt"),
            vaulted(false, TokenShape::Formatted),
        ),
        TemplateConfig::new(
            named("pan", "pan_fmt_det"),
            vaulted(true, TokenShape::Formatted),
        ),
        TemplateConfig::new(
            b("ssn").renamed("ssn_vault").unwrap(),
            vaulted(false, TokenShape::Opaque),
        ),
        TemplateConfig::new(
            b("email").renamed("email_vault").unwrap(),
            vaulted(false, TokenShape::Formatted),
        ),
    ]
}

pub(crate) struct Fixture {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) path: PathBuf,
    pub(crate) clock: Arc<AtomicI64>,
}

impl Fixture {
    pub(crate) fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.db");
        Fixture {
            _dir: dir,
            path,
            clock: Arc::new(AtomicI64::new(1_800_000_000)),
        }
    }

    pub(crate) fn store(&self, create: bool) -> Arc<SqliteStore> {
        let opts = Options::default();
        Arc::new(if create {
            SqliteStore::create(&self.path, &opts).unwrap()
        } else {
            SqliteStore::open(&self.path, &opts).unwrap()
        })
    }

    pub(crate) fn clocked(&self, vault: Vault) -> Vault {
        let c = self.clock.clone();
        vault.with_clock(Arc::new(move || c.load(Ordering::SeqCst)))
    }

    /// A new vault unsealed with a raw key; returns the key's bytes (hex) to reopen.
    pub(crate) fn create(&self) -> (Vault, String) {
        let hex = "11".repeat(32);
        let key = vault_core::keys::root::from_hex(&SecretString::from(hex.clone())).unwrap();
        let (vault, shares) =
            Vault::create(self.store(true), templates(), RootInit::Key(key)).unwrap();
        assert!(shares.is_empty());
        (self.clocked(vault), hex)
    }

    pub(crate) fn reopen(&self, hex: &str) -> Vault {
        let vault = self.clocked(Vault::open(self.store(false), templates()).unwrap());
        assert!(vault.is_sealed());
        vault.unseal_key(key(hex)).unwrap();
        vault
    }
}

pub(crate) fn key(hex: &str) -> Key32 {
    vault_core::keys::root::from_hex(&SecretString::from(hex.to_owned())).unwrap()
}

/// A Luhn-valid 16-digit PAN built from `i`.
pub(crate) fn luhn_pan(i: u64) -> String {
    let body = format!("411111{:09}", i);
    let digits: Vec<u32> = body.chars().map(|c| c.to_digit(10).unwrap()).collect();
    let mut sum = 0;
    for (k, d) in digits.iter().rev().enumerate() {
        let mut x = *d;
        if k % 2 == 0 {
            x *= 2;
            if x > 9 {
                x -= 9;
            }
        }
        sum += x;
    }
    format!("{body}{}", (10 - sum % 10) % 10)
}
