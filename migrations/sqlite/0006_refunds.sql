-- Refunds (issue 28, API.md §12): REFUNDED reservations and REFUND ledger rows.
--
-- SQLite cannot change a CHECK in place, and the documented rebuild (new table, copy, drop,
-- rename) needs foreign keys off, which cannot be switched inside the transaction sqlx runs
-- every SQLite migration in. Widening a CHECK changes nothing on disk, so this takes the other
-- documented path (https://sqlite.org/lang_altertable.html, "making other kinds of table schema
-- changes"): rewrite the two tables' CREATE text in the schema, then change the schema cookie
-- so every connection, this one included, reads the schema again. The cookie only has to
-- differ from the current one (connections compare it for equality); no migration before this
-- one reaches a million schema changes.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
   SET sql = replace(sql, '''CANCELLED'')', '''CANCELLED'', ''REFUNDED'')')
 WHERE type = 'table' AND name = 'reservations';
UPDATE sqlite_schema
   SET sql = replace(sql, '''PAYMENT'')', '''PAYMENT'', ''REFUND'')')
 WHERE type = 'table' AND name = 'ledger';
PRAGMA writable_schema = OFF;
PRAGMA schema_version = 1000006;
