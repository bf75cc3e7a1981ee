"""The platform under the order benchmark: started, or given the benchmark profile, and put
back as it was at the end; which services run without the profile."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

import psutil

from eventshop.bench.orders.config import BENCH_ENV, BenchError, OrdersBenchConfig, Say
from eventshop.tooling import supervise


@dataclass
class PlatformState:
    layout: supervise.Layout
    started: bool = False
    reconfigured: bool = False
    previous_conf: str | None = None
    #: per service, the benchmark settings it runs without (empty: the profile is in effect)
    profile_differences: dict[str, dict[str, str]] = field(default_factory=dict)


def service_of_cmdline(cmd: Sequence[str]) -> str | None:
    """The service an `eventshop run <service>` command line runs (None: not one)."""
    for i, part in enumerate(cmd[:-2]):
        if part.endswith("eventshop") and cmd[i + 1] == "run":
            return str(cmd[i + 2])
    return None


def _service_processes() -> dict[str, psutil.Process]:
    found: dict[str, psutil.Process] = {}
    for p in psutil.process_iter(["cmdline"]):
        service = service_of_cmdline(p.info["cmdline"] or [])
        if service is not None:
            found[service] = p
    return found


def _profile_differences() -> dict[str, dict[str, str]]:
    """Per service, the settings of the benchmark profile its process runs without.

    A service's own settings (EVENTSHOP_<SERVICE>_...) and the shared ones count; another
    service's do not bind it."""
    diffs: dict[str, dict[str, str]] = {}
    prefixes = tuple(f"EVENTSHOP_{s.upper()}_" for s in supervise.SERVICES)
    for service, proc in _service_processes().items():
        mine = f"EVENTSHOP_{service.upper()}_"
        own = {
            k: v for k, v in BENCH_ENV.items() if k.startswith(mine) or not k.startswith(prefixes)
        }
        try:
            env = proc.environ()
        except psutil.Error:
            env = {}
        off = {k: env.get(k, "unset") for k, v in own.items() if env.get(k) != v}
        if off:
            diffs[service] = off
    return diffs


async def _start(layout: supervise.Layout, say: Say, replicas: dict[str, int]) -> None:
    try:
        await asyncio.to_thread(supervise.start, layout, BENCH_ENV, say, replicas)
    except (RuntimeError, subprocess.CalledProcessError) as exc:  # PlatformConflictError too
        raise BenchError(f"could not start the platform: {exc}") from None


async def ensure_platform(state: PlatformState, cfg: OrdersBenchConfig, say: Say) -> None:
    """Start the platform or apply the benchmark profile to it, as `cfg` says; `state` records
    what was done, so that `release_platform` can undo it even if this fails half-way."""
    layout = state.layout
    running = await asyncio.to_thread(supervise.supervisor_running, layout)
    if not running:
        say("starting the platform with the benchmark profile")
        await _start(layout, say, cfg.replicas)
        state.started = True
    elif cfg.configure:
        state.previous_conf = layout.conf.read_text() if layout.conf.exists() else None
        try:
            await _start(layout, say, cfg.replicas)
        finally:  # the configuration may have changed even if the start failed
            state.reconfigured = layout.conf.read_text() != state.previous_conf
        if state.reconfigured:
            say("the platform was running: benchmark profile applied (changed services restarted)")
    else:
        say("[yellow]using the running platform as it is (--as-is)[/]")
    ready = await supervise.wait_ready(timeout_s=120, replicas=cfg.replicas, layout=layout)
    if not all(ready.values()):
        raise BenchError(f"platform not ready: {ready}; logs in {layout.logs}")
    state.profile_differences = _profile_differences()
    for service, off in sorted(state.profile_differences.items()):
        found = ", ".join(f"{k.removeprefix('EVENTSHOP_')}={v}" for k, v in off.items())
        say(f"[yellow]benchmark profile not in effect: {service} runs with {found}[/]")


async def release_platform(state: PlatformState, cfg: OrdersBenchConfig, say: Say) -> None:
    if cfg.keep_running:
        if state.started or state.reconfigured:
            say("the platform is left running with the benchmark profile (`eventshop down`)")
        return
    if state.started:
        say("stopping the platform (the benchmark started it)")
        await asyncio.to_thread(supervise.stop, state.layout)
    elif state.reconfigured and state.previous_conf is not None:
        say("putting the platform's previous profile back")
        state.layout.conf.write_text(state.previous_conf)
        await asyncio.to_thread(_supervisorctl_update, state.layout)
        await supervise.wait_ready(timeout_s=120)


def _supervisorctl_update(layout: supervise.Layout) -> None:
    supervise._supervisorctl(layout, "update")
    supervise._supervisorctl(layout, "start", "all")
