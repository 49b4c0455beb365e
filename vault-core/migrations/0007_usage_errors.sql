-- Failed inference requests per hour, status and error code (empty when the failure had
-- none, e.g. a stream cut short), for the audit stats' error breakdown. Filled from the
-- rows already logged, so stats over past hours are complete too.
CREATE TABLE usage_hourly_errors (
    hour        TEXT NOT NULL,
    status      INTEGER NOT NULL,
    error_code  TEXT NOT NULL,
    requests    INTEGER NOT NULL,
    PRIMARY KEY (hour, status, error_code)
) WITHOUT ROWID;

INSERT INTO usage_hourly_errors (hour, status, error_code, requests)
SELECT substr(timestamp, 1, 13), status, COALESCE(error_code, ''), SUM(repeat_count)
FROM audit_log
WHERE path LIKE '/v1/%' AND (status >= 400 OR completed = 0) AND length(timestamp) >= 13
GROUP BY 1, 2, 3;
