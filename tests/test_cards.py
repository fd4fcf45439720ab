"""Card reading: every quirk of the reference, with synthetic payloads."""

from datetime import date

import pytest

from agent.cards import mask_name, read_card
from support.payloads import BHYT10, BHYT15, CCCD, VIETQR, hexs, with_field

TODAY = date(2026, 11, 24)


def codes(read):
    return [p.code for p in read.problems]


def test_bhyt15_reference_sample():
    r = read_card(BHYT15, TODAY)
    assert (r.kind, r.verdict, r.problems) == ("bhyt", "ok", [])
    c = r.card
    assert c["card_number"] == "DN4790123456789"
    assert c["generation"] == "15"
    assert c["group_code"] == "DN" and c["benefit_level"] == 4
    assert c["bhxh_number"] == "0123456789"
    assert c["name"] == "Nguyễn Văn An"
    assert c["birth_date"] == "1990-01-01"
    assert c["sex"] == "male"
    assert c["address"] == "Số 12 Lê Lợi, Phường Bến Nghé, Quận 1, Thành phố Hồ Chí Minh"
    assert c["facility_code"] == "79001"
    assert (c["valid_from"], c["valid_to"], c["issued"]) == ("2024-01-01", None, "2024-01-01")
    assert c["management_code"] == "79000123456789"
    assert c["check_string"] == "0123456789abcdef-7102"
    assert c["guardian"] is None and c["terminator"] == "$"


def test_bhyt10_reference_sample():
    r = read_card(BHYT10, TODAY)
    assert (r.kind, r.verdict) == ("bhyt", "ok")
    c = r.card
    assert c["generation"] == "10" and c["card_number"] == "7901234567"
    assert c["bhxh_number"] == "7901234567"
    assert c["name"] == "Trần Thị Bích" and c["sex"] == "female"
    assert c["address"] is None  # '-' on 10-digit cards
    assert c["benefit_level"] == 4 and c["group_code"] is None
    assert c["issuing_office"] == "Quận 12, Thành phố Hồ Chí Minh"
    assert c["facility_code"] == "79034"
    # the full card number is not in the QR: the hospital must look it up
    assert "lookup_required" in codes(r)
    assert all(not p.fatal for p in r.problems)


def test_cccd_reference_sample():
    r = read_card(CCCD, TODAY)
    assert (r.kind, r.verdict, r.problems) == ("cccd", "ok", [])
    assert r.card == {
        "id_number": "079090001234", "old_id_number": "025123456", "name": "Nguyễn Văn An",
        "birth_date": "1990-01-01", "sex": "male",
        "address": "12 Lê Lợi, Bến Nghé, Quận 1, TP Hồ Chí Minh", "issued": "2021-06-15", "extra": [],
    }


def test_bytes_input_is_read_like_text():
    assert read_card(CCCD.encode(), TODAY).to_dict() == read_card(CCCD, TODAY).to_dict()


# --- BHYT quirks -------------------------------------------------------------------------

@pytest.mark.parametrize("variant", [
    "  " + BHYT15 + " \n",                                  # whitespace around the string
    BHYT15.replace("|01/01/1990|", "| 01/01/1990 |"),        # whitespace in fields
    "\ufeff" + BHYT15,                                       # BOM
    BHYT15.replace("|79 - 001|", "|79\u200e - 001|"),       # stray LRM inside a field
    BHYT15.upper().replace("|$", "|$"),                      # upper-case hex (and card number)
    BHYT15.lower().replace("dn4790123456789", "DN4790123456789"),  # lower-case hex
])
def test_bhyt_whitespace_invisible_marks_and_hex_case(variant):
    r = read_card(variant, TODAY)
    assert r.verdict == "ok", r.problems
    assert r.card["name"] == "Nguyễn Văn An"
    assert r.card["facility_code"] == "79001"
    assert r.card["birth_date"] == "1990-01-01"


@pytest.mark.parametrize("ending,terminator", [("|$", "$"), ("|#", "#"), ("|", None), ("", None)])
def test_bhyt_terminators(ending, terminator):
    body = BHYT15[: -len("|$")]
    r = read_card(body + ending, TODAY)
    assert r.verdict == "ok"
    assert r.card["terminator"] == terminator
    assert r.card["check_string"] == "0123456789abcdef-7102"


