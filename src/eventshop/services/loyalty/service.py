"""loyalty's composition root: what it consumes, what it publishes, how it is built."""

from eventshop.platform.runtime import ServiceDefinition
from eventshop.services import PORTS
from eventshop.services.loyalty import api, handlers

definition = ServiceDefinition(
    name="loyalty",
    port=PORTS["loyalty"],
    handlers={"order.confirmed": handlers.award_points},
    publishes=["loyalty.points_awarded"],
    migrations=["eventshop.services.loyalty.migrations"],
    http=api.build_app,
    # points a moment later cost nobody anything: windows of many events, fewer transactions
    linger_s=0.05,
)
