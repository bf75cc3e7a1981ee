"""The one image (deploy/Dockerfile), built offline by scripts/build-image.sh, runs a real
service: the container (host networking, on a free loopback port) serves the users service
against the real RabbitMQ, PostgreSQL and Redis, as a non-root user, and Docker's HEALTHCHECK
calls it healthy. What is real: the Docker engine, the image, the service, the infrastructure.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from eventshop.platform.settings import PlatformSettings
from tests.e2e.conftest import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "eventshop:dev"


def docker(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr.strip()}"
    return done.stdout.strip()


@pytest.fixture(scope="module")
def image() -> str:
    """Built (or found current in Docker's layer cache) once per run."""
    built = subprocess.run(
        [str(ROOT / "scripts" / "build-image.sh")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return IMAGE


@pytest.fixture
def users_container(image: str, settings: PlatformSettings) -> Iterator[tuple[str, int]]:
    port = free_port()
    name = f"eventshop-test-users-{uuid.uuid4().hex[:8]}"
    assert settings.internal_key is not None
    docker(
        "run", "--detach", "--name", name, "--network", "host",
        "-e", "EVENTSHOP_SERVICE=users",
        "-e", f"EVENTSHOP_PORT={port}",
        "-e", "EVENTSHOP_HTTP_HOST=127.0.0.1",
        "-e", f"EVENTSHOP_AMQP_URL={settings.amqp_url}",
        "-e", f"EVENTSHOP_DATABASE_URL={settings.database_url}",
        "-e", "EVENTSHOP_BROKER_IDENTITY=shared",
        "-e", f"EVENTSHOP_INTERNAL_KEY={settings.internal_key.get_secret_value()}",
        image,
    )  # fmt: skip
    try:
        yield name, port
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True, timeout=60)


def health(name: str) -> str:
    return docker("inspect", "--format", "{{.State.Health.Status}}", name)


def test_the_image_runs_a_service_healthy_as_a_non_root_user(
    users_container: tuple[str, int],
) -> None:
    name, port = users_container
    deadline = time.monotonic() + 90
    while health(name) != "healthy":
        assert time.monotonic() < deadline, docker("logs", "--tail", "30", name)
        assert docker("inspect", "--format", "{{.State.Running}}", name) == "true", docker(
            "logs", "--tail", "30", name
        )
        time.sleep(1)
    assert docker("exec", name, "id", "-u") == "10001"
    # the service works: an account registered over its HTTP lands in PostgreSQL
    email = f"image-{uuid.uuid4().hex[:8]}@example.com"
    account = {"email": email, "password": "long enough password", "name": "Image"}
    r = httpx.post(f"http://127.0.0.1:{port}/users", json=account, timeout=10)
    assert r.status_code == 201, r.text
    assert r.json()["email"] == email
    ready = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=10)
    assert ready.status_code == 200, ready.text
