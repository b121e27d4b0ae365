//! Mints a test bearer token for `serve --auth jwt`: the JWT an identity provider would issue.
//! For trying the service and for tests; production tokens come from the real issuer.
//!
//! ```sh
//! # HS256, against `serve --auth jwt --jwt-secret "$SECRET"`:
//! cargo run --example mint_token -- --user 1 --secret "$SECRET"
//! # RS256 / ES256 / EdDSA, against `serve --auth jwt --jwt-public-key public.pem`:
//! cargo run --example mint_token -- --user 1 --private-key private.pem
//! ```

use clap::Parser;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(about = "Mint a test bearer token for serve --auth jwt")]
struct Args {
    /// The user id the token names (`sub`).
    #[arg(long)]
    user: u64,
    /// HS256 secret (the server's --jwt-secret).
    #[arg(
        long,
        env = "BOXOFFICE_JWT_SECRET",
        hide_env_values = true,
        conflicts_with = "private_key"
    )]
    secret: Option<String>,
    /// PKCS#8 PEM private key (RSA, P-256 or Ed25519) whose public half the server holds.
    #[arg(long, value_name = "FILE")]
    private_key: Option<PathBuf>,
    /// Seconds until `exp`.
    #[arg(long, default_value_t = 3600)]
    ttl_secs: u64,
    /// `iss`, when the server checks --jwt-issuer.
    #[arg(long)]
    issuer: Option<String>,
    /// `aud`, when the server checks --jwt-audience.
    #[arg(long)]
    audience: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match mint(&args) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn mint(args: &Args) -> Result<String, String> {
    let (algorithm, key) = match (&args.secret, &args.private_key) {
        (Some(secret), None) => (
            Algorithm::HS256,
            EncodingKey::from_secret(secret.as_bytes()),
        ),
        (None, Some(path)) => private_key(path)?,
        _ => return Err("give --secret or --private-key".into()),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let mut claims =
        json!({ "sub": args.user.to_string(), "iat": now, "exp": now + args.ttl_secs });
    if let Some(issuer) = &args.issuer {
        claims["iss"] = json!(issuer);
    }
    if let Some(audience) = &args.audience {
        claims["aud"] = json!(audience);
    }
    jsonwebtoken::encode(&Header::new(algorithm), &claims, &key).map_err(|e| e.to_string())
}

/// The key in `path`, and the algorithm its type fixes (as the server decides it).
fn private_key(path: &PathBuf) -> Result<(Algorithm, EncodingKey), String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if let Ok(key) = EncodingKey::from_rsa_pem(&pem) {
        return Ok((Algorithm::RS256, key));
    }
    if let Ok(key) = EncodingKey::from_ec_pem(&pem) {
        return Ok((Algorithm::ES256, key));
    }
    if let Ok(key) = EncodingKey::from_ed_pem(&pem) {
        return Ok((Algorithm::EdDSA, key));
    }
    Err(format!(
        "{} is not an RSA, P-256 or Ed25519 private key in PEM",
        path.display()
    ))
}
