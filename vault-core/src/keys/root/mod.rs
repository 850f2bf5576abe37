//! The root key: where it comes from, and how a wrong one is caught.
//!
//! Three sources, all ending in a [`Key32`]:
//! - a passphrase stretched with Argon2id ([`KdfParams`], [`from_passphrase`]),
//! - a raw 32-byte key from a file ([`from_file`]) or an environment variable ([`from_env`]),
//! - m-of-n Shamir shares held by separate custodians ([`shares`]), for split knowledge and dual
//!   control (PCI DSS 4.0 §3.7.6),
//! - a random key wrapped by a device that never exports its own key, an HSM ([`wrapped`]).
//!
//! Whatever the source, [`verify`] checks the key against the vault's check record before any
//! wrapped key is touched, so a wrong key is reported as [`KeyError::WrongRootKey`] rather than
//! as a corrupt key table.

pub mod shares;
pub mod wrapped;

use std::path::Path;

use zeroize::Zeroizing;

use super::KeyError;
use crate::aead::{Gcm, NONCE, TAG};
use crate::encoding::put_field;
use crate::secret::{ExposeSecret, Key32, SecretString, fill_random};

/// Metadata key (`Store::meta_get`) of the root-key check record.
pub const META_CHECK: &str = "root_check";
/// Metadata key of the encoded [`KdfParams`] (passphrase vaults only).
pub const META_KDF: &str = "root_kdf";
/// Metadata key of the encoded [`shares::ShareSet`] (shared-root vaults only).
pub const META_SHARES: &str = "root_shares";

// ----- Argon2id -----

/// Argon2id parameters, stored with the vault so the same passphrase gives the same key.
///
/// Defaults ([`KdfParams::generate`]): RFC 9106 §4's second recommended option, m = 64 MiB,
/// t = 3, p = 4, with a 128-bit random salt. Measured on the project's 2-core machine
/// (`benches/envelope.rs`, lanes computed one after another): about 0.14 s per derivation,
/// against about 0.024 s for OWASP's minimum (m = 19 MiB, t = 2, p = 1, the `argon2` crate's
/// default). The root key is derived once per
/// unseal, so the stronger setting costs nothing that matters, and every guess at a stolen
/// vault file costs an attacker 64 MiB and ~6x the work. RFC 9106's first option (2 GiB) would
/// not fit beside the daemon on small hosts.
#[derive(Clone, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
    /// Random salt (16 bytes by default; 8 to 64 accepted).
    pub salt: Vec<u8>,
}

/// Encoding version of [`KdfParams::encode`].
const KDF_FORMAT: u8 = 1;
/// Algorithm id for Argon2id v1.3 in the encoding (room for another KDF later).
const KDF_ARGON2ID: u8 = 1;
/// Upper bounds on decoded parameters: a tampered vault file must not make unseal allocate
/// terabytes or spin for hours.
const MAX_M_COST: u32 = 4 * 1024 * 1024; // 4 GiB
const MAX_T_COST: u32 = 64;
const MAX_P_COST: u32 = 64;

impl KdfParams {
    /// RFC 9106 §4, second recommended option: 64 MiB.
    pub const DEFAULT_M_COST: u32 = 64 * 1024;
    /// RFC 9106 §4, second recommended option: 3 passes.
    pub const DEFAULT_T_COST: u32 = 3;
    /// RFC 9106 §4, second recommended option: 4 lanes.
    pub const DEFAULT_P_COST: u32 = 4;

    /// The default parameters with a fresh random 128-bit salt (RFC 9106 §3.1).
    pub fn generate() -> Result<Self, KeyError> {
        Self::with_costs(
            Self::DEFAULT_M_COST,
            Self::DEFAULT_T_COST,
            Self::DEFAULT_P_COST,
        )
    }

    /// Given costs with a fresh random 128-bit salt (small costs are for tests).
    pub fn with_costs(m_cost: u32, t_cost: u32, p_cost: u32) -> Result<Self, KeyError> {
        let mut salt = vec![0u8; 16];
        fill_random(&mut salt)?;
        let params = Self {
            m_cost,
            t_cost,
            p_cost,
            salt,
        };
        params.check()?;
        Ok(params)
    }

