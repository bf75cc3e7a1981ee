"""Broker users made and rotated by `rabbitmqctl` on the machine's real RabbitMQ.

A generated password is 43 characters of URL-safe base64, and one in 64 begins with "-": given
on rabbitmqctl's command line it was taken for an option, and `make demo` failed on a fresh
machine. The password now goes to rabbitmqctl on its standard input, where no other user of the
machine can read it either (a command line is public in /proc).
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator

import pytest

from eventshop.tooling import broker

pytestmark = pytest.mark.integration


@pytest.fixture
def user() -> Iterator[str]:
    name = f"eventshop-test-{secrets.token_hex(4)}"
    yield name
    subprocess.run(["rabbitmqctl", "-q", "delete_user", name], capture_output=True, check=False)


def authenticates(name: str, password: str) -> bool:
    return broker._ctl("authenticate_user", name, stdin=password).returncode == 0


def test_a_password_beginning_with_a_dash_makes_the_user_and_rotates_it(user: str) -> None:
    first = "-" + secrets.token_urlsafe(32)
    done: list[str] = []
    broker._ensure_user(user, first, set(), done)
    assert done == [f"user {user}"]
    assert authenticates(user, first)

    second = "--" + secrets.token_urlsafe(32)  # another installation's secret: rotated
    broker._ensure_user(user, second, {user}, done)
    assert done == [f"user {user}", f"password {user}"]
    assert authenticates(user, second)
    assert not authenticates(user, first)

    broker._ensure_user(user, second, {user}, done)  # already right: nothing to do
    assert done == [f"user {user}", f"password {user}"]
