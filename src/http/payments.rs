//! Payment route: pay a held reservation from the wallet (ACTIVE token of the same user).

use super::extract::{id, TokenHeader};
use super::{within_deadline, ApiError, AppState};
use crate::domain::{ReservationId, UserId};
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PayRequest {
    reservation_id: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PaymentBody {
    payment_id: i64,
    amount: i64,
    payment_status: &'static str,
}

/// POST /v1/payments/users/{userId}: debit, mark paid, record, expire the token — atomically.
pub async fn pay(
    state: web::Data<AppState>,
    path: web::Path<i64>,
    token: TokenHeader,
    body: web::Json<PayRequest>,
) -> Result<HttpResponse, ApiError> {
    let user = id(path.into_inner(), UserId::new)?;
    let reservation = id(body.reservation_id, ReservationId::new)?;
    if !state.engine.user_exists(user) {
        return Err(ApiError::UserNotFound);
    }
    let token = state.engine.authorize(token.0, Some(user))?;
    let receipt = within_deadline(state.engine.pay(user, reservation, token.id)).await?;
    Ok(HttpResponse::Created().json(PaymentBody {
        payment_id: receipt.payment.get(),
        amount: receipt.amount.won(),
        payment_status: "COMPLETED",
    }))
}
