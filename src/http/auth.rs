//! Who is calling: with `--auth jwt`, every user-scoped route needs `Authorization: Bearer
//! <JWT>` whose `sub` is the user the request names. The key, and so the one algorithm a token
//! may use, is fixed at startup; the token's own `alg` only has to agree with it.

use super::ApiError;
use crate::config::{AuthMode, AuthSettings};
use crate::domain::UserId;
use actix_web::http::header;
use actix_web::HttpRequest;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The shortest HS256 secret accepted: as many bytes as the hash it keys (RFC 7518 §3.2).
pub const MIN_SECRET_BYTES: usize = 32;
/// Clock skew allowed between the issuer and this service when `exp` (and `nbf`) are checked.
const LEEWAY_SECS: u64 = 60;

/// Why `--auth jwt` cannot start: each is one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("--auth jwt needs --jwt-secret or --jwt-public-key")]
    NoKey,
    #[error("--auth jwt takes --jwt-secret or --jwt-public-key, not both")]
    TwoKeys,
    #[error("--jwt-secret must be at least {MIN_SECRET_BYTES} bytes (it has {0})")]
    ShortSecret(usize),
    #[error("cannot read --jwt-public-key {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--jwt-public-key {0} holds a private key: give the service the public key only")]
    PrivateKey(PathBuf),
    #[error("--jwt-public-key {0} is not an RSA, P-256 or Ed25519 public key in PEM")]
    UnsupportedKey(PathBuf),
    #[error("{0} is set but --auth is none: set --auth jwt, or remove it")]
    NotInJwtMode(&'static str),
}

/// The bearer check of every user-scoped route, built once at startup.
pub struct Authenticator {
    /// `None`: `--auth none`, the seed contract (the path names the user).
    verifier: Option<Verifier>,
    user_recharge: bool,
}

struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

/// The claims this service reads. Typed, so a claim of the wrong JSON type is a refusal, never
/// a claim that was "not there". Only `sub` is read here; the library checks the others, and
/// their types here are the point.
#[derive(Deserialize)]
#[allow(dead_code)]
struct Claims {
    sub: String,
    exp: u64,
    iss: Option<String>,
    aud: Option<Audience>,
}

#[derive(Deserialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Authenticator {
    /// The seed contract: nobody is asked who they are.
    pub fn none() -> Authenticator {
        Authenticator {
            verifier: None,
            user_recharge: false,
        }
    }

    /// Checks the settings and reads the key: a mistake here stops the service at startup.
    pub fn new(settings: &AuthSettings) -> Result<Authenticator, AuthSetupError> {
        if settings.mode == AuthMode::None {
            let stray = [
                (settings.jwt_secret.is_some(), "--jwt-secret"),
                (settings.jwt_public_key.is_some(), "--jwt-public-key"),
                (settings.jwt_issuer.is_some(), "--jwt-issuer"),
                (settings.jwt_audience.is_some(), "--jwt-audience"),
                (settings.user_recharge, "--user-recharge"),
            ];
            // An operator who set a key believes the routes are guarded: say they are not.
            if let Some((_, flag)) = stray.into_iter().find(|(set, _)| *set) {
                return Err(AuthSetupError::NotInJwtMode(flag));
            }
            return Ok(Authenticator::none());
        }
        let (key, algorithm) = match (&settings.jwt_secret, &settings.jwt_public_key) {
            (None, None) => return Err(AuthSetupError::NoKey),
            (Some(_), Some(_)) => return Err(AuthSetupError::TwoKeys),
            (Some(secret), None) if secret.expose().len() < MIN_SECRET_BYTES => {
                return Err(AuthSetupError::ShortSecret(secret.expose().len()))
            }
            (Some(secret), None) => (
                DecodingKey::from_secret(secret.expose().as_bytes()),
                Algorithm::HS256,
            ),
            (None, Some(path)) => public_key(path)?,
        };
        // Only the key's algorithm: `alg: none`, and an HS256 token keyed with the public
        // key's bytes, are refused before any signature is computed.
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &settings.jwt_issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &settings.jwt_audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            // Unset: a token may name any audience (the library would refuse every one).
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Ok(Authenticator {
            verifier: Some(Verifier { key, validation }),
            user_recharge: settings.user_recharge,
        })
    }

    /// Whether requests carry a verified bearer (`--auth jwt`).
    pub fn is_jwt(&self) -> bool {
        self.verifier.is_some()
    }

    /// `--auth none`: nothing to check. `--auth jwt`: 401 unless the request carries a valid
    /// bearer, 403 when it is another user's. Runs before anything looks `user` up, so neither
    /// answer says whether that user exists.
    pub fn authenticate(&self, req: &HttpRequest, user: UserId) -> Result<(), ApiError> {
        let Some(verifier) = &self.verifier else {
            return Ok(());
        };
        if verifier.bearer(req)? == user {
            Ok(())
        } else {
            Err(ApiError::Forbidden("forbidden"))
        }
    }

    /// Who may recharge a wallet. Anyone in none mode (the seed); in jwt mode it is a
    /// back-office action (a payment provider's callback, with `X-Admin-Key`), or with
    /// `--user-recharge` the user's own, unless the caller sends the admin key.
    pub fn recharge_gate(&self, req: &HttpRequest) -> RechargeGate {
        if self.verifier.is_none() {
            RechargeGate::Open
        } else if self.user_recharge && !req.headers().contains_key("X-Admin-Key") {
            RechargeGate::OwnBearer
        } else {
            RechargeGate::AdminKey
        }
    }
}

