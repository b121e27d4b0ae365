//! `boxoffice verify-draw`: a buyer's (or anyone's) check of a fair opening's draw against
//! what the service published (API.md §11): it downloads `GET /v1/queue/opening` and every
//! page of `GET /v1/queue/draw`, checks that the pages agree with each other and with the
//! opening, then hands the whole document to [`crate::domain::queue::verify`] (commitment,
//! participants' digest, every place) and finds a token's place.
//!
//! The check trusts nothing the server says about itself: it only reads the published
//! values as text and recomputes every one of them.

use crate::domain::queue::{verify, Draw, DrawMismatch, PublicName, PublishedDraw};
use crate::domain::TokenId;
use serde::Deserialize;
use std::time::Duration;

/// The largest page `GET /v1/queue/draw` serves; the client asks for pages of this size.
pub const DRAW_PAGE_LIMIT: usize = 10_000;
/// A participant count past which the published `total` is not believed (and not allocated
/// for): ten times the waiting room's million-waiter target.
const MAX_PARTICIPANTS: u64 = 10_000_000;
/// One request's budget: a page of 10,000 names is 660 KB.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// `GET /v1/queue/opening`, the fields the check reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpeningDocument {
    pub status: String,
    pub commitment: Option<String>,
    pub seed: Option<String>,
    pub participants_digest: Option<String>,
    pub participants: Option<u64>,
    pub drawn_at: Option<String>,
}

/// One page of `GET /v1/queue/draw`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrawPageDocument {
    pub commitment: String,
    pub seed: String,
    pub participants_digest: String,
    pub total: u64,
    pub order: Vec<String>,
}

/// Why a draw could not be checked, or failed its check.
#[derive(Debug, thiserror::Error)]
pub enum VerifyDrawError {
    #[error("cannot fetch {url}: {source}")]
    Fetch { url: String, source: reqwest::Error },
    #[error("{url} answered {status}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url} did not answer the documented JSON: {source}")]
    Document {
        url: String,
        source: serde_json::Error,
    },
    #[error("the opening is {status}, not DRAWN: there is no draw to verify yet")]
    NotDrawn { status: String },
    #[error("the published documents disagree: {0}")]
    Inconsistent(String),
    #[error("the draw does not verify: {0}")]
    Mismatch(#[from] DrawMismatch),
    #[error("this token did not take part in the draw (it joined after the opening, or left the pre-queue before it)")]
    NotAParticipant,
}

/// A verified draw, and the buyer's place in it when a token was given.
#[derive(Debug)]
pub struct VerifiedDraw {
    pub draw: Draw,
    pub seed: String,
    pub drawn_at: Option<String>,
    /// (1-based place, public name) of the token asked about.
    pub place: Option<(usize, PublicName)>,
}

impl VerifiedDraw {
    /// What the command prints.
    pub fn report(&self) -> String {
        let total = self.draw.order.len();
        let mut text = format!(
            "commitment          {}  = SHA-256(seed): ok\n\
             seed                {}\n\
             participantsDigest  {}  = SHA-256(sorted names): ok\n\
             order               {total} places, each in ascending SHA-256(seed ‖ digest ‖ name): ok\n",
            self.draw.commitment, self.seed, self.draw.participants_digest,
        );
        if let Some(at) = &self.drawn_at {
            text.push_str(&format!("drawn at            {at}\n"));
        }
        if let Some((place, name)) = self.place {
            text.push_str(&format!(
                "your place          #{place} of {total} (your name {name})\n"
            ));
        }
        text
    }
}

/// Checks the downloaded documents: every page carries the opening's commitment, seed,
/// digest and total, the pages add up to the total, and the draw itself verifies. Then finds
/// `token`'s place.
pub fn check(
    opening: &OpeningDocument,
    pages: &[DrawPageDocument],
    token: Option<TokenId>,
) -> Result<VerifiedDraw, VerifyDrawError> {
    if opening.status != "DRAWN" {
        return Err(VerifyDrawError::NotDrawn {
            status: opening.status.clone(),
        });
    }
    let first = pages
        .first()
        .ok_or_else(|| VerifyDrawError::Inconsistent("no page of the draw".into()))?;
    let agree = |what: &str, published: &Option<String>, paged: &str| match published {
        Some(value) if value == paged => Ok(()),
        _ => Err(VerifyDrawError::Inconsistent(format!(
            "the opening's {what} is {published:?}, the draw's is {paged:?}"
        ))),
    };
    agree("commitment", &opening.commitment, &first.commitment)?;
    agree("seed", &opening.seed, &first.seed)?;
    agree(
        "participantsDigest",
        &opening.participants_digest,
        &first.participants_digest,
    )?;
    if opening.participants.is_some_and(|n| n != first.total) {
        return Err(VerifyDrawError::Inconsistent(format!(
            "the opening counts {:?} participants, the draw {}",
            opening.participants, first.total
        )));
    }
    let mut order = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        if page.commitment != first.commitment
            || page.seed != first.seed
            || page.participants_digest != first.participants_digest
            || page.total != first.total
        {
            return Err(VerifyDrawError::Inconsistent(format!(
                "page {} of the draw does not carry the first page's commitment, seed, digest and total",
                i + 1
            )));
        }
        order.extend(page.order.iter().cloned());
    }
    if order.len() as u64 != first.total {
        return Err(VerifyDrawError::Inconsistent(format!(
            "the draw's total is {}, its pages list {}",
            first.total,
            order.len()
        )));
    }
    let draw = verify(&PublishedDraw {
        commitment: first.commitment.clone(),
        seed: first.seed.clone(),
        participants_digest: first.participants_digest.clone(),
        order,
    })?;
    let place = match token {
        None => None,
        Some(token) => {
            let name = PublicName::of(token);
            let place = draw
                .place_of(name)
                .ok_or(VerifyDrawError::NotAParticipant)?;
            Some((place, name))
        }
    };
    Ok(VerifiedDraw {
        draw,
        seed: first.seed.clone(),
        drawn_at: opening.drawn_at.clone(),
        place,
    })
}

