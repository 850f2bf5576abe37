//! `[hsm]`: the PKCS#11 module, token and key that wrap the root key (types and checks only;
//! the device code is `crate::hsm`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// Where the root key's wrapping key lives.
///
/// ```toml
/// [hsm]
/// module = "/usr/lib/softhsm/libsofthsm2.so"
/// token_label = "vault"          # or: slot = 0
/// key_label = "vault-root"
/// pin_file = "/etc/vault/hsm.pin" # or: pin_env = "VAULT_HSM_PIN"
/// ```
///
/// The PIN is read from a file (mode 0600/0400) or an environment variable, never from the
/// command line or this file: a PIN in argv is visible in `ps`, and a config file is often
/// copied around.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Hsm {
    /// The PKCS#11 module (shared library) to load.
    pub module: PathBuf,
    /// The token, by its label (preferred: slot numbers can change when devices are added).
    #[serde(default)]
    pub token_label: Option<String>,
    /// The token, by slot id.
    #[serde(default)]
    pub slot: Option<u64>,
    /// The label (`CKA_LABEL`) of the AES key that wraps the root key.
    pub key_label: String,
    /// A file holding the user PIN (one line).
    #[serde(default)]
    pub pin_file: Option<PathBuf>,
    /// The environment variable holding the user PIN.
    #[serde(default)]
    pub pin_env: Option<String>,
}

impl Hsm {
    /// Exactly one token selector and one PIN source; a key label.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            key: format!("hsm.{key}"),
            message: message.into(),
        };
        if self.token_label.is_some() == self.slot.is_some() {
            return Err(invalid(
                "token_label",
                "give exactly one of token_label and slot",
            ));
        }
        if self.pin_file.is_some() == self.pin_env.is_some() {
            return Err(invalid(
                "pin_file",
                "give exactly one of pin_file and pin_env",
            ));
        }
        if self.key_label.is_empty() {
            return Err(invalid("key_label", "must not be empty"));
        }
        Ok(())
    }

    /// Relative paths resolve against the config file's directory.
    pub(crate) fn resolve(&mut self, base: &Path) {
        // A bare library name (no slash) is left to the dynamic loader's search path.
        if self.module.is_relative() && self.module.components().count() > 1 {
            self.module = base.join(&self.module);
        }
        if let Some(p) = self.pin_file.as_mut()
            && p.is_relative()
        {
            *p = base.join(&*p);
        }
    }
}
