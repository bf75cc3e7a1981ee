"""Inventory rules: pure, no I/O.

Stock of a sku is split in three: `on_hand` (free to reserve), `reserved` (held for orders in
flight) and `sold`. Reserving moves units on_hand -> reserved, releasing moves them back,
committing moves them reserved -> sold, restocking adds to on_hand. So
on_hand + reserved + sold always equals everything ever restocked (the table checks it too).

An order reserves all its lines or none, and an order's reservation goes through these states
(a row per order, whichever of order.created / order.cancelled arrives first makes it):

    (none) --order.created, all lines available-->  reserved
    (none) --order.created, a line short/unknown--> rejected
    (none) --order.cancelled-->                     cancelled_before_reserve  (a tombstone)
    reserved --order.cancelled--> released
    reserved --order.confirmed--> committed

Every other (state, event) pair changes nothing: that is how duplicates and late events after
a final state are absorbed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


@dataclass(frozen=True)
class StockLevel:
    """A sku's units: on_hand + reserved + sold = restocked_total."""

    sku: str
    on_hand: int
    reserved: int
    sold: int
    restocked_total: int

    @property
    def available(self) -> int:
        """What a new order can still reserve: reserved units are already spoken for."""
        return self.on_hand


class ReservationStatus(StrEnum):
    RESERVED = "reserved"
    RELEASED = "released"
    COMMITTED = "committed"
    REJECTED = "rejected"
    CANCELLED_BEFORE_RESERVE = "cancelled_before_reserve"


@dataclass(frozen=True)
class Reserve:
    """Take these quantities (per sku, lines of the same sku summed) from on_hand."""

    quantities: Mapping[str, int]


@dataclass(frozen=True)
class Reject:
    reason: Literal["out_of_stock", "unknown_sku"]
    #: the skus that made it fail, sorted
    skus: tuple[str, ...]


def quantities_by_sku(lines: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Sum the quantity asked of each sku: two lines of one sku compete for the same stock."""
    wanted: dict[str, int] = {}
    for sku, quantity in lines:
        if quantity <= 0:
            raise ValueError(f"a line must ask for at least one unit (sku {sku}: {quantity})")
        wanted[sku] = wanted.get(sku, 0) + quantity
    return wanted


def decide_reservation(on_hand: Mapping[str, int], wanted: Mapping[str, int]) -> Reserve | Reject:
    """All or nothing: reserve `wanted` if every sku has enough on hand, else say why not.

    `on_hand` holds the free units of each sku inventory knows (a sku missing from it has never
    been seen in a product.created). Unknown skus win over short ones as the reason: no restock
    can make an order for them succeed.
    """
    unknown = sorted(sku for sku in wanted if sku not in on_hand)
    if unknown:
        return Reject("unknown_sku", tuple(unknown))
    short = sorted(sku for sku, quantity in wanted.items() if on_hand[sku] < quantity)
    if short:
        return Reject("out_of_stock", tuple(short))
    return Reserve(dict(wanted))


class Effect(StrEnum):
    """What an event does to an order's reservation (see the module docstring).

    order.created needs no function here: it acts only on an order with no reservation row,
    and the handler's claim of that row (an insert that fails if the row exists) is the check.
    """

    NOTHING = "nothing"
    TOMBSTONE = "tombstone"
    RELEASE = "release"
    COMMIT = "commit"


def on_order_cancelled(status: ReservationStatus | None) -> Effect:
    if status is None:
        return Effect.TOMBSTONE  # order.created is late: make sure it reserves nothing
    if status is ReservationStatus.RESERVED:
        return Effect.RELEASE
    return Effect.NOTHING


def on_order_confirmed(status: ReservationStatus | None) -> Effect:
    return Effect.COMMIT if status is ReservationStatus.RESERVED else Effect.NOTHING
