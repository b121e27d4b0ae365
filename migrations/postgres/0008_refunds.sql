-- Refunds (issue 28, API.md §12): a paid reservation can become REFUNDED, and its money comes
-- back as a REFUND ledger row naming the payment refunded.
ALTER TABLE reservations DROP CONSTRAINT reservations_status_check;
ALTER TABLE reservations ADD CONSTRAINT reservations_status_check
    CHECK (status IN ('PAYMENT_PENDING', 'PAID', 'EXPIRED', 'CANCELLED', 'REFUNDED'));
ALTER TABLE ledger DROP CONSTRAINT ledger_kind_check;
ALTER TABLE ledger ADD CONSTRAINT ledger_kind_check
    CHECK (kind IN ('RECHARGE', 'PAYMENT', 'REFUND'));
