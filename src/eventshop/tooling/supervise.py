"""`eventshop up` / `eventshop down`: every service a process under supervisord.

supervisord (the Python package, pinned in pyproject) restarts a process that dies; `up`
writes its configuration under ./var, provisions the broker (one RabbitMQ user per service,
allowed to publish only its own event types), starts it, waits until every service answers
/health/ready, and prints where the API and its docs are. `down` stops everything.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from eventshop.platform.settings import PlatformSettings
from eventshop.services import BACKENDS, PORTS, SMTP_SINK_PORT
from eventshop.tooling.broker import amqp_url, provision_broker
from eventshop.tooling.dbroles import database_url, provision_database

SERVICES = [*BACKENDS, "gateway"]
#: more processes of one service than this is a typo, not a deployment (one machine, 2+ cores)
MAX_REPLICAS = 16
#: the SMTP sink's module, run as `python -m` under supervisord
SMTP_SINK_MODULE = "eventshop.tooling.smtp_sink"

#: the demo profile: short enough timeouts that the demo shows them in seconds, not minutes;
#: each applies only when the environment does not set it
DEMO_ENV = {
    "EVENTSHOP_ORDERS_TIMEOUT_S": "10",
    "EVENTSHOP_PAYMENTS_SLOW_LATENCY_MS": "14000",
    "EVENTSHOP_GATEWAY_RATE_PER_USER": "200",
    "EVENTSHOP_GATEWAY_RATE_PER_IP": "2000",
}


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def var(self) -> Path:
        return self.root / "var"

    @property
    def conf(self) -> Path:
        return self.var / "supervisord.conf"

    @property
    def sock(self) -> Path:
        return self.var / "supervisor.sock"

    @property
    def logs(self) -> Path:
        return self.var / "log"


class ReplicasError(ValueError):
    """A `--replicas` spec that makes no sense; its message is one line for the operator."""


def parse_replicas(spec: str | None) -> dict[str, int]:
    """`inventory=3,payments=2` -> {"inventory": 3, "payments": 2}; every service not named runs
    one process. Refuses, with a one-line reason, anything else: an unknown or repeated service,
    a count that is not a whole number from 1 to MAX_REPLICAS, an empty or malformed item."""
    if spec is None:
        return {}
    if not spec.strip():
        raise ReplicasError("--replicas is empty: give service=count[,service=count...]")
    replicas: dict[str, int] = {}
    for item in spec.split(","):
        name, sep, count = (part.strip() for part in item.partition("="))
        if not sep or not name or not count:
            raise ReplicasError(
                f"--replicas: {item.strip()!r} is not service=count (e.g. inventory=3)"
            )
        if name not in SERVICES:
            raise ReplicasError(
                f"--replicas: unknown service {name!r}: one of {', '.join(SERVICES)}"
            )
        if name in replicas:
            raise ReplicasError(f"--replicas: {name} is given twice")
        if not re.fullmatch(r"[+-]?\d+", count):
            raise ReplicasError(f"--replicas: {name}={count}: the count is not a whole number")
        n = int(count)
        if not 1 <= n <= MAX_REPLICAS:
            raise ReplicasError(
                f"--replicas: {name}={n}: the count must be from 1 to {MAX_REPLICAS}"
            )
        replicas[name] = n
    return replicas


def project_root() -> Path:
    env = os.environ.get("EVENTSHOP_HOME")
    return Path(env) if env else Path.cwd()


def write_config(
    layout: Layout, env_extra: dict[str, str], replicas: dict[str, int] | None = None
) -> None:
    """supervisord's configuration; a service with `replicas` > 1 is one program of that many
    processes (`numprocs`), named `<service>:<service>-<n>`, sharing its port (SO_REUSEPORT)."""
    layout.logs.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    eventshop = str(Path(python).with_name("eventshop"))
    # the demo's values only where the environment says nothing: what is set in the shell wins
    demo = {k: v for k, v in DEMO_ENV.items() if k not in os.environ}
    base_env = {**demo, **env_extra}
    sections = [
        "[unix_http_server]",
        f"file={layout.sock}",
        "",
        "[supervisord]",
        f"logfile={layout.logs / 'supervisord.log'}",
        f"pidfile={layout.var / 'supervisord.pid'}",
        f"directory={layout.root}",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{layout.sock}",
        "",
        "[program:smtp-sink]",
        f"command={python} -m {SMTP_SINK_MODULE}",
        f'environment=EVENTSHOP_SMTP_SINK_DIR="{layout.var / "mail"}"',
        "autorestart=true",
        f"stdout_logfile={layout.logs / 'smtp-sink.log'}",
        "redirect_stderr=true",
        "stopsignal=TERM",
        "",
    ]
    for service in SERVICES:
        n = (replicas or {}).get(service, 1)
        env = {
            **base_env,
            "EVENTSHOP_AMQP_URL": amqp_url(service),
            # its own role, owner of its schema only (tooling/dbroles.py)
            "EVENTSHOP_DATABASE_URL": database_url(service),
        }
        if n > 1:
            env["EVENTSHOP_REUSE_PORT"] = "true"  # the replicas share the service's one port
            # the service's share of PostgreSQL's connections, not N times it: four replicas of
            # three services at 10 each ran the server out of connections
            env["EVENTSHOP_DB_POOL_MAX"] = str(max(2, -(-10 // n)))
        env_line = ",".join(f'{k}="{v}"' for k, v in sorted(env.items()))
        per_process = (
            ["numprocs=" + str(n), "process_name=%(program_name)s-%(process_num)d"] if n > 1 else []
        )
        logfile = f"{service}-%(process_num)d.log" if n > 1 else f"{service}.log"
        sections += [
            f"[program:{service}]",
            f"command={eventshop} run {service}",
            *per_process,
            f"environment={env_line}",
            "autorestart=true",
            "startsecs=2",
            "startretries=10",
            "stopsignal=TERM",
            "stopwaitsecs=20",
            f"stdout_logfile={layout.logs / logfile}",
            "stdout_logfile_maxbytes=20MB",
            "redirect_stderr=true",
            "",
        ]
    # the operators' console: the operator's broker user and the database as the CLI reads it
    console_env = ",".join(f'{k}="{v}"' for k, v in sorted(base_env.items()))
    sections += [
        "[program:console]",
        f"command={eventshop} console",
        *([f"environment={console_env}"] if console_env else []),
        "autorestart=true",
        "stopsignal=TERM",
        f"stdout_logfile={layout.logs / 'console.log'}",
        "redirect_stderr=true",
        "",
    ]
    # it holds every service's broker and database password: readable by its owner only
    layout.conf.touch(mode=0o600)
    layout.conf.chmod(0o600)
    layout.conf.write_text("\n".join(sections))


def _supervisorctl(layout: Layout, *args: str) -> subprocess.CompletedProcess[str]:
    ctl = str(Path(sys.executable).with_name("supervisorctl"))
    return subprocess.run(
        [ctl, "-c", str(layout.conf), *args], capture_output=True, text=True, timeout=120
    )


def supervisor_running(layout: Layout) -> bool:
    return layout.sock.exists() and _supervisorctl(layout, "pid").returncode == 0


class PlatformConflictError(RuntimeError):
    """The platform's ports are taken by processes this checkout did not start."""


