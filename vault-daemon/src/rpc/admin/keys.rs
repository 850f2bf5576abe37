//! Seal state, key versions and the root key: the `admin:keys` rpcs other than rewrap.

use vault_core::keys::root::KdfParams;
use vault_core::secret::{ExposeSecret, SecretString};
use vault_core::vault::RootInit;
use vault_proto::v1::{
    self as pb, DestroyKeyVersionRequest, GetKeyStatusRequest, GetKeyStatusResponse,
    GetSealStatusRequest, KeyPurpose, RaiseMinDecryptionVersionRequest, RetireKeyVersionRequest,
    RotateKeyRequest, RotateKeyResponse, RotateRootKeyRequest, RotateRootKeyResponse, SealRequest,
    SealStatus, UnsealRequest, rotate_key_request, rotate_root_key_request, unseal_request,
};
use zeroize::Zeroizing;

use super::Admin;
use super::convert::{key_status, one_key, seal_status};
use crate::policy::AdminOp;
use crate::request::Incoming;
use crate::request::error::{self, CallError};

impl Admin {
    pub(crate) async fn get_seal_status(
        &self,
        meta: Incoming,
        _req: GetSealStatusRequest,
    ) -> Result<SealStatus, CallError> {
        self.admin(meta, AdminOp::GetSealStatus, false, Ok(()), |s| {
            Ok(seal_status(&s.vault))
        })
        .await
    }

    pub(crate) async fn unseal(
        &self,
        meta: Incoming,
        req: UnsealRequest,
    ) -> Result<SealStatus, CallError> {
        let validate = if req.secret.is_none() && !req.reset {
            Err(CallError::invalid_argument(
                "give a passphrase or a share (or reset)",
            ))
        } else {
            Ok(())
        };
        let out = self
            .admin(meta, AdminOp::Unseal, false, validate, move |s| {
                let v = &s.vault;
                if req.reset {
                    v.reset_unseal();
                }
                if v.is_sealed() {
                    let r = match req.secret {
                        Some(unseal_request::Secret::Passphrase(p)) => {
                            v.unseal_passphrase(&SecretString::from(p))
                        }
                        Some(unseal_request::Secret::Share(text)) => {
                            let text = Zeroizing::new(text);
                            v.submit_share(&text).map(|_| ())
                        }
                        Some(unseal_request::Secret::Hsm(_)) => {
                            crate::hsm::unseal(configured_hsm(s)?, v)
                        }
                        None => Ok(()),
                    };
                    match r {
                        Ok(()) | Err(vault_core::vault::Error::AlreadyUnsealed) => {}
                        Err(e) => {
                            // A wrong secret discards the shares received (proto contract).
                            v.reset_unseal();
                            return Err(error::vault(&e));
                        }
                    }
                }
                Ok(seal_status(v))
            })
            .await;
        self.0.update_health().await;
        out
    }

    pub(crate) async fn seal(
        &self,
        meta: Incoming,
        _req: SealRequest,
    ) -> Result<SealStatus, CallError> {
        let out = self
            .admin(meta, AdminOp::Seal, false, Ok(()), |s| {
                s.vault.seal();
                Ok(seal_status(&s.vault))
            })
            .await;
        self.0.update_health().await;
        out
    }

    pub(crate) async fn get_key_status(
        &self,
        meta: Incoming,
        req: GetKeyStatusRequest,
    ) -> Result<GetKeyStatusResponse, CallError> {
        self.admin(meta, AdminOp::GetKeyStatus, true, Ok(()), move |s| {
            let keys = s.vault.key_status().map_err(|e| error::vault(&e))?;
            let mut keys: Vec<pb::KeyStatus> = keys
                .iter()
                .map(key_status)
                .filter(|k| req.key_name.as_ref().is_none_or(|n| *n == k.name))
                .filter(|k| req.template.as_ref().is_none_or(|t| *t == k.template))
                .collect();
            keys.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(GetKeyStatusResponse { keys })
        })
        .await
    }

    pub(crate) async fn rotate_key(
        &self,
        meta: Incoming,
        req: RotateKeyRequest,
    ) -> Result<RotateKeyResponse, CallError> {
        let name = match req.key {
            Some(rotate_key_request::Key::KeyName(n)) => Ok(n),
            Some(rotate_key_request::Key::TemplateKey(tk)) => {
                match KeyPurpose::try_from(tk.purpose) {
                    Ok(KeyPurpose::Fpe) => Ok(format!("fpe/{}", tk.template)),
                    Ok(KeyPurpose::Data) => Ok(format!("data/{}", tk.template)),
                    Ok(KeyPurpose::Fingerprint) => Ok(format!("fp/{}", tk.template)),
                    Ok(KeyPurpose::Token) => Ok("token".to_owned()),
                    _ => Err(CallError::invalid_argument("template_key: unknown purpose")),
                }
            }
            None => Err(CallError::invalid_argument(
                "key_name or template_key is required",
            )),
        };
        let validate = name.as_ref().map(|_| ()).map_err(Clone::clone);
        let name = name.unwrap_or_default();
        self.admin(meta, AdminOp::RotateKey, true, validate, move |s| {
            let v = s.vault.rotate(&name).map_err(|e| error::vault(&e))?;
            Ok(RotateKeyResponse {
                new_version: v,
                key: Some(one_key(&s.vault, &name)?),
            })
        })
        .await
    }

