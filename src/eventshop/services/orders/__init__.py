"""orders: places orders and runs their saga (docs/DESIGN.md §3). Orders are event-sourced: each is
a stream of domain events in its own `events` table, with the `orders` table as read model.

consumes  product.created, product.updated           (its own price list: no call to catalog)
          inventory.reserved, inventory.rejected      (saga steps)
          payment.succeeded, payment.failed           (saga steps)
publishes order.created, payment.requested, order.confirmed, order.cancelled
HTTP      POST /orders (202 + id; Idempotency-Key), GET /orders, GET /orders/{id},
          GET /orders/{id}/history (the order's stream)
background the timeout scanner: running orders past their deadline are cancelled (timeout);
          the projections orders_by_user and sales_per_sku, fed from the event log (projections.py)
"""
