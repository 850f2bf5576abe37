//! `Debug` for the messages that carry a secret: the value being tokenized or detokenized, an
//! unseal passphrase or share, a new root key or its shares, an API key. They are generated with
//! `skip_debug` (see `tests/codegen.rs`), and print `<redacted>` where the secret would be, so a
//! request or response can be logged whole. Every other field is printed as usual.

use std::fmt;

use super::{
    CreateCallerResponse, DetokenizedValue, RotateRootKeyRequest, RotateRootKeyResponse,
    TokenizeItem, UnsealRequest, rotate_root_key_request, unseal_request,
};

/// Prints `<redacted>` for a secret field.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Debug for TokenizeItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenizeItem")
            .field("value", &Redacted)
            .field("idempotency_key", &self.idempotency_key)
            .field("metadata", &self.metadata)
            .field("ttl_seconds", &self.ttl_seconds)
            .finish()
    }
}

impl fmt::Debug for DetokenizedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DetokenizedValue")
            .field("value", &Redacted)
            .field("key_version", &self.key_version)
            .field("metadata", &self.metadata)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl fmt::Debug for UnsealRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnsealRequest")
            .field("secret", &self.secret)
            .field("reset", &self.reset)
            .finish()
    }
}

impl fmt::Debug for unseal_request::Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Passphrase(_) => f.debug_tuple("Passphrase").field(&Redacted).finish(),
            Self::Share(_) => f.debug_tuple("Share").field(&Redacted).finish(),
            Self::Hsm(h) => f.debug_tuple("Hsm").field(h).finish(),
        }
    }
}

impl fmt::Debug for RotateRootKeyRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotateRootKeyRequest")
            .field("new_root", &self.new_root)
            .finish()
    }
}

impl fmt::Debug for rotate_root_key_request::NewRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Passphrase(_) => f.debug_tuple("Passphrase").field(&Redacted).finish(),
            Self::Shamir(split) => f.debug_tuple("Shamir").field(split).finish(),
            Self::GeneratedKey(key) => f.debug_tuple("GeneratedKey").field(key).finish(),
            Self::Hsm(h) => f.debug_tuple("Hsm").field(h).finish(),
        }
    }
}

impl fmt::Debug for RotateRootKeyResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The number of shares is public (it is in the seal status); their text is not.
        let shares: Vec<Redacted> = self.shares.iter().map(|_| Redacted).collect();
        f.debug_struct("RotateRootKeyResponse")
            .field("shares", &shares)
            .field(
                "root_key_hex",
                &self.root_key_hex.as_ref().map(|_| Redacted),
            )
            .field("status", &self.status)
            .finish()
    }
}

impl fmt::Debug for CreateCallerResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateCallerResponse")
            .field("caller", &self.caller)
            .field("api_key", &Redacted)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Caller, DetokenizeResult, ShamirSplit, TokenizeRequest, detokenize_result};
    use super::*;

    const SECRET: &str = "4111111111111111";

    /// Formats with `{:?}` and `{:#?}` and checks that neither shows the secret.
    fn assert_hidden(what: &impl fmt::Debug) -> String {
        let plain = format!("{what:?}");
        let pretty = format!("{what:#?}");
        assert!(!plain.contains(SECRET), "{plain}");
        assert!(!pretty.contains(SECRET), "{pretty}");
        assert!(plain.contains("<redacted>"), "{plain}");
        plain
    }

    #[test]
    fn tokenize_request_hides_values_but_shows_the_rest() {
        let request = TokenizeRequest {
            template: "pan".into(),
            items: vec![TokenizeItem {
                value: SECRET.into(),
                idempotency_key: Some("order-17".into()),
                metadata: [("source".to_owned(), "checkout".to_owned())].into(),
                ttl_seconds: Some(60),
            }],
            ..Default::default()
        };
        let text = assert_hidden(&request);
        assert!(text.contains("order-17") && text.contains("checkout") && text.contains("60"));
    }

    #[test]
    fn detokenize_result_hides_the_value() {
        let result = DetokenizeResult {
            outcome: Some(detokenize_result::Outcome::Value(DetokenizedValue {
                value: SECRET.into(),
                key_version: 3,
                ..Default::default()
            })),
        };
        assert!(assert_hidden(&result).contains("key_version: 3"));
    }

    #[test]
    fn unseal_secrets_are_hidden() {
        for secret in [
            unseal_request::Secret::Passphrase(SECRET.into()),
            unseal_request::Secret::Share(SECRET.into()),
        ] {
            assert_hidden(&UnsealRequest {
                secret: Some(secret),
                reset: false,
            });
        }
    }

    #[test]
    fn root_key_rotation_secrets_are_hidden() {
        assert_hidden(&RotateRootKeyRequest {
            new_root: Some(rotate_root_key_request::NewRoot::Passphrase(SECRET.into())),
        });
        let shamir = RotateRootKeyRequest {
            new_root: Some(rotate_root_key_request::NewRoot::Shamir(ShamirSplit {
                threshold: 2,
                shares: 3,
            })),
        };
        assert!(format!("{shamir:?}").contains("threshold: 2"));
        let text = assert_hidden(&RotateRootKeyResponse {
            shares: vec![SECRET.into(), SECRET.into()],
            root_key_hex: Some(SECRET.into()),
            status: None,
        });
        assert_eq!(text.matches("<redacted>").count(), 3, "{text}");
    }

    #[test]
    fn api_key_is_hidden() {
        let text = assert_hidden(&CreateCallerResponse {
            caller: Some(Caller {
                name: "payments".into(),
                ..Default::default()
            }),
            api_key: SECRET.into(),
        });
        assert!(text.contains("payments"));
    }
}
