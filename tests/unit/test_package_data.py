"""What the wheel carries besides Python: a file the code opens at run time and pyproject's
package-data leaves out works in a checkout and fails in the image (the console's static files
did: their directory was missing and the console container would not start)."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "eventshop"


def test_every_data_file_of_the_package_is_in_the_wheel() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["eventshop"]
    data = [
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    ]
    assert data, "no data files found: the test looks in the wrong place"
    left_out = [f for f in data if not any(_matches(f, pattern) for pattern in patterns)]
    assert left_out == []


def _matches(path: str, pattern: str) -> bool:
    """setuptools' glob: `**/` is any number of directories, zero included."""
    return fnmatch.fnmatch(path, pattern) or (
        pattern.startswith("**/") and fnmatch.fnmatch(path, pattern[3:])
    )
