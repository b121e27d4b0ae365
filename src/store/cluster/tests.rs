//! Membership, leases and the fence against a real PostgreSQL database of their own: the
//! compare-and-set under races, expiry on the database clock, the row lock that keeps a
//! takeover from committing under an in-flight fenced batch, and the session timeout that
//! ends a stopped ex-owner's hold on it.

use super::super::temp_databases::TempPostgres;
use super::super::{Fence, PgStore, Store, StoreError, WalletRecord, Writes};
use super::ClusterStore;
use crate::domain::{Money, Timestamp};
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(30);

async fn open() -> (TempPostgres, Store, ClusterStore) {
    let database = TempPostgres::create().await;
    let store = Store::connect_cluster(&database.url(), Duration::from_millis(500))
        .await
        .expect("connect to the test database");
    store.migrate().await.expect("migrate the test database");
    let cluster = store
        .cluster()
        .expect("a PostgreSQL store has a cluster store");
    (database, store, cluster)
}

/// A one-wallet batch, the smallest real write.
async fn a_write(store: &Store, balance: i64) -> (crate::domain::UserId, Writes) {
    let user = store
        .create_user(
            "fenced",
            Money::new(0).expect("0 is a valid amount"),
            Timestamp::from_millis(1),
        )
        .await
        .expect("create a user");
    let mut writes = Writes::default();
    writes.wallets.insert(
        user,
        WalletRecord {
            user,
            balance: Money::new(balance).expect("a valid amount"),
            at: Timestamp::from_millis(2),
        },
    );
    (user, writes)
}

#[tokio::test]
async fn a_shard_is_taken_once_and_only_from_a_dead_or_released_owner() {
    let (_db, _store, cluster) = open().await;
    cluster
        .register("a", "http://127.0.0.1:1", TTL)
        .await
        .expect("register a");
    cluster
        .register("b", "http://127.0.0.1:2", Duration::from_millis(300))
        .await
        .expect("register b");
    assert_eq!(
        cluster.acquire("schedule:1", "b").await.expect("acquire"),
        Some(1)
    );
    // b is live: a may not take it.
    assert_eq!(
        cluster.acquire("schedule:1", "a").await.expect("acquire"),
        None
    );
    // b's lease runs out on the database clock (it never renews): now a may, at a new epoch.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let live: Vec<String> = cluster
        .live_nodes()
        .await
        .expect("live nodes")
        .into_iter()
        .map(|m| m.node_id)
        .collect();
    assert_eq!(live, ["a"]);
    assert_eq!(
        cluster.acquire("schedule:1", "a").await.expect("acquire"),
        Some(2)
    );
    // b comes back: renewing keeps it a member, but the shard stays a's.
    assert!(cluster.renew("b", TTL).await.expect("renew"));
    assert_eq!(
        cluster.acquire("schedule:1", "b").await.expect("acquire"),
        None
    );
    // A release at a stale epoch does nothing; at the current one it frees the shard.
    assert!(!cluster
        .release("schedule:1", "a", 1)
        .await
        .expect("release"));
    assert!(cluster
        .release("schedule:1", "a", 2)
        .await
        .expect("release"));
    assert_eq!(
        cluster.acquire("schedule:1", "b").await.expect("acquire"),
        Some(3)
    );
    let leases = cluster.leases().await.expect("leases");
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].live_owner.as_deref(), Some("b"));
    assert_eq!(leases[0].epoch, 3);
}

#[tokio::test]
async fn a_leave_releases_every_shard_at_once_and_renew_then_says_so() {
    let (_db, _store, cluster) = open().await;
    cluster
        .register("a", "http://127.0.0.1:1", TTL)
        .await
        .expect("register a");
    cluster
        .register("b", "http://127.0.0.1:2", TTL)
        .await
        .expect("register b");
    for shard in ["queue", "wallets:0", "schedule:9"] {
        assert_eq!(cluster.acquire(shard, "a").await.expect("acquire"), Some(1));
    }
    cluster.leave("a").await.expect("leave");
    assert!(!cluster.renew("a", TTL).await.expect("renew"), "a left");
    for shard in ["queue", "wallets:0", "schedule:9"] {
        assert_eq!(cluster.acquire(shard, "b").await.expect("acquire"), Some(2));
    }
}

/// Many nodes race for one free shard, round after round: exactly one wins each round, and
/// each winner's epoch is above every earlier one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_takeovers_have_one_winner_each_and_epochs_only_grow() {
    let (_db, _store, cluster) = open().await;
    let nodes: Vec<String> = (0..6).map(|i| format!("n{i}")).collect();
    for node in &nodes {
        cluster
            .register(node, "http://127.0.0.1:1", TTL)
            .await
            .expect("register");
    }
    let mut last_epoch = 0;
    for _round in 0..20 {
        let mut racers = Vec::new();
        for node in &nodes {
            let cluster = cluster.clone();
            let node = node.clone();
            racers.push(tokio::spawn(async move {
                (node.clone(), cluster.acquire("schedule:7", &node).await)
            }));
        }
        let mut winners = Vec::new();
        for racer in racers {
            let (node, result) = racer.await.expect("the racer did not panic");
            if let Some(epoch) = result.expect("acquire") {
                winners.push((node, epoch));
            }
        }
        assert_eq!(winners.len(), 1, "{winners:?}");
        let (winner, epoch) = winners.pop().expect("one winner");
        assert!(epoch > last_epoch, "epoch {epoch} after {last_epoch}");
        last_epoch = epoch;
        assert!(cluster
            .release("schedule:7", &winner, epoch)
            .await
            .expect("release"));
    }
}

