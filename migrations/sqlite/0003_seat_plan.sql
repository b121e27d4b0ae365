-- Seat plans (issue 16): a seat may carry a grade ("VIP"), a row label ("B") and its place on
-- the plan (x, y). Labels only: holds and prices never read them. Every column is nullable so
-- the seats made before, and seats created without a plan, keep answering the seed's map.
-- The service checks the same bounds before it writes (src/domain/seat_plan.rs); these CHECKs
-- are the database's own guard. (SQLite adds no table constraint to an existing table, so
-- "x and y together" is the service's rule alone here.)
ALTER TABLE seats ADD COLUMN grade    TEXT    CHECK (length(grade) BETWEEN 1 AND 32);
ALTER TABLE seats ADD COLUMN seat_row TEXT    CHECK (length(seat_row) BETWEEN 1 AND 8);
ALTER TABLE seats ADD COLUMN plan_x   INTEGER CHECK (plan_x BETWEEN 0 AND 999);
ALTER TABLE seats ADD COLUMN plan_y   INTEGER CHECK (plan_y BETWEEN 0 AND 999);