    /// `[format 1][alg 1][m u32 BE][t u32 BE][p u32 BE][salt len u8][salt]`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.salt.len());
        out.push(KDF_FORMAT);
        out.push(KDF_ARGON2ID);
        out.extend_from_slice(&self.m_cost.to_be_bytes());
        out.extend_from_slice(&self.t_cost.to_be_bytes());
        out.extend_from_slice(&self.p_cost.to_be_bytes());
        // `check` bounds the salt to 64 bytes; saturate rather than truncate silently.
        out.push(u8::try_from(self.salt.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(&self.salt);
        out
    }

    /// Strict inverse of [`KdfParams::encode`], with bounds on every cost.
    pub fn decode(bytes: &[u8]) -> Result<Self, KeyError> {
        let bad = |reason| KeyError::KdfParameters { reason };
        let (head, salt) = bytes.split_at_checked(15).ok_or(bad("too short"))?;
        if head[0] != KDF_FORMAT {
            return Err(bad("unknown format version"));
        }
        if head[1] != KDF_ARGON2ID {
            return Err(bad("unknown algorithm"));
        }
        let u32_at =
            |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        if usize::from(head[14]) != salt.len() {
            return Err(bad("salt length does not match"));
        }
        let params = Self {
            m_cost: u32_at(2),
            t_cost: u32_at(6),
            p_cost: u32_at(10),
            salt: salt.to_vec(),
        };
        params.check()?;
        Ok(params)
    }

    fn check(&self) -> Result<(), KeyError> {
        let bad = |reason| Err(KeyError::KdfParameters { reason });
        if !(8..=64).contains(&self.salt.len()) {
            return bad("salt must be 8 to 64 bytes");
        }
        if !(1..=MAX_P_COST).contains(&self.p_cost) {
            return bad("lanes out of range");
        }
        if !(1..=MAX_T_COST).contains(&self.t_cost) {
            return bad("passes out of range");
        }
        if self.m_cost < 8 * self.p_cost || self.m_cost > MAX_M_COST {
            return bad("memory out of range");
        }
        Ok(())
    }
}

impl std::fmt::Debug for KdfParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KdfParams")
            .field("m_cost", &self.m_cost)
            .field("t_cost", &self.t_cost)
            .field("p_cost", &self.p_cost)
            .finish_non_exhaustive()
    }
}

/// Stretches a passphrase into the root key with Argon2id (RFC 9106). Whether the passphrase is
/// right is found out by [`verify`], not here.
pub fn from_passphrase(passphrase: &SecretString, params: &KdfParams) -> Result<Key32, KeyError> {
    params.check()?;
    let argon_params = argon2::Params::new(params.m_cost, params.t_cost, params.p_cost, Some(32))
        .map_err(|_| KeyError::KdfParameters {
        reason: "rejected by argon2",
    })?;
    let argon = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon_params,
    );
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(
            passphrase.expose_secret().as_bytes(),
            &params.salt,
            &mut *out,
        )
        .map_err(|_| KeyError::Kdf)?;
    Ok(Key32::from_bytes(&mut out))
}

// ----- raw keys -----

/// Reads a raw root key from a file: exactly 32 bytes, or 64 hex digits (surrounding
/// whitespace allowed).
///
/// On Unix the file must not be accessible to group or others (mode `600` or `400`), as
/// OpenSSH insists for private keys: a key file anyone on the host can read is not a secret,
/// and refusing to start is the only way the operator learns of it.
pub fn from_file(path: &Path) -> Result<Key32, KeyError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(KeyError::KeyFile)?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::KeyFilePermissions { mode });
        }
    }
    let bytes = Zeroizing::new(std::fs::read(path).map_err(KeyError::KeyFile)?);
    if bytes.len() == 32 {
        return Key32::from_slice(&bytes).ok_or(KeyError::RootKeyFormat {
            reason: "not 32 bytes",
        });
    }
    from_hex_bytes(bytes.trim_ascii())
}

/// Reads a root key as 64 hex digits from an environment variable. The variable's copy in the
/// process environment cannot be wiped from safe code: prefer [`from_file`] or a passphrase, and
/// start the daemon so the variable is not inherited by children.
pub fn from_env(name: &str) -> Result<Key32, KeyError> {
    let value = std::env::var_os(name)
        .and_then(|v| v.into_string().ok())
        .map(Zeroizing::new)
        .ok_or_else(|| KeyError::KeyEnvMissing {
            name: name.to_owned(),
        })?;
    from_hex_bytes(value.trim().as_bytes())
}

/// Parses 64 hex digits (either case).
pub fn from_hex(hex: &SecretString) -> Result<Key32, KeyError> {
    from_hex_bytes(hex.expose_secret().trim().as_bytes())
}

fn from_hex_bytes(hex: &[u8]) -> Result<Key32, KeyError> {
    if hex.len() != 64 {
        return Err(KeyError::RootKeyFormat {
            reason: "expected 32 raw bytes or 64 hex digits",
        });
    }
    let mut out = Zeroizing::new([0u8; 32]);
    decode_hex(hex, &mut *out).ok_or(KeyError::RootKeyFormat {
        reason: "not hexadecimal",
    })?;
    Ok(Key32::from_bytes(&mut out))
}

