//! Who is calling: a client certificate (mTLS) or an API key.
//!
//! - **Certificates.** rustls has already verified the chain against the configured client CA
//!   before a request reaches us; this module only reads the identity from the leaf: its one
//!   SPIFFE URI SAN (`spiffe://…`), or else its subject CN (`cn:<CN>`). A leaf with two SPIFFE
//!   URIs is refused: which one is "the" identity would be our guess, and SPIFFE's X.509-SVID
//!   spec requires exactly one.
//! - **API keys** as `authorization: Bearer <key>` for callers without certificates, checked by
//!   the caller registry ([`crate::callers`]).
//! - Both at once is refused: one request, one identity, so an audit event never has to say
//!   which of two it believed.
//!
//! Every request is authenticated, loopback included; the health service is the only exception
//! (it is served outside these handlers).

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
use zeroize::Zeroizing;

use crate::callers::{Caller, Registry};

/// What a call presented, as the transport read it: the verified client certificate chain
/// (mTLS) and the `authorization` header's bytes, wiped on drop. Its `Debug` redacts the
/// header: it holds an API key.
#[derive(Clone, Default)]
pub struct Credentials {
    /// The peer's chain, leaf first (already verified by rustls against the client CA).
    pub certs: Option<Arc<Vec<CertificateDer<'static>>>>,
    /// The `authorization` header, if any.
    pub authorization: Option<Zeroizing<Vec<u8>>>,
}

/// Says what was presented, never the key.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("certs", &self.certs.as_ref().map(|c| c.len()))
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// `spiffe://…`, `cn:…` or `key:…`: the name the policy and the audit log use.
    pub id: String,
    /// The registry entry, for API-key callers.
    pub registered: Option<Caller>,
}

/// Why authentication failed. Says which check, nothing presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// Neither a client certificate nor an API key.
    #[error("no credentials: present a client certificate or `authorization: Bearer <api key>`")]
    Missing,
    /// The `authorization` header is not `Bearer <key>`.
    #[error("malformed authorization header")]
    Malformed,
    /// Unknown, revoked or expired API key.
    #[error("invalid API key")]
    BadKey,
    /// The certificate cannot be parsed or names no identity.
    #[error("client certificate has no usable identity (SPIFFE URI SAN or subject CN)")]
    NoCertIdentity,
    /// Two SPIFFE URI SANs.
    #[error("client certificate has more than one SPIFFE URI SAN")]
    AmbiguousSpiffe,
    /// A certificate and an API key.
    #[error("both a client certificate and an API key were presented")]
    Both,
}

/// The identity in a verified leaf certificate.
pub fn cert_identity(leaf: &[u8]) -> Result<String, Failure> {
    let (_, cert) = X509Certificate::from_der(leaf).map_err(|_| Failure::NoCertIdentity)?;
    let mut spiffe = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name
                && uri.starts_with("spiffe://")
            {
                spiffe.push(*uri);
            }
        }
    }
    match spiffe.as_slice() {
        [one] if valid_id(one) => return Ok((*one).to_owned()),
        [_] => return Err(Failure::NoCertIdentity),
        [] => {}
        _ => return Err(Failure::AmbiguousSpiffe),
    }
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .ok_or(Failure::NoCertIdentity)?;
    let id = format!("cn:{cn}");
    if valid_id(&id) {
        Ok(id)
    } else {
        Err(Failure::NoCertIdentity)
    }
}

/// Identities go into logs and audit events: no whitespace or control characters.
fn valid_id(id: &str) -> bool {
    id.len() <= 512 && !id.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Authenticate one request from its credentials.
pub fn authenticate(credentials: &Credentials, registry: &Registry) -> Result<Identity, Failure> {
    let bearer = match &credentials.authorization {
        None => None,
        Some(v) => {
            // A header value as text: visible ASCII and tabs (what `http` accepts as a string).
            if !v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) {
                return Err(Failure::Malformed);
            }
            let text = std::str::from_utf8(v).map_err(|_| Failure::Malformed)?;
            let key = text
                .strip_prefix("Bearer ")
                .or_else(|| text.strip_prefix("bearer "))
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .ok_or(Failure::Malformed)?;
            Some(key)
        }
    };
    let leaf = credentials.certs.as_deref().and_then(|c| c.first());
    match (leaf, bearer) {
        (Some(_), Some(_)) => Err(Failure::Both),
        (Some(leaf), None) => Ok(Identity {
            id: cert_identity(leaf)?,
            registered: None,
        }),
        (None, Some(key)) => {
            let caller = registry.authenticate(key).ok_or(Failure::BadKey)?;
            Ok(Identity {
                id: caller.identity(),
                registered: Some(caller),
            })
        }
        (None, None) => Err(Failure::Missing),
    }
}