/// What a recharge must show: see [`Authenticator::recharge_gate`].
pub enum RechargeGate {
    Open,
    AdminKey,
    OwnBearer,
}

impl Verifier {
    /// The user a valid bearer names; 401 for every way it can be wrong, told apart only in
    /// the debug log.
    fn bearer(&self, req: &HttpRequest) -> Result<UserId, ApiError> {
        let mut values = req.headers().get_all(header::AUTHORIZATION);
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(refused("no single Authorization header"));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or_else(|| refused("not a bearer"))?;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| refused(&e.to_string()))?
            .claims;
        subject(&claims.sub).ok_or_else(|| refused("sub is not a user id"))
    }
}

/// `sub` as the decimal user id, in its one canonical spelling (no sign, no leading zero).
fn subject(sub: &str) -> Option<UserId> {
    let id: i64 = sub.parse().ok()?;
    if id.to_string() != sub {
        return None;
    }
    UserId::new(id).ok()
}

fn refused(reason: &str) -> ApiError {
    tracing::debug!(reason, "bearer refused");
    ApiError::Unauthorized
}

/// The verification key in a PEM file, and the algorithm its type fixes.
fn public_key(path: &Path) -> Result<(DecodingKey, Algorithm), AuthSetupError> {
    let pem = std::fs::read(path).map_err(|source| AuthSetupError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    // A private key on the server would let whoever reads it mint tokens: refuse it.
    if String::from_utf8_lossy(&pem).contains("PRIVATE KEY") {
        return Err(AuthSetupError::PrivateKey(path.to_owned()));
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((key, Algorithm::RS256));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        if is_p256(&key) {
            return Ok((key, Algorithm::ES256));
        }
        return Err(AuthSetupError::UnsupportedKey(path.to_owned()));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
        return Ok((key, Algorithm::EdDSA));
    }
    Err(AuthSetupError::UnsupportedKey(path.to_owned()))
}

/// ES256 is ECDSA on P-256. An EC key's bytes are its SEC1 point: on P-256, 65 bytes
/// uncompressed or 33 compressed (P-384's are 97 and 49).
fn is_p256(key: &DecodingKey) -> bool {
    matches!(key.as_bytes(), [0x04, rest @ ..] if rest.len() == 64)
        || matches!(key.as_bytes(), [0x02 | 0x03, rest @ ..] if rest.len() == 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_is_a_user_id_in_one_spelling() {
        assert_eq!(subject("7").map(UserId::get), Some(7));
        for not_one in ["", "0", "-7", "+7", "07", " 7", "7 ", "7.0", "1e3", "x"] {
            assert!(subject(not_one).is_none(), "{not_one:?}");
        }
    }

    fn settings(mode: AuthMode) -> AuthSettings {
        AuthSettings {
            mode,
            ..AuthSettings::default()
        }
    }

    #[test]
    fn a_key_without_jwt_mode_is_refused() {
        let stray = AuthSettings {
            jwt_secret: Some("x".repeat(32).into()),
            ..settings(AuthMode::None)
        };
        assert!(matches!(
            Authenticator::new(&stray),
            Err(AuthSetupError::NotInJwtMode("--jwt-secret"))
        ));
        assert!(Authenticator::new(&settings(AuthMode::None)).is_ok());
    }

    #[test]
    fn jwt_mode_needs_exactly_one_long_enough_key() {
        assert!(matches!(
            Authenticator::new(&settings(AuthMode::Jwt)),
            Err(AuthSetupError::NoKey)
        ));
        let short = AuthSettings {
            jwt_secret: Some("x".repeat(31).into()),
            ..settings(AuthMode::Jwt)
        };
        assert!(matches!(
            Authenticator::new(&short),
            Err(AuthSetupError::ShortSecret(31))
        ));
        let both = AuthSettings {
            jwt_secret: Some("x".repeat(32).into()),
            jwt_public_key: Some("key.pem".into()),
            ..settings(AuthMode::Jwt)
        };
        assert!(matches!(
            Authenticator::new(&both),
            Err(AuthSetupError::TwoKeys)
        ));
        let enough = AuthSettings {
            jwt_secret: Some("x".repeat(32).into()),
            ..settings(AuthMode::Jwt)
        };
        assert!(Authenticator::new(&enough).is_ok());
    }
}
