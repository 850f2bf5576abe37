//! `vaultctl audit` against a running daemon: tail, export, verify.

use super::*;

/// Every audit event matching the request's filters, a page at a time.
pub(super) async fn each_event(
    admin: &AdminClient,
    mut request: pb::QueryAuditEventsRequest,
    mut f: impl FnMut(pb::AuditEvent),
) -> Result<(), Failure> {
    request.limit = 1000;
    loop {
        let page = admin.query_audit_events(request.clone()).await?;
        page.events.into_iter().for_each(&mut f);
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        request.page_token = page.next_page_token;
    }
}

pub(crate) async fn audit_tail(g: &Global, a: AuditTailArgs) -> Result<(), Failure> {
    let admin = admin(g).await?;
    let mut last = VecDeque::new();
    each_event(&admin, pb::QueryAuditEventsRequest::default(), |e| {
        if last.len() == a.count {
            last.pop_front();
        }
        if a.count > 0 {
            last.push_back(e);
        }
    })
    .await?;
    if g.json {
        for e in &last {
            print_json(&output::event_json(e));
        }
    } else {
        let rows: Vec<_> = last.iter().map(output::event_row).collect();
        table(&output::EVENT_HEADER, &rows);
    }
    Ok(())
}

pub(crate) async fn audit_export(g: &Global, a: AuditExportArgs) -> Result<(), Failure> {
    let admin = admin(g).await?;
    let request = pb::QueryAuditEventsRequest {
        caller_id: a.caller,
        request_id: a.request_id,
        ..Default::default()
    };
    each_event(&admin, request, |e| print_json(&output::event_json(&e))).await
}

pub(crate) async fn audit_verify(g: &Global) -> Result<(), Failure> {
    let admin = admin(g)
        .await?
        .with_deadline(Duration::from_secs(g.timeout.max(300)));
    let r = admin.verify_audit_log(None, None).await?;
    let last_hash = hex::encode(&r.last_hash);
    if g.json {
        print_json(&json!({
            "ok": r.ok,
            "events_checked": r.events_checked,
            "first_bad_index": r.first_bad_index,
            "reason": r.reason,
            "last_hash": last_hash,
        }));
    }
    match r.first_bad_index {
        None if r.ok => {
            if !g.json {
                outln!(
                    "audit log OK: {} events verified; last hash {last_hash}",
                    r.events_checked
                );
            }
            Ok(())
        }
        bad => Err(Failure::Tampered(format!(
            "audit log does NOT verify: event {} is bad ({}); {} events checked. Keep the \
             file as evidence; `vaultctl audit verify --data-dir` on a copy shows the same",
            bad.map_or_else(|| "?".into(), |i| i.to_string()),
            r.reason,
            r.events_checked
        ))),
    }
}
