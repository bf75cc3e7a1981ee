"""What the pages show, shaped for the templates: the live parts, the parking lot's filter,
the trace as waterfall rows. The data comes from `Sources`; nothing here does I/O itself."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from eventshop.cli.trace import waterfall
from eventshop.console.plots import Series, line_plot
from eventshop.platform.bus.parking import ParkedMessage
from eventshop.platform.http import ApiError

if TYPE_CHECKING:
    from eventshop.console.sources import Sources

Action = Literal["replay", "purge"]


def safe_next(target: str) -> str:
    """Where to go after logging in: a path of the console only, never another site."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def action_of(value: str) -> Action:
    if value == "replay":
        return "replay"
    if value == "purge":
        return "purge"
    raise ApiError(422, "validation_error", "action must be replay or purge")


@dataclass(frozen=True)
class ParkedFilter:
    """Which parked messages: the `eventshop dlq` filters."""

    service: str | None = None
    event_type: str | None = None
    error: str | None = None
    correlation_id: str | None = None
    event_id: str | None = None

    @classmethod
    def of(cls, fields: Mapping[str, str]) -> ParkedFilter:
        def get(name: str) -> str | None:
            value = (fields.get(name) or "").strip()
            if len(value) > 200:
                raise ApiError(422, "validation_error", f"{name} is too long (200 at most)")
            return value or None

        return cls(
            get("service"), get("event_type"), get("error"), get("correlation_id"), get("event_id")
        )

    def query(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v}

    @property
    def described(self) -> str:
        said = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.query().items())
        return said or "every parked message"


def pretty_body(parked: ParkedMessage) -> str:
    """A parked message's body: indented JSON when it is JSON, else its text."""
    text = parked.body.decode("utf-8", errors="replace")
    try:
        return json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False)
    except ValueError:
        return text


async def saga_part(src: Sources) -> dict[str, Any]:
    summary = await src.saga()
    per_s = [b.final / summary.bucket_s for b in summary.buckets]
    return {
        "summary": summary,
        "rate_plot": line_plot(
            f"orders reaching final per second ({summary.bucket_s} s buckets, last "
            f"{len(summary.buckets) * summary.bucket_s // 60} min)",
            [Series("orders/s", per_s, "#0b5cad")],
            plot_id="plot-rate",
        ),
        "latency_plot": line_plot(
            "time to final (s)",
            [
                Series("p50", [b.p50_s for b in summary.buckets], "#2a9d3c"),
                Series("p95", [b.p95_s for b in summary.buckets], "#c0392b"),
            ],
            unit=" s",
            plot_id="plot-latency",
        ),
    }


#: the counters the services page shows as rates (eventshop.ops.status.EVENT_COUNTERS' keys)
RATES = ("handled", "failed", "retried", "parked_total")


def _rate(a: dict[str, Any], b: dict[str, Any], key: str) -> float | None:
    if a.get(key) is None or b.get(key) is None or b["at"] <= a["at"]:
        return None
    rate = (float(b[key]) - float(a[key])) / (float(b["at"]) - float(a["at"]))
    return max(0.0, rate)  # a restart resets a counter


async def services_part(src: Sources) -> dict[str, Any]:
    rows = await src.status()
    history = src.remember_status(rows)
    rates: dict[str, dict[str, float | None]] = {}
    plots = {}
    for name, points in history.items():
        recent = points[-10:]  # the last ten seconds or so
        rates[name] = {
            key: _rate(recent[0], recent[-1], key) if len(recent) > 1 else None for key in RATES
        }
        handled = [None, *(_rate(a, b, "handled") for a, b in itertools.pairwise(points))]
        plots[name] = line_plot(
            f"{name}",
            [
                Series("queue", [p.get("queue") for p in points], "#0b5cad"),
                Series("handled/s", handled, "#2a9d3c"),
            ],
            width=300,
            height=80,
            plot_id=f"plot-{name}",
        )
    return {"rows": rows, "plots": plots, "rates": rates}


def trace_rows(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trace as the waterfall the CLI prints: each span's offset and width in percent."""
    rows = waterfall(spans)
    if not rows:
        return []
    total = max(r.start_ms + r.duration_ms for r in rows) or 1.0
    return [
        {
            "service": r.service,
            "name": r.name,
            "depth": r.depth,
            "status": r.status,
            "start_ms": r.start_ms,
            "duration_ms": r.duration_ms,
            "left": 100 * r.start_ms / total,
            "width": max(0.4, 100 * r.duration_ms / total),
        }
        for r in rows
    ]
