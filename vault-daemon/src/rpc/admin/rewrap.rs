//! Rewrap jobs: start, resume, read and list (the runners are `jobs.rs`).

use vault_core::vault::JobState;
use vault_proto::v1::{
    self as pb, GetRewrapRequest, ListRewrapsRequest, ListRewrapsResponse, ResumeRewrapRequest,
    StartRewrapRequest,
};

use super::convert::rewrap_job;
use super::{Admin, REWRAP_BATCH_MAX, job_id, page, page_size};
use crate::jobs;
use crate::policy::AdminOp;
use crate::request::Incoming;
use crate::request::error::{self, CallError};

impl Admin {
    pub(crate) async fn start_rewrap(
        &self,
        meta: Incoming,
        req: StartRewrapRequest,
    ) -> Result<pb::RewrapJob, CallError> {
        let template = req
            .key_name
            .strip_prefix("data/")
            .or_else(|| req.key_name.strip_prefix("fp/"))
            .map(str::to_owned);
        let validate = match &template {
            Some(t) if self.0.vault.templates().any(|c| c.template.name() == t) => Ok(()),
            _ => Err(CallError::invalid_argument(
                "only data/<template> and fp/<template> keys encrypt records",
            )),
        };
        let batch = req.batch_size.map_or(jobs::REWRAP_BATCH, |b| {
            (b as usize).clamp(1, REWRAP_BATCH_MAX)
        });
        let template = template.unwrap_or_default();
        self.admin(meta, AdminOp::Rewrap, true, validate, move |s| {
            let job = s.vault.rewrap_start(&template).map_err(|e| match e {
                vault_core::vault::Error::NotSupported { .. } => {
                    CallError::invalid_argument("format-preserving templates store no records")
                }
                e => error::vault(&e),
            })?;
            if job.state != JobState::Pending {
                return Err(CallError::already_exists(format!(
                    "rewrap job {} for this key is {}",
                    job.id,
                    job.state.as_str()
                )));
            }
            jobs::spawn_rewrap(s, job.id, batch);
            Ok(rewrap_job(&s.vault, &job))
        })
        .await
    }

    pub(crate) async fn resume_rewrap(
        &self,
        meta: Incoming,
        req: ResumeRewrapRequest,
    ) -> Result<pb::RewrapJob, CallError> {
        let id = job_id(&req.job_id);
        let validate = id.as_ref().map(|_| ()).map_err(Clone::clone);
        let id = id.unwrap_or_default();
        self.admin(meta, AdminOp::Rewrap, true, validate, move |s| {
            let job = s.vault.rewrap_job(id).map_err(|e| error::vault(&e))?;
            if !matches!(job.state, JobState::Paused | JobState::Failed) {
                return Err(CallError::failed_precondition(format!(
                    "job is {}, not paused or failed",
                    job.state.as_str()
                )));
            }
            jobs::spawn_rewrap(s, id, jobs::REWRAP_BATCH);
            Ok(rewrap_job(&s.vault, &job))
        })
        .await
    }

    pub(crate) async fn get_rewrap(
        &self,
        meta: Incoming,
        req: GetRewrapRequest,
    ) -> Result<pb::RewrapJob, CallError> {
        let id = job_id(&req.job_id);
        let validate = id.as_ref().map(|_| ()).map_err(Clone::clone);
        let id = id.unwrap_or_default();
        self.admin(meta, AdminOp::GetRewrap, true, validate, move |s| {
            let job = s.vault.rewrap_job(id).map_err(|e| error::vault(&e))?;
            Ok(rewrap_job(&s.vault, &job))
        })
        .await
    }

    pub(crate) async fn list_rewraps(
        &self,
        meta: Incoming,
        req: ListRewrapsRequest,
    ) -> Result<ListRewrapsResponse, CallError> {
        let offset = page(&req.page_token);
        let validate = offset.as_ref().map(|_| ()).map_err(Clone::clone);
        let offset = offset.unwrap_or_default();
        let size = page_size(req.page_size);
        self.admin(meta, AdminOp::GetRewrap, true, validate, move |s| {
            let jobs = s.vault.rewrap_jobs().map_err(|e| error::vault(&e))?;
            let matching: Vec<pb::RewrapJob> = jobs
                .iter()
                .map(|j| rewrap_job(&s.vault, j))
                .filter(|j| req.key_name.as_ref().is_none_or(|k| *k == j.key_name))
                .collect();
            let next = offset + size;
            Ok(ListRewrapsResponse {
                jobs: matching.iter().skip(offset).take(size).cloned().collect(),
                next_page_token: if matching.len() > next {
                    next.to_string()
                } else {
                    String::new()
                },
            })
        })
        .await
    }
}
