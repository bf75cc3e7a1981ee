"""The layering rules of docs/STYLE.md §1, checked by walking every module's imports (no I/O)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[3] / "src" / "eventshop"
INFRASTRUCTURE = (
    "asyncpg",
    "aio_pika",
    "aiormq",
    "pamqp",
    "fastapi",
    "starlette",
    "redis",
    "httpx",
    "aiohttp",
    "uvicorn",
    "smtplib",
)


def _module(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module a file imports, and every `module.name` it imports from one; a relative
    import is resolved against the file's package, so it is checked like an absolute one."""
    package = _module(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


MODULES = {_module(p): _imports(p) for p in sorted(SRC.rglob("*.py"))}
DOMAINS = [m for m in MODULES if m.endswith(".domain") or ".domain." in m]
SERVICES = sorted(
    {m.split(".")[2] for m in MODULES if m.startswith("eventshop.services.") and m.count(".") >= 2}
)


def _offending(module: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        i for i in MODULES[module] if any(i == f or i.startswith(f + ".") for f in forbidden)
    )


def test_the_walk_sees_the_services_and_their_domains() -> None:
    assert {"orders", "inventory", "payments", "loyalty"} <= set(SERVICES)
    assert {
        "eventshop.services.orders.domain",
        "eventshop.services.payments.domain",
        "eventshop.services.notifications.domain",
    } <= set(DOMAINS)


@pytest.mark.parametrize("module", DOMAINS)
def test_domain_code_imports_no_infrastructure_and_no_platform(module: str) -> None:
    # a plain prefix: `redis_om` or `httpx_sse` (plugins of the infrastructure) are refused too
    forbidden = (*INFRASTRUCTURE, "eventshop.platform")
    assert sorted(i for i in MODULES[module] if i.startswith(forbidden)) == []


@pytest.mark.parametrize("module", [m for m in MODULES if m.startswith("eventshop.platform")])
def test_the_platform_knows_no_service(module: str) -> None:
    assert _offending(module, ("eventshop.services", "eventshop.cli")) == []


@pytest.mark.parametrize("module", [m for m in MODULES if m.startswith("eventshop.contracts")])
def test_contracts_import_no_platform_and_no_service(module: str) -> None:
    assert _offending(module, ("eventshop.platform", "eventshop.services")) == []


@pytest.mark.parametrize("service", SERVICES)
def test_no_service_imports_another(service: str) -> None:
    others = tuple(f"eventshop.services.{s}" for s in SERVICES if s != service)
    own = [m for m in MODULES if m.startswith(f"eventshop.services.{service}")]
    bad = {m: _offending(m, others) for m in own}
    assert {m: v for m, v in bad.items() if v} == {}
