"""How the orchestrator and its child processes talk: one word or one JSON object a line.

A child (`python -m eventshop.bench.bus <role>`) reads its configuration as the first line of
its stdin, says `{"ready": true}` when it is set up, waits for `go` on stdin, prints its result
as one JSON line, and exits after `stop`. The configuration holds the broker's and the
database's URLs with their passwords, so it never goes on the command line, which every user of
the machine can read (`ps`, /proc/<pid>/cmdline). The child's side is `read_config`, `say` and
`wait_for`; the parent's side is `Child`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Mapping
from typing import Any

# -- the child's side --------------------------------------------------------------------------


def read_config() -> dict[str, Any]:
    """The configuration the parent wrote as the first line of stdin."""
    cfg: dict[str, Any] = json.loads(sys.stdin.readline())
    return cfg


def say(obj: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _read_line() -> str:
    line: str = await asyncio.to_thread(sys.stdin.readline)
    return line.strip()


async def wait_for(word: str) -> None:
    while True:
        line = await _read_line()
        if line == word:
            return
        if not line:  # the parent went away
            raise SystemExit(2)


# -- the parent's side -------------------------------------------------------------------------


class Child:
    """One child process: started, told `go` and `stop`, read one JSON line at a time."""

    def __init__(self, role: str, proc: asyncio.subprocess.Process) -> None:
        self.role = role
        self.proc = proc

    @classmethod
    async def start(cls, role: str, cfg: Mapping[str, Any]) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "eventshop.bench.bus",
            role,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        child = cls(role, proc)
        await child.tell(json.dumps(cfg))
        return child

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def read(self, timeout_s: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
            if not line:
                code = await self.proc.wait()
                raise RuntimeError(f"{self.role} process exited ({code}) before answering")
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict):
                    return obj

    async def tell(self, word: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.proc.stdin.write(f"{word}\n".encode())
            await self.proc.stdin.drain()

    async def ready(self, timeout_s: float = 60.0) -> None:
        answer = await self.read(timeout_s)
        if not answer.get("ready"):
            raise RuntimeError(f"{self.role}: unexpected answer {answer}")

    async def finish(self, timeout_s: float = 30.0) -> None:
        await self.tell("stop")
        try:
            await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            self.kill()

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
