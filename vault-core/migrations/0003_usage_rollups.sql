-- Hourly rollups of inference requests (paths under /v1/), written by the audit writer in
-- the same transaction as the audit rows, so usage insights never scan the audit log.
-- Each table is shaped for one question, so no answer reads more than it needs.
-- Hours are 'YYYY-MM-DDTHH' (UTC); a principal is a user id, else a key prefix.

-- Everyone's requests per hour: series and totals.
CREATE TABLE usage_hourly (
    hour            TEXT PRIMARY KEY,
    requests        INTEGER NOT NULL,
    errors          INTEGER NOT NULL,
    tokens_input    INTEGER NOT NULL,
    tokens_output   INTEGER NOT NULL,
    latency_ms_sum  INTEGER NOT NULL
) WITHOUT ROWID;

-- Everyone's requests per hour and model.
CREATE TABLE usage_hourly_model (
    hour            TEXT NOT NULL,
    model           TEXT NOT NULL,
    requests        INTEGER NOT NULL,
    tokens_input    INTEGER NOT NULL,
    tokens_output   INTEGER NOT NULL,
    PRIMARY KEY (hour, model)
) WITHOUT ROWID;

-- One principal's requests per hour and model: what a user sees of themselves, and who
-- was active when.
CREATE TABLE usage_hourly_principal (
    principal       TEXT NOT NULL,
    hour            TEXT NOT NULL,
    model           TEXT NOT NULL,
    requests        INTEGER NOT NULL,
    errors          INTEGER NOT NULL,
    tokens_input    INTEGER NOT NULL,
    tokens_output   INTEGER NOT NULL,
    latency_ms_sum  INTEGER NOT NULL,
    PRIMARY KEY (principal, hour, model)
) WITHOUT ROWID;
CREATE INDEX usage_hourly_principal_hour ON usage_hourly_principal(hour, principal);

-- Request latencies in quarter-octave buckets (see vault-core/src/insights.rs).
CREATE TABLE latency_hourly (
    hour      TEXT NOT NULL,
    bucket    INTEGER NOT NULL,
    requests  INTEGER NOT NULL,
    PRIMARY KEY (hour, bucket)
) WITHOUT ROWID;

CREATE TABLE latency_hourly_principal (
    principal TEXT NOT NULL,
    hour      TEXT NOT NULL,
    bucket    INTEGER NOT NULL,
    requests  INTEGER NOT NULL,
    PRIMARY KEY (principal, hour, bucket)
) WITHOUT ROWID;
