//! The root key wrapped by an AES key inside an HSM, over PKCS#11 (`cryptoki`, the Parsec
//! project's binding).
//!
//! The wrapping key is an AES-256 secret key object on the token with `CKA_SENSITIVE` true and
//! `CKA_EXTRACTABLE` false: its bytes never leave the device, so whoever can read the vault's
//! files and this host's configuration still needs the device (and its PIN) to unseal. The root
//! key is encrypted with `CKM_AES_GCM` inside the token: a fresh 96-bit IV from our RNG (not
//! the token's, which SoftHSM and some devices do not fill in), the vault id as associated
//! data, a 128-bit tag. Stored: `[version 1][iv 12][ciphertext 32][tag 16]`.
//!
//! Every wrap and unwrap opens a session, logs in, finds the key, checks its attributes and
//! closes the session: the daemon unwraps once per unseal, so nothing is kept open between
//! them and a token pulled out meanwhile is found out at the next unseal, not by a stale
//! handle.
//!
//! A PKCS#11 library may be initialised once per process, so loaded modules are kept for the
//! process's life in one table ([`module`]), shared by every daemon a process starts.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use vault_core::keys::KeyError;
use vault_core::keys::root::wrapped::RootWrapper;
use zeroize::Zeroizing;

use crate::config::hsm::Hsm;

/// Version byte of the stored wrapping.
const FORMAT: u8 = 1;
const IV: usize = 12;
const TAG_BITS: u64 = 128;

/// The root-key wrapper on a PKCS#11 token.
pub struct Pkcs11Root {
    ctx: Pkcs11,
    slot: Slot,
    token: String,
    key_label: String,
    pin: AuthPin,
}

impl std::fmt::Debug for Pkcs11Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Root")
            .field("token", &self.token)
            .field("key_label", &self.key_label)
            .finish_non_exhaustive()
    }
}

/// A failure, with what failed in words: never a PIN or key bytes.
fn fail(reason: impl Into<String>) -> KeyError {
    KeyError::Wrapper {
        reason: reason.into(),
    }
}

/// `C_Login: PinIncorrect` rather than the binding's paragraph-long text.
fn describe(step: &str, e: &P11Error) -> KeyError {
    match e {
        P11Error::Pkcs11(rv, function) => fail(format!("{step}: {function} returned {rv:?}")),
        P11Error::LibraryLoading(e) => fail(format!("{step}: cannot load the module: {e}")),
        e => fail(format!("{step}: {e}")),
    }
}

/// The process's loaded PKCS#11 modules, by path, initialised once.
fn module(path: &Path) -> Result<Pkcs11, KeyError> {
    static MODULES: OnceLock<Mutex<Vec<(PathBuf, Pkcs11)>>> = OnceLock::new();
    let mut modules = MODULES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some((_, ctx)) = modules.iter().find(|(p, _)| p == path) {
        return Ok(ctx.clone());
    }
    let what = format!("PKCS#11 module {}", path.display());
    let ctx = Pkcs11::new(path).map_err(|e| describe(&what, &e))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(describe(&what, &e)),
    }
    modules.push((path.to_owned(), ctx.clone()));
    Ok(ctx)
}

/// Reads the PIN from its file (not readable by group or others) or variable.
fn read_pin(cfg: &Hsm) -> Result<AuthPin, KeyError> {
    let text = if let Some(path) = &cfg.pin_file {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(path)
                .map_err(|e| fail(format!("PIN file {}: {e}", path.display())))?;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(fail(format!(
                    "PIN file {} has mode {mode:o}: chmod 600 or 400",
                    path.display()
                )));
            }
        }
        Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| fail(format!("PIN file {}: {e}", path.display())))?,
        )
    } else if let Some(name) = &cfg.pin_env {
        Zeroizing::new(
            std::env::var(name).map_err(|_| fail(format!("the PIN variable {name} is not set")))?,
        )
    } else {
        return Err(fail("no PIN source (pin_file or pin_env)"));
    };
    let pin = text.trim_end_matches(['\r', '\n']);
    if pin.is_empty() {
        return Err(fail("the PIN is empty"));
    }
    Ok(AuthPin::from(pin.to_owned()))
}

impl Pkcs11Root {
    /// The key's name as stored with the vault (`pkcs11:token=…;object=…`).
    pub fn key_ref_text(&self) -> String {
        self.key_ref()
    }

    /// Loads the module, finds the token and reads the PIN. The key itself is looked up at
    /// each use.
    pub fn open(cfg: &Hsm) -> Result<Pkcs11Root, KeyError> {
        let ctx = module(&cfg.module)?;
        let slots = ctx
            .get_slots_with_token()
            .map_err(|e| describe("listing slots", &e))?;
        let (slot, token) = match (&cfg.token_label, cfg.slot) {
            (Some(label), _) => {
                let mut found = None;
                for slot in slots {
                    let info = ctx
                        .get_token_info(slot)
                        .map_err(|e| describe("reading token info", &e))?;
                    if info.label().trim_end() == label {
                        found = Some(slot);
                        break;
                    }
                }
                let slot = found.ok_or_else(|| fail(format!("no token labelled {label:?}")))?;
                (slot, label.clone())
            }
            (None, Some(id)) => {
                let slot = slots
                    .into_iter()
                    .find(|s| s.id() == id)
                    .ok_or_else(|| fail(format!("no token in slot {id}")))?;
                let label = ctx
                    .get_token_info(slot)
                    .map_err(|e| describe("reading token info", &e))?
                    .label()
                    .trim_end()
                    .to_owned();
                (slot, label)
            }
            (None, None) => return Err(fail("no token_label or slot")),
        };
        Ok(Pkcs11Root {
            ctx,
            slot,
            token,
            key_label: cfg.key_label.clone(),
            pin: read_pin(cfg)?,
        })
    }

