"""Payload variants that hospital systems accept in the field (issue: "Read what hospital systems
read"): each read with its own warning code, the verdict unchanged; what stays ambiguous stays
invalid; and keyboard output that survives Vietnamese input methods."""

from __future__ import annotations

import string
from datetime import date

import pytest

from agent.cards import read_card
from agent.mqtt.schemas import errors as schema_errors
from agent.checkin import checkin_body
from support.payloads import BHYT10, BHYT15, CCCD, VIETQR

TODAY = date(2026, 11, 25)
F = CCCD.split("|")          # id, old id, name, birth ddmmyyyy, sex, address, issued
B = BHYT15.split("|")


def read(text: str):
    r = read_card(text, TODAY)
    return r, [p.code for p in r.problems]


@pytest.mark.parametrize("text, warning, field, value", [
    ("|".join(F[:3] + ["1950"] + F[4:]), "partial_birth_date", "birth_date", "1950"),
    ("|".join(F[:3] + ["031950"] + F[4:]), "partial_birth_date", "birth_date", "1950-03"),
    ("|".join(F[:1] + ["079090001234"] + F[2:]), "unusual_old_id_number", "old_id_number", "079090001234"),
    ("|".join(F[:1] + ["12345"] + F[2:]), "unusual_old_id_number", "old_id_number", "12345"),
    # more digits than any ID number has: not kept (the check-in schema allows 12; a consumer that
    # validates would dead-letter the patient's check-in), the card still read
    ("|".join(F[:1] + ["1" * 5000] + F[2:]), "unusual_old_id_number", "old_id_number", None),
    ("|".join(F[:1] + F[2:]), "no_old_id_field", "old_id_number", None),
    ("|".join([F[0], F[2], "01/01/1990", F[4], F[5], "15/06/2021"]), "no_old_id_field", "issued", "2021-06-15"),
    ("|".join(F[:3] + ["01/01/1990"] + F[4:6] + ["15/06/2021"]), "slashed_dates", "birth_date", "1990-01-01"),
    ("|".join(F[:6]), "no_issue_date", "issued", None),
])
def test_cccd_variants_read_with_their_warning(text, warning, field, value):
    r, codes = read(text)
    assert (r.kind, r.verdict) == ("cccd", "ok"), (r.verdict, codes)
    assert warning in codes and r.card[field] == value and r.card["name"] == "Nguyễn Văn An"
    assert codes.count(warning) == 1
    event = {"schema": "1.0", "id": "018f0000-0000-7000-8000-000000000000", "seq": 1, "station": "s",
             **checkin_body(r, synced=True)}
    assert schema_errors("checkin", event) == []


def test_bhyt_lower_case_card_number_is_upper_cased():
    r, codes = read("|".join([B[0].lower()] + B[1:]))
    assert (r.kind, r.verdict) == ("bhyt", "ok") and "lowercase_card_number" in codes
    assert r.card["card_number"] == B[0] and r.card["group_code"] == B[0][:2]


def test_bhyt_name_and_address_as_plain_text():
    r, codes = read("|".join([B[0], "Nguyễn Văn An"] + B[2:4] + ["12 Lê Lợi, Quận 1"] + B[5:]))
    assert (r.kind, r.verdict) == ("bhyt", "ok") and codes.count("plain_text_fields") == 1
    assert r.card["name"] == "Nguyễn Văn An" and r.card["address"] == "12 Lê Lợi, Quận 1"


@pytest.mark.parametrize("text, code", [
    ("|".join([B[0], "4e67757"] + B[2:]), "bad_name"),                     # broken hex stays an error
    ("|".join(["dn9" + B[0][3:]] + B[1:]), "bad_card_number"),              # benefit level 9
    ("|".join(F[:3] + ["19"] + F[4:]), "field_count"),                     # no date where one belongs
    ("|".join(F[:3] + ["32011990"] + F[4:]), "bad_birth_date"),
    ("|".join(F[:3] + ["131950"] + F[4:]), "bad_birth_date"),              # month 13
    ("|".join(F[:5]), "field_count"),
    ("|".join(F[:6] + ["0621"]), "bad_issued"),                             # an issue date is a whole date
])
def test_what_stays_ambiguous_stays_invalid(text, code):
    r, codes = read(text)
    assert r.verdict == "invalid" and code in codes and r.kind in ("bhyt", "cccd"), (r.kind, codes)


def test_the_classifier_stays_honest():
    # every CCCD variant is a CCCD, never "other"; cards are never links or bank codes
    for text in ("|".join(F[:1] + F[2:]), "|".join(F[:6]), "|".join(F[:3] + ["1950"] + F[4:])):
        assert read_card(text, TODAY).kind == "cccd"
    for text in (BHYT15, BHYT10, "|".join([B[0].lower()] + B[1:])):
        assert read_card(text, TODAY).kind == "bhyt"
    assert read_card(VIETQR, TODAY).card == {"type": "emvco"}
    assert read_card("https://vssid.vn/|079090001234|x|01011990|Nam|y|15062021", TODAY).kind == "other"
    assert read_card("7901234567|Nam|01/01/1990|1|x|79-001", TODAY).kind != "cccd"


def test_keypad_emulation_reports_decode_back_to_the_text():
    from agent.outputs import hid

    text = string.printable.replace("\r", "").replace("\x0b", "").replace("\x0c", "")
    reports = hid.encode_alt_numpad(text)
    assert hid.decode(reports) == text
    a = hid.encode_alt_numpad("a")   # Alt down, keypad 0 9 7 (each pressed and released), Alt up
    assert [r[0] for r in a] == [hid.LEFT_ALT] * 7 + [0]
    assert [r[2] for r in a if r[2]] == [hid.KEYPAD["0"], hid.KEYPAD["9"], hid.KEYPAD["7"]]
    assert hid.decode(hid.encode_alt_numpad(BHYT15 + "\n")) == BHYT15 + "\n"
