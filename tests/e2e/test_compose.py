"""The platform in containers, from nothing: images built, `scripts/compose.sh up` (under a
project name and ports of its own), a demo of a hundred orders through the gateway on
127.0.0.1 while a service container and the RabbitMQ container are restarted, every order
final and every invariant held (the demo checks them in PostgreSQL, inside the compose
network); then inventory scaled to three containers that all consume, the demo again; the
mail and the traces seen from the host; the whole project restarted, nothing lost.

Last, on the same containers, `eventshop chaos --platform compose` as an operator runs it: a
service container's process killed -9 again and again (its restart policy starts it again),
the RabbitMQ container killed and started again, the PostgreSQL container killed and started
again, at CI's size. Each must end as on the process platform (tests/e2e/test_chaos.py):
nothing lost, duplicated, unexpected or stuck, every invariant true, nothing unsent, nothing
parked but what the scenario parked. The chaos command reaches PostgreSQL and AMQP through its
tunnel container, for the run only (ADR 0015): none is left after it. The scenarios come after
every other test here because they park messages on purpose (the demos assert none parked).
Then everything is taken down with its volumes: one project brought up for the module.

What is real: Docker, every image, every container.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from eventshop.chaos.compose import read_env_file
from eventshop.services import METRICS_PORTS
from eventshop.tooling.shopclient import ADMIN, ADMIN_PASSWORD
from tests.e2e.conftest import free_port
from tests.support.chaos import assert_came_through, chaos_verdict

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
#: a project of its own per run: nothing of another run (or of `make compose-up`) is touched
PROJECT = f"eventshop-test-{uuid.uuid4().hex[:6]}"
ORDERS = int(os.environ.get("EVENTSHOP_COMPOSE_ORDERS", "100"))
CHAOS_ORDERS = int(os.environ.get("EVENTSHOP_CHAOS_ORDERS", "50"))


def run(*args: str, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "scripts" / "compose.sh"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def compose() -> Iterator[dict[str, str]]:
    env = {
        **os.environ,
        "EVENTSHOP_COMPOSE_PROJECT": PROJECT,
        "EVENTSHOP_GATEWAY_PORT": str(free_port()),
        "EVENTSHOP_RABBITMQ_UI_PORT": str(free_port()),
        "EVENTSHOP_PROMETHEUS_PORT": str(free_port()),
        "EVENTSHOP_MAILBOX_PORT": str(free_port()),
        "EVENTSHOP_CONSOLE_PORT": str(free_port()),
    }
    up = run("up", env=env)
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        yield env
    finally:
        down = run("down", env=env, timeout=300)
        assert down.returncode == 0, down.stderr[-2000:]
        for what in ("ps -a", "volume ls"):  # nothing of the project left
            left = subprocess.run(
                ["docker", *what.split(), "-q", "--filter",
                 f"label=com.docker.compose.project={PROJECT}"],
                capture_output=True, text=True, timeout=60, check=True,
            ).stdout.split()  # fmt: skip
            assert left == [], what


def demo(env: dict[str, str], orders: int = ORDERS) -> dict[str, Any]:
    done = run("demo", "--orders", str(orders), env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def assert_whole(result: dict[str, Any], orders: int = ORDERS) -> None:
    assert result["orders"] == result["final"] == orders
    assert result["invariants_ok"], result["violations"]
    assert result["parked"] == 0


def test_a_hundred_orders_while_a_service_and_the_broker_restart(compose: dict[str, str]) -> None:
    outcome: dict[str, Any] = {}
    running = threading.Thread(target=lambda: outcome.update(demo(compose)))
    running.start()
    time.sleep(8)  # the shop filled, orders under way
    for container in ("inventory", "rabbitmq"):
        restarted = run("restart", container, env=compose, timeout=300)
        assert restarted.returncode == 0, restarted.stderr[-2000:]
        time.sleep(3)
    running.join(timeout=600)
    assert not running.is_alive()
    assert_whole(outcome)


def test_inventory_scaled_to_three_all_consume(compose: dict[str, str]) -> None:
    scaled = run("scale", "inventory=3", env=compose, timeout=300)
    assert scaled.returncode == 0, scaled.stderr[-2000:]
    api = f"http://127.0.0.1:{compose['EVENTSHOP_RABBITMQ_UI_PORT']}/api"
    secrets = dict(
        line.split("=", 1) for line in (ROOT / "var/compose/.env").read_text().splitlines()
    )
    auth = ("eventshop-admin", secrets["EVENTSHOP_RABBITMQ_ADMIN_PASSWORD"])

    def consumers() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = httpx.get(
            f"{api}/consumers/eventshop", auth=auth, timeout=10
        ).json()
        return [c for c in found if c["queue"]["name"] == "inventory"]

    deadline = time.monotonic() + 120
    while len(consumers()) < 3:
        assert time.monotonic() < deadline, consumers()
        time.sleep(2)
    assert_whole(demo(compose))
    # each of the three got deliveries (its channel's count, as the broker keeps it)
    delivered = []
    for consumer in consumers():
        channel = consumer["channel_details"]["name"]
        stats = httpx.get(f"{api}/channels/{channel}", auth=auth, timeout=10).json()
        delivered.append(stats.get("message_stats", {}).get("deliver_get", 0))
    assert len(delivered) == 3 and all(n > 0 for n in delivered), delivered


def test_prometheus_scrapes_every_service(compose: dict[str, str]) -> None:
    url = f"http://127.0.0.1:{compose['EVENTSHOP_PROMETHEUS_PORT']}/api/v1/targets"

    def up_services() -> set[str]:
        targets = httpx.get(url, timeout=10).json()["data"]["activeTargets"]
        return {t["discoveredLabels"]["__meta_dns_name"] for t in targets if t["health"] == "up"}

    deadline = time.monotonic() + 90
    while up_services() != set(METRICS_PORTS):
        assert time.monotonic() < deadline, up_services()
        time.sleep(2)


def test_the_compose_file_is_valid_for_docker_compose(compose: dict[str, str]) -> None:
    checked = run("config", "-q", env=compose, timeout=60)
    assert checked.returncode == 0, checked.stderr


def command_lines_while(args: list[str], env: dict[str, str]) -> tuple[str, str, set[str]]:
    """`scripts/compose.sh *args`'s output, and every command line seen on the host while it
    ran (sampled every 20 ms: docker-compose's own process lives for seconds)."""
    proc = subprocess.Popen(
        [str(ROOT / "scripts" / "compose.sh"), *args], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    seen: set[str] = set()

    def sample() -> None:
        while proc.poll() is None:
            for found in psutil.process_iter(["cmdline"]):
                seen.add(" ".join(found.info.get("cmdline") or []))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    out, err = proc.communicate(timeout=300)
    sampler.join()
    assert proc.returncode == 0, err[-2000:]
    return out, err, seen


def test_the_operators_commands_work_on_the_containers(compose: dict[str, str]) -> None:
    out, _, command_lines = command_lines_while(["ops", "status", "--json"], compose)
    # the operator's broker password and the database's superuser's reach the container through
    # docker-compose's environment, never a command line every user of the host can read
    env_file = read_env_file(ROOT / "var" / "compose" / ".env")
    passwords = [env_file[f"EVENTSHOP_{who}_PASSWORD"] for who in ("POSTGRES", "OPERATOR_AMQP")]
    assert any("docker-compose" in line and " run " in line for line in command_lines)
    leaks = sum(any(p in line for p in passwords) for line in command_lines)
    assert leaks == 0, f"{leaks} command line(s) carried a password"  # which, never printed
    rows = {r["service"]: r for r in json.loads(out.strip().splitlines()[-1])}
    assert set(rows) == set(METRICS_PORTS)
    assert all(r["ready"] for r in rows.values()), rows
    assert rows["inventory"]["consumers"] >= 1 and rows["inventory"]["handled"] > 0
    parked = run("ops", "dlq", "list", env=compose, timeout=300)
    assert parked.returncode == 0, parked.stderr[-2000:]
    assert "0 parked message(s)" in parked.stdout + parked.stderr


def mailbox(env: dict[str, str]) -> dict[str, Any]:
    url = f"http://127.0.0.1:{env['EVENTSHOP_MAILBOX_PORT']}/api/messages"
    found: dict[str, Any] = httpx.get(url, params={"limit": 1}, timeout=10).json()
    return found


def test_the_mail_sent_is_seen_in_the_mailbox_view(compose: dict[str, str]) -> None:
    # one notification per final order of the demos run so far: two of ORDERS each
    assert mailbox(compose)["total"] >= 2 * ORDERS
    page = httpx.get(f"http://127.0.0.1:{compose['EVENTSHOP_MAILBOX_PORT']}/", timeout=10)
    assert page.status_code == 200 and "eventshop mailbox" in page.text


def spans_in(output: str) -> list[dict[str, Any]]:
    """The spans `eventshop trace --json` printed: one JSON document, or one object a line."""
    try:
        found: list[dict[str, Any]] = json.loads(output)
    except ValueError:
        found = [json.loads(line) for line in output.splitlines() if line.strip()]
    return found


def test_the_operators_console_runs_beside_the_platform(compose: dict[str, str]) -> None:
    console = f"http://127.0.0.1:{compose['EVENTSHOP_CONSOLE_PORT']}"
    assert "Log in" in httpx.get(f"{console}/login", timeout=10).text
    with httpx.Client(base_url=console, timeout=20) as client:
        # the demos before made the development admin, as on one host
        signed = client.post(
            "/login", data={"email": ADMIN, "password": ADMIN_PASSWORD, "next": "/services"}
        )
        assert signed.status_code == 303, signed.text
        page = client.get("/services")
        assert page.status_code == 200
        for service in ("inventory", "orders", "archive"):  # read inside the compose network
            assert f'<tr data-service="{service}">' in page.text
        assert page.text.count('<span class="ok">ready</span>') == len(METRICS_PORTS)


def test_a_request_is_traced_across_containers(compose: dict[str, str]) -> None:
    correlation_id = f"compose-trace-{uuid.uuid4().hex[:8]}"
    gateway = f"http://127.0.0.1:{compose['EVENTSHOP_GATEWAY_PORT']}"
    answer = httpx.get(
        f"{gateway}/api/v1/products", headers={"X-Correlation-ID": correlation_id}, timeout=10
    )
    assert answer.status_code == 200
    deadline = time.monotonic() + 60  # spans are exported in batches, every few seconds
    while True:
        traced = run("ops", "trace", correlation_id, "--json", env=compose, timeout=300)
        services = set()
        if traced.returncode == 0:
            services = {span["service"] for span in spans_in(traced.stdout)}
        if {"gateway", "catalog"} <= services:
            break
        assert time.monotonic() < deadline, (services, traced.stderr[-2000:])
        time.sleep(3)


def ready(env: dict[str, str]) -> bool:
    """The whole platform ready, as the gateway sees it (Docker's port forward answers, then
    resets the connection, while the gateway's container is not yet listening)."""
    url = f"http://127.0.0.1:{env['EVENTSHOP_GATEWAY_PORT']}/health/ready"
    try:
        return httpx.get(url, params={"scope": "platform"}, timeout=10).is_success
    except httpx.HTTPError:
        return False


def test_a_restart_of_the_whole_project_loses_nothing(compose: dict[str, str]) -> None:
    before = mailbox(compose)["total"]
    restarted = run("restart", env=compose, timeout=600)
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    deadline = time.monotonic() + 240
    while not ready(compose):
        assert time.monotonic() < deadline, "not ready again after the restart"
        time.sleep(2)
    assert mailbox(compose)["total"] == before  # the mail volume kept
    # the demo's invariants are checked over every order in the database: the orders, stock,
    # payments and points of the runs before the restart included
    assert_whole(demo(compose, orders=20), orders=20)


# -- chaos on the containers: last, as the module's docstring says --------------------------------
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
        "chaos", scenario, "--platform", "compose", "--orders", str(CHAOS_ORDERS), "--rate", "8",
        "--seed", "7", "--settle", "120", "--results", str(results), env=compose,
    )  # fmt: skip
    result = chaos_verdict(done, results)
    assert result["platform"] == "compose"
    assert_came_through(result, CHAOS_ORDERS)
    assert all(f["recovered_s"] is not None for f in result["faults"]), result["faults"]
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
