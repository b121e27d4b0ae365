//! A ticket's code, `bo1.<payload>.<signature>` (API.md §12): the payload is base64url (no
//! padding) of `{"t","s","e","v","i"}`, the signature Ed25519 over the ASCII bytes
//! `bo1.<payload>`. Signing and verifying are pure, so a scanner holding only the public key
//! checks a code offline exactly as the door route does.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The prefix of every code of this format.
pub const CODE_PREFIX: &str = "bo1";

/// A code longer than this is refused unread (a real one is about 200 bytes).
pub const MAX_CODE_LEN: usize = 512;

/// What a code says: ticket, schedule, seat, version and when this version was issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeClaims {
    pub t: i64,
    pub s: i64,
    pub e: i64,
    pub v: u32,
    pub i: i64,
}

/// Why a code is not one this service signed (all of them answer `invalid_ticket`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("malformed code")]
    Malformed,
    #[error("bad signature")]
    BadSignature,
}

/// The service's signing key, and its public half as scanners know it.
#[derive(Clone)]
pub struct TicketKeys {
    signing: SigningKey,
    verifying: VerifyingKey,
    key_id: String,
}

impl std::fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret half.
        f.debug_struct("TicketKeys")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl TicketKeys {
    /// The key whose 32-byte secret seed is `seed` (as kept in the store).
    pub fn from_seed(seed: [u8; 32]) -> TicketKeys {
        TicketKeys::from_signing(SigningKey::from_bytes(&seed))
    }

    /// An Ed25519 private key in PKCS#8 PEM (`--ticket-signing-key`).
    pub fn from_pem(pem: &str) -> Result<TicketKeys, String> {
        SigningKey::from_pkcs8_pem(pem)
            .map(TicketKeys::from_signing)
            .map_err(|e| format!("not an Ed25519 PKCS#8 PEM private key: {e}"))
    }

    fn from_signing(signing: SigningKey) -> TicketKeys {
        let verifying = signing.verifying_key();
        let digest = Sha256::digest(verifying.as_bytes());
        TicketKeys {
            signing,
            verifying,
            key_id: hex::encode(&digest[..8]),
        }
    }

    /// The secret seed, for the store.
    pub fn seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// A short name of the public key: the first 8 bytes of its SHA-256, in hex.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The 32 raw public-key bytes, base64 (standard alphabet, padded).
    pub fn public_key_base64(&self) -> String {
        STANDARD.encode(self.verifying.as_bytes())
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.verifying
    }

    /// The code of these claims.
    pub fn sign(&self, claims: &CodeClaims) -> String {
        let json = serde_json::to_vec(claims).expect("five integers always serialize");
        let signed = format!("{CODE_PREFIX}.{}", URL_SAFE_NO_PAD.encode(json));
        let signature = self.signing.sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }
}

/// Checks a code against a public key alone and reads its claims.
pub fn verify(key: &VerifyingKey, code: &str) -> Result<CodeClaims, CodeError> {
    if code.len() > MAX_CODE_LEN {
        return Err(CodeError::Malformed);
    }
    let (signed, signature) = code.rsplit_once('.').ok_or(CodeError::Malformed)?;
    let (prefix, payload) = signed.split_once('.').ok_or(CodeError::Malformed)?;
    if prefix != CODE_PREFIX {
        return Err(CodeError::Malformed);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .ok()
        .and_then(|bytes| Signature::from_slice(&bytes).ok())
        .ok_or(CodeError::Malformed)?;
    // Strict: no malleable or small-order variants of a valid signature are accepted.
    key.verify_strict(signed.as_bytes(), &signature)
        .map_err(|_| CodeError::BadSignature)?;
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| CodeError::Malformed)?;
    serde_json::from_slice(&json).map_err(|_| CodeError::Malformed)
}

/// The schedule a code names, read without checking its signature: only to find which node
/// decides it (cluster mode's routing). The node that decides verifies the code in full, so a
/// forged code reaches at worst the wrong node, which refuses it as any node would.
pub fn schedule_named(code: &str) -> Option<i64> {
    if code.len() > MAX_CODE_LEN {
        return None;
    }
    let (signed, _) = code.rsplit_once('.')?;
    let (prefix, payload) = signed.split_once('.')?;
    if prefix != CODE_PREFIX {
        return None;
    }
    let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<CodeClaims>(&json)
        .ok()
        .map(|c| c.s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> CodeClaims {
        CodeClaims {
            t: 7,
            s: 2,
            e: 31,
            v: 1,
            i: 1_800_000_000,
        }
    }

    #[test]
    fn a_signed_code_verifies_with_the_public_key_alone_and_reads_its_claims() {
        let keys = TicketKeys::from_seed([3; 32]);
        let code = keys.sign(&claims());
        assert!(code.starts_with("bo1."));
        let public = VerifyingKey::from_bytes(keys.verifying_key().as_bytes()).expect("valid");
        assert_eq!(verify(&public, &code), Ok(claims()));
    }

    #[test]
    fn the_payload_is_the_documented_json() {
        let code = TicketKeys::from_seed([3; 32]).sign(&claims());
        let payload = code.split('.').nth(1).expect("three parts");
        let json = URL_SAFE_NO_PAD.decode(payload).expect("base64url");
        assert_eq!(
            String::from_utf8(json).expect("utf-8"),
            r#"{"t":7,"s":2,"e":31,"v":1,"i":1800000000}"#
        );
    }

    #[test]
    fn a_changed_payload_another_key_or_garbage_is_refused() {
        let keys = TicketKeys::from_seed([3; 32]);
        let code = keys.sign(&claims());
        let other = keys.sign(&CodeClaims { v: 2, ..claims() });
        let (_, sig) = code.rsplit_once('.').expect("three parts");
        let (signed_other, _) = other.rsplit_once('.').expect("three parts");
        let spliced = format!("{signed_other}.{sig}");
        let key = keys.verifying_key();
        assert_eq!(verify(&key, &spliced), Err(CodeError::BadSignature));
        let stranger = TicketKeys::from_seed([4; 32]).verifying_key();
        assert_eq!(verify(&stranger, &code), Err(CodeError::BadSignature));
        for junk in [
            "",
            "bo1",
            "bo1..",
            "bo2.e30.AAAA",
            "x.y.z",
            &"a".repeat(600),
        ] {
            assert!(verify(&key, junk).is_err(), "{junk}");
        }
    }

    #[test]
    fn a_code_names_its_schedule_unverified_or_nothing() {
        let keys = TicketKeys::from_seed([3; 32]);
        assert_eq!(schedule_named(&keys.sign(&claims())), Some(2));
        // Another key's code still names its schedule: routing does not verify.
        let stranger = TicketKeys::from_seed([4; 32]);
        assert_eq!(schedule_named(&stranger.sign(&claims())), Some(2));
        for junk in [
            "",
            "bo1",
            "bo1..",
            "bo2.e30.AAAA",
            "bo1.e30.AAAA",
            &"a".repeat(600),
        ] {
            assert_eq!(schedule_named(junk), None, "{junk}");
        }
    }

    #[test]
    fn a_pem_key_reads_and_signs_like_its_seed() {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let signing = SigningKey::from_bytes(&[9; 32]);
        let pem = signing
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .expect("encodable");
        let keys = TicketKeys::from_pem(&pem).expect("a PKCS#8 Ed25519 key");
        assert_eq!(keys.seed(), [9; 32]);
        assert!(TicketKeys::from_pem("not a key").is_err());
    }
}
