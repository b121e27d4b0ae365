//! Cluster membership and shard leases in PostgreSQL (cluster mode only): the tables of
//! `migrations/postgres/0005_cluster.sql`.
//!
//! Every time here is the database's clock (`now()`), never a node's: a node whose clock is
//! wrong, or which is paused, cannot make its own lease last longer. A lease's expiry only
//! decides when a shard *may be taken*; it never lets anyone write. Writing is fenced
//! separately, in each batch's own transaction (`postgres_writes::commit_fenced`).

use super::StoreError;
use sqlx::postgres::PgPool;
use std::time::Duration;

/// The channel a takeover or a release notifies, with the shard as payload, so that every
/// node refreshes its shard map at once rather than at its next poll.
pub const SHARD_CHANNEL: &str = "boxoffice_shards";

/// How long a takeover waits for an ex-owner's in-flight fenced batch to let go of the lease
/// row before giving up this round (it retries on the next). A stopped ex-owner is ended by
/// `idle_in_transaction_session_timeout` (set on cluster connections) well before the next.
const TAKEOVER_LOCK_TIMEOUT: &str = "2s";

/// A live member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub node_id: String,
    pub advertise_url: String,
    /// Milliseconds until its lease expires, by the database clock.
    pub expires_in_ms: i64,
}

/// One lease row, with its owner's address when the owner is live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub shard: String,
    /// `None` when released, or when the owner's node lease has expired or it left.
    pub live_owner: Option<String>,
    /// The owner recorded in the row, live or not.
    pub owner: Option<String>,
    pub owner_url: Option<String>,
    pub epoch: u64,
}

/// A lease row as read: shard, owner, epoch, the owner's url, whether the owner is live.
type LeaseRow = (String, Option<String>, i64, Option<String>, bool);

/// Membership and leases over the same pool as the rest of the store.
#[derive(Debug, Clone)]
pub struct ClusterStore {
    pool: PgPool,
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

impl ClusterStore {
    pub(super) fn new(pool: PgPool) -> ClusterStore {
        ClusterStore { pool }
    }

