"""Counter facts in the check-in (`flags`, schema 1.1): priority by age and BHYT group (Law
15/2023/QH15 art. 3(2)), another registered facility, a second check-in today; at the edges
(the birthday itself, 29 February, midnight in Asia/Ho_Chi_Minh, a restart)."""

from __future__ import annotations

import json
import time
from datetime import date, datetime
from zoneinfo import ZoneInfo

import jsonschema
import pytest

from agent import cli
from agent.cards import read_card
from agent.cards.flags import FLAGS, age_range, card_flags, facility_code
from agent.checkin import Action, Decision
from agent.config import Config, ConfigError, parse_config
from agent.feedback import Feedback, NoOutput, Signal
from agent.outputs.template import render
from agent.station import Station
from support.payloads import BHYT10, BHYT15, CCCD, with_field
from support.systemzone import system_zone

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
TODAY = date(2026, 11, 29)


def bhyt(born: str = "01/01/1990", group: str = "DN4", facility: str = "79 - 001") -> str:
    card = with_field(BHYT15, 0, f"{group}790123456789")
    return with_field(with_field(card, 2, born), 5, facility)


def cccd(born: str) -> str:
    return with_field(CCCD, 3, born)


def flags(payload: str, today: date = TODAY, **kw) -> list[str]:
    read = read_card(payload, today)
    assert read.verdict in ("ok", "expired", "not_yet_valid"), read.problems
    return card_flags(read, today, **kw)


# --- ages at the edges --------------------------------------------------------------------

def test_born_exactly_75_years_ago_today_is_elderly_a_day_later_not():
    assert flags(bhyt("29/11/1951")) == ["priority_elderly"]
    assert flags(bhyt("30/11/1951")) == []
    assert flags(cccd("29111951")) == ["priority_elderly"]


def test_born_exactly_6_years_ago_today_is_no_longer_a_child_a_day_later_is():
    assert flags(bhyt("29/11/2020")) == []
    assert flags(bhyt("30/11/2020")) == ["priority_child"]
    assert flags(cccd("30112020")) == ["priority_child"]


def test_29_february_birthdays_come_on_1_march():
    child = bhyt("29/02/2020")
    assert flags(child, date(2026, 2, 28)) == ["priority_child"]
    assert flags(child, date(2026, 3, 1)) == []
    elder = bhyt("29/02/1952")
    assert flags(elder, date(2027, 2, 28)) == []
    assert flags(elder, date(2027, 3, 1)) == ["priority_elderly"]
    assert flags(elder, date(2028, 2, 29)) == ["priority_elderly"]


def test_a_partial_birth_date_gives_priority_only_when_every_day_of_it_does():
    assert age_range("1951", TODAY) == (74, 75)
    assert flags(bhyt("1951")) == []                     # might still be 74
    assert flags(bhyt("1950")) == ["priority_elderly"]
    assert flags(bhyt("12/1951")) == []
    assert flags(bhyt("11/1951")) == []                  # 30 November 1951: 74 today
    assert flags(bhyt("10/1951")) == ["priority_elderly"]
    assert flags(bhyt("2021")) == ["priority_child"]      # at most 5
    assert flags(bhyt("2020")) == []                     # 5 or 6
    assert age_range(None, TODAY) is None and age_range("x", TODAY) is None


# --- groups ---------------------------------------------------------------------------------

def test_group_codes_of_the_law_give_priority():
    assert flags(bhyt(group="CC1")) == ["priority_merit"]
    assert flags(bhyt(group="CK2")) == ["priority_merit"]
    assert flags(bhyt(group="TE1", born="30/11/2020")) == ["priority_child"]
    assert flags(bhyt(group="DN4")) == []
    assert flags(bhyt(group="CC1", born="01/01/1940")) == ["priority_elderly", "priority_merit"]


def test_a_te_card_of_a_child_who_turned_6_today_gives_no_child_priority():
    """Issue 32 #11: a TE card stays valid until 30 September after the sixth birthday, the law's
    priority is for children under 6: a known birth date decides, the group only when the date
    cannot (a `YYYY` that allows both 5 and 6)."""
    assert flags(bhyt(group="TE1", born="29/11/2020")) == []                  # 6 today
    assert flags(bhyt(group="TE1", born="30/11/2020")) == ["priority_child"]  # 6 tomorrow
    assert flags(bhyt(group="TE1", born="01/01/2015")) == []                  # a TE card at 11: the age says
    assert flags(bhyt(group="TE1", born="2020")) == ["priority_child"]        # 5 or 6: the group decides
    assert flags(bhyt(group="DN4", born="2020")) == []
    assert flags(bhyt(group="TE1", born="2019")) == []                        # 6 or 7 whatever the day
    assert flags(bhyt(group="TE1", born="12/2020")) == ["priority_child"]     # 5 all of December 2020
    assert flags(bhyt(group="TE1", born="11/2020")) == ["priority_child"]     # 5 or 6: the group decides
    assert flags(bhyt(group="TE1", born="10/2020")) == []                     # 6 every day of it


