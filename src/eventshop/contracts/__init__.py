"""Event contracts: the only business code services share.

The envelope (DESIGN §4), the registry of payload models keyed by (event_type, schema_version)
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
from eventshop.contracts import selfcheck as _selfcheck  # noqa: E402,F401
