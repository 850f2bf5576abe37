//! Forwarded end-user tokens: JWTs from configured issuers, verified against the issuer's
//! public keys (a JWKS file, an inline JWKS, or PEM keys). Keys are read at policy load, so an
//! issuer's key rotation is picked up by a policy reload; nothing is fetched over the network.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Signature algorithms accepted for end-user tokens. HMAC (`HS*`) is never accepted: a shared
/// secret would let the vault (or anyone holding the policy) mint end-user tokens.
const ACCEPTED: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// A verified end user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndUser {
    /// The issuer's name in the policy (`[issuers.<name>]`).
    pub issuer: String,
    /// The token's `sub`.
    pub subject: String,
}

/// Why a forwarded end-user token was refused. Says which check failed, nothing from the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenRejection {
    /// Not a JWT.
    #[error("malformed")]
    Malformed,
    /// `alg` is not an accepted asymmetric algorithm.
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    /// `iss` is not a configured issuer (or not the one the grant requires).
    #[error("unknown issuer")]
    UnknownIssuer,
    /// No key of the issuer matches the token's `kid` and `alg`.
    #[error("unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `aud` does not name this vault.
    #[error("wrong audience")]
    WrongAudience,
    /// `exp` has passed.
    #[error("expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("not yet valid")]
    NotYetValid,
    /// `sub`, `exp`, `iss` or `aud` is missing or malformed.
    #[error("missing or malformed claim")]
    MissingClaim,
}

/// A configured issuer, compiled.
pub(crate) struct Issuer {
    pub(crate) name: String,
    iss: String,
    audience: Vec<String>,
    keys: Vec<IssuerKey>,
    leeway: u64,
}

impl fmt::Debug for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issuer")
            .field("name", &self.name)
            .field("iss", &self.iss)
            .field("audience", &self.audience)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

struct IssuerKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// `[issuers.<name>]` in the policy file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIssuer {
    /// Expected `iss`.
    issuer: String,
    /// Accepted `aud` value(s).
    audience: OneOrMany,
    /// A JWKS file, relative to the policy file's directory.
    jwks_file: Option<String>,
    /// An inline JWKS (JSON text).
    jwks: Option<String>,
    /// PEM keys.
    #[serde(default)]
    keys: Vec<RawKey>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    leeway_secs: u64,
}

fn default_leeway() -> u64 {
    30
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    algorithm: String,
    kid: Option<String>,
    pem: Option<String>,
    pem_file: Option<String>,
}

impl Issuer {
    pub(crate) fn compile(name: &str, raw: RawIssuer, base: Option<&Path>) -> Result<Self, String> {
        let read = |file: &str| {
            let path = base.map_or_else(|| Path::new(file).to_owned(), |b| b.join(file));
            std::fs::read_to_string(&path)
                .map_err(|e| format!("issuer `{name}`: {}: {e}", path.display()))
        };
        let mut keys = Vec::new();
        let mut jwks_texts = Vec::new();
        if let Some(file) = &raw.jwks_file {
            jwks_texts.push(read(file)?);
        }
        if let Some(text) = raw.jwks {
            jwks_texts.push(text);
        }
        for text in jwks_texts {
            let set: JwkSet = serde_json::from_str(&text)
                .map_err(|e| format!("issuer `{name}`: invalid JWKS: {e}"))?;
            for jwk in &set.keys {
                keys.push(from_jwk(jwk).map_err(|e| format!("issuer `{name}`: {e}"))?);
            }
        }
        for key in raw.keys {
            let alg = Algorithm::from_str(&key.algorithm)
                .ok()
                .filter(|a| ACCEPTED.contains(a))
                .ok_or_else(|| {
                    format!("issuer `{name}`: unsupported algorithm `{}`", key.algorithm)
                })?;
            let pem = match (key.pem, key.pem_file) {
                (Some(pem), None) => pem,
                (None, Some(file)) => read(&file)?,
                _ => {
                    return Err(format!(
                        "issuer `{name}`: each key needs exactly one of `pem`, `pem_file`"
                    ));
                }
            };
            let decoded = match alg {
                Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem.as_bytes()),
                Algorithm::EdDSA => DecodingKey::from_ed_pem(pem.as_bytes()),
                _ => DecodingKey::from_rsa_pem(pem.as_bytes()),
            }
            .map_err(|e| format!("issuer `{name}`: invalid {} PEM key: {e}", key.algorithm))?;
            keys.push(IssuerKey {
                kid: key.kid,
                alg,
                key: decoded,
            });
        }
        if keys.is_empty() {
            return Err(format!(
                "issuer `{name}` has no keys (jwks_file, jwks or keys)"
            ));
        }
        let audience = match raw.audience {
            OneOrMany::One(a) => vec![a],
            OneOrMany::Many(a) => a,
        };
        if audience.is_empty() || raw.issuer.is_empty() {
            return Err(format!(
                "issuer `{name}` needs a non-empty `issuer` and `audience`"
            ));
        }
        Ok(Issuer {
            name: name.to_owned(),
            iss: raw.issuer,
            audience,
            keys,
            leeway: raw.leeway_secs,
        })
    }
}

