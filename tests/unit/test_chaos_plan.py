"""The chaos load is decided by its seed: the same seed, the same orders and the same faults'
schedule; another seed, others."""

from __future__ import annotations

import random

from eventshop.chaos.load import Shop, Shopper, plan


def shop() -> Shop:
    users = [Shopper(f"u{i}@example.com", f"t{i}", f"id{i}") for i in range(3)]
    return Shop("admin", ["A", "B", "C"], "RARE", users)


def summary(seed: str) -> list[tuple[str, str, int, str]]:
    return [
        (p.user.user_id, p.lines[0]["sku"], p.lines[0]["quantity"], p.token)
        for p in plan(shop(), random.Random(seed), 50)
    ]


def test_the_same_seed_places_the_same_orders_under_keys_of_their_own() -> None:
    assert summary("kill-broker:7") == summary("kill-broker:7")
    assert summary("kill-broker:7") != summary("kill-broker:8")
    first, again = plan(shop(), random.Random("s"), 5), plan(shop(), random.Random("s"), 5)
    assert not {p.key for p in first} & {p.key for p in again}  # a rerun is a new run


def test_the_load_pays_mostly_by_card_and_sometimes_runs_out_or_is_declined() -> None:
    placed = plan(shop(), random.Random("mix"), 2_000)
    tokens = [p.token for p in placed]
    assert 0.05 < tokens.count("tok_decline") / len(tokens) < 0.15
    rare = sum(p.lines[0]["sku"] == "RARE" for p in placed)
    assert 0.01 < rare / len(placed) < 0.06
    assert len({p.key for p in placed}) == len(placed)  # one Idempotency-Key per order
