"""EVENTSHOP_AMQP_URL naming a cluster (its nodes' URLs, comma-separated), and the socket factory
that connects to the first node that answers, starting after the one it reached last. No I/O:
the factory's inner transport is a fake that refuses the addresses it is told are down."""

from __future__ import annotations

import asyncio
from typing import Any

import aiormq
import pytest
from yarl import URL

from eventshop.platform.bus.node import FirstAnsweringTransport
from eventshop.platform.settings import PlatformSettings, broker_urls
from eventshop.tooling import cluster

NODES = "amqp://u:p@127.0.0.1:5681/eventshop,amqp://u:p@127.0.0.1:5682/eventshop,amqp://u:p@127.0.0.1:5683/eventshop"


def test_one_url_is_one_broker() -> None:
    assert broker_urls("amqp://u:p@127.0.0.1:5672/eventshop") == [
        "amqp://u:p@127.0.0.1:5672/eventshop"
    ]


def test_a_cluster_is_its_nodes_urls_in_order() -> None:
    assert [URL(u).port for u in broker_urls(NODES)] == [5681, 5682, 5683]
    assert [URL(u).port for u in broker_urls(f" {NODES.replace(',', ' , ')} ,")] == [
        5681, 5682, 5683,
    ]  # fmt: skip


@pytest.mark.parametrize(
    "value",
    [
        "",
        "http://127.0.0.1:5672/",
        "amqp://u:p@127.0.0.1:5681/eventshop,amqp://other:p@127.0.0.1:5682/eventshop",
        "amqp://u:p@127.0.0.1:5681/eventshop,amqp://u:x@127.0.0.1:5682/eventshop",
        "amqp://u:p@127.0.0.1:5681/eventshop,amqp://u:p@127.0.0.1:5682/other",
        "amqp://u:p@127.0.0.1:5681/eventshop,amqp://u:p@127.0.0.1:5681/eventshop",
    ],
)
def test_what_is_not_one_broker_or_one_cluster_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        broker_urls(value)


def test_the_setting_refuses_it_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTSHOP_AMQP_URL", "amqp://a:p@h:1/v,amqp://b:p@h:2/v")
    with pytest.raises(ValueError, match="differ only in host and port"):
        PlatformSettings()
    monkeypatch.setenv("EVENTSHOP_AMQP_URL", NODES)
    assert PlatformSettings().amqp_url == NODES


class FakeSockets:
    def __init__(self, down: set[int]) -> None:
        self.down = down
        self.tried: list[int] = []

    async def create(self, url: URL, **kwargs: Any) -> Any:
        assert url.port is not None
        self.tried.append(url.port)
        if url.port in self.down:
            raise aiormq.exceptions.AMQPConnectionError(f"refused: {url.port}")
        return ("reader", url.port)


def factory(down: set[int]) -> tuple[FirstAnsweringTransport, FakeSockets]:
    f = FirstAnsweringTransport([URL(u) for u in broker_urls(NODES)])
    fake = FakeSockets(down)
    f._inner = fake  # type: ignore[assignment]
    return f, fake


def port_reached(f: FirstAnsweringTransport, url: URL) -> Any:
    """The port the fake's 'socket' is connected to."""
    stream: Any = asyncio.run(f.create(url))
    return stream[1]


def test_the_first_node_that_answers_is_used() -> None:
    f, fake = factory(down={5681})
    assert port_reached(f, URL(NODES.split(",")[0])) == 5682
    assert fake.tried == [5681, 5682] and f.current == ("127.0.0.1", 5682)


def test_a_reconnection_starts_after_the_node_it_lost() -> None:
    f, fake = factory(down=set())
    url = URL(NODES.split(",")[0])
    assert port_reached(f, url) == 5681
    fake.down = {5681}  # the node it was on died
    assert port_reached(f, url) == 5682
    fake.down = {5682, 5683}
    assert port_reached(f, url) == 5681  # round the list, to the one that is back
    assert fake.tried == [5681, 5682, 5683, 5681]


def test_no_node_answering_is_a_connection_error_naming_each() -> None:
    f, _ = factory(down={5681, 5682, 5683})
    with pytest.raises(aiormq.exceptions.AMQPConnectionError, match=r"5681.*5682.*5683"):
        asyncio.run(f.create(URL(NODES.split(",")[0])))


def test_the_local_cluster_never_uses_the_machines_broker_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert cluster.ports() == [5681, 5682, 5683]
    assert broker_urls(cluster.amqp_urls("u", "p")) == NODES.split(",")
    for bad in ("5672,5682,5683", "5681,5681,5683", "5681,5682"):
        monkeypatch.setenv("EVENTSHOP_CLUSTER_PORTS", bad)
        with pytest.raises(ValueError):
            cluster.ports()
