-- Stock per sku. Units move between the three buckets (on_hand -> reserved -> sold, and back
-- from reserved to on_hand on release); only a restock adds units. The CHECKs make the
-- conservation invariant a property of the table, not just of the code that writes it.
CREATE TABLE IF NOT EXISTS stock (
    sku             text        PRIMARY KEY,
    on_hand         bigint      NOT NULL DEFAULT 0,
    reserved        bigint      NOT NULL DEFAULT 0,
    sold            bigint      NOT NULL DEFAULT 0,
    restocked_total bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT stock_on_hand_not_negative  CHECK (on_hand >= 0),
    CONSTRAINT stock_reserved_not_negative CHECK (reserved >= 0),
    CONSTRAINT stock_sold_not_negative     CHECK (sold >= 0),
    CONSTRAINT stock_conserved             CHECK (on_hand + reserved + sold = restocked_total)
);

-- One row per order inventory has heard of, made by whichever of order.created and
-- order.cancelled comes first; `lines` are the lines reserved (or asked for).
CREATE TABLE IF NOT EXISTS reservations (
    order_id   text        PRIMARY KEY,
    status     text        NOT NULL CHECK (status IN
                   ('reserved', 'released', 'committed', 'rejected', 'cancelled_before_reserve')),
    lines      jsonb       NOT NULL DEFAULT '[]',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
