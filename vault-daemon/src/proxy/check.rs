//! Checking the routes of `[proxy]` against the templates, at start.

use crate::config::proxy::{Proxy, Rule};
use crate::config::{ConfigError, invalid};

use super::{json, rules, upstream};

const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";

fn check_rules(key: &str, rules: &[Rule], templates: &[String]) -> Result<(), ConfigError> {
    if rules.is_empty() {
        return Err(invalid(key, "a route needs at least one rule"));
    }
    for r in rules {
        let k = format!("{key}.rules.{}", r.name);
        if r.method.is_empty() || !r.method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(invalid(&k, "`method`: an upper-case HTTP method"));
        }
        if r.method == "CONNECT" {
            return Err(invalid(&k, "CONNECT is never proxied"));
        }
        regex_lite_check(&k, &r.path)?;
        let request = r.fields.iter().map(|f| (f, true));
        for (f, in_request) in request.chain(r.response.iter().map(|f| (f, false))) {
            let places = [&f.json, &f.form, &f.header]
                .iter()
                .filter(|p| p.is_some())
                .count();
            if places != 1 {
                return Err(invalid(&k, "a field has one of `json`, `form`, `header`"));
            }
            if let Some(p) = &f.json {
                json::Path::parse(p).map_err(|e| invalid(&k, format!("`{p}`: {e}")))?;
                if in_request && r.content_type.as_deref() != Some(JSON) {
                    return Err(invalid(
                        &k,
                        "a `json` field needs content_type = \"application/json\"",
                    ));
                }
            }
            if f.form.is_some() && (!in_request || r.content_type.as_deref() != Some(FORM)) {
                return Err(invalid(
                    &k,
                    "a `form` field is a request's, with content_type = \"application/x-www-form-urlencoded\"",
                ));
            }
            if let Some(h) = &f.header
                && http::HeaderName::from_bytes(h.as_bytes()).is_err()
            {
                return Err(invalid(&k, "a `header` field names a valid header"));
            }
            if !templates.contains(&f.template) {
                return Err(invalid(&k, format!("unknown template `{}`", f.template)));
            }
        }
    }
    Ok(())
}

fn regex_lite_check(key: &str, path: &str) -> Result<(), ConfigError> {
    rules::anchored(path)
        .map(drop)
        .map_err(|e| invalid(key, format!("`path`: {e}")))
}

fn check_upstream(
    key: &str,
    url: &str,
    https_only: bool,
    allow_private: bool,
) -> Result<(), ConfigError> {
    let u = upstream::Target::parse(url).map_err(|e| invalid(key, e))?;
    if https_only && !u.tls && !allow_private {
        return Err(invalid(
            key,
            "an outbound upstream is https (http only with allow_private)",
        ));
    }
    Ok(())
}

/// Check every route against the configured templates.
pub(crate) fn validate(cfg: &Proxy, templates: &[String]) -> Result<(), ConfigError> {
    {
        let mut names = std::collections::HashSet::new();
        for r in &cfg.inbound {
            let key = format!("proxy.inbound.{}", r.name);
            if !names.insert(r.name.clone()) || !valid_name(&r.name) {
                return Err(invalid(&key, "a unique name of letters, digits, `-`, `_`"));
            }
            check_upstream(
                &format!("{key}.upstream"),
                &r.upstream,
                false,
                r.allow_private,
            )?;
            check_rules(&key, &r.rules, templates)?;
            if r.tls.is_none() && !r.listen.ip().is_loopback() {
                return Err(invalid(
                    &key,
                    "plaintext only on a loopback address: set `tls`",
                ));
            }
        }
        for r in &cfg.outbound {
            let key = format!("proxy.outbound.{}", r.name);
            if !names.insert(r.name.clone()) || !valid_name(&r.name) {
                return Err(invalid(&key, "a unique name of letters, digits, `-`, `_`"));
            }
            check_upstream(
                &format!("{key}.upstream"),
                &r.upstream,
                true,
                r.allow_private,
            )?;
            check_rules(&key, &r.rules, templates)?;
            if r.purpose.trim().is_empty() {
                return Err(invalid(&key, "`purpose` is required"));
            }
            if r.callers.is_empty() {
                return Err(invalid(
                    &key,
                    "`callers`: who may use the route (none is nobody)",
                ));
            }
            if r.tls.is_none() && !r.listen.ip().is_loopback() {
                return Err(invalid(
                    &key,
                    "plaintext only on a loopback address: set `tls`",
                ));
            }
            if r.retry.attempts == 0 || r.retry.attempts > 5 {
                return Err(invalid(&key, "`retry.attempts`: 1 to 5"));
            }
            if r.breaker.failures == 0 {
                return Err(invalid(&key, "`breaker.failures`: at least 1"));
            }
        }
        Ok(())
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
