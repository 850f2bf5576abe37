//! Split knowledge and dual control of the root key (PCI DSS 4.0 §3.7.6): Shamir m-of-n
//! sharing over GF(256) (via `vsss-rs`, constant-time field arithmetic), so that no single
//! custodian ever holds the root key and any `m` of `n` custodians together rebuild it.
//!
//! A share is printable text a custodian can store on paper or type back in:
//!
//! ```text
//! vault-share-v1-<set id: 8 hex>-<m>-<index>-<share: 64 hex><checksum: 8 hex>
//! ```
//!
//! The checksum (the first 4 bytes of a SHA-256 over everything before it) catches a mistyped
//! share at once, with [`KeyError::InvalidShare`]. The set id (random per split) catches shares
//! from two different splits (e.g. before and after a root-key rotation) mixed together.
//!
//! The vault also stores a [`ShareSet`]: the SHA-256 digest of each share. With it, a share that
//! is well formed but wrong (another vault's, a stale one) is named at submission time
//! ([`KeyError::ShareMismatch`]) instead of producing a wrong root key that only the check
//! record would catch, without telling which custodian's share was bad. Storing the digests
//! reveals nothing usable: each share is 256 uniformly random bits on its own, and even with
//! m-1 shares the remaining one still has 2^256 candidates, so a digest cannot be inverted.

use ring::digest::{SHA256, digest};
use zeroize::Zeroizing;

use super::{decode_hex, encode_hex};
use crate::keys::KeyError;
use crate::secret::{Key32, RngError, SecretString, fill_random};

const PREFIX: &str = "vault-share-v1";
const SET_FORMAT: u8 = 1;
const CHECKSUM_DOMAIN: &[u8] = b"vault/share-checksum/v1";
const DIGEST_DOMAIN: &[u8] = b"vault/share-digest/v1";

/// One custodian's share of the root key.
pub struct Share {
    set_id: [u8; 4],
    threshold: u8,
    index: u8,
    data: Zeroizing<[u8; 32]>,
}

impl Share {
    /// The share's index, 1..=n (public; printed on the share).
    pub fn index(&self) -> u8 {
        self.index
    }

    /// How many shares rebuild the key.
    pub fn threshold(&self) -> u8 {
        self.threshold
    }

    /// The printable form, to hand to the custodian.
    pub fn to_text(&self) -> SecretString {
        let mut text = self.text_head();
        encode_hex(&*self.data, &mut text);
        let checksum = self.checksum();
        encode_hex(&checksum, &mut text);
        SecretString::from(text)
    }

    /// Parses a share typed back in. Case and whitespace (spaces, line breaks) are ignored.
    pub fn parse(text: &str) -> Result<Share, KeyError> {
        let invalid = |reason| KeyError::InvalidShare { reason };
        let clean: Zeroizing<String> = Zeroizing::new(
            text.chars()
                .filter(|c| !c.is_whitespace())
                .map(|c| c.to_ascii_lowercase())
                .collect(),
        );
        let rest = clean
            .strip_prefix(PREFIX)
            .and_then(|r| r.strip_prefix('-'))
            .ok_or(invalid("does not start with vault-share-v1-"))?;
        let mut fields = rest.split('-');
        let (Some(set), Some(m), Some(i), Some(body), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(invalid("expected set id, threshold, index and share"));
        };
        let mut set_id = [0u8; 4];
        decode_hex(set.as_bytes(), &mut set_id).ok_or(invalid("bad set id"))?;
        let threshold = parse_small(m).ok_or(invalid("bad threshold"))?;
        let index = parse_small(i).ok_or(invalid("bad index"))?;
        if threshold < 2 || index == 0 {
            return Err(invalid("threshold below 2 or index 0"));
        }
        if body.len() != 2 * (32 + 4) {
            return Err(invalid("share must be 72 hex digits"));
        }
        let mut data = Zeroizing::new([0u8; 32]);
        let mut checksum = [0u8; 4];
        decode_hex(&body.as_bytes()[..64], &mut *data).ok_or(invalid("not hexadecimal"))?;
        decode_hex(&body.as_bytes()[64..], &mut checksum).ok_or(invalid("not hexadecimal"))?;
        let share = Share {
            set_id,
            threshold,
            index,
            data,
        };
        if !ct_eq(&share.checksum(), &checksum) {
            return Err(invalid("checksum mismatch (typing error?)"));
        }
        Ok(share)
    }

    fn text_head(&self) -> String {
        let mut head = String::with_capacity(100);
        head.push_str(PREFIX);
        head.push('-');
        encode_hex(&self.set_id, &mut head);
        head.push_str(&format!("-{}-{}-", self.threshold, self.index));
        head
    }

