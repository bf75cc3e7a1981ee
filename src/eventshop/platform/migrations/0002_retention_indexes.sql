-- The retention job (platform/retention.py, ADR 0009) deletes the oldest rows a batch at a time;
-- these indexes let each batch find them without reading the whole table.
CREATE INDEX IF NOT EXISTS inbox_handled_at ON inbox (handled_at);
-- Only sent rows are ever deleted: an unsent row is never in this index.
CREATE INDEX IF NOT EXISTS outbox_sent_at ON outbox (sent_at) WHERE sent_at IS NOT NULL;
