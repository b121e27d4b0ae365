//! Boot: every actor is rebuilt from the store before the port opens. The steps, in order:
//! load the catalog, restore the schedules (releasing holds that expired while the service
//! was down), restore the idempotency keys, and wait until the recovery writes are durable,
//! so the first request sees a state the database agrees with.

use super::catalog::Catalog;
use super::engine::Engine;
use super::env::{ActorEnv, EngineSettings, IdAllocator, ReservationIndex};
use super::idempotency::{Idempotency, RETENTION};
use super::persister::Persister;
use super::queue::{load_line, QueueActor, QueueView};
use super::registry::Registry;
use super::schedule::restore_book;
use crate::clock::Clock;
use crate::domain::schedule::ScheduleInfo;
use crate::domain::Timestamp;
use crate::store::{CatalogSnapshot, StoreError, StoreHandle};
use std::sync::Arc;
use std::time::Duration;

/// How often answers older than twice their retention are forgotten.
const FORGET_EVERY: Duration = Duration::from_secs(3600);

impl Engine {
    /// Rebuilds every actor from the store, releases holds that expired while the service was
    /// down, and waits until those releases are durable. Must run inside an actix system.
    pub async fn start(
        settings: EngineSettings,
        clock: Arc<dyn Clock>,
        store: StoreHandle,
        persister: Persister,
    ) -> Result<Engine, StoreError> {
        let (snapshot, env) = load_catalog(settings, clock, store, persister).await?;
        let now = env.clock.now();
        let line = load_line(&env.store, QueueActor::policy(&env.settings), now).await?;
        let idempotency = restore_keys(&env.store, now).await?;
        let queue_view = Arc::new(QueueView::new(line));
        let registry = Arc::new(Registry::start(env.clone(), queue_view.clone()));
        let catalog = Catalog::default();
        for user in &snapshot.users {
            catalog.add_user(*user);
        }
        for (concert, _name) in &snapshot.concerts {
            catalog.add_concert(*concert);
        }
        let engine = Engine::assemble(
            env.clone(),
            catalog,
            registry.clone(),
            queue_view,
            idempotency.clone(),
        );
        restore_schedules(&engine, &env.store, snapshot.schedules, now).await?;
        forget_old_keys(&registry, idempotency, env.clone());
        let weak = Arc::downgrade(&registry);
        env.persister.on_rebuild(Box::new(move |keys| {
            if let Some(registry) = weak.upgrade() {
                registry.route_rebuilds(keys);
            }
        }));
        await_recovery_writes(&env.persister).await?;
        engine.mark_ready();
        Ok(engine)
    }
}

/// Reads the catalog and the highest ids in use, and builds what every actor shares.
async fn load_catalog(
    settings: EngineSettings,
    clock: Arc<dyn Clock>,
    store: StoreHandle,
    persister: Persister,
) -> Result<(CatalogSnapshot, Arc<ActorEnv>), StoreError> {
    let snapshot = store.run(|s| async move { s.load_catalog().await }).await?;
    let max = store.run(|s| async move { s.max_ids().await }).await?;
    let ids = match settings.id_block {
        Some(block) => IdAllocator::in_block(block),
        None => IdAllocator::above(&max),
    };
    let env = Arc::new(ActorEnv {
        settings,
        clock,
        persister,
        store,
        ids,
        reservations: ReservationIndex::default(),
        live: Default::default(),
        remote_pins: Default::default(),
    });
    Ok((snapshot, env))
}

/// Registers every schedule, and starts the actor of each one still to come over its book
/// (past schedules load lazily, if anyone asks). Each actor submits the release of holds that
/// expired while the service was down as it starts.
async fn restore_schedules(
    engine: &Engine,
    store: &StoreHandle,
    schedules: Vec<ScheduleInfo>,
    now: Timestamp,
) -> Result<(), StoreError> {
    for info in schedules {
        // In cluster mode only the schedules this node holds are started now; the others
        // load when their shard is taken, or lazily (and then may not write).
        let upcoming = info.concert_at > now
            && engine
                .persister()
                .may_write(super::persister::ActorKey::Schedule(info.id));
        let entry = engine.catalog().add_schedule(info);
        if upcoming {
            let info = entry.info.clone();
            let book = store
                .run(move |s| async move { restore_book(info, &s).await })
                .await?;
            engine.registry().start_schedule(entry, Some(book));
        }
    }
    Ok(())
}

/// Loads the answers still replayable, and those up to twice their retention.
async fn restore_keys(store: &StoreHandle, now: Timestamp) -> Result<Arc<Idempotency>, StoreError> {
    let keep_since = keep_since(now);
    let keys = store
        .run(move |s| async move { s.load_idempotency(keep_since).await })
        .await?;
    Ok(Arc::new(Idempotency::restore(keys)))
}

/// Answers are replayable for RETENTION at least; they are forgotten after twice that.
fn keep_since(now: Timestamp) -> Timestamp {
    Timestamp::from_millis(now.millis() - 2 * RETENTION.as_millis() as i64)
}

/// Forgets old answers every [`FORGET_EVERY`], on an actor thread, for as long as it runs.
fn forget_old_keys(registry: &Registry, keys: Arc<Idempotency>, env: Arc<ActorEnv>) {
    registry.spawn(async move {
        loop {
            tokio::time::sleep(FORGET_EVERY).await;
            keys.forget_before(keep_since(env.clock.now()));
        }
    });
}

/// Waits until the releases submitted by the starting actors are committed.
async fn await_recovery_writes(persister: &Persister) -> Result<(), StoreError> {
    // The actors submit as they start, on their own threads: give them a moment to.
    tokio::time::sleep(Duration::from_millis(20)).await;
    persister
        .flush()
        .await
        .map_err(|u| StoreError::Corrupt(format!("recovery writes failed: {u}")))
}
