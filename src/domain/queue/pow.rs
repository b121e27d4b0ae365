//! Proof of work at the join (API.md §11): challenges the server authenticates rather than
//! stores (an HMAC-SHA-256 tag over random bytes and an expiry), the check of a solution in
//! O(1), and the bounded memory of spent challenges that makes each one single use.
//!
//! A challenge is `base64url(random 16 ‖ expires_at ms, i64 big-endian 8 ‖ tag 16)`, the tag
//! being the first 16 bytes of `HMAC-SHA-256(key, random ‖ expires_at)`: 128 bits are beyond
//! forging, and nothing is kept per challenge until it is spent. A solution is the header
//! value `<challenge>.<nonce>` whose SHA-256 starts with the configured number of zero bits;
//! its cost to the client doubles with each bit, its check is three hashes here.

use crate::domain::Timestamp;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::time::Duration;

/// Most zero bits a join may ask for: 2^28 hashes is minutes in a browser already.
pub const MAX_POW_BITS: u8 = 28;
/// How long a challenge can be solved and spent in.
pub const CHALLENGE_VALIDITY: Duration = Duration::from_secs(120);
/// Spent challenges remembered at most. Each one is remembered until it expires (2 minutes),
/// so this admits about 4,000 new joins a second sustained (a drop's peak is shorter than
/// that and spread by the work itself); past it a join is refused for a moment rather than
/// the memory growing (about 40 bytes each: 20 MB at most).
pub const MAX_SPENT_CHALLENGES: usize = 500_000;
/// Longest nonce accepted: a counter in any base fits many times over.
pub const MAX_NONCE_LEN: usize = 64;

const RANDOM_LEN: usize = 16;
const EXPIRY_LEN: usize = 8;
const TAG_LEN: usize = 16;
const CHALLENGE_LEN: usize = RANDOM_LEN + EXPIRY_LEN + TAG_LEN;
/// Length of a challenge in base64url without padding.
pub const CHALLENGE_TEXT_LEN: usize = (CHALLENGE_LEN * 8).div_ceil(6);

/// The HMAC key of the challenges. Its `Debug` hides it.
#[derive(Clone)]
pub struct PowKey([u8; 32]);

impl PowKey {
    pub fn new(bytes: [u8; 32]) -> PowKey {
        PowKey(bytes)
    }

    /// A key derived from configured text (any length): its SHA-256.
    pub fn derive(text: &[u8], label: &str) -> PowKey {
        let mut hasher = Sha256::new();
        hasher.update(label.as_bytes());
        hasher.update([0]);
        hasher.update(text);
        PowKey(hasher.finalize().into())
    }

    fn mac(&self, random: &[u8], expiry: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(random);
        mac.update(expiry);
        mac
    }
}

impl std::fmt::Debug for PowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PowKey(***)")
    }
}

/// Why a solution is refused. Every variant answers `pow_invalid`; they differ for the tests
/// and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PowRefusal {
    #[error("not <challenge>.<nonce>")]
    Malformed,
    #[error("the challenge was not issued by this service")]
    Forged,
    #[error("the challenge has expired")]
    Expired,
    #[error("the hash has too few leading zero bits")]
    TooLittleWork,
    #[error("the challenge was already spent")]
    Reused,
}

/// A checked solution: the challenge it spends, to be remembered until it expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Solved {
    pub challenge: u128,
    pub expires_at: Timestamp,
}

/// A new challenge: `random` from a CSPRNG, valid until `expires_at`.
pub fn issue(key: &PowKey, random: [u8; RANDOM_LEN], expires_at: Timestamp) -> String {
    let expiry = expires_at.millis().to_be_bytes();
    let tag = key.mac(&random, &expiry).finalize().into_bytes();
    let mut bytes = [0u8; CHALLENGE_LEN];
    bytes[..RANDOM_LEN].copy_from_slice(&random);
    bytes[RANDOM_LEN..RANDOM_LEN + EXPIRY_LEN].copy_from_slice(&expiry);
    bytes[RANDOM_LEN + EXPIRY_LEN..].copy_from_slice(&tag[..TAG_LEN]);
    base64url_encode(&bytes)
}

