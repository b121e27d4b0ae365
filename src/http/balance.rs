//! Wallet routes: recharge, read the balance, page through the ledger.

use super::answer_bodies::{balance_body, BalanceBody};
use super::error::ErrorBody;
use super::extract::{id, whole};
use super::idempotency::{begin, parse, respond, Begin, IdempotencyKey};
use super::{within_deadline, ApiError, AppState};
use crate::actors::answer::Answer;
use crate::domain::wallet::Recharge;
use crate::domain::UserId;
use actix_web::HttpRequest;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RechargeRequest {
    /// Any JSON number: one that is not a whole `i64` is an invalid amount, not a bad request.
    /// At most the configured largest recharge (`maximum`).
    #[schema(value_type = i64, example = 50000, minimum = 1)]
    amount: serde_json::Number,
}

impl TryFrom<(UserId, RechargeRequest)> for Recharge {
    type Error = ApiError;

    /// Only a whole `i64` can be an amount; the wallet decides whether it is a valid one.
    fn try_from((user, body): (UserId, RechargeRequest)) -> Result<Recharge, ApiError> {
        let amount = whole(&body.amount).ok_or(ApiError::InvalidRechargeAmount)?;
        Ok(Recharge { user, amount })
    }
}

/// Add money to the user's wallet.
#[utoipa::path(post, path = "/v1/balance/users/{userId}/recharge", tag = "wallet", security((), ("bearerAuth" = [])), request_body = RechargeRequest,
    params(("userId" = i64, Path, minimum = 1), ("X-Admin-Key" = Option<String>, Header, description = "--auth jwt: a back-office recharge (a payment provider's callback); optional with --user-recharge"), ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "replays the first answer for a retry")),
    responses(
        (status = 200, body = BalanceBody),
        (status = 400, description = "invalid_request, invalid_recharge_amount", body = ErrorBody),
        (status = 401, description = "unauthorized (--auth jwt: the bearer is missing, malformed, forged or expired)", body = ErrorBody),
        (status = 403, description = "forbidden (--auth jwt: X-Admin-Key missing or wrong; with --user-recharge, a bearer of another user)", body = ErrorBody),
        (status = 404, description = "user_not_found", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 422, description = "idempotency_key_reused", body = ErrorBody),
        (status = 429, description = "rate_limited: too many live idempotency keys", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
#[tracing::instrument(level = "debug", skip_all, fields(user_id = *path))]
pub async fn recharge(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<i64>,
    key: IdempotencyKey,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let user = id(path.into_inner(), UserId::new)?;
    let recharge = Recharge::try_from((user, parse::<RechargeRequest>(&body)?))?;
    state.authorize_recharge(&req, user)?;
    state.known_user(user)?;
    let claim = match begin(&state, key, user, &req, &body).await? {
        Begin::Answer(replayed) => return Ok(replayed),
        Begin::Go(claim) => claim,
    };
    let balance =
        within_deadline(state.engine.recharge(recharge.user, recharge.amount, claim)).await?;
    Ok(respond(
        &state,
        &Answer::Recharged {
            user: recharge.user,
            balance,
        },
    ))
}

/// The user's balance.
#[utoipa::path(get, path = "/v1/balance/users/{userId}", tag = "wallet", security((), ("bearerAuth" = [])),
    params(("userId" = i64, Path, minimum = 1)),
    responses(
        (status = 200, body = BalanceBody),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthorized (--auth jwt: the bearer is missing, malformed, forged or expired)", body = ErrorBody),
        (status = 403, description = "forbidden (--auth jwt: the bearer is another user's)", body = ErrorBody),
        (status = 404, description = "user_not_found", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
#[tracing::instrument(level = "debug", skip_all, fields(user_id = *path))]
pub async fn balance(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let user = id(path.into_inner(), UserId::new)?;
    state.authenticate(&req, user)?;
    let balance = within_deadline(state.engine.balance(user)).await?;
    Ok(HttpResponse::Ok().json(balance_body(user, balance)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Entries per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// Only entries older than this ledger id (the previous page's `nextBefore`).
    #[param(minimum = 1)]
    before: Option<i64>,
}

/// One page of a ledger: at most `limit` entries, older than `before` when given.
struct Page {
    limit: u32,
    before: Option<i64>,
}

impl TryFrom<HistoryQuery> for Page {
    type Error = ApiError;

    fn try_from(query: HistoryQuery) -> Result<Page, ApiError> {
        let limit = query.limit.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(ApiError::invalid("limit must be 1 to 100"));
        }
        if query.before.is_some_and(|b| b < 1) {
            return Err(ApiError::invalid("before must be a positive ledger id"));
        }
        Ok(Page {
            limit,
            before: query.before,
        })
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryBody {
    user_id: i64,
    /// Newest first.
    entries: Vec<LedgerLine>,
    /// Pass as `before` for the next page; null on the last page.
    next_before: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerLine {
    ledger_id: i64,
    #[schema(example = "RECHARGE")]
    kind: &'static str,
    amount: i64,
    balance_after: i64,
    payment_id: Option<i64>,
    created_at: String,
}

/// The user's ledger, newest first: every recharge and payment with the balance after it.
#[utoipa::path(get, path = "/v1/balance/users/{userId}/history", tag = "wallet", security((), ("bearerAuth" = [])),
    params(("userId" = i64, Path, minimum = 1), HistoryQuery),
    responses(
        (status = 200, body = HistoryBody),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthorized (--auth jwt: the bearer is missing, malformed, forged or expired)", body = ErrorBody),
        (status = 403, description = "forbidden (--auth jwt: the bearer is another user's)", body = ErrorBody),
        (status = 404, description = "user_not_found", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
#[tracing::instrument(level = "debug", skip_all, fields(user_id = *path))]
pub async fn history(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<i64>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let user = id(path.into_inner(), UserId::new)?;
    state.authenticate(&req, user)?;
    let page = Page::try_from(query.into_inner())?;
    let entries = within_deadline(state.engine.history(user, page.limit, page.before)).await?;
    // A full page may have more behind it; a short one is the last.
    let next_before = (entries.len() == page.limit as usize)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(HttpResponse::Ok().json(HistoryBody {
        user_id: user.get(),
        next_before,
        entries: entries
            .into_iter()
            .map(|e| LedgerLine {
                ledger_id: e.id,
                kind: e.kind.as_str(),
                amount: e.amount.won(),
                balance_after: e.balance_after.won(),
                payment_id: e.payment.map(|p| p.get()),
                created_at: state.time(e.at),
            })
            .collect(),
    }))
}
