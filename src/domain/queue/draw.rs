//! The fair opening's draw (API.md §11): the public names of the pre-queue, the digest of the
//! participant set, the seeded order anyone can recompute, and the check of a published draw.
//!
//! Formulas, byte for byte as the contract states them:
//! - a participant's public name is `h = hex(SHA-256(decimal tokenId))` (the token id is a
//!   credential and stays secret; its hash does not reveal it);
//! - `participantsDigest = hex(SHA-256(the sorted h values joined by "\n"))`;
//! - `key(h) = SHA-256(seed bytes ‖ participantsDigest ‖ h)`, the digest and `h` as their ASCII
//!   hex text after the 32 raw seed bytes; the order is ascending `key`;
//! - `commitment = hex(SHA-256(seed bytes))`, published before the draw.
//!
//! Hex is lowercase, so ordering names by their raw digest bytes is ordering them by their
//! hex text: names are kept as 32 raw bytes (a million of them are 32 MB, not 88 MB of
//! `String`s) and hexed only where a formula or a document needs the text.

use crate::domain::TokenId;
use sha2::{Digest, Sha256};
use std::fmt;

/// Length of the secret seed, in bytes.
pub const SEED_BYTES: usize = 32;

/// The secret a draw is seeded with, drawn from the operating system's CSPRNG by whoever
/// schedules the opening (never here: the domain is pure). Its `Debug` hides it: before the
/// draw it must not reach a log.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DrawSeed([u8; SEED_BYTES]);

impl DrawSeed {
    pub fn from_bytes(bytes: [u8; SEED_BYTES]) -> DrawSeed {
        DrawSeed(bytes)
    }

    /// Reads a seed from its 64-character hex text (as the draw publishes it).
    pub fn from_hex(text: &str) -> Option<DrawSeed> {
        let mut bytes = [0u8; SEED_BYTES];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(DrawSeed(bytes))
    }

    pub fn bytes(&self) -> &[u8; SEED_BYTES] {
        &self.0
    }

    /// Lowercase hex, as published after the draw.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// `hex(SHA-256(seed))`: what is published before the draw.
    pub fn commitment(&self) -> String {
        hex::encode(Sha256::digest(self.0))
    }
}

impl fmt::Debug for DrawSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DrawSeed(***)")
    }
}

/// A participant's public name: `SHA-256(decimal tokenId)`, kept raw, shown as hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicName([u8; 32]);

impl PublicName {
    /// The name of the pre-queue token `token`.
    pub fn of(token: TokenId) -> PublicName {
        let mut digits = itoa::Buffer::new();
        PublicName(Sha256::digest(digits.format(token.get()).as_bytes()).into())
    }

    /// Reads a name from its 64-character hex text.
    pub fn from_hex(text: &str) -> Option<PublicName> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        // Only the canonical (lowercase) spelling is a name: the digest hashes the text.
        (hex::encode(bytes) == text).then_some(PublicName(bytes))
    }

    /// The 64 lowercase hex characters, without allocating.
    fn hex_into(self, out: &mut [u8; 64]) {
        hex::encode_to_slice(self.0, out).expect("64 bytes hold the hex of 32");
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for PublicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = [0u8; 64];
        self.hex_into(&mut text);
        f.write_str(std::str::from_utf8(&text).expect("hex is ASCII"))
    }
}

/// `hex(SHA-256(sorted names joined by "\n"))`. `names` must be sorted and distinct.
fn digest_of_sorted(names: &[PublicName]) -> String {
    let mut hasher = Sha256::new();
    let mut text = [0u8; 64];
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            hasher.update(b"\n");
        }
        name.hex_into(&mut text);
        hasher.update(text);
    }
    hex::encode(hasher.finalize())
}

/// Puts `names` in ascending `key(h)` order for `seed` and `digest`. Two names never share a
/// key (that would be a SHA-256 collision); ties are broken by name all the same, so the
/// order is a function of the set whatever happens.
fn order_by_key(seed: &DrawSeed, digest: &str, names: &mut [PublicName]) {
    // Every key starts with the same 96 bytes: hash them once and clone the state.
    let mut prefix = Sha256::new();
    prefix.update(seed.bytes());
    prefix.update(digest.as_bytes());
    let mut keyed: Vec<([u8; 32], PublicName)> = names
        .iter()
        .map(|&name| {
            let mut text = [0u8; 64];
            name.hex_into(&mut text);
            let mut hasher = prefix.clone();
            hasher.update(text);
            (hasher.finalize().into(), name)
        })
        .collect();
    keyed.sort_unstable();
    for (slot, (_, name)) in names.iter_mut().zip(keyed) {
        *slot = name;
    }
}

