//! Wallet routes: recharge and read the balance.

use super::extract::id;
use super::{within_deadline, ApiError, AppState};
use crate::domain::UserId;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
pub struct RechargeRequest {
    /// Any JSON number: one that is not a whole `i64` is an invalid amount, not a bad request.
    amount: serde_json::Number,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BalanceBody {
    user_id: i64,
    current_amount: i64,
}

/// POST /v1/balance/users/{userId}/recharge
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

/// GET /v1/balance/users/{userId}
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
