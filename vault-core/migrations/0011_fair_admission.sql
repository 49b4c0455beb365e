-- Fair admission to the inference engine: a user's (or a user-less key's) share of turns
-- while the engine is full (NULL: 1), and how long each request waited its turn (NULL: it
-- did not wait; part of the row's hash only when set).
ALTER TABLE rate_limits ADD COLUMN weight INTEGER;
ALTER TABLE audit_log ADD COLUMN queued_ms INTEGER;
