"""docs/EVENTS.md is generated from the contracts and the services' definitions, and current."""

from __future__ import annotations

from pathlib import Path

from eventshop.asyncapi import events_markdown
from eventshop.contracts import PRODUCERS

DOC = Path(__file__).resolve().parents[2] / "docs" / "EVENTS.md"


def test_events_md_is_current() -> None:
    assert DOC.read_text() == events_markdown(), (
        "docs/EVENTS.md is stale: .venv/bin/eventshop asyncapi --events-md --output docs/EVENTS.md"
    )


def test_every_event_is_listed_with_its_producer_and_consumers() -> None:
    table = events_markdown()
    for event_type, producer in PRODUCERS.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| `{event_type}` "))
        assert f"| {producer} |" in row
        assert "archive: `archive_events`" in row
    confirmed = next(line for line in table.splitlines() if "`order.confirmed`" in line)
    assert "loyalty: `award_points`" in confirmed
