"""archive's composition root: it consumes every event type, publishes nothing.

No settings and no resources of its own: replays publish through the bus node's publisher.
"""

from eventshop.platform.service import EVERY_EVENT, Batch, ServiceContext, ServiceDefinition
from eventshop.services import PORTS
from eventshop.services.archive import api, handlers

Context = ServiceContext[None, None]

definition: ServiceDefinition[None, None] = ServiceDefinition(
    name="archive",
    port=PORTS["archive"],
    # EVERY_EVENT: the queue is bound with the topic wildcard, and the consumer hands every type
    # here; a Batch, so a window's consecutive events (all of them: one handler) are one INSERT
    handlers={EVERY_EVENT: Batch(handlers.archive_events)},
    publishes=[],
    migrations=["eventshop.services.archive.migrations"],
    router=api.router,
    # nothing waits on the archive: it lets each window fill for 100 ms, one INSERT for many
    linger_s=0.1,
    # its rows are unique by event id (ON CONFLICT DO NOTHING): an inbox row per event would
    # be a second row and a second INSERT for what that key already makes idempotent
    inbox=False,
)
