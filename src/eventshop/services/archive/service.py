"""archive's composition root: it consumes every event type, publishes nothing."""

from eventshop.platform.runtime import ServiceDefinition
from eventshop.services import PORTS
from eventshop.services.archive import api, handlers

definition = ServiceDefinition(
    name="archive",
    port=PORTS["archive"],
    # "#": the queue is bound with the topic wildcard, and the consumer hands every type here
    handlers={"#": handlers.archive_event},
    publishes=[],
    migrations=["eventshop.services.archive.migrations"],
    http=api.build_app,
)
