"""users' composition root: it consumes nothing and publishes user.registered."""

from eventshop.platform.runtime import ServiceDefinition
from eventshop.services import PORTS
from eventshop.services.users import api

definition = ServiceDefinition(
    name="users",
    port=PORTS["users"],
    handlers={},
    publishes=["user.registered"],
    migrations=["eventshop.services.users.migrations"],
    http=api.build_app,
)
