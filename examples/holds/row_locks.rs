//! The row-lock baseline, the design most ticketing systems ship: one transaction per hold,
//! `SELECT … FOR UPDATE` on the seats, `UPDATE` them, `INSERT` the reservation, `COMMIT`.
//! On its own fresh PostgreSQL database; one pooled connection per client.

use crate::boxoffice::{drop_postgres, fresh_postgres};
use crate::measure::{drive, CpuMeter, Outcome, Processes, Tally};
use crate::plan::{Plan, SEATS_PER_SCHEDULE};
use crate::Args;
use sqlx::postgres::PgPoolOptions;
use std::sync::Arc;
use std::time::Instant;

const SCHEMA: &str = "
CREATE TABLE seats (
    id             BIGINT PRIMARY KEY,
    schedule_id    BIGINT NOT NULL,
    price          BIGINT NOT NULL,
    reservation_id BIGINT
);
CREATE TABLE reservations (
    id            BIGSERIAL PRIMARY KEY,
    user_id       BIGINT NOT NULL,
    schedule_id   BIGINT NOT NULL,
    status        TEXT   NOT NULL,
    total_price   BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);";

async fn hold(
    pool: &sqlx::PgPool,
    user: i64,
    schedule: i64,
    seats: &[i64; 2],
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let free: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT id, price FROM seats WHERE id = ANY($1) AND reservation_id IS NULL FOR UPDATE",
    )
    .bind(&seats[..])
    .fetch_all(&mut *tx)
    .await?;
    if free.len() != seats.len() {
        tx.rollback().await?;
        return Ok(false);
    }
    let total: i64 = free.iter().map(|(_, p)| p).sum();
    let (reservation,): (i64,) = sqlx::query_as(
        "INSERT INTO reservations (user_id, schedule_id, status, total_price, created_at_ms)
         VALUES ($1, $2, 'PAYMENT_PENDING', $3, (extract(epoch from now()) * 1000)::bigint) RETURNING id",
    )
    .bind(user)
    .bind(schedule)
    .bind(total)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("UPDATE seats SET reservation_id = $1 WHERE id = ANY($2)")
        .bind(reservation)
        .bind(&seats[..])
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

pub async fn run(args: &Args, plan: &Plan) -> Result<Outcome, String> {
    let name = format!("holds_rowlocks_{}", std::process::id());
    let url = fresh_postgres(&args.postgres, &name).await?;
    let pool = PgPoolOptions::new()
        .max_connections(args.connections as u32)
        .connect(&url)
        .await
        .map_err(|e| e.to_string())?;
    sqlx::raw_sql(SCHEMA)
        .execute(&pool)
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query(
        "INSERT INTO seats (id, schedule_id, price)
         SELECT g, (g - 1) / $1, 10000 FROM generate_series(1, $2::bigint) g",
    )
    .bind(SEATS_PER_SCHEDULE as i64)
    .bind((plan.schedules * SEATS_PER_SCHEDULE) as i64)
    .execute(&pool)
    .await
    .map_err(|e| e.to_string())?;
    sqlx::raw_sql("VACUUM ANALYZE seats")
        .execute(&pool)
        .await
        .map_err(|e| e.to_string())?;
    let pool = Arc::new(pool);
    let plan = Arc::new(Plan {
        schedules: plan.schedules,
        users: plan.users,
        connections: plan.connections,
    });
    let outcome = drive(
        "PostgreSQL row locks (FOR UPDATE + UPDATE + INSERT)".into(),
        args,
        CpuMeter::new(vec![("postgres", Processes::Named("postgres"))]),
        |c, window| {
            let (pool, plan) = (pool.clone(), plan.clone());
            async move {
                let mut tally = Tally::new();
                for h in plan.holds_of(c) {
                    if window.is_over() {
                        break;
                    }
                    let base = (h.schedule * SEATS_PER_SCHEDULE) as i64 + 1;
                    let seats = [base + h.seats[0] as i64, base + h.seats[1] as i64];
                    let started = Instant::now();
                    let outcome = hold(&pool, h.user as i64, h.schedule as i64, &seats)
                        .await
                        .map_err(|e| e.to_string());
                    tally.record(&window, started, outcome);
                }
                Ok(tally)
            }
        },
    )
    .await;
    pool.close().await;
    drop_postgres(&args.postgres, &name).await;
    outcome
}
