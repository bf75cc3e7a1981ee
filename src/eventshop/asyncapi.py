"""The AsyncAPI document of the platform, generated from the code that defines it.

Channels are routing keys of the `eventshop.events` exchange; each lists its producer (from
`contracts.PRODUCERS`), its consumers (the services whose definitions handle it) and the JSON
schema of its payload at every registered version, inside the envelope of DESIGN §4.
"""

from __future__ import annotations

from typing import Any

from eventshop.contracts import PRODUCERS, Envelope, registry
from eventshop.platform.runtime import load_definition
from eventshop.services import PORTS


def consumers_by_event() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for service in PORTS:
        definition = load_definition(service)
        for key in definition.handlers:
            found.setdefault(key, []).append(service)
    return found


def build_asyncapi() -> dict[str, Any]:
    consumers = consumers_by_event()
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    envelope = Envelope.model_json_schema()
    for event_type in registry.event_types():
        producer = PRODUCERS.get(event_type)
        if producer is None:
            continue  # bus self-check events belong to no service
        latest = registry.latest_version(event_type)
        name = event_type.replace(".", "_")
        versions = {
            v: registry.model(event_type, v).model_json_schema()
            for v in range(1, latest + 1)
            if _has(event_type, v)
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
        "components": {"messages": messages},
    }


def _has(event_type: str, version: int) -> bool:
    try:
        registry.model(event_type, version)
        return True
    except Exception:
        return False
