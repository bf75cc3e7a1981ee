"""Who published a message, and whether that is who may publish its event type.

Every message the platform publishes carries the AMQP `user_id` property, and RabbitMQ refuses
a message whose `user_id` is not the user of the connection it came on: the property is proof
of the publisher. A consumer accepts an event only

- from its producer's broker user (`contracts.PRODUCERS`: each service connects as a user named
  after it), or
- from itself, when the message is on its own retry ladder (or replayed from its parking lot)
  and the producer it first came from (header `x-producer`, set when it left the queue) is the
  registered one; only the service and the operator may write to its direct exchange, or
- from the archive, replaying (app_id "archive"): the archive keeps every event and is trusted
  to re-deliver them (docs/SECURITY.md says what that trust costs).

Anything else is parked at once with the reason, never handled. With one shared broker user
(`broker_identity="shared"`: tests, each on a vhost of its own) the user every service runs as
is the expected one for every event type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from eventshop.contracts import PRODUCERS
from eventshop.platform.bus.received import AmqpMessage
from eventshop.platform.bus.wire import H_PRODUCER

#: app_id of the archive's replays (services/archive/adapters.py sets it)
REPLAY_APP_ID = "archive"
#: the broker user that replays
REPLAYER = "archive"

BrokerIdentity = Literal["per_service", "shared"]


class UnauthorisedProducerError(Exception):
    """The message came from a broker user that does not produce its event type."""


@dataclass(frozen=True)
class Provenance:
    #: the consuming service's own broker user
    own_user: str
    identity: BrokerIdentity = "per_service"
    producers: Mapping[str, str] = field(default_factory=lambda: PRODUCERS)

    def producer_user(self, event_type: str) -> str | None:
        """The broker user allowed to publish `event_type`; None when nobody is."""
        if self.identity == "shared":
            return self.own_user
        return self.producers.get(event_type)

    def refusal(self, message: AmqpMessage, event_type: str) -> str | None:
        """Why this message must not be handled, or None when its publisher is the right one."""
        expected = self.producer_user(event_type)
        user = message.user_id
        if expected is None:
            return f"{UnauthorisedProducerError.__name__}: no service produces {event_type!r}"
        if user == expected:
            return None
        if user == self.own_user and (message.headers or {}).get(H_PRODUCER) == expected:
            return None  # our own retry ladder, or replayed from our parking lot
        if user == REPLAYER and message.app_id == REPLAY_APP_ID:
            return None
        return (
            f"{UnauthorisedProducerError.__name__}: {event_type!r} is published by"
            f" {expected!r}, this one came from broker user {user!r}"
        )
