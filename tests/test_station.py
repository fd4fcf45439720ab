"""The station loop: presentation logic, and a replayed sequence of simulated presentations
through the real decoder, card reader, outbox and feedback.

Also: what the station logs and shows (no birth date of a rejected card, the hospital's
words quoted), and read_at in the configured time zone whatever the system's."""

import json
import logging
import random
import subprocess
import sys
import time

import numpy as np
import pytest
import zxingcpp

from pathlib import Path


from agent.capture import Frame
from agent.cards import read_card
from agent.checkin import Presenter
from agent.config import MqttConfig
from agent.decode import Code, DecodeResult
from agent.feedback import Feedback, NoOutput, Signal
from agent.mqtt.schemas import errors as schema_errors
from agent.outbox import Outbox
from agent.sim.payloads import bhyt, cccd
from agent.sim.screen import empty_scene, render
from agent.station import Station
from support.broker import Subscriber
from support.daemon import Daemon, config, replay_config
from support.payloads import BHYT15, CCCD, VIETQR, with_field

ROOT = Path(__file__).resolve().parents[1]
FPS = 30
PREFIX = "hospital/checkin"
STATION = "counter-01"
wait_for = Subscriber.wait_for


def result(*texts, candidates=0, strategy="plain"):
    codes = [Code(t, t.encode(), ((0, 0), (1, 0), (1, 1), (0, 1)), strategy) for t in texts]
    return DecodeResult(codes, candidates)


# --- presentation logic (pure) --------------------------------------------------------------

def actions(p, t, *texts, candidates=0, strategy="plain"):
    return [d.action for d in p.on_frame(t, result(*texts, candidates=candidates, strategy=strategy))]


def test_one_checkin_per_presentation_and_already_read_within_cooldown():
    p = Presenter(cooldown_s=10)
    assert actions(p, 0.0, BHYT15) == ["checkin"]
    assert actions(p, 0.03, BHYT15) == []            # consecutive frames: same presentation
    assert actions(p, 0.9, BHYT15) == []             # short gap (hand wobble)
    assert actions(p, 3.0, BHYT15) == ["already_read"]
    assert actions(p, 3.1, BHYT15) == []
    assert actions(p, 14.0, BHYT15) == ["checkin"]   # seen last at 3.1: cooldown over


def test_the_cooldown_counts_from_when_the_card_was_last_seen_as_the_docs_say():
    """A card shown every 8 s with a 10 s cooldown stays 'already read' (8 s since the last sighting),
    though 16 s have passed since its check-in; the config, README and guide say it so."""
    p = Presenter(cooldown_s=10)
    assert actions(p, 0.0, BHYT15) == ["checkin"]
    assert actions(p, 8.0, BHYT15) == ["already_read"]
    assert actions(p, 16.0, BHYT15) == ["already_read"]      # 16 s after the check-in
    assert actions(p, 26.5, BHYT15) == ["checkin"]           # 10.5 s out of view
    root = Path(__file__).resolve().parents[1]
    toml = (root / "config" / "config.toml").read_text().split("cooldown_s =")[0].rsplit("[checkin]", 1)[1]
    assert "last seen" in toml and "not from the check-in" in toml
    assert "after the camera last saw it" in (root / "README.md").read_text()
    assert "after\n  the station last saw it" in (root / "docs" / "integrating.md").read_text()


def test_different_card_is_a_new_checkin_at_once():
    p = Presenter()
    assert actions(p, 0.0, BHYT15) == ["checkin"]
    assert actions(p, 0.1, CCCD) == ["checkin"]
    assert actions(p, 0.2, BHYT15, CCCD) == []


def test_same_card_rerendered_is_the_same_card():
    p = Presenter()
    assert actions(p, 0.0, BHYT15) == ["checkin"]
    variant = BHYT15.replace("|$", "|#")             # same card number, different payload text
    assert actions(p, 5.0, variant) == ["already_read"]


