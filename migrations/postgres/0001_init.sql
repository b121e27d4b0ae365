-- boxoffice schema (PostgreSQL). Times are BIGINT milliseconds since the Unix epoch (UTC),
-- the same in both stores. The actors decide in memory; these constraints are the backstop
-- that makes a double sale or a negative balance impossible even if the code were wrong.

CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- One wallet per user; the balance is the running sum of the ledger.
CREATE TABLE wallets (
    user_id       BIGINT PRIMARY KEY REFERENCES users (id),
    balance       BIGINT NOT NULL CHECK (balance >= 0),
    updated_at_ms BIGINT NOT NULL
);

CREATE TABLE concerts (
    id   BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL
);

CREATE TABLE schedules (
    id                BIGSERIAL PRIMARY KEY,
    concert_id        BIGINT NOT NULL REFERENCES concerts (id),
    concert_at_ms     BIGINT NOT NULL,
    reservation_at_ms BIGINT NOT NULL
);
CREATE INDEX schedules_by_concert ON schedules (concert_id, concert_at_ms);

CREATE TABLE seats (
    id          BIGSERIAL PRIMARY KEY,
    schedule_id BIGINT  NOT NULL REFERENCES schedules (id),
    seat_number INTEGER NOT NULL,
    price       BIGINT  NOT NULL CHECK (price >= 0),
    UNIQUE (schedule_id, seat_number)
);

-- Reservation ids are allocated by the service (it decides before it writes).
CREATE TABLE reservations (
    id            BIGINT PRIMARY KEY,
    user_id       BIGINT NOT NULL REFERENCES users (id),
    schedule_id   BIGINT NOT NULL REFERENCES schedules (id),
    status        TEXT   NOT NULL CHECK (status IN ('PAYMENT_PENDING', 'PAID', 'EXPIRED', 'CANCELLED')),
    total_price   BIGINT NOT NULL CHECK (total_price >= 0),
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX reservations_by_schedule ON reservations (schedule_id);

-- One row per seat of a reservation: PENDING (held), POSTED (sold), VOIDED (cancelled) or
-- EXPIRED. At most one live (PENDING or POSTED) hold per seat, enforced by the database.
CREATE TABLE holds (
    reservation_id BIGINT  NOT NULL REFERENCES reservations (id),
    seat_id        BIGINT  NOT NULL REFERENCES seats (id),
    seat_order     INTEGER NOT NULL,
    state          TEXT    NOT NULL CHECK (state IN ('PENDING', 'POSTED', 'VOIDED', 'EXPIRED')),
    PRIMARY KEY (reservation_id, seat_id)
);
CREATE UNIQUE INDEX holds_one_live_hold_per_seat ON holds (seat_id) WHERE state IN ('PENDING', 'POSTED');

-- At most one payment per reservation.
CREATE TABLE payments (
    id             BIGINT PRIMARY KEY,
    reservation_id BIGINT NOT NULL UNIQUE REFERENCES reservations (id),
    user_id        BIGINT NOT NULL REFERENCES users (id),
    amount         BIGINT NOT NULL CHECK (amount >= 0),
    created_at_ms  BIGINT NOT NULL
);

-- Every change of a balance, with the balance after it.
CREATE TABLE ledger (
    id            BIGINT PRIMARY KEY,
    user_id       BIGINT NOT NULL REFERENCES users (id),
    kind          TEXT   NOT NULL CHECK (kind IN ('RECHARGE', 'PAYMENT')),
    amount        BIGINT NOT NULL CHECK (amount > 0),
    balance_after BIGINT NOT NULL CHECK (balance_after >= 0),
    payment_id    BIGINT REFERENCES payments (id),
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX ledger_by_user ON ledger (user_id, id DESC);

-- The waiting room. `position` is the join order (the API's queueId).
CREATE TABLE queue_tokens (
    id                   BIGINT PRIMARY KEY,
    user_id              BIGINT NOT NULL REFERENCES users (id),
    position             BIGINT NOT NULL UNIQUE,
    status               TEXT   NOT NULL CHECK (status IN ('WAITING', 'ACTIVE', 'EXPIRED')),
    created_at_ms        BIGINT NOT NULL,
    admitted_at_ms       BIGINT,
    active_expires_at_ms BIGINT,
    expired_at_ms        BIGINT
);
CREATE UNIQUE INDEX queue_tokens_one_live_per_user ON queue_tokens (user_id) WHERE status IN ('WAITING', 'ACTIVE');
CREATE INDEX queue_tokens_latest_per_user ON queue_tokens (user_id, position DESC);
