//! `vaultctl callers`: add, list, revoke, through the Admin API.

use super::*;

pub(super) fn parse_scope(s: &str) -> Result<pb::Scope, Failure> {
    let bad = || {
        Failure::other(format!(
            "scope `{s}`: expected tokenize|detokenize|reveal|delete:<template or *>, or \
             admin:keys|callers|audit"
        ))
    };
    let (op, target) = s.split_once(':').ok_or_else(bad)?;
    let operation = match (op, target) {
        ("tokenize", _) => pb::Operation::Tokenize,
        ("detokenize", _) => pb::Operation::Detokenize,
        ("reveal", _) => pb::Operation::Reveal,
        ("delete", _) => pb::Operation::DeleteTokens,
        // Any rpc of an area grants the whole area (ARCHITECTURE: callers).
        ("admin", "keys") => pb::Operation::GetKeyStatus,
        ("admin", "callers") => pb::Operation::ListCallers,
        ("admin", "audit") => pb::Operation::QueryAuditEvents,
        _ => return Err(bad()),
    };
    let template = match (op, target) {
        ("admin", _) | (_, "*") => String::new(),
        (_, t) if !t.is_empty() => t.to_owned(),
        _ => return Err(bad()),
    };
    Ok(pb::Scope {
        operation: operation as i32,
        template,
    })
}

pub(crate) async fn callers_add(g: &Global, a: CallersAddArgs) -> Result<(), Failure> {
    let scopes = a
        .scopes
        .iter()
        .map(|s| parse_scope(s))
        .collect::<Result<Vec<_>, _>>()?;
    if scopes.is_empty() && a.roles.is_empty() {
        return Err(Failure::other(
            "a caller without --scope or --role could do nothing: grant at least one",
        ));
    }
    if let Some(out) = &a.key_out
        && out.exists()
    {
        return Err(Failure::other(format!("{} exists", out.display())));
    }
    let expires_at = a.expires_in.map(|secs| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        prost_types::Timestamp {
            seconds: (now.as_secs() + secs) as i64,
            nanos: 0,
        }
    });
    let created = admin(g)
        .await?
        .create_caller(pb::CreateCallerRequest {
            name: a.name.clone(),
            description: a.description.clone(),
            roles: a.roles.clone(),
            scopes,
            expires_at,
        })
        .await?;
    let c = &created.caller;
    if let Some(out) = &a.key_out {
        write_secret_file(out, &format!("{}\n", created.api_key.expose_secret()))?;
    }
    if g.json {
        let mut v = output::caller_json(c);
        if a.key_out.is_none() {
            v["api_key"] = json!(created.api_key.expose_secret());
        }
        print_json(&v);
        return Ok(());
    }
    outln!(
        "created caller {} ({}), identity key:{}",
        c.name,
        c.caller_id,
        c.name
    );
    match &a.key_out {
        Some(out) => outln!("API key written to {} (mode 0600)", out.display()),
        None => {
            outln!("API key (shown once, store it now):");
            outln!("{}", created.api_key.expose_secret());
        }
    }
    Ok(())
}

pub(super) async fn all_callers(
    admin: &AdminClient,
    include_revoked: bool,
) -> Result<Vec<pb::Caller>, Failure> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_callers(pb::ListCallersRequest {
                include_revoked,
                page_size: 1000,
                page_token,
            })
            .await?;
        out.extend(page.callers);
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        page_token = page.next_page_token;
    }
}

pub(crate) async fn callers_list(g: &Global, all: bool) -> Result<(), Failure> {
    let callers = all_callers(&admin(g).await?, all).await?;
    if g.json {
        print_json(&json!(
            callers.iter().map(output::caller_json).collect::<Vec<_>>()
        ));
    } else {
        let rows: Vec<_> = callers.iter().map(output::caller_row).collect();
        table(&output::CALLER_HEADER, &rows);
    }
    Ok(())
}

pub(crate) async fn callers_revoke(g: &Global, caller: &str) -> Result<(), Failure> {
    let admin = admin(g).await?;
    let id = if caller.starts_with("c_") {
        caller.to_owned()
    } else {
        all_callers(&admin, true)
            .await?
            .into_iter()
            .find(|c| c.name == caller)
            .map(|c| c.caller_id)
            .ok_or_else(|| {
                Failure::other(format!(
                    "no caller named `{caller}`: see `vaultctl callers list --all`"
                ))
            })?
    };
    let c = admin.revoke_caller(&id).await?;
    if g.json {
        print_json(&output::caller_json(&c));
    } else {
        outln!(
            "revoked {} ({}): its API key no longer works",
            c.name,
            c.caller_id
        );
    }
    Ok(())
}
