//! Volatile tokens: values that may live only for minutes and only in memory (card
//! verification codes, which PCI DSS forbids storing after authorization and requires
//! encrypted before it).
//!
//! - **Nothing on disk.** The encrypted value, its use counter and its expiry live in this
//!   process's memory only: not in the store, not in a backup, not in the audit log.
//! - **Crypto-shredding by window.** Time is cut into windows of [`WINDOW_SECS`]. A value is
//!   sealed (AES-256-GCM) under the key of the window its token expires in, and that key is
//!   dropped (its bytes wiped) once the window has ended, so a copy of the ciphertext that
//!   escaped anyway (a swapped page) is unreadable after at most one window past expiry.
//! - **A use limit.** Each reveal spends one use (default one); the last use removes the value.
//! - **Gone, and why.** A token that no longer reveals says which of [`Gone`] applies: used,
//!   expired, sealed (the vault was sealed since), or issued by another process (another
//!   daemon, or this one before a restart: every process has its own instance tag, carried in
//!   the token). Only a keyed hash of the token is kept for that answer, for an hour.
//!
//! Several daemons on one database do not share volatile tokens: a token is revealed by the
//! process that issued it, and any other answers [`Gone::OtherProcess`]. Route the reveal to
//! the daemon that tokenized (the proxy's inbound and outbound routes on one daemon do).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use zeroize::Zeroizing;

use crate::aead::Gcm;
use crate::secret::{Key32, fill_random};

use super::Error;

/// Length of a key window, seconds.
pub const WINDOW_SECS: i64 = 60;
/// Default lifetime of a volatile token, seconds (15 minutes).
pub const DEFAULT_TTL_SECS: u64 = 900;
/// Longest lifetime a volatile token may be given, seconds (one hour).
pub const MAX_TTL_SECS: u64 = 3600;
/// Most reveals a volatile template may allow per token.
pub const MAX_USES: u32 = 10;
/// Most live volatile tokens in one process (a bound on memory, not a quota per caller).
pub const MAX_LIVE: usize = 1_000_000;
/// How long "gone, and why" is remembered after a token's expiry, seconds.
const REMEMBER_SECS: i64 = 3600;
/// Token prefix: `cvt_`, the instance tag (8 base32), `_`, 26 base32 (128 random bits).
pub const PREFIX: &str = "cvt_";

/// Why a volatile token no longer reveals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// Its uses were spent.
    Used,
    /// Its lifetime ended.
    Expired,
    /// The vault was sealed after it was issued (sealing drops every volatile value).
    Sealed,
    /// Another process issued it: another daemon, or this one before a restart.
    OtherProcess,
}

impl Gone {
    /// Words for an error message.
    pub fn as_str(self) -> &'static str {
        match self {
            Gone::Used => "its uses were spent",
            Gone::Expired => "it expired",
            Gone::Sealed => "the vault was sealed after it was issued",
            Gone::OtherProcess => {
                "it was issued by another daemon process, or by this one before a restart \
                 (volatile values live in one process's memory)"
            }
        }
    }
}

/// A volatile template's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Lifetime when a call gives none, seconds (at most [`MAX_TTL_SECS`]).
    pub ttl_secs: u64,
    /// Reveals per token (1 to [`MAX_USES`]).
    pub uses: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            ttl_secs: DEFAULT_TTL_SECS,
            uses: 1,
        }
    }
}

struct Entry {
    template: String,
    window: i64,
    sealed: Vec<u8>,
    expires_at: i64,
    uses_left: u32,
}

#[derive(Default)]
struct Inner {
    keys: BTreeMap<i64, Gcm>,
    live: HashMap<[u8; 16], Entry>,
    gone: HashMap<[u8; 16], (Gone, i64)>,
}

