"""The chaos command picks its platform (`--platform`): the process platform carries every
scenario; the compose platform carries those it can do with Docker and refuses the others,
saying why and what it would take. The outage scenarios give back what they took away, however
the outage ended. The override file that opens the compose platform to the checker publishes
on loopback only, and is no part of the platform's own compose file. No Docker here: fakes."""

from __future__ import annotations

import asyncio
import random
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from eventshop.chaos import run
from eventshop.chaos.compose import ComposeError, ComposePlatform, read_env_file
from eventshop.chaos.faults import SCENARIOS, Outage, ProcessPlatform, Stage, _outage
from eventshop.cli.main import app
from eventshop.tooling.shopclient import API, _url

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_the_platform_is_picked_by_its_name() -> None:
    assert isinstance(run.platform_named("processes"), ProcessPlatform)
    assert isinstance(run.platform_named("compose"), ComposePlatform)
    with pytest.raises(ValueError, match="one of processes, compose"):
        run.platform_named("k8s")


def test_the_process_platform_carries_every_scenario() -> None:
    assert all(ProcessPlatform().refusal(s) is None for s in SCENARIOS)


def test_compose_refuses_network_and_clock_skew_saying_why() -> None:
    compose = ComposePlatform(project="p", gateway_port=1)
    network, skew = compose.refusal("network"), compose.refusal("clock-skew")
    assert network is not None and "fault proxy" in network and "eventshop up" in network
    assert skew is not None and "libfaketime" in skew and "eventshop up" in skew
    carried = {s for s in SCENARIOS if compose.refusal(s) is None}
    assert carried == set(SCENARIOS) - {"network", "clock-skew"}
    assert compose.refusal("kill-cluster-node") is not None  # one it was not taught


def said(output: str) -> str:
    """The words of an error, out of the box rich draws around it."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


def test_the_cli_refuses_a_scenario_the_platform_cannot_carry() -> None:
    done = CliRunner().invoke(app, ["chaos", "clock-skew", "--platform", "compose"])
    assert done.exit_code == 2
    assert "not on the compose platform: clock-skew needs libfaketime" in said(done.output)
    unknown = CliRunner().invoke(app, ["chaos", "kill-broker", "--platform", "k8s"])
    assert unknown.exit_code == 2 and "one of processes, compose" in said(unknown.output)


def a_result(scenario: str) -> dict[str, Any]:
    return {
        "scenario": scenario, "orders": 1, "accepted": 1, "final": 1, "lost": 0,
        "duplicated": 0, "unexpected": 0, "stuck": 0, "violations": {},
        "parked": {"expected": 0, "actual": 0}, "time_to_final_s": {"p50": 0.1, "p99": 0.1},
        "faults": [], "ok": True,
    }  # fmt: skip


def test_all_on_compose_runs_what_it_carries_and_says_what_it_skips(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ran: list[tuple[str, str]] = []

    async def fake_run(scenario: str, **kw: Any) -> dict[str, Any]:
        ran.append((scenario, kw["platform"].name))
        return a_result(scenario)

    monkeypatch.setattr(run, "run_scenario", fake_run)
    done = CliRunner().invoke(
        app, ["chaos", "all", "--platform", "compose", "--results", str(tmp_path / "r.jsonl")]
    )
    assert done.exit_code == 0, done.output
    assert ran == [(s, "compose") for s in SCENARIOS if s not in ("network", "clock-skew")]
    assert "skipped network" in done.output and "skipped clock-skew" in done.output


class FakePlatform(ProcessPlatform):
    async def ready(self) -> bool:
        return True


def test_an_outage_gives_back_what_it_took_even_when_taking_it_failed() -> None:
    calls: list[str] = []

    def refuse() -> None:
        calls.append("stop")
        raise RuntimeError("docker said no")

    stage = Stage(random.Random(1), time.monotonic(), 1.0, platform=FakePlatform())
    faults = asyncio.run(
        _outage(
            stage,
            Outage("kill", "broker", lambda: calls.append("stop"), lambda: calls.append("start")),
            0,
        )
    )
    assert calls == ["stop", "start"]
    assert [(f.name, f.target) for f in faults] == [("kill", "broker")]
    assert faults[0].recovered_s is not None
    calls.clear()
    with pytest.raises(RuntimeError):
        asyncio.run(
            _outage(stage, Outage("kill", "broker", refuse, lambda: calls.append("start")), 0)
        )
    assert calls == ["stop", "start"]


def test_the_load_reaches_the_gateway_of_the_platform_under_test() -> None:
    assert _url(httpx.AsyncClient(), "/orders") == f"{API}/orders"
    compose = ComposePlatform(project="p", gateway_port=18123)
    with_base = httpx.AsyncClient(base_url=compose.api)
    assert _url(with_base, "/orders") == "/orders"
    assert str(with_base.build_request("POST", "/orders").url) == (
        "http://127.0.0.1:18123/api/v1/orders"
    )


def test_the_compose_platform_reads_its_passwords_from_the_env_file(tmp_path: Path) -> None:
    with pytest.raises(ComposeError, match=r"scripts/compose\.sh up"):
        read_env_file(tmp_path / "missing")
    env = tmp_path / ".env"
    env.write_text("EVENTSHOP_POSTGRES_PASSWORD=a=b\nEVENTSHOP_OPERATOR_AMQP_PASSWORD=c\n")
    assert read_env_file(env) == {
        "EVENTSHOP_POSTGRES_PASSWORD": "a=b",
        "EVENTSHOP_OPERATOR_AMQP_PASSWORD": "c",
    }


def test_the_chaos_override_opens_the_database_and_the_broker_on_loopback_only() -> None:
    override = yaml.safe_load((DEPLOY / "docker-compose.chaos.yml").read_text())["services"]
    assert set(override) == {"chaos-tunnel"}
    tunnel = override["chaos-tunnel"]
    assert tunnel["ports"] == ["127.0.0.1::5432", "127.0.0.1::5672"]  # ports Docker picks
    assert tunnel["restart"] == "no"
    assert not tunnel.get("environment")  # no password passes through it
    base = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    assert "chaos-tunnel" not in base  # never part of `scripts/compose.sh up`
