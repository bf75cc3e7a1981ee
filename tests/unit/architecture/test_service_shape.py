"""Every service keeps the one shape docs/SERVICES.md describes (its files, read without I/O).

A service folder holds the required slots and only named optional ones; every `emit(` of a
service is in its handlers.py; its api.py is a module-level router that never touches the
store or a unit of work; its composition root keys handlers by contract class; and nothing
reads settings while a module is imported.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from eventshop.contracts import PRODUCERS, EventPayload
from eventshop.platform.runtime import load_definition
from eventshop.platform.service import EVERY_EVENT
from eventshop.services import PORTS

SERVICES_DIR = Path(__file__).resolve().parents[3] / "src" / "eventshop" / "services"
REQUIRED = {"__init__.py", "domain.py", "handlers.py", "api.py", "store.py", "service.py"}
OPTIONAL = {
    "settings.py",
    "adapters.py",
    "jobs.py",
    "projections.py",
    "eventlog.py",
    "metrics.py",
}
#: the gateway owns no tables and handles no events (docs/SERVICES.md): no domain, store,
#: handlers or migrations; its adapters may be a package
GATEWAY_REQUIRED = {"__init__.py", "api.py", "service.py"}
GATEWAY_OPTIONAL = {"settings.py", "edge.py", "adapters.py", "adapters", "handlers.py", "domain.py"}

SERVICES = sorted(p.name for p in SERVICES_DIR.iterdir() if (p / "service.py").is_file())


def _entries(service: str) -> set[str]:
    return {
        p.name
        for p in (SERVICES_DIR / service).iterdir()
        if p.name != "__pycache__" and (p.suffix == ".py" or p.is_dir())
    }


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def test_every_service_in_the_registry_has_a_folder() -> None:
    assert set(SERVICES) == set(PORTS)


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_folder_has_its_slots_and_no_others(service: str) -> None:
    entries = _entries(service)
    if service == "gateway":
        required, allowed = GATEWAY_REQUIRED, GATEWAY_REQUIRED | GATEWAY_OPTIONAL
    else:
        required, allowed = REQUIRED | {"migrations"}, REQUIRED | OPTIONAL | {"migrations"}
    assert required - entries == set(), f"{service} lacks slots"
    assert entries - allowed == set(), f"{service} has files outside the shape"


def _emits(path: Path) -> list[int]:
    return [
        node.lineno
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "emit"
    ]


@pytest.mark.parametrize("service", SERVICES)
def test_every_emit_of_a_service_is_in_its_handlers(service: str) -> None:
    elsewhere = {
        str(path.relative_to(SERVICES_DIR)): lines
        for path in sorted((SERVICES_DIR / service).rglob("*.py"))
        if path.name != "handlers.py" and (lines := _emits(path))
    }
    assert elsewhere == {}


@pytest.mark.parametrize("service", SERVICES)
def test_api_is_a_module_level_router_that_only_calls_handlers(service: str) -> None:
    tree = _tree(SERVICES_DIR / service / "api.py")
    assigned = {
        target.id
        for node in tree.body
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    }
    assert "router" in assigned, f"{service}/api.py has no module-level `router`"
    imported = {
        f"{node.module}.{alias.name}" if node.module else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    touching = sorted(
        name
        for name in imported
        if name.endswith((".store", ".UnitOfWork")) or name == f"eventshop.services.{service}.store"
    )
    assert touching == [], f"{service}/api.py reaches past its handlers"
    nested = [
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for inner in ast.walk(node)
        if inner is not node and isinstance(inner, ast.AsyncFunctionDef)
    ]
    assert nested == [], f"{service}/api.py defines routes inside functions: {nested}"


@pytest.mark.parametrize("service", SERVICES)
def test_the_composition_root_keys_handlers_by_contract(service: str) -> None:
    definition = load_definition(service)
    assert definition.name == service
    assert definition.port == PORTS[service]
    for key in definition.handlers:
        assert key == EVERY_EVENT or (isinstance(key, type) and issubclass(key, EventPayload)), key
    for published in definition.publishes:
        assert issubclass(published, EventPayload)
        assert PRODUCERS[published.event_type] == service


#: imports every module of every service while a pydantic-settings class refuses to be built
IMPORT_WITHOUT_SETTINGS = textwrap.dedent(
    """
    import importlib, pkgutil, sys
    import pydantic_settings

    def refuse(self, *args, **kwargs):
        raise RuntimeError(f"{type(self).__name__} read while importing")

    pydantic_settings.BaseSettings.__init__ = refuse
    import eventshop.services as services

    bad = []
    for info in pkgutil.walk_packages(services.__path__, "eventshop.services."):
        try:
            importlib.import_module(info.name)
        except RuntimeError as exc:
            bad.append(f"{info.name}: {exc}")
    print("\\n".join(bad))
    sys.exit(1 if bad else 0)
    """
)


def test_no_service_reads_settings_at_import() -> None:
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_WITHOUT_SETTINGS],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
