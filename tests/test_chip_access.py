"""A CCCD chip's access keys from its QR (agent.chip.access): the law's expiry for every kind of
birth date, the order the station tries them in, `parse --json`'s `chip_access`, and [chip] config.

The expected dates below are worked out by hand from Luật Căn cước 2023 art. 21 (milestones 14,
25, 40, 60; a card issued within 2 years before one runs to the next; issued from 58: no expiry),
not by the code under test. Two rows are the public samples the module's docstring cites."""

import json
from datetime import date

import pytest

from agent.chip import access
from agent.chip.access import NO_EXPIRY, ChipAccess, chip_access
from agent.config import ConfigError, parse_config
from support.daemon import cli

ID = "079090001234"
LAST = (NO_EXPIRY,)      # every list ends with the no-expiry date, tried last


def expiries(birth: str, issued: date | None, today: date | None = None) -> list[str]:
    return [e for e, _ in chip_access({"id_number": ID, "birth_date": birth}, issued, today=today).expiry_candidates]


# (case, birth date, issue date, the expiry candidates in order)
ISSUED = [
    ("under 14: to 14", "2015-05-10", date(2024, 8, 1), ["290510", *LAST]),
    ("aged 11: not within 2 years of 14", "2013-03-15", date(2024, 9, 1), ["270315", *LAST]),
    ("aged 12: within 2 years before 14 -> 25", "2012-03-15", date(2024, 9, 1), ["370315", *LAST]),
    ("aged 13: within 2 years before 14 -> 25", "2011-03-15", date(2024, 9, 1), ["360315", *LAST]),
    ("aged 14 on the birthday: to 25", "2010-09-01", date(2024, 9, 1), ["350901", *LAST]),
    ("aged 21: to 25 (cccd_vietnam's sample)", "2000-04-27", date(2021, 5, 1), ["250427", *LAST]),
    ("aged 22, the day before 23: to 25", "1999-06-10", date(2022, 6, 9), ["240610", *LAST]),
    # on the birthday 2 years before 25: "within" (-> 40) first, the strict reading (-> 25) next
    ("aged 23 that very day: 40, then 25", "1999-06-10", date(2022, 6, 10), ["390610", "240610", *LAST]),
    ("aged 24: within 2 years before 25 -> 40", "1997-11-30", date(2022, 1, 15), ["371130", *LAST]),
    ("aged 28: to 40 (the ekyc sample's MRZ)", "1993-01-05", date(2021, 7, 24), ["330105", *LAST]),
    ("aged 37: to 40", "1984-02-01", date(2021, 3, 1), ["240201", *LAST]),
    ("aged 38: within 2 years before 40 -> 60", "1983-02-01", date(2021, 3, 1), ["430201", *LAST]),
    ("aged 45: to 60", "1976-08-20", date(2021, 9, 1), ["360820", *LAST]),
    ("aged 57: to 60", "1964-03-01", date(2021, 4, 1), ["240301", *LAST]),
    ("aged 58: within 2 years before 60 -> no expiry", "1963-03-01", date(2021, 4, 1), [*LAST]),
    ("aged 71: from 60, no expiry", "1950-01-01", date(2021, 4, 1), [*LAST]),
    # 29 February: the milestone birthday in a year without one -> 28/02 first, 01/03 second
    ("29/02, 25th in 2025", "2000-02-29", date(2021, 3, 1), ["250228", "250301", *LAST]),
    ("29/02, 40th in leap 2024", "1984-02-29", date(2021, 6, 1), ["240229", *LAST]),
    ("29/02, 14 -> 25 in 2037", "2012-02-29", date(2024, 8, 1), ["370228", "370301", *LAST]),
    # issued 28/02/2023: aged 23 if the birthday is 28/02 (-> 40 in leap 2040; on that very day, the
    # strict reading -> 25), aged 22 if it is 01/03 (-> 25)
    ("29/02, issued on 28/02 of the 23rd year", "2000-02-29", date(2023, 2, 28),
     ["400229", "250228", "250301", *LAST]),
]


@pytest.mark.parametrize("case,birth,issued,want", ISSUED, ids=[c[0] for c in ISSUED])
def test_expiry_from_the_issue_date(case, birth, issued, want):
    assert expiries(birth, issued) == want


