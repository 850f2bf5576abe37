//! Fuzz targets for everything in the vault that parses untrusted input.
//!
//! Each target is a plain function of a byte slice, so the same code runs under libFuzzer
//! (`cargo fuzz run <target>`, the thin wrappers in `fuzz_targets/`) and under the stable
//! runner (`tests/stable.rs`, a mutation loop over the seeds in `seeds/<target>/`). A target
//! panics only on a real bug: a panic in the code under test, or a broken property (a round
//! trip that does not come back, a forged token that detokenizes, a tampered envelope that
//! opens). The `expect`s below are those property checks, or set-up that cannot fail on a
//! working machine (a temporary directory, the OS random number generator): each one failing
//! is a finding, which is why they panic rather than return.
//!
//! | target | what it feeds | properties checked |
//! |---|---|---|
//! | `ff1` | key, radix, tweak and numerals to `fpe::Ff1` | no panic; encrypt→decrypt round trip; same answer as the `fpe` crate; in-place equals allocating |
//! | `template` | custom templates (alphabet, regex pattern) and values, built-in templates | no panic in `Template::custom`, `canonicalize`, `encrypt`, `decrypt` (template token parsing), `version_slot`, `mask`; encrypt→decrypt round trip |
//! | `envelope` | stored-record bytes to `Envelope::parse` and `DataKey::open` | no panic; random bytes never open; a sealed record with one flipped byte never opens |
//! | `token` | token strings (random, and mutations of issued tokens) to `Vault::detokenize_batch` on every built-in template | no panic; on vaulted templates only an issued token, byte for byte, detokenizes, and to its own value |
//! | `policy` | policy TOML to `Policy::parse` | no panic |
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use vault_core::envelope::{DataKey, Envelope, MIN_LEN};
use vault_core::fpe::Ff1;
use vault_core::secret::Key32;
use vault_core::store::{Options, SqliteStore};
use vault_core::template::Template;
use vault_core::vault::{Mode, RootInit, TemplateConfig, TokenizeItem, Vault};
use vault_daemon::config::builtin_templates;
use vault_daemon::policy::{Policy, TemplateInfo};

/// A fuzz target: any bytes in, a panic only on a bug.
pub type Target = fn(&[u8]);

/// Every target by name, for the stable runner.
pub const TARGETS: &[(&str, Target)] = &[
    ("ff1", ff1),
    ("template", template),
    ("envelope", envelope),
    ("token", token),
    ("policy", policy),
];

/// Reads structured fields off the fuzzer's bytes; past the end it yields zeros.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) << 8 | u16::from(self.u8())
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    /// The bytes up to the next 0x00 (consumed), as lossy UTF-8.
    fn field(&mut self) -> String {
        let end = self
            .data
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.data.len());
        let f = String::from_utf8_lossy(&self.data[..end]).into_owned();
        self.data = self.data.get(end + 1..).unwrap_or(&[]);
        f
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// FF1 (SP 800-38G): any key length, radix, tweak and numerals.
pub fn ff1(data: &[u8]) {
    let mut r = Reader { data };
    let flags = r.u8();
    let key_len = match flags % 4 {
        0 => 16,
        1 => 24,
        2 => 32,
        _ => usize::from(r.u8() % 40),
    };
    let mut key = r.take(key_len).to_vec();
    key.resize(key_len, 0x5a);
    let radix = match (flags >> 2) % 4 {
        0 => 10,
        1 => 2 + u32::from(r.u8()) % 63,
        2 => u32::from(r.u16()),
        _ => u32::from(r.u16()) + (u32::from(r.u8() & 1) << 16),
    };
    let tweak_len = usize::from(r.u16()) % 1100;
    let tweak = r.take(tweak_len).to_vec();
    let wide = flags & 0x10 != 0;
    let raw = r.rest();
    let mut numerals: Vec<u16> = if wide {
        raw.chunks(2)
            .map(|c| u16::from(c[0]) << 8 | u16::from(*c.get(1).unwrap_or(&0)))
            .collect()
    } else {
        raw.iter().map(|&b| u16::from(b)).collect()
    };
    // Mostly valid numerals; sometimes leave them as they came, to exercise the checks.
    if flags & 0x20 == 0 && radix >= 2 {
        for n in &mut numerals {
            *n = (u32::from(*n) % radix.min(1 << 16)) as u16;
        }
    }
    let Ok(f) = Ff1::new(&key, radix) else { return };
    let Ok(ct) = f.encrypt(&tweak, &numerals) else {
        return;
    };
    assert_eq!(ct.len(), numerals.len(), "length preserved");
    assert!(
        ct.iter().all(|&n| u32::from(n) < radix),
        "numerals stay below the radix"
    );
    let pt = f.decrypt(&tweak, &ct).expect("a ciphertext decrypts");
    assert_eq!(pt, numerals, "round trip");
    let mut in_place = numerals.clone();
    f.encrypt_in_place(&tweak, &mut in_place)
        .expect("same input");
    assert_eq!(in_place, ct, "in place = allocating");
    if numerals.len() <= 64 {
        assert_eq!(
            reference(&key, radix, &tweak, &numerals),
            Some(ct),
            "differs from the fpe crate"
        );
    }
}

