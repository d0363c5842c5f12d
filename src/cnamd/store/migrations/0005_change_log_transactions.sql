-- Each change-log row names the transaction that wrote it, so a follower can apply
-- a committed transaction whole (a lookup sees before or after it, never a mix).
-- cnamd_next_change_id's advisory lock is held to commit, so one transaction's
-- rows have contiguous ids. Rows written before this migration keep NULL: each
-- is then its own transaction, as it was applied before.
ALTER TABLE change_log ADD COLUMN xact xid8;
ALTER TABLE change_log ALTER COLUMN xact SET DEFAULT pg_current_xact_id();