def test_invalid_and_other_codes_are_rejected_never_checked_in():
    p = Presenter()
    assert actions(p, 0.0, VIETQR) == ["rejected"]
    assert actions(p, 0.1, VIETQR) == []
    assert actions(p, 5.0, VIETQR) == ["rejected"]   # shown again: told again
    assert actions(p, 9.0, with_field(BHYT15, 3, "9")) == ["rejected"]


def test_a_rejected_code_out_of_the_crop_is_not_a_new_presentation_when_the_crop_comes_back():
    """A bank QR sticker in a corner: red once; while the capture loop's crop is on a patient's
    phone elsewhere the sticker is out of view, and when the crop comes back to the whole field it
    is the same sticker, not red again. Gone from a whole-field frame and shown again: told again."""
    from agent.capture.view import View
    full = View((0, 0, 4608, 2592), (1280, 720))
    zoomed = View((2000, 1000, 2048, 1152), (1280, 720))          # the patient's phone, elsewhere
    sticker = Code(VIETQR, VIETQR.encode(), ((60, 60), (160, 60), (160, 160), (60, 160)), "plain")
    card = Code(BHYT15, BHYT15.encode(), ((500, 300), (700, 300), (700, 500), (500, 500)), "plain")
    p = Presenter()
    acts = lambda t, view, *codes: [d.action.value for d in p.on_frame(t, DecodeResult(list(codes)), view=view)]
    assert acts(0.0, full, sticker) == ["rejected"]
    assert acts(0.1, full, sticker) == []
    assert acts(0.2, zoomed) == []                                   # the crop on the patient
    assert acts(1.8, zoomed, card) == ["checkin"]
    assert all(acts(1.8 + 0.1 * i, zoomed, card) == [] for i in range(1, 18))
    assert acts(3.6, full, sticker, card) == []                      # the whole field again: same sticker
    # a code that leaves a whole-field view and is shown again later is told again, as before
    assert acts(4.0, full) == [] and acts(6.0, full) == []
    assert acts(6.1, full, sticker) == ["rejected"]


#: a not-a-card text a miscorrected grid could give (any text the card reader calls "other")
GARBLED = "Q\x07q\x1b\xe9 #9"


@pytest.mark.parametrize("strategy", ["bitlevel", "fused", "finders"])
def test_a_second_stage_only_not_a_card_read_is_confirmed_before_red(strategy):
    """One frame's second-stage read that is not a card may be a miscorrection of the card being
    shown: no red until a later frame reads the same text (by any strategy)."""
    p = Presenter()
    assert actions(p, 0.0, VIETQR, strategy=strategy) == []          # one frame: nothing red yet
    assert actions(p, 0.07, VIETQR, strategy=strategy) == ["rejected"]   # a second frame confirms
    assert actions(p, 0.13, VIETQR, strategy=strategy) == []          # the same presentation
    p = Presenter()
    assert actions(p, 0.0, with_field(BHYT15, 3, "9"), strategy=strategy) == []   # an invalid card too
    assert actions(p, 0.07, with_field(BHYT15, 3, "9"), strategy="double") == ["rejected"]


def test_a_plain_read_confirms_and_a_plain_bank_qr_is_red_at_once():
    p = Presenter()
    assert actions(p, 0.0, VIETQR, strategy="bitlevel") == []
    assert actions(p, 0.07, VIETQR, strategy="plain") == ["rejected"]
    p = Presenter()
    assert actions(p, 0.0, VIETQR) == ["rejected"]                    # zxing-cpp read it: at once
    assert actions(p, 0.0, VIETQR, strategy="rectify") == []          # (already told)
    p = Presenter()
    assert actions(p, 0.0, VIETQR, strategy="sharpen") == ["rejected"]   # any zxing-cpp view


