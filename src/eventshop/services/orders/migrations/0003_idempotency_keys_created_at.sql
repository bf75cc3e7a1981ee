-- The retention job (platform/retention.py, ADR 0009) deletes keys older than their window, a
-- batch at a time, oldest first.
CREATE INDEX IF NOT EXISTS idempotency_keys_created_at ON idempotency_keys (created_at);
