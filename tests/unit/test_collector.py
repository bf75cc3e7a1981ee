"""The collector's settings for a started service process (platform/collector.py, ADR 0022).

Each case runs in a process of its own: freezing the test runner's heap would keep every
cycle its later tests leave."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from eventshop.platform.settings import PlatformSettings

PROBE = """
import gc, json
from eventshop.platform import collector
from eventshop.platform.settings import PlatformSettings

class Cycle:
    def __init__(self): self.me = self

settings = PlatformSettings(amqp_url="amqp://u:p@127.0.0.1/v")
before = gc.get_threshold()
kept = Cycle()  # built at start-up: frozen, like the process's modules and pools
collector.tune(settings)
frozen = gc.get_freeze_count()
walked = any(o is kept for o in gc.get_objects())  # what a full collection walks
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": frozen,
                  "kept_is_frozen": not walked}))
"""


def probe(**env: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        # the probe's own settings only: none of the caller's EVENTSHOP_GC_* reaches it
        env={**{k: v for k, v in os.environ.items() if not k.startswith("EVENTSHOP_GC_")}, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout.splitlines()[-1])  # after tune's log line
    return result


def test_a_started_process_collects_its_young_generation_less_often_and_freezes_its_start() -> None:
    r = probe()
    assert r["before"] == [700, 10, 10]  # Python's own
    assert r["after"] == [50_000, 10, 10]  # the young threshold raised, the older ones kept
    assert isinstance(r["frozen"], int) and r["frozen"] > 1_000  # the modules, the models...
    assert r["kept_is_frozen"] is True  # out of every collection's walk (gc.get_objects)


def test_the_settings_restore_pythons_own_collector() -> None:
    r = probe(EVENTSHOP_GC_YOUNG_THRESHOLD="700", EVENTSHOP_GC_FREEZE="false")
    assert r["after"] == [700, 10, 10]
    assert r["frozen"] == 0
    assert r["kept_is_frozen"] is False


@pytest.mark.parametrize("value", [99, 0, -1])
def test_a_young_threshold_that_would_collect_all_the_time_or_never_is_refused(value: int) -> None:
    with pytest.raises(ValidationError, match="gc_young_threshold"):
        PlatformSettings(amqp_url="amqp://u:p@127.0.0.1/v", gc_young_threshold=value)
