"""Events the users service publishes."""

from __future__ import annotations

from pydantic import Field

from eventshop.contracts.registry import EventPayload, registry


@registry.event("user.registered", version=1)
class UserRegistered(EventPayload):
    user_id: str
    email: str = Field(max_length=320)
    name: str = Field(max_length=200)
