"""Integration tests: one module per adapter, against the real RabbitMQ and PostgreSQL.

Nothing is faked here. Names are random (see tests/conftest.py).
"""

import pytest

pytestmark = pytest.mark.integration