# The 6-field layout has no issue date: every milestone a chip card (issued from 23/01/2021, under
# 14 from 1 July 2024) could run to; valid today first, soonest first; then expired, latest first.
NO_ISSUE = [
    ("aged 33 in 2026: 23-37 -> 40 only (14-22 was before chip cards)", "1993-01-05", date(2026, 3, 1),
     ["330105", *LAST]),
    ("the same in 2034: the 60 card, then the expired 40 one", "1993-01-05", date(2034, 1, 1),
     ["530105", "330105", *LAST]),
    ("the same with no today: 40, 60, no expiry", "1993-01-05", None, ["330105", "530105", *LAST]),
    ("aged 14: only a card from 12-13 (2024-07+) or 14+ -> 25", "2011-06-01", date(2026, 3, 1),
     ["360601", *LAST]),
    ("aged 8: -> 14", "2018-01-01", date(2026, 3, 1), ["320101", *LAST]),
    ("aged 13 early in 2024: no chip card can exist yet", "2011-01-01", date(2024, 1, 1), [*LAST]),
    ("aged 66 (29/02): only no expiry; a 60 card was issued before 2021", "1960-02-29", date(2026, 3, 1),
     [*LAST]),
    ("aged 59: the 60 card valid, then no expiry (issued at 58)", "1967-05-05", date(2026, 6, 1),
     ["270505", *LAST]),
    ("aged 14 (29/02): 25 on 28/02 then 01/03", "2012-02-29", date(2026, 3, 1), ["370228", "370301", *LAST]),
]


@pytest.mark.parametrize("case,birth,today,want", NO_ISSUE, ids=[c[0] for c in NO_ISSUE])
def test_expiry_without_an_issue_date(case, birth, today, want):
    assert expiries(birth, None, today) == want


def test_each_candidate_says_its_rule():
    cands = chip_access({"id_number": ID, "birth_date": "1999-06-10"}, date(2022, 6, 10)).expiry_candidates
    assert "within 2 years before 25 (art. 21(2)): to the birthday at 40" in cands[0][1]
    assert "issued at 22 (art. 21(1)): to the birthday at 25" in cands[1][1]
    assert "reported to carry it" in cands[-1][1]
    feb = chip_access({"id_number": ID, "birth_date": "2000-02-29"}, date(2021, 3, 1)).expiry_candidates
    assert feb[0][1].endswith("taken as 28/02") and feb[1][1].endswith("taken as 01/03")


@pytest.mark.parametrize("birth", ["1990", "1990-05"])
def test_a_partial_birth_date_leaves_pace_with_the_can_only(birth):
    a = chip_access({"id_number": ID, "birth_date": birth}, date(2021, 6, 15), today=date(2026, 3, 1))
    assert a.birth_yymmdd is None and a.expiry_candidates == []
    assert a.attempts() == [("pace-can", "001234")]
    assert "PACE with the CAN only" in a.to_dict()["note"]


def test_the_order_of_attempts_and_the_keys():
    a = chip_access({"id_number": "001093047064", "birth_date": "1993-01-05"}, date(2021, 7, 24))
    assert (a.document_number, a.can, a.id_number, a.birth_yymmdd) == \
        ("093047064", "047064", "001093047064", "930105")
    assert a.attempts() == [("pace-can", "047064"),
                            ("bac", ("093047064", "930105", "330105"), a.expiry_candidates[0][1]),
                            ("bac", ("093047064", "930105", NO_EXPIRY), a.expiry_candidates[1][1])]
    assert isinstance(a, ChipAccess)


@pytest.mark.parametrize("card", [{"id_number": None, "birth_date": "1990-01-01"},
                                  {"id_number": "07909000123", "birth_date": "1990-01-01"},
                                  {"id_number": "０７９０９０００１２３４", "birth_date": "1990-01-01"},
                                  {"id_number": "079090001234\n", "birth_date": "1990-01-01"},
                                  {"id_number": 79090001234, "birth_date": "1990-01-01"}, {}])
def test_no_12_digit_id_is_a_reason_not_a_traceback(card):
    with pytest.raises(ValueError, match="no 12-digit citizen ID"):
        chip_access(card, None)


@pytest.mark.parametrize("birth", ["1990-02-30", "90-01-01", None, 19900101, "1990-01-01\n", "x" * 10_000])
def test_a_birth_date_that_is_not_a_date_gives_no_bac(birth):
    assert chip_access({"id_number": ID, "birth_date": birth}, None).attempts() == [("pace-can", "001234")]


def test_an_issue_date_before_birth_counts_as_missing():
    assert expiries("1993-01-05", date(1990, 1, 1), date(2026, 3, 1)) == \
        expiries("1993-01-05", None, date(2026, 3, 1))


@pytest.mark.parametrize("mutation", [
    ("MILESTONES", (14, 25, 45, 60)),     # a milestone moved
    ("MILESTONES", (25, 40, 60)),         # the 2023 law's 14 forgotten
    ("MILESTONES", (14, 25, 40)),         # 60 forgotten
    ("GRACE_YEARS", 1),                   # "within 2 years" read as 1
    ("GRACE_YEARS", 0),                   # no grace at all
    ("FEB29", ("01/03", "28/02")),        # the 29 February readings swapped
    ("CHIP_CARDS_FROM", date(2016, 1, 1)),   # cards before the chip counted
    ("UNDER_14_FROM", date(2021, 1, 23)),    # children's cards before the 2023 law
    ("ADULT_CARD_AGE", 12),               # cards from 12 under the 2014 law
])
def test_the_tables_catch_a_broken_rule(monkeypatch, mutation):
    """The tables above are what guards the rule: each of these breakages changes some row."""
    monkeypatch.setattr(access, *mutation)
    wrong = [c for c, birth, issued, want in ISSUED if expiries(birth, issued) != want]
    wrong += [c for c, birth, today, want in NO_ISSUE if expiries(birth, None, today) != want]
    assert wrong, f"{mutation} passes every row"


