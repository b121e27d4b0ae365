//! Wallet routes: recharge and read the balance.

use super::extract::id;
use super::error::ErrorBody;
use super::{within_deadline, ApiError, AppState};
use crate::domain::UserId;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Deserialize, ToSchema)]
pub struct RechargeRequest {
    /// Any JSON number: one that is not a whole `i64` is an invalid amount, not a bad request.
    #[schema(value_type = i64, example = 50000)]
    amount: serde_json::Number,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BalanceBody {
    user_id: i64,
    current_amount: i64,
}

/// Add money to the user's wallet.
#[utoipa::path(post, path = "/v1/balance/users/{userId}/recharge", tag = "wallet", request_body = RechargeRequest,
    params(("userId" = i64, Path)),
    responses(
        (status = 200, body = BalanceBody),
        (status = 400, description = "invalid_request, invalid_recharge_amount", body = ErrorBody),
        (status = 404, description = "user_not_found", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
pub async fn recharge(
    state: web::Data<AppState>,
    path: web::Path<i64>,
    body: web::Json<RechargeRequest>,
) -> Result<HttpResponse, ApiError> {
    let user = id(path.into_inner(), UserId::new)?;
    let amount = body
        .amount
        .as_i64()
        .ok_or(ApiError::InvalidRechargeAmount)?;
    let balance = within_deadline(state.engine.recharge(user, amount)).await?;
    Ok(HttpResponse::Ok().json(BalanceBody {
        user_id: user.get(),
        current_amount: balance.won(),
    }))
}

/// The user's balance.
#[utoipa::path(get, path = "/v1/balance/users/{userId}", tag = "wallet",
    params(("userId" = i64, Path)),
    responses(
        (status = 200, body = BalanceBody),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 404, description = "user_not_found", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
pub async fn balance(
    state: web::Data<AppState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let user = id(path.into_inner(), UserId::new)?;
    let balance = within_deadline(state.engine.balance(user)).await?;
    Ok(HttpResponse::Ok().json(BalanceBody {
        user_id: user.get(),
        current_amount: balance.won(),
    }))
}
