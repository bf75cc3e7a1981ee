"""`eventshop up --replicas`: the spec is parsed before anything starts, and every form that makes
no sense is refused in one line with usage's exit code 2; supervisord is then told to run that many
processes of the service. Pure: nothing is started (`supervise.start` is replaced)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from eventshop.cli.main import app
from eventshop.tooling import supervise


def test_a_spec_names_each_service_and_its_count() -> None:
    assert supervise.parse_replicas("inventory=3,payments=2") == {"inventory": 3, "payments": 2}
    assert supervise.parse_replicas(" inventory = 16 ") == {"inventory": 16}
    assert supervise.parse_replicas("gateway=2") == {"gateway": 2}
    assert supervise.parse_replicas(None) == {}


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("", "--replicas is empty"),
        ("inventory", "'inventory' is not service=count"),
        ("inventory=", "'inventory=' is not service=count"),
        ("=3", "'=3' is not service=count"),
        ("inventory=3,", "'' is not service=count"),
        ("inventory=3,,payments=2", "'' is not service=count"),
        ("inventory:3", "'inventory:3' is not service=count"),
        ("warehouse=2", "unknown service 'warehouse'"),
        ("smtp-sink=2", "unknown service 'smtp-sink'"),
        ("inventory=2,inventory=3", "inventory is given twice"),
        ("inventory=three", "inventory=three: the count is not a whole number"),
        ("inventory=2.5", "inventory=2.5: the count is not a whole number"),
        ("inventory=0x3", "inventory=0x3: the count is not a whole number"),
        ("inventory=0", "inventory=0: the count must be from 1 to 16"),
        ("inventory=-2", "inventory=-2: the count must be from 1 to 16"),
        ("inventory=17", "inventory=17: the count must be from 1 to 16"),
        ("inventory=100000", "inventory=100000: the count must be from 1 to 16"),
    ],
)
def test_every_bad_form_is_refused_with_its_reason(spec: str, says: str) -> None:
    with pytest.raises(supervise.ReplicasError) as refused:
        supervise.parse_replicas(spec)
    assert says in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("spec", ["inventory=0", "bogus=2", "inventory=x", "payments"])
def test_up_refuses_a_bad_spec_in_one_line_with_exit_code_2_before_starting_anything(
    spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def start(*args: object, **kwargs: object) -> None:
        raise AssertionError("started with a spec that makes no sense")

    monkeypatch.setattr(supervise, "start", start)
    result = CliRunner().invoke(app, ["up", "--replicas", spec])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --replicas"), result.output


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> supervise.Layout:
    monkeypatch.setenv("EVENTSHOP_SECRETS_DIR", str(tmp_path / "secrets"))
    return supervise.Layout(tmp_path)


def program(layout: supervise.Layout, name: str) -> list[str]:
    section = layout.conf.read_text().split(f"[program:{name}]\n", 1)[1].split("\n[", 1)[0]
    return section.splitlines()


def test_a_service_of_n_replicas_is_one_program_of_n_processes_sharing_its_port(
    layout: supervise.Layout,
) -> None:
    supervise.write_config(layout, {}, {"inventory": 3, "payments": 2})
    inventory = program(layout, "inventory")
    assert "numprocs=3" in inventory
    assert "process_name=%(program_name)s-%(process_num)d" in inventory
    assert any(line.endswith("inventory-%(process_num)d.log") for line in inventory)
    env = next(line for line in inventory if line.startswith("environment="))
    assert 'EVENTSHOP_REUSE_PORT="true"' in env
    # the service's share of PostgreSQL's connections divided among its processes, not tripled
    assert 'EVENTSHOP_DB_POOL_MAX="4"' in env
    assert "numprocs=2" in program(layout, "payments")


def test_a_service_of_one_process_keeps_its_plain_program(layout: supervise.Layout) -> None:
    supervise.write_config(layout, {}, {"inventory": 3})
    orders = program(layout, "orders")
    assert not any(line.startswith(("numprocs", "process_name")) for line in orders)
    assert any(line.endswith("/orders.log") for line in orders)
    assert "EVENTSHOP_REUSE_PORT" not in "\n".join(orders)
    assert "EVENTSHOP_DB_POOL_MAX" not in "\n".join(orders)


def test_a_later_start_without_replicas_runs_one_process_of_each(
    layout: supervise.Layout,
) -> None:
    supervise.write_config(layout, {}, {"inventory": 3})
    supervise.write_config(layout, {})
    assert "numprocs" not in layout.conf.read_text()


def test_the_pids_of_every_replica_are_read_from_supervisords_status(
    layout: supervise.Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    status = (
        "inventory:inventory-0            RUNNING   pid 4101, uptime 0:00:09\n"
        "inventory:inventory-1            STARTING  \n"
        "inventory:inventory-2            RUNNING   pid 4103, uptime 0:00:09\n"
    )

    class Done:
        stdout = status

    asked: list[tuple[str, ...]] = []

    def ctl(layout: supervise.Layout, *args: str) -> Done:
        asked.append(args)
        return Done()

    monkeypatch.setattr(supervise, "_supervisorctl", ctl)
    assert supervise.pids_of(layout, "inventory") == [4101, 4103]
    assert supervise.service_pid(layout, "inventory") == "4101"
    assert asked[0] == ("status", "inventory:*")