@pytest.mark.parametrize("facility", ["79 - 001", "79-001", "79 -001", "79001", "79 \u2013 001", "79 — 001"])
def test_bhyt_facility_variants(facility):
    r = read_card(with_field(BHYT15, 5, facility), TODAY)
    assert r.card["facility_code"] == "79001" and r.verdict == "ok"


@pytest.mark.parametrize("facility", ["7 - 001", "79 - 01", "AB - 001", "-", ""])
def test_bhyt_bad_facility(facility):
    r = read_card(with_field(BHYT15, 5, facility), TODAY)
    assert r.verdict == "invalid" and "bad_facility" in codes(r)


@pytest.mark.parametrize("birth,iso", [("1990", "1990"), ("03/1990", "1990-03"), ("1/2/1990", "1990-02-01")])
def test_bhyt_partial_birth_dates(birth, iso):
    r = read_card(with_field(BHYT15, 2, birth), TODAY)
    assert r.verdict == "ok" and r.card["birth_date"] == iso


@pytest.mark.parametrize("birth", ["31/02/1990", "01/13/1990", "1990-01-01", "01/01/2099", "1850", "abc", ""])
def test_bhyt_bad_birth_date(birth):
    r = read_card(with_field(BHYT15, 2, birth), TODAY)
    assert r.verdict == "invalid" and "bad_birth_date" in codes(r)


def test_dash_is_null_in_optional_fields():
    r = read_card(BHYT15, TODAY)
    assert r.card["valid_to"] is None and r.card["guardian"] is None
    r = read_card(with_field(BHYT15, 4, "-"), TODAY)
    assert r.verdict == "ok" and r.card["address"] is None


def test_guardian_is_plain_text_not_hex():
    r = read_card(with_field(BHYT15, 10, "Nguy?n V?n B"), TODAY)
    assert r.verdict == "ok" and r.card["guardian"] == "Nguy?n V?n B"
    r = read_card(with_field(BHYT15, 10, "Trần Văn Cường"), TODAY)
    assert r.card["guardian"] == "Trần Văn Cường"


def test_check_string_kept_as_is_never_judged():
    r = read_card(with_field(BHYT15, 13, "zzzz-not-a-real-check"), TODAY)
    assert r.verdict == "ok" and r.card["check_string"] == "zzzz-not-a-real-check"


def test_five_year_date_leading_space():
    r = read_card(with_field(BHYT15, 12, " 01/01/2029"), TODAY)
    assert r.verdict == "ok" and r.card["five_year_date"] == "2029-01-01"


def test_empty_tokens_kept_when_splitting():
    # an empty guardian field must not shift the residence code into its place
    r = read_card(with_field(BHYT15, 10, ""), TODAY)
    assert r.verdict == "ok" and r.card["residence_code"] == "4" and r.card["guardian"] is None


# --- validity ---------------------------------------------------------------------------

def test_expired_and_not_yet_valid():
    expired = with_field(BHYT15, 7, "31/12/2025")
    assert read_card(expired, TODAY).verdict == "expired"
    assert read_card(expired, date(2025, 12, 31)).verdict == "ok"  # last day still valid
    future = with_field(BHYT15, 6, "01/01/2027")
    assert read_card(future, TODAY).verdict == "not_yet_valid"
    assert read_card(future, date(2027, 1, 1)).verdict == "ok"


def test_issue_date_is_not_end_of_validity():
    r = read_card(with_field(BHYT15, 8, "01/01/2020"), TODAY)
    assert r.verdict == "ok" and r.card["valid_to"] is None


def test_validity_ending_before_start_is_invalid():
    r = read_card(with_field(BHYT15, 7, "01/01/2023"), TODAY)
    assert r.verdict == "invalid" and "bad_validity" in codes(r)


def test_today_defaults_to_local_date():
    far_future = with_field(BHYT15, 6, "01/01/2199")
    assert read_card(far_future).verdict == "not_yet_valid"


# --- malformed BHYT ---------------------------------------------------------------------

