"""The domain layers stay pure: orders' and payments' domain modules import no infrastructure.

Reads the source with `ast`; imports nothing it checks, fakes nothing.
"""

from __future__ import annotations

import ast
from importlib import util
from pathlib import Path

import pytest

FORBIDDEN = ("eventshop.platform", "asyncpg", "aio_pika", "aiormq", "fastapi", "redis", "httpx")


def imported_modules(module: str) -> set[str]:
    spec = util.find_spec(module)
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    "module", ["eventshop.services.orders.domain", "eventshop.services.payments.domain"]
)
def test_domain_imports_no_infrastructure(module: str) -> None:
    bad = {m for m in imported_modules(module) if m.startswith(FORBIDDEN)}
    assert bad == set()
