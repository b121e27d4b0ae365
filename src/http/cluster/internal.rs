//! Cluster mode: the routes one node calls on another for a payment or a refund whose wallet
//! and schedule live on different nodes (see `actors/cluster/remote_payment.rs` and
//! `remote_refund.rs`), and for the waiting room's polls. They need the
//! admin key, which every node of a cluster shares, and are a 404 outside cluster mode. The
//! forwarder never forwards them; they are not in the OpenAPI document (not for clients).

use super::peer_wire::{
    CreditAnswer, CreditBody, OutcomeBody, PinAnswer, PinBody, QueueSyncAnswer, QueueSyncBody,
    WireRefusal, MAX_SHARD_NAME, PINS_PATH, QUEUE_SYNC_BODY_LIMIT, QUEUE_SYNC_PATH,
    REFUND_CREDITS_PATH, REFUND_CREDIT_BODY_LIMIT, SPENT_TOKENS_PATH,
};
use crate::actors::cluster::peers::{CreditAsk, PinAsk};
use crate::actors::cluster::queue_copy::MAX_TOUCHES_PER_SYNC;
use crate::actors::PaymentError;
use crate::domain::cluster::ShardId;
use crate::domain::schedule::BookingRefusal;
use crate::domain::schedule::Reservation;
use crate::domain::{ReservationId, TokenId};
use crate::http::admin::check_admin;
use crate::http::error::ApiError;
use crate::http::AppState;
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use std::future::{ready, Ready};

/// The longest node id (as `--node-id` allows).
const MAX_NODE_ID: usize = 64;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource(PINS_PATH).route(web::post().to(pin)))
        .service(
            web::resource(format!("{PINS_PATH}/{{reservationId}}/outcome"))
                .route(web::post().to(outcome)),
        )
        .service(web::resource(SPENT_TOKENS_PATH).route(web::post().to(spend_token)))
        .service(
            web::resource(REFUND_CREDITS_PATH)
                .app_data(crate::http::extract::json_config(REFUND_CREDIT_BODY_LIMIT))
                .route(web::post().to(credit_refund)),
        )
        .service(
            web::resource(QUEUE_SYNC_PATH)
                .app_data(crate::http::extract::json_config(QUEUE_SYNC_BODY_LIMIT))
                .route(web::post().to(queue_sync)),
        );
}

/// Another node's polls refresh their waiters here; it gets the snapshot it answers from.
async fn queue_sync(
    _: NodeAccess,
    state: web::Data<AppState>,
    body: web::Json<QueueSyncBody>,
) -> Result<HttpResponse, ApiError> {
    if body.touches.len() > MAX_TOUCHES_PER_SYNC {
        return Err(ApiError::invalid(format!(
            "at most {MAX_TOUCHES_PER_SYNC} touches per sync"
        )));
    }
    let (gone, snapshot) = state.engine.sync_for_peer(&body.touches)?;
    Ok(HttpResponse::Ok().json(QueueSyncAnswer { gone, snapshot }))
}

/// Cluster mode and the admin key: the first argument of every handler here, so a request
/// outside cluster mode is a 404 and one without the key a 403 before its body is read.
struct NodeAccess;

impl FromRequest for NodeAccess {
    type Error = ApiError;
    type Future = Ready<Result<NodeAccess, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let access = match req.app_data::<web::Data<AppState>>() {
            Some(state) if state.cluster.is_none() => Err(ApiError::NotFound),
            Some(state) => check_admin(state, req).map(|()| NodeAccess),
            None => Err(ApiError::Unavailable("no application state".into())),
        };
        ready(access)
    }
}

/// Pins a hold of this node's schedule for the asking node's payment.
async fn pin(
    _: NodeAccess,
    state: web::Data<AppState>,
    body: web::Json<PinBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if body.from.is_empty() || body.from.len() > MAX_NODE_ID {
        return Err(ApiError::invalid("from must name a node"));
    }
    if body.wallet_shard.len() > MAX_SHARD_NAME
        || !matches!(
            body.wallet_shard.parse::<ShardId>(),
            Ok(ShardId::Wallets(_))
        )
    {
        return Err(ApiError::invalid("walletShard must name a wallet bucket"));
    }
    let ask = PinAsk {
        reservation: body.reservation_id,
        user: body.user_id,
        wallet_shard: body.wallet_shard,
        wallet_epoch: body.wallet_epoch,
    };
    let answer = match state.engine.pin_for_peer(ask, &body.from).await {
        Ok(pinned) => PinAnswer::Pinned {
            reservation: (&pinned.reservation).into(),
            owner: pinned.owner,
            epoch: pinned.epoch,
        },
        Err(PaymentError::Booking(refusal)) => PinAnswer::Refused(WireRefusal::from(&refusal)),
        Err(PaymentError::UserNotFound) => {
            PinAnswer::Refused(WireRefusal::from(&BookingRefusal::ReservationNotFound))
        }
        Err(other) => return Err(other.into()),
    };
    Ok(HttpResponse::Ok().json(answer))
}

/// Credits a refund the asking node (the schedule's owner) pinned, to a wallet this node holds.
async fn credit_refund(
    _: NodeAccess,
    state: web::Data<AppState>,
    body: web::Json<CreditBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if body.from.is_empty() || body.from.len() > MAX_NODE_ID {
        return Err(ApiError::invalid("from must name a node"));
    }
    let key = body.key();
    let mut refunded = Reservation::try_from(body.reservation).map_err(ApiError::invalid)?;
    // Pinned at its schedule's owner; written here as it is once refunded.
    refunded.pinned = false;
    let ask = CreditAsk {
        refunded,
        payment: body.payment_id,
        tickets: body.tickets.into_iter().map(Into::into).collect(),
        schedule_epoch: body.schedule_epoch,
        wallet_shard: body.wallet_shard,
        wallet_epoch: body.wallet_epoch,
        key,
    };
    let outcome = state.engine.credit_for_peer(ask, &body.from).await;
    Ok(HttpResponse::Ok().json(CreditAnswer::from(&outcome)))
}

/// The asking node's payment of a hold pinned here ended.
async fn outcome(
    _: NodeAccess,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    body: web::Json<OutcomeBody>,
) -> Result<HttpResponse, ApiError> {
    let id = ReservationId::new(path.into_inner())
        .map_err(|_| ApiError::invalid("reservationId must be positive"))?;
    state.engine.settle_for_peer(id, body.outcome.into()).await;
    Ok(HttpResponse::NoContent().finish())
}

/// A payment committed on the asking node used this token (this node holds the queue).
async fn spend_token(
    _: NodeAccess,
    state: web::Data<AppState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let token = TokenId::new(path.into_inner())
        .map_err(|_| ApiError::invalid("tokenId must be positive"))?;
    state.engine.spend_token_for_peer(token)?;
    Ok(HttpResponse::NoContent().finish())
}
