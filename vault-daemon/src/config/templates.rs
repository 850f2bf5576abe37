//! Templates as configured (`[[templates]]`): what each builds into, and the built-in set.

use serde::Deserialize;
use vault_core::template::Template;
use vault_core::vault::{Mode as VaultMode, TemplateConfig, TokenShape};

use super::{ConfigError, invalid};
use crate::policy::{Mode as PolicyMode, TemplateInfo};

/// One template as configured.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    /// Template name (what callers pass).
    pub name: String,
    /// `pan`, `ssn`, `digits`, `alphanumeric`, `email`, `cvv` (3 or 4 digits) or `custom`.
    pub kind: String,
    /// `fpe`, `vaulted` or `volatile` (memory only, for a limited time and number of
    /// reveals: card verification codes; `vault_core::vault::volatile`).
    pub mode: String,
    /// Vaulted: `opaque` (default) or `formatted`.
    #[serde(default)]
    pub shape: Option<String>,
    /// Vaulted: same value, same token.
    #[serde(default)]
    pub deterministic: bool,
    /// `pan`: leading digits kept (at most 8; default 6).
    #[serde(default)]
    pub keep_first: Option<u8>,
    /// `pan`: trailing digits kept (at most 4; default 4).
    #[serde(default)]
    pub keep_last: Option<u8>,
    /// `custom`: the alphabet.
    #[serde(default)]
    pub alphabet: Option<String>,
    /// `custom`: the regex whose capture groups are encrypted.
    #[serde(default)]
    pub pattern: Option<String>,
    /// Vaulted: default expiry, seconds. Volatile: the lifetime (default 900, at most 3600).
    #[serde(default)]
    pub default_ttl_secs: Option<u64>,
    /// Volatile: reveals per token (default 1, at most 10).
    #[serde(default)]
    pub max_reveals: Option<u32>,
    /// log10 of the number of possible values, for the policy loader's guessing warning.
    /// Defaults by kind (custom: 6, which warns).
    #[serde(default)]
    pub domain_log10: Option<f64>,
}

impl TemplateSpec {
    fn simple(name: &str, kind: &str, mode: &str, shape: Option<&str>, det: bool) -> Self {
        TemplateSpec {
            name: name.into(),
            kind: kind.into(),
            mode: mode.into(),
            shape: shape.map(Into::into),
            deterministic: det,
            keep_first: None,
            keep_last: None,
            alphabet: None,
            pattern: None,
            default_ttl_secs: None,
            max_reveals: None,
            domain_log10: None,
        }
    }

    /// A vaulted template with opaque random tokens and every option at its default (for
    /// building a config in code; files use TOML).
    pub fn vaulted(name: &str, kind: &str) -> Self {
        TemplateSpec::simple(name, kind, "vaulted", Some("opaque"), false)
    }