/// Hex decoding without lookup tables indexed by secret digits; `None` if any digit is bad.
pub(crate) fn decode_hex(hex: &[u8], out: &mut [u8]) -> Option<()> {
    if hex.len() != 2 * out.len() {
        return None;
    }
    let mut ok = true;
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let (hi, hi_ok) = nibble(pair[0]);
        let (lo, lo_ok) = nibble(pair[1]);
        ok &= hi_ok & lo_ok;
        *byte = (hi << 4) | lo;
    }
    ok.then_some(())
}

fn nibble(c: u8) -> (u8, bool) {
    let lower = c | 0x20;
    let digit = c.wrapping_sub(b'0');
    let letter = lower.wrapping_sub(b'a').wrapping_add(10);
    let is_digit = digit < 10;
    let is_letter = (10..16).contains(&letter);
    let value = if is_digit { digit } else { letter };
    (value & 0x0f, is_digit | is_letter)
}

/// Lowercase hex.
pub(crate) fn encode_hex(bytes: &[u8], out: &mut String) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

// ----- check record -----

/// Version byte of the check record.
const CHECK_FORMAT: u8 = 1;
/// The constant the check record encrypts.
const CHECK_PLAINTEXT: &[u8; 32] = b"vault root key check record v1.\0";
const CHECK_DOMAIN: &[u8] = b"vault/root-check/v1";
/// Length of a check record.
pub const CHECK_LEN: usize = 1 + NONCE + CHECK_PLAINTEXT.len() + TAG;

fn check_aad(vault_id: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(32 + vault_id.len());
    put_field(&mut aad, CHECK_DOMAIN);
    put_field(&mut aad, vault_id);
    aad
}

/// The root-key check record: `[format 1][nonce 12][AES-256-GCM(constant) 32][tag 16]` under
/// the root key with AAD = vault id. Stored under [`META_CHECK`].
pub fn check_record(root: &Key32, vault_id: &[u8]) -> Result<Vec<u8>, KeyError> {
    let mut out = Vec::with_capacity(CHECK_LEN);
    out.push(CHECK_FORMAT);
    Gcm::new(root).seal_into(&check_aad(vault_id), CHECK_PLAINTEXT, &mut out)?;
    Ok(out)
}