/// The volatile values of one process.
pub(crate) struct Volatile {
    instance: String,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Volatile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volatile")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

const B32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(B32[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(B32[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

fn unbase32(text: &str, out: &mut [u8]) -> Option<()> {
    let (mut acc, mut bits, mut i) = (0u32, 0u32, 0usize);
    for c in text.bytes() {
        let v = B32.iter().position(|&x| x == c)? as u32;
        acc = (acc << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(i)? = (acc >> bits) as u8;
            i += 1;
        }
    }
    (i == out.len() && (acc & ((1 << bits) - 1)) == 0).then_some(())
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn window_of(t: i64) -> i64 {
    t.div_euclid(WINDOW_SECS)
}

impl Volatile {
    pub(crate) fn new() -> Result<Volatile, Error> {
        let mut tag = [0u8; 5];
        fill_random(&mut tag)?;
        Ok(Volatile {
            instance: base32(&tag),
            inner: Mutex::new(Inner::default()),
        })
    }

    /// The parts of a token: its instance tag and its 16 random bytes.
    fn parse(token: &str) -> Option<(&str, [u8; 16])> {
        let rest = token.strip_prefix(PREFIX)?;
        let (instance, id) = rest.split_once('_')?;
        if instance.len() != 8 || id.len() != 26 {
            return None;
        }
        let mut bytes = [0u8; 16];
        unbase32(id, &mut bytes)?;
        Some((instance, bytes))
    }

    /// The id of a token this process issued; another process's says so.
    fn own(&self, template: &str, token: &str) -> Result<[u8; 16], Error> {
        let (instance, id) =
            Self::parse(token).ok_or_else(|| Error::InvalidToken(template.to_owned()))?;
        if instance != self.instance {
            return Err(Error::Gone(Gone::OtherProcess));
        }
        Ok(id)
    }

    /// Drop expired values and the keys of ended windows (their bytes are wiped on drop).
    fn sweep(inner: &mut Inner, now: i64) {
        let current = window_of(now);
        let expired: Vec<[u8; 16]> = inner
            .live
            .iter()
            .filter(|(_, e)| e.expires_at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(e) = inner.live.remove(&id) {
                inner.gone.insert(id, (Gone::Expired, e.expires_at));
            }
        }
        inner.keys.retain(|&w, _| w >= current);
        inner.gone.retain(|_, (_, at)| *at + REMEMBER_SECS > now);
    }

    /// Seal `value` for `ttl` seconds and `uses` reveals; the token.
    pub(crate) fn put(
        &self,
        template: &str,
        value: &str,
        ttl: u64,
        uses: u32,
        now: i64,
    ) -> Result<(String, i64), Error> {
        let ttl = ttl.clamp(1, MAX_TTL_SECS) as i64;
        let expires_at = now + ttl;
        let mut id = [0u8; 16];
        fill_random(&mut id)?;
        let token = format!("{PREFIX}{}_{}", self.instance, base32(&id));
        let mut inner = lock(&self.inner);
        Self::sweep(&mut inner, now);
        if inner.live.len() >= MAX_LIVE {
            return Err(Error::TokenSpaceExhausted(template.to_owned()));
        }
        store(&mut inner, template, id, value, expires_at, uses.max(1))?;
        Ok((token, expires_at))
    }

    /// Spend one use of `token`; its value and expiry.
    pub(crate) fn take(
        &self,
        template: &str,
        token: &str,
        now: i64,
    ) -> Result<(Zeroizing<String>, i64), Error> {
        let id = self.own(template, token)?;
        let mut inner = lock(&self.inner);
        Self::sweep(&mut inner, now);
        if let Some((why, _)) = inner.gone.get(&id) {
            return Err(Error::Gone(*why));
        }
        let Some(entry) = inner.live.get_mut(&id) else {
            // This process's tag, never issued (or forgotten an hour after it expired).
            return Err(Error::NotFound);
        };
        if entry.template != template {
            return Err(Error::InvalidToken(template.to_owned()));
        }
        entry.uses_left -= 1;
        let (window, expires_at, last) = (entry.window, entry.expires_at, entry.uses_left == 0);
        let plain = {
            let gcm = inner.keys.get(&window).ok_or(Error::Gone(Gone::Expired))?;
            let entry = inner.live.get(&id).ok_or(Error::NotFound)?;
            gcm.open(&aad(template, &id), &entry.sealed)
                .ok_or(Error::Integrity)?
        };
        if last {
            inner.live.remove(&id);
            inner.gone.insert(id, (Gone::Used, expires_at));
        }
        let text = String::from_utf8(plain.to_vec()).map_err(|_| Error::Integrity)?;
        Ok((Zeroizing::new(text), expires_at))
    }

    /// Give back the use a reveal spent, when what it was revealed for never happened (a
    /// proxy whose upstream could not be reached: nothing was sent). Only a use this process
    /// spent, before expiry, and only while sealing has not intervened.
    pub(crate) fn give_back(
        &self,
        template: &str,
        token: &str,
        value: &str,
        now: i64,
    ) -> Result<(), Error> {
        let id = self.own(template, token)?;
        let mut inner = lock(&self.inner);
        Self::sweep(&mut inner, now);
        if let Some(entry) = inner.live.get_mut(&id) {
            if entry.template != template {
                return Err(Error::InvalidToken(template.to_owned()));
            }
            entry.uses_left += 1;
            return Ok(());
        }
        let expires_at = match inner.gone.get(&id) {
            Some((Gone::Used, at)) if *at > now => *at,
            Some((why, _)) => return Err(Error::Gone(*why)),
            None => return Err(Error::NotFound),
        };
        inner.gone.remove(&id);
        store(&mut inner, template, id, value, expires_at, 1)
    }

    /// Sealing: every value and key dropped; the tokens answer [`Gone::Sealed`].
    pub(crate) fn seal(&self, now: i64) {
        let mut inner = lock(&self.inner);
        let live: Vec<([u8; 16], i64)> = inner
            .live
            .drain()
            .map(|(id, e)| (id, e.expires_at))
            .collect();
        for (id, at) in live {
            inner.gone.insert(id, (Gone::Sealed, at.max(now)));
        }
        inner.keys.clear();
    }

    /// Live values and window keys (tests and metrics).
    pub(crate) fn counts(&self, now: i64) -> (usize, usize) {
        let mut inner = lock(&self.inner);
        Self::sweep(&mut inner, now);
        (inner.live.len(), inner.keys.len())
    }
}

/// Seal `value` under the key of the window `expires_at` falls in, as the live entry `id`.
fn store(
    inner: &mut Inner,
    template: &str,
    id: [u8; 16],
    value: &str,
    expires_at: i64,
    uses_left: u32,
) -> Result<(), Error> {
    let window = window_of(expires_at);
    let gcm = window_key(&mut inner.keys, window)?;
    let mut sealed = Vec::new();
    gcm.seal_into(&aad(template, &id), value.as_bytes(), &mut sealed)?;
    inner.live.insert(
        id,
        Entry {
            template: template.to_owned(),
            window,
            sealed,
            expires_at,
            uses_left,
        },
    );
    Ok(())
}

/// The key of `window`, made on first use.
fn window_key(keys: &mut BTreeMap<i64, Gcm>, window: i64) -> Result<&Gcm, Error> {
    use std::collections::btree_map::Entry as Slot;
    match keys.entry(window) {
        Slot::Occupied(e) => Ok(e.into_mut()),
        Slot::Vacant(v) => Ok(v.insert(Gcm::new(&Key32::generate()?))),
    }
}

fn aad(template: &str, id: &[u8; 16]) -> Vec<u8> {
    let mut a = Vec::with_capacity(template.len() + 20);
    a.extend_from_slice(b"cvt1");
    a.extend_from_slice(id);
    a.extend_from_slice(template.as_bytes());
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_round_trips() {
        let bytes = [
            0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ];
        let text = base32(&bytes);
        assert_eq!(text.len(), 26);
        let mut back = [0u8; 16];
        unbase32(&text, &mut back).unwrap();
        assert_eq!(back, bytes);
    }

    #[test]
    fn one_use_then_gone_used() {
        let v = Volatile::new().unwrap();
        let (t, _) = v.put("cvv", "123", 900, 1, 1000).unwrap();
        assert_eq!(&*v.take("cvv", &t, 1001).unwrap().0, "123");
        assert!(matches!(
            v.take("cvv", &t, 1002),
            Err(Error::Gone(Gone::Used))
        ));
    }

    #[test]
    fn expiry_drops_the_value_and_the_window_key() {
        let v = Volatile::new().unwrap();
        let (t, at) = v.put("cvv", "1234", 120, 3, 1000).unwrap();
        assert_eq!(v.counts(1000), (1, 1));
        assert!(matches!(
            v.take("cvv", &t, at),
            Err(Error::Gone(Gone::Expired))
        ));
        // One window after expiry, no key is left to open any copy.
        assert_eq!(v.counts(at + WINDOW_SECS), (0, 0));
    }

    #[test]
    fn seal_and_other_process_say_so() {
        let v = Volatile::new().unwrap();
        let (t, _) = v.put("cvv", "123", 900, 1, 1000).unwrap();
        let other = Volatile::new().unwrap();
        assert!(matches!(
            other.take("cvv", &t, 1001),
            Err(Error::Gone(Gone::OtherProcess))
        ));
        v.seal(1001);
        assert!(matches!(
            v.take("cvv", &t, 1002),
            Err(Error::Gone(Gone::Sealed))
        ));
        assert_eq!(v.counts(1002), (0, 0));
    }

    #[test]
    fn a_use_given_back_reveals_once_more() {
        let v = Volatile::new().unwrap();
        let (t, _) = v.put("cvv", "123", 900, 1, 1000).unwrap();
        assert_eq!(&*v.take("cvv", &t, 1001).unwrap().0, "123");
        v.give_back("cvv", &t, "123", 1002).unwrap();
        assert_eq!(&*v.take("cvv", &t, 1003).unwrap().0, "123");
        assert!(matches!(
            v.take("cvv", &t, 1004),
            Err(Error::Gone(Gone::Used))
        ));
        // Not after expiry.
        let (t, at) = v.put("cvv", "123", 60, 1, 1000).unwrap();
        v.take("cvv", &t, 1001).unwrap();
        assert!(v.give_back("cvv", &t, "123", at).is_err());
    }

    #[test]
    fn wrong_template_and_forged_tokens_are_refused() {
        let v = Volatile::new().unwrap();
        let (t, _) = v.put("cvv", "123", 900, 1, 1000).unwrap();
        assert!(matches!(
            v.take("other", &t, 1001),
            Err(Error::InvalidToken(_))
        ));
        assert!(matches!(
            v.take("cvv", "cvt_x", 1001),
            Err(Error::InvalidToken(_))
        ));
        // The refused attempt spent nothing.
        assert_eq!(&*v.take("cvv", &t, 1001).unwrap().0, "123");
    }
}
