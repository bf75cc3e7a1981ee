"""End-to-end fixtures: whole service processes on the real bus. What is real: everything.

Every service here is a real OS process (`eventshop run tests.support.app:definition`, the test
service of tests/support/app.py) talking to the real RabbitMQ (the session's random vhost, see
tests/conftest.py) and the real PostgreSQL (a random schema per process, dropped at teardown).
Tests kill those processes (SIGKILL, SIGTERM, fault points of eventshop.platform.faults) and
the broker itself (SIGKILL to beam.smp), then observe outcomes only from the outside: rows in
the services' schemas, queue depths reported by `rabbitmqctl`, exit codes, /health/ready.

Nothing is mocked. Every process started is killed at teardown whatever the test did, and the
broker is always started again if a test stopped it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest

from eventshop.platform.bus.topology import declare_exchange
from eventshop.platform.bus.topology import queue_depth as topology_queue_depth
from eventshop.platform.settings import PlatformSettings
from tests.e2e.running_platform import platform, shop  # noqa: F401  (the whole-platform fixtures)

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
APP = "tests.support.app:definition"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- RabbitMQ --------------------------------------------------------------------------------------
def rabbitmqctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


async def queue_depth(amqp_url: str, queue: str) -> tuple[int, int] | None:
    """(messages ready, consumers) of a queue, asked of the broker now by a passive declare.

    Live, unlike `rabbitmqctl list_queues`, whose numbers for a quorum queue lag by the stats
    interval (5 s); ready excludes what a consumer holds unacknowledged. None while the
    broker does not answer.
    """
    try:
        conn = await aio_pika.connect(amqp_url, timeout=5)
    except Exception:  # refused, reset, booting, timed out: not answering
        return None
    try:
        return await topology_queue_depth(await conn.channel(), queue)
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            await conn.close()


def _port_open(port: int = 5672) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


class Broker:
    """The machine's RabbitMQ node (`rabbitmq-server -detached`), killed and started again."""

    def beam_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-f", "beam.smp"], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def is_up(self) -> bool:
        return (
            bool(self.beam_pids())
            and rabbitmqctl("await_startup", "--timeout", "5", timeout=20).returncode == 0
            and _port_open()
        )

    def kill9(self) -> list[int]:
        pids = self.beam_pids()
        assert pids, "no beam.smp process: is RabbitMQ running?"
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.beam_pids() or _port_open():
            assert time.monotonic() < deadline, "beam.smp still alive 10 s after SIGKILL"
            time.sleep(0.05)
        return pids

    def start(self, timeout: float = 90) -> None:
        """Start the node if it is not running, and wait until it serves AMQP on 5672."""
        deadline = time.monotonic() + timeout
        if not self.beam_pids():
            subprocess.run(
                ["rabbitmq-server", "-detached"], capture_output=True, timeout=60, check=False
            )
        while True:
            # await_startup fails at once until the node has registered with epmd: poll it
            if rabbitmqctl("await_startup", "--timeout", "10", timeout=30).returncode == 0 and (
                _port_open()
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"RabbitMQ not back within {timeout:.0f} s")
            if not self.beam_pids():  # the detached start died: try once more
                subprocess.run(
                    ["rabbitmq-server", "-detached"], capture_output=True, timeout=60, check=False
                )
            time.sleep(0.5)


@pytest.fixture
def broker() -> Iterator[Broker]:
    """The broker, guaranteed running again after the test, however the test ended."""
    b = Broker()
    b.start()
    try:
        yield b
    finally:
        b.start()
        status = rabbitmqctl("status", timeout=60)
        assert status.returncode == 0, f"rabbitmqctl status failed: {status.stderr}"
        epmd = subprocess.run(["pgrep", "-x", "epmd"], capture_output=True, text=True)
        assert epmd.stdout.strip(), "epmd is not running after the broker restart"


@pytest.fixture
async def pong_sink(settings: PlatformSettings) -> None:
    """A bounded queue for `selfcheck.ponged`, which the test service emits for every ping.

    Published with `mandatory`, an event nobody is bound to comes back as an error and its
    outbox row is retried with back-off; in a deployment somebody consumes pongs, so here a
    sink keeping only the last one does, and the relays never spin on returned messages.
    """
    conn = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await conn.channel()
        exchange = await declare_exchange(channel, settings.exchange)
        queue = await channel.declare_queue(
            "e2e.pong_sink",
            durable=True,
            arguments={"x-max-length": 1, "x-overflow": "drop-head"},
        )
        await queue.bind(exchange, routing_key="selfcheck.ponged")
    finally:
        await conn.close()


