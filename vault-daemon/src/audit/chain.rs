//! The stored line format, the canonical encoding each MAC covers, and checkpoint signatures.
//!
//! Each event line carries `prev` (the previous event's MAC, 32 zero bytes for the first) and
//! `mac = HMAC-SHA256(audit key, canonical(event) ‖ prev)`. The canonical encoding is a
//! length-prefixed binary form, independent of JSON formatting; the verifier additionally
//! requires each line to be byte-identical to the writer's serialisation of what it parses to,
//! so no edit (even a JSON-equivalent one) goes unnoticed.

use ring::hmac;
use serde::{Deserialize, Serialize};

use super::{Event, Outcome};
use crate::policy::Operation;

const EVENT_DOMAIN: &[u8] = b"vault-audit/event/v1\0";
const CHECKPOINT_DOMAIN: &[u8] = b"vault-audit/checkpoint/v1\0";

/// The `prev` of the first event.
pub(crate) const GENESIS: [u8; 32] = [0; 32];

/// One stored event: the caller's event plus its position and chain MACs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Sequence number, from 1, without gaps.
    pub seq: u64,
    /// Unix time in milliseconds, set by the writer.
    pub time_ms: u64,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
    /// Hex MAC of the previous event.
    pub prev: String,
    /// Hex MAC of this event.
    pub mac: String,
}

/// A signed commitment to the chain head at a sequence number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Sequence number of the last event covered.
    pub seq: u64,
    /// Hex MAC of that event (the chain head).
    pub head: String,
    /// Unix time in milliseconds.
    pub time_ms: u64,
    /// Hex Ed25519 signature over (seq, head, time).
    pub sig: String,
}

/// One line of `audit.log`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
// Lines are built one at a time and serialised at once; boxing the event would only add an
// allocation per line.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Line {
    Event(Record),
    Checkpoint(Checkpoint),
}

impl Line {
    /// The exact bytes the writer puts on disk (without the newline).
    pub(crate) fn to_json(&self) -> String {
        // Serialising plain strings, integers and enums into a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

pub(crate) fn event_mac(
    key: &hmac::Key,
    seq: u64,
    time_ms: u64,
    event: &Event,
    prev: &[u8; 32],
) -> [u8; 32] {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(&canonical(seq, time_ms, event));
    ctx.update(prev);
    let tag = ctx.sign();
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

pub(crate) fn verify_event_mac(
    key: &hmac::Key,
    record: &Record,
    prev: &[u8; 32],
    mac: &[u8; 32],
) -> bool {
    let mut msg = canonical(record.seq, record.time_ms, &record.event);
    msg.extend_from_slice(prev);
    // Constant-time comparison inside ring.
    hmac::verify(key, &msg, mac).is_ok()
}

pub(crate) fn checkpoint_message(seq: u64, head: &[u8; 32], time_ms: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHECKPOINT_DOMAIN.len() + 48);
    m.extend_from_slice(CHECKPOINT_DOMAIN);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(head);
    m.extend_from_slice(&time_ms.to_be_bytes());
    m
}

pub(crate) fn decode_mac(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

fn canonical(seq: u64, time_ms: u64, e: &Event) -> Vec<u8> {
    let mut b = Vec::with_capacity(256);
    b.extend_from_slice(EVENT_DOMAIN);
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&time_ms.to_be_bytes());
    put_str(&mut b, &e.caller);
    put_str(&mut b, operation_name(e.operation));
    put_opt(&mut b, e.action.as_deref());
    put_opt(&mut b, e.template.as_deref());
    b.extend_from_slice(&e.items.to_be_bytes());
    put_opt(&mut b, e.purpose.as_deref());
    match &e.outcome {
        Outcome::Ok => put_str(&mut b, "ok"),
        Outcome::Partial { failed } => {
            put_str(&mut b, "partial");
            b.extend_from_slice(&failed.to_be_bytes());
        }
        Outcome::Denied { reason } => {
            put_str(&mut b, "denied");
            put_str(&mut b, reason);
        }
        Outcome::Failed { code } => {
            put_str(&mut b, "failed");
            put_str(&mut b, code);
        }
        Outcome::Unknown { reason } => {
            put_str(&mut b, "unknown");
            put_str(&mut b, reason);
        }
    }
    put_str(&mut b, &e.request_id);
    put_opt(&mut b, e.subject.as_deref());
    b.extend_from_slice(&(e.key_versions.len() as u32).to_be_bytes());
    for v in &e.key_versions {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend_from_slice(&(e.token_refs.len() as u32).to_be_bytes());
    for t in &e.token_refs {
        put_str(&mut b, t);
    }
    // Added later: only events that carry a detail append it, so every event written before
    // the field existed keeps its MAC. The token-ref count above delimits what comes before.
    if let Some(d) = &e.detail {
        b.push(1);
        put_str(&mut b, d);
    }
    b
}

fn operation_name(op: Operation) -> &'static str {
    op.as_str()
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_be_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn put_opt(b: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => b.push(0),
        Some(s) => {
            b.push(1);
            put_str(b, s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_round_trips_byte_identically() {
        let mut event = Event::new(
            "key:app",
            Operation::Detokenize,
            "req-1",
            Outcome::Partial { failed: 2 },
        );
        event.template = Some("pan".into());
        event.purpose = Some("chargeback".into());
        event.key_versions = vec![3, 4];
        let line = Line::Event(Record {
            seq: 7,
            time_ms: 1,
            event,
            prev: "00".into(),
            mac: "11".into(),
        });
        let json = line.to_json();
        let back: Line = serde_json::from_str(&json).unwrap();
        assert_eq!(back, line);
        assert_eq!(back.to_json(), json);
    }

    /// `detail` is under the MAC, and an event without one has the canonical form it had
    /// before the field existed (old logs keep verifying).
    #[test]
    fn detail_is_bound_and_optional() {
        let plain = Event::new("vaultd", Operation::Admin, "r", Outcome::Ok);
        let before = canonical(1, 1, &plain);
        assert!(
            before.ends_with(&0u32.to_be_bytes()),
            "ends with the token-ref count"
        );
        let mut with = plain.clone();
        with.detail = Some("27 bytes".into());
        let mut other = plain.clone();
        other.detail = Some("28 bytes".into());
        assert_ne!(canonical(1, 1, &with), before);
        assert_ne!(canonical(1, 1, &with), canonical(1, 1, &other));
        let unknown = Event::new(
            "vaultd",
            Operation::Admin,
            "r",
            Outcome::Unknown {
                reason: "gone".into(),
            },
        );
        assert_ne!(canonical(1, 1, &unknown), before);
    }

    #[test]
    fn canonical_is_unambiguous() {
        let mut a = Event::new("ab", Operation::Tokenize, "c", Outcome::Ok);
        let mut b = Event::new("a", Operation::Tokenize, "bc", Outcome::Ok);
        assert_ne!(canonical(1, 1, &a), canonical(1, 1, &b));
        a.template = Some(String::new());
        b.template = None;
        assert_ne!(canonical(1, 1, &a), canonical(1, 1, &b));
    }
}
