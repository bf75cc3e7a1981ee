"""The chaos scenarios on the compose platform (deploy/docker-compose.yml, `scripts/compose.sh
up`): its containers broken with the Docker CLI, on the project EVENTSHOP_COMPOSE_PROJECT
names (eventshop unless told), and read from this host (ADR 0015).

- a service killed -9: its container's process, from the host, so that the container's restart
  policy (`unless-stopped`) starts it again as after a crash (`docker kill` would not do: Docker
  takes it for an operator's stop and leaves the policy aside until the next start);
- the broker and the database: `docker kill -s KILL`, then `docker start`;
- Redis: `docker stop`, then `docker start`;
- a frozen service: `docker pause`, then `docker unpause`.

The load goes through the gateway the compose file publishes (EVENTSHOP_GATEWAY_PORT, 18000).
The checker, poison and duplicate need PostgreSQL and AMQP, which the compose file publishes to
nobody: for the length of one run a `chaos-tunnel` container (deploy/docker-compose.chaos.yml,
chaos/tunnel.py) forwards them to ports on 127.0.0.1 that Docker picks, and they are reached
there as the database's superuser and the broker's operator, with the passwords of
var/compose/.env. The tunnel is removed when the run ends.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import asyncpg
import httpx

from eventshop.chaos.faults import Outage
from eventshop.platform.settings import OPERATOR_USER, PlatformSettings
from eventshop.tooling import supervise
from eventshop.tooling.broker import VHOST

#: the scenarios the compose platform carries
SUPPORTED = (
    "kill-services", "kill-broker", "restart-postgres", "freeze", "stop-redis", "poison",
    "duplicate",
)  # fmt: skip
#: why it does not carry the others (yet): what it would take
REFUSED = {
    "network": (
        "network needs a fault proxy between one service and its broker and database; on the "
        "compose platform that is a proxy container in the project's network and the service's "
        "container created again with its URLs pointed at it, which is not built: run it "
        "against the process platform (eventshop up)"
    ),
    "clock-skew": (
        "clock-skew needs libfaketime preloaded into two services; on the compose platform "
        "that is libfaketime in the image and the services' containers created again with "
        "LD_PRELOAD and FAKETIME, which is not built: run it against the process platform "
        "(eventshop up)"
    ),
}
TUNNEL = "chaos-tunnel"


class ComposeError(RuntimeError):
    """The compose project is not there, or Docker refused what the scenario asked."""


def _docker(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise ComposeError(f"docker {' '.join(args)}: {done.stderr.strip()[:300]}")
    return done.stdout


def read_env_file(path: Path) -> dict[str, str]:
    """var/compose/.env's variables (`eventshop compose-env` wrote it, 0600)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ComposeError(f"{path} is missing: run scripts/compose.sh up first") from None
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