    pub(crate) async fn raise_min_decryption_version(
        &self,
        meta: Incoming,
        req: RaiseMinDecryptionVersionRequest,
    ) -> Result<pb::KeyStatus, CallError> {
        self.admin(
            meta,
            AdminOp::RaiseMinDecryptionVersion,
            true,
            Ok(()),
            move |s| {
                s.vault
                    .raise_min_version(&req.key_name, req.min_decryption_version)
                    .map_err(|e| error::vault(&e))?;
                one_key(&s.vault, &req.key_name)
            },
        )
        .await
    }

    pub(crate) async fn retire_key_version(
        &self,
        meta: Incoming,
        req: RetireKeyVersionRequest,
    ) -> Result<pb::KeyStatus, CallError> {
        self.admin(meta, AdminOp::RetireKeyVersion, true, Ok(()), move |s| {
            s.vault
                .retire(&req.key_name, req.version)
                .map_err(|e| error::vault(&e))?;
            one_key(&s.vault, &req.key_name)
        })
        .await
    }

    pub(crate) async fn destroy_key_version(
        &self,
        meta: Incoming,
        req: DestroyKeyVersionRequest,
    ) -> Result<pb::KeyStatus, CallError> {
        self.admin(meta, AdminOp::DestroyKeyVersion, true, Ok(()), move |s| {
            s.vault
                .destroy(&req.key_name, req.version)
                .map_err(|e| error::vault(&e))?;
            one_key(&s.vault, &req.key_name)
        })
        .await
    }

    pub(crate) async fn rotate_root_key(
        &self,
        meta: Incoming,
        req: RotateRootKeyRequest,
    ) -> Result<RotateRootKeyResponse, CallError> {
        let validate = match &req.new_root {
            None => Err(CallError::invalid_argument("new_root is required")),
            Some(rotate_root_key_request::NewRoot::Shamir(s))
                if s.threshold < 2 || s.shares < s.threshold || s.shares > 255 =>
            {
                Err(CallError::invalid_argument(
                    "shamir: 2 <= threshold <= shares <= 255",
                ))
            }
            _ => Ok(()),
        };
        self.admin(meta, AdminOp::RotateRootKey, true, validate, move |s| {
            let mut root_hex = None;
            let init = match req.new_root {
                Some(rotate_root_key_request::NewRoot::Passphrase(p)) => RootInit::Passphrase(
                    SecretString::from(p),
                    KdfParams::generate().map_err(|_| CallError::internal("internal error"))?,
                ),
                Some(rotate_root_key_request::NewRoot::Shamir(sh)) => RootInit::Shares {
                    threshold: u8::try_from(sh.threshold).unwrap_or(u8::MAX),
                    shares: u8::try_from(sh.shares).unwrap_or(u8::MAX),
                },
                Some(rotate_root_key_request::NewRoot::GeneratedKey(_)) => {
                    let mut bytes = Zeroizing::new([0u8; 32]);
                    getrandom::fill(&mut *bytes)
                        .map_err(|_| CallError::internal("internal error"))?;
                    let hex = Zeroizing::new(hex::encode(*bytes));
                    let key =
                        vault_core::keys::root::from_hex(&SecretString::from(hex.to_string()))
                            .map_err(|_| CallError::internal("internal error"))?;
                    root_hex = Some(hex);
                    RootInit::Key(key)
                }
                Some(rotate_root_key_request::NewRoot::Hsm(_)) => RootInit::Wrapped(
                    crate::hsm::open(configured_hsm(s)?).map_err(|e| error::vault(&e.into()))?,
                ),
                None => return Err(CallError::invalid_argument("new_root is required")),
            };
            let shares = s.vault.rotate_root(init).map_err(|e| error::vault(&e))?;
            Ok(RotateRootKeyResponse {
                shares: shares
                    .iter()
                    .map(|t| t.expose_secret().to_owned())
                    .collect(),
                root_key_hex: root_hex.map(|h| h.to_string()),
                status: Some(seal_status(&s.vault)),
            })
        })
        .await
    }
}

/// The daemon's `[hsm]` section, or FAILED_PRECONDITION.
fn configured_hsm(s: &crate::request::Shared) -> Result<&crate::config::hsm::Hsm, CallError> {
    s.hsm.as_ref().ok_or_else(|| {
        CallError::failed_precondition("this daemon has no [hsm] section in its configuration")
    })
}
