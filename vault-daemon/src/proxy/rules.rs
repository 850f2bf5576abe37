//! Rules compiled from the config: which request a rule takes (method, anchored path regex,
//! media type), and the fields it selects in a body or the headers: where each value is, so
//! it can be replaced in place ([`Selection::apply`]).

use std::ops::Range;

use regex::Regex;
use zeroize::Zeroizing;

use super::{form, json};
use crate::config::proxy::{Field, Rule as RuleConfig};

/// `path` as a regex matching the whole path.
pub(crate) fn anchored(path: &str) -> Result<Regex, String> {
    let core = path.strip_prefix('^').unwrap_or(path);
    let core = core.strip_suffix('$').unwrap_or(core);
    Regex::new(&format!("^(?:{core})$")).map_err(|e| e.to_string())
}

/// Where a field's value is.
#[derive(Debug, Clone)]
pub(crate) enum Place {
    /// A JSON path.
    Json(json::Path),
    /// A form field name.
    Form(String),
    /// A header.
    Header(http::HeaderName),
}

/// A field: where, and its template.
#[derive(Debug, Clone)]
pub(crate) struct Spot {
    pub(crate) place: Place,
    pub(crate) template: String,
    /// The config's spelling, for error bodies and logs (never a value).
    pub(crate) label: String,
}

impl Spot {
    // Config validation guarantees one place that parses; `label` names the field.
    fn from_config(f: &Field) -> Result<Spot, String> {
        let (place, label) = if let Some(p) = &f.json {
            (Place::Json(json::Path::parse(p)?), p.clone())
        } else if let Some(n) = &f.form {
            (Place::Form(n.clone()), n.clone())
        } else if let Some(h) = &f.header {
            let name = http::HeaderName::from_bytes(h.as_bytes()).map_err(|e| e.to_string())?;
            (Place::Header(name), h.clone())
        } else {
            return Err("a field without a place".into());
        };
        Ok(Spot {
            place,
            template: f.template.clone(),
            label,
        })
    }
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub(crate) name: String,
    method: http::Method,
    path: Regex,
    content_type: Option<String>,
    pub(crate) fields: Vec<Spot>,
    pub(crate) response: Vec<Spot>,
}

