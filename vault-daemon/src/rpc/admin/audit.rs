//! Reading and verifying the audit log (`admin:audit`).

use vault_proto::v1::{
    self as pb, QueryAuditEventsRequest, QueryAuditEventsResponse, VerifyAuditLogRequest,
    VerifyAuditLogResponse,
};

use super::convert::{audit_event, ts_ms};
use super::{Admin, PAGE_DEFAULT, PAGE_MAX, page};
use crate::audit::Filter;
use crate::policy::{AdminOp, ApiOperation, Operation};
use crate::request::Incoming;
use crate::request::error::{self, CallError};

impl Admin {
    pub(crate) async fn query_audit_events(
        &self,
        meta: Incoming,
        req: QueryAuditEventsRequest,
    ) -> Result<QueryAuditEventsResponse, CallError> {
        let offset = page(&req.page_token);
        let validate = offset.as_ref().map(|_| ()).map_err(Clone::clone);
        let offset = offset.unwrap_or_default();
        let limit = match req.limit {
            0 => PAGE_DEFAULT,
            n => (n as usize).min(PAGE_MAX),
        };
        let mut filter = Filter {
            since_ms: req.start_time.as_ref().map(ts_ms),
            until_ms: req.end_time.as_ref().map(ts_ms),
            caller: req.caller_id.clone(),
            request_id: req.request_id.clone(),
            offset,
            limit: Some(limit + 1),
            ..Filter::default()
        };
        match pb::Operation::try_from(req.operation)
            .ok()
            .and_then(ApiOperation::from_proto)
        {
            Some(ApiOperation::Tokenizer(t)) => filter.operation = Some(t.operation()),
            Some(ApiOperation::Admin(a)) => {
                filter.operation = Some(Operation::Admin);
                filter.action = Some(a.action().to_owned());
            }
            None => {}
        }
        self.admin(meta, AdminOp::QueryAuditEvents, true, validate, move |s| {
            let mut records = s.audit.query(&filter).map_err(|e| error::audit(&e))?;
            let more = records.len() > limit;
            records.truncate(limit);
            Ok(QueryAuditEventsResponse {
                events: records.iter().map(audit_event).collect(),
                next_page_token: if more {
                    (offset + limit).to_string()
                } else {
                    String::new()
                },
            })
        })
        .await
    }

    pub(crate) async fn verify_audit_log(
        &self,
        meta: Incoming,
        _req: VerifyAuditLogRequest,
    ) -> Result<VerifyAuditLogResponse, CallError> {
        self.admin(meta, AdminOp::VerifyAuditLog, true, Ok(()), |s| {
            let (report, head) = s.audit.verify_with_head().map_err(|e| error::audit(&e))?;
            Ok(match report.first_bad {
                None => VerifyAuditLogResponse {
                    ok: true,
                    events_checked: report.events,
                    first_bad_index: None,
                    reason: String::new(),
                    last_hash: head.to_vec(),
                },
                Some((seq, defect)) => VerifyAuditLogResponse {
                    ok: false,
                    events_checked: report.events + 1,
                    first_bad_index: Some(seq),
                    reason: defect.to_string(),
                    last_hash: head.to_vec(),
                },
            })
        })
        .await
    }
}