def test_an_unconfirmed_read_is_forgotten_after_the_presentation():
    """Two miscorrections into the same text seconds apart are two presentations: still no red;
    meanwhile the patient gets "try again", as for any code that stays unreadable."""
    p = Presenter(try_again_s=2.0)
    got = [a for i in range(100)                  # 3.3 s; the garbled read every 1.5 s, else unread
           for a in actions(p, i / FPS, *([GARBLED] if i % 45 == 0 else []), candidates=1, strategy="fused")]
    assert got == ["try_again"]
    p = Presenter()
    assert actions(p, 0.0, GARBLED, strategy="bitlevel") == []
    assert actions(p, 1.5, GARBLED, strategy="bitlevel") == []        # 1.5 s later: not confirmed
    assert actions(p, 1.6, GARBLED, strategy="bitlevel") == ["rejected"]


@pytest.mark.parametrize("strategy", ["plain", "bitlevel", "fused", "finders"])
def test_a_card_read_by_any_stage_is_checked_in_at_once_and_a_miscorrection_beside_it_is_not_red(strategy):
    """The card of the presentation, whatever read it, is checked in at the frame it is read; a
    garbled read of it in an earlier frame or in the same frame gives no red."""
    p = Presenter()
    assert actions(p, 0.0, GARBLED, strategy="fused") == []
    assert actions(p, 0.07, BHYT15, strategy=strategy) == ["checkin"]
    frame = DecodeResult([Code(BHYT15, BHYT15.encode(), ((0, 0), (9, 0), (9, 9), (0, 9)), strategy),
                          Code(GARBLED, GARBLED.encode(), ((50, 0), (59, 0), (59, 9), (50, 9)), "bitlevel")])
    p = Presenter()
    assert [d.action for d in p.on_frame(0.0, frame)] == ["checkin"]
    assert [d.action for d in p.on_frame(3.0, frame)] == ["already_read"]


@pytest.mark.parametrize("strategy", ["plain", "bitlevel"])
def test_a_red_for_a_misread_field_does_not_cost_the_card_its_checkin(strategy):
    """An invalid read of the card being shown (a garbled field, the same card number) gave red;
    the card read right in the next frame is still checked in (it used to count as the same
    presentation as the red, and the patient left with no check-in)."""
    p = Presenter()
    bad = with_field(BHYT15, 3, "9")
    got = [a for t in (0.0, 0.07) for a in actions(p, t, bad, strategy=strategy)]
    assert got == ["rejected"]
    assert actions(p, 0.13, BHYT15, strategy=strategy) == ["checkin"]
    assert actions(p, 0.2, BHYT15) == [] and actions(p, 0.27, bad) == []


def test_expired_is_a_checkin():
    p = Presenter()
    assert actions(p, 0.0, with_field(BHYT15, 7, "01/01/2025")) == ["checkin"]


def test_try_again_after_a_code_stays_unreadable():
    p = Presenter(try_again_s=2.0)
    seen = [a for i in range(100) for a in actions(p, i / FPS, candidates=1)]
    assert seen == ["try_again"]                    # once after 2 s, not again within 4 s
    assert actions(p, 3.4, BHYT15) == ["checkin"]
    assert [a for i in range(30) for a in actions(p, 3.5 + i / FPS)] == []


def test_forget_lets_a_refused_checkin_try_again():
    p = Presenter()
    d = p.on_frame(0.0, result(BHYT15))[0]
    p.forget(d.key)
    assert actions(p, 0.05, BHYT15) == ["checkin"]


# --- the whole station on replayed presentations -------------------------------------------

class Recorder(NoOutput):
    pass


def make_station(tmp_path, **checkin):
    cfg = replay_config(tmp_path / "state")
    for k, v in checkin.items():
        setattr(cfg.checkin, k, v)
    return Station(cfg, feedback=Feedback(Recorder()))


