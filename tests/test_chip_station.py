"""At the counter (issue 33): a CCCD's QR, decoded from camera frames by the real decoder, asks
for the card on the reader; the simulated chip (agent/sim/chip.py) is read in the chip worker
while the camera loop goes on; the check-in (schema 1.2) is stored in the real outbox with `chip`
once the read ends, or without a card within `[chip] timeout_s` (verified "absent"), never before:
no green until it is on disk."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import random
import threading
import time

import pytest

from agent.capture import Frame
from agent.chip.counter import ChipReader
from agent.chip.transport import CardLost
from agent.feedback import Feedback, NoOutput, Signal
from agent.mqtt.schemas import errors as schema_errors
from agent.sim.chip import TINY_JPEG, SimCard, SimChip, make_pki
from agent.sim.pad import SimPad
from agent.sim.payloads import bhyt
from agent.sim.screen import empty_scene, render
from agent.station import Station
from support.daemon import replay_config
from support.payloads import CCCD
from support.sim_reader import CCCD_CARD

FPS = 30
CARD = CCCD_CARD


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def make(tmp_path, pki):
    made = []

    def station(transport, voice=None, **chip) -> tuple[Station, "Clock"]:
        cfg = replay_config(tmp_path / f"state{len(made)}")
        cfg.chip.reader = "pcsc"
        cfg.chip.csca_dir = str(pki.csca_dir)
        for k, v in chip.items():
            setattr(cfg.chip, k, v)
        st = Station(cfg, feedback=Feedback(NoOutput()), chip_transport=transport, voice=voice)
        made.append(st)
        return st, Clock()

    yield station
    for st in made:
        if st.chip is not None:
            st.chip.stop()
        st.feedback.close()
        st.outbox.close()


class Clock:
    """Frame times: one step a camera frame."""

    def __init__(self):
        self.t = 0.0

    def next(self) -> float:
        self.t += 1 / FPS
        return self.t


def show(st: Station, clock: Clock, payload: str, seconds: float = 0.3, seed: int = 0) -> list:
    views = [render(payload, "easy", seed + j).frame for j in range(3)]
    got = []
    for i in range(int(seconds * FPS)):
        got += st.step(Frame(views[i % 3], clock.next()))
    return got


def until_stored(st: Station, clock: Clock, limit_s: float = 10.0) -> float:
    """Camera frames of an empty counter (real time passing) until the pending check-in is stored;
    returns the seconds it took."""
    empty, began = empty_scene(3), time.monotonic()
    while st.pending_chip is not None:
        assert time.monotonic() - began < limit_s, "the check-in was never stored"
        st.step(Frame(empty, clock.next()))
        time.sleep(0.01)
    return time.monotonic() - began


def signals(st: Station) -> list[Signal]:
    return [s for _, s in st.feedback.history if s != Signal.TRY_AGAIN]


def stored(st: Station) -> list[dict]:
    return [r.payload for r in st.outbox._rows("ORDER BY seq", [])]


def test_a_cccd_checkin_carries_the_chip_verified_to_the_csca(make, pki):
    st, clock = make(SimChip(CARD, pki))
    view = render(CCCD, "easy", 0).frame
    while not (got := st.step(Frame(view, clock.next()))):
        assert clock.t < 1.0
    assert [d.action for d in got] == ["checkin"]
    # asked for the card, nothing stored, no green (the read ends during the next frame at the earliest)
    assert signals(st) == [Signal.CHIP_WAIT] and st.outbox.depth() == 0
    until_stored(st, clock)
    [event] = stored(st)
    assert event["schema"] == "1.2" and event["card"]["id_number"] == CARD.id_number
    assert event["chip"] == {"verified": "chain", "clone_check": "chip", "access": "pace-can", "reason": "",
                             "mismatch": [], "fields": {"id_number": CARD.id_number, "name": CARD.name,
                                                        "birth_date": "1990-01-01"}}
    assert event["flags"] == []
    assert schema_errors("checkin", event) == []
    assert signals(st) == [Signal.CHIP_WAIT, Signal.CHECKIN]
    assert st.chip.reads == {"chain": 1}


@pytest.mark.parametrize("other, differ", [
    (SimCard(id_number="079090001234", name="Trần Thị Bích", birth_date=dt.date(1990, 1, 1),
             issued=dt.date(2021, 6, 15), expiry=dt.date(2030, 1, 1)), ["name"]),
    # another ID ending in the same 6 digits (the CAN): the chip opens, and names someone else
    (SimCard(id_number="001085001234", name="Lê Văn Cường", birth_date=dt.date(1985, 5, 5),
             issued=dt.date(2021, 6, 15), expiry=dt.date(2025, 5, 5)), ["id_number", "name", "birth_date"]),
])
def test_a_chip_naming_another_person_is_a_flag_amber_and_a_staff_prompt(make, pki, other, differ):
    st, clock = make(SimChip(other, pki))
    show(st, clock, CCCD)
    until_stored(st, clock)
    [event] = stored(st)
    assert event["flags"] == ["chip_mismatch"]
    assert event["chip"]["verified"] == "failed" and event["chip"]["mismatch"] == differ
    assert event["chip"]["reason"].startswith("the chip")
    assert schema_errors("checkin", event) == []
    assert signals(st) == [Signal.CHIP_WAIT, Signal.CHECKIN_CHIP_MISMATCH]
    assert st.counters.by_flag == {"chip_mismatch": 1}


def test_no_card_on_the_reader_within_the_timeout_is_stored_absent_and_green(make):
    st, clock = make(SimPad(), timeout_s=0.5)
    show(st, clock, CCCD)
    assert st.outbox.depth() == 0
    took = until_stored(st, clock)
    assert took < 0.5 + 2.5      # timeout_s, at most CHIP_GRACE_S and a frame more
    [event] = stored(st)
    assert event["chip"]["verified"] == "absent" and event["chip"]["fields"] == {}
    assert event["chip"]["reason"] == "no card on the reader within 0.5 s"
    assert schema_errors("checkin", event) == []
    assert signals(st) == [Signal.CHIP_WAIT, Signal.CHECKIN]


def test_a_card_laid_a_moment_after_the_prompt_is_read(make, pki):
    st, clock = make(SimPad(SimChip(CARD, pki), after_s=0.4), timeout_s=3)
    show(st, clock, CCCD)
    until_stored(st, clock)
    assert stored(st)[0]["chip"]["verified"] == "chain"


def test_a_card_lifted_mid_read_and_not_laid_back_is_stored_absent_with_where(make, pki):
    st, clock = make(SimChip(CARD, pki, lift_after=12), timeout_s=0.8)
    show(st, clock, CCCD)
    until_stored(st, clock)
    [event] = stored(st)
    chip = event["chip"]
    assert chip["verified"] == "absent" and chip["access"] is None
    assert chip["reason"].startswith("card lifted while reading") and chip["reason"].endswith("(not laid back within 0.8 s)")
    assert schema_errors("checkin", event) == []
    assert signals(st) == [Signal.CHIP_WAIT, Signal.CHECKIN]


def test_a_card_lifted_and_laid_back_is_read(make, pki):
    """Lifted after 12 commands; laid back (a fresh session) 0.3 s later: read in full."""
    pad = SimPad(SimChip(CARD, pki, lift_after=12))
    st, clock = make(pad, timeout_s=4)
    show(st, clock, CCCD)
    began = time.monotonic()
    while pad.chip.apdus <= 12:
        assert time.monotonic() - began < 5
        time.sleep(0.01)
    pad.place(SimChip(CARD, pki), after_s=0.3)
    until_stored(st, clock)
    assert stored(st)[0]["chip"]["verified"] == "chain"


class Held:
    """A card that answers its first command and then holds the next one until `release()`: a slow
    card whose slowness does not depend on how fast this machine decodes (the emulated arm64 run
    decodes the frames below in several seconds, longer than any fixed per-command latency)."""

    def __init__(self, chip: SimChip):
        self.chip, self.gate, self.held = chip, threading.Event(), threading.Event()

    def transmit(self, apdu: bytes) -> bytes:
        if self.chip.apdus >= 1:
            self.held.set()
            assert self.gate.wait(600), "the test never released the card"
        return self.chip.transmit(apdu)

    def release(self) -> None:
        self.gate.set()


def test_the_camera_keeps_decoding_while_the_chip_is_read(make, pki):
    """A card held mid-read: frames go on being decoded meanwhile, and another patient's BHYT card
    is checked in (green) before the CCCD's chip read ends."""
    card_on_pad = Held(SimChip(CARD, pki))
    # a timeout far past the test (46 s under emulation)
    st, clock = make(card_on_pad, timeout_s=600)
    began_all = time.monotonic()
    try:
        show(st, clock, CCCD)
        assert st.pending_chip is not None
        assert card_on_pad.held.wait(10), "the chip read never began"
        decoded = st.counters.decoded
        card = bhyt(random.Random(7))
        slowest = 0.0
        views = [render(card, "easy", 50 + j).frame for j in range(3)]
        for i in range(int(0.5 * FPS)):
            began = time.monotonic()
            st.step(Frame(views[i % 3], clock.next()))
            slowest = max(slowest, time.monotonic() - began)
        assert st.pending_chip is not None, f"stored while the card was held, {time.monotonic() - began_all:.1f} s in"
        # no frame waited for the chip: it is held until the test lets it go, so a frame that waited
        # would last until the release: the bound is only slack for a slow (emulated) frame
        assert st.counters.decoded - decoded >= 0.5 * FPS - 1 and slowest < 10
        assert [e["kind"] for e in stored(st)] == ["bhyt"]             # stored while the chip is read
        assert signals(st) == [Signal.CHIP_WAIT, Signal.CHECKIN]
    finally:
        card_on_pad.release()
    until_stored(st, clock, limit_s=30)
    assert [(e["kind"], e.get("chip", {}).get("verified")) for e in stored(st)] == [("bhyt", None), ("cccd", "chain")]
    assert "chip" not in stored(st)[0]


