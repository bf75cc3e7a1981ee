"""A service process started by `eventshop run` sets CPython's collector as ADR 0022 says.

The test service (tests/support/app.py) runs as its own process; what it did is read from its
own log, the only place a process's collector can be seen from outside."""

from __future__ import annotations

import json
from typing import Any

from tests.e2e.conftest import ServiceFactory, ServiceProcess


def tuned(svc: ServiceProcess) -> dict[str, Any]:
    assert svc.log_path is not None
    lines = [
        json.loads(line)
        for line in svc.log_path.read_text(errors="replace").splitlines()
        if line.startswith("{") and '"collector.tuned"' in line
    ]
    assert len(lines) == 1, f"one collector.tuned line expected:\n{svc.log_tail()}"
    line: dict[str, Any] = lines[0]
    return line


async def test_a_started_service_freezes_its_start_up_and_collects_its_young_rarely(
    services: ServiceFactory,
) -> None:
    svc = await services("collector").started()
    line = tuned(svc)
    assert line["thresholds"] == [50_000, 10, 10]
    assert line["frozen"] > 10_000  # its modules, every contract's schema, its pools


async def test_its_settings_give_back_pythons_own_collector(services: ServiceFactory) -> None:
    svc = await services(
        "collector_own", eventshop_gc_young_threshold="700", eventshop_gc_freeze="false"
    ).started()
    line = tuned(svc)
    assert line["thresholds"] == [700, 10, 10]
    assert line["frozen"] == 0
