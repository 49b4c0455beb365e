-- Usage is kept per account: a user id, or `key:<id>` for a key that belongs to no user
-- (the same identity that owns conversations). Version 3 named the column `principal`
-- and filled it with a user id or a key prefix.
DROP INDEX usage_hourly_principal_hour;
ALTER TABLE usage_hourly_principal RENAME COLUMN principal TO account;
ALTER TABLE usage_hourly_principal RENAME TO usage_hourly_account;
CREATE INDEX usage_hourly_account_hour ON usage_hourly_account(hour, account);
ALTER TABLE latency_hourly_principal RENAME COLUMN principal TO account;
ALTER TABLE latency_hourly_principal RENAME TO latency_hourly_account;