def presentations():
    """22 presentations: distinct cards at mixed difficulty, 3 repeats within the cooldown,
    a bank QR and an invalid card. Returns [(payload, level, hold_s, expected_action)]."""
    rng = random.Random(2026)
    plan, cards = [], []
    levels = ["easy", "medium", "medium", "hard"]
    for i in range(17):
        payload = bhyt(random.Random(f"st{i}")) if i % 3 else cccd(random.Random(f"st{i}"))
        level = levels[i % 4]
        hold = rng.uniform(1.5, 2.0) if level == "hard" else rng.uniform(0.5, 2.0)
        plan.append((payload, level, hold, "checkin"))
        cards.append(payload)
        if i in (4, 9, 14):
            plan.append((cards[-2], "easy", 0.8, "already_read"))   # a repeat within 10 s
    plan.insert(6, (VIETQR, "easy", 1.0, "rejected"))
    plan.insert(12, (with_field(BHYT15, 3, "9"), "medium", 1.0, "rejected"))
    return plan


def rng_gap(k):
    return 0.5 + (k % 3) * 0.5   # 0.5 to 1.5 s of empty counter between patients


@pytest.mark.slow
def test_replayed_presentations_one_checkin_each(tmp_path):
    station = make_station(tmp_path)
    empties = [empty_scene(i) for i in range(6)]
    plan = presentations()
    assert len(plan) >= 20
    t, decisions = 0.0, []
    for k, (payload, level, hold, expected) in enumerate(plan):
        for i in range(int(rng_gap(k) * FPS)):              # empty counter between patients
            station.step(Frame(empties[i % len(empties)], t))
            t += 1 / FPS
        n_views = 10 if level == "hard" else 4                # the hand moves: a few distinct views
        views = [render(payload, level, 1000 * k + j).frame for j in range(n_views)]
        got = []
        for i in range(int(hold * FPS)):
            got += station.step(Frame(views[i % n_views], t))
            t += 1 / FPS
        decisions.append([d.action for d in got if d.action != "try_again"])
    expected = [[e] for _, _, _, e in plan]
    assert decisions == expected
    rows = station.outbox._rows("ORDER BY seq", [])
    checkins = [p for p, _, _, e in plan if e == "checkin"]
    assert len(rows) == len(checkins) == 17
    assert [r.payload["card"] for r in rows] == [read_card(p).card for p in checkins]
    signals = [s for _, s in station.feedback.history if s != Signal.TRY_AGAIN]
    want = {"checkin": Signal.CHECKIN, "already_read": Signal.ALREADY_READ, "rejected": Signal.REJECTED}
    # a check-in of a priority patient (a child's card, an elderly patient's birth date) has its own cue
    cues = iter(Signal.CHECKIN_PRIORITY if any(f.startswith("priority_") for f in r.payload["flags"])
                else Signal.CHECKIN for r in rows)
    assert signals == [next(cues) if e == "checkin" else want[e] for _, _, _, e in plan]
    station.feedback.close()
    station.outbox.close()


def glare_code(text: str, radius: float) -> np.ndarray:
    """`text` as a QR on a grey counter with a saturated highlight of `radius` px on it: at 40 px
    on VIETQR, 55 px on CCCD, zxing-cpp locates the code but cannot read it, and the second
    stage reads it from the modules left (tests/test_grid.py shows the erasures at work)."""
    code = zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode, ec_level="M")
    img = np.array(code.to_image(scale=6, add_quiet_zones=True))
    h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w]
    img[(xx - w * 0.55) ** 2 + (yy - h * 0.6) ** 2 < radius ** 2] = 255
    canvas = np.full((720, 1280), 128, np.uint8)
    canvas[100:100 + h, 300:300 + w] = img
    return canvas


