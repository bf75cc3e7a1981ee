"""Registry of event payload models, keyed by (event_type, schema_version), with upcasters.

A producing service declares its events as frozen pydantic models:

    @registry.event("order.created", version=2)
    class OrderCreated(EventPayload): ...

    @registry.upcaster("order.created", from_version=1)
    def order_created_v1_to_v2(payload: dict) -> dict: ...

A consumer decodes what it receives with `registry.decode(...)`: an older schema_version is
upcast step by step to the newest one; an unknown type or version is a `ContractError`, which
the bus parks at once (it would fail the same way on every retry).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from eventshop.contracts.envelope import Envelope


class ContractError(Exception):
    """An event that no retry can fix: park it."""


class MalformedEventError(ContractError):
    """The body is not JSON, not an envelope, or its payload fails its model."""


class UnknownEventTypeError(ContractError):
    """No model is registered for this event_type."""


class SchemaVersionError(ContractError):
    """The event_type is known but this schema_version is not (and cannot be upcast)."""


class EventPayload(BaseModel):
    """Base of every payload model: frozen, strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    schema_version: ClassVar[int]


P = TypeVar("P", bound=type[EventPayload])
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class Registry:
    def __init__(self) -> None:
        self._models: dict[tuple[str, int], type[EventPayload]] = {}
        self._latest: dict[str, int] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    # -- declaring -----------------------------------------------------------------------------
    def event(self, event_type: str, version: int = 1) -> Callable[[P], P]:
        def register(model: P) -> P:
            key = (event_type, version)
            if key in self._models and self._models[key] is not model:
                raise ValueError(f"{event_type} v{version} is registered twice")
            model.event_type = event_type
            model.schema_version = version
            self._models[key] = model
            self._latest[event_type] = max(version, self._latest.get(event_type, 0))
            return model

        return register

    def upcaster(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        def register(fn: Upcaster) -> Upcaster:
            self._upcasters[(event_type, from_version)] = fn
            return fn

        return register

    # -- looking up ----------------------------------------------------------------------------
    def event_types(self) -> list[str]:
        return sorted(self._latest)

    def latest_version(self, event_type: str) -> int:
        try:
            return self._latest[event_type]
        except KeyError:
            raise UnknownEventTypeError(f"unknown event type {event_type!r}") from None

    def model(self, event_type: str, version: int | None = None) -> type[EventPayload]:
        latest = self.latest_version(event_type)  # an unknown type is UnknownEventTypeError
        v = latest if version is None else version
        try:
            return self._models[(event_type, v)]
        except KeyError:
            raise SchemaVersionError(f"{event_type} has no schema_version {v}") from None

    def knows(self, event_type: str) -> bool:
        return event_type in self._latest

    # -- decoding ------------------------------------------------------------------------------
    def upcast(
        self, event_type: str, version: int, payload: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        """Lift `payload` from `version` to the latest version of `event_type`."""
        latest = self.latest_version(event_type)
        if version > latest or version < 1:
            raise SchemaVersionError(
                f"{event_type} schema_version {version} is not known (latest is {latest})"
            )
        while version < latest:
            step = self._upcasters.get((event_type, version))
            if step is None:
                raise SchemaVersionError(
                    f"{event_type} schema_version {version} has no upcaster to {version + 1}"
                )
            try:
                payload = step(payload)
            except Exception as exc:  # an old payload its upcaster cannot lift breaks its contract
                raise MalformedEventError(
                    f"{event_type} v{version} payload cannot be upcast: {exc!r}"
                ) from None
            version += 1
        return version, payload

    def decode(self, body: bytes) -> tuple[Envelope, EventPayload]:
        """Parse a message body into its envelope (upcast to the latest version) and payload."""
        try:
            raw = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise MalformedEventError(f"body is not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise MalformedEventError("body is not a JSON object")
        try:
            # the model's own validator: `model_validate` wraps it in a Python call that passes
            # its keyword defaults on (0.3 us of the envelope's 2.3, as much of a payload's 1.1)
            envelope = _check_envelope(raw)
        except ValidationError as exc:
            raise MalformedEventError(f"envelope fails its contract: {_errors(exc)}") from None
        return self.validate(envelope)

    def validate(self, envelope: Envelope) -> tuple[Envelope, EventPayload]:
        if not self.knows(envelope.event_type):
            raise UnknownEventTypeError(f"unknown event type {envelope.event_type!r}")
        version, payload = self.upcast(
            envelope.event_type, envelope.schema_version, envelope.payload
        )
        model = self._models[(envelope.event_type, version)]
        try:
            typed = model.__pydantic_validator__.validate_python(payload)
        except ValidationError as exc:
            raise MalformedEventError(
                f"{envelope.event_type} v{version} payload fails its contract: {_errors(exc)}"
            ) from None
        if version != envelope.schema_version:
            envelope = envelope.model_copy(update={"schema_version": version, "payload": payload})
        return envelope, typed


_check_envelope = Envelope.__pydantic_validator__.validate_python


def _errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()[:5]
    )


#: The process-wide registry; each producing service's contracts module registers into it.
registry = Registry()
