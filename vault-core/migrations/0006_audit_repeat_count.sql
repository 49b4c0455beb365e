-- A row may stand for several requests: a flood of unauthenticated requests from one peer
-- keeps its first rows per minute and one summary row counting the rest.
ALTER TABLE audit_log ADD COLUMN repeat_count INTEGER NOT NULL DEFAULT 1;