impl Rule {
    pub(crate) fn compile(r: &RuleConfig) -> Result<Rule, String> {
        Ok(Rule {
            name: r.name.clone(),
            method: http::Method::from_bytes(r.method.as_bytes()).map_err(|e| e.to_string())?,
            path: anchored(&r.path)?,
            content_type: r.content_type.clone(),
            fields: r
                .fields
                .iter()
                .map(Spot::from_config)
                .collect::<Result<_, _>>()?,
            response: r
                .response
                .iter()
                .map(Spot::from_config)
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether the rule takes a request.
    pub(crate) fn takes(&self, method: &http::Method, path: &str, media: Option<&str>) -> bool {
        self.method == method
            && self.path.is_match(path)
            && self
                .content_type
                .as_deref()
                .is_none_or(|c| Some(c) == media)
    }
}

/// The media type of a `content-type` value (lower case, parameters dropped).
pub(crate) fn media_type(headers: &http::HeaderMap) -> Option<String> {
    let v = headers.get(http::header::CONTENT_TYPE)?.to_str().ok()?;
    Some(v.split(';').next()?.trim().to_ascii_lowercase())
}

/// Why fields could not be selected. Names the field, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SelectError {
    /// The body is not JSON the proxy accepts.
    #[error(transparent)]
    Json(#[from] json::JsonError),
    /// The form body does not decode, or has a selected field twice.
    #[error(transparent)]
    Form(#[from] form::FormError),
    /// A selected value is not a string (a JSON number, object, …).
    #[error("field `{0}` is not a string")]
    NotAString(String),
    /// A selected header appears twice or is not text.
    #[error("header `{0}` appears more than once or is not text")]
    Header(String),
}

/// Where a selected value is.
#[derive(Debug, Clone)]
enum At {
    /// A span of the body, and whether it is a JSON string literal (else form-encoded).
    Body(Range<usize>, bool),
    Header(http::HeaderName),
}

/// One selected value.
pub(crate) struct Hit {
    /// Index into the spots it was selected with.
    pub(crate) spot: usize,
    /// The value, wiped on drop.
    pub(crate) value: Zeroizing<String>,
    at: At,
}

/// Says which spot and where, never the value (a card, or a token about to be revealed).
impl std::fmt::Debug for Hit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hit")
            .field("spot", &self.spot)
            .field("value", &"<redacted>")
            .field("at", &self.at)
            .finish()
    }
}

/// The values a list of spots selected in one message.
#[derive(Debug)]
pub(crate) struct Selection {
    pub(crate) hits: Vec<Hit>,
}

/// Select `spots` in a message's headers and body (`media` is its media type).
pub(crate) fn select(
    spots: &[Spot],
    headers: &http::HeaderMap,
    body: &[u8],
    media: Option<&str>,
) -> Result<Selection, SelectError> {
    let mut hits = Vec::new();
    let paths: Vec<(usize, json::Path)> = spots
        .iter()
        .enumerate()
        .filter_map(|(n, s)| match &s.place {
            Place::Json(p) => Some((n, p.clone())),
            _ => None,
        })
        .collect();
    if !paths.is_empty() && media == Some("application/json") {
        let only: Vec<json::Path> = paths.iter().map(|(_, p)| p.clone()).collect();
        for f in json::find(body, &only)? {
            let spot = paths[f.path].0;
            if f.kind != json::Kind::String {
                return Err(SelectError::NotAString(spots[spot].label.clone()));
            }
            let value = Zeroizing::new(json::string_at(body, &f.span)?);
            hits.push(Hit {
                spot,
                value,
                at: At::Body(f.span, true),
            });
        }
    }
    let names: Vec<(usize, String)> = spots
        .iter()
        .enumerate()
        .filter_map(|(n, s)| match &s.place {
            Place::Form(f) => Some((n, f.clone())),
            _ => None,
        })
        .collect();
    if !names.is_empty() && media == Some("application/x-www-form-urlencoded") {
        let only: Vec<String> = names.iter().map(|(_, n)| n.clone()).collect();
        for f in form::find(body, &only)? {
            let value = Zeroizing::new(form::decode(&body[f.span.clone()], f.span.start)?);
            hits.push(Hit {
                spot: names[f.field].0,
                value,
                at: At::Body(f.span, false),
            });
        }
    }
    for (n, s) in spots.iter().enumerate() {
        if let Place::Header(h) = &s.place {
            let mut all = headers.get_all(h).iter();
            let (Some(v), None) = (all.next(), all.next()) else {
                if headers.contains_key(h) {
                    return Err(SelectError::Header(s.label.clone()));
                }
                continue;
            };
            let text = v
                .to_str()
                .map_err(|_| SelectError::Header(s.label.clone()))?;
            hits.push(Hit {
                spot: n,
                value: Zeroizing::new(text.trim().to_owned()),
                at: At::Header(h.clone()),
            });
        }
    }
    Ok(Selection { hits })
}

impl Selection {
    /// The message with each hit's value replaced by `with[i]` (same order as `hits`): the
    /// body spliced, headers set. Returns the new body, wiped on drop (it may hold revealed
    /// values).
    pub(crate) fn apply(
        &self,
        headers: &mut http::HeaderMap,
        body: &[u8],
        with: &[Zeroizing<String>],
    ) -> Result<Zeroizing<Vec<u8>>, SelectError> {
        let mut spans: Vec<(Range<usize>, bool, &str)> = Vec::new();
        for (hit, new) in self.hits.iter().zip(with) {
            match &hit.at {
                At::Body(span, is_json) => spans.push((span.clone(), *is_json, new.as_str())),
                At::Header(name) => {
                    let v = http::HeaderValue::from_str(new)
                        .map_err(|_| SelectError::Header(name.to_string()))?;
                    headers.insert(name.clone(), v);
                }
            }
        }
        spans.sort_by_key(|(s, _, _)| s.start);
        let mut out = Zeroizing::new(Vec::with_capacity(body.len() + 64));
        let mut pos = 0;
        for (span, is_json, new) in spans {
            out.extend_from_slice(&body[pos..span.start]);
            if is_json {
                out.extend_from_slice(json::quote(new).as_bytes());
            } else {
                out.extend_from_slice(form::encode(new).as_bytes());
            }
            pos = span.end;
        }
        out.extend_from_slice(&body[pos..]);
        Ok(out)
    }
}

/// Replace, in `text`, every occurrence of a `from` value with its `to`: what keeps a value an
/// upstream echoed (in an error body, a header, anywhere) from reaching the other side.
/// Digit values are found as runs of digits, spaces and dashes whose digits are the value
/// (`4111 1111-1111 1111` is the card `4111111111111111`), not inside a longer run; other
/// values as exact text not inside a longer run of letters or digits. Returns how many were
/// replaced.
pub(crate) fn scrub(text: &mut Zeroizing<Vec<u8>>, pairs: &[(&str, &str)]) -> usize {
    // A value of digits, spaces and dashes is looked for by its digits.
    let numeric = |v: &str| {
        (v.bytes().any(|b| b.is_ascii_digit())
            && v.bytes()
                .all(|b| b.is_ascii_digit() || b == b' ' || b == b'-'))
        .then(|| v.bytes().filter(u8::is_ascii_digit).collect::<Vec<u8>>())
    };
    let numbers: Vec<(Zeroizing<Vec<u8>>, &str)> = pairs
        .iter()
        .filter_map(|(from, to)| numeric(from).map(|d| (Zeroizing::new(d), *to)))
        .collect();
    let mut count = 0;
    let mut out = Zeroizing::new(Vec::with_capacity(text.len()));
    let b = &text[..];
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) {
            // A run of digits, spaces and dashes, ending on a digit.
            let mut end = i;
            let mut last_digit = i;
            while end < b.len() && (b[end].is_ascii_digit() || b[end] == b' ' || b[end] == b'-') {
                if b[end].is_ascii_digit() {
                    last_digit = end;
                }
                end += 1;
            }
            let run = &b[i..=last_digit];
            let bounded = b
                .get(last_digit + 1)
                .is_none_or(|c| !c.is_ascii_alphanumeric());
            let only: Zeroizing<Vec<u8>> =
                Zeroizing::new(run.iter().copied().filter(u8::is_ascii_digit).collect());
            let hit = numbers.iter().find(|(d, _)| d[..] == only[..]);
            match (bounded, hit) {
                (true, Some((_, to))) => {
                    out.extend_from_slice(to.as_bytes());
                    count += 1;
                }
                (false, _) => out.extend_from_slice(run),
                // Not the whole run: each number in it on its own (`cvv 123 4567`).
                (true, None) => {
                    let mut j = 0;
                    while j < run.len() {
                        if run[j].is_ascii_digit() {
                            let k = run[j..]
                                .iter()
                                .position(|c| !c.is_ascii_digit())
                                .map_or(run.len(), |p| j + p);
                            let seg = &run[j..k];
                            match numbers.iter().find(|(d, _)| &d[..] == seg) {
                                Some((_, to)) => {
                                    out.extend_from_slice(to.as_bytes());
                                    count += 1;
                                }
                                None => out.extend_from_slice(seg),
                            }
                            j = k;
                        } else {
                            out.push(run[j]);
                            j += 1;
                        }
                    }
                }
            }
            i = last_digit + 1;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    *text = out;
    for (from, to) in pairs
        .iter()
        .filter(|(f, _)| !f.is_empty() && numeric(f).is_none())
    {
        let from = from.as_bytes();
        let mut out = Zeroizing::new(Vec::with_capacity(text.len()));
        let b = &text[..];
        let mut i = 0;
        while i < b.len() {
            let bounded = b[i..].starts_with(from)
                && (i == 0 || !b[i - 1].is_ascii_alphanumeric())
                && b.get(i + from.len())
                    .is_none_or(|c| !c.is_ascii_alphanumeric());
            if bounded {
                out.extend_from_slice(to.as_bytes());
                i += from.len();
                count += 1;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        *text = out;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spot(place: Place) -> Spot {
        Spot {
            place,
            template: "pan_vault".into(),
            label: "f".into(),
        }
    }

    #[test]
    fn json_fields_are_replaced_in_place() {
        let body = br#"{"a" : 1.50, "card": {"number": "4111111111111111"}}"#;
        let spots = [spot(Place::Json(
            json::Path::parse("$.card.number").unwrap(),
        ))];
        let mut headers = http::HeaderMap::new();
        let sel = select(&spots, &headers, body, Some("application/json")).unwrap();
        assert_eq!(&*sel.hits[0].value, "4111111111111111");
        let out = sel
            .apply(&mut headers, body, &[Zeroizing::new("tok_x".into())])
            .unwrap();
        assert_eq!(&out[..], br#"{"a" : 1.50, "card": {"number": "tok_x"}}"#);
    }

    #[test]
    fn numbers_are_refused_not_passed() {
        let body = br#"{"card": 4111111111111111}"#;
        let spots = [spot(Place::Json(json::Path::parse("$.card").unwrap()))];
        let e = select(
            &spots,
            &http::HeaderMap::new(),
            body,
            Some("application/json"),
        );
        assert!(matches!(e, Err(SelectError::NotAString(_))));
    }

    #[test]
    fn form_and_header_fields() {
        let body = b"x=1&card=4111+1111";
        let spots = [
            spot(Place::Form("card".into())),
            spot(Place::Header(http::HeaderName::from_static("x-card"))),
        ];
        let mut headers = http::HeaderMap::new();
        headers.insert("x-card", http::HeaderValue::from_static("5555"));
        let sel = select(
            &spots,
            &headers,
            body,
            Some("application/x-www-form-urlencoded"),
        )
        .unwrap();
        assert_eq!(sel.hits.len(), 2);
        let out = sel
            .apply(
                &mut headers,
                body,
                &[Zeroizing::new("t 1".into()), Zeroizing::new("t2".into())],
            )
            .unwrap();
        assert_eq!(&out[..], b"x=1&card=t%201");
        assert_eq!(headers["x-card"], "t2");
        headers.append("x-card", http::HeaderValue::from_static("6666"));
        assert!(select(&spots[1..], &headers, b"", None).is_err());
    }

    #[test]
    fn scrub_replaces_bounded_occurrences_only() {
        let mut t = Zeroizing::new(
            b"card 4111111111111111 and 41111111111111112, cvv=123; 4111 1111-1111 1111 a@b.c x1234 9 123"
                .to_vec(),
        );
        let n = scrub(
            &mut t,
            &[
                ("4111 1111 1111 1111", "tok_a"),
                ("123", "cvt_b"),
                ("a@b.c", "tok_e"),
            ],
        );
        assert_eq!(n, 5);
        assert_eq!(
            &t[..],
            b"card tok_a and 41111111111111112, cvv=cvt_b; tok_a tok_e x1234 9 cvt_b"
        );
    }

    #[test]
    fn paths_are_anchored() {
        let r = anchored("/pay").unwrap();
        assert!(r.is_match("/pay"));
        assert!(!r.is_match("/pay/x") && !r.is_match("/x/pay"));
        let r = anchored("^/a|/b$").unwrap();
        assert!(!r.is_match("/a/x"));
    }
}
