"""catalog's table: products (sku, details, version)."""

from __future__ import annotations

import asyncpg

from eventshop.services.catalog.domain import PageRequest, Product, ProductDetails

_COLUMNS = "sku, name, price_minor, currency, active, version, updated_at"


def _product(row: asyncpg.Record) -> Product:
    return Product(
        sku=row["sku"],
        name=row["name"],
        price_minor=int(row["price_minor"]),
        currency=row["currency"],
        active=row["active"],
        version=row["version"],
        updated_at=row["updated_at"],
    )


async def add_product(
    conn: asyncpg.Connection, sku: str, details: ProductDetails
) -> Product | None:
    """Insert a new product at version 1; None if the sku is already taken."""
    row = await conn.fetchrow(
        "INSERT INTO products (sku, name, price_minor, currency, active)"
        " VALUES ($1, $2, $3, $4, $5)"
        f" ON CONFLICT (sku) DO NOTHING RETURNING {_COLUMNS}",
        sku,
        details.name,
        details.price_minor,
        details.currency,
        details.active,
    )
    return _product(row) if row is not None else None


async def product_for_update(conn: asyncpg.Connection, sku: str) -> Product | None:
    """The product, locked until the transaction ends so concurrent revisions queue up."""
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM products WHERE sku = $1 FOR UPDATE", sku)
    return _product(row) if row is not None else None


async def save_revision(conn: asyncpg.Connection, product: Product) -> None:
    await conn.execute(
        "UPDATE products SET name = $2, price_minor = $3, currency = $4, active = $5,"
        " version = $6, updated_at = $7 WHERE sku = $1",
        product.sku,
        product.name,
        product.price_minor,
        product.currency,
        product.active,
        product.version,
        product.updated_at,
    )


async def find_product(conn: asyncpg.Connection, sku: str) -> Product | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM products WHERE sku = $1", sku)
    return _product(row) if row is not None else None


async def list_products(conn: asyncpg.Connection, page: PageRequest) -> tuple[list[Product], int]:
    """One page of products in sku order, and how many there are in all."""
    where = "" if page.include_inactive else "WHERE active"
    # one statement, so the page and the total come from the same snapshot
    rows = await conn.fetch(
        f"SELECT {_COLUMNS}, count(*) OVER () AS total FROM products {where}"
        " ORDER BY sku LIMIT $1 OFFSET $2",
        page.limit,
        page.offset,
    )
    if rows:
        return [_product(r) for r in rows], int(rows[0]["total"])
    # an offset past the end returns no rows, and so no window total: count on its own
    total = await conn.fetchval(f"SELECT count(*) FROM products {where}")
    return [], int(total)