def test_station_shows_red_only_for_a_confirmed_read_and_checks_in_a_card_read_by_any_stage(tmp_path):
    """Real frames through the real decoder, card reader, outbox and feedback: a bank QR under a
    highlight, read by the second stage only, is red at its second frame, not its first; the same
    QR read plainly is red at its first frame; a card read by the second stage only is checked in
    at its first frame."""
    station = make_station(tmp_path)
    signals = lambda: [s for _, s in station.feedback.history]   # noqa: E731
    hidden, clean = glare_code(VIETQR, 40), glare_code(VIETQR, 0)
    assert not zxingcpp.read_barcodes(hidden, formats=zxingcpp.BarcodeFormat.QRCode)
    first = station.step(Frame(hidden, 0.0))
    assert first == [] and signals() == []                        # one second-stage read: nothing
    assert [d.action for d in station.step(Frame(hidden, 1 / FPS))] == ["rejected"]
    assert signals() == [Signal.REJECTED]
    t = 20.0                                                       # another patient, after the cooldown
    assert [d.action for d in station.step(Frame(clean, t))] == ["rejected"]   # plain: at once
    assert signals() == [Signal.REJECTED] * 2
    card = glare_code(CCCD, 55)
    assert not zxingcpp.read_barcodes(card, formats=zxingcpp.BarcodeFormat.QRCode)
    got = station.step(Frame(card, 40.0))
    assert [(d.action, d.read.card["id_number"]) for d in got] == [("checkin", read_card(CCCD).card["id_number"])]
    assert station.last_view[1][0].strategy == "bitlevel"
    assert signals()[2:] == [Signal.CHECKIN] and station.outbox.depth() == 1
    station.feedback.close()
    station.outbox.close()


def test_idle_scene_decodes_at_reduced_rate(tmp_path):
    station = make_station(tmp_path, idle_after_s=1.0, idle_fps=5.0)
    still = empty_scene(1)
    for i in range(10 * FPS):                                 # 10 s of an unchanging empty counter
        station.step(Frame(still, i / FPS))
    # active for the first second, then 5 decodes a second
    assert station.counters.decoded <= FPS * 1 + 5 * 9 + 2
    before = station.counters.decoded
    moving = [render(bhyt(random.Random(1)), "easy", j).frame for j in range(3)]
    for i in range(FPS):                                      # someone steps up: full rate at once
        station.step(Frame(moving[i % 3], 10 + i / FPS))
    assert station.counters.decoded - before >= FPS - 1
    assert station.counters.checkins == 1
    station.feedback.close()
    station.outbox.close()


def test_outbox_full_gives_fault_not_green(tmp_path):
    station = make_station(tmp_path)
    station.outbox.max_events = 0
    frame = render(BHYT15, "easy", 1).frame
    station.step(Frame(frame, 0.0))
    assert [s for _, s in station.feedback.history] == [Signal.FAULT]
    assert station.counters.refused == 1 and station.outbox.depth() == 0
    assert "outbox full" in station.faults()[0]
    assert [f.code for f in station.fault_items()] == ["outbox_refusing"]
    station.outbox.max_events = 10
    station.step(Frame(frame, 0.05))                          # still in view: recorded once there is room
    assert [s for _, s in station.feedback.history][-1] == Signal.CHECKIN
    assert station.outbox.depth() == 1
    station.feedback.close()
    station.outbox.close()


def test_a_check_in_too_large_to_publish_gives_fault_not_green(tmp_path, monkeypatch):
    """Issue 32: green means stored and on its way. No card the reader accepts gives a check-in over
    MAX_CHECKIN_BYTES (tests/test_outbox.py); with the bound lowered below a real card's check-in,
    the station refuses it as it refuses a full outbox: the fault signal, nothing stored."""
    import agent.outbox.store as store

    monkeypatch.setattr(store, "MAX_CHECKIN_BYTES", 300)
    station = make_station(tmp_path)
    station.step(Frame(render(BHYT15, "easy", 1).frame, 0.0))
    assert [s for _, s in station.feedback.history] == [Signal.FAULT]
    assert station.counters.refused == 1 and station.counters.checkins == 0 and station.outbox.depth() == 0
    assert "larger than a check-in may be (300 bytes" in station.faults()[0]
    station.feedback.close()
    station.outbox.close()


