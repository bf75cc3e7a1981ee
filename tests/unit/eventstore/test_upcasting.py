"""The upcaster registry as tables: which versions it reads as which. Pure, nothing faked."""

from __future__ import annotations

from typing import Any

import pytest

from eventshop.platform.eventstore import UpcastError, Upcasters


def registry() -> Upcasters:
    upcasters = Upcasters()
    upcasters.register("Renamed", 1)(lambda p: {"full_name": p["name"]})
    upcasters.register("Renamed", 2)(lambda p: {**p, "nickname": None})
    return upcasters


@pytest.mark.parametrize(
    ("event_type", "version", "payload", "expected"),
    [
        ("Renamed", 1, {"name": "Ada"}, (3, {"full_name": "Ada", "nickname": None})),
        ("Renamed", 2, {"full_name": "Ada"}, (3, {"full_name": "Ada", "nickname": None})),
        (
            "Renamed",
            3,
            {"full_name": "Ada", "nickname": "A"},
            (3, {"full_name": "Ada", "nickname": "A"}),
        ),
        # written by a newer version of the code than this one: left as it is
        ("Renamed", 4, {"x": 1}, (4, {"x": 1})),
        # never changed
        ("Other", 1, {"kept": True}, (1, {"kept": True})),
    ],
)
def test_upcast(
    event_type: str, version: int, payload: dict[str, Any], expected: tuple[int, dict[str, Any]]
) -> None:
    assert registry().upcast(event_type, version, payload) == expected


def test_current_versions() -> None:
    upcasters = registry()
    assert (upcasters.current("Renamed"), upcasters.current("Other")) == (3, 1)


def test_the_stored_payload_is_not_changed_by_an_upcaster() -> None:
    upcasters = Upcasters()

    @upcasters.register("A", 1)
    def _mutating(payload: dict[str, Any]) -> dict[str, Any]:
        payload["added"] = True
        return payload

    stored = {"n": 1}
    assert upcasters.upcast("A", 1, stored) == (2, {"n": 1, "added": True})
    assert stored == {"n": 1}


def test_a_step_registered_twice_or_below_one_is_refused() -> None:
    upcasters = registry()
    with pytest.raises(ValueError, match="already has an upcaster"):
        upcasters.register("Renamed", 1)(lambda p: p)
    with pytest.raises(ValueError, match="start at 1"):
        upcasters.register("Renamed", 0)


def test_a_missing_or_failing_step_is_an_upcast_error() -> None:
    gap = Upcasters()
    gap.register("A", 2)(lambda p: p)
    with pytest.raises(UpcastError, match="no upcaster for A v1 -> v2"):
        gap.upcast("A", 1, {})
    broken = Upcasters()
    broken.register("A", 1)(lambda p: {"x": p["missing"]})
    with pytest.raises(UpcastError, match="upcasting A v1 -> v2 failed: KeyError"):
        broken.upcast("A", 1, {})