def test_the_face_leaves_only_when_configured_and_is_never_logged(make, pki, caplog):
    caplog.set_level(logging.INFO)
    st, clock = make(SimChip(CARD, pki), read_face=True)
    show(st, clock, CCCD)
    until_stored(st, clock)
    face = stored(st)[0]["chip"]["face_jpeg"]
    assert base64.b64decode(face) == TINY_JPEG
    assert schema_errors("checkin", stored(st)[0]) == []
    logs = caplog.text
    assert "chip read: chain" in logs and face not in logs and CARD.name not in logs and "1990" not in logs
    st2, clock2 = make(SimChip(CARD, pki))                       # read_face off (the default)
    show(st2, clock2, CCCD)
    until_stored(st2, clock2)
    assert "face_jpeg" not in stored(st2)[0]["chip"]


def test_only_the_configured_dg13_fields_are_carried(make, pki):
    st, clock = make(SimChip(CARD, pki), dg13_fields=["issued", "parents", "ethnicity"])
    show(st, clock, CCCD)
    until_stored(st, clock)
    event = stored(st)[0]
    assert event["chip"]["fields"] == {"issued": "2021-06-15", "parents": list(CARD.parents), "ethnicity": "Kinh"}
    assert schema_errors("checkin", event) == []


class Broken:
    """A reader whose driver fails in a way read_chip does not expect: the worker crashes."""

    def __init__(self):
        self.calls = 0

    def transmit(self, apdu: bytes) -> bytes:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("driver bug")
        raise CardLost("no card in the field")


