//! E-mail addresses: the letters and digits of the local part are encrypted (radix 62); its
//! punctuation and the domain are kept.

use zeroize::Zeroizing;

use super::layout::Layout;
use super::{Error, Tweak, check_length};

/// Longest local part (RFC 5321 §4.5.3.1.1).
const MAX_LOCAL: usize = 64;
/// Longest domain (RFC 1035 §2.3.4, without the root dot).
const MAX_DOMAIN: usize = 253;
/// Longest domain label (RFC 1035 §2.3.4).
const MAX_LABEL: usize = 63;
/// RFC 5322 §3.2.3 `atext` punctuation, and the dot of a dot-atom: kept in place.
const PUNCTUATION: &[u8] = b"!#$%&'*+-/=?^_`{|}~.";

/// An address parsed into its layout (local-part letters and digits encrypted) and its domain.
pub(crate) struct Email<'v> {
    pub(crate) layout: Layout<'v>,
    local: &'v str,
    domain: &'v str,
}

/// Lengths only: the local part and the domain are the address.
impl std::fmt::Debug for Email<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email")
            .field("layout", &self.layout)
            .field("local_len", &self.local.len())
            .field("domain_len", &self.domain.len())
            .finish()
    }
}

impl<'v> Email<'v> {
    /// Parses `local@domain`: a dot-atom local part and a host name of LDH labels. Quoted local
    /// parts and address literals are refused.
    pub(crate) fn parse(value: &'v str) -> Result<Email<'v>, Error> {
        check_length(value)?;
        let len = value.len();
        let mut parts = value.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::EmailAt { len });
        };
        let local_len = local.len();
        if local.is_empty() || local_len > MAX_LOCAL {
            return Err(Error::EmailLocalPartLength { len: local_len });
        }
        if !local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || PUNCTUATION.contains(&b))
        {
            return Err(Error::EmailLocalPartCharacter { len: local_len });
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(Error::EmailLocalPartDot { len: local_len });
        }
        if !valid_domain(domain) {
            return Err(Error::EmailDomain { len: domain.len() });
        }
        let mut secret = Vec::new();
        let mut run: Option<usize> = None;
        for (i, b) in local.bytes().enumerate() {
            match (b.is_ascii_alphanumeric(), run) {
                (true, None) => run = Some(i),
                (false, Some(s)) => {
                    secret.push(s..i);
                    run = None;
                }
                _ => {}
            }
        }
        if let Some(s) = run {
            secret.push(s..local_len);
        }
        if secret.is_empty() {
            return Err(Error::NothingToEncrypt { len });
        }
        Ok(Email {
            layout: Layout::new(value, secret),
            local,
            domain,
        })
    }

    /// The local part as given and the domain in lower case (host names are case-insensitive,
    /// RFC 4343; local parts are not, RFC 5321 §2.4).
    pub(crate) fn canonical(&self) -> String {
        format!("{}@{}", self.local, self.domain.to_ascii_lowercase())
    }

    /// Tweak fields: the local part's punctuation skeleton and the lower-cased domain, so the
    /// same letters under another domain or another punctuation give unrelated tokens.
    pub(crate) fn tweak_fields(&self, t: &mut Tweak) {
        let skeleton: Zeroizing<Vec<u8>> = Zeroizing::new(
            self.local
                .bytes()
                .map(|b| if b.is_ascii_alphanumeric() { 0 } else { b })
                .collect(),
        );
        t.field(&skeleton);
        t.field(self.domain.to_ascii_lowercase().as_bytes());
    }

    /// `j***@example.com`: the first character when the local part has two or more, then a
    /// fixed `***` that hides the length, then the domain.
    pub(crate) fn mask(&self) -> String {
        let first = if self.local.len() >= 2 {
            &self.local[..1]
        } else {
            ""
        };
        format!("{first}***@{}", self.domain)
    }
}

/// Dot-separated labels of letters, digits and hyphens, no hyphen at either end of a label.
fn valid_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= MAX_DOMAIN
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_layout() {
        let e = Email::parse("John.Smith+tag@Example.COM").unwrap();
        assert_eq!(e.layout.secret_len(), 12);
        assert_eq!(e.layout.mask(0), "****.*****+***@Example.COM");
        assert_eq!(e.canonical(), "John.Smith+tag@example.com");
        assert_eq!(e.mask(), "J***@Example.COM");
        assert_eq!(Email::parse("j@x.io").unwrap().mask(), "***@x.io");
    }

    #[test]
    fn refusals() {
        let long_local = format!("{}@x.com", "a".repeat(65));
        let long_label = format!("a@{}.com", "b".repeat(64));
        let cases: &[(&str, Error)] = &[
            ("john.example.com", Error::EmailAt { len: 16 }),
            ("a@b@c.com", Error::EmailAt { len: 9 }),
            ("@example.com", Error::EmailLocalPartLength { len: 0 }),
            (&long_local, Error::EmailLocalPartLength { len: 65 }),
            ("jo hn@x.com", Error::EmailLocalPartCharacter { len: 5 }),
            ("\"jo\"@x.com", Error::EmailLocalPartCharacter { len: 4 }),
            (".john@x.com", Error::EmailLocalPartDot { len: 5 }),
            ("john.@x.com", Error::EmailLocalPartDot { len: 5 }),
            ("jo..hn@x.com", Error::EmailLocalPartDot { len: 6 }),
            ("john@", Error::EmailDomain { len: 0 }),
            ("john@-x.com", Error::EmailDomain { len: 6 }),
            ("john@x..com", Error::EmailDomain { len: 6 }),
            ("john@[1.2.3.4]", Error::EmailDomain { len: 9 }),
            (&long_label, Error::EmailDomain { len: 68 }),
            ("+-+@x.com", Error::NothingToEncrypt { len: 9 }),
        ];
        for (value, want) in cases {
            assert_eq!(Email::parse(value).unwrap_err(), *want, "{value}");
        }
    }
}
