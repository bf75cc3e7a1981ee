-- The projection `orders_by_user` (projections.py) is a table of that name; an index of the
-- `orders` read model had it first, and relations and indexes share one namespace.
ALTER INDEX IF EXISTS orders_by_user RENAME TO orders_user_recent;
