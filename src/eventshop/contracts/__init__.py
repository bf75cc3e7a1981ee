"""Event contracts: the only business code services share.

The envelope (docs/DESIGN.md §4.2), the registry of payload models by (event_type, schema_version)
and the upcasters that lift an old schema_version to the current one.
"""

from eventshop.contracts.envelope import Envelope, new_envelope
from eventshop.contracts.registry import (
    ContractError,
    EventPayload,
    MalformedEventError,
    Registry,
    SchemaVersionError,
    UnknownEventTypeError,
    registry,
)

__all__ = [
    "ContractError",
    "Envelope",
    "EventPayload",
    "MalformedEventError",
    "Registry",
    "SchemaVersionError",
    "UnknownEventTypeError",
    "new_envelope",
    "registry",
]

# Importing the package registers every producing service's events.
from eventshop.contracts import (  # noqa: F401
    catalog,
    inventory,
    loyalty,
    notifications,
    orders,
    payments,
    selfcheck,
    users,
)

#: the producing service of every event type (AsyncAPI, RabbitMQ topic permissions)
PRODUCERS: dict[str, str] = {
    **{t: "users" for t in ("user.registered",)},
    **{t: "catalog" for t in ("product.created", "product.updated")},
    **{
        t: "inventory"
        for t in (
            "inventory.reserved",
            "inventory.rejected",
            "inventory.released",
            "stock.adjusted",
        )
    },
    **{
        t: "orders"
        for t in ("order.created", "payment.requested", "order.confirmed", "order.cancelled")
    },
    **{t: "payments" for t in ("payment.succeeded", "payment.failed", "payment.refunded")},
    **{t: "notifications" for t in ("notification.sent",)},
    **{t: "loyalty" for t in ("loyalty.points_awarded",)},
}