/// Whether `solution` has a solution's shape, `<challenge>.<nonce>`: the challenge's 54
/// base64url characters and a nonce of 1 to 64 more (the OpenAPI document's pattern). Says
/// nothing of its tag, expiry or work.
pub fn well_formed(solution: &str) -> bool {
    let base64url = |text: &str| {
        text.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    solution.split_once('.').is_some_and(|(challenge, nonce)| {
        challenge.len() == CHALLENGE_TEXT_LEN
            && base64url(challenge)
            && (1..=MAX_NONCE_LEN).contains(&nonce.len())
            && base64url(nonce)
    })
}

/// Checks a header value `<challenge>.<nonce>` at `now` against `bits` zero bits, in O(1):
/// its shape, the tag (in constant time), the expiry, then the work. Whether it was spent is
/// [`SpentChallenges::spend`]'s to say.
pub fn verify(
    key: &PowKey,
    solution: &str,
    bits: u8,
    now: Timestamp,
) -> Result<Solved, PowRefusal> {
    if !well_formed(solution) {
        return Err(PowRefusal::Malformed);
    }
    let (challenge, _) = solution
        .split_once('.')
        .expect("a well-formed solution has its dot");
    let bytes: [u8; CHALLENGE_LEN] = base64url_decode(challenge).ok_or(PowRefusal::Malformed)?;
    let (random, rest) = bytes.split_at(RANDOM_LEN);
    let (expiry, tag) = rest.split_at(EXPIRY_LEN);
    key.mac(random, expiry)
        .verify_truncated_left(tag)
        .map_err(|_| PowRefusal::Forged)?;
    let expires_at = Timestamp::from_millis(i64::from_be_bytes(
        expiry.try_into().expect("the expiry is 8 bytes"),
    ));
    if now >= expires_at {
        return Err(PowRefusal::Expired);
    }
    if leading_zero_bits(&Sha256::digest(solution.as_bytes())) < u32::from(bits) {
        return Err(PowRefusal::TooLittleWork);
    }
    Ok(Solved {
        challenge: u128::from_be_bytes(random.try_into().expect("the random part is 16 bytes")),
        expires_at,
    })
}

/// Leading zero bits of a digest.
pub fn leading_zero_bits(digest: &[u8]) -> u32 {
    let mut bits = 0;
    for byte in digest {
        bits += byte.leading_zeros();
        if *byte != 0 {
            break;
        }
    }
    bits
}

/// The client's side, for the load generators and tests: the first decimal nonce that solves
/// `challenge` at `bits`, as the header value.
pub fn solve(challenge: &str, bits: u8) -> String {
    (0u64..)
        .map(|nonce| format!("{challenge}.{nonce}"))
        .find(|value| leading_zero_bits(&Sha256::digest(value.as_bytes())) >= u32::from(bits))
        .expect("some nonce below 2^64 has 28 zero bits")
}

/// The spent challenges still valid: a set by challenge and a heap by expiry, pruned as time
/// passes (a challenge can only be spent once before it expires; after, its expiry refuses it).
#[derive(Debug)]
pub struct SpentChallenges {
    spent: HashSet<u128>,
    by_expiry: BinaryHeap<Reverse<(Timestamp, u128)>>,
    capacity: usize,
}

/// Spending is refused because the memory is full; the earliest entry leaves at `frees_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpendRefusal {
    Reused,
    Full { frees_at: Timestamp },
}

impl SpentChallenges {
    pub fn new(capacity: usize) -> SpentChallenges {
        SpentChallenges {
            spent: HashSet::new(),
            by_expiry: BinaryHeap::new(),
            capacity,
        }
    }

    /// Remembers `solved` as spent at `now`, unless it already was, or the memory is full.
    pub fn spend(&mut self, solved: Solved, now: Timestamp) -> Result<(), SpendRefusal> {
        self.forget_expired(now);
        if self.spent.contains(&solved.challenge) {
            return Err(SpendRefusal::Reused);
        }
        if let Some(Reverse((frees_at, _))) = self.by_expiry.peek() {
            if self.spent.len() >= self.capacity {
                return Err(SpendRefusal::Full {
                    frees_at: *frees_at,
                });
            }
        }
        self.spent.insert(solved.challenge);
        self.by_expiry
            .push(Reverse((solved.expires_at, solved.challenge)));
        debug_assert_eq!(self.spent.len(), self.by_expiry.len());
        Ok(())
    }

    /// Spent challenges remembered.
    pub fn len(&self) -> usize {
        self.spent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spent.is_empty()
    }

