-- One row per notification ever sent. A notification is what it is about, (kind, ref), not the
-- event that asked for it: the unique key is what stops a second send of the same one.
CREATE TABLE IF NOT EXISTS notifications (
    notification_id uuid        PRIMARY KEY,
    kind            text        NOT NULL,
    ref             text        NOT NULL,          -- the user id (welcome) or the order id
    user_id         text,                          -- whose it is (GET /notifications)
    recipient       text        NOT NULL,
    subject         text        NOT NULL,
    sent_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, ref)
);
CREATE INDEX IF NOT EXISTS notifications_by_user ON notifications (user_id, sent_at DESC);
CREATE INDEX IF NOT EXISTS notifications_by_recipient ON notifications (lower(recipient), sent_at DESC);
