"""The relay's content header written straight from a row (`wire.RowHeader.encoded`) against the
bus's codec writing `RowHeader.properties`: the same bytes, or none where the codec
would not write them itself (ADR 0020's addendum)."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp.header import ContentHeader

from eventshop.platform.bus import codec
from eventshop.platform.bus.wire import RowHeader

#: text as rows hold it: mostly short, sometimes past a shortstr's 255 bytes once encoded
text = st.one_of(
    st.text(min_size=1, max_size=60),
    st.text(alphabet="é€𝄞x", min_size=60, max_size=120),
)
optional = st.one_of(st.none(), st.just(""), text)
when = st.datetimes(
    min_value=datetime.datetime(1960, 1, 1), max_value=datetime.datetime(2200, 1, 1)
).flatmap(
    lambda d: st.sampled_from(
        [
            d,
            d.replace(tzinfo=datetime.UTC),
            d.replace(tzinfo=datetime.timezone(datetime.timedelta(hours=5))),
        ]
    )
)
rows = st.fixed_dictionaries(
    {
        "event_id": st.one_of(st.uuids().map(str), text),
        "event_type": text,
        "schema_version": st.one_of(
            st.integers(min_value=1, max_value=300),
            st.integers(min_value=-(2**70), max_value=2**70),
        ),
        "occurred_at": when,
        "correlation_id": st.one_of(text, st.just("")),
        "causation_id": optional,
        "traceparent": optional,
        "app_id": optional,
    }
)


def _generic(row: dict[str, Any], body_size: int, user_id: str | None) -> bytes | None:
    """The codec's own header for the row's properties; None where it leaves it to pamqp."""
    properties = RowHeader(**row).properties()
    properties.user_id = user_id
    try:
        return codec._write_header(ContentHeader(0, body_size, properties))
    except (codec._NotOurs, ValueError, OverflowError, TypeError):
        return None


@given(rows, st.integers(min_value=0, max_value=2**40), st.one_of(st.none(), text))
def test_writes_the_header_the_codec_writes_or_leaves_the_row_to_it(
    row: dict[str, Any], body_size: int, user_id: str | None
) -> None:
    encoded = RowHeader(**row).encoded(body_size, user_id)
    try:
        generic = _generic(row, body_size, user_id)
    except Exception:  # the codec fails on it (a time before 1970): so must the general path
        assert encoded is None
        return
    if encoded is None:
        return  # the row goes the general way: whatever the codec does with it, it does
    assert encoded.header == generic
    assert encoded.message_id == row["event_id"]
    assert encoded.user_id == (user_id or None)


def test_a_row_as_the_bus_writes_it_is_written_straight() -> None:
    row: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "event_type": "orders.order_placed",
        "schema_version": 2,
        "occurred_at": datetime.datetime.now(datetime.UTC),
        "correlation_id": str(uuid.uuid4()),
        "causation_id": str(uuid.uuid4()),
        "traceparent": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
        "app_id": "orders",
    }
    encoded = RowHeader(**row).encoded(321, "eventshop-orders")
    assert encoded is not None
    assert encoded.header == _generic(row, 321, "eventshop-orders")


@pytest.mark.parametrize(
    "change",
    [
        {"correlation_id": "€" * 100},  # 300 bytes: no shortstr
        {"occurred_at": datetime.datetime(2026, 1, 1)},  # naive
        {"occurred_at": datetime.datetime(1969, 12, 31, tzinfo=datetime.UTC)},
        {"schema_version": 2**63},
    ],
)
def test_a_value_the_header_cannot_hold_leaves_the_row_to_the_general_path(
    change: dict[str, Any],
) -> None:
    row = {
        "event_id": str(uuid.uuid4()),
        "event_type": "orders.order_placed",
        "schema_version": 1,
        "occurred_at": datetime.datetime.now(datetime.UTC),
        "correlation_id": "c",
        "causation_id": None,
        "traceparent": None,
        "app_id": "orders",
        **change,
    }
    assert RowHeader(**row).encoded(10, "eventshop-orders") is None
