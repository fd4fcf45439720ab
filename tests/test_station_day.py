"""One "today" for the whole station, in `[station] timezone` (issue 32 #3): a card's validity is
judged on the same day its flags and `repeat_today` are counted on, whatever zone the Pi's system
is left in. The machine's zone and clock are set per test (TZ, tzset, time.time), so these tests
mean the same on any machine."""

from __future__ import annotations

import contextlib
import json
import time
from datetime import date, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import zxingcpp

from agent import cli, clock
from agent.admin import doctor
from agent.capture import Frame
from agent.cards import read_card
from agent.config import Config
from agent.feedback import Feedback, NoOutput, Signal
from agent.station import Station
from support.daemon import cli as cli_process
from support.payloads import BHYT15, with_field
from support.systemzone import instant, system_zone

# 18:30 UTC on 5 December is 01:30 on 6 December in Vietnam
LATE_UTC = "2026-12-05T18:30+00:00"
VN_TODAY, VN_YESTERDAY = "06/12/2026", "05/12/2026"


def card(number: str, valid_from: str = "01/01/2024", valid_to: str = "-") -> str:
    return with_field(with_field(with_field(BHYT15, 0, number), 6, valid_from), 7, valid_to)


VALID_FROM_TODAY = card("DN4790000000001", valid_from=VN_TODAY)
EXPIRED_YESTERDAY = card("DN4790000000002", valid_to=VN_YESTERDAY)
VALID_TO_TODAY = card("DN4790000000003", valid_to=VN_TODAY)


@pytest.fixture
def at(monkeypatch):
    """at(instant, system zone): the machine's clock stands at that instant in that zone."""
    with contextlib.ExitStack() as zones:
        def set_clock(moment: str, zone: str = "UTC") -> None:
            monkeypatch.setattr(time, "time", lambda: instant(moment))
            zones.enter_context(system_zone(zone))

        yield set_clock


def qr_frame(text: str, t: float) -> Frame:
    """`text` as a clean QR on a grey counter, as the camera gives it."""
    code = zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode, ec_level="M")
    img = np.array(code.to_image(scale=5, add_quiet_zones=True))
    canvas = np.full((720, 1280), 128, np.uint8)
    canvas[60:60 + img.shape[0], 300:300 + img.shape[1]] = img
    return Frame(canvas, t)


def test_a_pi_left_in_utc_judges_cards_on_vietnams_day_between_midnight_and_7(tmp_path, at):
    """The issue's case, through the camera frame, the decoder, the reader, the outbox and the
    cues: at 01:30 in Vietnam on a Pi in UTC (still the 5th there), a card valid from the 6th is
    an `ok` check-in with a plain green, one that ended on the 5th is `expired` (amber and the
    spoken warning), and the stored check-in says the day it was judged on."""
    at(LATE_UTC, "UTC")
    assert date.today() == date(2026, 12, 5)                  # the system's day
    cfg = Config()
    cfg.station.state_dir = str(tmp_path / "state")
    cfg.feedback.backend = "none"
    st = Station(cfg, feedback=Feedback(NoOutput()))
    try:
        got = {}
        for i, payload in enumerate([VALID_FROM_TODAY, EXPIRED_YESTERDAY, VALID_TO_TODAY]):
            decisions = st.step(qr_frame(payload, 20.0 * i))
            assert [d.action.value for d in decisions] == ["checkin"], decisions
            got[payload] = (decisions[0].read.verdict, st.feedback.history[-1][1])
        assert got == {VALID_FROM_TODAY: ("ok", Signal.CHECKIN),
                       EXPIRED_YESTERDAY: ("expired", Signal.CHECKIN_WARNING),
                       VALID_TO_TODAY: ("ok", Signal.CHECKIN)}
        stored = {e["card"]["card_number"]: e for e in (r.payload for r in st.outbox.recent(3))}
        assert {n: e["verdict"] for n, e in stored.items()} == \
            {"DN4790000000001": "ok", "DN4790000000002": "expired", "DN4790000000003": "ok"}
        assert all(e["read_at"].startswith("2026-12-06T01:30:00") for e in stored.values()), stored
    finally:
        st.shutdown()


