"""docs/SETTINGS.md lists every setting of the platform, documented, and is current."""

from __future__ import annotations

import ast
from pathlib import Path

from eventshop.tooling.settings_doc import SETTINGS, settings_class, settings_markdown

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "SETTINGS.md"


def test_settings_md_is_current() -> None:
    assert DOC.read_text() == settings_markdown(), (
        "docs/SETTINGS.md is stale: .venv/bin/eventshop settings --output docs/SETTINGS.md"
    )


def test_every_setting_says_what_it_is_for() -> None:
    undocumented = [line.split("|")[1].strip() for line in settings_markdown().splitlines()
                    if line.startswith("| `") and line.rstrip().endswith("|  |")]  # fmt: skip
    assert undocumented == []


def test_every_settings_class_in_the_code_is_in_the_document() -> None:
    listed = {path.split(":")[1] for _, path in SETTINGS}
    found = set()
    for source in (ROOT / "src" / "eventshop").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                getattr(base, "id", None) == "BaseSettings" for base in node.bases
            ):
                found.add(node.name)
    assert found == listed
    assert all(settings_class(path) for _, path in SETTINGS)
