-- What kind of failure an attempt's error is (src/queue/mod.rs, FailureKind:
-- 'dns', 'tls', 'refused_address', ...), so explaining a failure never reads
-- the error's words. NULL for a success and for attempts logged before this
-- column. No CHECK on the names: a newer build may add kinds, and an older
-- one reading them shows the name as stored.
ALTER TABLE webhook_delivery_attempts ADD COLUMN error_kind text;