    fn checksum(&self) -> [u8; 4] {
        let mut input = Zeroizing::new(Vec::with_capacity(100));
        input.extend_from_slice(CHECKSUM_DOMAIN);
        input.extend_from_slice(self.text_head().as_bytes());
        input.extend_from_slice(&*self.data);
        let d = digest(&SHA256, &input);
        let mut out = [0u8; 4];
        out.copy_from_slice(&d.as_ref()[..4]);
        out
    }

    fn digest(&self) -> [u8; 32] {
        let mut input = Zeroizing::new(Vec::with_capacity(64));
        input.extend_from_slice(DIGEST_DOMAIN);
        input.extend_from_slice(&self.set_id);
        input.push(self.threshold);
        input.push(self.index);
        input.extend_from_slice(&*self.data);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest(&SHA256, &input).as_ref());
        out
    }
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Share")
            .field("threshold", &self.threshold)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// Decimal 1..=255 without sign or leading zeros.
fn parse_small(s: &str) -> Option<u8> {
    if s.is_empty() || s.len() > 3 || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The public record of a split, stored with the vault under `META_SHARES`: set id, threshold
/// and one digest per share.
#[derive(Clone, PartialEq, Eq)]
pub struct ShareSet {
    set_id: [u8; 4],
    threshold: u8,
    digests: Vec<[u8; 32]>,
}

impl ShareSet {
    /// How many shares rebuild the key.
    pub fn threshold(&self) -> u8 {
        self.threshold
    }

    /// How many shares were handed out.
    pub fn count(&self) -> usize {
        self.digests.len()
    }

    /// Checks one share as it is submitted, so a bad one is named before reconstruction.
    pub fn check(&self, share: &Share) -> Result<(), KeyError> {
        let index = share.index;
        let expected = self
            .digests
            .get(usize::from(index).wrapping_sub(1))
            .ok_or(KeyError::ShareMismatch { index })?;
        if share.set_id != self.set_id
            || share.threshold != self.threshold
            || !ct_eq(&share.digest(), expected)
        {
            return Err(KeyError::ShareMismatch { index });
        }
        Ok(())
    }

    /// `[format 1][set id 4][m u8][n u8][n × 32-byte digest]`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(7 + 32 * self.digests.len());
        out.push(SET_FORMAT);
        out.extend_from_slice(&self.set_id);
        out.push(self.threshold);
        // `split` makes at most 255 shares and `decode` reads at most 255.
        out.push(u8::try_from(self.digests.len()).unwrap_or(u8::MAX));
        for d in &self.digests {
            out.extend_from_slice(d);
        }
        out
    }

    /// Strict inverse of [`ShareSet::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, KeyError> {
        let bad = KeyError::InvalidShare {
            reason: "stored share set is malformed",
        };
        let Some((head, rest)) = bytes.split_at_checked(7) else {
            return Err(bad);
        };
        let (threshold, count) = (head[5], usize::from(head[6]));
        if head[0] != SET_FORMAT
            || threshold < 2
            || usize::from(threshold) > count
            || rest.len() != 32 * count
        {
            return Err(bad);
        }
        let mut set_id = [0u8; 4];
        set_id.copy_from_slice(&head[1..5]);
        let digests = rest
            .chunks_exact(32)
            .map(|c| {
                let mut d = [0u8; 32];
                d.copy_from_slice(c);
                d
            })
            .collect();
        Ok(Self {
            set_id,
            threshold,
            digests,
        })
    }
}

impl std::fmt::Debug for ShareSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareSet")
            .field("threshold", &self.threshold)
            .field("count", &self.digests.len())
            .finish_non_exhaustive()
    }
}

/// Splits the root key into `count` shares, any `threshold` of which rebuild it
/// (2 ≤ threshold ≤ count ≤ 255).
pub fn split(
    root: &Key32,
    threshold: usize,
    count: usize,
) -> Result<(Vec<Share>, ShareSet), KeyError> {
    let params_err = KeyError::SharingParameters { threshold, count };
    let (Ok(m), Ok(_)) = (u8::try_from(threshold), u8::try_from(count)) else {
        return Err(params_err);
    };
    if threshold < 2 || threshold > count {
        return Err(params_err);
    }
    let mut set_id = [0u8; 4];
    fill_random(&mut set_id)?;
    let mut rng = OsRng { failed: false };
    let raw = vsss_rs::Gf256::split_bytes(threshold, count, root.expose(), &mut rng);
    let raw = Zeroizing::new(raw.map_err(|_| params_err)?);
    if rng.failed {
        return Err(RngError.into());
    }
    let mut shares = Vec::with_capacity(count);
    for r in raw.iter() {
        // vsss-rs lays a share out as [x coordinate, 32 bytes]; its x coordinates are 1..=n.
        let (&index, body) = r.split_first().ok_or(KeyError::Corrupt {
            reason: "empty share from splitter".into(),
        })?;
        let mut data = Zeroizing::new([0u8; 32]);
        if body.len() != 32 {
            return Err(KeyError::Corrupt {
                reason: "share of wrong length from splitter".into(),
            });
        }
        data.copy_from_slice(body);
        shares.push(Share {
            set_id,
            threshold: m,
            index,
            data,
        });
    }
    let set = ShareSet {
        set_id,
        threshold: m,
        digests: shares.iter().map(Share::digest).collect(),
    };
    Ok((shares, set))
}

