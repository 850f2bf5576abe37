//! The caller registry: create, list, revoke, set scopes (`admin:callers`).

use vault_proto::v1::{
    Caller as PbCaller, CreateCallerRequest, CreateCallerResponse, ListCallersRequest,
    ListCallersResponse, RevokeCallerRequest, SetCallerScopesRequest,
};

use super::convert::{pb_caller, ts_ms};
use super::{Admin, page, page_size, registry_status};
use crate::callers::Caller;
use crate::policy::AdminOp;
use crate::request::Incoming;
use crate::request::error::CallError;

impl Admin {
    pub(crate) async fn create_caller(
        &self,
        meta: Incoming,
        req: CreateCallerRequest,
    ) -> Result<CreateCallerResponse, CallError> {
        let scopes = self.check_scopes(&req.roles, &req.scopes);
        let expires_ms = req.expires_at.as_ref().map(ts_ms);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let validate = scopes
            .as_ref()
            .map(|_| ())
            .map_err(Clone::clone)
            .and_then(|()| {
                if expires_ms.is_some_and(|e| e <= now_ms) {
                    Err(CallError::invalid_argument("expires_at is in the past"))
                } else {
                    Ok(())
                }
            });
        let scopes = scopes.unwrap_or_default();
        self.admin(meta, AdminOp::CreateCaller, true, validate, move |s| {
            let (c, key) = s
                .registry
                .create(&req.name, &req.description, req.roles, scopes, expires_ms)
                .map_err(|e| registry_status(&e))?;
            Ok(CreateCallerResponse {
                caller: Some(pb_caller(&c)),
                api_key: key.0.to_string(),
            })
        })
        .await
    }

    pub(crate) async fn list_callers(
        &self,
        meta: Incoming,
        req: ListCallersRequest,
    ) -> Result<ListCallersResponse, CallError> {
        let offset = page(&req.page_token);
        let validate = offset.as_ref().map(|_| ()).map_err(Clone::clone);
        let offset = offset.unwrap_or_default();
        let size = page_size(req.page_size);
        self.admin(meta, AdminOp::ListCallers, true, validate, move |s| {
            let all: Vec<Caller> = s
                .registry
                .list()
                .into_iter()
                .filter(|c| req.include_revoked || c.revoked_ms.is_none())
                .collect();
            let next = offset + size;
            Ok(ListCallersResponse {
                callers: all.iter().skip(offset).take(size).map(pb_caller).collect(),
                next_page_token: if all.len() > next {
                    next.to_string()
                } else {
                    String::new()
                },
            })
        })
        .await
    }

    pub(crate) async fn revoke_caller(
        &self,
        meta: Incoming,
        req: RevokeCallerRequest,
    ) -> Result<PbCaller, CallError> {
        let id = req.caller_id;
        self.admin(meta, AdminOp::RevokeCaller, true, Ok(()), move |s| {
            let c = s.registry.revoke(&id).map_err(|e| registry_status(&e))?;
            Ok(pb_caller(&c))
        })
        .await
    }

    pub(crate) async fn set_caller_scopes(
        &self,
        meta: Incoming,
        req: SetCallerScopesRequest,
    ) -> Result<PbCaller, CallError> {
        let scopes = self.check_scopes(&req.roles, &req.scopes);
        let validate = scopes.as_ref().map(|_| ()).map_err(Clone::clone);
        let scopes = scopes.unwrap_or_default();
        self.admin(meta, AdminOp::SetCallerScopes, true, validate, move |s| {
            let c = s
                .registry
                .set_scopes(&req.caller_id, req.roles, scopes)
                .map_err(|e| registry_status(&e))?;
            Ok(pb_caller(&c))
        })
        .await
    }
}
