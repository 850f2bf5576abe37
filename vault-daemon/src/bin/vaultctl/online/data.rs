//! `vaultctl tokenize` and `detokenize`: values and tokens a line each on stdin.

use super::*;

/// stdin split into lines (without line ends), held so it is zeroized on drop.
pub(super) fn stdin_lines() -> Result<(Zeroizing<String>, Lines), Failure> {
    let mut text = Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| Failure::other(format!("reading stdin: {e}")))?;
    let mut lines = Vec::new();
    let mut start = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let body = line.trim_end_matches(['\n', '\r']);
        if !body.trim().is_empty() {
            lines.push((n + 1, start..start + body.len()));
        }
        start += line.len();
    }
    if lines.is_empty() {
        return Err(Failure::other(
            "nothing on stdin: pipe the values in, one per line (e.g. `echo VALUE | vaultctl \
             tokenize pan`)",
        ));
    }
    Ok((text, lines))
}

pub(super) fn item_failure(line: usize, e: &vault_client::ItemError, json_out: bool) {
    if json_out {
        print_json(&json!({
            "line": line,
            "error": {"code": format!("{:?}", e.code), "message": e.message, "reason": e.reason},
        }));
    } else {
        outln!();
        eprintln!("line {line}: {:?}: {}", e.code, e.message);
    }
}

pub(crate) async fn tokenize(g: &Global, a: TokenizeArgs) -> Result<(), Failure> {
    let (text, lines) = stdin_lines()?;
    let client = client(g).await?;
    let mut failed = 0usize;
    for chunk in lines.chunks(a.batch_size.max(1)) {
        let items: Vec<TokenizeItem> = chunk
            .iter()
            .map(|(_, r)| {
                let item = TokenizeItem::new(SecretString::from(text[r.clone()].to_owned()));
                match a.ttl {
                    Some(s) => item.ttl(Duration::from_secs(s)),
                    None => item,
                }
            })
            .collect();
        let results = client.tokenize_batch(&a.template, items).await?;
        for ((line, _), result) in chunk.iter().zip(results) {
            match result {
                Ok(t) if g.json => print_json(&json!({
                    "line": line, "token": t.token, "key_version": t.key_version,
                    "existing": t.existing, "expires_at": expiry_text(t.expires_at),
                })),
                // A tab and the expiry after the token when it expires: `vaultctl detokenize`
                // reads the first field of a line, so the output still pipes into it.
                Ok(t) => match expiry_text(t.expires_at) {
                    Some(e) => outln!("{}\texpires {e}", t.token),
                    None => outln!("{}", t.token),
                },
                Err(e) => {
                    failed += 1;
                    item_failure(*line, &e, g.json);
                }
            }
        }
    }
    items_result(failed, lines.len())
}

/// An expiry as RFC 3339 UTC, for people and for `--json` alike.
pub(super) fn expiry_text(t: Option<SystemTime>) -> Option<String> {
    let t = t?;
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    Some(vault_daemon::timefmt::rfc3339(secs))
}

pub(super) fn items_result(failed: usize, total: usize) -> Result<(), Failure> {
    if failed == 0 {
        Ok(())
    } else {
        Err(Failure::other(format!(
            "{failed} of {total} lines failed (see above; their output lines are empty)"
        )))
    }
}

pub(crate) async fn detokenize(g: &Global, a: DetokenizeArgs) -> Result<(), Failure> {
    let (text, lines) = stdin_lines()?;
    let client = client(g).await?;
    let mut failed = 0usize;
    for chunk in lines.chunks(a.batch_size.max(1)) {
        // The first field: `vaultctl tokenize` may follow a token with a tab and its expiry.
        let tokens: Vec<&str> = chunk
            .iter()
            .map(|(_, r)| text[r.clone()].split_whitespace().next().unwrap_or(""))
            .collect();
        let results = client
            .detokenize_batch(&a.template, &tokens, &a.purpose)
            .await?;
        for ((line, _), result) in chunk.iter().zip(results) {
            match result {
                Ok(v) if g.json => print_json(&json!({
                    "line": line, "value": v.value.expose_secret(), "key_version": v.key_version,
                    "metadata": v.metadata, "expires_at": expiry_text(v.expires_at),
                })),
                Ok(v) => outln!("{}", v.value.expose_secret()),
                Err(e) => {
                    failed += 1;
                    item_failure(*line, &e, g.json);
                }
            }
        }
    }
    items_result(failed, lines.len())
}