/// Downloads the opening and every page of the draw from the service at `base_url`, and
/// checks them ([`check`]).
pub async fn verify_draw(
    base_url: &str,
    token: Option<TokenId>,
) -> Result<VerifiedDraw, VerifyDrawError> {
    let base = base_url.trim_end_matches('/');
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|source| VerifyDrawError::Fetch {
            url: base.to_string(),
            source,
        })?;
    let opening: OpeningDocument = fetch(&client, &format!("{base}/v1/queue/opening")).await?;
    if opening.status != "DRAWN" {
        return Err(VerifyDrawError::NotDrawn {
            status: opening.status,
        });
    }
    let mut pages: Vec<DrawPageDocument> = Vec::new();
    let mut listed = 0usize;
    loop {
        let url = format!("{base}/v1/queue/draw?offset={listed}&limit={DRAW_PAGE_LIMIT}");
        let page: DrawPageDocument = fetch(&client, &url).await?;
        if page.total > MAX_PARTICIPANTS || page.order.len() > DRAW_PAGE_LIMIT {
            return Err(VerifyDrawError::Inconsistent(format!(
                "{url} lists {} of {} names, past any real draw",
                page.order.len(),
                page.total
            )));
        }
        listed += page.order.len();
        let (total, empty) = (page.total, page.order.is_empty());
        pages.push(page);
        // An empty page ends the listing too: a short draw is then caught by `check`.
        if listed as u64 >= total || empty {
            break;
        }
    }
    check(&opening, &pages, token)
}

