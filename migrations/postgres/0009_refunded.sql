-- A cancelled performance refunds its paid reservations (issue 28, API.md §12): a reservation
-- may be REFUNDED, and the ledger records the REFUND that credits its buyer back (its
-- `payment_id` names the payment refunded).
ALTER TABLE reservations DROP CONSTRAINT reservations_status_check;
ALTER TABLE reservations ADD CONSTRAINT reservations_status_check
    CHECK (status IN ('PAYMENT_PENDING', 'PAID', 'EXPIRED', 'CANCELLED', 'REFUNDED'));
ALTER TABLE ledger DROP CONSTRAINT ledger_kind_check;
ALTER TABLE ledger ADD CONSTRAINT ledger_kind_check CHECK (kind IN ('RECHARGE', 'PAYMENT', 'REFUND'));