/// [`draw`], keeping each place's token: the line moves the tokens themselves into the order.
pub fn draw_tokens(seed: &DrawSeed, participants: &[TokenId]) -> (Draw, Vec<TokenId>) {
    let with: Vec<(TokenId, ())> = participants.iter().map(|&t| (t, ())).collect();
    let (drawn, order) = draw_with(seed, &with);
    (drawn, order.into_iter().map(|(t, ())| t).collect())
}

/// [`draw_tokens`] with a value riding along with each token (the line's old position). The
/// values ride in the sorts: no map from name back to token, whose cache misses cost more than
/// the draw itself at a million participants.
pub fn draw_with<T: Copy>(
    seed: &DrawSeed,
    participants: &[(TokenId, T)],
) -> (Draw, Vec<(TokenId, T)>) {
    let mut named: Vec<(PublicName, TokenId, T)> = participants
        .iter()
        .map(|&(t, value)| (PublicName::of(t), t, value))
        .collect();
    named.sort_unstable_by_key(|&(name, ..)| name);
    named.dedup_by_key(|&mut (name, ..)| name);
    let mut names: Vec<PublicName> = named.iter().map(|&(name, ..)| name).collect();
    let participants_digest = digest_of_sorted(&names);
    let mut prefix = Sha256::new();
    prefix.update(seed.bytes());
    prefix.update(participants_digest.as_bytes());
    let mut keyed: Vec<([u8; 32], PublicName, TokenId, T)> = named
        .into_iter()
        .map(|(name, token, value)| {
            let mut text = [0u8; 64];
            name.hex_into(&mut text);
            let mut hasher = prefix.clone();
            hasher.update(text);
            (hasher.finalize().into(), name, token, value)
        })
        .collect();
    keyed.sort_unstable_by_key(|&(key, name, ..)| (key, name));
    let order = keyed
        .iter()
        .map(|&(_, _, token, value)| (token, value))
        .collect();
    for (slot, (_, name, ..)) in names.iter_mut().zip(keyed) {
        *slot = name;
    }
    let drawn = Draw {
        commitment: seed.commitment(),
        participants_digest,
        order: names,
    };
    (drawn, order)
}

/// A drawn pre-queue: the published parts and the order (place 1 first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draw {
    pub commitment: String,
    pub participants_digest: String,
    pub order: Vec<PublicName>,
}

impl Draw {
    /// The 1-based place of `name`, if it took part (a scan: a buyer looks up one name).
    pub fn place_of(&self, name: PublicName) -> Option<usize> {
        self.order.iter().position(|&n| n == name).map(|i| i + 1)
    }
}

/// Draws the pre-queue `participants` (the live pre-queue tokens at the opening, in any order)
/// with `seed`. Duplicates count once.
pub fn draw(seed: &DrawSeed, participants: &[TokenId]) -> Draw {
    let mut names: Vec<PublicName> = participants.iter().map(|&t| PublicName::of(t)).collect();
    names.sort_unstable();
    names.dedup();
    let participants_digest = digest_of_sorted(&names);
    order_by_key(seed, &participants_digest, &mut names);
    Draw {
        commitment: seed.commitment(),
        participants_digest,
        order: names,
    }
}

/// A draw as published (`GET /v1/queue/opening` and every page of `GET /v1/queue/draw`), as
/// text: the check reads what the service said, not what a parser made of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedDraw {
    pub commitment: String,
    pub seed: String,
    pub participants_digest: String,
    pub order: Vec<String>,
}

/// How a published draw fails its check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrawMismatch {
    #[error("the seed is not 64 hex characters")]
    MalformedSeed,
    #[error("place {place} is not a public name (64 lowercase hex characters)")]
    MalformedName { place: usize },
    #[error("place {place} repeats a name already drawn")]
    DuplicateName { place: usize },
    #[error("SHA-256(seed) is {computed}, but the commitment published was {published}")]
    Commitment { computed: String, published: String },
    #[error("the participants' digest is {computed}, but the draw published {published}")]
    Digest { computed: String, published: String },
    #[error("place {place} should hold {expected}, but the draw published {published}")]
    Place {
        place: usize,
        expected: String,
        published: String,
    },
}

