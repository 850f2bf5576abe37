//! Scopes: an operation on a template (or on an admin area), e.g. `tokenize:pan`, `admin:keys`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a call does. Shared by the policy (scopes) and the audit log (events).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Operation {
    /// Turn values into tokens.
    Tokenize,
    /// Turn tokens back into full values (privileged, purpose required).
    Detokenize,
    /// Turn tokens into masked values only (e.g. last four digits).
    Reveal,
    /// Delete vaulted records.
    Delete,
    /// Administration (keys, audit, callers, policy, templates).
    Admin,
}

impl Operation {
    /// The lower-case name used in scopes and audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Tokenize => "tokenize",
            Operation::Detokenize => "detokenize",
            Operation::Reveal => "reveal",
            Operation::Delete => "delete",
            Operation::Admin => "admin",
        }
    }

    /// Every operation, in a fixed order (for matrices and `explain`).
    pub const ALL: [Operation; 5] = [
        Operation::Tokenize,
        Operation::Detokenize,
        Operation::Reveal,
        Operation::Delete,
        Operation::Admin,
    ];
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Operation {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Operation::ALL
            .into_iter()
            .find(|op| op.as_str() == s)
            .ok_or_else(|| ScopeError(format!("unknown operation `{s}`")))
    }
}

/// Admin areas a scope `admin:<area>` may name. Closed so a typo in the policy is an error,
/// not a grant that silently matches nothing.
pub const ADMIN_AREAS: [&str; 5] = ["keys", "audit", "callers", "policy", "templates"];

/// The object of a scope: one template (or admin area), or every template.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// `*`: every template. Only ever granted explicitly; never valid for `admin`.
    All,
    /// One template or admin area.
    Name(String),
}

/// An operation on a target, e.g. `tokenize:pan`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scope {
    /// The operation.
    pub operation: Operation,
    /// The template (or admin area).
    pub target: Target,
}

/// A scope string that does not parse. Carries the offending text, which is policy text or a
/// template name, never a sensitive value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope: {0}")]
pub struct ScopeError(String);

impl Scope {
    /// A concrete scope on one template or admin area.
    pub fn new(operation: Operation, target: impl Into<String>) -> Self {
        Scope {
            operation,
            target: Target::Name(target.into()),
        }
    }

    /// Whether a granted scope (possibly `op:*`) covers a requested one.
    pub fn covers(&self, requested: &Scope) -> bool {
        self.operation == requested.operation
            && match (&self.target, &requested.target) {
                (Target::All, _) => true,
                (Target::Name(a), Target::Name(b)) => a == b,
                (Target::Name(_), Target::All) => false,
            }
    }

    /// The template this scope names, if it is a concrete template scope.
    pub fn template(&self) -> Option<&str> {
        match (&self.operation, &self.target) {
            (Operation::Admin, _) | (_, Target::All) => None,
            (_, Target::Name(name)) => Some(name),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::All => write!(f, "{}:*", self.operation),
            Target::Name(name) => write!(f, "{}:{name}", self.operation),
        }
    }
}

impl FromStr for Scope {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (op, target) = s
            .split_once(':')
            .ok_or_else(|| ScopeError(format!("`{s}` is not of the form operation:template")))?;
        let operation: Operation = op.parse()?;
        let target = match target {
            "*" if operation == Operation::Admin => {
                return Err(ScopeError(
                    "`admin:*` is not allowed; grant each admin area explicitly".into(),
                ));
            }
            "*" => Target::All,
            name if !valid_name(name) => {
                return Err(ScopeError(format!(
                    "`{s}`: a template name is 1-64 characters of a-z, A-Z, 0-9, `_`, `-`, `.`"
                )));
            }
            name if operation == Operation::Admin && !ADMIN_AREAS.contains(&name) => {
                return Err(ScopeError(format!(
                    "unknown admin area `{name}` (one of {})",
                    ADMIN_AREAS.join(", ")
                )));
            }
            name => Target::Name(name.to_owned()),
        };
        Ok(Scope { operation, target })
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        for s in [
            "tokenize:pan",
            "reveal:*",
            "admin:keys",
            "detokenize:my-template.v2",
        ] {
            assert_eq!(s.parse::<Scope>().unwrap().to_string(), s);
        }
        for bad in [
            "tokenize",
            "read:pan",
            "admin:*",
            "admin:everything",
            "tokenize:",
            "tokenize:a b",
        ] {
            assert!(bad.parse::<Scope>().is_err(), "{bad}");
        }
    }

    #[test]
    fn wildcard_covers_only_its_operation() {
        let all: Scope = "tokenize:*".parse().unwrap();
        assert!(all.covers(&Scope::new(Operation::Tokenize, "pan")));
        assert!(!all.covers(&Scope::new(Operation::Detokenize, "pan")));
        let pan: Scope = "tokenize:pan".parse().unwrap();
        assert!(!pan.covers(&Scope::new(Operation::Tokenize, "ssn")));
        assert!(!pan.covers(&all));
    }
}
