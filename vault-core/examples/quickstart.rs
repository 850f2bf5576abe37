//! A Rust program that links `vault-core` on its own: create a vault file, tokenize and
//! detokenize (FPE and vaulted), rotate, rewrap, retire, reopen and unseal.
//!
//! `cargo run -p vault-core --example quickstart -- /tmp/quickstart.db`

#![allow(clippy::print_stdout)] // an example prints what it does

use std::sync::Arc;

use vault_core::secret::Key32;
use vault_core::store::sqlite::{Options, SqliteStore};
use vault_core::template::Template;
use vault_core::vault::{Mode, RootInit, TemplateConfig, TokenShape, Vault};

fn templates() -> Vec<TemplateConfig> {
    vec![
        // Format-preserving: nothing stored, the token looks like a card number (fails Luhn).
        TemplateConfig::new(Template::builtin("pan").expect("built-in"), Mode::Fpe),
        // Vaulted: the value is stored encrypted; the token carries nothing about it.
        TemplateConfig::new(
            Template::pan("card", 6, 4).expect("valid template"),
            Mode::Vaulted {
                deterministic: false,
                shape: TokenShape::Opaque,
            },
        ),
    ]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "quickstart.db".to_owned());
    let _ = std::fs::remove_file(&path);
    let store = Arc::new(SqliteStore::create(&path, &Options::default())?);
    // In production the root key comes from a passphrase, a 0600 key file or Shamir shares.
    let (vault, _shares) = Vault::create(store, templates(), RootInit::Key(Key32::generate()?))?;

    let fpe = vault.tokenize("pan", "4111 1111 1111 1111")?;
    println!("FPE token:     {}", fpe.token);
    let vaulted = vault.tokenize("card", "4111 1111 1111 1111")?;
    println!("vaulted token: {}", vaulted.token);
    println!(
        "masked reveal: {}",
        vault.reveal("card", &vaulted.token, None)?
    );
    let back = vault.detokenize("card", &vaulted.token, None)?;
    println!("detokenized under data key version {}", back.key_version);

    // Rotate the data key, move every record to the new version, retire the old one.
    vault.rotate("data/card")?;
    let job = vault.rewrap_start("card")?;
    let job = vault.rewrap_run(job.id, 1000, &mut |_| true)?;
    println!(
        "rewrap job {} {:?}: {} records",
        job.id, job.state, job.processed
    );
    vault.retire("data/card", 1)?;
    assert_eq!(
        *vault.detokenize("card", &vaulted.token, None)?.value,
        *back.value
    );
    println!("version 1 retired; the token still detokenizes under version 2");
    Ok(())
}
