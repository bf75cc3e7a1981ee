"""inventory: stock per sku and a reservation per order.

consumes  product.created  (a stock row at 0 for the new sku)
          order.created    (reserve every line or none)
          order.cancelled  (release a reservation; or leave a tombstone if order.created is late)
          order.confirmed  (reserved units become sold)
publishes inventory.reserved, inventory.rejected (out_of_stock | unknown_sku),
          inventory.released, stock.adjusted (on restock)
HTTP      GET /stock, GET /stock/{sku} (authenticated), POST /stock/{sku}/restock (admin)

Invariant, per sku, checked by the table itself: on_hand + reserved + sold = restocked_total,
none of them negative. Concurrent reservations lock the stock rows they touch in sku order,
so two orders over the same skus queue up instead of deadlocking.
"""
