"""platform/heap.py: a started process's heap, frozen out of the collector's walks."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from eventshop.platform import heap
from eventshop.platform.settings import PlatformSettings


@pytest.fixture
def thawed() -> Iterator[None]:
    """This test process's heap as it was: nothing frozen before, everything thawed after."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def _walked(obj: object) -> bool:
    """Whether a collection of any generation would walk `obj`."""
    return any(o is obj for o in gc.get_objects())


def test_settle_takes_what_is_alive_out_of_every_collection(thawed: None) -> None:
    built_at_start = {"routes": [1, 2, 3]}
    assert _walked(built_at_start)

    frozen = heap.settle()

    assert frozen == gc.get_freeze_count() > 0
    assert not _walked(built_at_start)
    made_since = {"request": [4]}
    assert _walked(made_since)  # what the process makes afterwards is collected as ever


def test_settle_collects_garbage_before_freezing(thawed: None) -> None:
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle  # unreachable, only a collection frees it

    heap.settle()

    # the cycle was collected, not frozen: nothing in the permanent generation refers to itself
    # by a one-element list
    gc.unfreeze()
    assert not any(isinstance(o, list) and len(o) == 1 and o[0] is o for o in gc.get_objects())


def test_freezing_is_on_by_default_and_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert PlatformSettings().gc_freeze is True
    monkeypatch.setenv("EVENTSHOP_GC_FREEZE", "false")
    assert PlatformSettings().gc_freeze is False