def test_a_crashed_chip_worker_is_a_fault_never_a_lost_checkin_and_restarts(make):
    st, clock = make(Broken(), timeout_s=0.5)
    show(st, clock, CCCD)
    until_stored(st, clock)
    [event] = stored(st)
    assert event["chip"]["verified"] == "absent" and "did not answer" in event["chip"]["reason"]
    assert any(f.code == "worker_crashed" and f.text.startswith("chip worker crashed") for f in st.fault_items())
    assert st.status().workers["chip"].crashes == 1
    # restarted: the next patient's card gets its answer from the worker
    time.sleep(0.6)
    show(st, clock, CCCD.replace("079090001234", "079090001235"), seed=9)
    until_stored(st, clock)
    assert stored(st)[1]["chip"]["reason"] == "no card on the reader within 0.5 s"


def test_a_station_stopped_during_the_read_stores_the_checkin(make, pki):
    st, clock = make(SimPad(), timeout_s=10)
    show(st, clock, CCCD)
    st.shutdown()
    [event] = [r.payload for r in __import__("agent.outbox", fromlist=["Outbox"]).Outbox(
        st.outbox.path, station="demo-station")._rows("ORDER BY seq", [])]
    assert event["chip"]["reason"] == "the station stopped during the chip read"


def test_without_a_reader_a_cccd_is_checked_in_at_once_with_no_chip(tmp_path):
    cfg = replay_config(tmp_path / "state")
    st = Station(cfg, feedback=Feedback(NoOutput()))
    show(st, Clock(), CCCD)
    [event] = stored(st)
    assert "chip" not in event and st.chip is None
    st.outbox.close()


def test_chip_reader_needs_no_station(pki):
    """The worker on its own: a request and its outcome, as `chip test` uses it."""
    from agent.config import ChipConfig

    reader = ChipReader(ChipConfig(reader="pcsc", csca_dir=str(pki.csca_dir)), SimChip(CARD, pki)).start()
    try:
        from agent.cards import read_card
        ticket = reader.request(read_card(CCCD).card)
        began = time.monotonic()
        while (out := reader.outcome(ticket)) is None:
            assert time.monotonic() - began < 5
            time.sleep(0.01)
        assert out.result.verified == "chain" and out.mismatch == []
    finally:
        reader.stop()


def test_the_patient_hears_where_to_lay_the_card_then_the_staff_prompt(make, pki, tmp_path):
    """The prompts, through the station's voice (the player records what it plays): the Vietnamese
    request for the card, then, for another person's chip, the check-in's staff prompt."""
    from agent.feedback.voice import PROMPTS, Voice
    from test_voice import FakePlayer, tone

    assert PROMPTS["chip_wait"] == "Mời quý khách đặt thẻ căn cước lên đầu đọc"
    folder = tmp_path / "prompts"
    folder.mkdir()
    for name in PROMPTS:
        tone(folder / f"{name}.wav", seconds=0.05)
    player = FakePlayer()
    other = SimCard(id_number=CARD.id_number, name="Trần Thị Bích", birth_date=CARD.birth_date,
                    issued=CARD.issued, expiry=CARD.expiry)
    st, clock = make(SimChip(other, pki), voice=Voice(player, folder))
    show(st, clock, CCCD)
    until_stored(st, clock)
    assert [name for name, _ in player.played] == ["chip_wait", "checkin_chip_mismatch"]
