//! The post-run checks against the store: no seat sold twice, holds POSTED exactly for PAID
//! reservations, sold seats = seats of paid reservations = acknowledged payments (refunded
//! ones included), every payment matched, every balance = recharges − payments + refunds.
//! Seven verdicts, from SQL on PostgreSQL and SQLite or from the memory store's tables; then
//! three on what the run did after the sale: every check-in answered ADMITTED is stored
//! checked in, every refund answered 200 is a REFUNDED reservation with its money back in a
//! REFUND ledger row, every transfer answered 2xx shows the new holder. A verdict the store cannot
//! falsify is "not checked", never "ok": the memory store keeps one state per reservation, so
//! "POSTED exactly when PAID" and "sold = seats of paid" hold there by construction.

use crate::stats::AfterSale;
use boxoffice::store::MemoryStore;
use std::collections::{HashMap, HashSet};

/// What the run knows, to check the store against.
pub struct Expectations {
    pub users: (i64, i64),
    pub schedules: Vec<i64>,
    pub acknowledged_payments: u64,
    pub unknown_payments: u64,
    /// Sold-out users the waiting list took (`--waitlist`).
    pub waitlisted: u64,
    /// What the service answered after the sale.
    pub after: AfterSale,
}

enum Db {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
    Memory(MemoryStore),
}

impl Db {
    async fn open(url: &str, memory: Option<MemoryStore>) -> Result<Db, String> {
        if let Some(store) = memory {
            return Ok(Db::Memory(store));
        }
        if url.starts_with("postgres") {
            Ok(Db::Postgres(
                sqlx::PgPool::connect(url)
                    .await
                    .map_err(|e| e.to_string())?,
            ))
        } else if url.starts_with("sqlite:") {
            Ok(Db::Sqlite(
                sqlx::SqlitePool::connect(url)
                    .await
                    .map_err(|e| e.to_string())?,
            ))
        } else {
            Err(format!("cannot check invariants on {url}"))
        }
    }

