"""loyalty's composition root: what it consumes, what it publishes, how it is built.

It has no settings and no resources of its own: its context is the platform's pool and bus.
"""

from eventshop.contracts.loyalty import PointsAwarded
from eventshop.contracts.orders import OrderConfirmed
from eventshop.platform.service import Batch, ServiceContext, ServiceDefinition
from eventshop.services import PORTS
from eventshop.services.loyalty import api, handlers

Context = ServiceContext[None, None]

definition: ServiceDefinition[None, None] = ServiceDefinition(
    name="loyalty",
    port=PORTS["loyalty"],
    handlers={OrderConfirmed: Batch(handlers.award_points)},
    publishes=[PointsAwarded],
    migrations=["eventshop.services.loyalty.migrations"],
    router=api.router,
    # points a moment later cost nobody anything: windows of many events, fewer transactions
    linger_s=0.05,
    # replicas credit the same users' balances: lock a window's first, in user order
    lock_first=handlers.lock_window,
)
