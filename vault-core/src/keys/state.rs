//! The key-version lifecycle and key purposes, with the strings the store persists.

use std::fmt;
use std::str::FromStr;

use super::KeyError;

/// A key version's state (ARCHITECTURE.md, "Key version"):
///
/// ```text
/// Active ──rotate──▶ DecryptOnly ──retire──▶ Retired ──destroy──▶ Destroyed
/// ```
///
/// Only forward moves along this line, one step at a time, are legal: a version never becomes
/// active again (its nonce count and crypto-period are spent), and a retired version is destroyed
/// only after it has stopped decrypting, so destruction can never strand data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    /// The one version per key name that encrypts.
    Active,
    /// Still decrypts; the rewrap job moves its records to the active version.
    DecryptOnly,
    /// Nothing is stored under it; it no longer decrypts.
    Retired,
    /// Its wrapped material is erased from the key table.
    Destroyed,
}

impl State {
    /// Every state, in lifecycle order.
    pub const ALL: [State; 4] = [
        State::Active,
        State::DecryptOnly,
        State::Retired,
        State::Destroyed,
    ];

    /// The string stored in `KeyVersionRow::state`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::DecryptOnly => "decrypt_only",
            Self::Retired => "retired",
            Self::Destroyed => "destroyed",
        }
    }

    /// Whether a version in this state may decrypt (the minimum version is checked separately).
    pub fn decrypts(self) -> bool {
        matches!(self, Self::Active | Self::DecryptOnly)
    }
}

/// Checks one state change against the lifecycle.
pub fn transition(from: State, to: State) -> Result<(), KeyError> {
    use State::*;
    match (from, to) {
        (Active, DecryptOnly) | (DecryptOnly, Retired) | (Retired, Destroyed) => Ok(()),
        _ => Err(KeyError::IllegalTransition { from, to }),
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| KeyError::UnknownState(s.to_owned()))
    }
}

/// What a key name is for. Each purpose has its own keys, so one key never serves two
/// algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Purpose {
    /// FF1 key for format-preserving tokens.
    Fpe,
    /// AES-256-GCM key for vaulted values.
    Data,
    /// HMAC-SHA256 key for deterministic lookups.
    Fingerprint,
    /// AES-256 key that permutes row ids into opaque tokens.
    Token,
}

impl Purpose {
    /// Every purpose.
    pub const ALL: [Purpose; 4] = [
        Purpose::Fpe,
        Purpose::Data,
        Purpose::Fingerprint,
        Purpose::Token,
    ];

    /// The string stored in `KeyNameRow::purpose`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fpe => "fpe",
            Self::Data => "data",
            Self::Fingerprint => "fingerprint",
            Self::Token => "token",
        }
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Purpose {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| KeyError::UnknownPurpose(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEGAL: [(State, State); 3] = [
        (State::Active, State::DecryptOnly),
        (State::DecryptOnly, State::Retired),
        (State::Retired, State::Destroyed),
    ];

    #[test]
    fn legal_transitions_pass() {
        for (from, to) in LEGAL {
            transition(from, to).unwrap_or_else(|e| panic!("{from} -> {to}: {e}"));
        }
    }

    #[test]
    fn every_other_transition_is_refused() {
        for from in State::ALL {
            for to in State::ALL {
                if LEGAL.contains(&(from, to)) {
                    continue;
                }
                match transition(from, to) {
                    Err(KeyError::IllegalTransition { from: f, to: t }) => {
                        assert_eq!((f, t), (from, to))
                    }
                    other => panic!("{from} -> {to} gave {other:?}"),
                }
            }
        }
    }

    #[test]
    fn state_strings_match_the_store() {
        let strings = ["active", "decrypt_only", "retired", "destroyed"];
        for (state, s) in State::ALL.into_iter().zip(strings) {
            assert_eq!(state.as_str(), s);
            assert_eq!(s.parse::<State>().unwrap(), state);
            assert_eq!(state.to_string(), s);
        }
        for bad in ["", "Active", "decrypt-only", "revoked", "active "] {
            assert!(matches!(
                bad.parse::<State>(),
                Err(KeyError::UnknownState(_))
            ));
        }
    }

    #[test]
    fn purpose_strings_match_the_store() {
        let strings = ["fpe", "data", "fingerprint", "token"];
        for (p, s) in Purpose::ALL.into_iter().zip(strings) {
            assert_eq!(p.as_str(), s);
            assert_eq!(s.parse::<Purpose>().unwrap(), p);
        }
        assert!(matches!(
            "FPE".parse::<Purpose>(),
            Err(KeyError::UnknownPurpose(_))
        ));
    }

    #[test]
    fn only_active_and_decrypt_only_decrypt() {
        assert!(State::Active.decrypts());
        assert!(State::DecryptOnly.decrypts());
        assert!(!State::Retired.decrypts());
        assert!(!State::Destroyed.decrypts());
    }
}
