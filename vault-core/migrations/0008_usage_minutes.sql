-- Inference requests per minute ('YYYY-MM-DDTHH:MM', UTC), written by the audit writer with
-- the hourly rollups and kept for two hours: the live view of /vault/system/inference
-- (requests per minute, tokens per second, latency and time to first token).
CREATE TABLE usage_minute (
    minute          TEXT PRIMARY KEY,
    requests        INTEGER NOT NULL,
    errors          INTEGER NOT NULL,
    tokens_input    INTEGER NOT NULL,
    tokens_output   INTEGER NOT NULL,
    latency_ms_sum  INTEGER NOT NULL
) WITHOUT ROWID;

-- Latencies (kind 0) and times to first token of streams (kind 1) in the quarter-octave
-- buckets of the hourly histogram.
CREATE TABLE latency_minute (
    minute    TEXT NOT NULL,
    kind      INTEGER NOT NULL,
    bucket    INTEGER NOT NULL,
    requests  INTEGER NOT NULL,
    PRIMARY KEY (minute, kind, bucket)
) WITHOUT ROWID;
