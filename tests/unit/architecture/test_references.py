"""Every document the repository cites is in the repository (no I/O but reading its files).

Code, tests and docs cite documents by path ("docs/DESIGN.md §3", "SERVICES.md") and ADRs by
number ("ADR 0005", "docs/adr/0005"). This walks src/, tests/, docs/, scripts/, README.md and
the Makefile, and fails, naming file:line, on:

- a token ending in `.md` that is no file, relative to the repository root, to docs/ or to the
  citing file's own folder;
- an ADR number with no docs/adr/<number>-*.md;
- a section "§N" (or "§N.M") after a document that has no heading numbered N ("## N. ...");
- outside a markdown file, a "§N" with no document before it on its line (inside one, a bare
  "§N" is a section of that file).

So a document and the sections cited from it go on one line: "docs/DESIGN.md §3, §5". URLs are
skipped. This file itself is not walked: its examples below are wrong on purpose.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
THIS = Path(__file__).resolve()
WALKED_DIRS = ("src", "tests", "docs", "scripts")
WALKED_FILES = ("README.md", "Makefile")
#: caches and build output, not the repository's own text
SKIPPED_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis"}
SKIPPED_SUFFIXES = {".pyc", ".pyo", ".so"}

URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
#: a path ending in .md; not a piece of a longer word, a glob or a template (`0006-*.md`,
#: `{name}.md`, `<service>.md`)
DOC = re.compile(r"(?<![\w./*<>{}$-])[\w][\w./-]*\.md(?!\w)")
ADR = re.compile(r"\bADR\s+(\d{4})\b|(?<![\w.-])docs/adr/(\d{4})(?!\d)")
SECTION = re.compile(r"§\s*(\d+(?:\.\d+)*)")
#: what may stand between a document and the sections cited from it: "X.md §3, §5 and §6"
BETWEEN = re.compile(r"(?:[\s,;:()]|§\s*\d+(?:\.\d+)*|\band\b|\bor\b)*")
HEADING = re.compile(r"^#{1,6}\s+(\d+(?:\.\d+)*)\.?\s", re.MULTILINE)
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Cited:
    """A document named on a line: where the name ends, and the file (None: there is none)."""

    name: str
    end: int
    target: Path | None


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _walked() -> Iterator[Path]:
    for name in WALKED_FILES:
        if (ROOT / name).is_file():
            yield ROOT / name
    for top in WALKED_DIRS:
        for path in sorted((ROOT / top).rglob("*")):
            parts = path.relative_to(ROOT).parts
            if any(p in SKIPPED_DIRS or p.endswith(".egg-info") for p in parts):
                continue
            if path.is_file() and path.suffix not in SKIPPED_SUFFIXES and path != THIS:
                yield path


def _bases(source: Path) -> str:
    """Where a document's name is looked up from, as the failure message says it."""
    return ", ".join(dict.fromkeys(["./", "docs/", _rel(source.parent) + "/"]))


def _resolve(name: str, source: Path) -> Path | None:
    for base in (ROOT, ROOT / "docs", source.parent):
        candidate = (base / name).resolve()
        if candidate.is_file() and candidate.is_relative_to(ROOT):
            return candidate
    return None


def _adr(number: str) -> Path | None:
    found = sorted((ROOT / "docs" / "adr").glob(f"{number}-*.md"))
    return found[0] if found else None


@cache
def sections(document: Path) -> frozenset[str]:
    """The numbers of a markdown document's numbered headings ("## 5. ..." -> "5")."""
    text = FENCE.sub("", document.read_text(encoding="utf-8"))
    return frozenset(m[1] for m in HEADING.finditer(text))


def _listed(document: Path) -> str:
    numbers = sorted(sections(document), key=lambda n: tuple(int(p) for p in n.split(".")))
    return ", ".join(numbers) or "none"


def _cited(line: str, source: Path) -> list[Cited]:
    found = [Cited(m[0], m.end(), _resolve(m[0], source)) for m in DOC.finditer(line)]
    for m in ADR.finditer(line):
        number = m[1] or m[2]
        found.append(Cited(f"ADR {number}", m.end(), _adr(number)))
    return sorted(found, key=lambda c: c.end)