/// Checks a published draw: `SHA-256(seed) == commitment`, the digest of the published names,
/// and every place against the recomputed order. Answers the verified draw.
pub fn verify(published: &PublishedDraw) -> Result<Draw, DrawMismatch> {
    let seed = DrawSeed::from_hex(&published.seed).ok_or(DrawMismatch::MalformedSeed)?;
    let commitment = seed.commitment();
    if commitment != published.commitment {
        return Err(DrawMismatch::Commitment {
            computed: commitment,
            published: published.commitment.clone(),
        });
    }
    let names = published
        .order
        .iter()
        .enumerate()
        .map(|(i, text)| {
            PublicName::from_hex(text).ok_or(DrawMismatch::MalformedName { place: i + 1 })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut sorted = names.clone();
    sorted.sort_unstable();
    if let Some(pair) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
        let place = names
            .iter()
            .rposition(|&n| n == pair[0])
            .expect("a duplicate is in the list")
            + 1;
        return Err(DrawMismatch::DuplicateName { place });
    }
    let digest = digest_of_sorted(&sorted);
    if digest != published.participants_digest {
        return Err(DrawMismatch::Digest {
            computed: digest,
            published: published.participants_digest.clone(),
        });
    }
    order_by_key(&seed, &digest, &mut sorted);
    if let Some(i) = (0..names.len()).find(|&i| names[i] != sorted[i]) {
        return Err(DrawMismatch::Place {
            place: i + 1,
            expected: sorted[i].to_hex(),
            published: names[i].to_hex(),
        });
    }
    Ok(Draw {
        commitment,
        participants_digest: digest,
        order: sorted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    fn token(n: i64) -> TokenId {
        TokenId::new(n).unwrap()
    }

    fn seed(rng: &mut StdRng) -> DrawSeed {
        DrawSeed::from_bytes(rng.random())
    }

    /// The seed is secret until the draw: a log line or a panic message that prints it
    /// shows a redaction, never its bytes.
    #[test]
    fn a_seed_never_prints_itself() {
        let seed = DrawSeed::from_bytes([0xab; 32]);
        let shown = format!("{seed:?} {:?}", Some(&seed));
        assert_eq!(shown, "DrawSeed(***) Some(DrawSeed(***))");
    }

    fn published(seed: &DrawSeed, drawn: &Draw) -> PublishedDraw {
        PublishedDraw {
            commitment: drawn.commitment.clone(),
            seed: seed.to_hex(),
            participants_digest: drawn.participants_digest.clone(),
            order: drawn.order.iter().map(|n| n.to_hex()).collect(),
        }
    }

    #[test]
    fn the_formulas_are_the_contracts_byte_for_byte() {
        let seed = DrawSeed::from_bytes([7u8; 32]);
        let tokens = [token(4815162342), token(42), token(9_007_199_254_740_991)];
        let drawn = draw(&seed, &tokens);

        let h = |t: i64| hex::encode(Sha256::digest(t.to_string().as_bytes()));
        assert_eq!(PublicName::of(token(42)).to_hex(), h(42));
        let mut names: Vec<String> = [4815162342, 42, 9_007_199_254_740_991].map(h).to_vec();
        names.sort();
        let digest = hex::encode(Sha256::digest(names.join("\n").as_bytes()));
        assert_eq!(drawn.participants_digest, digest);
        assert_eq!(drawn.commitment, hex::encode(Sha256::digest([7u8; 32])));
        let key = |name: &String| {
            let mut input = vec![7u8; 32];
            input.extend_from_slice(digest.as_bytes());
            input.extend_from_slice(name.as_bytes());
            Sha256::digest(&input)
        };
        names.sort_by_key(key);
        let order: Vec<String> = drawn.order.iter().map(|n| n.to_string()).collect();
        assert_eq!(order, names);
    }

    #[test]
    fn the_recomputation_from_public_data_equals_the_order() {
        let mut rng = StdRng::seed_from_u64(27);
        let seed = seed(&mut rng);
        let tokens: Vec<TokenId> = (0..500).map(|_| TokenId::random(&mut rng)).collect();
        let drawn = draw(&seed, &tokens);
        let verified = verify(&published(&seed, &drawn)).expect("an honest draw verifies");
        assert_eq!(verified, drawn);
        let mine = PublicName::of(tokens[17]);
        assert_eq!(drawn.place_of(mine), verified.place_of(mine));
        assert!(drawn.place_of(mine).is_some());
    }

    #[test]
    fn another_seed_is_detected() {
        let mut rng = StdRng::seed_from_u64(1);
        let seed = seed(&mut rng);
        let tokens: Vec<TokenId> = (0..50).map(|_| TokenId::random(&mut rng)).collect();
        let mut document = published(&seed, &draw(&seed, &tokens));
        let mut other = *seed.bytes();
        other[0] ^= 1;
        document.seed = hex::encode(other);
        assert!(matches!(
            verify(&document),
            Err(DrawMismatch::Commitment { .. })
        ));

        // A seed that matches its commitment but did not make the published order.
        let other = DrawSeed::from_bytes(other);
        document.commitment = other.commitment();
        assert!(matches!(verify(&document), Err(DrawMismatch::Place { .. })));

        document.seed = "zz".into();
        assert_eq!(verify(&document), Err(DrawMismatch::MalformedSeed));
    }

    #[test]
    fn a_changed_participant_is_detected() {
        let mut rng = StdRng::seed_from_u64(2);
        let seed = seed(&mut rng);
        let tokens: Vec<TokenId> = (0..50).map(|_| TokenId::random(&mut rng)).collect();
        let drawn = draw(&seed, &tokens);
        let honest = published(&seed, &drawn);

        let mut swapped = honest.clone();
        swapped.order[10] = PublicName::of(token(12345)).to_hex();
        assert!(matches!(verify(&swapped), Err(DrawMismatch::Digest { .. })));

        let mut dropped = honest.clone();
        dropped.order.pop();
        assert!(matches!(verify(&dropped), Err(DrawMismatch::Digest { .. })));

        let mut added = honest.clone();
        added.order.push(PublicName::of(token(12345)).to_hex());
        assert!(matches!(verify(&added), Err(DrawMismatch::Digest { .. })));

        let mut repeated = honest.clone();
        repeated.order.push(honest.order[3].clone());
        assert_eq!(
            verify(&repeated),
            Err(DrawMismatch::DuplicateName { place: 51 })
        );

        let mut upper = honest;
        upper.order[0] = upper.order[0].to_uppercase();
        assert_eq!(
            verify(&upper),
            Err(DrawMismatch::MalformedName { place: 1 })
        );
    }

    #[test]
    fn a_moved_place_is_detected() {
        let mut rng = StdRng::seed_from_u64(3);
        let seed = seed(&mut rng);
        let tokens: Vec<TokenId> = (0..50).map(|_| TokenId::random(&mut rng)).collect();
        let mut document = published(&seed, &draw(&seed, &tokens));
        document.order.swap(4, 30);
        assert!(matches!(
            verify(&document),
            Err(DrawMismatch::Place { place: 5, .. })
        ));
    }

    #[test]
    fn drawing_tokens_keeps_each_place_s_token() {
        let mut rng = StdRng::seed_from_u64(5);
        let seed = seed(&mut rng);
        let tokens: Vec<TokenId> = (0..100).map(|_| TokenId::random(&mut rng)).collect();
        let (drawn, order) = draw_tokens(&seed, &tokens);
        assert_eq!(drawn, draw(&seed, &tokens));
        let names: Vec<PublicName> = order.iter().map(|&t| PublicName::of(t)).collect();
        assert_eq!(names, drawn.order);
    }

    #[test]
    fn the_order_does_not_depend_on_arrival_order() {
        let mut rng = StdRng::seed_from_u64(4);
        let seed = seed(&mut rng);
        let mut tokens: Vec<TokenId> = (0..200).map(|_| TokenId::random(&mut rng)).collect();
        let first = draw(&seed, &tokens);
        for _ in 0..5 {
            tokens.shuffle(&mut rng);
            assert_eq!(draw(&seed, &tokens), first);
        }
    }

    /// Over many draws of a pre-queue of `N`, each arrival lands in each place equally often:
    /// a chi-square test per arrival (N - 1 degrees of freedom). The RNG is seeded, so the
    /// test is deterministic; the threshold is the 0.1 % point, so an honest shuffle passes
    /// with room and a biased one (a place kept, a rotation) fails by orders of magnitude.
    #[test]
    fn every_arrival_lands_in_every_place_uniformly() {
        const N: usize = 6;
        const DRAWS: usize = 12_000;
        // χ²(5 degrees of freedom) at p = 0.001.
        const CRITICAL: f64 = 20.515;
        let mut rng = StdRng::seed_from_u64(2027);
        let mut counts = [[0u32; N]; N];
        for _ in 0..DRAWS {
            let seed = seed(&mut rng);
            let arrivals: Vec<TokenId> = (0..N).map(|_| TokenId::random(&mut rng)).collect();
            let drawn = draw(&seed, &arrivals);
            for (arrival, &t) in arrivals.iter().enumerate() {
                let place = drawn.place_of(PublicName::of(t)).unwrap() - 1;
                counts[arrival][place] += 1;
            }
        }
        let expected = DRAWS as f64 / N as f64;
        for (arrival, row) in counts.iter().enumerate() {
            let chi_square: f64 = row
                .iter()
                .map(|&c| (f64::from(c) - expected).powi(2) / expected)
                .sum();
            assert!(
                chi_square < CRITICAL,
                "arrival {arrival}: χ² = {chi_square:.2} ({row:?})"
            );
        }
    }

    #[test]
    fn the_seed_never_shows_in_debug_output() {
        let seed = DrawSeed::from_bytes([0xab; 32]);
        assert!(!format!("{seed:?}").contains("ab"));
    }
}