/// The `fpe` crate's ciphertext (`None` if it refuses the input).
fn reference(key: &[u8], radix: u32, tweak: &[u8], xs: &[u16]) -> Option<Vec<u16>> {
    use aes::{Aes128, Aes192, Aes256};
    use fpe::ff1::{FF1, FlexibleNumeralString};
    let ns = FlexibleNumeralString::from(xs.to_vec());
    macro_rules! with {
        ($c:ty) => {{
            let f = FF1::<$c>::new(key, radix).ok()?;
            f.encrypt(tweak, &ns).ok().map(Vec::from)
        }};
    }
    match key.len() {
        16 => with!(Aes128),
        24 => with!(Aes192),
        _ => with!(Aes256),
    }
}

/// Templates: custom ones from an alphabet and a pattern (regex), the built-ins, and values
/// and tokens through every operation.
pub fn template(data: &[u8]) {
    let mut r = Reader { data };
    let selector = r.u8();
    let version = u32::from(r.u8() % 12);
    let t = match selector % 4 {
        0 | 1 => {
            let name = r.field();
            let alphabet = r.field();
            let pattern = r.field();
            match Template::custom(&name, &alphabet, &pattern) {
                Ok(t) => t,
                Err(e) => {
                    // Errors name the rule, never echo a long input back.
                    let _ = e.to_string();
                    return;
                }
            }
        }
        2 => {
            let name = r.field();
            match Template::pan(&name, r.u8() % 10, r.u8() % 6) {
                Ok(t) => t,
                Err(_) => return,
            }
        }
        _ => {
            let names = ["pan", "ssn", "digits", "alphanumeric", "email"];
            Template::builtin(names[usize::from(selector / 4) % names.len()]).expect("built-in")
        }
    };
    let value = r.field();
    let Ok(f) = Ff1::new(&[7u8; 32], t.radix()) else {
        return;
    };
    let _ = t.canonicalize(&value);
    let _ = t.version_slot(&value);
    let _ = t.mask(&value);
    // The value read as a token: template token parsing.
    let _ = t.decrypt(&f, version, &value);
    if let Ok(token) = t.encrypt(&f, version, &value) {
        let back = t
            .decrypt(&f, version, &token)
            .expect("a token of this template decrypts");
        assert_eq!(*back, value, "round trip");
    }
}

/// The stored-record envelope: parsing any bytes, and opening them.
pub fn envelope(data: &[u8]) {
    static KEY: OnceLock<DataKey> = OnceLock::new();
    let key = KEY.get_or_init(|| DataKey::new(&Key32::generate().expect("OS RNG"), 1));
    if let Ok(e) = Envelope::parse(data) {
        assert!(e.key_version() != 0);
        assert_eq!(e.plaintext_len(), data.len() - MIN_LEN);
        let other = DataKey::new(&Key32::generate().expect("OS RNG"), e.key_version());
        assert!(other.open("pan", 1, data).is_err(), "random bytes opened");
    }
    // Seal the input as a plaintext, flip one byte, and it must not open.
    let mut r = Reader { data };
    let pos = usize::from(r.u16());
    let bit = 1u8 << (r.u8() % 8);
    let plaintext = r.rest();
    let mut sealed = key.seal("pan", 7, plaintext).expect("OS RNG");
    assert_eq!(
        key.open("pan", 7, &sealed).expect("opens").as_slice(),
        plaintext
    );
    assert!(
        key.open("pan", 8, &sealed).is_err(),
        "opened under another id"
    );
    assert!(
        key.open("ssn", 7, &sealed).is_err(),
        "opened under another template"
    );
    let i = pos % sealed.len();
    sealed[i] ^= bit;
    assert!(
        key.open("pan", 7, &sealed).is_err(),
        "tampered record opened"
    );
}

