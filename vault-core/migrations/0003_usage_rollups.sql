-- Hourly rollups of inference requests (paths under /v1/), written by the audit writer in
-- the same transaction as the audit rows, so usage insights never scan the audit log.
CREATE TABLE usage_hourly (
    hour            TEXT NOT NULL,             -- 'YYYY-MM-DDTHH', UTC
    model           TEXT NOT NULL DEFAULT '',
    principal       TEXT NOT NULL DEFAULT '',  -- user id, else key prefix
    requests        INTEGER NOT NULL,
    errors          INTEGER NOT NULL,
    tokens_input    INTEGER NOT NULL,
    tokens_output   INTEGER NOT NULL,
    latency_ms_sum  INTEGER NOT NULL,
    PRIMARY KEY (hour, model, principal)
) WITHOUT ROWID;

-- Request latencies per hour in quarter-octave buckets (see vault-core/src/insights.rs).
CREATE TABLE latency_hourly (
    hour      TEXT NOT NULL,
    principal TEXT NOT NULL DEFAULT '',
    bucket    INTEGER NOT NULL,
    requests  INTEGER NOT NULL,
    PRIMARY KEY (hour, principal, bucket)
) WITHOUT ROWID;