fn from_jwk(jwk: &Jwk) -> Result<IssuerKey, String> {
    let alg = match &jwk.common.key_algorithm {
        Some(ka) => Algorithm::from_str(&ka.to_string()).ok(),
        None => match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                Some(Algorithm::ES256)
            }
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P384 => {
                Some(Algorithm::ES384)
            }
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                Some(Algorithm::EdDSA)
            }
            _ => None,
        },
    }
    .filter(|a| ACCEPTED.contains(a))
    .ok_or("JWKS key with an unsupported algorithm or key type (symmetric keys are refused)")?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("invalid JWK: {e}"))?;
    Ok(IssuerKey {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
    })
}

#[derive(Deserialize)]
struct Peek {
    iss: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    nbf: Option<u64>,
}

/// Verify a forwarded token against the configured issuers (or only `required_issuer`).
pub(crate) fn verify(
    issuers: &[Issuer],
    required_issuer: Option<&str>,
    token: &str,
    now: Duration,
) -> Result<EndUser, TokenRejection> {
    use jsonwebtoken::errors::ErrorKind;

    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenRejection::Malformed)?;
    if !ACCEPTED.contains(&header.alg) {
        return Err(TokenRejection::UnsupportedAlgorithm);
    }
    // The unverified `iss` only selects which issuer's keys to try; the signature check that
    // follows covers it.
    let peek: Peek = jsonwebtoken::dangerous::insecure_decode_claims(token)
        .map_err(|_| TokenRejection::Malformed)?;
    let iss = peek.iss.ok_or(TokenRejection::MissingClaim)?;
    let issuer = issuers
        .iter()
        .find(|i| i.iss == iss && required_issuer.is_none_or(|r| r == i.name))
        .ok_or(TokenRejection::UnknownIssuer)?;
    let candidates: Vec<&IssuerKey> = issuer
        .keys
        .iter()
        .filter(|k| k.alg == header.alg)
        .filter(|k| match (&header.kid, &k.kid) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        })
        .collect();
    if candidates.is_empty() {
        return Err(TokenRejection::UnknownKey);
    }
    let mut validation = Validation::new(header.alg);
    validation.required_spec_claims = ["exp", "iss", "aud", "sub"]
        .map(String::from)
        .into_iter()
        .collect::<HashSet<_>>();
    // Time checks are done below against the injected clock.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.set_audience(&issuer.audience);
    validation.set_issuer(&[&issuer.iss]);
    for candidate in candidates {
        let claims = match jsonwebtoken::decode::<Claims>(token, &candidate.key, &validation) {
            Ok(data) => data.claims,
            Err(e) => match e.kind() {
                ErrorKind::InvalidSignature => continue,
                ErrorKind::InvalidAudience => return Err(TokenRejection::WrongAudience),
                ErrorKind::InvalidIssuer => return Err(TokenRejection::UnknownIssuer),
                ErrorKind::MissingRequiredClaim(_)
                | ErrorKind::InvalidClaimFormat(_)
                | ErrorKind::Json(_) => {
                    return Err(TokenRejection::MissingClaim);
                }
                _ => return Err(TokenRejection::Malformed),
            },
        };
        let now = now.as_secs();
        if claims.exp.saturating_add(issuer.leeway) <= now {
            return Err(TokenRejection::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(issuer.leeway))
        {
            return Err(TokenRejection::NotYetValid);
        }
        if claims.sub.is_empty() {
            return Err(TokenRejection::MissingClaim);
        }
        return Ok(EndUser {
            issuer: issuer.name.clone(),
            subject: claims.sub,
        });
    }
    Err(TokenRejection::BadSignature)
}