def _owner(line: str, at: int, cited: list[Cited], source: Path) -> Cited | None:
    """The document a "§" at `at` belongs to: the last one named before it with only other
    sections and separators between; in a markdown file, failing that, the file itself."""
    before = [c for c in cited if c.end <= at]
    if before and BETWEEN.fullmatch(line[before[-1].end : at]):
        return before[-1]
    if source.suffix == ".md":
        return Cited(_rel(source), 0, source)
    return None


def problems(text: str, source: Path) -> Iterator[str]:
    """Every reference in `text` (the contents of `source`) to a document or section that the
    repository does not have, as "path:line: what is wrong"."""
    where = _rel(source)
    for number, raw in enumerate(text.splitlines(), start=1):
        if "§" not in raw and ".md" not in raw and "ADR" not in raw and "docs/adr/" not in raw:
            continue
        line = URL.sub(lambda m: " " * len(m[0]), raw)
        cited = _cited(line, source)
        for name in dict.fromkeys(c.name for c in cited if c.target is None):
            yield f"{where}:{number}: {name}: no such document (looked in {_bases(source)})"
        for m in SECTION.finditer(line):
            owner = _owner(line, m.start(), cited, source)
            if owner is None:
                yield (
                    f"{where}:{number}: §{m[1]} names no document before it on its line"
                    " (write it as docs/<DOCUMENT>.md §N)"
                )
            elif owner.target is not None and m[1] not in sections(owner.target):
                yield (
                    f"{where}:{number}: {owner.name} has no section §{m[1]}"
                    f" (its numbered headings: {_listed(owner.target)})"
                )


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None  # not text


def test_every_cited_document_and_section_exists() -> None:
    found: list[str] = []
    for path in _walked():
        text = _read(path)
        if text is not None:
            found.extend(problems(text, path))
    assert not found, "references to what the repository does not have:\n" + "\n".join(found)


def test_the_walk_reads_the_places_that_cite_documents() -> None:
    walked = {_rel(p) for p in _walked()}
    assert {"README.md", "Makefile", "docs/DESIGN.md", "docs/STYLE.md"} <= walked
    assert any(p.startswith("src/eventshop/") and p.endswith(".py") for p in walked)
    assert any(p.startswith("docs/adr/") for p in walked)
    assert _rel(THIS) not in walked
    assert {"1", "3", "4.2", "5.6"} <= sections(ROOT / "docs" / "DESIGN.md")


SOURCE = ROOT / "src" / "eventshop" / "example.py"
DESIGN = ROOT / "docs" / "DESIGN.md"


@pytest.mark.parametrize(
    "line",
    [
        "the saga of docs/DESIGN.md §3, its envelope (docs/DESIGN.md §4.2)",
        "docs/DESIGN.md §3, §5.1 and §6",
        "see SERVICES.md and ADR 0005, or docs/adr/0005",
        "each ADR is docs/adr/0006-*.md; a service's notes are <service>.md",
        "https://example.org/docs/MISSING.md#§9",
        "a plain sentence with no reference",
    ],
)
def test_a_good_reference_passes(line: str) -> None:
    assert list(problems(line, SOURCE)) == []


@pytest.mark.parametrize(
    ("line", "wrong"),
    [
        ("see docs/NOWHERE.md", "docs/NOWHERE.md: no such document"),
        ("the invariants of DESIGN §3", "§3 names no document"),
        ("the invariants of docs/DESIGN.md §99", "docs/DESIGN.md has no section §99"),
        ("docs/DESIGN.md §3, §8.1", "docs/DESIGN.md has no section §8.1"),
        ("why: ADR 9999", "ADR 9999: no such document"),
    ],
)
def test_a_broken_reference_is_named_with_its_line(line: str, wrong: str) -> None:
    found = list(problems(f"first line\n{line}\n", SOURCE))
    assert len(found) == 1
    assert found[0].startswith("src/eventshop/example.py:2: ")
    assert wrong in found[0]


def test_in_a_markdown_file_a_bare_section_is_its_own() -> None:
    assert list(problems("as §5.6 says", DESIGN)) == []
    assert [p.split(": ", 1)[1] for p in problems("as §42 says", DESIGN)] == [
        f"docs/DESIGN.md has no section §42 (its numbered headings: {_listed(DESIGN)})"
    ]