/// Rebuilds the root key from at least `threshold` shares. With the vault's [`ShareSet`], each
/// share is checked first and a wrong one is named; without it, shares must at least agree on
/// their set id and threshold. Either way the result is then checked with `root::verify`.
pub fn combine(shares: &[Share], set: Option<&ShareSet>) -> Result<Key32, KeyError> {
    let first = shares.first().ok_or(KeyError::NotEnoughShares {
        have: 0,
        need: set.map_or(2, |s| usize::from(s.threshold)),
    })?;
    for (i, share) in shares.iter().enumerate() {
        if let Some(set) = set {
            set.check(share)?;
        } else if share.set_id != first.set_id || share.threshold != first.threshold {
            return Err(KeyError::ShareMismatch { index: share.index });
        }
        if shares[..i].iter().any(|s| s.index == share.index) {
            return Err(KeyError::DuplicateShare { index: share.index });
        }
    }
    let need = usize::from(first.threshold);
    if shares.len() < need {
        return Err(KeyError::NotEnoughShares {
            have: shares.len(),
            need,
        });
    }
    let raw: Zeroizing<Vec<Vec<u8>>> = Zeroizing::new(
        shares
            .iter()
            .map(|s| {
                let mut v = Vec::with_capacity(33);
                v.push(s.index);
                v.extend_from_slice(&*s.data);
                v
            })
            .collect(),
    );
    let secret = Zeroizing::new(vsss_rs::Gf256::combine_bytes(&*raw).map_err(|_| {
        KeyError::InvalidShare {
            reason: "shares do not combine",
        }
    })?);
    Key32::from_slice(&secret).ok_or(KeyError::InvalidShare {
        reason: "shares do not combine",
    })
}

/// The OS CSPRNG as a `rand_core` 0.10 generator for vsss-rs. Instead of panicking when the OS
/// RNG fails (as `UnwrapErr` would), it records the failure and [`split`] discards the shares.
struct OsRng {
    failed: bool,
}

impl getrandom::rand_core::TryRng for OsRng {
    type Error = core::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        if fill_random(dst).is_err() {
            self.failed = true;
        }
        Ok(())
    }
}

impl getrandom::rand_core::TryCryptoRng for OsRng {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::ExposeSecret;

    fn subsets(n: usize) -> impl Iterator<Item = Vec<usize>> {
        (1u32..(1 << n)).map(move |mask| (0..n).filter(|i| mask & (1 << i) != 0).collect())
    }