    /// One number; only standard SQL, so both databases answer it.
    async fn number(&self, sql: &str) -> Result<i64, String> {
        let fetched = match self {
            Db::Postgres(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await,
            Db::Sqlite(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await,
            Db::Memory(_) => return Err("no SQL on the memory store".into()),
        };
        fetched.map_err(|e| format!("{sql}: {e}"))
    }
}

/// Whether an invariant held in the store, or could not have failed there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Holds,
    Fails,
    /// The store has no separate data that could disagree: true by construction, so no
    /// evidence either way.
    NotChecked,
}

impl Verdict {
    pub fn of(holds: bool) -> Verdict {
        if holds {
            Verdict::Holds
        } else {
            Verdict::Fails
        }
    }
}

/// (what, verdict, detail) for each invariant.
pub type Check = (&'static str, Verdict, String);

/// Checks the store at `url` (or the memory store the run held on to) against what the run saw.
pub async fn check(
    url: &str,
    memory: Option<MemoryStore>,
    expectations: &Expectations,
) -> Result<Vec<Check>, String> {
    match Db::open(url, memory).await {
        Ok(Db::Memory(store)) => {
            let mut checks = check_memory(&store, expectations);
            checks.extend(after_sale_memory(&store, &expectations.after).await?);
            Ok(checks)
        }
        Ok(db) => check_sql(&db, expectations).await,
        Err(e) => Err(e),
    }
}

/// Prints the verdicts; whether they all hold.
pub fn print(checks: &[Check]) -> bool {
    println!("\n## invariants (checked in the store)\n");
    let mut all = true;
    for (what, verdict, detail) in checks {
        all &= *verdict != Verdict::Fails;
        let mark = match verdict {
            Verdict::Holds => "ok",
            Verdict::Fails => "FAILED",
            Verdict::NotChecked => "not checked",
        };
        println!("- [{mark}] {what}: {detail}");
    }
    all
}

async fn check_sql(db: &Db, e: &Expectations) -> Result<Vec<Check>, String> {
    let schedules = e
        .schedules
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let (lo, hi) = e.users;
    let double_sold = db
        .number(
            "SELECT COUNT(*) FROM (SELECT seat_id FROM holds WHERE state IN ('PENDING', 'POSTED')
             GROUP BY seat_id HAVING COUNT(*) > 1) d",
        )
        .await?;
    let posted_unpaid = db
        .number(
            "SELECT COUNT(*) FROM holds h JOIN reservations r ON r.id = h.reservation_id
             WHERE (h.state = 'POSTED') <> (r.status = 'PAID')",
        )
        .await?;
    let sold = db
        .number(&format!(
            "SELECT COUNT(*) FROM holds h JOIN reservations r ON r.id = h.reservation_id
             WHERE h.state = 'POSTED' AND r.schedule_id IN ({schedules})"
        ))
        .await?;
    let seats_of_paid = db
        .number(&format!(
            "SELECT COUNT(*) FROM holds h JOIN reservations r ON r.id = h.reservation_id
             WHERE r.status = 'PAID' AND r.schedule_id IN ({schedules})"
        ))
        .await?;
    let paid = db
        .number(&format!(
            "SELECT COUNT(*) FROM reservations WHERE status IN ('PAID', 'REFUNDED')
             AND schedule_id IN ({schedules})"
        ))
        .await?;
    let unmatched_payments = db
        .number(
            "SELECT COUNT(*) FROM reservations r WHERE (r.status IN ('PAID', 'REFUNDED')) <>
               EXISTS (SELECT 1 FROM payments p WHERE p.reservation_id = r.id
                       AND p.amount = r.total_price AND p.user_id = r.user_id)",
        )
        .await?;
    // Aggregated once per user and joined: a correlated subquery per wallet had no index on
    // payments.user_id to use and took 30 s for 20,000 users.
    let per_user = format!(
        "FROM wallets w
         LEFT JOIN (SELECT user_id,
                           SUM(CASE WHEN kind IN ('RECHARGE', 'REFUND') THEN amount ELSE -amount END) AS net,
                           SUM(CASE WHEN kind = 'PAYMENT' THEN amount ELSE 0 END) AS paid
                    FROM ledger GROUP BY user_id) l ON l.user_id = w.user_id
         LEFT JOIN (SELECT user_id, SUM(amount) AS paid FROM payments GROUP BY user_id) p
                ON p.user_id = w.user_id
         WHERE w.user_id BETWEEN {lo} AND {hi}"
    );
    let wrong_balances = db
        .number(&format!(
            "SELECT COUNT(*) {per_user} AND w.balance <> COALESCE(l.net, 0)"
        ))
        .await?;
    let ledger_off_payments = db
        .number(&format!(
            "SELECT COUNT(*) {per_user} AND COALESCE(l.paid, 0) <> COALESCE(p.paid, 0)"
        ))
        .await?;
    let entries = db
        .number(&format!(
            "SELECT COUNT(*) FROM waitlist_entries WHERE schedule_id IN ({schedules})"
        ))
        .await?;
    let mut checks = verdicts(
        e,
        Numbers {
            double_sold,
            posted_unpaid: Some(posted_unpaid),
            sold: Some(sold),
            seats_of_paid,
            paid,
            unmatched_payments,
            wrong_balances,
            ledger_off_payments,
        },
    );
    // Offers stay entries until paid or expired, and the drop pays none: one row per join.
    checks.push((
        "waiting-list entries stored = joins acknowledged",
        Verdict::of(entries == e.waitlisted as i64),
        format!("{entries} stored, {} acknowledged", e.waitlisted),
    ));
    checks.extend(after_sale_sql(db, &e.after).await?);
    Ok(checks)
}

/// `(a,b),(c,d)…` for a `VALUES` list.
fn rows(pairs: impl Iterator<Item = (i64, i64)>) -> String {
    pairs
        .map(|(a, b)| format!("({a},{b})"))
        .collect::<Vec<_>>()
        .join(",")
}

/// How many of `pairs` the query over the `answered(a, b)` rows counts; 0 for none (an
/// empty `VALUES` is not SQL).
async fn matching(db: &Db, pairs: &[(i64, i64)], query: &str) -> Result<i64, String> {
    if pairs.is_empty() {
        return Ok(0);
    }
    let values = rows(pairs.iter().copied());
    db.number(&format!(
        "WITH answered (a, b) AS (VALUES {values}) {query}"
    ))
    .await
}

async fn after_sale_sql(db: &Db, after: &AfterSale) -> Result<Vec<Check>, String> {
    let admitted = matching(
        db,
        &after.admitted,
        "SELECT COUNT(*) FROM answered JOIN tickets t ON t.id = answered.a
         WHERE t.status = 'CHECKED_IN' AND t.checked_in_at_ms IS NOT NULL",
    )
    .await?;
    let refunds: Vec<(i64, i64)> = after
        .refunded
        .iter()
        .map(|&(r, _, amount)| (r, amount))
        .collect();
    // One REFUND row of the amount paid, to the buyer, naming the reservation's payment.
    let refunded = matching(
        db,
        &refunds,
        "SELECT COUNT(*) FROM answered JOIN reservations r ON r.id = answered.a
         JOIN payments p ON p.reservation_id = r.id
         WHERE r.status = 'REFUNDED' AND p.amount = answered.b
           AND (SELECT COUNT(*) FROM ledger l WHERE l.payment_id = p.id AND l.kind = 'REFUND'
                AND l.amount = answered.b AND l.user_id = r.user_id) = 1",
    )
    .await?;
    let transferred = matching(
        db,
        &after.transferred,
        "SELECT COUNT(*) FROM answered JOIN tickets t ON t.id = answered.a
         WHERE t.holder_id = answered.b AND t.version >= 2 AND t.status = 'VALID'",
    )
    .await?;
    Ok(after_sale_verdicts(
        after,
        [admitted, refunded, transferred],
    ))
}

/// The three after-sale verdicts from how many of each kind of answer the store bears out.
fn after_sale_verdicts(after: &AfterSale, stored: [i64; 3]) -> Vec<Check> {
    let [admitted, refunded, transferred] = stored;
    let verdict = |stored: i64, answered: usize| {
        (
            Verdict::of(stored == answered as i64),
            format!("{stored} of {answered} answered"),
        )
    };
    let (a, r, t) = (
        verdict(admitted, after.admitted.len()),
        verdict(refunded, after.refunded.len()),
        verdict(transferred, after.transferred.len()),
    );
    vec![
        (
            "every check-in answered ADMITTED is stored checked in",
            a.0,
            a.1,
        ),
        (
            "every refund answered is REFUNDED, its money back in one REFUND ledger row",
            r.0,
            r.1,
        ),
        ("every transfer answered shows the new holder", t.0, t.1),
    ]
}

/// Paid, and still so or refunded since: a reservation that has its payment.
fn was_paid(status: &str) -> bool {
    matches!(status, "PAID" | "REFUNDED")
}

/// The after-sale verdicts from the memory store: its tickets by id, its reservations and
/// ledger.
async fn after_sale_memory(store: &MemoryStore, after: &AfterSale) -> Result<Vec<Check>, String> {
    use boxoffice::domain::ticket::TicketStatus;
    use boxoffice::domain::TicketId;
    let ticket = |id: i64| async move {
        let id = TicketId::new(id).map_err(|e| e.to_string())?;
        store.load_ticket(id).await.map_err(|e| e.to_string())
    };
    let mut admitted = 0;
    for &(id, _) in &after.admitted {
        if let Some(t) = ticket(id).await? {
            admitted += i64::from(
                t.ticket.status == TicketStatus::CheckedIn && t.ticket.check_in.is_some(),
            );
        }
    }
    let mut transferred = 0;
    for &(id, holder) in &after.transferred {
        if let Some(t) = ticket(id).await? {
            let t = t.ticket;
            transferred += i64::from(
                t.holder.get() == holder && t.version >= 2 && t.status == TicketStatus::Valid,
            );
        }
    }
    let tables = store.tables();
    let mut refunded = 0;
    for &(reservation, user, amount) in &after.refunded {
        let is_refunded = tables
            .reservations
            .iter()
            .any(|r| r.id.get() == reservation && r.status.as_str() == "REFUNDED");
        let payment = tables
            .payments
            .iter()
            .find(|p| p.reservation.get() == reservation && p.amount.won() == amount);
        let rows = payment.map_or(0, |p| {
            tables
                .ledger
                .iter()
                .filter(|l| l.payment == Some(p.id) && l.kind.as_str() == "REFUND")
                .filter(|l| l.amount.won() == amount && l.user.get() == user)
                .count()
        });
        refunded += i64::from(is_refunded && rows == 1);
    }
    Ok(after_sale_verdicts(
        after,
        [admitted, refunded, transferred],
    ))
}

/// The same numbers, computed from the in-memory store's tables.
fn check_memory(store: &MemoryStore, e: &Expectations) -> Vec<Check> {
    let t = store.tables();
    let ours: HashSet<i64> = e.schedules.iter().copied().collect();
    let mut live: HashMap<i64, u64> = HashMap::new();
    let (mut seats_of_paid, mut paid) = (0, 0);
    for r in &t.reservations {
        let is_paid = r.status.as_str() == "PAID";
        if r.status.is_live() {
            for s in &r.seats {
                *live.entry(s.get()).or_default() += 1;
            }
        }
        if ours.contains(&r.schedule.get()) && is_paid {
            // Posted holds are exactly the seats of paid reservations here (one state column):
            // there is no separate sold count to compare, so those two verdicts are not checked.
            seats_of_paid += r.seats.len() as i64;
        }
        if ours.contains(&r.schedule.get()) && was_paid(r.status.as_str()) {
            paid += 1;
        }
    }
    let payments: HashMap<i64, (i64, i64)> = t
        .payments
        .iter()
        .map(|p| (p.reservation.get(), (p.amount.won(), p.user.get())))
        .collect();
    let unmatched_payments = t
        .reservations
        .iter()
        .filter(|r| {
            let matched = payments.get(&r.id.get()) == Some(&(r.total.won(), r.user.get()));
            was_paid(r.status.as_str()) != matched
        })
        .count() as i64;
    let (lo, hi) = e.users;
    let mut net: HashMap<i64, i64> = HashMap::new();
    let mut ledger_paid: HashMap<i64, i64> = HashMap::new();
    for l in &t.ledger {
        let sign = if matches!(l.kind.as_str(), "RECHARGE" | "REFUND") {
            1
        } else {
            -1
        };
        *net.entry(l.user.get()).or_default() += sign * l.amount.won();
        if sign < 0 {
            *ledger_paid.entry(l.user.get()).or_default() += l.amount.won();
        }
    }
    let mut payments_of: HashMap<i64, i64> = HashMap::new();
    for p in &t.payments {
        *payments_of.entry(p.user.get()).or_default() += p.amount.won();
    }
    let ours_users = t
        .wallets
        .iter()
        .filter(|w| (lo..=hi).contains(&w.user.get()));
    let (mut wrong_balances, mut ledger_off_payments) = (0, 0);
    for w in ours_users {
        let u = w.user.get();
        if w.balance.won() != net.get(&u).copied().unwrap_or(0) {
            wrong_balances += 1;
        }
        if ledger_paid.get(&u).copied().unwrap_or(0) != payments_of.get(&u).copied().unwrap_or(0) {
            ledger_off_payments += 1;
        }
    }
    verdicts(
        e,
        Numbers {
            double_sold: live.values().filter(|n| **n > 1).count() as i64,
            posted_unpaid: None,
            sold: None,
            seats_of_paid,
            paid,
            unmatched_payments,
            wrong_balances,
            ledger_off_payments,
        },
    )
}

struct Numbers {
    double_sold: i64,
    /// None where holds and reservations share one state (the memory store).
    posted_unpaid: Option<i64>,
    /// Seats in POSTED holds; None where that is the paid reservations' seats by construction.
    sold: Option<i64>,
    seats_of_paid: i64,
    paid: i64,
    unmatched_payments: i64,
    wrong_balances: i64,
    ledger_off_payments: i64,
}

fn verdicts(e: &Expectations, n: Numbers) -> Vec<Check> {
    let acked = e.acknowledged_payments as i64;
    let unknown = e.unknown_payments as i64;
    let posted_unpaid = match n.posted_unpaid {
        Some(disagree) => (
            Verdict::of(disagree == 0),
            format!("{disagree} holds disagree"),
        ),
        None => (
            Verdict::NotChecked,
            "one state per reservation in this store".to_string(),
        ),
    };
    let sold = match n.sold {
        Some(sold) => (
            Verdict::of(sold == n.seats_of_paid),
            format!("{sold} sold, {} in paid reservations", n.seats_of_paid),
        ),
        None => (
            Verdict::NotChecked,
            format!(
                "{} in paid reservations, no separate sold count in this store",
                n.seats_of_paid
            ),
        ),
    };
    vec![
        (
            "no seat sold (or held) twice",
            Verdict::of(n.double_sold == 0),
            format!("{} seats with two live holds", n.double_sold),
        ),
        (
            "a hold is POSTED exactly when its reservation is PAID",
            posted_unpaid.0,
            posted_unpaid.1,
        ),
        ("sold seats = seats of paid reservations", sold.0, sold.1),
        (
            "paid reservations = acknowledged payments (+ unknown outcomes)",
            Verdict::of(n.paid >= acked && n.paid <= acked + unknown),
            format!(
                "{} paid in the store, {acked} acknowledged, {unknown} unknown",
                n.paid
            ),
        ),
        (
            "every paid reservation has its payment, and only those",
            Verdict::of(n.unmatched_payments == 0),
            format!("{} reservations disagree", n.unmatched_payments),
        ),
        (
            "every balance = recharges − payments + refunds (ledger)",
            Verdict::of(n.wrong_balances == 0),
            format!("{} wallets disagree", n.wrong_balances),
        ),
        (
            "ledger payments = payments, per user",
            Verdict::of(n.ledger_off_payments == 0),
            format!("{} users disagree", n.ledger_off_payments),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expecting(acknowledged_payments: u64, unknown_payments: u64) -> Expectations {
        Expectations {
            users: (1, 10),
            schedules: vec![1],
            acknowledged_payments,
            unknown_payments,
            waitlisted: 0,
            after: AfterSale::default(),
        }
    }

    fn consistent(paid: i64) -> Numbers {
        Numbers {
            double_sold: 0,
            posted_unpaid: Some(0),
            sold: Some(paid * 2),
            seats_of_paid: paid * 2,
            paid,
            unmatched_payments: 0,
            wrong_balances: 0,
            ledger_off_payments: 0,
        }
    }

    fn failing(checks: &[Check]) -> Vec<&'static str> {
        checks
            .iter()
            .filter(|c| c.1 == Verdict::Fails)
            .map(|c| c.0)
            .collect()
    }

    #[test]
    fn a_consistent_store_passes_all_seven() {
        let checks = verdicts(&expecting(5, 0), consistent(5));
        assert_eq!(checks.len(), 7);
        assert_eq!(failing(&checks), Vec::<&str>::new());
    }

    #[test]
    fn payments_of_unknown_outcome_widen_the_paid_count_only_upwards() {
        let paid = "paid reservations = acknowledged payments (+ unknown outcomes)";
        assert!(failing(&verdicts(&expecting(5, 2), consistent(7))).is_empty());
        assert_eq!(failing(&verdicts(&expecting(5, 2), consistent(8))), [paid]);
        assert_eq!(failing(&verdicts(&expecting(5, 2), consistent(4))), [paid]);
    }

    #[test]
    fn each_broken_number_fails_its_own_verdict() {
        let mut numbers = consistent(3);
        numbers.double_sold = 1;
        numbers.sold = Some(7);
        numbers.wrong_balances = 2;
        assert_eq!(
            failing(&verdicts(&expecting(3, 0), numbers)),
            [
                "no seat sold (or held) twice",
                "sold seats = seats of paid reservations",
                "every balance = recharges − payments + refunds (ledger)",
            ]
        );
    }

    #[test]
    fn an_after_sale_answer_the_store_does_not_bear_out_fails_its_verdict() {
        let after = AfterSale {
            admitted: vec![(1, 10), (2, 11)],
            refunded: vec![(5, 12, 10_000)],
            transferred: vec![(3, 40)],
        };
        let failing_of = |stored| -> Vec<&'static str> {
            after_sale_verdicts(&after, stored)
                .iter()
                .filter(|c| c.1 == Verdict::Fails)
                .map(|c| c.0)
                .collect()
        };
        assert!(failing_of([2, 1, 1]).is_empty());
        assert_eq!(
            failing_of([1, 0, 1]),
            [
                "every check-in answered ADMITTED is stored checked in",
                "every refund answered is REFUNDED, its money back in one REFUND ledger row"
            ]
        );
        assert_eq!(
            failing_of([2, 1, 0]),
            ["every transfer answered shows the new holder"]
        );
        assert_eq!(rows([(1, 2), (3, 4)].into_iter()), "(1,2),(3,4)");
    }

    #[test]
    fn a_verdict_the_store_cannot_falsify_is_not_checked_and_never_ok() {
        let mut numbers = consistent(3);
        numbers.posted_unpaid = None;
        numbers.sold = None;
        let checks = verdicts(&expecting(3, 0), numbers);
        let not_checked: Vec<_> = checks
            .iter()
            .filter(|c| c.1 == Verdict::NotChecked)
            .map(|c| c.0)
            .collect();
        assert_eq!(
            not_checked,
            [
                "a hold is POSTED exactly when its reservation is PAID",
                "sold seats = seats of paid reservations",
            ]
        );
        assert!(print(&checks), "not checked is not a failure");
        let mut broken = consistent(3);
        broken.posted_unpaid = Some(1);
        assert_eq!(
            failing(&verdicts(&expecting(3, 0), broken)),
            ["a hold is POSTED exactly when its reservation is PAID"]
        );
    }

    #[test]
    fn a_memory_store_reports_the_two_verdicts_it_cannot_falsify_as_not_checked() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime builds");
        let store = runtime
            .block_on(MemoryStore::connect("memory://invariants-test"))
            .expect("the memory store opens");
        let checks = check_memory(&store, &expecting(0, 0));
        let verdict_of = |what: &str| checks.iter().find(|c| c.0 == what).map(|c| c.1);
        assert_eq!(
            verdict_of("a hold is POSTED exactly when its reservation is PAID"),
            Some(Verdict::NotChecked)
        );
        assert_eq!(
            verdict_of("sold seats = seats of paid reservations"),
            Some(Verdict::NotChecked)
        );
        assert_eq!(
            verdict_of("no seat sold (or held) twice"),
            Some(Verdict::Holds)
        );
    }
}