# -- service processes -----------------------------------------------------------------------------
@dataclass
class ServiceProcess:
    """One `eventshop run tests.support.app:definition` process; can be started again."""

    name: str
    schema: str
    port: int
    settings: PlatformSettings
    log_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    runs: int = 0
    log_path: Path | None = None

    def env(self, fault: str | None) -> dict[str, str]:
        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSHOP_")}
        env.update(
            PYTHONUNBUFFERED="1",
            EVENTSHOP_TEST_SERVICE=self.name,
            EVENTSHOP_TEST_SCHEMA=self.schema,
            EVENTSHOP_AMQP_URL=s.amqp_url,
            EVENTSHOP_DATABASE_URL=s.database_url,
            EVENTSHOP_EXCHANGE=s.exchange,
            EVENTSHOP_RETRY_DELAYS_MS=f"[{','.join(str(d) for d in s.retry_delays_ms)}]",
            EVENTSHOP_RELAY_POLL_S=str(s.relay_poll_s),
            EVENTSHOP_CONFIRM_TIMEOUT_S=str(s.confirm_timeout_s),
            EVENTSHOP_HANDLER_TIMEOUT_S=str(s.handler_timeout_s),
            EVENTSHOP_BROKER_IDENTITY=s.broker_identity,
        )
        env.update(self.extra_env)
        if fault:
            env["EVENTSHOP_FAULT"] = fault
        return env

    def start(self, *, fault: str | None = None) -> ServiceProcess:
        assert not self.running, f"{self.name} is already running"
        self.runs += 1
        self.log_path = self.log_dir / f"{self.name}.run{self.runs}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "eventshop.cli.main", "run", APP, "--port", str(self.port)],
                cwd=REPO_ROOT,
                env=self.env(fault),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a ^C to pytest does not reach it; teardown kills it
            )
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, chars: int = 4_000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return self.log_path.read_text(errors="replace")[-chars:]

    async def ready(self, within: float = 30) -> None:
        """Wait until GET /health/ready answers 200; fail early if the process exits."""
        deadline = time.monotonic() + within
        last: Any = None
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                if not self.running:
                    pytest.fail(
                        f"{self.name} exited with {self.returncode} before it was ready;"
                        f" log:\n{self.log_tail()}"
                    )
                try:
                    r = await client.get(f"http://127.0.0.1:{self.port}/health/ready")
                    if r.status_code == 200:
                        return
                    last = r.text
                except httpx.HTTPError as exc:
                    last = repr(exc)
                if time.monotonic() > deadline:
                    pytest.fail(f"{self.name} not ready in {within} s ({last}):\n{self.log_tail()}")
                await asyncio.sleep(0.1)

    async def health(self) -> str:
        """What GET /health/ready answers now: status code and body."""
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                r = await client.get(f"http://127.0.0.1:{self.port}/health/ready")
                return f"{r.status_code} {r.text}"
        except httpx.HTTPError as exc:
            return repr(exc)

    async def started(self, *, fault: str | None = None, within: float = 30) -> ServiceProcess:
        self.start(fault=fault)
        await self.ready(within)
        return self

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    async def exited(self, within: float) -> int:
        """Wait for the process to end by itself; its exit code (-N for signal N)."""
        deadline = time.monotonic() + within
        while self.running:
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name} still running after {within} s:\n{self.log_tail()}")
            await asyncio.sleep(0.05)
        assert self.proc is not None
        return int(self.proc.returncode)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)

    async def kill9(self) -> int:
        self.signal(signal.SIGKILL)
        return await self.exited(10)

    def kill_now(self) -> None:
        """Teardown: SIGKILL whatever is left of the process group, and reap it."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


ServiceFactory = Callable[..., ServiceProcess]


@pytest.fixture
async def services(
    settings: PlatformSettings, tmp_path: Path, pong_sink: None
) -> AsyncIterator[ServiceFactory]:
    """Make test service processes (not started) with a random service name, schema and port.

    At teardown every process is SIGKILLed (if still alive) and every schema dropped.
    """
    made: list[ServiceProcess] = []

    def make(role: str, **extra_env: str) -> ServiceProcess:
        name = f"e2e_{role}_{uuid.uuid4().hex[:8]}"
        svc = ServiceProcess(
            name=name,
            schema=name,
            port=free_port(),
            settings=settings,
            log_dir=tmp_path,
            extra_env={k.upper(): v for k, v in extra_env.items()},
        )
        made.append(svc)
        return svc

    try:
        yield make
    finally:
        for svc in made:
            svc.kill_now()
        conn = await asyncpg.connect(settings.database_url)
        try:
            for svc in made:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{svc.schema}" CASCADE')
        finally:
            await conn.close()


@pytest.fixture
async def db(settings: PlatformSettings) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection for observing the services' schemas (names are schema-qualified)."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        yield conn
    finally:
        await conn.close()
