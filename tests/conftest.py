"""Fixtures every test file may use (their helpers live in tests/support)."""

from __future__ import annotations

import fcntl
import os
import time

import pytest

from agent.outbox import Outbox
from support.broker import Broker
from support.daemon import config
from support.tmpfs import tmpfs


@pytest.fixture(autouse=True)
def _alone(request, tmp_path_factory):
    """On parallel workers (scripts/test), a test marked `alone` runs while no other test does:
    its outcome depends on wall time that a CPU busy with other tests takes from it (the decoder's
    budget is a multiple of the plain read's time). Every other test holds a shared lock; an
    `alone` one takes it exclusively, first closing a turnstile so that no new test slips in."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        yield
        return
    run = tmp_path_factory.getbasetemp().parent      # one folder for all the workers of this run
    alone = request.node.get_closest_marker("alone") is not None
    with open(run / "alone.turnstile", "a") as turnstile, open(run / "alone.lock", "a") as lock:
        _flock(turnstile, fcntl.LOCK_EX)
        try:
            _flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        yield


def _flock(f, how: int, wait_s: float = 600) -> None:
    """flock, failing the test (not hanging the whole run) when another test holds it too long."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(f, how | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                pytest.fail(f"waited {wait_s:.0f} s for {f.name}: another test held it (hung?)")
            time.sleep(0.02)


def pytest_collection_modifyitems(config, items):
    """On parallel workers, `alone` tests go last: by then most workers have run out of tests, so
    few stand idle while one runs."""
    if os.environ.get("PYTEST_XDIST_WORKER") is not None:
        items.sort(key=lambda item: item.get_closest_marker("alone") is not None)


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


# --- 7: files written for IT ----------------------------------------------------------------------

@pytest.fixture
def stopped_station(tmp_path):
    state = tmp_path / "state"
    box = Outbox(state / "outbox.db", station="counter-it")
    row = box.put({"read_at": "2026-11-24T08:00:00+07:00", "clock_synced": True, "kind": "cccd", "verdict": "ok",
                   "problems": [], "card": {"name": "Nguyễn Văn An", "id_number": "079090001234"}})
    box.close()
    return config(tmp_path, state), state, row


@pytest.fixture
def full_state_dir(tmp_path):
    """A state dir on a small tmpfs with every inode used: nothing more can be made in it."""
    with tmpfs(tmp_path / "full", "size=1m,nr_inodes=16,mode=0700", "a small tmpfs") as mount:
        state = mount / "state"
        state.mkdir()
        n = 0
        while True:
            try:
                (state / f"f{n}").touch()
            except OSError:
                break
            n += 1
        yield state