def _port_taken(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def stop_foreign(layout: Layout) -> list[str]:
    """Shut down eventshop platforms that other checkouts started (their supervisord processes).

    Used by the test suite, which must test this checkout's code, never a stale platform.
    """
    import psutil

    stopped: list[str] = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if not any(part.endswith("supervisord") for part in cmd[:2]) or "-c" not in cmd:
            continue
        conf = Path(cmd[cmd.index("-c") + 1])
        if conf == layout.conf or conf.name != "supervisord.conf":
            continue
        other = Layout(conf.parent.parent)
        _supervisorctl(other, "shutdown")
        try:
            proc.wait(timeout=60)
        except psutil.TimeoutExpired:
            proc.kill()
        stopped.append(str(other.root))
    return stopped


def start(
    layout: Layout,
    env_extra: dict[str, str] | None = None,
    say: Callable[[str], object] = print,
    replicas: dict[str, int] | None = None,
) -> None:
    """Start the platform (or bring a running one to this configuration): every service one
    process, or as many as `replicas` says for this start; a later start without it runs one."""
    if not supervisor_running(layout):
        taken = [f"{name}:{port}" for name, port in PORTS.items() if _port_taken(port)]
        if taken:
            raise PlatformConflictError(
                f"ports {', '.join(taken)} are in use by something this checkout ({layout.root})"
                " did not start, perhaps eventshop from another directory: stop it there with"
                " `eventshop down` first"
            )
    provisioned = provision_broker(SERVICES)
    if provisioned:
        say(f"broker: created {', '.join(provisioned)}")
    # every service, the gateway too: the runtime gives each a pool on its schema
    changed = provision_database(PlatformSettings().database_url, SERVICES)
    if changed:
        say(f"database: {', '.join(changed)}")
    write_config(layout, env_extra or {}, replicas)
    if supervisor_running(layout):
        _supervisorctl(layout, "update")
        _supervisorctl(layout, "start", "all")
    else:
        supervisord = str(Path(sys.executable).with_name("supervisord"))
        subprocess.run([supervisord, "-c", str(layout.conf)], check=True, timeout=60)


def stop(layout: Layout) -> bool:
    """Stop every process and supervisord itself; returns False if it was not running."""
    pidfile = layout.var / "supervisord.pid"
    pid = int(pidfile.read_text().strip()) if pidfile.exists() else None
    if not supervisor_running(layout):
        return False
    _supervisorctl(layout, "shutdown")
    deadline = time.monotonic() + 60
    while pid is not None and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    return True


_RUNNING_PID = re.compile(r"^\S+\s+RUNNING\s+pid (\d+),", re.MULTILINE)


def pids_of(layout: Layout, service: str) -> list[int]:
    """The process ids of every running process (replica) of `service`, in supervisord's order."""
    status = _supervisorctl(layout, "status", f"{service}:*").stdout
    return [int(pid) for pid in _RUNNING_PID.findall(status)]


def service_pid(layout: Layout, service: str) -> str:
    """The process id of `service`'s first running process ("0" when none is running)."""
    pids = pids_of(layout, service)
    return str(pids[0]) if pids else "0"


# `<service>:*` names the program's group: its one process, or every replica of it
def restart_service(layout: Layout, service: str) -> None:
    _supervisorctl(layout, "restart", f"{service}:*")


def stop_service(layout: Layout, service: str) -> None:
    _supervisorctl(layout, "stop", f"{service}:*")


def start_service(layout: Layout, service: str) -> None:
    _supervisorctl(layout, "start", f"{service}:*")


def service_url(name: str) -> str:
    """Where an operator's tool finds a service: EVENTSHOP_SERVICE_URLS (a JSON map, e.g. the
    compose network's names) or loopback at its port."""
    urls: dict[str, str] = json.loads(os.environ.get("EVENTSHOP_SERVICE_URLS") or "{}")
    return urls.get(name) or f"http://127.0.0.1:{PORTS[name]}"


async def readiness(services: list[str] | None = None) -> dict[str, bool]:
    names = services or SERVICES
    async with httpx.AsyncClient(timeout=2.0) as client:

        async def probe(name: str) -> bool:
            try:
                r = await client.get(f"{service_url(name)}/health/ready")
                return r.status_code == 200
            except httpx.HTTPError:
                return False

        results = await asyncio.gather(*(probe(n) for n in names))
    return dict(zip(names, results, strict=True))


async def wait_ready(
    services: list[str] | None = None,
    timeout_s: float = 90.0,
    *,
    replicas: dict[str, int] | None = None,
    layout: Layout | None = None,
) -> dict[str, bool]:
    """Wait until every service answers ready. With `replicas`, a service counts as ready only
    once supervisord has all of its processes running too: one replica answers each probe on
    the shared port, so a ready answer says nothing of the replicas still starting."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = await readiness(services)
        if replicas and layout is not None:
            for name, n in replicas.items():
                if state.get(name):
                    running = await asyncio.to_thread(pids_of, layout, name)
                    state[name] = len(running) >= n
        if all(state.values()) or time.monotonic() > deadline:
            return state
        await asyncio.sleep(0.3)


def smtp_port() -> int:
    return SMTP_SINK_PORT


def which(cmd: str) -> bool:
    return shutil.which(cmd) is not None