@pytest.mark.parametrize("system, moment", [
    ("UTC", LATE_UTC),                                          # the system a day behind Vietnam
    ("Pacific/Kiritimati", "2026-12-06T11:00+00:00"),           # a day ahead: 18:00 on the 6th in Vietnam
])
def test_read_card_without_a_date_uses_the_stations_day_not_the_systems(at, system, moment):
    at(moment, system)
    vn = datetime.fromtimestamp(instant(moment), ZoneInfo("Asia/Ho_Chi_Minh")).date()
    assert date.today() != vn                                   # the case at hand
    today = vn.strftime("%d/%m/%Y")
    assert read_card(card("DN4790000000001", valid_from=today)).verdict == "ok"
    assert read_card(card("DN4790000000002", valid_to=today)).verdict == "ok"
    yesterday = date.fromordinal(vn.toordinal() - 1).strftime("%d/%m/%Y")
    tomorrow = date.fromordinal(vn.toordinal() + 1).strftime("%d/%m/%Y")
    assert read_card(card("DN4790000000002", valid_to=yesterday)).verdict == "expired"
    assert read_card(card("DN4790000000001", valid_from=tomorrow)).verdict == "not_yet_valid"


def test_parse_judges_on_the_configured_zones_day(tmp_path, at, capsys):
    """`parse` without --today: the day of `-c`'s [station] timezone, else Asia/Ho_Chi_Minh (the
    station's default), never the machine's."""
    at(LATE_UTC, "UTC")

    def verdict(*args: str) -> str:
        assert cli.main(["parse", "--json", *args]) == 0
        return json.loads(capsys.readouterr().out)["verdict"]

    assert verdict(VALID_FROM_TODAY) == "ok"
    assert verdict(EXPIRED_YESTERDAY) == "expired"
    # 18:30 UTC is still the 5th in Los Angeles: a station configured there has not reached the 6th
    conf = tmp_path / "c.toml"
    conf.write_text(f'[station]\nstate_dir = "{tmp_path}"\ntimezone = "America/Los_Angeles"\n')
    assert verdict("-c", str(conf), VALID_FROM_TODAY) == "not_yet_valid"
    assert verdict("-c", str(conf), EXPIRED_YESTERDAY) == "ok"
    assert verdict("--today", "2026-12-06", "-c", str(conf), VALID_FROM_TODAY) == "ok"   # --today wins


def test_doctor_says_when_the_system_zone_is_not_the_stations(tmp_path):
    """A warning (the station counts its days right either way): the system zone, the configured
    one, and the command that aligns them."""
    conf = tmp_path / "c.toml"
    (tmp_path / "state").mkdir(mode=0o700)
    conf.write_text(f'[station]\nstate_dir = "{tmp_path / "state"}"\n[feedback]\nbackend = "none"\n')

    def line(zone: str) -> str:
        out = cli_process("doctor", "-c", str(conf), env={"TZ": zone})
        found = [x for x in out.stdout.splitlines() if x[4:].split()[:1] == ["timezone"]]
        assert len(found) == 1, out.stdout + out.stderr
        return found[0]

    utc = line("UTC")
    assert utc.startswith("warn timezone") and "system zone UTC" in utc and "Asia/Ho_Chi_Minh" in utc
    assert "timedatectl set-timezone Asia/Ho_Chi_Minh" in utc
    assert line("Asia/Ho_Chi_Minh").startswith("ok   timezone")
    with system_zone("Asia/Bangkok"):                                # another name, the same clock
        assert doctor.check_timezone(Config()).line().startswith("ok   timezone")
    with system_zone("Europe/London"):                               # UTC in winter, not in summer
        assert clock.system_zone_differs(clock.zone("UTC"), at=instant("2026-01-10T12:00+00:00"))
    with system_zone("UTC"):
        assert not clock.system_zone_differs(clock.zone("Etc/UTC"))
