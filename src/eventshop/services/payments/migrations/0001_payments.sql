-- One row per order, ever (UNIQUE order_id): at most one payment can be captured for an order,
-- and the row is where payment.requested and order.cancelled meet, whichever comes first.
--
--   pending   -> charging  -> captured -> refunding -> refunded
--                          -> failed (declined, provider_error)
--   pending   -> voided    (cancelled before the worker took it)
--   failed    (fraud: decided when the request arrived, never charged)
--   voided    with requested_at NULL: a tombstone, the order was cancelled before it asked
--             to be paid; a later payment.requested finds the row and charges nothing
CREATE TABLE IF NOT EXISTS payments (
    payment_id       text        PRIMARY KEY,
    order_id         text        NOT NULL UNIQUE,
    user_id          text        NOT NULL,
    email            text        NOT NULL,
    amount_minor     bigint      CHECK (amount_minor >= 0),   -- NULL on a tombstone
    currency         text,
    payment_token    text,
    status           text        NOT NULL CHECK (status IN (
                         'pending', 'charging', 'captured', 'refunding', 'refunded', 'failed',
                         'voided')),
    failure_reason   text        CHECK (failure_reason IN ('declined', 'fraud', 'provider_error')),
    failure_detail   text,
    -- the order was cancelled: never charge it, refund it if it is (or gets) captured
    cancel_requested boolean     NOT NULL DEFAULT false,
    -- the worker's lease: who holds a charging/refunding row, since when
    claim_id         uuid,
    claimed_at       timestamptz,
    attempts         int         NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    charge_ref       text,
    refund_ref       text,
    -- the chain the worker's events belong to (it emits long after the handler committed)
    correlation_id   text,
    causation_id     text,        -- the payment.requested event
    traceparent      text,
    cancel_event_id  text,        -- the order.cancelled event, cause of a refund
    requested_at     timestamptz,
    captured_at      timestamptz,
    refunded_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS payments_by_user ON payments (user_id, requested_at DESC);
-- the worker's queue: only the rows with something left to do
CREATE INDEX IF NOT EXISTS payments_to_work ON payments (updated_at)
    WHERE status IN ('pending', 'charging', 'refunding')
       OR (status = 'captured' AND cancel_requested);
