"""Event contracts: the envelope, the registry, upcasting and the errors a consumer parks on."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aio_pika
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from eventshop.contracts import (
    ContractError,
    Envelope,
    EventPayload,
    MalformedEventError,
    Registry,
    SchemaVersionError,
    UnknownEventTypeError,
    new_envelope,
    registry,
)
from eventshop.contracts.selfcheck import Pinged, PingedV1, Ponged, pinged_v1_to_v2
from eventshop.platform.bus.wire import encode_body, message_from_envelope

PINGED = "selfcheck.pinged"


def body(raw: Any) -> bytes:
    return orjson.dumps(raw)


def envelope_dict(**overrides: Any) -> dict[str, Any]:
    env = new_envelope(PINGED, 2, "agg-1", {"seq": 1, "note": ""})
    return {**env.model_dump(mode="json"), **overrides}


# -- the envelope ---------------------------------------------------------------------------------


def test_envelope_is_frozen() -> None:
    env = new_envelope(PINGED, 2, "agg-1", {"seq": 1})
    with pytest.raises(ValidationError):
        env.event_type = "selfcheck.ponged"
    with pytest.raises(ValidationError):
        env.payload = {}
    assert env.event_type == PINGED and env.payload == {"seq": 1}  # unchanged
    # copies are the way to a changed envelope; the original stays as it was
    lifted = env.model_copy(update={"schema_version": 3})
    assert (lifted.schema_version, env.schema_version) == (3, 2)


def test_envelope_refuses_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Envelope.model_validate(envelope_dict(surprise=1))


@pytest.mark.parametrize(
    "overrides",
    [
        {"event_type": "NoDots"},
        {"event_type": "Upper.Case"},
        {"event_type": ""},
        {"schema_version": 0},
        {"aggregate_id": ""},
        {"correlation_id": ""},
        {"event_id": "not-a-uuid"},
        {"occurred_at": "yesterday"},
        {"payload": [1, 2]},
    ],
    ids=lambda o: next(iter(o)),
)
def test_envelope_validates_its_fields(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Envelope.model_validate(envelope_dict(**overrides))


def test_new_envelope_defaults() -> None:
    before = datetime.now(UTC)
    env = new_envelope(PINGED, 2, "agg-1", {"seq": 1})
    assert isinstance(env.event_id, uuid.UUID)
    assert env.correlation_id == str(env.event_id)  # a chain's first event starts it
    assert env.causation_id is None and env.traceparent is None
    assert before <= env.occurred_at <= datetime.now(UTC)
    assert env.occurred_at.utcoffset() == timedelta(0)


def test_event_ids_are_uuid7_in_the_order_they_were_made() -> None:
    """Time-ordered ids: each index on them grows at one end (ADR 0020's addendum)."""
    before = datetime.now(UTC)
    ids = [new_envelope(PINGED, 2, "agg-1", {"seq": i}).event_id for i in range(2_000)]
    assert {i.version for i in ids} == {7}
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    made_ms = ids[0].int >> 80  # the first 48 bits: milliseconds since the epoch
    assert before.timestamp() * 1000 - 1 <= made_ms <= datetime.now(UTC).timestamp() * 1000


def test_payload_models_are_frozen_and_strict() -> None:
    p = Pinged(seq=1)
    with pytest.raises(ValidationError):
        p.seq = 2
    with pytest.raises(ValidationError):
        Pinged(seq=1, unexpected=True)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Pinged(seq=-1)


# -- the registry ---------------------------------------------------------------------------------


def test_the_process_registry_knows_the_selfcheck_events() -> None:
    assert {PINGED, "selfcheck.ponged"} <= set(registry.event_types())
    assert registry.latest_version(PINGED) == 2
    assert registry.latest_version("selfcheck.ponged") == 1
    assert registry.model(PINGED) is Pinged
    assert registry.model(PINGED, 2) is Pinged
    assert registry.model(PINGED, 1) is PingedV1
    assert registry.model("selfcheck.ponged") is Ponged
    assert (Pinged.event_type, Pinged.schema_version) == (PINGED, 2)
    assert (PingedV1.event_type, PingedV1.schema_version) == (PINGED, 1)
    assert registry.knows(PINGED) and not registry.knows("nobody.knows")


def test_lookups_of_what_is_not_registered_are_contract_errors() -> None:
    with pytest.raises(UnknownEventTypeError):
        registry.latest_version("nobody.knows")
    with pytest.raises(UnknownEventTypeError):
        registry.model("nobody.knows")
    with pytest.raises(SchemaVersionError):
        registry.model(PINGED, 3)


def test_model_of_an_unknown_type_at_a_version_is_an_unknown_type() -> None:
    with pytest.raises(UnknownEventTypeError):
        registry.model("nobody.knows", 1)


def test_a_registry_of_its_own() -> None:
    reg = Registry()

    @reg.event("shop.thing_done", version=1)
    class ThingDoneV1(EventPayload):
        n: int

    @reg.event("shop.thing_done", version=3)
    class ThingDone(EventPayload):
        n: int
        doubled: int

    assert reg.event_types() == ["shop.thing_done"]
    assert reg.latest_version("shop.thing_done") == 3
    assert reg.event("shop.thing_done", version=1)(ThingDoneV1) is ThingDoneV1  # same: fine

    class Impostor(EventPayload):
        n: int

    with pytest.raises(ValueError, match="registered twice"):
        reg.event("shop.thing_done", version=1)(Impostor)

    # v1 -> v3 needs every step: without the 2 -> 3 upcaster it is a version error
    @reg.upcaster("shop.thing_done", from_version=1)
    def v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
        return {"n": payload["n"]}

    old = new_envelope("shop.thing_done", 1, "a", {"n": 2})
    with pytest.raises(SchemaVersionError, match="no upcaster to 3"):
        reg.validate(old)

    @reg.upcaster("shop.thing_done", from_version=2)
    def v2_to_v3(payload: dict[str, Any]) -> dict[str, Any]:
        return {"n": payload["n"], "doubled": 2 * payload["n"]}

    env, typed = reg.validate(old)
    assert typed == ThingDone(n=2, doubled=4)
    assert env.schema_version == 3 and env.payload == {"n": 2, "doubled": 4}
    assert env.event_id == old.event_id  # the same event, lifted
    # the registries are separate
    assert not registry.knows("shop.thing_done")


# -- upcasting selfcheck.pinged v1 -> v2 ----------------------------------------------------------


def test_a_v1_ping_is_decoded_upcast_to_v2() -> None:
    old = new_envelope(PINGED, 1, "agg-1", {"number": 7}, causation_id="c", traceparent="t")
    env, payload = registry.decode(encode_body(old))
    assert isinstance(payload, Pinged)
    assert payload == Pinged(seq=7, note="upcast from v1")
    assert env.schema_version == 2
    assert env.payload == {"seq": 7, "note": "upcast from v1"}
    # everything but the version and the payload is the event as it was sent
    keep = set(Envelope.model_fields) - {"schema_version", "payload"}
    assert env.model_dump(include=keep) == old.model_dump(include=keep)
    assert pinged_v1_to_v2({"number": 3}) == {"seq": 3, "note": "upcast from v1"}


def test_a_v2_ping_is_decoded_as_is() -> None:
    sent = new_envelope(PINGED, 2, "agg-1", {"seq": 7, "note": "hi"})
    env, payload = registry.decode(encode_body(sent))
    assert env == sent
    assert payload == Pinged(seq=7, note="hi")


@given(number=st.integers(min_value=0, max_value=2**62))
def test_upcasting_keeps_the_number_as_seq(number: int) -> None:
    env, payload = registry.decode(encode_body(new_envelope(PINGED, 1, "a", {"number": number})))
    assert payload.seq == number  # type: ignore[attr-defined]
    assert env.schema_version == 2


# -- what a consumer parks: the right ContractError -----------------------------------------------


@pytest.mark.parametrize(
    ("raw", "error", "text"),
    [
        (b"{not json", MalformedEventError, "not JSON"),
        (b"", MalformedEventError, "not JSON"),
        (b"\xff\xfe", MalformedEventError, "not JSON"),
        (body([1, 2, 3]), MalformedEventError, "not a JSON object"),
        (body("a string"), MalformedEventError, "not a JSON object"),
        (body({"event_type": PINGED}), MalformedEventError, "envelope fails its contract"),
        (body(envelope_dict(schema_version=0)), MalformedEventError, "schema_version"),
        (body(envelope_dict(payload={"seq": -1})), MalformedEventError, "payload fails"),
        (body(envelope_dict(payload={"seq": 1, "x": 1})), MalformedEventError, "payload fails"),
        (body(envelope_dict(payload={})), MalformedEventError, "seq"),
        (
            body(envelope_dict(schema_version=1, payload={"number": -5})),
            MalformedEventError,
            "v2 payload fails",
        ),
        (body(envelope_dict(event_type="nobody.knows")), UnknownEventTypeError, "nobody.knows"),
        (body(envelope_dict(schema_version=99)), SchemaVersionError, "99"),
        (body(envelope_dict(schema_version=3)), SchemaVersionError, "latest is 2"),
    ],
    ids=[
        "not-json",
        "empty",
        "not-utf8",
        "json-list",
        "json-string",
        "not-an-envelope",
        "version-0",
        "payload-negative",
        "payload-extra-field",
        "payload-missing-field",
        "v1-payload-bad-after-upcast",
        "unknown-type",
        "version-99",
        "version-3",
    ],
)
def test_undecodable_bodies_raise_the_right_contract_error(
    raw: bytes, error: type[ContractError], text: str
) -> None:
    with pytest.raises(error, match=text) as caught:
        registry.decode(raw)
    assert isinstance(caught.value, ContractError)


def test_the_contract_errors_are_one_family() -> None:
    for cls in (MalformedEventError, UnknownEventTypeError, SchemaVersionError):
        assert issubclass(cls, ContractError)
    assert len({MalformedEventError, UnknownEventTypeError, SchemaVersionError}) == 3


def test_a_payload_the_upcaster_cannot_lift_is_malformed() -> None:
    with pytest.raises(MalformedEventError):
        registry.decode(body(envelope_dict(schema_version=1, payload={})))


# -- round trips ----------------------------------------------------------------------------------

_text = st.text(min_size=1, max_size=50)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_when = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
    ),
)


