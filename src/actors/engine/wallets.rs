//! Wallets as the engine serves them: recharges, balances, and the ledger's pages.

use super::Engine;
use crate::actors::error::WalletError;
use crate::actors::idempotency::IdempotentWrite;
use crate::actors::mailbox::ask;
use crate::actors::persister::Unavailable;
use crate::actors::wallet::{ReadBalance, Recharge};
use crate::domain::{Money, UserId};
use crate::store::LedgerEntry;

impl Engine {
    pub async fn recharge(
        &self,
        user: UserId,
        amount: i64,
        idempotency: Option<IdempotentWrite<Money>>,
    ) -> Result<Money, WalletError> {
        if !self.user_exists(user) {
            return Err(WalletError::UserNotFound);
        }
        Ok(ask(&self.wallet(user), |reply| Recharge {
            amount,
            idempotency,
            reply,
        })
        .await?)
    }

    /// A page of the user's ledger, newest first: the rows the wallet itself persists.
    pub async fn history(
        &self,
        user: UserId,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<LedgerEntry>, WalletError> {
        if !self.user_exists(user) {
            return Err(WalletError::UserNotFound);
        }
        let page = self
            .inner
            .env
            .store
            .run(move |s| async move { s.ledger_page(user, limit, before).await });
        page.await.map_err(|error| {
            tracing::warn!(error = %error, "ledger read failed");
            WalletError::Unavailable(Unavailable::CommitFailed)
        })
    }

    pub async fn balance(&self, user: UserId) -> Result<Money, WalletError> {
        if !self.user_exists(user) {
            return Err(WalletError::UserNotFound);
        }
        Ok(ask(&self.wallet(user), |reply| ReadBalance { reply }).await?)
    }
}
