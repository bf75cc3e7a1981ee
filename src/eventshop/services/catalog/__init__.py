"""catalog: the products on sale (sku, name, price in minor units, currency, active).

consumes  nothing
publishes product.created, product.updated (each with the product's version, so a consumer
          that keeps a copy, like orders' price list, can ignore an update older than its copy)
HTTP      GET /products (public, paginated, active only unless ?include_inactive=true)
          GET /products/{sku} (public; X-Cache: hit|miss)
          POST /products (admin; 409 if the sku exists)
          PUT /products/{sku} (admin; full update; 404 if missing)

Reads are cache-aside in Redis (adapters.py explains why the cache never serves a product older
than its last committed update).
"""
