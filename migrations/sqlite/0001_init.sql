-- boxoffice schema (SQLite), the twin of migrations/postgres/0001_init.sql: same tables,
-- columns, checks, foreign keys and (partial) unique indexes. Times are INTEGER milliseconds
-- since the Unix epoch (UTC), the same in both stores. The actors decide in memory; these
-- constraints are the backstop that makes a double sale or a negative balance impossible even
-- if the code were wrong.
--
-- Every table is STRICT so that a column's type is enforced as PostgreSQL enforces it, instead
-- of SQLite's default of storing whatever it is given. INTEGER is SQLite's 64-bit integer: it
-- stands for both BIGINT and INTEGER. Foreign keys are only enforced when the connection turns
-- them on (PRAGMA foreign_keys), which the store does on every connection.

-- AUTOINCREMENT: a deleted row's id is never handed out again, as with a PostgreSQL sequence.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL
) STRICT;

-- One wallet per user; the balance is the running sum of the ledger.
CREATE TABLE wallets (
    user_id       INTEGER PRIMARY KEY REFERENCES users (id),
    balance       INTEGER NOT NULL CHECK (balance >= 0),
    updated_at_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE concerts (
    id   INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL
) STRICT;

CREATE TABLE schedules (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    concert_id        INTEGER NOT NULL REFERENCES concerts (id),
    concert_at_ms     INTEGER NOT NULL,
    reservation_at_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX schedules_by_concert ON schedules (concert_id, concert_at_ms);

CREATE TABLE seats (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    schedule_id INTEGER NOT NULL REFERENCES schedules (id),
    seat_number INTEGER NOT NULL,
    price       INTEGER NOT NULL CHECK (price >= 0),
    UNIQUE (schedule_id, seat_number)
) STRICT;

-- Reservation ids are allocated by the service (it decides before it writes), so no
-- AUTOINCREMENT here or on the other service-allocated ids below.
CREATE TABLE reservations (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users (id),
    schedule_id   INTEGER NOT NULL REFERENCES schedules (id),
    status        TEXT    NOT NULL CHECK (status IN ('PAYMENT_PENDING', 'PAID', 'EXPIRED', 'CANCELLED')),
    total_price   INTEGER NOT NULL CHECK (total_price >= 0),
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX reservations_by_schedule ON reservations (schedule_id);

-- One row per seat of a reservation: PENDING (held), POSTED (sold), VOIDED (cancelled) or
-- EXPIRED. At most one live (PENDING or POSTED) hold per seat, enforced by the database.
CREATE TABLE holds (
    reservation_id INTEGER NOT NULL REFERENCES reservations (id),
    seat_id        INTEGER NOT NULL REFERENCES seats (id),
    seat_order     INTEGER NOT NULL,
    state          TEXT    NOT NULL CHECK (state IN ('PENDING', 'POSTED', 'VOIDED', 'EXPIRED')),
    PRIMARY KEY (reservation_id, seat_id)
) STRICT;
CREATE UNIQUE INDEX holds_one_live_hold_per_seat ON holds (seat_id) WHERE state IN ('PENDING', 'POSTED');

-- At most one payment per reservation.
CREATE TABLE payments (
    id             INTEGER PRIMARY KEY,
    reservation_id INTEGER NOT NULL UNIQUE REFERENCES reservations (id),
    user_id        INTEGER NOT NULL REFERENCES users (id),
    amount         INTEGER NOT NULL CHECK (amount >= 0),
    created_at_ms  INTEGER NOT NULL
) STRICT;

-- Every change of a balance, with the balance after it.
CREATE TABLE ledger (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users (id),
    kind          TEXT    NOT NULL CHECK (kind IN ('RECHARGE', 'PAYMENT')),
    amount        INTEGER NOT NULL CHECK (amount > 0),
    balance_after INTEGER NOT NULL CHECK (balance_after >= 0),
    payment_id    INTEGER REFERENCES payments (id),
    created_at_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX ledger_by_user ON ledger (user_id, id DESC);

-- The waiting room. `position` is the join order (the API's queueId).
CREATE TABLE queue_tokens (
    id                   INTEGER PRIMARY KEY,
    user_id              INTEGER NOT NULL REFERENCES users (id),
    position             INTEGER NOT NULL UNIQUE,
    status               TEXT    NOT NULL CHECK (status IN ('WAITING', 'ACTIVE', 'EXPIRED')),
    created_at_ms        INTEGER NOT NULL,
    admitted_at_ms       INTEGER,
    active_expires_at_ms INTEGER,
    expired_at_ms        INTEGER
) STRICT;
CREATE UNIQUE INDEX queue_tokens_one_live_per_user ON queue_tokens (user_id) WHERE status IN ('WAITING', 'ACTIVE');
CREATE INDEX queue_tokens_latest_per_user ON queue_tokens (user_id, position DESC);
