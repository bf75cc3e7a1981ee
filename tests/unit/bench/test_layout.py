"""The benchmarks and the tooling stand apart from the product (their imports, read without
I/O), and the `eventshop bench` commands keep their options."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eventshop.bench.cli import bench_app

SRC = Path(__file__).resolve().parents[3] / "src" / "eventshop"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _importing(folder: str, prefix: str) -> dict[str, list[str]]:
    bad = {}
    for path in sorted((SRC / folder).rglob("*.py")):
        hits = sorted(i for i in _imports(path) if i == prefix or i.startswith(prefix + "."))
        if hits:
            bad[str(path.relative_to(SRC))] = hits
    return bad


def test_the_benchmarks_do_not_import_the_cli() -> None:
    assert _importing("bench", "eventshop.cli") == {}


def test_the_tooling_does_not_import_the_cli_or_the_benchmarks() -> None:
    assert _importing("tooling", "eventshop.cli") == {}
    assert _importing("tooling", "eventshop.bench") == {}


@pytest.mark.parametrize("folder", ["services", "platform", "contracts", "gateway"])
def test_the_product_does_not_import_the_tooling(folder: str) -> None:
    assert _importing(folder, "eventshop.tooling") == {}


def test_no_benchmark_or_tooling_module_is_over_400_lines() -> None:
    paths = [*(SRC / "bench").rglob("*.py"), *(SRC / "tooling").rglob("*.py")]
    long = {
        str(p.relative_to(SRC)): n for p in paths if (n := len(p.read_text().splitlines())) > 400
    }
    assert long == {}


def test_the_cli_registers_no_benchmark_event_type() -> None:
    # the bus benchmark's event type is registered only in its child processes
    code = (
        "import eventshop.cli.main\n"
        "from eventshop.contracts import registry\n"
        "print(registry.knows('bench.pinged'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("command", "options"),
    [
        (
            "bus",
            ["--events", "--raw-messages", "--no-raw", "--write-batch", "--prefetch"],
        ),
        (
            "orders",
            [
                "--orders",
                "--concurrency",
                "--rate",
                "--half-rate",
                "--arrivals",
                "--as-is",
                "--seed",
            ],
        ),
        (
            "eventstore",
            ["--rounds", "--appends", "--concurrency", "--loads", "--orders", "--rebuild-batch"],
        ),
    ],
)
def test_each_benchmark_command_has_its_options(command: str, options: list[str]) -> None:
    result = CliRunner().invoke(bench_app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for option in options:
        assert option in result.output


def test_bench_orders_refuses_an_unknown_arrival_process() -> None:
    result = CliRunner().invoke(bench_app, ["orders", "--arrivals", "bursty"])
    assert result.exit_code == 2
