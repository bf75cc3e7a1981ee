"""The JSON the operator's commands print (and a dashboard serves): eventshop.ops's results
as documents, built from values in memory (no I/O)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from typer.testing import CliRunner

from eventshop.cli.main import app as cli
from eventshop.contracts.common import Line
from eventshop.ops.events import OrderHistory, Step, event_json
from eventshop.ops.jsonable import iso_utc, plain
from eventshop.ops.parked import parked_filter, parked_json
from eventshop.ops.status import PlatformStatus, ServiceStatus
from eventshop.ops.traces import trace_rows
from eventshop.platform.bus.parking import ParkedMessage
from eventshop.platform.eventstore import RecordedEvent
from eventshop.services.orders import domain
from tests.unit.observability.test_tracing import EXPECTED, _write_trace

PARIS = timezone(timedelta(hours=2))


def parked(**changes: object) -> ParkedMessage:
    fields: dict[str, object] = {
        "event_id": "e-1",
        "event_type": "order.created",
        "correlation_id": "c-1",
        "error": "ValueError: no such sku",
        "attempts": 3,
        "original_routing_key": "order.created",
        "first_failure_at": "2026-01-02T14:00:00+02:00",
        "parked_at": "2026-01-02T12:00:01.500000+00:00",
        "headers": {
            "x-error": b"ValueError: no such sku",
            "x-death": [{"time": datetime(2026, 1, 2, 12, 0, tzinfo=UTC), "count": 1}],
        },
        "body": b'{"order_id": "o-1"}',
        **changes,
    }
    return ParkedMessage(**fields)  # type: ignore[arg-type]


def test_times_are_iso_8601_in_utc() -> None:
    assert iso_utc(datetime(2026, 1, 2, 14, 0, tzinfo=PARIS)) == "2026-01-02T12:00:00+00:00"
    assert iso_utc("2026-01-02T14:00:00+02:00") == "2026-01-02T12:00:00+00:00"
    assert iso_utc(b"2026-01-02T12:00:00") == "2026-01-02T12:00:00+00:00"  # naive: UTC
    assert iso_utc("yesterday") == "yesterday" and iso_utc(None) is None
    assert plain({"a": (b"x", datetime(2026, 1, 2, tzinfo=UTC))}) == {
        "a": ["x", "2026-01-02T00:00:00+00:00"]
    }


def test_a_parked_message_as_dlq_list_and_show_print_it() -> None:
    listed = parked_json("inventory", parked(), body=False)
    assert json.loads(json.dumps(listed)) == listed  # JSON all the way down
    assert {k: listed[k] for k in ("service", "event_id", "event_type", "error", "attempts")} == {
        "service": "inventory",
        "event_id": "e-1",
        "event_type": "order.created",
        "error": "ValueError: no such sku",
        "attempts": 3,
    }
    assert listed["first_failure_at"] == "2026-01-02T12:00:00+00:00"
    assert listed["parked_at"] == "2026-01-02T12:00:01.500000+00:00"
    assert listed["headers"]["x-error"] == "ValueError: no such sku"
    assert listed["headers"]["x-death"][0]["time"] == "2026-01-02T12:00:00+00:00"
    assert "body" not in listed
    shown = parked_json("inventory", parked(body=b"\xffnot utf-8"), body=True)
    assert shown["body"] == "\ufffdnot utf-8" and shown["body_bytes"] == 10
    assert json.dumps(shown)


def test_the_filters_match_what_dlq_names() -> None:
    p = parked()
    assert parked_filter(event_type="order.*", error="NO SUCH")(p)
    assert not parked_filter(event_type="payment.*")(p)
    assert not parked_filter(since=datetime(2026, 1, 3, tzinfo=UTC))(p)
    assert parked_filter(event_id="e-1")(p) and not parked_filter(event_id="e-2")(p)


def test_status_prints_one_object_per_service_with_every_field() -> None:
    down = ServiceStatus(service="payments", live=False, ready=False)
    up = ServiceStatus(
        service="inventory", live=True, ready=True, queue=4, consumers=2, parked=1,
        outbox=0, outbox_oldest_s=None, handled=10.0, failed=1.0, retried=1.0, parked_total=1.0,
    )  # fmt: skip
    status = PlatformStatus(at=datetime(2026, 1, 2, 14, tzinfo=PARIS), services=[up, down])
    doc = json.loads(json.dumps(status.to_json()))
    assert doc["at"] == "2026-01-02T12:00:00+00:00"
    assert doc["services"] == status.rows()
    fields = ["service", "live", "ready", "queue", "consumers", "parked", "outbox",
              "outbox_oldest_s", "handled", "failed", "retried", "parked_total"]  # fmt: skip
    assert all(list(row) == fields for row in doc["services"])
    assert doc["services"][1] == {**dict.fromkeys(fields), "service": "payments",
                                  "live": False, "ready": False}  # fmt: skip
    assert status.of("inventory").consumers == 2


def recorded(version: int, event_type: str, at: datetime) -> RecordedEvent:
    return RecordedEvent(
        global_position=10 + version, stream_id="order-o-1", version=version,
        event_type=event_type, schema_version=1, payload={"n": version}, recorded_at=at,
        metadata={"correlation_id": "c-1"},
    )  # fmt: skip


def test_events_and_an_order_history_as_events_print_them() -> None:
    placed_at = datetime(2026, 1, 2, 14, tzinfo=PARIS)
    e = event_json(recorded(1, "OrderPlaced", placed_at))
    assert e == {
        "global_position": 11, "stream_id": "order-o-1", "version": 1,
        "event_type": "OrderPlaced", "schema_version": 1, "stored_schema_version": None,
        "recorded_at": "2026-01-02T12:00:00+00:00", "payload": {"n": 1},
        "metadata": {"correlation_id": "c-1"},
    }  # fmt: skip
    order = domain.Order(
        order_id="o-1", user_id="u-1", email="u@example.com",
        lines=(Line(sku="MUG", quantity=1),), total_minor=1_250, currency="EUR",
        payment_token="tok", placed_at=placed_at, deadline=placed_at, version=1,
    )  # fmt: skip
    steps = [
        Step(recorded(1, "OrderPlaced", placed_at), "PENDING", None, 0.0),
        Step(
            recorded(2, "StockRejected", placed_at + timedelta(seconds=1.5)),
            "CANCELLED",
            "out_of_stock",
            1.5,
        ),
    ]
    history = OrderHistory("o-1", steps, version=1, as_of=order).to_json()
    assert json.loads(json.dumps(history)) == history
    assert [(s["version"], s["status_after"], s["reason_after"], s["seconds_since_placed"])
            for s in history["timeline"]] == [(1, "PENDING", None, 0.0),
                                              (2, "CANCELLED", "out_of_stock", 1.5)]  # fmt: skip
    assert (history["as_of_version"], history["as_of_time"]) == (1, None)
    assert history["as_of"]["status"] == "PENDING" and history["as_of"]["version"] == 1
    assert history["as_of"]["placed_at"] == "2026-01-02T12:00:00+00:00"
    assert OrderHistory("o-1", steps).to_json()["as_of"] is None  # nothing asked


def test_a_trace_as_trace_json_prints_it(tmp_path: Path) -> None:
    trace_id, correlation_id = _write_trace(tmp_path)
    rows = [r.to_json() for r in trace_rows(correlation_id, tmp_path)]
    assert [(r["depth"], r["service"], r["name"]) for r in rows] == EXPECTED
    assert {r["trace_id"] for r in rows} == {trace_id}
    assert rows[0]["parent_span_id"] is None and rows[0]["start_ms"] == 0
    assert all(r["started_at"].endswith("+00:00") for r in rows)
    assert rows[1]["parent_span_id"] == rows[0]["span_id"]
    shown = CliRunner().invoke(cli, ["trace", correlation_id, "--dir", str(tmp_path), "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout) == rows  # one document, nothing else on stdout


def test_the_data_functions_import_without_the_cli() -> None:
    code = (
        "import sys, eventshop.ops.status, eventshop.ops.parked, eventshop.ops.events,"
        " eventshop.ops.traces\n"
        "print(sorted(m for m in sys.modules if m == 'typer' or m.startswith('eventshop.cli')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
