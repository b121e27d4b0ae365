//! The live actors: the one `QueueActor`, a `ScheduleActor` per schedule and a `WalletActor`
//! per user, the threads they run on, how each is started and found, and where the
//! persister's rebuild orders go.

use super::env::{ActorEnv, IdDashMap};
use super::loading::Rebuild;
use super::persister::ActorKey;
use super::queue::{QueueActor, QueueView};
use super::schedule::{ScheduleActor, ScheduleEntry};
use super::wallet::{WalletActor, WalletDirectory};
use crate::domain::cluster::ShardId;
use crate::domain::schedule::ScheduleBook;
use crate::domain::{ScheduleId, UserId};
use actix::prelude::*;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Every live actor, by what it owns.
pub struct Registry {
    env: Arc<ActorEnv>,
    /// The actor threads; an actor's thread is chosen by its key, so it stays put.
    arbiters: Vec<Arbiter>,
    queue: Addr<QueueActor>,
    schedules: IdDashMap<ScheduleId, Addr<ScheduleActor>>,
    wallets: Arc<WalletDirectory>,
    next_wallet_instance: AtomicU64,
}

impl Registry {
    /// Starts the actor threads and the queue actor over `view`. Must run in an actix system.
    pub fn start(env: Arc<ActorEnv>, view: Arc<QueueView>) -> Registry {
        let arbiters: Vec<Arbiter> = (0..env.settings.actor_threads.max(1))
            .map(|_| Arbiter::new())
            .collect();
        let queue = {
            let env = env.clone();
            QueueActor::start_in_arbiter(&arbiters[0].handle(), move |_| QueueActor::new(view, env))
        };
        Registry {
            env,
            arbiters,
            queue,
            schedules: IdDashMap::default(),
            wallets: Arc::new(WalletDirectory::default()),
            next_wallet_instance: AtomicU64::new(1),
        }
    }

    fn arbiter(&self, key: i64) -> ArbiterHandle {
        let arbiters = &self.arbiters;
        arbiters[(key.unsigned_abs() % arbiters.len() as u64) as usize].handle()
    }

    pub fn queue(&self) -> &Addr<QueueActor> {
        &self.queue
    }

    /// Starts the actor of `entry`'s schedule: over `book` if it is in memory already,
    /// otherwise loading it from the store.
    pub fn start_schedule(
        &self,
        entry: Arc<ScheduleEntry>,
        book: Option<ScheduleBook>,
    ) -> Addr<ScheduleActor> {
        let id = entry.info.id;
        let env = self.env.clone();
        let addr = ScheduleActor::start_in_arbiter(&self.arbiter(id.get()), move |_| match book {
            Some(book) => ScheduleActor::ready(entry, env, book),
            None => ScheduleActor::lazy(entry, env),
        });
        self.schedules.insert(id, addr.clone());
        addr
    }

    /// The schedule's running actor.
    pub fn schedule(&self, id: ScheduleId) -> Option<Addr<ScheduleActor>> {
        self.schedules.get(&id).map(|addr| addr.clone())
    }

    /// Every running schedule actor, lowest schedule id first, at most `max` of them.
    pub fn running_schedules(&self, max: usize) -> Vec<(ScheduleId, Addr<ScheduleActor>)> {
        let mut running: Vec<_> = self
            .schedules
            .iter()
            .map(|e| (*e.key(), e.value().clone()))
            .collect();
        running.sort_unstable_by_key(|(id, _)| *id);
        running.truncate(max);
        running
    }

    /// The schedule's actor, started (to load its book) if none runs yet.
    pub fn schedule_or_load(&self, entry: Arc<ScheduleEntry>) -> Addr<ScheduleActor> {
        let id = entry.info.id;
        let addr = self.schedules.entry(id).or_insert_with(|| {
            let env = self.env.clone();
            ScheduleActor::start_in_arbiter(&self.arbiter(id.get()), move |_| {
                ScheduleActor::lazy(entry, env)
            })
        });
        addr.clone()
    }

    /// The user's wallet actor, started on first use (and again after it stopped when idle).
    pub fn wallet(&self, user: UserId) -> Addr<WalletActor> {
        self.wallets.get_or_start(
            user,
            || self.next_wallet_instance.fetch_add(1, Ordering::Relaxed),
            |instance| {
                let (env, directory) = (self.env.clone(), Arc::downgrade(&self.wallets));
                WalletActor::start_in_arbiter(&self.arbiter(user.get()), move |_| {
                    WalletActor::new(user, instance, env, directory)
                })
            },
        )
    }

    /// Runs a background task on the first actor thread.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.arbiters[0].spawn(task);
    }

    /// Sends every actor whose writes failed the order to rebuild at its new generation.
    pub fn route_rebuilds(&self, keys: Vec<(ActorKey, u64)>) {
        for (key, generation) in keys {
            let order = Rebuild { generation };
            match key {
                ActorKey::Queue => self.queue.do_send(order),
                ActorKey::Schedule(id) => {
                    if let Some(addr) = self.schedules.get(&id) {
                        addr.do_send(order);
                    }
                }
                ActorKey::Wallet(user) => {
                    if let Some(addr) = self.wallets.running(user) {
                        addr.do_send(order);
                    }
                }
            }
        }
    }

    /// Cluster mode: a shard was just taken under a new epoch; every running actor of it
    /// reloads its state from the database under `generation` (the take has committed, so
    /// what it reads is what the previous owner left). Actors not running load under it
    /// when first asked.
    pub fn rebuild_shard(&self, shard: ShardId, generation: u64) {
        let keys: Vec<(ActorKey, u64)> = match shard {
            ShardId::Queue => vec![(ActorKey::Queue, generation)],
            ShardId::Schedule(id) => vec![(ActorKey::Schedule(id), generation)],
            ShardId::Wallets(_) => self
                .wallets
                .running_users()
                .into_iter()
                .filter(|user| ShardId::of_wallet(*user) == shard)
                .map(|user| (ActorKey::Wallet(user), generation))
                .collect(),
        };
        self.route_rebuilds(keys);
    }

    /// Stops the actor threads.
    pub fn stop(&self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}