def test_the_station_counts_a_te_childs_age_on_its_own_day(tmp_path, monkeypatch):
    """A minute before midnight in Vietnam the child is 5: priority_child. At 01:30 on the sixth
    birthday, on a Pi left in UTC (still the day before there): no priority_child, a plain green."""
    clock = Clock(monkeypatch)
    child = bhyt("06/12/2020", group="TE1")
    with system_zone("UTC"):
        st = station(tmp_path)
        try:
            clock.at("2026-12-05T23:59:00")
            assert check_in(st, child)["flags"] == ["priority_child"]
            assert st.feedback.history[-1][1] == Signal.CHECKIN_PRIORITY
            clock.at("2026-12-06T01:30:00")
            assert check_in(st, child)["flags"] == []                 # 6, and a new day: no repeat_today
            assert st.feedback.history[-1][1] == Signal.CHECKIN
        finally:
            st.shutdown()


def test_configured_groups_replace_the_default():
    assert flags(bhyt(group="CC1"), priority_groups=["TE"]) == []
    assert flags(bhyt(group="HT3"), priority_groups=["HT"]) == ["priority_merit"]
    assert flags(BHYT10) == []     # a 10-digit card carries no group code


# --- another facility -----------------------------------------------------------------------

@pytest.mark.parametrize("ours", [["79-001"], ["79001"], ["79 - 001"], ["01-002", "79001"]])
def test_own_facility_in_either_form_is_not_other(ours):
    assert flags(bhyt(facility="79 - 001"), facility_codes=ours) == []
    assert flags(bhyt(facility="79001"), facility_codes=ours) == []


@pytest.mark.parametrize("ours", [["79-024"], ["79024"]])
def test_another_facility_in_either_form(ours):
    assert flags(bhyt(facility="79 - 001"), facility_codes=ours) == ["other_facility"]
    assert flags(BHYT10, facility_codes=ours) == ["other_facility"]    # 79 - 034


def test_no_facility_codes_never_other_facility_and_cccd_never():
    assert flags(bhyt(facility="01 - 002"), facility_codes=[]) == []
    assert flags(CCCD, facility_codes=["79-024"]) == []


def test_facility_code_forms():
    assert facility_code("79-024") == facility_code("79024") == facility_code("79 \u2013 024") == "79024"
    assert facility_code("7902") is None and facility_code("79-0245") is None


def test_invalid_reads_and_other_codes_have_no_flags():
    bad = read_card(with_field(bhyt("29/11/1951"), 3, "9"), TODAY)
    assert bad.verdict == "invalid" and card_flags(bad, TODAY) == []
    assert card_flags(read_card("https://example.com", TODAY), TODAY) == []


# --- config, parse, template ----------------------------------------------------------------

def test_config_takes_both_code_forms_and_refuses_others(tmp_path):
    cfg = parse_config(f'[station]\nstate_dir = "{tmp_path}"\nfacility_codes = ["79-024", "79024"]\n'
                       '[checkin]\npriority_groups = ["CC", "TE"]\n')
    assert cfg.station.facility_codes == ("79-024", "79024") and cfg.checkin.priority_groups == ("CC", "TE")
    assert Config().checkin.priority_groups == ("CC", "CK", "TE") and Config().station.facility_codes == ()
    with pytest.raises(ConfigError, match="facility_codes: '79-24' is not a facility code"):
        parse_config(f'[station]\nstate_dir = "{tmp_path}"\nfacility_codes = ["79-24"]\n')
    with pytest.raises(ConfigError, match="must be a list of texts"):
        parse_config(f'[station]\nstate_dir = "{tmp_path}"\nfacility_codes = "79024"\n')
    with pytest.raises(ConfigError, match="not a BHYT group code"):
        parse_config(f'[station]\nstate_dir = "{tmp_path}"\n[checkin]\npriority_groups = ["C"]\n')