/// Checks a root key against the vault's check record: [`KeyError::WrongRootKey`] if it does
/// not open it (GCM authentication is the whole test; nothing about the key is revealed).
pub fn verify(root: &Key32, vault_id: &[u8], record: &[u8]) -> Result<(), KeyError> {
    let Some((&CHECK_FORMAT, sealed)) = record.split_first() else {
        return Err(KeyError::CheckRecordFormat);
    };
    if record.len() != CHECK_LEN {
        return Err(KeyError::CheckRecordFormat);
    }
    match Gcm::new(root).open(&check_aad(vault_id), sealed) {
        Some(plain) if plain.as_slice() == CHECK_PLAINTEXT => Ok(()),
        _ => Err(KeyError::WrongRootKey),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> KdfParams {
        KdfParams::with_costs(64, 1, 1).unwrap()
    }

    #[test]
    fn passphrase_is_deterministic_and_salted() {
        let params = small();
        let pw = SecretString::from("correct horse battery staple");
        let a = from_passphrase(&pw, &params).unwrap();
        let b = from_passphrase(&pw, &params).unwrap();
        assert_eq!(a.expose(), b.expose());
        let other =
            from_passphrase(&SecretString::from("correct horse battery stapl"), &params).unwrap();
        assert_ne!(a.expose(), other.expose());
        let resalted = from_passphrase(&pw, &small()).unwrap();
        assert_ne!(a.expose(), resalted.expose());
        let decoded = KdfParams::decode(&params.encode()).unwrap();
        assert_eq!(decoded, params);
        assert_eq!(from_passphrase(&pw, &decoded).unwrap().expose(), a.expose());
    }

    #[test]
    fn argon2id_known_answer() {
        // RFC 9106 §5.3 uses secret and associated data, which this API does not; instead pin
        // the output for fixed inputs so a change of algorithm, version or encoding is caught.
        let params = KdfParams {
            m_cost: 32,
            t_cost: 3,
            p_cost: 4,
            salt: vec![2u8; 16],
        };
        let key = from_passphrase(&SecretString::from("\u{1}".repeat(32)), &params).unwrap();
        let mut hex = String::new();
        encode_hex(key.expose(), &mut hex);
        assert_eq!(hex, ARGON2ID_PIN);
    }

    /// Argon2id(P = 0x01×32, S = 0x02×16, m = 32, t = 3, p = 4, tag 32), no secret/AD. The
    /// same as RFC 9106 §5.3's inputs minus K and X; cross-checked with the reference C
    /// implementation through argon2-cffi 25.1 (`hash_secret_raw(b'\x01'*32, b'\x02'*16,
    /// time_cost=3, memory_cost=32, parallelism=4, hash_len=32, type=Type.ID, version=19)`).
    const ARGON2ID_PIN: &str = "03aab965c12001c9d7d0d2de33192c0494b684bb148196d73c1df1acaf6d0c2e";

    #[test]
    fn kdf_params_decoding_is_strict() {
        let good = small().encode();
        assert!(KdfParams::decode(&good).is_ok());
        for cut in 0..good.len() {
            assert!(KdfParams::decode(&good[..cut]).is_err(), "cut {cut}");
        }
        let mut extra = good.clone();
        extra.push(0);
        assert!(KdfParams::decode(&extra).is_err());
        let mut version = good.clone();
        version[0] = 2;
        assert!(KdfParams::decode(&version).is_err());
        let mut huge = good.clone();
        huge[2..6].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(KdfParams::decode(&huge).is_err());
        let mut zero_t = good;
        zero_t[6..10].copy_from_slice(&0u32.to_be_bytes());
        assert!(KdfParams::decode(&zero_t).is_err());
    }

    #[test]
    fn check_record_accepts_the_right_key_only() {
        let root = Key32::generate().unwrap();
        let record = check_record(&root, b"vault-1").unwrap();
        assert_eq!(record.len(), CHECK_LEN);
        verify(&root, b"vault-1", &record).unwrap();
        let wrong = Key32::generate().unwrap();
        assert!(matches!(
            verify(&wrong, b"vault-1", &record),
            Err(KeyError::WrongRootKey)
        ));
        assert!(matches!(
            verify(&root, b"vault-2", &record),
            Err(KeyError::WrongRootKey)
        ));
        let mut flipped = record.clone();
        flipped[20] ^= 1;
        assert!(matches!(
            verify(&root, b"vault-1", &flipped),
            Err(KeyError::WrongRootKey)
        ));
        assert!(matches!(
            verify(&root, b"vault-1", &record[..CHECK_LEN - 1]),
            Err(KeyError::CheckRecordFormat)
        ));
        assert_eq!(
            verify(&wrong, b"vault-1", &record).unwrap_err().to_string(),
            "wrong root key"
        );
    }

    #[test]
    fn hex_keys() {
        let hex = "00112233445566778899aabbccddeeffFFEEDDCCBBAA99887766554433221100";
        let key = from_hex(&SecretString::from(format!("  {hex}\n"))).unwrap();
        assert_eq!(key.expose()[..3], [0x00, 0x11, 0x22]);
        assert_eq!(key.expose()[16], 0xff);
        for bad in [
            &hex[..62],
            "zz112233445566778899aabbccddeeffFFEEDDCCBBAA99887766554433221100",
        ] {
            let err = from_hex(&SecretString::from(bad)).unwrap_err();
            assert!(matches!(err, KeyError::RootKeyFormat { .. }));
            assert!(!err.to_string().contains("1122"));
        }
        let mut out = [0u8; 1];
        for c in 0..=255u8 {
            let ok = c.is_ascii_hexdigit();
            assert_eq!(decode_hex(&[c, b'0'], &mut out).is_some(), ok, "{c}");
        }
    }

    #[test]
    fn key_files() {
        let dir = std::env::temp_dir().join(format!("vault-keys-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let raw = dir.join("raw.key");
        let hex = dir.join("hex.key");
        std::fs::write(&raw, [9u8; 32]).unwrap();
        std::fs::write(&hex, format!("{}\n", "09".repeat(32))).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for p in [&raw, &hex] {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
        }
        assert_eq!(from_file(&raw).unwrap().expose(), &[9u8; 32]);
        assert_eq!(from_file(&hex).unwrap().expose(), &[9u8; 32]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&raw, std::fs::Permissions::from_mode(0o640)).unwrap();
            assert!(matches!(
                from_file(&raw),
                Err(KeyError::KeyFilePermissions { mode: 0o640 })
            ));
        }
        assert!(matches!(
            from_file(&dir.join("missing")),
            Err(KeyError::KeyFile(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn env_keys() {
        // A variable name no other test uses; reading only, so no `set_var` (unsafe in 2024).
        assert!(matches!(
            from_env("VAULT_TEST_SURELY_UNSET_ROOT_KEY"),
            Err(KeyError::KeyEnvMissing { .. })
        ));
    }

    #[test]
    fn debug_shows_no_salt() {
        let p = small();
        let s = format!("{p:?}");
        assert!(s.contains("m_cost") && !s.contains("salt"), "{s}");
    }
}
