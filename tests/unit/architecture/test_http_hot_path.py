"""What the HTTP apps must not do again, checked by reading the source (no I/O; ADR 0006).

- A route or a dependency written as a plain `def` is run by FastAPI on a worker thread, a hop
  per request (it cost the orders service a fifth of its CPU): every one is `async def`.
- A function middleware (`@app.middleware("http")`, starlette's `BaseHTTPMiddleware`) spawns a
  task and streams every body through memory streams (over half the gateway's CPU): middlewares
  are pure ASGI classes.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[3] / "src" / "eventshop"
ROUTE_DECORATORS = {"get", "post", "put", "patch", "delete", "head", "options", "api_route"}


def _trees() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(SRC.rglob("*.py")):
        yield path, ast.parse(path.read_text(), filename=str(path))


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(SRC.parent)}:{getattr(node, 'lineno', '?')}"


def _depends_targets(tree: ast.Module) -> Iterator[tuple[str, ast.Call]]:
    """The names passed to Depends(...) / Security(...)."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"Depends", "Security"}
            and node.args
            and isinstance(node.args[0], ast.Name)
        ):
            yield node.args[0].id, node


def _is_route(func: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for deco in func.decorator_list:
        target = deco.func if isinstance(deco, ast.Call) else deco
        if isinstance(target, ast.Attribute) and target.attr in ROUTE_DECORATORS:
            return True
    return False


def test_every_route_and_dependency_is_async() -> None:
    sync_functions: dict[str, list[str]] = {}
    used_as_dependency: dict[str, list[str]] = {}
    sync_routes: list[str] = []
    for path, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                sync_functions.setdefault(node.name, []).append(_where(path, node))
                if _is_route(node):
                    sync_routes.append(f"{node.name} ({_where(path, node)})")
        for name, call in _depends_targets(tree):
            used_as_dependency.setdefault(name, []).append(_where(path, call))
    assert used_as_dependency, "no Depends(...) found: has the code moved?"
    sync_dependencies = [
        f"{name} (defined {sync_functions[name]}, used {uses})"
        for name, uses in used_as_dependency.items()
        if name in sync_functions
    ]
    assert sync_dependencies == [], "dependencies run on a worker thread per request"
    assert sync_routes == [], "routes run on a worker thread per request"


def test_no_function_middleware() -> None:
    found: list[str] = []
    for path, tree in _trees():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "middleware"
            ):
                found.append(f"app.middleware(...) at {_where(path, node)}")
            if isinstance(node, ast.ImportFrom) and any(
                alias.name == "BaseHTTPMiddleware" for alias in node.names
            ):
                found.append(f"BaseHTTPMiddleware imported at {_where(path, node)}")
    assert found == []
