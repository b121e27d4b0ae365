-- The hot path of a drop writes a reservation row and one hold row per seat for every
-- successful hold. Their four foreign keys cost a per-row trigger query each (a `FOR KEY SHARE`
-- lock on the referenced seat, user or schedule): measured on a batch of 1,200 reservations and
-- 3,600 holds, the triggers were 78 of 115 ms, and the whole batch went from 150 ms to 52 ms
-- without them (docs/BENCHMARKS.md).
--
-- What they guarded is guaranteed without them: users, schedules and seats are never deleted
-- or renumbered; a hold's seat comes from the schedule's own book; a hold row is written in
-- the same transaction as its reservation row. The constraints that stop a double sale stay:
-- `holds_one_live_hold_per_seat`, the primary keys, and the CHECKs.
ALTER TABLE holds DROP CONSTRAINT holds_reservation_id_fkey;
ALTER TABLE holds DROP CONSTRAINT holds_seat_id_fkey;
ALTER TABLE reservations DROP CONSTRAINT reservations_user_id_fkey;
ALTER TABLE reservations DROP CONSTRAINT reservations_schedule_id_fkey;
