"""`eventshop chaos --platform compose`, run as an operator runs it, against the compose platform
brought up from the images (a project name and ports of its own, as tests/e2e/test_compose.py):
a service container's process killed -9 again and again (its restart policy starts it again),
the RabbitMQ container killed and started again, the PostgreSQL container killed and started
again, at CI's size. Each must end as on the process platform (tests/e2e/test_chaos.py):
nothing lost, duplicated, unexpected or stuck, every invariant true, nothing unsent, nothing
parked but what the scenario parked. The chaos command reaches PostgreSQL and AMQP through its
tunnel container, for the run only (ADR 0015): none is left after it. Then everything is taken
down with its volumes. What is real: Docker, every image, every container.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_compose import PROJECT, ROOT, compose

pytestmark = pytest.mark.e2e

ORDERS = int(os.environ.get("EVENTSHOP_CHAOS_ORDERS", "50"))
__all__ = ["compose"]  # the fixture: the compose platform up, under a project of its own


def eventshop(
    *args: str, env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("eventshop")), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def tunnels() -> list[str]:
    return subprocess.run(
        ["docker", "ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}",
         "--filter", "label=com.docker.compose.service=chaos-tunnel"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()  # fmt: skip


@pytest.mark.parametrize("scenario", ["kill-services", "kill-broker", "restart-postgres"])
def test_a_scenario_on_the_containers_loses_nothing(
    compose: dict[str, str], scenario: str, tmp_path: Path
) -> None:
    results = tmp_path / "results.jsonl"
    done = eventshop(
        "chaos", scenario, "--platform", "compose", "--orders", str(ORDERS), "--rate", "8",
        "--seed", "7", "--settle", "120", "--results", str(results), env=compose,
    )  # fmt: skip
    try:
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        pytest.fail(f"no result: {done.stdout[-2000:]} {done.stderr[-3000:]}")
    assert [json.loads(line) for line in results.read_text().splitlines()] == [result]
    assert result["platform"] == "compose"
    assert result["accepted"] + result["refused"] == ORDERS and result["unanswered"] == 0
    assert (result["lost"], result["duplicated"], result["unexpected"], result["stuck"]) == (
        0, 0, 0, 0,
    ), result["examples"]  # fmt: skip
    assert result["violations"] == {} and result["unsent"] == {}
    assert result["parked"]["expected"] == result["parked"]["actual"]
    assert result["faults"], "the scenario injected no fault"
    assert all(f["recovered_s"] is not None for f in result["faults"]), result["faults"]
    assert result["outcomes"].get("CONFIRMED", 0) > 0
    assert done.returncode == 0 and result["ok"]
    assert tunnels() == [], "the chaos tunnel outlived its run"
    if scenario == "kill-services":
        killed = {f["target"] for f in result["faults"]}
        assert killed <= restarted_by_docker(), "a killed container was not restarted by Docker"


def restarted_by_docker() -> set[str]:
    """The services whose containers Docker restarted (their restart policy: RestartCount), the
    same containers, not new ones."""
    ids = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}",
         "--filter", "label=com.docker.compose.oneoff=False"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()  # fmt: skip
    counts = subprocess.run(
        ["docker", "inspect", "-f",
         '{{index .Config.Labels "com.docker.compose.service"}} {{.RestartCount}}', *ids],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split("\n")  # fmt: skip
    return {line.split()[0] for line in counts if line.strip() and line.split()[1] != "0"}
