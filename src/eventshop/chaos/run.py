"""One chaos run: the shop, the load and the scenario's faults together, then the verdict, as a
table and one JSON object appended to the results file."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from rich.console import Console
from rich.table import Table

from eventshop.chaos import check, load
from eventshop.chaos.faults import CLUSTER_SCENARIOS, SCENARIOS, Platform, ProcessPlatform, Stage
from eventshop.platform.settings import PlatformSettings
from eventshop.tooling import supervise

RESULTS = Path("var/chaos/results.jsonl")
#: `--platform`'s choices
PLATFORMS = ("processes", "compose")


def platform_named(name: str) -> Platform:
    """The platform `--platform` names: the process platform of this machine (`eventshop up`)
    or the compose project (EVENTSHOP_COMPOSE_PROJECT, its gateway on EVENTSHOP_GATEWAY_PORT)."""
    if name == "processes":
        return ProcessPlatform()
    if name == "compose":
        from eventshop.chaos.compose import ComposePlatform

        return ComposePlatform()
    raise ValueError(f"unknown platform {name!r}: one of {', '.join(PLATFORMS)}")


def commit() -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, cwd=supervise.project_root(), check=False,
    )  # fmt: skip
    return out.stdout.strip() or "unknown"


async def run_scenario(
    scenario: str,
    *,
    orders: int,
    rate: float,
    seed: int,
    settle_s: float = 180.0,
    platform: Platform | None = None,
) -> dict[str, Any]:
    platform = platform or ProcessPlatform()
    settings = await platform.open()
    try:
        return await _run(scenario, platform, settings, orders, rate, seed, settle_s)
    finally:
        await platform.close()


async def _run(
    scenario: str,
    platform: Platform,
    settings: PlatformSettings,
    orders: int,
    rate: float,
    seed: int,
    settle_s: float,
) -> dict[str, Any]:
    rng = random.Random(f"{scenario}:{seed}")
    # no cap on connections: with one, the requests a frozen service holds fill the pool, the
    # rest queue for it, and under that load httpcore's pool was seen to wedge for good (no
    # socket open, every request a PoolTimeout: `freeze` on the compose platform, 506 orders
    # placed of 2,000); without one no request ever waits for the pool
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=32)
    async with httpx.AsyncClient(base_url=platform.api, timeout=10.0, limits=limits) as client:
        shop = await load.open_shop(client, rng, rate=rate)
        placements = load.plan(shop, rng, orders)
        parked_before = await check.parked_depth(settings)
        since = datetime.now(UTC)
        started = time.monotonic()
        stage = Stage(rng, started, orders / rate, platform=platform, settings=settings)
        faults_task = asyncio.create_task({**SCENARIOS, **CLUSTER_SCENARIOS}[scenario](stage))
        try:
            await load.place_all(client, placements, rate, started)
            faults = await faults_task
        finally:
            if not faults_task.done():
                faults_task.cancel()
        await load.ask_again(client, placements)
        db = await asyncpg.connect(settings.database_url)
        try:
            users = [u.user_id for u in shop.users]
            verdict = await check.verdict(
                db, placements, users, [shop.rare, *shop.skus], since=since, settle_s=settle_s,
                settings=settings,
            )  # fmt: skip
        finally:
            await db.close()
        parked_after = await check.parked_depth(settings)
    result = {
        "scenario": scenario,
        "platform": platform.name,
        "seed": seed,
        "commit": commit(),
        "at": since.isoformat(timespec="seconds"),
        "orders": orders,
        "rate": rate,
        "seconds": round(time.monotonic() - started, 1),
        "faults": [f.to_json() for f in faults],
        **check.to_json(verdict),
        "parked": {"expected": stage.parked_expected, "actual": parked_after - parked_before},
        "unwanted": {
            o: n for o, n in sorted(verdict.outcomes.items()) if o in stage.unwanted_outcomes
        },
    }
    result["ok"] = (
        result["ok"]
        and result["parked"]["expected"] == result["parked"]["actual"]
        and not result["unwanted"]
    )
    return result


def record(result: dict[str, Any], path: Path = RESULTS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(result) + "\n")


def table(results: list[dict[str, Any]]) -> Table:
    t = Table(title="eventshop chaos")
    for col in ("scenario", "orders", "accepted", "final", "lost", "dup", "unexpected", "stuck",
                "violations", "parked exp/act", "p50 s", "p99 s", "recovery s", "ok"):  # fmt: skip
        t.add_column(col, justify="left" if col in ("scenario", "violations") else "right")
    for r in results:
        recovery = [f["recovered_s"] for f in r["faults"] if f.get("recovered_s") is not None]
        t.add_row(
            r["scenario"], str(r["orders"]), str(r["accepted"]), str(r["final"]), str(r["lost"]),
            str(r["duplicated"]), str(r["unexpected"]), str(r["stuck"]),
            ", ".join(r["violations"]) or "none",
            f"{r['parked']['expected']}/{r['parked']['actual']}",
            _s(r["time_to_final_s"]["p50"]), _s(r["time_to_final_s"]["p99"]),
            _s(max(recovery)) if recovery else "-",
            "[green]yes[/]" if r["ok"] else "[red]NO[/]",
        )  # fmt: skip
    return t


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown(results: list[dict[str, Any]]) -> str:
    """The results as the README's table (the last run of each scenario)."""
    last = {r["scenario"]: r for r in results}
    lines = [
        "| scenario | orders | accepted | final | lost | duplicated | stuck | violations "
        "| parked (expected/actual) | time to final p50 / p99 | recovery | commit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in last.values():
        recovery = [f["recovered_s"] for f in r["faults"] if f.get("recovered_s") is not None]
        lines.append(
            f"| {r['scenario']} | {r['orders']} | {r['accepted']} | {r['final']} | {r['lost']} "
            f"| {r['duplicated']} | {r['stuck']} | {', '.join(r['violations']) or 'none'} "
            f"| {r['parked']['expected']}/{r['parked']['actual']} "
            f"| {_s(r['time_to_final_s']['p50'])} s / {_s(r['time_to_final_s']['p99'])} s "
            f"| {_s(max(recovery)) + ' s' if recovery else '-'} | {r['commit']} |"
        )
    return "\n".join(lines)


def print_results(results: list[dict[str, Any]], as_json: bool) -> None:
    Console(stderr=True).print(table(results))
    for r in results:
        print(json.dumps(r) if as_json else json.dumps(r, separators=(",", ":")))
