//! The audit log through the daemon: every call recorded without values or tokens, the chain
//! verifies, an edited event is found at its sequence number, and a log that cannot be written
//! fails the call closed.

use tonic::Code;
use vault_daemon::audit::{self, Defect, FaultSwitch, Keys};
use vault_proto::v1::{
    QueryAuditEventsRequest, RevealItem, RevealRequest, VerifyAuditLogRequest, detokenize_result,
};

use crate::common::{Daemon, PAN, detokenize, detokenize_req, req, tokenize, tokenize_req};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_audited_and_an_edit_is_found() {
    let mut d = Daemon::start(|_| {}).await;
    let mut c = d.tokenizer(Some("all")).await;
    let mut admin = d.admin(Some("all")).await;
    let tokens = tokenize(&mut c, None, "pan_vault", &[PAN]).await;
    let mut dr = detokenize_req("pan_vault", &tokens, "chargeback-42");
    dr.request_id = Some("edit-me".into());
    c.detokenize(req(dr, None)).await.unwrap();
    // A denial and an unauthenticated attempt are recorded too.
    let mut checkout = d.tokenizer(Some("checkout")).await;
    let denied = checkout
        .detokenize(req(detokenize_req("pan_vault", &tokens, "x"), None))
        .await;
    assert_eq!(denied.unwrap_err().code(), Code::PermissionDenied);
    let mut anon = d.tokenizer(None).await;
    let mut tr = tokenize_req("pan", &[PAN]);
    tr.request_id = Some("anon-1".into());
    assert_eq!(
        anon.tokenize(req(tr, None)).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    let events = admin
        .query_audit_events(req(QueryAuditEventsRequest::default(), None))
        .await
        .unwrap()
        .into_inner()
        .events;
    let detok = events
        .iter()
        .find(|e| e.request_id == "edit-me")
        .expect("detokenize event");
    assert_eq!(detok.caller_id, "spiffe://test.example/all");
    assert_eq!(detok.purpose, "chargeback-42");
    assert_eq!(detok.template, "pan_vault");
    assert_eq!((detok.item_count, detok.status_code), (1, 0));
    let anon_event = events
        .iter()
        .find(|e| e.request_id == "anon-1")
        .expect("unauthenticated event");
    assert_eq!(anon_event.caller_id, "unknown");
    assert_eq!(anon_event.status_code, Code::Unauthenticated as i32);
    assert!(
        events
            .iter()
            .any(|e| e.caller_id == "spiffe://test.example/checkout"
                && e.status_code == Code::PermissionDenied as i32)
    );
    // Chain links are exposed.
    assert_eq!(events[1].previous_hash, events[0].hash);

    let v = admin
        .verify_audit_log(req(VerifyAuditLogRequest::default(), None))
        .await
        .unwrap()
        .into_inner();
    assert!(v.ok, "{v:?}");
    assert!(v.events_checked >= 4);

    // No value and no token in the log.
    let log_path = d.data().join(audit::LOG_FILE);
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(!text.contains(PAN));
    assert!(!text.contains(&tokens[0]));

    // Edit one event: verification reports its sequence number.
    let seq = detok.index;
    let edited = text.replace("\"edit-me\"", "\"edit-ME\"");
    assert_ne!(edited, text);
    std::fs::write(&log_path, edited).unwrap();
    let v = admin
        .verify_audit_log(req(VerifyAuditLogRequest::default(), None))
        .await
        .unwrap()
        .into_inner();
    assert!(!v.ok);
    assert_eq!(v.first_bad_index, Some(seq));
    d.stop().await;

    // Offline, with the key file (what `vaultctl audit verify` does).
    let keys = Keys::load(&d.data().join(audit::KEY_FILE)).unwrap();
    let report = audit::verify(&log_path, &keys.verify_keys()).unwrap();
    assert_eq!(report.first_bad, Some((seq, Defect::Mac)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_audit_log_fails_closed() {
    let switch = FaultSwitch::new();
    let s = switch.clone();
    let mut d = Daemon::start(move |cfg| cfg.testing.audit_fault = Some(s)).await;
    let mut c = d.tokenizer(Some("all")).await;
    let tokens = tokenize(&mut c, None, "pan_vault", &[PAN]).await;
    let fpe = tokenize(&mut c, None, "pan", &[PAN]).await;

    switch.set(true);
    for (template, toks) in [("pan_vault", &tokens), ("pan", &fpe)] {
        let err = c
            .detokenize(req(detokenize_req(template, toks, "p"), None))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{template}");
        assert!(!err.message().contains(PAN));
        assert!(!format!("{err:?}").contains(PAN));
        let err = c
            .reveal(req(
                RevealRequest {
                    request_id: None,
                    template: template.into(),
                    key_version: None,
                    purpose: "p".into(),
                    mask: None,
                    items: vec![RevealItem {
                        token: toks[0].clone(),
                    }],
                },
                None,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{template}");
    }
    // Tokenize fails closed too: no token the log does not know about.
    let err = c
        .tokenize(req(tokenize_req("pan_vault", &[PAN]), None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    // Refusals cannot be recorded either: they become UNAVAILABLE.
    let mut anon = d.tokenizer(None).await;
    assert_eq!(
        anon.tokenize(req(tokenize_req("pan", &[PAN]), None))
            .await
            .unwrap_err()
            .code(),
        Code::Unavailable
    );

    // The same over Connect: every call, a refusal included, UNAVAILABLE (503), no value in
    // the body.
    let mut cc = d.connect(Some("all")).await;
    for (template, toks) in [("pan_vault", &tokens), ("pan", &fpe)] {
        let a = cc
            .call(
                "/vault.v1.Tokenizer/Detokenize",
                &detokenize_req(template, toks, "p"),
                None,
            )
            .await;
        assert_eq!(a.code, Code::Unavailable, "{template} over Connect");
        assert!(!String::from_utf8_lossy(&a.body).contains(PAN));
        assert!(a.message.contains("audit"), "{}", a.message);
    }
    let a = cc
        .call(
            "/vault.v1.Tokenizer/Tokenize",
            &tokenize_req("pan_vault", &[PAN]),
            None,
        )
        .await;
    assert_eq!(a.code, Code::Unavailable);
    let mut anon_connect = d.connect(None).await;
    let a = anon_connect
        .call(
            "/vault.v1.Tokenizer/Tokenize",
            &tokenize_req("pan", &[PAN]),
            None,
        )
        .await;
    assert_eq!(a.code, Code::Unavailable);

    // The log recovers when the fault clears (the failed appends were rolled back).
    switch.set(false);
    let back = detokenize(&mut c, None, "pan_vault", &tokens).await;
    assert_eq!(back, [PAN]);
    let resp = c
        .detokenize(req(detokenize_req("pan", &fpe, "p"), None))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        &resp.results[0].outcome,
        Some(detokenize_result::Outcome::Value(v)) if v.value == PAN
    ));
    d.stop().await;
    let keys = Keys::load(&d.data().join(audit::KEY_FILE)).unwrap();
    let report = audit::verify(&d.data().join(audit::LOG_FILE), &keys.verify_keys()).unwrap();
    assert_eq!(report.first_bad, None);
}