    /// Build the vault's template.
    pub fn build(&self) -> Result<TemplateConfig, ConfigError> {
        let key = format!("templates.{}", self.name);
        let bad = |e: vault_core::template::Error| invalid(&key, e.to_string());
        let template = match self.kind.as_str() {
            "pan" => Template::pan(
                &self.name,
                self.keep_first.unwrap_or(6),
                self.keep_last.unwrap_or(4),
            )
            .map_err(bad)?,
            "ssn" | "digits" | "alphanumeric" | "email" => Template::builtin(&self.kind)
                .ok_or_else(|| invalid(&key, "unknown kind"))?
                .renamed(&self.name)
                .map_err(bad)?,
            // Three or four digits (a card's CVV, CVC or CID); no FPE domain that small.
            "cvv" => {
                if self.mode != "volatile" {
                    return Err(invalid(
                        &key,
                        "a `cvv` template is volatile (PCI DSS: never stored)",
                    ));
                }
                Template::short(&self.name, "0123456789", "^([0-9]{3,4})$").map_err(bad)?
            }
            "custom" => Template::custom(
                &self.name,
                self.alphabet
                    .as_deref()
                    .ok_or_else(|| invalid(&key, "custom needs `alphabet`"))?,
                self.pattern
                    .as_deref()
                    .ok_or_else(|| invalid(&key, "custom needs `pattern`"))?,
            )
            .map_err(bad)?,
            other => return Err(invalid(&key, format!("unknown kind `{other}`"))),
        };
        let mode = match self.mode.as_str() {
            "fpe" => {
                if self.shape.is_some() || self.deterministic {
                    return Err(invalid(
                        &key,
                        "`shape` and `deterministic` are for vaulted templates (FPE is always deterministic)",
                    ));
                }
                VaultMode::Fpe
            }
            "vaulted" => VaultMode::Vaulted {
                deterministic: self.deterministic,
                shape: match self.shape.as_deref().unwrap_or("opaque") {
                    "opaque" => TokenShape::Opaque,
                    "formatted" => TokenShape::Formatted,
                    other => return Err(invalid(&key, format!("unknown shape `{other}`"))),
                },
            },
            "volatile" => {
                if self.shape.is_some() || self.deterministic {
                    return Err(invalid(
                        &key,
                        "`shape` and `deterministic` are for vaulted templates (volatile tokens are random)",
                    ));
                }
                use vault_core::vault::volatile::{self, Limits};
                let ttl_secs = self.default_ttl_secs.unwrap_or(volatile::DEFAULT_TTL_SECS);
                if ttl_secs == 0 || ttl_secs > volatile::MAX_TTL_SECS {
                    return Err(invalid(
                        &key,
                        "`default_ttl_secs` of a volatile template: 1 to 3600",
                    ));
                }
                let uses = self.max_reveals.unwrap_or(1);
                if uses == 0 || uses > volatile::MAX_USES {
                    return Err(invalid(&key, "`max_reveals`: 1 to 10"));
                }
                VaultMode::Volatile(Limits { ttl_secs, uses })
            }
            other => return Err(invalid(&key, format!("unknown mode `{other}`"))),
        };
        if self.max_reveals.is_some() && self.mode != "volatile" {
            return Err(invalid(&key, "`max_reveals` is for volatile templates"));
        }
        let mut cfg = TemplateConfig::new(template, mode);
        if self.mode != "volatile" {
            cfg.default_ttl = self.default_ttl_secs;
        }
        Ok(cfg)
    }

    /// What the policy loader needs to know.
    pub fn info(&self) -> TemplateInfo {
        let domain = self.domain_log10.unwrap_or(match self.kind.as_str() {
            // 10^5 Luhn-valid middles per BIN and last four (template docs).
            "pan" => 5.0,
            "ssn" => 9.0,
            "digits" => 6.0,
            "alphanumeric" => 10.0,
            "email" => 7.0,
            "cvv" => 3.0,
            _ => 6.0,
        });
        TemplateInfo {
            name: self.name.clone(),
            mode: if self.mode == "fpe" {
                PolicyMode::Fpe
            } else {
                PolicyMode::Vaulted
            },
            deterministic: self.mode == "fpe" || (self.mode == "vaulted" && self.deterministic),
            domain_log10: domain,
        }
    }
}

/// The built-in template set: each built-in kind in FPE mode under its own name, and vaulted
/// variants (`<kind>_vault` opaque random, `pan_vault_fmt` formatted random, `pan_vault_det`
/// deterministic), and `cvv` (volatile: 15 minutes, one reveal).
pub fn builtin_templates() -> Vec<TemplateSpec> {
    let mut out = Vec::new();
    for kind in ["pan", "ssn", "digits", "alphanumeric", "email"] {
        out.push(TemplateSpec::simple(kind, kind, "fpe", None, false));
    }
    out.push(TemplateSpec::simple(
        "pan_vault",
        "pan",
        "vaulted",
        Some("opaque"),
        false,
    ));
    out.push(TemplateSpec::simple(
        "pan_vault_fmt",
        "pan",
        "vaulted",
        Some("formatted"),
        false,
    ));
    out.push(TemplateSpec::simple(
        "pan_vault_det",
        "pan",
        "vaulted",
        Some("opaque"),
        true,
    ));
    for kind in ["ssn", "digits", "alphanumeric", "email"] {
        out.push(TemplateSpec::simple(
            &format!("{kind}_vault"),
            kind,
            "vaulted",
            Some("opaque"),
            false,
        ));
    }
    out.push(TemplateSpec::simple("cvv", "cvv", "volatile", None, false));
    out
}