CCCD = "079090001234|025123456|Nguyễn Văn An|01011990|Nam|12 Lê Lợi, Bến Nghé, Quận 1, TP Hồ Chí Minh|15062021"


def parse_json(*args):
    proc = cli("parse", "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_parse_json_shows_the_chip_access_in_order():
    out = parse_json("--today", "2026-03-01", CCCD)["chip_access"]
    assert out == {
        "id_number": "079090001234", "document_number": "090001234", "birth_yymmdd": "900101", "can": "001234",
        "attempts": [
            {"method": "pace-can", "can": "001234"},
            {"method": "bac", "document_number": "090001234", "birth_yymmdd": "900101", "expiry_yymmdd": "300101",
             "rule": "issued at 31 (art. 21(1)): to the birthday at 40"},
            {"method": "bac", "document_number": "090001234", "birth_yymmdd": "900101", "expiry_yymmdd": NO_EXPIRY,
             "rule": out["attempts"][2]["rule"]}]}
    six = parse_json("--today", "2026-03-01", CCCD.rsplit("|", 1)[0])["chip_access"]   # no issue date
    assert [a.get("expiry_yymmdd") for a in six["attempts"]] == [None, "300101", NO_EXPIRY]
    assert "no issue date in the QR" in six["attempts"][1]["rule"]


def test_parse_shows_why_a_cccd_has_no_chip_access_and_a_bhyt_none():
    from support.payloads import BHYT10

    bad = parse_json(CCCD.replace("079090001234", "0790900012345"))
    assert bad["kind"] == "cccd" and bad["chip_access"] == \
        {"error": "the QR has no 12-digit citizen ID: no CAN nor MRZ document number"}
    assert "chip_access" not in parse_json(BHYT10)
    human = cli("parse", "--today", "2026-03-01", CCCD.replace("01011990", "1990"))
    assert human.returncode == 0 and "PACE, CAN 001234" in human.stdout and "    BAC " not in human.stdout


def chip_errors(text):
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "c.toml", station=False)
    return exc.value.errors


def test_chip_config_defaults_and_values():
    cfg = parse_config("", station=False).chip
    assert (cfg.reader, cfg.timeout_s, cfg.csca_dir, cfg.read_face, cfg.dg13_fields) == \
        ("none", 5.0, "", False, ("id_number", "name", "birth_date"))
    cfg = parse_config('[chip]\nreader = "pn532"\ndevice = "i2c:1"\ntimeout_s = 3\nread_face = true\n'
                       'dg13_fields = ["id_number", "residence"]\n', station=False).chip
    assert (cfg.reader, cfg.device, cfg.timeout_s, cfg.read_face, cfg.dg13_fields) == \
        ("pn532", "i2c:1", 3.0, True, ("id_number", "residence"))


@pytest.mark.parametrize("text,needle", [
    ('[chip]\nreader = "nfc"\n', "2: chip.reader must be one of pcsc, pn532, none, got 'nfc'"),
    ('[chip]\ntimeout = 3\n', "2: unknown key chip.timeout (known: reader, device, timeout_s, csca_dir, read_face, dg13_fields)"),
    ('[chip]\ntimeout_s = 0\n', "2: chip.timeout_s must be >= 0.5"),
    ('[chip]\nread_face = "yes"\n', "2: chip.read_face must be true or false"),
    ('[chip]\n\ndg13_fields = ["name", "nmae"]\n', "3: chip.dg13_fields: 'nmae' is not a DG13 field (known: id_number"),
    ('[chip]\ndg13_fields = ["name", "name"]\n', "2: chip.dg13_fields: 'name' is listed twice"),
    ('[chip]\ndg13_fields = "name"\n', "2: chip.dg13_fields must be a list of texts"),
    ('[chip]\ncsca_dir = "/no/such/folder"\n', "2: chip.csca_dir '/no/such/folder' is not a folder"),
])
def test_chip_config_mistakes_are_named_with_line(text, needle):
    errs = chip_errors(text)
    assert len(errs) == 1 and errs[0].startswith(needle), errs


def test_a_csca_folder_that_exists_is_accepted(tmp_path):
    assert parse_config(f'[chip]\ncsca_dir = "{tmp_path}"\n', station=False).chip.csca_dir == str(tmp_path)