# (a lower-case card number is read upper-cased, with a warning: tests/test_card_variants.py)
@pytest.mark.parametrize("number", ["DN47901234567", "DN6790123456789", "D14790123456789", "790123456", "dn6790123456789"])
def test_bad_card_number(number):
    r = read_card(with_field(BHYT15, 0, number), TODAY)
    assert (r.kind, r.verdict) == ("bhyt", "invalid") and "bad_card_number" in codes(r)


def test_older_card_with_letters_in_tail():
    r = read_card(with_field(BHYT15, 0, "DN479AB12345678"), TODAY)
    assert r.verdict == "ok" and r.card["bhxh_number"] == "0123456789"  # from the management code


@pytest.mark.parametrize("drop", [1, 3])
def test_wrong_field_count(drop):
    tokens = BHYT15.split("|")
    r = read_card("|".join(tokens[:-1 - drop] + ["$"]), TODAY)
    assert (r.kind, r.verdict) == ("bhyt", "invalid") and "field_count" in codes(r)


@pytest.mark.parametrize("name,code", [
    ("4e677579e1bb856e2056c4836e20416", "bad_name"),   # odd length
    ("4e67zz79", "bad_name"),                          # not hex
    ("c328a0a1", "bad_name"),                          # hex of invalid UTF-8
    ("", "bad_name"),
])
def test_bad_hex_name(name, code):
    r = read_card(with_field(BHYT15, 1, name), TODAY)
    assert r.verdict == "invalid" and code in codes(r)


def test_bad_hex_address_is_invalid_not_exception():
    r = read_card(with_field(BHYT15, 4, "ff fe"), TODAY)
    assert r.verdict == "invalid" and "bad_address" in codes(r)


@pytest.mark.parametrize("sex", ["0", "3", "M", ""])
def test_bad_sex(sex):
    assert "bad_sex" in codes(read_card(with_field(BHYT15, 3, sex), TODAY))


def test_bad_management_code_and_benefit_level():
    assert "bad_management_code" in codes(read_card(with_field(BHYT15, 9, "7900012345"), TODAY))
    r = read_card(with_field(BHYT10, 14, "9"), TODAY)
    assert r.verdict == "invalid" and "bad_benefit_level" in codes(r)


# --- warnings that do not reject --------------------------------------------------------

def test_unknown_group_is_a_warning():
    r = read_card(with_field(BHYT15, 0, "ZZ4790123456789"), TODAY)
    assert r.verdict == "ok" and "unknown_group" in codes(r)


def test_benefit_level_not_matching_group_is_a_warning():
    r = read_card(with_field(BHYT15, 0, "DN1790123456789"), TODAY)
    assert r.verdict == "ok" and "benefit_group_mismatch" in codes(r)
    r = read_card(with_field(BHYT15, 0, "TE1790123456789"), TODAY)
    assert r.verdict == "ok" and "benefit_group_mismatch" not in codes(r)


def test_warning_kept_with_expired_verdict():
    r = read_card(with_field(with_field(BHYT15, 0, "ZZ4790123456789"), 7, "01/01/2025"), TODAY)
    assert r.verdict == "expired" and "unknown_group" in codes(r)


# --- CCCD -------------------------------------------------------------------------------

def test_cccd_extra_fields_kept():
    r = read_card(CCCD + "|ABC|", TODAY)
    assert r.verdict == "ok" and r.card["extra"] == ["ABC", None]


def test_cccd_female_and_no_old_id():
    tokens = CCCD.split("|")
    tokens[0], tokens[1], tokens[4] = "079190001234", "", "Nữ"
    r = read_card("|".join(tokens), TODAY)
    assert r.verdict == "ok" and r.card["sex"] == "female" and r.card["old_id_number"] is None


@pytest.mark.parametrize("index,value,code", [
    (0, "07909000123", "bad_id_number"),
    (3, "32011990", "bad_birth_date"),
    (4, "X", "bad_sex"),
    (6, "15132021", "bad_issued"),
    (2, "", "missing_name"),
])
def test_cccd_malformed(index, value, code):
    tokens = CCCD.split("|")
    tokens[index] = value
    r = read_card("|".join(tokens), TODAY)
    assert (r.kind, r.verdict) == ("cccd", "invalid") and code in codes(r)