@given(
    seq=st.integers(min_value=0, max_value=2**63 - 1),
    note=st.text(max_size=100),
    aggregate_id=_text,
    correlation_id=st.none() | _text,
    causation_id=st.none() | _text,
    traceparent=st.none() | _text,
    occurred_at=_when,
)
def test_a_ping_survives_encode_then_decode(
    seq: int,
    note: str,
    aggregate_id: str,
    correlation_id: str | None,
    causation_id: str | None,
    traceparent: str | None,
    occurred_at: datetime,
) -> None:
    sent = new_envelope(
        PINGED,
        2,
        aggregate_id,
        Pinged(seq=seq, note=note).model_dump(mode="json"),
        correlation_id=correlation_id,
        causation_id=causation_id,
        traceparent=traceparent,
        occurred_at=occurred_at,
    )
    env, payload = registry.decode(encode_body(sent))
    assert env == sent
    assert env.occurred_at == occurred_at and env.occurred_at.utcoffset() is not None
    assert payload == Pinged(seq=seq, note=note)


@given(payload=st.dictionaries(st.text(max_size=10), _json, max_size=5), occurred_at=_when)
def test_any_envelope_survives_its_json(payload: dict[str, Any], occurred_at: datetime) -> None:
    sent = new_envelope("any.thing", 1, "a", payload, occurred_at=occurred_at)
    assert Envelope.model_validate_json(encode_body(sent)) == sent


# -- the envelope on the wire (no broker: the message as built) -----------------------------------


def test_message_properties_repeat_the_envelope() -> None:
    env = new_envelope(
        PINGED,
        2,
        "agg-1",
        {"seq": 1},
        correlation_id="corr",
        causation_id="cause",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    msg = message_from_envelope(env, app_id="orders")
    assert msg.body == encode_body(env)
    assert msg.message_id == str(env.event_id)
    assert msg.type == PINGED
    assert msg.correlation_id == "corr"
    assert msg.timestamp == env.occurred_at
    assert msg.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert msg.content_type == "application/json"
    assert msg.app_id == "orders"
    assert msg.headers == {
        "schema_version": 2,
        "causation_id": "cause",
        "traceparent": env.traceparent,
    }
    bare = message_from_envelope(new_envelope(PINGED, 2, "agg-1", {"seq": 1}))
    assert bare.headers == {"schema_version": 2}
