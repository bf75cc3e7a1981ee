"""The AsyncAPI document of the platform, generated from the code that defines it.

Channels are routing keys of the `eventshop.events` exchange; each lists its producer (from
`contracts.PRODUCERS`), its consumers (the services whose definitions handle it) and the JSON
schema of its payload at every registered version, inside the envelope (docs/DESIGN.md). The
models payloads share are in `components.schemas`, so every `$ref` resolves in the document:
`tests/integration/test_asyncapi.py` has the official parser (@asyncapi/parser) check it.

`events_markdown()` writes docs/EVENTS.md from the same sources: each event, its producer, and
the service and handler that consume it (a test keeps the file current).
"""

from __future__ import annotations

from typing import Any

from eventshop.contracts import PRODUCERS, Envelope, registry
from eventshop.platform.runtime import load_definition
from eventshop.services import PORTS

#: where pydantic's schemas point for a model they share (a line of an order, say)
SCHEMA_REF = "#/components/schemas/{model}"


def handlers_by_event() -> dict[str, dict[str, str]]:
    """event type (or "#", every type) -> {consuming service: its handler's name}."""
    found: dict[str, dict[str, str]] = {}
    for service in PORTS:
        for event_type, handler in load_definition(service).consumes.items():
            name: str = getattr(getattr(handler, "handle", handler), "__name__", "?")
            found.setdefault(event_type, {})[service] = name
    return found


def consumers_by_event() -> dict[str, list[str]]:
    return {event_type: sorted(by) for event_type, by in handlers_by_event().items()}


def _schema(event_type: str, version: int, shared: dict[str, Any]) -> dict[str, Any]:
    """The payload's JSON schema; the models it shares with others go to `shared`, once."""
    schema = registry.model(event_type, version).model_json_schema(ref_template=SCHEMA_REF)
    for model, definition in schema.pop("$defs", {}).items():
        if shared.setdefault(model, definition) != definition:
            raise ValueError(f"two schemas named {model!r} differ ({event_type} v{version})")
    return schema


def build_asyncapi() -> dict[str, Any]:
    consumers = consumers_by_event()
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    envelope = Envelope.model_json_schema(ref_template=SCHEMA_REF)
    shared: dict[str, Any] = envelope.pop("$defs", {})
    for event_type in registry.event_types():
        producer = PRODUCERS.get(event_type)
        if producer is None:
            continue  # bus self-check events belong to no service
        latest = registry.latest_version(event_type)
        name = event_type.replace(".", "_")
        versions = {
            v: _schema(event_type, v, shared) for v in range(1, latest + 1) if _has(event_type, v)
        }
        messages[name] = {
            "name": event_type,
            "contentType": "application/json",
            "headers": {
                "type": "object",
                "properties": {
                    "schema_version": {"type": "integer", "const": latest},
                    "causation_id": {"type": "string"},
                    "traceparent": {"type": "string"},
                },
            },
            "payload": {
                **envelope,
                "properties": {**envelope["properties"], "payload": versions[latest]},
            },
            "x-schema-versions": versions,
            "x-producer": producer,
            "x-consumers": sorted(set(consumers.get(event_type, []) + consumers.get("#", []))),
        }
        channels[name] = {
            "address": event_type,
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {"name": "eventshop.events", "type": "topic", "durable": True},
                }
            },
        }
        operations[f"{producer}_publishes_{name}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{name}"},
            "x-service": producer,
        }
        for consumer in messages[name]["x-consumers"]:
            operations[f"{consumer}_receives_{name}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{name}"},
                "x-service": consumer,
            }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "eventshop events",
            "version": "1.0.0",
            "description": (
                "Every integration event of eventshop: who publishes it, who consumes it,"
                " its schema."
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": shared},
    }


def _has(event_type: str, version: int) -> bool:
    try:
        registry.model(event_type, version)
        return True
    except Exception:
        return False


def events_markdown() -> str:
    """docs/EVENTS.md: who publishes each event, and which handler of which service takes it."""
    handlers = handlers_by_event()
    every = handlers.get("#", {})
    lines = [
        "# Events",
        "",
        "Generated by `eventshop asyncapi --events-md` from the contracts",
        "(`src/eventshop/contracts`) and the services' definitions;",
        "`tests/unit/test_events_doc.py` fails when it is stale.",
        "",
        "| event | version | producer | consumed by (service: handler) |",
        "|---|---|---|---|",
    ]
    for event_type in sorted(PRODUCERS):
        consumers = {**handlers.get(event_type, {}), **every}
        taken = ", ".join(f"{s}: `{h}`" for s, h in sorted(consumers.items()))
        version = registry.latest_version(event_type)
        lines.append(f"| `{event_type}` | {version} | {PRODUCERS[event_type]} | {taken} |")
    return "\n".join(lines) + "\n"
