"""Integration tests: one module per adapter, against the real RabbitMQ and PostgreSQL.

Nothing is faked here. Names are random (see tests/conftest.py).
"""

from collections.abc import AsyncIterator

import pytest

from eventshop.platform.settings import PlatformSettings
from tests.conftest import SchemaFactory
from tests.integration.helpers import Bus

pytestmark = pytest.mark.integration


@pytest.fixture
async def bus(settings: PlatformSettings, make_schema: SchemaFactory) -> AsyncIterator[Bus]:
    """Bus nodes in fresh schemas on the test run's vhost; every node stopped and every queue
    it declared deleted at the end, whatever the test did."""
    b = Bus(settings, make_schema)
    try:
        yield b
    finally:
        await b.aclose()