def test_cccd_too_few_fields():
    # 6 fields ending at the address is a known variant (tests/test_card_variants.py); 5 is not
    r = read_card("|".join(CCCD.split("|")[:5]), TODAY)
    assert (r.kind, r.verdict) == ("cccd", "invalid") and "field_count" in codes(r)


def test_cccd_id_not_matching_birth_is_warning():
    r = read_card(CCCD.replace("01011990", "01011991"), TODAY)
    assert r.verdict == "ok" and "id_mismatch" in codes(r)


# --- other codes ------------------------------------------------------------------------

@pytest.mark.parametrize("text,what", [
    (VIETQR, "emvco"), ("https://dichvucong.gov.vn/x", "url"), ("hello", "text"), ("", "empty"),
    ("1|2|3", "text"), ("a|b|c|d|e|f|g|h|i|j|k|l|m|n|$", "text"),
])
def test_other_codes_are_not_cards(text, what):
    r = read_card(text, TODAY)
    assert (r.kind, r.verdict, r.card) == ("other", "unsupported", {"type": what})
    assert codes(r) == ["not_a_card"]


# --- untrusted text ---------------------------------------------------------------------

def test_escape_sequences_and_bidi_stripped_from_every_field():
    evil_name = "\x1b[2J\x1b]0;pwned\x07Nguy\u202eễn\u2066 Văn\x00 An\x9b31m"
    r = read_card(with_field(BHYT15, 1, hexs(evil_name)), TODAY)
    assert r.verdict == "ok" and r.card["name"] == "Nguyễn Văn An"
    tokens = CCCD.split("|")
    tokens[5] = "12 Lê\u200f Lợi\r\nQuận\x1b[31m 1"
    r = read_card("|".join(tokens), TODAY)
    assert r.card["address"] == "12 Lê Lợi Quận 1"
    for value in r.card.values():
        assert not any(ord(ch) < 32 or 0x7f <= ord(ch) < 0xa0 for ch in str(value))


def test_decomposed_unicode_is_normalised():
    import unicodedata
    nfd = unicodedata.normalize("NFD", "Nguyễn Văn An")
    r = read_card(with_field(BHYT15, 1, hexs(nfd)), TODAY)
    assert r.card["name"] == "Nguyễn Văn An"


def test_field_and_payload_length_capped():
    r = read_card(with_field(BHYT15, 1, hexs("A" * 1000)), TODAY)
    assert r.verdict == "invalid" and "name_too_long" in codes(r)
    assert len(r.card["name"] or "") <= 256
    r = read_card("A" * 100_000, TODAY)
    assert r.verdict == "invalid" and codes(r) == ["payload_too_long"]


def test_invalid_utf8_bytes_are_a_problem_not_an_exception():
    r = read_card(CCCD.encode().replace("Văn".encode(), b"V\xe1n"), TODAY)
    assert (r.kind, r.verdict) == ("cccd", "invalid") and "bad_utf8" in codes(r)
    r = read_card(b"\xff\xfe\x00garbage", TODAY)
    assert r.kind == "other"


def test_mask_name():
    assert mask_name("Nguyễn Văn An") == "Ng*** V** A*"
    assert mask_name(None) == "-"


# --- 6: ASCII digits only in card fields ----------------------------------------------------------

FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def test_non_ascii_digits_are_rejected_in_the_cccd_number_and_the_facility_code():
    from agent.sim.demo import BHYT15, CCCD

    number = CCCD.split("|")[0]
    cccd = read_card(CCCD.replace(number, number.translate(FULLWIDTH), 1))
    assert cccd.verdict == "invalid" and cccd.kind in ("cccd", "other")
    fields = BHYT15.split("|")
    fields[5] = fields[5].translate(ARABIC_INDIC)
    bhyt = read_card("|".join(fields))
    assert bhyt.verdict == "invalid" and "bad_facility" in [p.code for p in bhyt.problems]
    assert read_card(BHYT15).verdict in ("ok", "expired")     # the ASCII original still reads