    fn check_every_subset(m: usize, n: usize) {
        let root = Key32::generate().unwrap();
        let (shares, set) = split(&root, m, n).unwrap();
        assert_eq!(shares.len(), n);
        assert_eq!((usize::from(set.threshold()), set.count()), (m, n));
        let set = ShareSet::decode(&set.encode()).unwrap();
        // Through text, as custodians would.
        let shares: Vec<Share> = shares
            .iter()
            .map(|s| Share::parse(s.to_text().expose_secret()).unwrap())
            .collect();
        for subset in subsets(n) {
            let picked: Vec<Share> = subset
                .iter()
                .map(|&i| Share::parse(shares[i].to_text().expose_secret()).unwrap())
                .collect();
            for with_set in [None, Some(&set)] {
                let result = combine(&picked, with_set);
                if subset.len() >= m {
                    assert_eq!(result.unwrap().expose(), root.expose(), "{subset:?}");
                } else {
                    assert!(
                        matches!(result, Err(KeyError::NotEnoughShares { have, need }) if have == subset.len() && need == m),
                        "{subset:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn two_of_three_every_subset() {
        check_every_subset(2, 3);
    }

    #[test]
    fn three_of_five_every_subset() {
        check_every_subset(3, 5);
    }

    #[test]
    fn text_format() {
        let (shares, _) = split(&Key32::generate().unwrap(), 2, 3).unwrap();
        let text = shares[1].to_text();
        let text = text.expose_secret();
        assert!(text.starts_with("vault-share-v1-"), "{text}");
        assert!(text.contains("-2-2-"), "{text}");
        assert_eq!(text.len(), "vault-share-v1-".len() + 8 + "-2-2-".len() + 72);
        // Case and whitespace are forgiven.
        let spaced: String = text
            .to_uppercase()
            .chars()
            .enumerate()
            .flat_map(|(i, c)| (i % 8 == 0).then_some(' ').into_iter().chain([c]))
            .collect();
        let parsed = Share::parse(&spaced).unwrap();
        assert_eq!(*parsed.data, *shares[1].data);
    }

    #[test]
    fn every_single_typo_is_caught() {
        let (shares, _) = split(&Key32::generate().unwrap(), 2, 3).unwrap();
        let text = shares[0].to_text().expose_secret().to_owned();
        let hex_start = text.len() - 72;
        for pos in hex_start..text.len() {
            let mut bytes = text.clone().into_bytes();
            bytes[pos] = if bytes[pos] == b'0' { b'1' } else { b'0' };
            let typo = String::from_utf8(bytes).unwrap();
            assert!(
                matches!(Share::parse(&typo), Err(KeyError::InvalidShare { .. })),
                "typo at {pos} accepted"
            );
        }
        for garbage in [
            "",
            "vault-share-v1",
            "vault-share-v2-00000000-2-1-00",
            "vault-share-v1-0000000-2-1-",
            "vault-share-v1-00000000-02-1-",
        ] {
            assert!(matches!(
                Share::parse(garbage),
                Err(KeyError::InvalidShare { .. })
            ));
        }
    }

    #[test]
    fn wrong_share_is_named() {
        let root = Key32::generate().unwrap();
        let (shares, set) = split(&root, 2, 3).unwrap();
        let (others, _) = split(&root, 2, 3).unwrap();
        // A valid share of another split (same index) is named, with or without the set.
        let mixed = [
            Share::parse(shares[0].to_text().expose_secret()).unwrap(),
            Share::parse(others[1].to_text().expose_secret()).unwrap(),
        ];
        assert!(matches!(
            combine(&mixed, Some(&set)),
            Err(KeyError::ShareMismatch { index: 2 })
        ));
        assert!(matches!(
            combine(&mixed, None),
            Err(KeyError::ShareMismatch { index: 2 })
        ));
        assert!(matches!(
            set.check(&others[0]),
            Err(KeyError::ShareMismatch { index: 1 })
        ));
        // A corrupted share that still parses (same set id, data changed, checksum redone).
        let mut forged = Share::parse(shares[2].to_text().expose_secret()).unwrap();
        forged.data[0] ^= 1;
        let forged = Share::parse(forged.to_text().expose_secret()).unwrap();
        assert!(matches!(
            set.check(&forged),
            Err(KeyError::ShareMismatch { index: 3 })
        ));
        // Without the set, it combines to a wrong key, which the check record then refuses.
        let pair = [
            Share::parse(shares[0].to_text().expose_secret()).unwrap(),
            forged,
        ];
        let wrong = combine(&pair, None).unwrap();
        assert_ne!(wrong.expose(), root.expose());
        let record = super::super::check_record(&root, b"v").unwrap();
        assert!(matches!(
            super::super::verify(&wrong, b"v", &record),
            Err(KeyError::WrongRootKey)
        ));
        // Duplicates.
        let dup = [
            Share::parse(shares[0].to_text().expose_secret()).unwrap(),
            Share::parse(shares[0].to_text().expose_secret()).unwrap(),
        ];
        assert!(matches!(
            combine(&dup, Some(&set)),
            Err(KeyError::DuplicateShare { index: 1 })
        ));
    }

    #[test]
    fn bad_parameters() {
        let root = Key32::generate().unwrap();
        for (m, n) in [(1, 3), (0, 0), (4, 3), (2, 256), (300, 300)] {
            assert!(matches!(
                split(&root, m, n),
                Err(KeyError::SharingParameters { .. })
            ));
        }
    }

    #[test]
    fn share_set_decoding_is_strict() {
        let (_, set) = split(&Key32::generate().unwrap(), 2, 3).unwrap();
        let good = set.encode();
        for cut in 0..good.len() {
            assert!(ShareSet::decode(&good[..cut]).is_err());
        }
        let mut m_too_big = good.clone();
        m_too_big[5] = 4;
        assert!(ShareSet::decode(&m_too_big).is_err());
    }

    #[test]
    fn debug_prints_no_share_bytes() {
        let (shares, set) = split(&Key32::from_slice(&[0xCD; 32]).unwrap(), 2, 3).unwrap();
        let text = shares[0].to_text().expose_secret().to_owned();
        let hex_body = &text[text.len() - 72..text.len() - 8];
        let dbg = format!("{:?} {:?} {:?}", shares[0], set, shares[0].to_text());
        assert!(
            !dbg.contains(hex_body) && !dbg.contains(&hex_body[..8]),
            "{dbg}"
        );
        assert!(!dbg.contains("205"), "{dbg}");
    }
}