def test_log_line_masks_the_name(tmp_path, caplog):
    caplog.set_level("INFO")
    station = make_station(tmp_path)
    station.step(Frame(render(BHYT15, "easy", 1).frame, 0.0))
    assert "Ng*** V** A*" in caplog.text and "Nguyễn" not in caplog.text
    assert "4e677579" not in caplog.text                      # never the payload
    station.feedback.close()
    station.outbox.close()


# --- the daemon: demo mode, signals, broker -------------------------------------------------

@pytest.mark.slow
def test_run_demo_records_checkins_and_stops_cleanly_on_sigterm(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    lines = []
    deadline = time.time() + 60
    while time.time() < deadline and sum("check-in recorded" in line for line in lines) < 3:
        lines.append(proc.stdout.readline())
    t0 = time.time()
    proc.terminate()
    out, err = proc.communicate(timeout=10)
    assert time.time() - t0 < 5, "SIGTERM must stop the station within 5 s"
    assert proc.returncode == 0, err
    assert sum("check-in recorded" in line for line in lines) >= 3
    assert "Traceback" not in err and "station stopped" in err
    ob = Outbox(tmp_path / "state" / "outbox.db", station="demo-station")
    assert ob.depth() >= 3                                    # queued: no broker in the demo
    ob.close()


def test_run_with_bad_config_exits_2_without_traceback(tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_text("[camera]\nsource = 'webcam'\n")
    proc = subprocess.run([sys.executable, "-m", "agent", "run", "-c", str(bad)], capture_output=True, text=True,
                          cwd=ROOT, timeout=30)
    assert proc.returncode == 2 and "camera.source" in proc.stderr and "Traceback" not in proc.stderr


def test_station_with_broker_publishes_and_shows_the_hospital_verdict(tmp_path):
    from support.broker import Broker, Subscriber
    broker = Broker(tmp_path / "broker").start()
    sub = Subscriber(broker.port, "hospital/checkin/#")
    cfg = replay_config(tmp_path / "state", station="counter-07")
    cfg.camera.fps = 20.0
    cfg.mqtt = MqttConfig(host="127.0.0.1", port=broker.port, tls=False, allow_insecure=True)
    station = Station(cfg, feedback=Feedback(Recorder()))
    import threading
    runner = threading.Thread(target=station.run)
    runner.start()
    try:
        assert Subscriber.wait_for(lambda: len(sub.json_on("/checkin")) >= 3, 30)
        event = sub.json_on("/checkin")[0]
        sub.client.publish("hospital/checkin/counter-07/verdict",
                           json.dumps({"id": event["id"], "result": "accepted", "code": "000"}), qos=1)
        assert Subscriber.wait_for(lambda: Signal.VERDICT_ACCEPTED in [s for _, s in station.feedback.history], 5)
    finally:
        t0 = time.time()
        station.stop()
        runner.join(10)
        assert time.time() - t0 < 5 and not runner.is_alive()
        assert Subscriber.wait_for(lambda: sub.json_on("/status")[-1]["state"] == "offline", 5)
        sub.close()
        broker.stop()


@pytest.mark.slow   # real daemons, real brokers
def test_read_at_and_status_keep_the_configured_offset_whatever_the_system_zone(tmp_path, broker):
    """The same station under TZ=UTC, then TZ=America/New_York: every timestamp it sends is +07:00
    (Asia/Ho_Chi_Minh, the default), and the last will says since when the lost connection ran."""
    sub = Subscriber(broker.port, f"{PREFIX}/#", client_id="hospital-time")
    state = tmp_path / "state"
    conf = config(tmp_path, state, station=STATION, port=broker.port)
    seen = 0
    try:
        for tz in ("UTC", "America/New_York"):
            d = Daemon(conf, env={"TZ": tz})
            try:
                assert d.wait_for(lambda: len(sub.json_on("/checkin")) > seen, 30), d.log[-2000:]
                online = [s for s in sub.json_on("/status") if s["state"] == "online"][-1]
                if tz == "America/New_York":
                    broker.stop()           # a second connection of the same process: the will is armed anew
                    broker.start()
                    assert d.wait_for(lambda: [s for s in sub.json_on("/status") if s["state"] == "online"][-1]
                                      ["since"] != online["since"], 30)
                    online = [s for s in sub.json_on("/status") if s["state"] == "online"][-1]
                    d.proc.kill()           # lost without a goodbye: the broker publishes the will
                    assert wait_for(lambda: sub.json_on("/status")[-1]["state"] == "offline", 20)
                    will = sub.json_on("/status")[-1]
                    assert will["reason"] == "connection lost" and will["since"] == online["since"]
                    assert schema_errors("status", will) == []
            finally:
                d.stop() if d.proc.poll() is None else None
            seen = len(sub.json_on("/checkin"))
        stamps = [e["read_at"] for e in sub.json_on("/checkin")]
        stamps += [s["at"] for s in sub.json_on("/status") + sub.json_on("/health")]
        assert len(stamps) > 4 and all(s.endswith("+07:00") for s in stamps), stamps
    finally:
        sub.close()


# --- 10: personal data in logs --------------------------------------------------------------------

def test_rejected_card_birth_date_is_never_logged(tmp_path, caplog):
    from agent.checkin import Action, Decision
    from agent.config import Config
    from agent.feedback import Feedback
    from agent.feedback.player import NoOutput
    from agent.station import Station
    from agent.sim.demo import CCCD

    fields = CCCD.split("|")
    fields[3] = "31139876"                                  # a birth date that cannot be
    read = read_card("|".join(fields))
    assert read.verdict == "invalid"
    cfg = replay_config(tmp_path / "state")
    station = Station(cfg, feedback=Feedback(NoOutput()))
    caplog.set_level(logging.DEBUG, logger="agent")
    try:
        station._act(Decision(Action.REJECTED, read, "k"))
    finally:
        station.feedback.close()
        station.outbox.close()
    assert "rejected cccd code: bad_birth_date" in caplog.text
    assert "31139876" not in caplog.text and "3113" not in caplog.text
    assert "31139876" not in json.dumps(read.to_dict())     # nor in the problem message


# --- 15: the hospital's words are quoted and labelled on the console line -----------------------

@pytest.mark.parametrize("message", ["check-in #999 bhyt ok Ng*** V** A* (no problems)",
                                     'ok" check-in #999 bhyt ok "'])
def test_verdict_text_is_quoted_and_labelled_as_the_hospitals_words(tmp_path, caplog, message):
    import json
    import logging
    import re
    from agent.config import Config
    from agent.feedback import Feedback
    from agent.feedback.player import ConsoleOutput
    from agent.mqtt.messages import Verdict
    from agent.station import Station
    from support.daemon import RECORDED

    shown = []

    class Console(ConsoleOutput):
        def announce(self, signal, detail):
            shown.append(detail)

    cfg = Config()
    cfg.station.state_dir = str(tmp_path / "state")
    station = Station(cfg, feedback=Feedback(Console()))
    try:
        with caplog.at_level(logging.INFO):
            station.on_verdict(Verdict("0193a0c0-0000-7000-8000-000000000001", "accepted", code="OK",
                                       message=message))
            deadline = __import__("time").time() + 5
            while not shown and __import__("time").time() < deadline:
                __import__("time").sleep(0.02)
    finally:
        station.feedback.close()
        station.outbox.close()
    assert shown == [f"hospital's words: {json.dumps('OK ' + message, ensure_ascii=False)}"]
    # one JSON string after the label: a quote in the text cannot close it early
    assert json.loads(shown[0].removeprefix("hospital's words: ")) == "OK " + message
    for line in [*shown, *(r.getMessage() for r in caplog.records)]:
        assert not RECORDED.match(line) and not re.match(r"^check-in #", line), line
