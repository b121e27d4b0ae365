-- A cancelled performance refunds its paid reservations (issue 28, API.md §12): a reservation
-- may be REFUNDED, and the ledger records the REFUND that credits its buyer back.
--
-- SQLite cannot alter a CHECK constraint, so both tables are made again. Migrations run in a
-- transaction, where foreign keys cannot be switched off, so they are deferred instead: dropping
-- `reservations` leaves its holds and payments pointing at nothing until the rows are back in
-- the new table of the same name, and the check at COMMIT finds every reference whole again.
PRAGMA defer_foreign_keys = ON;

CREATE TABLE reservations_before AS SELECT * FROM reservations;
DROP TABLE reservations;
CREATE TABLE reservations (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users (id),
    schedule_id   INTEGER NOT NULL REFERENCES schedules (id),
    status        TEXT    NOT NULL CHECK (status IN ('PAYMENT_PENDING', 'PAID', 'EXPIRED', 'CANCELLED', 'REFUNDED')),
    total_price   INTEGER NOT NULL CHECK (total_price >= 0),
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
) STRICT;
INSERT INTO reservations SELECT * FROM reservations_before;
DROP TABLE reservations_before;
CREATE INDEX reservations_by_schedule ON reservations (schedule_id);

CREATE TABLE ledger_before AS SELECT * FROM ledger;
DROP TABLE ledger;
CREATE TABLE ledger (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users (id),
    kind          TEXT    NOT NULL CHECK (kind IN ('RECHARGE', 'PAYMENT', 'REFUND')),
    amount        INTEGER NOT NULL CHECK (amount > 0),
    balance_after INTEGER NOT NULL CHECK (balance_after >= 0),
    payment_id    INTEGER REFERENCES payments (id),
    created_at_ms INTEGER NOT NULL
) STRICT;
INSERT INTO ledger SELECT * FROM ledger_before;
DROP TABLE ledger_before;
CREATE INDEX ledger_by_user ON ledger (user_id, id DESC);
