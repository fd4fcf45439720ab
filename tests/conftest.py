"""Fixtures every test file may use (their helpers live in tests/support)."""

from __future__ import annotations

import pytest

from agent.outbox import Outbox
from support.broker import Broker


@pytest.fixture
def broker(tmp_path):
    """A real Mosquitto on a free loopback port, stopped after the test."""
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture
def outbox(tmp_path):
    """A fresh outbox file of station counter-01."""
    ob = Outbox(tmp_path / "outbox.db", station="counter-01")
    yield ob
    ob.close()
