"""The SMTP sink against a real SMTP client (smtplib) over loopback TCP: nothing faked.

Each test runs its own sink on a free port, storing into its own temporary directory.
"""

from __future__ import annotations

import asyncio
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from eventshop.tooling.smtp_sink import MailDirectory, SmtpSink, stored_messages


@pytest.fixture
async def sink(tmp_path: Path) -> AsyncIterator[SmtpSink]:
    async with SmtpSink(tmp_path / "mail", port=0) as running:
        yield running


def mail(message_id: str | None, *, to: str = "ann@example.com", body: str = "hi") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "shop@example.com"
    msg["To"] = to
    msg["Subject"] = f"about {message_id}"
    if message_id is not None:
        msg["Message-ID"] = message_id
    msg.set_content(body)
    return msg


async def send(port: int, *messages: EmailMessage) -> list[tuple[int, bytes]]:
    """Send in one SMTP session (in a thread: smtplib blocks); the server's reply to each."""

    def session() -> list[tuple[int, bytes]]:
        replies = []
        with smtplib.SMTP("127.0.0.1", port, local_hostname="test", timeout=5) as smtp:
            smtp.ehlo()
            for msg in messages:
                smtp.mail(str(msg["From"]))
                smtp.rcpt(str(msg["To"]))
                # CRLF line ends, as smtplib's send_message sends them
                replies.append(smtp.data(msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))))
        return replies

    return await asyncio.to_thread(session)


async def test_stores_each_message_as_a_file(sink: SmtpSink) -> None:
    replies = await send(
        sink.port, mail("<one@test>", body="first"), mail("<two@test>", to="bob@example.com")
    )
    assert [code for code, _ in replies] == [250, 250]
    stored = stored_messages(sink.directory.path)
    assert [m.message_id for m in stored] == ["<one@test>", "<two@test>"]
    assert stored[0].body == "first\n"
    assert stored[1].to == "bob@example.com"
    assert stored[1].envelope_to == ["bob@example.com"]
    assert all(m.path.suffix == ".eml" for m in stored)


async def test_a_second_message_with_the_same_message_id_is_accepted_but_not_stored(
    sink: SmtpSink,
) -> None:
    first = mail("<same@test>", body="the original")
    again = mail("<same@test>", body="a resend after a crash")
    replies = await send(sink.port, first, again)
    replies += await send(sink.port, again)  # and in another session
    assert [code for code, _ in replies] == [250, 250, 250]
    [stored] = stored_messages(sink.directory.path)
    assert stored.body == "the original\n"
    assert (sink.handler.stored, sink.handler.duplicates) == (1, 2)


async def test_concurrent_sessions_with_one_message_id_store_it_once(sink: SmtpSink) -> None:
    await asyncio.gather(*(send(sink.port, mail("<raced@test>", body=str(i))) for i in range(8)))
    assert [m.message_id for m in stored_messages(sink.directory.path)] == ["<raced@test>"]


async def test_a_message_without_message_id_is_kept_once_per_content(sink: SmtpSink) -> None:
    await send(sink.port, mail(None, body="a"), mail(None, body="a"), mail(None, body="b"))
    assert sorted(m.body for m in stored_messages(sink.directory.path)) == ["a\n", "b\n"]


async def send_raw(port: int, *messages: bytes) -> None:
    """Send messages given as bytes, as they are, in one SMTP session."""

    def session() -> None:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="test", timeout=5) as smtp:
            for raw in messages:
                smtp.sendmail("shop@example.com", ["ann@example.com"], raw)

    await asyncio.to_thread(session)


async def test_the_message_id_is_found_however_its_header_is_written(sink: SmtpSink) -> None:
    await send_raw(
        sink.port,
        b"From: a@test\r\nMessage-ID: <spelled@test>\r\nSubject: first\r\n\r\nbody\r\n",
        b"message-id:   <spelled@test>\r\n\r\nlower case\r\n",
        b"Subject: folded\r\nMessage-Id:\r\n <spelled@test>\r\n\r\nfolded\r\n",
        # only the header section counts: this one has no Message-ID
        b"Subject: x\r\n\r\nMessage-ID: <spelled@test>\r\n",
    )
    stored = stored_messages(sink.directory.path)
    assert [m.subject for m in stored] == ["first", "x"]
    assert stored[1].message_id == ""
    assert (sink.handler.stored, sink.handler.duplicates) == (2, 2)


async def test_counts_connections_and_stop_closes_the_sessions_still_open(
    sink: SmtpSink,
) -> None:
    def open_session() -> smtplib.SMTP:
        smtp = smtplib.SMTP("127.0.0.1", sink.port, local_hostname="test", timeout=5)
        assert smtp.noop()[0] == 250
        return smtp

    sessions = [await asyncio.to_thread(open_session) for _ in range(2)]
    assert sink.connections == 2
    await sink.stop()
    for smtp in sessions:
        with pytest.raises(smtplib.SMTPServerDisconnected):
            await asyncio.to_thread(smtp.noop)
        smtp.close()


def test_listing_a_missing_directory_is_empty(tmp_path: Path) -> None:
    assert stored_messages(tmp_path / "nothing-here") == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_runs_as_a_process_with_its_mailbox_view_and_stops_on_sigterm(tmp_path: Path) -> None:
    port, http_port, directory = _free_port(), _free_port(), tmp_path / "mail"
    env = {
        **os.environ,
        "EVENTSHOP_SMTP_SINK_PORT": str(port),
        "EVENTSHOP_SMTP_SINK_HTTP_PORT": str(http_port),
        "EVENTSHOP_SMTP_SINK_DIR": str(directory),
    }
    proc = subprocess.Popen([sys.executable, "-m", "eventshop.tooling.smtp_sink"], env=env)
    try:
        deadline = time.monotonic() + 10
        while True:  # wait until it listens
            try:
                with smtplib.SMTP("127.0.0.1", port, local_hostname="test", timeout=5) as smtp:
                    smtp.send_message(mail("<proc@test>"))
                break
            except ConnectionRefusedError:
                assert proc.poll() is None, "the sink exited"
                assert time.monotonic() < deadline, "the sink never listened"
                time.sleep(0.05)
        assert [m.message_id for m in stored_messages(directory)] == ["<proc@test>"]
        listed = httpx.get(f"http://127.0.0.1:{http_port}/api/messages", timeout=5).json()
        assert [m["message_id"] for m in listed["messages"]] == ["<proc@test>"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("fsync", [False, True])
def test_a_mail_is_synced_to_disk_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync: bool
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def counted_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counted_fsync)
    directory = MailDirectory(tmp_path, fsync=fsync)
    assert directory.put("<synced@test>", b"Subject: s\r\n\r\nbody\r\n")
    assert directory.file_for("<synced@test>").read_bytes().endswith(b"body\r\n")
    assert len(synced) == (1 if fsync else 0)