    fn forget_expired(&mut self, now: Timestamp) {
        while let Some(Reverse((expires_at, challenge))) = self.by_expiry.peek().copied() {
            if expires_at > now {
                break;
            }
            self.by_expiry.pop();
            self.spent.remove(&challenge);
        }
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url without padding (RFC 4648 §5).
fn base64url_encode(bytes: &[u8]) -> String {
    let mut text = String::with_capacity((bytes.len() * 8).div_ceil(6));
    for chunk in bytes.chunks(3) {
        let mut group = [0u8; 3];
        group[..chunk.len()].copy_from_slice(chunk);
        let n = u32::from(group[0]) << 16 | u32::from(group[1]) << 8 | u32::from(group[2]);
        for i in 0..=chunk.len() {
            text.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    text
}

/// The exact inverse of [`base64url_encode`] for `N` bytes; `None` for anything else
/// (including non-zero padding bits, so a challenge has one spelling).
fn base64url_decode<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != (N * 8).div_ceil(6) {
        return None;
    }
    let mut bytes = [0u8; N];
    let (mut accumulator, mut held, mut at) = (0u32, 0u32, 0usize);
    for c in text.bytes() {
        let value = ALPHABET.iter().position(|&a| a == c)? as u32;
        accumulator = accumulator << 6 | value;
        held += 6;
        if held >= 8 {
            held -= 8;
            bytes[at] = (accumulator >> held) as u8;
            at += 1;
            accumulator &= (1 << held) - 1;
        }
    }
    (accumulator == 0).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn now() -> Timestamp {
        Timestamp::from_millis(1_800_000_000_000)
    }

    fn key() -> PowKey {
        PowKey::new([7; 32])
    }

    fn challenge_at(random: u8) -> String {
        issue(&key(), [random; 16], now().plus(CHALLENGE_VALIDITY))
    }

    #[test]
    fn a_solved_challenge_verifies_once() {
        let solution = solve(&challenge_at(1), 8);
        let solved = verify(&key(), &solution, 8, now()).expect("solved");
        let mut spent = SpentChallenges::new(10);
        assert_eq!(spent.spend(solved, now()), Ok(()));
        assert_eq!(spent.spend(solved, now()), Err(SpendRefusal::Reused));
    }

    #[test]
    fn too_little_work_expiry_and_another_key_are_refused() {
        let challenge = challenge_at(2);
        // The first nonce with fewer than 12 zero bits.
        let weak = (0u64..)
            .map(|n| format!("{challenge}.{n}"))
            .find(|v| leading_zero_bits(&Sha256::digest(v.as_bytes())) < 12)
            .expect("most nonces are weak");
        assert_eq!(
            verify(&key(), &weak, 12, now()),
            Err(PowRefusal::TooLittleWork)
        );
        let solution = solve(&challenge, 4);
        let expiry = now().plus(CHALLENGE_VALIDITY);
        assert_eq!(
            verify(&key(), &solution, 4, expiry),
            Err(PowRefusal::Expired)
        );
        assert_eq!(
            verify(&PowKey::new([8; 32]), &solution, 4, now()),
            Err(PowRefusal::Forged)
        );
    }

    #[test]
    fn malformed_solutions_are_refused() {
        let challenge = challenge_at(3);
        for bad in [
            String::new(),
            challenge.clone(),
            format!("{challenge}."),
            format!("{challenge}.a.b"),
            format!("{challenge}.{}", "1".repeat(MAX_NONCE_LEN + 1)),
            format!("{}.1", &challenge[1..]),
            format!("{}=.1", &challenge[1..]),
        ] {
            assert_eq!(
                verify(&key(), &bad, 0, now()),
                Err(PowRefusal::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn spent_challenges_are_forgotten_when_they_expire_and_the_memory_is_capped() {
        let mut spent = SpentChallenges::new(2);
        let at = |n: u128, ms: i64| Solved {
            challenge: n,
            expires_at: now().plus(Duration::from_millis(ms as u64)),
        };
        assert_eq!(spent.spend(at(1, 100), now()), Ok(()));
        assert_eq!(spent.spend(at(2, 50), now()), Ok(()));
        assert_eq!(
            spent.spend(at(3, 100), now()),
            Err(SpendRefusal::Full {
                frees_at: now().plus(Duration::from_millis(50))
            })
        );
        let later = now().plus(Duration::from_millis(50));
        assert_eq!(spent.spend(at(3, 150), later), Ok(()));
        assert_eq!(spent.len(), 2);
        let much_later = now().plus(Duration::from_millis(1000));
        assert_eq!(spent.spend(at(4, 2000), much_later), Ok(()));
        assert_eq!(spent.len(), 1);
    }

    #[test]
    fn the_bits_count_from_the_first_byte() {
        assert_eq!(leading_zero_bits(&[0, 0, 0x10, 0xff]), 19);
        assert_eq!(leading_zero_bits(&[0x80]), 0);
        assert_eq!(leading_zero_bits(&[0, 0]), 16);
    }

    proptest! {
        #[test]
        fn base64url_round_trips(bytes in any::<[u8; 40]>()) {
            let text = base64url_encode(&bytes);
            prop_assert_eq!(text.len(), CHALLENGE_TEXT_LEN);
            prop_assert_eq!(base64url_decode::<40>(&text), Some(bytes));
        }

        #[test]
        fn a_forged_challenge_never_verifies(
            random in any::<[u8; 16]>(),
            flip_at in 0..CHALLENGE_LEN,
            flip in 1u8..=255,
            nonce in 0u32..1000,
        ) {
            // A genuine challenge with one byte changed (the random part, the expiry or the
            // tag), at zero bits so only the tag can refuse it.
            let genuine = issue(&key(), random, now().plus(CHALLENGE_VALIDITY));
            let mut bytes: [u8; CHALLENGE_LEN] = base64url_decode(&genuine).expect("issued");
            bytes[flip_at] ^= flip;
            let forged = format!("{}.{nonce}", base64url_encode(&bytes));
            let refused = verify(&key(), &forged, 0, now());
            prop_assert!(
                refused == Err(PowRefusal::Forged),
                "{:?}", refused
            );
        }

        #[test]
        fn a_challenge_made_with_another_key_never_verifies(
            other in any::<[u8; 32]>(),
            random in any::<[u8; 16]>(),
        ) {
            prop_assume!(other != [7; 32]);
            let foreign = issue(&PowKey::new(other), random, now().plus(CHALLENGE_VALIDITY));
            prop_assert_eq!(
                verify(&key(), &format!("{foreign}.0"), 0, now()),
                Err(PowRefusal::Forged)
            );
        }
    }
}
