"""What the end-to-end tests read of an `eventshop chaos` run: its verdict, and what every
scenario must end with whatever it broke (docs/DESIGN.md's invariants, nothing lost)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest


def chaos_verdict(done: subprocess.CompletedProcess[str], results: Path) -> dict[str, Any]:
    """The verdict the run printed last, which must be the one line it wrote to `results`."""
    try:
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        pytest.fail(f"no result: {done.stdout[-2000:]} {done.stderr[-3000:]}")
    assert [json.loads(line) for line in results.read_text().splitlines()] == [result]
    return result


def assert_came_through(result: dict[str, Any], orders: int) -> None:
    """Every order answered; nothing lost, duplicated, unexpected or stuck; every invariant
    true; nothing unsent; parked what the scenario parked; a fault injected; orders confirmed."""
    assert result["accepted"] + result["refused"] == orders and result["unanswered"] == 0
    assert (result["lost"], result["duplicated"], result["unexpected"], result["stuck"]) == (
        0, 0, 0, 0,
    ), result["examples"]  # fmt: skip
    assert result["violations"] == {} and result["unsent"] == {}
    assert result["parked"]["expected"] == result["parked"]["actual"]
    assert result["faults"], "the scenario injected no fault"
    assert result["outcomes"].get("CONFIRMED", 0) > 0