    /// A logged-in read-write session (read-write: creating the key needs it).
    fn session(&self) -> Result<Session, KeyError> {
        let session = self
            .ctx
            .open_rw_session(self.slot)
            .map_err(|e| describe("opening a session", &e))?;
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(e) => Err(describe("logging in to the token", &e)),
        }
    }

    fn find(&self, session: &Session) -> Result<Option<ObjectHandle>, KeyError> {
        let found = session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(self.key_label.as_bytes().to_vec()),
            ])
            .map_err(|e| describe("finding the key", &e))?;
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            _ => Err(fail(format!(
                "{} keys are labelled {:?} on token {:?}: the label must name one",
                found.len(),
                self.key_label,
                self.token
            ))),
        }
    }

    /// The key, refused unless it is an AES key that can neither be read nor exported.
    fn key(&self, session: &Session) -> Result<ObjectHandle, KeyError> {
        let key = self.find(session)?.ok_or_else(|| {
            fail(format!(
                "no key labelled {:?} on token {:?}",
                self.key_label, self.token
            ))
        })?;
        let attrs = session
            .get_attributes(
                key,
                &[
                    AttributeType::KeyType,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                ],
            )
            .map_err(|e| describe("reading the key's attributes", &e))?;
        let (mut aes, mut sensitive, mut extractable) = (false, false, true);
        for a in attrs {
            match a {
                Attribute::KeyType(t) => aes = t == KeyType::AES,
                Attribute::Sensitive(v) => sensitive = v,
                Attribute::Extractable(v) => extractable = v,
                _ => {}
            }
        }
        if !aes || !sensitive || extractable {
            return Err(fail(format!(
                "key {:?} must be an AES key with CKA_SENSITIVE true and CKA_EXTRACTABLE \
                 false (found AES {aes}, sensitive {sensitive}, extractable {extractable})",
                self.key_label
            )));
        }
        Ok(key)
    }

    /// Creates the wrapping key on the token (AES-256, sensitive, not extractable, a token
    /// object). Returns false if a key with the label exists already (it is left as it is).
    pub fn create_key(&self) -> Result<bool, KeyError> {
        let session = self.session()?;
        if self.find(&session)?.is_some() {
            self.key(&session)?;
            return Ok(false);
        }
        session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::ValueLen(32.into()),
                    Attribute::Label(self.key_label.as_bytes().to_vec()),
                ],
            )
            .map_err(|e| describe("generating the key", &e))?;
        Ok(true)
    }
}

impl RootWrapper for Pkcs11Root {
    fn key_ref(&self) -> String {
        // RFC 7512's attribute names; values as configured (no percent-encoding needed to
        // compare them).
        format!("pkcs11:token={};object={}", self.token, self.key_label)
    }

    fn wrap(&self, root: &[u8; 32], aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        let session = self.session()?;
        let key = self.key(&session)?;
        let mut iv = [0u8; IV];
        getrandom::fill(&mut iv).map_err(|_| fail("the RNG failed"))?;
        let mut iv_param = iv;
        let params = GcmParams::new(&mut iv_param, aad, TAG_BITS.into())
            .map_err(|e| describe("GCM parameters", &e))?;
        let sealed = session
            .encrypt(&Mechanism::AesGcm(params), key, root)
            .map_err(|e| describe("wrapping the root key", &e))?;
        let mut out = Vec::with_capacity(1 + IV + sealed.len());
        out.push(FORMAT);
        out.extend_from_slice(&iv);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let (&format, rest) = wrapped
            .split_first()
            .ok_or_else(|| fail("the stored wrapping is empty"))?;
        if format != FORMAT {
            return Err(fail("the stored wrapping has an unknown version"));
        }
        let (iv, sealed) = rest
            .split_at_checked(IV)
            .ok_or_else(|| fail("the stored wrapping is truncated"))?;
        let session = self.session()?;
        let key = self.key(&session)?;
        let mut iv: [u8; IV] = iv
            .try_into()
            .map_err(|_| fail("the stored wrapping is truncated"))?;
        let params = GcmParams::new(&mut iv, aad, TAG_BITS.into())
            .map_err(|e| describe("GCM parameters", &e))?;
        let plain = session
            .decrypt(&Mechanism::AesGcm(params), key, sealed)
            .map_err(|e| describe("unwrapping the root key (another key, or tampered)", &e))?;
        Ok(Zeroizing::new(plain))
    }
}

/// Opens the configured HSM as a shareable wrapper.
pub fn open(cfg: &Hsm) -> Result<Arc<Pkcs11Root>, KeyError> {
    Pkcs11Root::open(cfg).map(Arc::new)
}

/// Unseals `vault` with the configured HSM.
pub fn unseal(cfg: &Hsm, vault: &vault_core::vault::Vault) -> Result<(), vault_core::vault::Error> {
    let wrapper = Pkcs11Root::open(cfg)?;
    vault.unseal_wrapped(&wrapper)
}