    /// Joins (or rejoins under the same id) with a lease of `ttl`.
    pub async fn register(&self, node: &str, url: &str, ttl: Duration) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO cluster_node (node_id, advertise_url, expires_at)
             VALUES ($1, $2, now() + $3 * interval '1 millisecond')
             ON CONFLICT (node_id) DO UPDATE
                SET advertise_url = EXCLUDED.advertise_url, expires_at = EXCLUDED.expires_at,
                    joined_at = now(), left_at = NULL",
        )
        .bind(node)
        .bind(url)
        .bind(ttl_ms(ttl))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Extends this node's lease by `ttl` from now. `false` if the node has left (or was
    /// never registered): it must not act as a member again without registering.
    pub async fn renew(&self, node: &str, ttl: Duration) -> Result<bool, StoreError> {
        let renewed = sqlx::query(
            "UPDATE cluster_node SET expires_at = now() + $2 * interval '1 millisecond'
             WHERE node_id = $1 AND left_at IS NULL",
        )
        .bind(node)
        .bind(ttl_ms(ttl))
        .execute(&self.pool)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    /// The members whose lease has not expired and who have not left, by id.
    pub async fn live_nodes(&self) -> Result<Vec<Member>, StoreError> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT node_id, advertise_url,
                    (extract(epoch FROM expires_at - now()) * 1000)::bigint
             FROM cluster_node WHERE expires_at > now() AND left_at IS NULL ORDER BY node_id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(node_id, advertise_url, expires_in_ms)| Member {
                node_id,
                advertise_url,
                expires_in_ms,
            })
            .collect())
    }

    /// Takes `shard` for `node` if it is free: never held, released, held by a node whose
    /// lease has expired or that left, or held by `node` itself (a restart under the same
    /// id: the old incarnation's epoch must die too). A compare-and-set that bumps the epoch
    /// and notifies [`SHARD_CHANNEL`], in one transaction. Returns the new epoch, or `None`
    /// when a live node holds it. Only after this commits may the shard's state be loaded.
    pub async fn acquire(&self, shard: &str, node: &str) -> Result<Option<u64>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(&format!(
            "SET LOCAL lock_timeout = '{TAKEOVER_LOCK_TIMEOUT}'"
        ))
        .execute(&mut *tx)
        .await?;
        let epoch: Option<i64> = sqlx::query_scalar(
            "INSERT INTO shard_lease AS l (shard, owner, epoch) VALUES ($1, $2, 1)
             ON CONFLICT (shard) DO UPDATE SET owner = $2, epoch = l.epoch + 1, moved_at = now()
             WHERE l.owner IS NULL OR l.owner = $2 OR NOT EXISTS (
                 SELECT 1 FROM cluster_node n
                 WHERE n.node_id = l.owner AND n.expires_at > now() AND n.left_at IS NULL)
             RETURNING epoch",
        )
        .bind(shard)
        .bind(node)
        .fetch_optional(&mut *tx)
        .await?;
        if epoch.is_some() {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(SHARD_CHANNEL)
                .bind(shard)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(epoch.map(|e| e as u64))
    }

    /// Lets go of `shard` if `node` still holds it at `epoch` (a graceful handoff, after the
    /// node's persister has drained). The epoch stays; the next taker bumps it.
    pub async fn release(&self, shard: &str, node: &str, epoch: u64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let released = sqlx::query(
            "UPDATE shard_lease SET owner = NULL, moved_at = now()
             WHERE shard = $1 AND owner = $2 AND epoch = $3",
        )
        .bind(shard)
        .bind(node)
        .bind(i64::try_from(epoch).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if released {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(SHARD_CHANNEL)
                .bind(shard)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(released)
    }

    /// Leaves the cluster: the node's lease ends now and every shard it still holds is
    /// released, so the others may take them at once rather than after the TTL.
    pub async fn leave(&self, node: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE cluster_node SET left_at = now(), expires_at = now() WHERE node_id = $1",
        )
        .bind(node)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "WITH released AS (
                 UPDATE shard_lease SET owner = NULL, moved_at = now() WHERE owner = $1
                 RETURNING shard)
             SELECT pg_notify($2, shard) FROM released",
        )
        .bind(node)
        .bind(SHARD_CHANNEL)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every lease, by shard, with its owner's liveness and address.
    pub async fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        let rows: Vec<LeaseRow> = sqlx::query_as(
            "SELECT l.shard, l.owner, l.epoch, n.advertise_url,
                    COALESCE(n.expires_at > now() AND n.left_at IS NULL, false)
             FROM shard_lease l LEFT JOIN cluster_node n ON n.node_id = l.owner
             ORDER BY l.shard",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(shard, owner, epoch, url, live)| Lease {
                shard,
                live_owner: owner.clone().filter(|_| live),
                owner_url: url.filter(|_| live),
                owner,
                epoch: epoch as u64,
            })
            .collect())
    }

    /// The fence audit's violations: rows whose epoch is lower than an earlier row's of the
    /// same shard (a commit under a superseded epoch after a newer one committed), and rows
    /// whose node never held that shard at that epoch's start. 0 is the only right answer.
    pub async fn audit_violations(&self) -> Result<i64, StoreError> {
        let backwards: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (
                 SELECT epoch, max(epoch) OVER (PARTITION BY shard ORDER BY id
                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before
                 FROM fence_audit) a
             WHERE epoch < before",
        )
        .fetch_one(&self.pool)
        .await?;
        // Two nodes under one (shard, epoch) would mean two owners at once.
        let shared: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (
                 SELECT shard, epoch FROM fence_audit GROUP BY shard, epoch
                 HAVING count(DISTINCT node_id) > 1) s",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(backwards + shared)
    }

    /// The next id block (see `0005_cluster.sql`): this boot's ids start at `block << 40`.
    pub async fn take_id_block(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT nextval('id_block_seq')")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Calls `wake` whenever a lease moves anywhere in the cluster (the `NOTIFY` that acquire,
    /// release and leave send), until the returned task is aborted. A lost listener
    /// connection is retried; meanwhile the caller's periodic refresh still runs.
    pub fn watch(&self, wake: std::sync::Arc<tokio::sync::Notify>) -> tokio::task::JoinHandle<()> {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            loop {
                match sqlx::postgres::PgListener::connect_with(&pool).await {
                    Ok(mut listener) => {
                        if listener.listen(SHARD_CHANNEL).await.is_ok() {
                            while listener.recv().await.is_ok() {
                                wake.notify_one();
                            }
                        }
                    }
                    Err(error) => tracing::warn!(%error, "shard listener cannot connect"),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    }

    /// The highest user, concert and schedule ids: cheap marks (three index lookups) that say
    /// whether another node created something this one has not loaded.
    pub async fn catalog_marks(&self) -> Result<(i64, i64, i64), StoreError> {
        Ok(sqlx::query_as(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM users),
                    (SELECT COALESCE(MAX(id), 0) FROM concerts),
                    (SELECT COALESCE(MAX(id), 0) FROM schedules)",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// How many fenced batches were recorded, for tests and the fault report.
    pub async fn audit_rows(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM fence_audit")
            .fetch_one(&self.pool)
            .await?)
    }
}

#[cfg(test)]
mod tests;
