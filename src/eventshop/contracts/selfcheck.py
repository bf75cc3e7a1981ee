"""Events of the bus self-check (`eventshop selfcheck`): a ping and its pong.

`selfcheck.pinged` is at schema_version 2; version 1 called `seq` `number`, and the upcaster
below lifts a v1 event received from an old producer to v2.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from eventshop.contracts.registry import EventPayload, registry


@registry.event("selfcheck.pinged", version=1)
class PingedV1(EventPayload):
    number: int = Field(ge=0)


@registry.event("selfcheck.pinged", version=2)
class Pinged(EventPayload):
    seq: int = Field(ge=0)
    note: str = ""


@registry.upcaster("selfcheck.pinged", from_version=1)
def pinged_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    return {"seq": payload["number"], "note": "upcast from v1"}


@registry.event("selfcheck.ponged", version=1)
class Ponged(EventPayload):
    seq: int = Field(ge=0)