async fn fetch<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
) -> Result<T, VerifyDrawError> {
    let failed = |source| VerifyDrawError::Fetch {
        url: url.to_string(),
        source,
    };
    let response = client.get(url).send().await.map_err(failed)?;
    let status = response.status();
    let body = response.text().await.map_err(failed)?;
    if !status.is_success() {
        return Err(VerifyDrawError::Refused {
            url: url.to_string(),
            status: status.as_u16(),
            body: body.chars().take(200).collect(),
        });
    }
    serde_json::from_str(&body).map_err(|source| VerifyDrawError::Document {
        url: url.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::queue::{draw, DrawSeed};
    use actix_web::{web, App, HttpResponse, HttpServer};

    fn tokens() -> Vec<TokenId> {
        (1..=25_000)
            .map(|n| TokenId::new(n * 7919).unwrap())
            .collect()
    }

    /// The honest documents of a draw of [`tokens`]: the opening and pages of `page` names.
    fn honest(page: usize) -> (OpeningDocument, Vec<DrawPageDocument>) {
        let seed = DrawSeed::from_bytes([42; 32]);
        let drawn = draw(&seed, &tokens());
        let names: Vec<String> = drawn.order.iter().map(|n| n.to_hex()).collect();
        let opening = OpeningDocument {
            status: "DRAWN".into(),
            commitment: Some(drawn.commitment.clone()),
            seed: Some(seed.to_hex()),
            participants_digest: Some(drawn.participants_digest.clone()),
            participants: Some(names.len() as u64),
            drawn_at: Some("2030-07-19T10:00:00".into()),
        };
        let pages = names
            .chunks(page)
            .map(|chunk| DrawPageDocument {
                commitment: drawn.commitment.clone(),
                seed: seed.to_hex(),
                participants_digest: drawn.participants_digest.clone(),
                total: names.len() as u64,
                order: chunk.to_vec(),
            })
            .collect();
        (opening, pages)
    }

    #[test]
    fn an_honest_draw_verifies_and_gives_the_buyer_their_place() {
        let (opening, pages) = honest(1000);
        let mine = tokens()[1234];
        let verified = check(&opening, &pages, Some(mine)).expect("honest");
        let (place, name) = verified.place.unwrap();
        assert_eq!(name, PublicName::of(mine));
        assert_eq!(verified.draw.order[place - 1], name);
        assert!(verified.report().contains(&format!("#{place} of 25000")));
    }

    #[test]
    fn every_tampered_part_is_refused() {
        let (opening, pages) = honest(1000);
        let tamper = |f: &dyn Fn(&mut OpeningDocument, &mut Vec<DrawPageDocument>)| {
            let (mut o, mut p) = (opening.clone(), pages.clone());
            f(&mut o, &mut p);
            check(&o, &p, None).expect_err("tampered")
        };
        let flip = |hex: &str| {
            let mut bytes = hex::decode(hex).unwrap();
            bytes[0] ^= 1;
            hex::encode(bytes)
        };
        // The commitment (everywhere, consistently): SHA-256(seed) no longer matches.
        let error = tamper(&|o, p| {
            o.commitment = o.commitment.as_deref().map(flip);
            p.iter_mut()
                .for_each(|page| page.commitment = flip(&page.commitment));
        });
        assert!(matches!(
            error,
            VerifyDrawError::Mismatch(DrawMismatch::Commitment { .. })
        ));
        // The seed, with a commitment to match: the order was not drawn with it.
        let error = tamper(&|o, p| {
            let other = DrawSeed::from_bytes([43; 32]);
            o.seed = Some(other.to_hex());
            o.commitment = Some(other.commitment());
            p.iter_mut().for_each(|page| {
                page.seed = other.to_hex();
                page.commitment = other.commitment();
            });
        });
        assert!(matches!(
            error,
            VerifyDrawError::Mismatch(DrawMismatch::Place { .. })
        ));
        // The digest.
        let error = tamper(&|o, p| {
            o.participants_digest = o.participants_digest.as_deref().map(flip);
            p.iter_mut()
                .for_each(|page| page.participants_digest = flip(&page.participants_digest));
        });
        assert!(matches!(
            error,
            VerifyDrawError::Mismatch(DrawMismatch::Digest { .. })
        ));
        // One participant replaced.
        let error =
            tamper(&|_, p| p[3].order[5] = PublicName::of(TokenId::new(1).unwrap()).to_hex());
        assert!(matches!(
            error,
            VerifyDrawError::Mismatch(DrawMismatch::Digest { .. })
        ));
        // Two places swapped across pages.
        let error = tamper(&|_, p| {
            let moved = std::mem::take(&mut p[0].order[0]);
            p[0].order[0] = std::mem::replace(&mut p[9].order[99], moved);
        });
        assert!(matches!(
            error,
            VerifyDrawError::Mismatch(DrawMismatch::Place { place: 1, .. })
        ));
        // A page left out, or pages that disagree, or an opening that disagrees.
        assert!(matches!(
            tamper(&|_, p| {
                p.remove(7);
            }),
            VerifyDrawError::Inconsistent(_)
        ));
        assert!(matches!(
            tamper(&|_, p| p[2].seed = flip(&p[2].seed)),
            VerifyDrawError::Inconsistent(_)
        ));
        assert!(matches!(
            tamper(&|o, _| o.participants = Some(3)),
            VerifyDrawError::Inconsistent(_)
        ));
        assert!(matches!(
            tamper(&|o, _| o.status = "SCHEDULED".into()),
            VerifyDrawError::NotDrawn { .. }
        ));
    }

    #[test]
    fn a_token_that_did_not_take_part_has_no_place() {
        let (opening, pages) = honest(10_000);
        let outsider = TokenId::new(5).unwrap();
        assert!(matches!(
            check(&opening, &pages, Some(outsider)),
            Err(VerifyDrawError::NotAParticipant)
        ));
    }

    /// A tiny server that publishes `opening` and `pages` (pages of 10,000, as the service
    /// pages them), to run the whole download against.
    async fn publish(opening: serde_json::Value, pages: Vec<serde_json::Value>) -> String {
        let server = HttpServer::new(move || {
            let (opening, pages) = (opening.clone(), pages.clone());
            App::new()
                .route(
                    "/v1/queue/opening",
                    web::get().to(move || {
                        let opening = opening.clone();
                        async move { HttpResponse::Ok().json(opening) }
                    }),
                )
                .route(
                    "/v1/queue/draw",
                    web::get().to(
                        move |q: web::Query<std::collections::HashMap<String, usize>>| {
                            let page = pages.get(q["offset"] / DRAW_PAGE_LIMIT).cloned();
                            async move { HttpResponse::Ok().json(page.unwrap_or_default()) }
                        },
                    ),
                )
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let address = server.addrs()[0];
        actix_web::rt::spawn(server.run());
        format!("http://{address}/")
    }

    fn as_json(
        opening: &OpeningDocument,
        pages: &[DrawPageDocument],
    ) -> (serde_json::Value, Vec<serde_json::Value>) {
        let opening = serde_json::json!({
            "opensAt": "2030-07-19T10:00:00", "status": opening.status, "commitment": opening.commitment,
            "seed": opening.seed, "participantsDigest": opening.participants_digest,
            "participants": opening.participants, "drawnAt": opening.drawn_at,
        });
        let pages = pages
            .iter()
            .map(|p| serde_json::json!({
                "commitment": p.commitment, "seed": p.seed, "participantsDigest": p.participants_digest,
                "total": p.total, "order": p.order,
            }))
            .collect();
        (opening, pages)
    }

    #[actix_web::test]
    async fn the_download_reads_every_page_and_catches_a_tampered_one() {
        let (opening, pages) = honest(DRAW_PAGE_LIMIT);
        assert_eq!(pages.len(), 3);
        let (o, p) = as_json(&opening, &pages);
        let url = publish(o, p).await;
        let mine = tokens()[24_999];
        let verified = verify_draw(&url, Some(mine)).await.expect("honest");
        assert_eq!(verified.draw.order.len(), 25_000);
        assert!(verified.place.is_some());

        let mut tampered = pages.clone();
        tampered[2].order.swap(0, 1);
        let (o, p) = as_json(&opening, &tampered);
        let url = publish(o, p).await;
        let error = verify_draw(&url, None).await.expect_err("tampered");
        assert!(
            matches!(
                error,
                VerifyDrawError::Mismatch(DrawMismatch::Place { place: 20_001, .. })
            ),
            "{error}"
        );
    }
}
