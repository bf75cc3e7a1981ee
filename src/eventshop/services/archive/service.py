"""archive's composition root: it consumes every event type, publishes nothing."""

from eventshop.platform.bus.consumer import BatchHandler
from eventshop.platform.runtime import ServiceDefinition
from eventshop.services import PORTS
from eventshop.services.archive import api, handlers

definition = ServiceDefinition(
    name="archive",
    port=PORTS["archive"],
    # "#": the queue is bound with the topic wildcard, and the consumer hands every type here;
    # a BatchHandler, so a window's consecutive events (all of them: one handler) are one INSERT
    handlers={"#": BatchHandler(handlers.archive_events)},
    publishes=[],
    migrations=["eventshop.services.archive.migrations"],
    http=api.build_app,
    # nothing waits on the archive: it lets each window fill for 100 ms, one INSERT for many
    linger_s=0.1,
)
