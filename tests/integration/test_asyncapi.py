"""The AsyncAPI document `eventshop asyncapi` writes, checked by the official parser.

Real: Node.js running @asyncapi/parser (tools/asyncapi, installed by `make setup`), the same
parser AsyncAPI's own tools use. Nothing here talks to the broker.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from eventshop.asyncapi import build_asyncapi

pytestmark = pytest.mark.integration

TOOL = Path(__file__).resolve().parents[2] / "tools" / "asyncapi"


def parse(document: dict[str, object], tmp_path: Path) -> dict[str, object]:
    node = shutil.which("node")
    assert node is not None, "node is not installed: run `make setup`"
    assert (TOOL / "node_modules" / "@asyncapi" / "parser").is_dir(), "run `make setup`"
    path = tmp_path / "asyncapi.json"
    path.write_text(json.dumps(document))
    done = subprocess.run(
        [node, str(TOOL / "validate.mjs"), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report: dict[str, object] = json.loads(done.stdout)
    assert done.returncode == (0 if report["valid"] else 1), done.stderr
    return report


def test_the_generated_document_passes_the_official_parser(tmp_path: Path) -> None:
    report = parse(build_asyncapi(), tmp_path)
    assert report["errors"] == []
    assert report["valid"] is True


def test_the_parser_does_reject_a_dangling_reference(tmp_path: Path) -> None:
    """The check can fail: the document with one schema it shares taken out is refused."""
    document = build_asyncapi()
    shared = document["components"]["schemas"]
    assert "Line" in shared
    del shared["Line"]
    report = parse(document, tmp_path)
    assert report["valid"] is False
    assert any("Line" in str(e) for e in report["errors"]), report["errors"]  # type: ignore[attr-defined]
