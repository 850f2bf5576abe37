//! A strict JSON reader that finds the values a rule selects and where they are in the body,
//! so the proxy can replace them in place and leave every other byte as the client sent it
//! (re-serialising would reorder keys, rewrite numbers and change what the upstream signs).
//!
//! Strict where proxies are usually lax, because a proxy and its upstream that read one body
//! two ways is how a field slips past the rewrite: a duplicate key in any object, a nesting
//! deeper than [`MAX_DEPTH`], invalid UTF-8, a lone surrogate escape, trailing bytes after the
//! document, or anything RFC 8259 does not allow refuses the whole body.
//!
//! Paths are a small JSONPath subset: `$`, then `.name`, `['name']`, `[N]` or `[*]` steps.

use std::collections::HashSet;
use std::ops::Range;

/// Deepest nesting of arrays and objects accepted.
pub(crate) const MAX_DEPTH: usize = 32;

/// Why a body or a path was refused. Says where, never what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JsonError {
    /// Not JSON (or not UTF-8) at this byte offset.
    #[error("the body is not valid JSON (at byte {0})")]
    Syntax(usize),
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("the body nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// An object has the same key twice.
    #[error("the body has a duplicate key in one object (at byte {0})")]
    DuplicateKey(usize),
}

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// An object member.
    Key(String),
    /// An array element.
    Index(usize),
    /// Every array element.
    AnyIndex,
}

/// A compiled path (`$.card.number`, `$.items[*].pan`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Path(pub(crate) Vec<Step>);

impl Path {
    /// Parse the JSONPath subset; the error says what is wrong with the path.
    pub(crate) fn parse(text: &str) -> Result<Path, String> {
        let mut rest = text.strip_prefix('$').ok_or("a path starts with `$`")?;
        let mut steps = Vec::new();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('.') {
                let end = r.find(['.', '[']).unwrap_or(r.len());
                let name = &r[..end];
                if name.is_empty() || name == "*" {
                    return Err("`.` is followed by a member name".into());
                }
                steps.push(Step::Key(name.to_owned()));
                rest = &r[end..];
            } else if let Some(r) = rest.strip_prefix("['") {
                let end = r.find("']").ok_or("`['` without `']`")?;
                steps.push(Step::Key(r[..end].to_owned()));
                rest = &r[end + 2..];
            } else if let Some(r) = rest.strip_prefix('[') {
                let end = r.find(']').ok_or("`[` without `]`")?;
                let inner = &r[..end];
                steps.push(if inner == "*" {
                    Step::AnyIndex
                } else {
                    Step::Index(inner.parse().map_err(|_| "an index is a number or `*`")?)
                });
                rest = &r[end + 1..];
            } else {
                return Err("expected `.name`, `['name']`, `[N]` or `[*]`".into());
            }
        }
        if steps.is_empty() {
            return Err("the path selects the whole document".into());
        }
        Ok(Path(steps))
    }

    fn matches(&self, at: &[Step]) -> bool {
        self.0.len() == at.len()
            && self.0.iter().zip(at).all(|(p, a)| match (p, a) {
                (Step::AnyIndex, Step::Index(_)) => true,
                (p, a) => p == a,
            })
    }
}

/// What a selected value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A string (the only kind the proxy rewrites).
    String,
    /// A number, `true`, `false`, `null`, an object or an array.
    Other,
}

/// A value a path selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// Which of the paths.
    pub(crate) path: usize,
    /// The value's bytes in the body, quotes included.
    pub(crate) span: Range<usize>,
    /// Its kind.
    pub(crate) kind: Kind,
}

/// Every value in `body` that one of `paths` selects, in body order.
pub(crate) fn find(body: &[u8], paths: &[Path]) -> Result<Vec<Found>, JsonError> {
    let text = std::str::from_utf8(body).map_err(|e| JsonError::Syntax(e.valid_up_to()))?;
    let mut r = Reader {
        b: text.as_bytes(),
        i: 0,
        paths,
        at: Vec::new(),
        found: Vec::new(),
    };
    r.ws();
    r.value(0)?;
    r.ws();
    if r.i != r.b.len() {
        return Err(JsonError::Syntax(r.i));
    }
    Ok(r.found)
}

/// The text of the JSON string literal at `span` (quotes included), unescaped.
pub(crate) fn string_at(body: &[u8], span: &Range<usize>) -> Result<String, JsonError> {
    let mut r = Reader {
        b: body,
        i: span.start,
        paths: &[],
        at: Vec::new(),
        found: Vec::new(),
    };
    r.string()
}

/// `s` as a JSON string literal.
pub(crate) fn quote(s: &str) -> String {
    // serde_json's string escaping cannot fail for a `&str`.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
    paths: &'a [Path],
    at: Vec<Step>,
    found: Vec<Found>,
}