def test_parse_json_shows_flags_with_config_and_today(tmp_path, capsys):
    conf = tmp_path / "c.toml"
    conf.write_text(f'[station]\nstate_dir = "{tmp_path}"\nfacility_codes = ["79-024"]\n')
    card = bhyt("29/11/1951", group="CC1")
    assert cli.main(["parse", "--json", "--today", "2026-11-29", "--config", str(conf), card]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["flags"] == ["priority_elderly", "priority_merit", "other_facility"]
    assert cli.main(["parse", "--json", "--today", "2026-11-28", card]) == 0
    assert json.loads(capsys.readouterr().out)["flags"] == ["priority_merit"]   # 74; no facility codes



def test_parse_with_the_stations_config_needs_no_state_dir(tmp_path, capsys):
    """`parse -c /etc/scanner-agent/config.toml` reads only facility codes and priority groups:
    run by a user who cannot make the station's state directory (the default is
    /var/lib/scanner-agent since issue 22), it still shows the flags instead of a config error."""
    conf = tmp_path / "c.toml"
    conf.write_text('[station]\nstate_dir = "/proc/no-state-here"\nfacility_codes = ["79-024"]\n')
    card = bhyt("29/11/1951", group="CC1")
    assert cli.main(["parse", "--json", "--today", "2026-11-29", "--config", str(conf), card]) == 0
    assert json.loads(capsys.readouterr().out)["flags"] == ["priority_elderly", "priority_merit", "other_facility"]

def test_keyboard_template_types_flags(tmp_path):
    cfg = parse_config(f'[station]\nstate_dir = "{tmp_path}"\n[output.keyboard]\nenabled = true\n'
                       'template_bhyt = "{raw}{tab}{flags}{enter}"\n')
    assert cfg.keyboard.template_bhyt.endswith("{flags}{enter}")
    assert render("{card_number}{tab}{flags}{enter}", {"card_number": "CC1", "flags": "priority_merit"}, "") \
        == "CC1\tpriority_merit\n"


# --- the station: stored flags, cues, repeat_today ------------------------------------------

class Clock:
    """time.time() at a chosen moment in Asia/Ho_Chi_Minh."""

    def __init__(self, monkeypatch):
        self.t = time.time()
        monkeypatch.setattr(time, "time", lambda: self.t)

    def at(self, text: str) -> None:
        self.t = datetime.fromisoformat(text).replace(tzinfo=HCM).timestamp()


def station(tmp_path, **station_cfg) -> Station:
    cfg = Config()
    cfg.station.state_dir = str(tmp_path / "state")
    cfg.feedback.backend = "none"
    for k, v in station_cfg.items():
        setattr(cfg.station, k, v)
    return Station(cfg, feedback=Feedback(NoOutput()))


def check_in(st: Station, payload: str) -> dict:
    read = read_card(payload)
    st._act(Decision(Action.CHECKIN, read, "k", payload))
    return st.outbox.recent(1)[0].payload


def test_repeat_today_across_a_restart_and_across_midnight(tmp_path, monkeypatch):
    clock = Clock(monkeypatch)
    card = bhyt("01/01/1990")
    st = station(tmp_path)
    try:
        clock.at("2026-11-28T23:59:30")
        assert check_in(st, card)["flags"] == []
        clock.at("2026-11-28T23:59:50")
        assert check_in(st, card)["flags"] == ["repeat_today"]
        assert check_in(st, CCCD)["flags"] == []                   # another card
    finally:
        st.shutdown()
    st = station(tmp_path)                                         # a restart
    try:
        clock.at("2026-11-29T00:00:10")                              # midnight in Ho Chi Minh City
        assert check_in(st, card)["flags"] == []
        clock.at("2026-11-29T08:30:00")
        assert check_in(st, card)["flags"] == ["repeat_today"]
    finally:
        st.shutdown()
    st = station(tmp_path)                                         # and again after another restart
    try:
        clock.at("2026-11-29T16:00:00")
        event = check_in(st, card)
        assert event["flags"] == ["repeat_today"] and event["schema"] == "1.2"
    finally:
        st.shutdown()


def test_stored_flags_validate_and_each_gets_its_cue(tmp_path):
    schema = json.loads((cli.Path(__file__).resolve().parents[1] / "agent/schemas/checkin.json").read_text())
    assert schema["properties"]["flags"]["items"]["enum"] == list(FLAGS)
    st = station(tmp_path, facility_codes=("79-024",))
    try:
        cues = []
        for payload, want in [(bhyt("01/01/1940", facility="79 - 024"), Signal.CHECKIN_PRIORITY),
                              (bhyt("01/01/1980", "HT3", facility="79 - 001"), Signal.CHECKIN_OTHER_FACILITY),
                              (bhyt("01/01/1981", "HS4", facility="79024"), Signal.CHECKIN)]:
            event = check_in(st, payload)
            jsonschema.validate(event, schema)
            cues.append((st.feedback.history[-1][1], want))
        assert all(got == want for got, want in cues), cues
        assert st.counters.by_flag == {"priority_elderly": 1, "other_facility": 1}
    finally:
        st.shutdown()
