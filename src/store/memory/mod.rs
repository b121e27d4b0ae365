//! The in-memory backend (`memory://NAME`): every table as a map behind one mutex, so the whole
//! engine runs with persistence replaced by an in-memory sink. For benchmarks and tests only:
//! nothing survives the process.
//!
//! It keeps the constraints the SQL schemas enforce (foreign keys, one live hold per seat, one
//! live token per user, one payment per reservation, wallets that exist), and a batch is
//! checked whole before any of it is applied, so a commit is all or nothing here too: a bug
//! that the database would refuse is refused in a benchmark as well, not measured as speed.
//!
//! Stores are named: connecting twice to `memory://drop` in one process gives the same tables
//! while any handle to them is alive (as a restart would find them), which is how a load
//! generator checks its invariants against the store the application wrote to. `memory://`
//! without a name is always a fresh, private store.
//!
//! It does not pipeline: staging a batch only defers its commit ([`super::Store::stage`]). For
//! the persister's tests it can be told to report that it does ([`MemoryStore::pipeline`]), and
//! to hold commits at a gate ([`MemoryStore::gate_commits`]), so a test can see a batch staged
//! while the one ahead of it is still committing, and decide how each commit ends.

mod audit;
mod tables;
mod waitlist;

use super::{
    fence, CatalogSnapshot, CreatedConcert, CreatedSchedule, Fence, IdempotencyRecord, LedgerEntry,
    MaxIds, NewConcert, PaymentRecord, ScheduleSnapshot, StoreError, StoredReservation,
    WalletRecord, Writes,
};
use super::{StagedInner, Store};
use crate::domain::queue::{OpeningRecord, TokenRecord};
use crate::domain::schedule::{Reservation, ScheduleInfo, Seat};
use crate::domain::PaymentId;
use crate::domain::{
    ConcertId, Money, ReservationId, ScheduleId, SeatId, Timestamp, TokenId, UserId,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use tables::{violated, Tables};
use tokio::sync::Semaphore;

/// Named stores alive in this process. Weak: a store lives as long as someone holds it.
type Registry = Mutex<HashMap<String, Weak<Mutex<Tables>>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

/// An in-memory store; cheap to clone (clones share the tables).
#[derive(Debug, Clone)]
pub struct MemoryStore {
    tables: Arc<Mutex<Tables>>,
    /// The persister tests' switches; shared by clones of this handle only.
    hooks: Arc<Hooks>,
}

/// What the persister's tests set and read (see the module doc). Untouched, each is one
/// atomic load per commit.
#[derive(Debug, Default)]
struct Hooks {
    /// Whether to tell the persister it may stage batches behind one in flight.
    pipelining: AtomicBool,
    /// Batches staged, and staged batches rolled back.
    staged: AtomicU64,
    rolled_back: AtomicU64,
    /// When set, each commit waits for a permit first.
    gate: Mutex<Option<Arc<Semaphore>>>,
    /// Commits that reached the gate (waiting or through).
    at_gate: AtomicU64,
}

/// What a load generator or a test reads back to check its invariants.
#[derive(Debug, Clone, Default)]
pub struct MemoryTables {
    pub reservations: Vec<Reservation>,
    pub payments: Vec<PaymentRecord>,
    pub ledger: Vec<LedgerEntry>,
    pub wallets: Vec<WalletRecord>,
}

fn id<T>(raw: i64, parse: fn(i64) -> Result<T, crate::domain::IdError>) -> Result<T, StoreError> {
    parse(raw).map_err(|e| StoreError::Corrupt(format!("id {raw}: {e}")))
}

impl MemoryStore {
    /// Opens `memory://NAME` (shared by name within the process) or `memory://` (private).
    pub async fn connect(url: &str) -> Result<MemoryStore, StoreError> {
        let name = url
            .strip_prefix("memory://")
            .or_else(|| url.strip_prefix("memory:"))
            .ok_or_else(|| StoreError::UnsupportedUrl(url.to_string()))?;
        if name.is_empty() {
            return Ok(MemoryStore {
                tables: Arc::default(),
                hooks: Arc::default(),
            });
        }
        // The registry only maps names to tables; a panic elsewhere cannot leave it half-done.
        let mut stores = registry().lock().unwrap_or_else(|p| p.into_inner());
        stores.retain(|_, weak| weak.strong_count() > 0);
        if let Some(tables) = stores.get(name).and_then(Weak::upgrade) {
            return Ok(MemoryStore {
                tables,
                hooks: Arc::default(),
            });
        }
        let tables: Arc<Mutex<Tables>> = Arc::default();
        stores.insert(name.to_string(), Arc::downgrade(&tables));
        Ok(MemoryStore {
            tables,
            hooks: Arc::default(),
        })
    }

    /// Nothing to migrate: the maps are the schema.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The tables stay while another handle holds them (see the module doc).
    pub async fn close(&self) {}

    fn lock(&self) -> MutexGuard<'_, Tables> {
        // Every mutation validates first and applies after, with no panicking step between:
        // a poisoned lock still guards consistent tables.
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a batch: checked whole first, so it is all of it or none of it.
    pub async fn commit(&self, batch: &Writes) -> Result<(), StoreError> {
        self.pass_gate().await;
        let mut t = self.lock();
        if t.commits_to_fail > 0 {
            t.commits_to_fail -= 1;
            return Err(StoreError::InjectedFailure);
        }
        t.check(batch)?;
        t.apply(batch);
        t.apply_waitlist(batch);
        Ok(())
    }

    /// [`Store::commit_fenced`] on the memory tables: the claims are checked and the batch
    /// applied under one lock, as PostgreSQL does in one transaction.
    pub async fn commit_fenced(
        &self,
        batch: &Writes,
        node: &str,
        fences: &[Fence],
    ) -> Result<(), StoreError> {
        self.pass_gate().await;
        let mut t = self.lock();
        if t.commits_to_fail > 0 {
            t.commits_to_fail -= 1;
            return Err(StoreError::InjectedFailure);
        }
        fence::check(fences, |f| {
            t.leases
                .get(&f.shard)
                .is_some_and(|lease| lease.admits(f.owner_or(node), f.epoch))
        })?;
        t.check(batch)?;
        t.apply(batch);
        t.apply_waitlist(batch);
        for f in fences {
            t.audit
                .push((f.shard.clone(), f.epoch, f.owner_or(node).to_string()));
        }
        Ok(())
    }

    /// Takes `shard` for `node` whoever holds it, under the next epoch (the compare-and-set of
    /// a takeover, for tests of the fence: the memory store has no clock to expire leases on).
    pub fn take_lease(&self, shard: &str, node: &str) -> u64 {
        self.lock()
            .leases
            .entry(shard.to_string())
            .or_default()
            .take(node)
    }

    /// Every fenced commit's (shard, epoch, node), in commit order.
    pub fn fence_audit(&self) -> Vec<(String, u64, String)> {
        self.lock().audit.clone()
    }

    /// Makes the next `commits` calls to [`commit`](Self::commit) fail with
    /// [`StoreError::InjectedFailure`] and change nothing, as commits to a database that is
    /// down would; the ones after succeed again. Every other operation keeps working (a ping
    /// answers), so it is the commit path alone that fails: how the persister's failure
    /// protocol is tested without a database and its triggers. Replaces any count still
    /// pending; shared by every handle to the same tables.
    pub fn fail_next_commits(&self, commits: u64) {
        self.lock().commits_to_fail = commits;
    }

    /// Staging defers: the commit writes the batch (see the module doc).
    pub(super) fn stage(&self, batch: Arc<Writes>) -> StagedInner {
        self.hooks.staged.fetch_add(1, Ordering::SeqCst);
        StagedInner::Deferred {
            store: Store::Memory(self.clone()),
            batch,
        }
    }

    pub(super) fn note_rollback(&self) {
        self.hooks.rolled_back.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether the persister may stage batches behind one in flight: only when a test asked.
    pub fn pipelines(&self) -> bool {
        self.hooks.pipelining.load(Ordering::Relaxed)
    }

    /// For the persister's tests: report that this store pipelines, so the persister stages a
    /// batch while the one ahead commits (staging still only defers here).
    pub fn pipeline(&self, on: bool) {
        self.hooks.pipelining.store(on, Ordering::Relaxed);
    }

    /// Batches staged so far, and how many of them were rolled back.
    pub fn staged(&self) -> (u64, u64) {
        (
            self.hooks.staged.load(Ordering::SeqCst),
            self.hooks.rolled_back.load(Ordering::SeqCst),
        )
    }

    /// For the persister's tests: from now on every commit waits for a permit of the returned
    /// semaphore (add one to let one commit through), so a test holds a batch "committing" as
    /// long as it likes. [`MemoryStore::commits_at_gate`] counts the commits that got there.
    pub fn gate_commits(&self) -> Arc<Semaphore> {
        let gate = Arc::new(Semaphore::new(0));
        *self.hooks.gate.lock().unwrap_or_else(|p| p.into_inner()) = Some(gate.clone());
        gate
    }

    /// Commits that reached the gate of [`MemoryStore::gate_commits`].
    pub fn commits_at_gate(&self) -> u64 {
        self.hooks.at_gate.load(Ordering::SeqCst)
    }

    async fn pass_gate(&self) {
        // Cloned out of the lock: the wait must not hold it.
        let gate = self
            .hooks
            .gate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(gate) = gate {
            self.hooks.at_gate.fetch_add(1, Ordering::SeqCst);
            // The test owns the semaphore and never closes it; a closed one lets commits by.
            if let Ok(permit) = gate.acquire().await {
                permit.forget();
            }
        }
    }

    pub async fn load_catalog(&self) -> Result<CatalogSnapshot, StoreError> {
        let t = self.lock();
        Ok(CatalogSnapshot {
            users: t.users.keys().copied().collect(),
            concerts: t
                .concerts
                .iter()
                .map(|(id, name)| (*id, name.clone()))
                .collect(),
            schedules: t.schedules.values().cloned().collect(),
        })
    }

    pub async fn load_schedule(&self, id: ScheduleId) -> Result<ScheduleSnapshot, StoreError> {
        let t = self.lock();
        let stored = t.seats.get(&id).map_or(&[][..], Vec::as_slice);
        // By seat number, as the SQL stores' `ORDER BY seat_number`, each plan entry with its seat.
        let mut order: Vec<usize> = (0..stored.len()).collect();
        order.sort_by_key(|&i| stored[i].number);
        let seats = order.iter().map(|&i| stored[i].clone()).collect();
        let plan = t.plans.get(&id).map_or_else(Vec::new, |plan| {
            order
                .iter()
                .map(|&i| plan.get(i).cloned().unwrap_or_default())
                .collect()
        });
        let mut ids = t.by_schedule.get(&id).cloned().unwrap_or_default();
        ids.sort_unstable();
        let reservations = ids
            .iter()
            .filter_map(|r| t.reservations.get(r).cloned())
            .collect();
        let tickets = t
            .tickets
            .values()
            .filter(|ticket| ticket.schedule == id)
            .cloned()
            .collect();
        Ok(ScheduleSnapshot {
            seats,
            plan,
            reservations,
            tickets,
        })
    }

    pub async fn load_wallet(&self, user: UserId) -> Result<Option<Money>, StoreError> {
        Ok(self.lock().wallets.get(&user).map(|w| w.balance))
    }

    /// Each user's latest token (the highest position), in position order, as the SQL stores
    /// answer.
    pub async fn load_token(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self.lock().tokens.get(&id).copied())
    }

    pub async fn load_tokens(
        &self,
        each: &mut (dyn FnMut(TokenRecord) + Send),
    ) -> Result<(), StoreError> {
        let t = self.lock();
        let mut latest: BTreeMap<UserId, TokenRecord> = BTreeMap::new();
        for token in t.tokens.values() {
            let newer = latest
                .get(&token.user)
                .is_none_or(|seen| token.position > seen.position);
            if newer {
                latest.insert(token.user, *token);
            }
        }
        let mut latest: Vec<TokenRecord> = latest.into_values().collect();
        latest.sort_unstable_by_key(|t| t.position);
        latest.into_iter().for_each(each);
        Ok(())
    }

    pub async fn load_superseded_tokens(
        &self,
        window: u64,
        each: &mut (dyn FnMut(TokenRecord, u64) + Send),
    ) -> Result<(), StoreError> {
        let t = self.lock();
        let mut by_user: BTreeMap<UserId, Vec<&TokenRecord>> = BTreeMap::new();
        for token in t.tokens.values() {
            by_user.entry(token.user).or_default().push(token);
        }
        let max = t.tokens.values().map(|t| t.position).max().unwrap_or(0);
        let first_kept = (max + 1).saturating_sub(window);
        let mut replaced: Vec<(u64, TokenRecord)> = Vec::new();
        for tokens in by_user.values_mut() {
            tokens.sort_unstable_by_key(|t| t.position);
            for pair in tokens.windows(2) {
                if pair[1].position >= first_kept {
                    replaced.push((pair[1].position, *pair[0]));
                }
            }
        }
        replaced.sort_unstable_by_key(|(by, _)| *by);
        replaced.into_iter().for_each(|(by, token)| each(token, by));
        Ok(())
    }

    pub async fn load_opening(&self) -> Result<Option<OpeningRecord>, StoreError> {
        Ok(self.lock().opening.clone())
    }

    pub async fn load_tokens_at(&self, first: u64, count: u64) -> Result<Vec<TokenId>, StoreError> {
        let t = self.lock();
        Ok((first..first.saturating_add(count))
            .filter_map(|position| t.positions.get(&position).copied())
            .collect())
    }

    pub async fn max_ids(&self) -> Result<MaxIds, StoreError> {
        let t = self.lock();
        Ok(MaxIds {
            reservation: t.max_reservation,
            payment: t.payments.keys().next_back().map_or(0, |p| p.get()),
            ledger: t.ledger.keys().next_back().copied().unwrap_or(0),
            ticket: t.tickets.keys().next_back().map_or(0, |id| id.get()),
        })
    }

    pub async fn tickets_of_holder(
        &self,
        holder: UserId,
    ) -> Result<Vec<super::StoredTicket>, StoreError> {
        let t = self.lock();
        Ok(t.tickets
            .values()
            .filter(|ticket| ticket.holder == holder)
            .filter_map(|ticket| stored_ticket(&t, ticket))
            .collect())
    }

    pub async fn load_ticket(
        &self,
        id: crate::domain::TicketId,
    ) -> Result<Option<super::StoredTicket>, StoreError> {
        let t = self.lock();
        Ok(t.tickets
            .get(&id)
            .and_then(|ticket| stored_ticket(&t, ticket)))
    }

    pub async fn ticket_signing_key(
        &self,
        candidate: &str,
        _now: Timestamp,
    ) -> Result<String, StoreError> {
        let mut t = self.lock();
        Ok(t.ticket_key
            .get_or_insert_with(|| candidate.to_string())
            .clone())
    }

    pub async fn payment_of(&self, id: ReservationId) -> Result<Option<PaymentId>, StoreError> {
        let t = self.lock();
        Ok(t.payments
            .values()
            .find(|p| p.reservation == id)
            .map(|p| p.id))
    }

    pub async fn load_reservation(
        &self,
        id: ReservationId,
    ) -> Result<Option<StoredReservation>, StoreError> {
        let t = self.lock();
        let Some(r) = t.reservations.get(&id) else {
            return Ok(None);
        };
        let of_schedule = t.seats.get(&r.schedule).map_or(&[][..], Vec::as_slice);
        let seats = r
            .seats
            .iter()
            .map(|wanted| {
                // A schedule's seats got consecutive ids: the offset finds one at once.
                let first = of_schedule.first().map_or(0, |s| s.id.get());
                let at = usize::try_from(wanted.get() - first).unwrap_or(usize::MAX);
                of_schedule
                    .get(at)
                    .filter(|s| s.id == *wanted)
                    .or_else(|| of_schedule.iter().find(|s| s.id == *wanted))
                    .cloned()
                    .ok_or_else(|| violated(format!("seat {wanted} of reservation {id}")))
            })
            .collect::<Result<Vec<Seat>, StoreError>>()?;
        Ok(Some(StoredReservation {
            reservation: r.clone(),
            seats,
        }))
    }

    pub async fn create_user(
        &self,
        name: &str,
        balance: Money,
        now: Timestamp,
    ) -> Result<UserId, StoreError> {
        let mut t = self.lock();
        let user = id(t.next_user + 1, UserId::new)?;
        t.next_user += 1;
        t.users.insert(user, name.to_string());
        t.wallets.insert(
            user,
            WalletRecord {
                user,
                balance,
                at: now,
            },
        );
        Ok(user)
    }

    pub async fn ledger_page(
        &self,
        user: UserId,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        let t = self.lock();
        let below = before.unwrap_or(i64::MAX);
        Ok(t.ledger
            .range(..below)
            .rev()
            .filter(|(_, l)| l.user == user)
            .take(limit as usize)
            .map(|(_, l)| l.clone())
            .collect())
    }

    pub async fn load_idempotency(
        &self,
        keep_since: Timestamp,
    ) -> Result<Vec<IdempotencyRecord>, StoreError> {
        let mut t = self.lock();
        t.idempotency.retain(|_, r| r.at >= keep_since);
        Ok(t.idempotency.values().cloned().collect())
    }

    pub async fn create_concert(&self, concert: &NewConcert) -> Result<CreatedConcert, StoreError> {
        let mut t = self.lock();
        // Checked before anything is allocated: the UNIQUE (schedule_id, seat_number) of SQL.
        for s in &concert.schedules {
            let mut numbers = HashSet::with_capacity(s.seats.len());
            if s.seats.iter().any(|(n, _)| !numbers.insert(*n)) {
                // What `Store::create_concert` makes of the SQL stores' unique violation.
                return Err(StoreError::DuplicateSeatNumber);
            }
        }
        let concert_id = id(t.next_concert + 1, ConcertId::new)?;
        t.next_concert += 1;
        t.concerts.insert(concert_id, concert.name.clone());
        let mut schedules = Vec::with_capacity(concert.schedules.len());
        for s in &concert.schedules {
            let schedule_id = id(t.next_schedule + 1, ScheduleId::new)?;
            t.next_schedule += 1;
            let first = t.next_seat + 1;
            let seats = s
                .seats
                .iter()
                .zip(first..)
                .map(|((number, price), raw)| {
                    Ok(Seat {
                        id: id(raw, SeatId::new)?,
                        number: *number,
                        price: *price,
                    })
                })
                .collect::<Result<Vec<Seat>, StoreError>>()?;
            t.next_seat += seats.len() as i64;
            let total = t.next_seat as usize;
            t.live_holds.resize(total, None);
            let info = ScheduleInfo {
                id: schedule_id,
                concert_id,
                concert_name: concert.name.clone(),
                concert_at: s.concert_at,
                reservation_at: s.reservation_at,
            };
            t.schedules.insert(schedule_id, info.clone());
            t.seats.insert(schedule_id, seats.clone());
            if s.plan.iter().any(|p| !p.is_empty()) {
                t.plans.insert(schedule_id, s.plan.clone());
            }
            schedules.push(CreatedSchedule {
                info,
                seats,
                plan: s.plan.clone(),
            });
        }
        Ok(CreatedConcert {
            id: concert_id,
            schedules,
        })
    }

    /// A copy of what was committed, for invariant checks.
    pub fn tables(&self) -> MemoryTables {
        let t = self.lock();
        MemoryTables {
            reservations: {
                let mut all: Vec<Reservation> = t.reservations.values().cloned().collect();
                all.sort_unstable_by_key(|r| r.id);
                all
            },
            payments: t.payments.values().cloned().collect(),
            ledger: t.ledger.values().cloned().collect(),
            wallets: t.wallets.values().copied().collect(),
        }
    }
}

/// A ticket with its seat's number and labels, as the SQL stores join them.
fn stored_ticket(
    t: &Tables,
    ticket: &crate::domain::ticket::Ticket,
) -> Option<super::StoredTicket> {
    let seats = t.seats.get(&ticket.schedule)?;
    let i = seats.iter().position(|s| s.id == ticket.seat)?;
    let plan = t
        .plans
        .get(&ticket.schedule)
        .and_then(|plan| plan.get(i).cloned())
        .unwrap_or_default();
    Some(super::StoredTicket {
        ticket: ticket.clone(),
        seat_number: seats[i].number,
        plan,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::WalletRecord;

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime with no drivers builds: nothing to fail on")
            .block_on(f)
    }

    fn won(amount: i64) -> Money {
        Money::new(amount).expect("test amounts are not negative")
    }

    #[test]
    fn the_next_commits_fail_on_request_and_change_nothing() {
        block(async {
            let store = MemoryStore::connect("memory://").await.expect("opens");
            let user = store
                .create_user("kim", won(100), Timestamp::from_millis(0))
                .await
                .expect("a user");
            let batch = |balance| {
                Writes::default().wallet(WalletRecord {
                    user,
                    balance: won(balance),
                    at: Timestamp::from_millis(1),
                })
            };
            // A clone shares the tables, the switch included.
            store.clone().fail_next_commits(2);
            for balance in [1, 2] {
                let error = store
                    .commit(&batch(balance))
                    .await
                    .expect_err("an injected failure");
                assert!(matches!(error, StoreError::InjectedFailure), "{error}");
                assert_eq!(
                    store.load_wallet(user).await.expect("loads"),
                    Some(won(100))
                );
            }
            // Only commits fail: the store still answers while they do.
            store.ping().await.expect("ping answers");
            store
                .commit(&batch(3))
                .await
                .expect("the third commit succeeds");
            assert_eq!(store.load_wallet(user).await.expect("loads"), Some(won(3)));
            // A new count replaces the old one; zero turns the switch off.
            store.fail_next_commits(5);
            store.fail_next_commits(0);
            store.commit(&batch(4)).await.expect("the switch is off");
            assert_eq!(store.load_wallet(user).await.expect("loads"), Some(won(4)));
        });
    }

    #[test]
    fn named_stores_are_shared_while_held() {
        block(async {
            let a = MemoryStore::connect("memory://shared-test")
                .await
                .expect("opens");
            let b = MemoryStore::connect("memory://shared-test")
                .await
                .expect("opens");
            a.create_user("kim", Money::ZERO, Timestamp::from_millis(0))
                .await
                .expect("a user");
            assert_eq!(b.load_catalog().await.expect("loads").users.len(), 1);
            drop((a, b));
            let c = MemoryStore::connect("memory://shared-test")
                .await
                .expect("opens");
            assert!(c.load_catalog().await.expect("loads").users.is_empty());
        });
    }
}