#[tokio::test]
async fn a_fenced_commit_writes_only_under_the_current_epoch_and_audits_it() {
    let (_db, store, cluster) = open().await;
    cluster
        .register("a", "http://127.0.0.1:1", TTL)
        .await
        .expect("register a");
    cluster
        .register("b", "http://127.0.0.1:2", TTL)
        .await
        .expect("register b");
    let epoch = cluster
        .acquire("wallets:1", "a")
        .await
        .expect("acquire")
        .expect("free");
    let (user, writes) = a_write(&store, 500).await;
    let fence = Fence::own("wallets:1", epoch);
    store
        .commit_fenced(&writes, "a", std::slice::from_ref(&fence))
        .await
        .expect("a holds the shard");
    assert_eq!(
        store.load_wallet(user).await.expect("load"),
        Some(Money::new(500).expect("valid"))
    );
    // b takes it over (a released it, as a graceful leave does); a's next batch is refused
    // whole and changes nothing.
    assert!(cluster
        .release("wallets:1", "a", epoch)
        .await
        .expect("release"));
    let newer = cluster
        .acquire("wallets:1", "b")
        .await
        .expect("acquire")
        .expect("free");
    let (_, mut late) = a_write(&store, 0).await;
    late.wallets
        .values_mut()
        .for_each(|w| w.balance = Money::new(7).expect("valid"));
    let late_user = *late.wallets.keys().next().expect("one wallet");
    match store
        .commit_fenced(&late, "a", std::slice::from_ref(&fence))
        .await
    {
        Err(StoreError::Fenced(stale)) => assert_eq!(stale, vec![fence.clone()]),
        other => panic!("a stale epoch committed: {other:?}"),
    }
    assert_eq!(
        store.load_wallet(late_user).await.expect("load"),
        Some(Money::new(0).expect("valid"))
    );
    // b under the new epoch commits; a claiming b's epoch is still refused (not its lease).
    let current = Fence::own("wallets:1", newer);
    store
        .commit_fenced(&late, "b", std::slice::from_ref(&current))
        .await
        .expect("b holds it");
    assert!(matches!(
        store
            .commit_fenced(&late, "a", std::slice::from_ref(&current))
            .await,
        Err(StoreError::Fenced(_))
    ));
    // A claim naming b as the owner (a payment at a committing for b's shard) holds, and is
    // audited under b; naming a stale epoch or the wrong owner does not.
    let for_b = Fence {
        owner: Some("b".into()),
        ..current.clone()
    };
    store
        .commit_fenced(&late, "a", std::slice::from_ref(&for_b))
        .await
        .expect("b holds it at that epoch");
    for refused in [
        Fence {
            epoch,
            ..for_b.clone()
        },
        Fence {
            owner: Some("c".into()),
            ..for_b.clone()
        },
    ] {
        assert!(matches!(
            store.commit_fenced(&late, "a", &[refused]).await,
            Err(StoreError::Fenced(_))
        ));
    }
    assert_eq!(cluster.audit_rows().await.expect("audit"), 3);
    assert_eq!(cluster.audit_violations().await.expect("audit"), 0);
}

/// The audit check can fail: a row planted under a superseded epoch after a newer one is a
/// violation, and so are two nodes under one epoch.
#[tokio::test]
async fn the_audit_check_finds_an_epoch_going_back() {
    let (db, _store, cluster) = open().await;
    let pool = sqlx::PgPool::connect(&db.url()).await.expect("connect");
    for (shard, epoch, node) in [("queue", 1, "a"), ("queue", 2, "b"), ("queue", 1, "a")] {
        sqlx::query("INSERT INTO fence_audit (shard, epoch, node_id) VALUES ($1, $2, $3)")
            .bind(shard)
            .bind(epoch as i64)
            .bind(node)
            .execute(&pool)
            .await
            .expect("plant");
    }
    assert_eq!(cluster.audit_violations().await.expect("audit"), 1);
    sqlx::query("INSERT INTO fence_audit (shard, epoch, node_id) VALUES ('queue', 2, 'c')")
        .execute(&pool)
        .await
        .expect("plant");
    assert_eq!(cluster.audit_violations().await.expect("audit"), 2);
    pool.close().await;
}

/// An ex-owner stopped inside its fenced transaction (here: a session that read the lease
/// `FOR SHARE` and then went quiet) holds the takeover off, and the takeover does not commit
/// under it; the database then ends that idle session, and the takeover goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_ex_owner_holds_a_takeover_off_only_until_its_session_is_ended() {
    let (db, _store, cluster) = open().await;
    cluster
        .register("a", "http://127.0.0.1:1", Duration::from_millis(200))
        .await
        .expect("register a");
    cluster
        .register("b", "http://127.0.0.1:2", TTL)
        .await
        .expect("register b");
    cluster
        .acquire("queue", "a")
        .await
        .expect("acquire")
        .expect("free");
    // a's connection, as the cluster store makes them (idle timeout 500 ms).
    let stalled = PgStore::connect_with(&db.url(), Some(Duration::from_millis(500)))
        .await
        .expect("connect");
    let stalled_cluster = stalled.cluster();
    let mut tx = stalled_cluster.pool.begin().await.expect("begin");
    sqlx::query("SELECT epoch FROM shard_lease WHERE shard = 'queue' AND owner = 'a' FOR SHARE")
        .fetch_one(&mut *tx)
        .await
        .expect("a's fence read");
    tokio::time::sleep(Duration::from_millis(250)).await; // a's node lease has run out
    let started = Instant::now();
    let taken = cluster.acquire("queue", "b").await.expect("acquire");
    // It had to wait for the database to end a's idle session (~500 ms after it went idle).
    assert_eq!(taken, Some(2));
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    // a's transaction is gone: its commit cannot succeed.
    assert!(tx.commit().await.is_err(), "the stalled session was ended");
}