/// One vault for the `token` target: every built-in template, one issued token each.
struct TokenVault {
    _dir: tempfile::TempDir,
    vault: Vault,
    /// (template, vaulted, value, token)
    issued: Vec<(String, bool, String, String)>,
}

fn token_vault() -> &'static TokenVault {
    static V: OnceLock<TokenVault> = OnceLock::new();
    V.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let store =
            SqliteStore::create(dir.path().join("vault.db"), &Options::default()).expect("store");
        let templates: Vec<TemplateConfig> = builtin_templates()
            .iter()
            .map(|t| t.build().expect("built-in template"))
            .collect();
        let (vault, _) = Vault::create(
            Arc::new(store),
            templates.clone(),
            RootInit::Key(Key32::generate().expect("OS RNG")),
        )
        .expect("vault");
        let mut issued = Vec::new();
        let meta = BTreeMap::from([("owner".to_owned(), "alice".to_owned())]);
        for cfg in &templates {
            let name = cfg.template.name().to_owned();
            let value = match name.split('_').next().unwrap_or("") {
                "pan" => "4111111111111111",
                "ssn" => "123-45-6789",
                "digits" => "0123456789",
                "alphanumeric" => "abcDEF123456",
                "cvv" => "737",
                _ => "someone@example.com",
            };
            // Vaulted and volatile tokens are authenticated: only the issued one may resolve.
            let vaulted = matches!(cfg.mode, Mode::Vaulted { .. } | Mode::Volatile(_));
            let stored = matches!(cfg.mode, Mode::Vaulted { .. });
            let item = TokenizeItem {
                value,
                idempotency_key: None,
                metadata: stored.then_some(&meta),
                ttl_seconds: None,
            };
            let out = vault
                .tokenize_batch(&name, &[item])
                .expect("tokenize")
                .remove(0)
                .expect("token");
            issued.push((name, vaulted, value.to_owned(), out.token));
        }
        TokenVault {
            _dir: dir,
            vault,
            issued,
        }
    })
}

/// Token parsing on every template: opaque token decoding, formatted-token lookups, FPE token
/// parsing, fed random strings and mutations of issued tokens.
pub fn token(data: &[u8]) {
    let tv = token_vault();
    let mut r = Reader { data };
    let (template, vaulted, value, issued) = &tv.issued[usize::from(r.u8()) % tv.issued.len()];
    let how = r.u8();
    let token = match how % 3 {
        // A string of its own.
        0 => String::from_utf8_lossy(r.rest()).into_owned(),
        // The issued token with bytes XORed in at chosen positions (kept ASCII or not).
        1 => {
            let mut b = issued.clone().into_bytes();
            let edits = r.rest();
            for pair in edits.chunks(2) {
                let i = usize::from(pair[0]) % b.len();
                b[i] ^= *pair.get(1).unwrap_or(&1);
            }
            String::from_utf8_lossy(&b).into_owned()
        }
        // The issued token cut or extended.
        _ => {
            let cut = usize::from(r.u8()) % (issued.len() + 1);
            let mut s = issued[..cut].to_owned();
            s.push_str(&String::from_utf8_lossy(r.rest()));
            s
        }
    };
    let version = match how / 3 % 4 {
        0 => None,
        v => Some(u32::from(v)),
    };
    let Ok(mut results) = tv
        .vault
        .detokenize_batch(template, &[token.as_str()], version)
    else {
        return;
    };
    if let Ok(d) = results.remove(0)
        && *vaulted
    {
        assert_eq!(
            &token, issued,
            "an unissued string detokenized ({template})"
        );
        assert_eq!(d.value.as_str(), value, "wrong value ({template})");
    }
}

/// The policy file parser (TOML, scopes, conditions, networks, rates, issuers).
pub fn policy(data: &[u8]) {
    static INFOS: OnceLock<Vec<TemplateInfo>> = OnceLock::new();
    let infos = INFOS.get_or_init(|| builtin_templates().iter().map(|t| t.info()).collect());
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Key files name paths on this machine (`/dev/zero`...): reading them is the loader's
    // business, not the parser's.
    if text.contains("_file") {
        return;
    }
    if let Err(e) = Policy::parse(text, "fuzz", None, infos) {
        let _ = e.to_string();
    }
}