impl Reader<'_> {
    fn ws(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn err(&self) -> JsonError {
        JsonError::Syntax(self.i)
    }

    fn eat(&mut self, c: u8) -> Result<(), JsonError> {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err())
        }
    }

    fn value(&mut self, depth: usize) -> Result<(), JsonError> {
        let start = self.i;
        let kind = match self.b.get(self.i) {
            Some(b'{') => {
                self.object(depth + 1)?;
                Kind::Other
            }
            Some(b'[') => {
                self.array(depth + 1)?;
                Kind::Other
            }
            Some(b'"') => {
                self.string()?;
                Kind::String
            }
            Some(b't') => self.literal(b"true")?,
            Some(b'f') => self.literal(b"false")?,
            Some(b'n') => self.literal(b"null")?,
            Some(b'-' | b'0'..=b'9') => {
                self.number()?;
                Kind::Other
            }
            _ => return Err(self.err()),
        };
        for (n, p) in self.paths.iter().enumerate() {
            if p.matches(&self.at) {
                self.found.push(Found {
                    path: n,
                    span: start..self.i,
                    kind,
                });
            }
        }
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Result<Kind, JsonError> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(Kind::Other)
        } else {
            Err(self.err())
        }
    }

    fn number(&mut self) -> Result<(), JsonError> {
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.b.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.err()),
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if !self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
                return Err(self.err());
            }
            self.digits();
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
                return Err(self.err());
            }
            self.digits();
        }
        Ok(())
    }

    fn digits(&mut self) {
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let h = self.b.get(self.i..self.i + 4).ok_or_else(|| self.err())?;
        let s = std::str::from_utf8(h).map_err(|_| self.err())?;
        let v = u32::from_str_radix(s, 16).map_err(|_| self.err())?;
        self.i += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<String, JsonError> {
        self.eat(b'"')?;
        let mut out = String::new();
        loop {
            let start = self.i;
            while let Some(&c) = self.b.get(self.i) {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.i += 1;
            }
            let run = std::str::from_utf8(&self.b[start..self.i]).map_err(|_| self.err())?;
            out.push_str(run);
            match self.b.get(self.i) {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = *self.b.get(self.i).ok_or_else(|| self.err())?;
                    self.i += 1;
                    match c {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let cp = if (0xd800..0xdc00).contains(&hi) {
                                if !self.b[self.i..].starts_with(b"\\u") {
                                    return Err(self.err());
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xdc00..0xe000).contains(&lo) {
                                    return Err(self.err());
                                }
                                0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                            } else {
                                hi
                            };
                            out.push(char::from_u32(cp).ok_or_else(|| self.err())?);
                        }
                        _ => return Err(self.err()),
                    }
                }
                _ => return Err(self.err()),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<(), JsonError> {
        if depth > MAX_DEPTH {
            return Err(JsonError::TooDeep);
        }
        self.eat(b'{')?;
        self.ws();
        if self.b.get(self.i) == Some(&b'}') {
            self.i += 1;
            return Ok(());
        }
        let mut keys = HashSet::new();
        loop {
            self.ws();
            let at = self.i;
            let key = self.string()?;
            if !keys.insert(key.clone()) {
                return Err(JsonError::DuplicateKey(at));
            }
            self.ws();
            self.eat(b':')?;
            self.ws();
            self.at.push(Step::Key(key));
            let r = self.value(depth);
            self.at.pop();
            r?;
            self.ws();
            match self.b.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(self.err()),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<(), JsonError> {
        if depth > MAX_DEPTH {
            return Err(JsonError::TooDeep);
        }
        self.eat(b'[')?;
        self.ws();
        if self.b.get(self.i) == Some(&b']') {
            self.i += 1;
            return Ok(());
        }
        let mut n = 0;
        loop {
            self.ws();
            self.at.push(Step::Index(n));
            let r = self.value(depth);
            self.at.pop();
            r?;
            n += 1;
            self.ws();
            match self.b.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(self.err()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Path {
        Path::parse(s).unwrap()
    }

    #[test]
    fn finds_selected_strings_with_their_spans() {
        let body = br#"{"card": {"number": "4111 1111 1111 1111", "cvv": "123"}, "n": 1.5e3}"#;
        let found = find(body, &[p("$.card.number"), p("$.card.cvv"), p("$.n")]).unwrap();
        assert_eq!(found.len(), 3);
        assert_eq!(
            string_at(body, &found[0].span).unwrap(),
            "4111 1111 1111 1111"
        );
        assert_eq!(found[1].path, 1);
        assert_eq!(found[2].kind, Kind::Other);
    }

    #[test]
    fn wildcard_and_bracket_steps() {
        let body = br#"{"items": [{"pan": "1"}, {"pan": "2"}], "a b": {"c": "3"}}"#;
        let found = find(
            body,
            &[p("$.items[*].pan"), p("$['a b'].c"), p("$.items[1].pan")],
        )
        .unwrap();
        let paths: Vec<usize> = found.iter().map(|f| f.path).collect();
        assert_eq!(paths, vec![0, 0, 2, 1]);
    }

    #[test]
    fn escapes_decode_and_surrogates_pair() {
        let body = br#"{"v": "4\u0031\ud83d\ude00\n"}"#;
        let found = find(body, &[p("$.v")]).unwrap();
        assert_eq!(string_at(body, &found[0].span).unwrap(), "41\u{1f600}\n");
        assert!(find(br#"{"v": "\ud83d"}"#, &[]).is_err());
    }

    #[test]
    fn refuses_what_two_readers_could_read_two_ways() {
        assert!(matches!(
            find(br#"{"a": "1", "a": "2"}"#, &[]),
            Err(JsonError::DuplicateKey(_))
        ));
        // The same key spelled with an escape is the same key.
        assert!(matches!(
            find(br#"{"a": "1", "\u0061": "2"}"#, &[]),
            Err(JsonError::DuplicateKey(_))
        ));
        let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
        assert_eq!(find(deep.as_bytes(), &[]), Err(JsonError::TooDeep));
        for bad in [
            &b"{\"a\": 1} x"[..],
            b"{\"a\": 01}",
            b"{'a': 1}",
            b"{\"a\": \xff}",
            b"[1,]",
            b"{\"a\":\"\x01\"}",
            b"",
        ] {
            assert!(
                find(bad, &[]).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn paths_parse_or_say_why() {
        assert_eq!(p("$.a[0]['b c']").0.len(), 3);
        for bad in ["a.b", "$", "$..a", "$.a[x]", "$.*"] {
            assert!(Path::parse(bad).is_err(), "{bad}");
        }
    }
}
