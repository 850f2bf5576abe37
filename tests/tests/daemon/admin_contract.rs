//! admin.proto's promises, one rpc after another, each assertion quoting the comment it
//! checks. Through a real tonic client against the real daemon (the `all` identity).

use tonic::Code;
use vault_proto::v1::admin_client::AdminClient;
use vault_proto::v1::{
    CreateCallerRequest, DestroyKeyVersionRequest, GetKeyStatusRequest, GetRewrapRequest,
    GetSealStatusRequest, KeyVersionState, ListCallersRequest, ListRewrapsRequest, Operation,
    QueryAuditEventsRequest, RetireKeyVersionRequest, RevokeCallerRequest, RewrapState,
    RotateKeyRequest, Scope, SealRequest, StartRewrapRequest, UnsealRequest, VerifyAuditLogRequest,
    rotate_key_request, unseal_request,
};

use crate::common::{Daemon, PAN, code, req, tokenize, tokenize_req};

fn rotate(key: &str) -> tonic::Request<RotateKeyRequest> {
    req(
        RotateKeyRequest {
            key: Some(rotate_key_request::Key::KeyName(key.into())),
        },
        None,
    )
}

async fn state_of(
    admin: &mut AdminClient<tonic::transport::Channel>,
    key: &str,
    v: u32,
) -> KeyVersionState {
    let keys = admin
        .get_key_status(req(
            GetKeyStatusRequest {
                key_name: Some(key.into()),
                template: None,
            },
            None,
        ))
        .await
        .unwrap()
        .into_inner()
        .keys;
    let version = keys[0].versions.iter().find(|x| x.version == v).unwrap();
    version.state()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_proto_promises() {
    let mut d = Daemon::start(|_| {}).await;
    let mut admin = d.admin(Some("all")).await;
    let mut c = d.tokenizer(Some("all")).await;
    let key = "data/pan_vault";
    tokenize(&mut c, None, "pan_vault", &[PAN, PAN, PAN]).await;

    // RotateKey: "Creates a new Active version of a key; the previous Active version becomes
    // DecryptOnly."
    let rotated = admin.rotate_key(rotate(key)).await.unwrap().into_inner();
    assert_eq!(rotated.new_version, 2);
    assert_eq!(
        state_of(&mut admin, key, 1).await,
        KeyVersionState::DecryptOnly
    );
    assert_eq!(state_of(&mut admin, key, 2).await, KeyVersionState::Active);

    // RetireKeyVersion: "FAILED_PRECONDITION while records remain under it (run a rewrap
    // first) or from any other state."
    let retire = |v: u32| {
        req(
            RetireKeyVersionRequest {
                key_name: key.into(),
                version: v,
            },
            None,
        )
    };
    assert_eq!(
        code(&admin.retire_key_version(retire(1)).await),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(&admin.retire_key_version(retire(2)).await),
        Code::FailedPrecondition
    );
    // DestroyKeyVersion: "FAILED_PRECONDITION from any other state" than Retired.
    let destroy = |v: u32| {
        req(
            DestroyKeyVersionRequest {
                key_name: key.into(),
                version: v,
            },
            None,
        )
    };
    assert_eq!(
        code(&admin.destroy_key_version(destroy(1)).await),
        Code::FailedPrecondition
    );

    // StartRewrap: "Only keys that encrypt records can be rewrapped (others: INVALID_ARGUMENT)."
    let start = |k: &str| {
        req(
            StartRewrapRequest {
                key_name: k.into(),
                batch_size: None,
            },
            None,
        )
    };
    assert_eq!(
        code(&admin.start_rewrap(start("token")).await),
        Code::InvalidArgument
    );
    let job = admin.start_rewrap(start(key)).await.unwrap().into_inner();
    assert_eq!(job.target_version, 2);
    // GetRewrap: "Poll it to observe a job."
    let mut done = job.clone();
    for _ in 0..200 {
        done = admin
            .get_rewrap(req(
                GetRewrapRequest {
                    job_id: job.job_id.clone(),
                },
                None,
            ))
            .await
            .unwrap()
            .into_inner();
        if done.state() == RewrapState::Succeeded {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(done.state(), RewrapState::Succeeded, "{done:?}");
    assert_eq!(done.processed, 3);
    assert!(
        done.failure_reason.is_empty(),
        "empty unless state is FAILED"
    );
    assert_eq!(
        code(
            &admin
                .get_rewrap(req(
                    GetRewrapRequest {
                        job_id: "999999".into()
                    },
                    None
                ))
                .await
        ),
        Code::NotFound
    );
    // ResumeRewrap: "FAILED_PRECONDITION unless it is paused or failed."
    assert_eq!(
        code(
            &admin
                .resume_rewrap(req(
                    vault_proto::v1::ResumeRewrapRequest {
                        job_id: job.job_id.clone()
                    },
                    None
                ))
                .await
        ),
        Code::FailedPrecondition
    );
    // ListRewraps: "Rewrap jobs, newest first."
    admin.rotate_key(rotate("data/ssn_vault")).await.unwrap();
    tokenize(&mut c, None, "ssn_vault", &["123-45-6789"]).await;
    let second = admin
        .start_rewrap(start("data/ssn_vault"))
        .await
        .unwrap()
        .into_inner();
    let jobs = admin
        .list_rewraps(req(ListRewrapsRequest::default(), None))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(jobs[0].job_id, second.job_id, "newest first");
    assert_eq!(jobs[1].job_id, job.job_id);

    // Retire after the rewrap, then destroy; destroying again is from another state.
    admin.retire_key_version(retire(1)).await.unwrap();
    assert_eq!(state_of(&mut admin, key, 1).await, KeyVersionState::Retired);
    admin.destroy_key_version(destroy(1)).await.unwrap();
    assert_eq!(
        state_of(&mut admin, key, 1).await,
        KeyVersionState::Destroyed
    );
    assert_eq!(
        code(&admin.destroy_key_version(destroy(1)).await),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(&admin.retire_key_version(retire(1)).await),
        Code::FailedPrecondition
    );

    // CreateCaller: "The key is in the response only"; a taken name is ALREADY_EXISTS
    // (ARCHITECTURE.md, errors table). ListCallers: "oldest first".
    let new_caller = |name: &str| {
        req(
            CreateCallerRequest {
                name: name.into(),
                description: String::new(),
                roles: vec![],
                scopes: vec![Scope {
                    operation: Operation::Tokenize as i32,
                    template: "pan".into(),
                }],
                expires_at: None,
            },
            None,
        )
    };
    let first = admin
        .create_caller(new_caller("svc-a"))
        .await
        .unwrap()
        .into_inner();
    let second_caller = admin
        .create_caller(new_caller("svc-b"))
        .await
        .unwrap()
        .into_inner();
    assert!(first.api_key.starts_with("vk_"));
    assert_eq!(
        code(&admin.create_caller(new_caller("svc-a")).await),
        Code::AlreadyExists
    );
    let listed = admin
        .list_callers(req(ListCallersRequest::default(), None))
        .await
        .unwrap()
        .into_inner()
        .callers;
    let ids: Vec<&str> = listed.iter().map(|c| c.caller_id.as_str()).collect();
    let a = ids
        .iter()
        .position(|&i| i == first.caller.as_ref().unwrap().caller_id)
        .unwrap();
    let b = ids
        .iter()
        .position(|&i| i == second_caller.caller.as_ref().unwrap().caller_id)
        .unwrap();
    assert!(a < b, "oldest first: {ids:?}");
    let listed_text = format!("{listed:?}");
    assert!(
        !listed_text.contains(&first.api_key[3..]),
        "the key is in the response only"
    );
    // RevokeCaller: "its API key stops working at once. Irreversible; revoking a revoked caller
    // changes nothing."
    let id = first.caller.unwrap().caller_id;
    let revoke = || {
        req(
            RevokeCallerRequest {
                caller_id: id.clone(),
            },
            None,
        )
    };
    let revoked = admin.revoke_caller(revoke()).await.unwrap().into_inner();
    assert!(revoked.revoked_at.is_some());
    let again = admin.revoke_caller(revoke()).await.unwrap().into_inner();
    assert_eq!(again.revoked_at, revoked.revoked_at, "changes nothing");
    let mut anon = d.tokenizer(None).await;
    let r = anon
        .tokenize(req(tokenize_req("pan", &[PAN]), Some(&first.api_key)))
        .await;
    assert_eq!(code(&r), Code::Unauthenticated);

    // QueryAuditEvents: "oldest first, a page at a time"; "Zero: the server's default (100)".
    for _ in 0..110 {
        admin
            .get_seal_status(req(GetSealStatusRequest {}, None))
            .await
            .unwrap();
    }
    let page = admin
        .query_audit_events(req(QueryAuditEventsRequest::default(), None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.events.len(), 100);
    assert!(
        page.events.windows(2).all(|w| w[0].index < w[1].index),
        "oldest first"
    );
    assert!(!page.next_page_token.is_empty());
    let next = admin
        .query_audit_events(req(
            QueryAuditEventsRequest {
                page_token: page.next_page_token.clone(),
                ..QueryAuditEventsRequest::default()
            },
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        next.events[0].index,
        page.events[99].index + 1,
        "the next page follows"
    );
    // VerifyAuditLog: "reports the first event that does not verify" (none here).
    let v = admin
        .verify_audit_log(req(VerifyAuditLogRequest::default(), None))
        .await
        .unwrap()
        .into_inner();
    assert!(v.ok, "{v:?}");

    // Unseal: "on an unsealed vault it changes nothing and returns the status."
    let status = admin
        .unseal(req(
            UnsealRequest {
                secret: Some(unseal_request::Secret::Passphrase("anything".into())),
                reset: false,
            },
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!status.sealed);
    // Seal: "Sealing a sealed vault changes nothing." While sealed, "every rpc of Tokenizer and
    // Admin fails with FAILED_PRECONDITION, except GetSealStatus, Unseal and Seal".
    for _ in 0..2 {
        let status = admin.seal(req(SealRequest {}, None)).await.unwrap();
        assert!(status.into_inner().sealed);
    }
    assert!(
        admin
            .get_seal_status(req(GetSealStatusRequest {}, None))
            .await
            .unwrap()
            .into_inner()
            .sealed
    );
    assert_eq!(
        code(
            &admin
                .get_key_status(req(GetKeyStatusRequest::default(), None))
                .await
        ),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(&c.tokenize(req(tokenize_req("pan", &[PAN]), None)).await),
        Code::FailedPrecondition
    );
    d.stop().await;
}
