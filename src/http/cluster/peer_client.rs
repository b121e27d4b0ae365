//! Cluster mode: the engine's [`Peers`] over HTTP. Each call goes to the shard's owner as
//! this node's last cluster round saw it, on the worker thread's pooled keep-alive client,
//! with the admin key the nodes share and the hop header (an owner that moved answers 503,
//! never forwards).

use super::owners::{client, owner_elsewhere, HOP_HEADER};
use super::peer_wire::{
    CreditAnswer, CreditBody, OutcomeBody, PinAnswer, PinBody, QueueSyncAnswer, QueueSyncBody,
    WireTicket, PINS_PATH, QUEUE_SYNC_PATH, REFUND_CREDITS_PATH,
};
use crate::actors::cluster::peers::{
    CreditAsk, CreditOutcome, PaymentOutcome, PeerError, PeerFuture, Peers, PinAsk, PinnedRemotely,
};
use crate::actors::cluster::Membership;
use crate::config::Secret;
use crate::domain::cluster::ShardId;
use crate::domain::queue::LineSnapshot;
use crate::domain::schedule::Reservation;
use crate::domain::{ReservationId, ScheduleId, TokenId};
use std::sync::Arc;
use std::time::Duration;

/// A call to a peer waits at most this long: past a commit's own 5 s limit, so the owner's
/// answer (or its 503) decides.
const PEER_TIMEOUT: Duration = Duration::from_secs(6);

pub struct PeerClient {
    membership: Arc<Membership>,
    key: Secret,
}

impl PeerClient {
    pub fn new(membership: Arc<Membership>, key: Secret) -> PeerClient {
        PeerClient { membership, key }
    }

    /// The owner of `shard` now, if it is another node.
    fn url_of(&self, shard: ShardId) -> Result<String, PeerError> {
        owner_elsewhere(&self.membership, shard)
            .map(|(_, url)| url)
            .ok_or_else(|| PeerError::Unavailable(format!("{shard} has no other live owner")))
    }

    async fn post(
        &self,
        url: String,
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, PeerError> {
        let mut request = client()
            .post(url)
            .timeout(PEER_TIMEOUT)
            .header("X-Admin-Key", self.key.expose())
            .header(HOP_HEADER, self.membership.node_id());
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| PeerError::Unavailable(e.to_string()))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            Err(PeerError::Unavailable(format!(
                "{status}: {}",
                text.chars().take(200).collect::<String>()
            )))
        }
    }
}

fn json<T: serde::Serialize>(body: &T) -> Option<Vec<u8>> {
    // Plain structs of numbers and strings always serialize.
    serde_json::to_vec(body).ok()
}

impl Peers for PeerClient {
    fn pin(&self, schedule: ScheduleId, ask: PinAsk) -> PeerFuture<'_, PinnedRemotely> {
        Box::pin(async move {
            let url = self.url_of(ShardId::Schedule(schedule))?;
            let body = PinBody {
                reservation_id: ask.reservation,
                user_id: ask.user,
                from: self.membership.node_id().to_string(),
                wallet_shard: ask.wallet_shard,
                wallet_epoch: ask.wallet_epoch,
            };
            let response = self.post(format!("{url}{PINS_PATH}"), json(&body)).await?;
            let bytes = response
                .bytes()
                .await
                .map_err(|e| PeerError::Unavailable(format!("a pin answer: {e}")))?;
            let answer: PinAnswer = serde_json::from_slice(&bytes)
                .map_err(|e| PeerError::Unavailable(format!("a pin answer: {e}")))?;
            match answer {
                PinAnswer::Pinned {
                    reservation,
                    owner,
                    epoch,
                } => Ok(PinnedRemotely {
                    reservation: Reservation::try_from(reservation)
                        .map_err(PeerError::Unavailable)?,
                    owner,
                    epoch,
                }),
                PinAnswer::Refused(refusal) => Err(PeerError::Refused(refusal.into())),
            }
        })
    }

    fn settle(
        &self,
        schedule: ScheduleId,
        reservation: ReservationId,
        outcome: PaymentOutcome,
    ) -> PeerFuture<'_, ()> {
        Box::pin(async move {
            let url = self.url_of(ShardId::Schedule(schedule))?;
            let body = OutcomeBody {
                outcome: outcome.into(),
            };
            let path = format!("{PINS_PATH}/{}/outcome", reservation.get());
            self.post(format!("{url}{path}"), json(&body)).await?;
            Ok(())
        })
    }

    fn queue_sync(&self, touches: Vec<TokenId>) -> PeerFuture<'_, (Vec<TokenId>, LineSnapshot)> {
        Box::pin(async move {
            let url = self.url_of(ShardId::Queue)?;
            let body = QueueSyncBody { touches };
            let response = self
                .post(format!("{url}{QUEUE_SYNC_PATH}"), json(&body))
                .await?;
            let bytes = response
                .bytes()
                .await
                .map_err(|e| PeerError::Unavailable(format!("a sync answer: {e}")))?;
            let answer: QueueSyncAnswer = serde_json::from_slice(&bytes)
                .map_err(|e| PeerError::Unavailable(format!("a sync answer: {e}")))?;
            Ok((answer.gone, answer.snapshot))
        })
    }

    fn spend_token(&self, token: TokenId) -> PeerFuture<'_, ()> {
        Box::pin(async move {
            let url = self.url_of(ShardId::Queue)?;
            let path = format!("/v1/internal/spent-tokens/{}", token.get());
            self.post(format!("{url}{path}"), None).await?;
            Ok(())
        })
    }

    fn holder(&self, shard: ShardId) -> Option<(String, u64)> {
        let name = shard.to_string();
        let view = self.membership.view();
        let held = view.shards.iter().find(|s| s.shard == name)?;
        Some((held.owner.clone()?, held.epoch))
    }

    fn credit_refund(&self, ask: CreditAsk) -> PeerFuture<'_, CreditOutcome> {
        Box::pin(async move {
            let url = self.url_of(ShardId::of_wallet(ask.refunded.user))?;
            let (key, fingerprint) = ask.key.map(|k| (k.key, k.fingerprint)).unzip();
            let body = CreditBody {
                from: self.membership.node_id().to_string(),
                schedule_epoch: ask.schedule_epoch,
                reservation: (&ask.refunded).into(),
                payment_id: ask.payment,
                tickets: ask.tickets.iter().map(WireTicket::from).collect(),
                wallet_shard: ask.wallet_shard,
                wallet_epoch: ask.wallet_epoch,
                idempotency_key: key,
                idempotency_fingerprint: fingerprint,
            };
            let response = self
                .post(format!("{url}{REFUND_CREDITS_PATH}"), json(&body))
                .await?;
            let bytes = response
                .bytes()
                .await
                .map_err(|e| PeerError::Unavailable(format!("a credit answer: {e}")))?;
            let answer: CreditAnswer = serde_json::from_slice(&bytes)
                .map_err(|e| PeerError::Unavailable(format!("a credit answer: {e}")))?;
            CreditOutcome::try_from(answer).map_err(PeerError::Unavailable)
        })
    }
}