class ComposePlatform:
    name = "compose"
    freezing = "docker pause"

    def __init__(
        self, root: Path | None = None, project: str | None = None, gateway_port: int | None = None
    ) -> None:
        self.root = root or supervise.project_root()
        self.project = project or os.environ.get("EVENTSHOP_COMPOSE_PROJECT") or "eventshop"
        self.gateway_port = gateway_port or int(os.environ.get("EVENTSHOP_GATEWAY_PORT", "18000"))
        self.env_file = self.root / "var" / "compose" / ".env"

    def refusal(self, scenario: str) -> str | None:
        if scenario in SUPPORTED:
            return None
        return REFUSED.get(scenario, f"{scenario} has no form on the compose platform yet")

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}/api/v1"

    # -- the run's way in -----------------------------------------------------------------------
    def compose(self, *args: str, timeout: float = 300) -> None:
        """docker-compose on the project, with the chaos override file beside the compose file."""
        done = subprocess.run(
            ["docker-compose", "-p", self.project, "--env-file", str(self.env_file),
             "-f", str(self.root / "deploy" / "docker-compose.yml"),
             "-f", str(self.root / "deploy" / "docker-compose.chaos.yml"), *args],
            cwd=self.root, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise ComposeError(f"docker-compose {' '.join(args)}: {done.stderr.strip()[-500:]}")

    async def open(self) -> PlatformSettings:
        secrets = read_env_file(self.env_file)
        if not await asyncio.to_thread(self.containers, "gateway"):
            raise ComposeError(
                f"no gateway container in compose project {self.project!r}: scripts/compose.sh up"
            )
        await asyncio.to_thread(self.compose, "up", "-d", "--no-deps", TUNNEL)
        (tunnel,) = await asyncio.to_thread(self.containers, TUNNEL)
        pg_port = await asyncio.to_thread(self._published, tunnel, 5432)
        amqp_port = await asyncio.to_thread(self._published, tunnel, 5672)
        pg_password = quote(secrets["EVENTSHOP_POSTGRES_PASSWORD"], safe="")
        operator_password = quote(secrets["EVENTSHOP_OPERATOR_AMQP_PASSWORD"], safe="")
        settings = PlatformSettings(
            database_url=f"postgresql://postgres:{pg_password}@127.0.0.1:{pg_port}/eventshop",
            amqp_url=f"amqp://{OPERATOR_USER}:{operator_password}@127.0.0.1:{amqp_port}/"
            f"{quote(VHOST, safe='')}",
        )
        await _reachable(settings.database_url)
        return settings

    async def close(self) -> None:
        found = await asyncio.to_thread(self.containers, TUNNEL, every=True)
        if found:
            await asyncio.to_thread(_docker, "rm", "-f", *found)

    def _published(self, container: str, port: int) -> int:
        """The port on 127.0.0.1 Docker picked for `port` of `container`."""
        for line in _docker("port", container, f"{port}/tcp").splitlines():
            host, _, published = line.strip().rpartition(":")
            if host == "127.0.0.1":
                return int(published)
        raise ComposeError(f"{container} publishes no {port} on 127.0.0.1")

    # -- what the scenarios do ------------------------------------------------------------------
    def containers(self, service: str, *, every: bool = False) -> list[str]:
        """The ids of `service`'s containers in the project (running ones unless `every`), never
        a one-off's (`compose.sh ops` runs the provision service's image)."""
        return _docker(
            "ps", "-q", *(["-a"] if every else []),
            "--filter", f"label=com.docker.compose.project={self.project}",
            "--filter", f"label=com.docker.compose.service={service}",
            "--filter", "label=com.docker.compose.oneoff=False",
        ).split()  # fmt: skip

    async def ready(self) -> bool:
        url = f"http://127.0.0.1:{self.gateway_port}/health/ready"
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                r = await client.get(url, params={"scope": "platform"})
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    def kill_service(self, service: str, rng: random.Random) -> bool:
        found = self.containers(service)
        if not found:
            return False
        container = found[0] if len(found) == 1 else rng.choice(found)
        pid = int(_docker("inspect", "-f", "{{.State.Pid}}", container).strip() or 0)
        if pid <= 0:
            return False
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        except PermissionError:
            raise ComposeError(
                "killing a container's process needs the rights of Docker's root: run the "
                "chaos command as root"
            ) from None
        return True

    def freeze(self, service: str) -> Callable[[], None] | None:
        found = self.containers(service)
        if not found:
            return None
        container = found[0]
        _docker("pause", container)

        def thaw() -> None:
            _docker("unpause", container)

        return thaw

    def _outage(self, how: str, service: str, stop: tuple[str, ...]) -> Outage:
        found = self.containers(service, every=True)
        if not found:
            raise ComposeError(f"no {service} container in compose project {self.project!r}")
        return Outage(
            how, service, lambda: _docker(*stop, *found), lambda: _docker("start", *found)
        )

    def broker_outage(self) -> Outage:
        return self._outage("docker kill -s KILL", "rabbitmq", ("kill", "-s", "KILL"))

    def database_outage(self) -> Outage:
        return self._outage("docker kill -s KILL", "postgres", ("kill", "-s", "KILL"))

    def redis_outage(self) -> Outage:
        return self._outage("docker stop", "redis", ("stop",))


async def _reachable(database_url: str, within_s: float = 60.0) -> None:
    """Wait for the tunnel to carry a connection to PostgreSQL (Docker's port answers before the
    tunnel inside listens, then resets the connection)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            db = await asyncpg.connect(database_url, timeout=5)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise ComposeError(f"PostgreSQL not reached through the tunnel: {exc!r}") from exc
            await asyncio.sleep(0.5)
        else:
            await db.close()
            return
