"""Upcasters: an event stored with an old schema version is read as the current one.

Events are immutable once stored: a change to an event's schema is never a migration of old
rows. The new shape gets the next schema version, and an upcaster per step turns a payload of
version n into one of version n+1 on the read path (`upcast_v1_v2` in pyeventsourcing's words):

    UPCASTERS = Upcasters()

    @UPCASTERS.register("PaymentSucceeded", 1)
    def _add_currency(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "currency": None}

Steps chain (v1 -> v2 -> v3), so each change is written once, against the version before it.
These are the *domain* events of an event-sourced service, not the integration events of
eventshop.contracts (which have upcasters of their own on the bus).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]


class UpcastError(Exception):
    """A stored event can't be brought to the current version (an upcaster is missing or broke)."""


class Upcasters:
    """The upcasters of one store's event types, step by step."""

    def __init__(self) -> None:
        self._steps: dict[tuple[str, int], Upcaster] = {}
        self._current: dict[str, int] = {}

    def register(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorate the function that turns `from_version` of `event_type` into the next."""
        if from_version < 1:
            raise ValueError("schema versions start at 1")

        def add(step: Upcaster) -> Upcaster:
            key = (event_type, from_version)
            if key in self._steps:
                raise ValueError(f"{event_type} v{from_version} already has an upcaster")
            self._steps[key] = step
            self._current[event_type] = max(self._current.get(event_type, 1), from_version + 1)
            return step

        return add

    def current(self, event_type: str) -> int:
        """The version every stored `event_type` is read as (1 if it never changed)."""
        return self._current.get(event_type, 1)

    def upcast(self, event_type: str, schema_version: int, payload: Payload) -> tuple[int, Payload]:
        """(current version, payload as of it); a current or unknown-newer event is untouched."""
        target = self._current.get(event_type)
        if target is None or schema_version >= target:
            return schema_version, payload
        version = schema_version
        while version < target:
            step = self._steps.get((event_type, version))
            if step is None:
                raise UpcastError(f"no upcaster for {event_type} v{version} -> v{version + 1}")
            try:
                payload = step(dict(payload))
            except Exception as exc:
                raise UpcastError(
                    f"upcasting {event_type} v{version} -> v{version + 1} failed: {exc!r}"
                ) from exc
            version += 1
        return version, payload


#: the registry of a store that has no old versions to read
NO_UPCASTERS = Upcasters()
