"""The SMTP sink's mailbox view over real HTTP, reading mail a real SMTP client sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from eventshop.tooling.mailbox import mailbox_app
from eventshop.tooling.smtp_sink import SmtpSink
from tests.integration.test_smtp_sink import mail, send
from tests.support.loopback import serving


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[tuple[SmtpSink, httpx.AsyncClient]]:
    async with (
        SmtpSink(tmp_path / "mail", port=0) as sink,
        serving(mailbox_app(tmp_path / "mail")) as (url,),
        httpx.AsyncClient(base_url=url, timeout=5) as client,
    ):
        yield sink, client


async def test_lists_what_was_sent_newest_first_as_html_and_json(
    box: tuple[SmtpSink, httpx.AsyncClient],
) -> None:
    sink, client = box
    for n in range(3):
        await send(sink.port, mail(f"<m{n}@test>", to=f"user{n % 2}@example.com"))
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "3 shown of 3" in page.text
    listed = (await client.get("/api/messages")).json()
    assert listed["total"] == 3
    assert [m["message_id"] for m in listed["messages"]] == ["<m2@test>", "<m1@test>", "<m0@test>"]
    assert listed["messages"][0]["envelope_to"] == ["user0@example.com"]

    only = (await client.get("/api/messages", params={"to": "USER1@example.com"})).json()
    assert [m["message_id"] for m in only["messages"]] == ["<m1@test>"]
    page = await client.get("/", params={"to": "user1@example.com"})
    assert "1 shown of 1 to user1@example.com" in page.text


async def test_one_message_with_its_text(box: tuple[SmtpSink, httpx.AsyncClient]) -> None:
    sink, client = box
    await send(sink.port, mail("<one@test>", body="your order is confirmed\nthank you"))
    (summary,) = (await client.get("/api/messages")).json()["messages"]
    one = (await client.get(f"/api/messages/{summary['name']}")).json()
    assert one["message_id"] == "<one@test>"
    assert one["body"] == "your order is confirmed\nthank you\n"
    page = await client.get(f"/messages/{summary['name']}")
    assert page.status_code == 200
    assert "your order is confirmed" in page.text
    assert f'href="/messages/{quote(summary["name"])}"' in (await client.get("/")).text


async def test_what_a_mail_says_is_shown_as_text_never_as_markup(
    box: tuple[SmtpSink, httpx.AsyncClient],
) -> None:
    sink, client = box
    hostile = mail("<x@test>", body="<script>alert(1)</script>")
    del hostile["Subject"]
    hostile["Subject"] = '<img src=x onerror="alert(2)">'
    await send(sink.port, hostile)
    listing = (await client.get("/")).text
    assert "<img src=x" not in listing
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;" in listing
    (summary,) = (await client.get("/api/messages")).json()["messages"]
    page = (await client.get(f"/messages/{summary['name']}")).text
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/messages/nothing-like-this", 404),
        ("/api/messages/nothing-like-this", 404),
        ("/api/messages/..%2F..%2Fetc%2Fpasswd", 404),
        ("/messages/%2E%2E", 404),
        ("/api/messages?limit=0", 422),
        ("/api/messages?limit=100000", 422),
        ("/api/messages?sort=asc", 422),
        ("/api/messages?to=" + "a" * 400, 422),
    ],
)
async def test_bad_requests_answer_in_the_one_error_shape(
    box: tuple[SmtpSink, httpx.AsyncClient], path: str, status: int
) -> None:
    _, client = box
    response = await client.get(path)
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error", "correlation_id"}
    assert body["error"]["code"] and body["error"]["message"]


async def test_an_empty_or_missing_mailbox_is_an_empty_list(tmp_path: Path) -> None:
    async with (
        serving(mailbox_app(tmp_path / "never-created")) as (url,),
        httpx.AsyncClient(base_url=url, timeout=5) as client,
    ):
        assert (await client.get("/api/messages")).json() == {"total": 0, "messages": []}
        assert "no mail yet" in (await client.get("/")).text
