"""Properties of the card reader.

Valid synthetic cards of every layout shared/reference/card-payloads.md describes, with the
quirks seen in real scans, are read back into exactly the fields they were made from. Whatever
else reaches the reader gets a verdict from the parser itself, never from read_card's safety net
(which answers `reader_error` when the parser raises). So a parser that raises, reads nothing,
loses a field or splits wrongly fails these properties: test_the_properties_fail_on_a_broken_parser
runs them against such parsers.
"""

import json
from datetime import date

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import agent.cards.reader as reader
from agent.cards import KINDS, VERDICTS, CardRead, read_card
from support.payloads import BHYT10, BHYT15, CCCD, VIETQR

SAMPLES = [BHYT15, BHYT10, CCCD, VIETQR]
settings.register_profile("ci", max_examples=400, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")

# Pieces that provoke each code path: separators, terminators, dates, hex, escapes, bidi.
NASTY = ["|", "$", "#", "-", " ", "\u200e", "\ufeff", "\u202e", "\x1b[31m", "\x00", "/", "01/01/1990",
         "79 - 001", "ff", "c3", "\ud800", "Nữ", "0" * 12, "\U0001f600", "\r\n"]


def check(read):
    # the parser's own answer, not the safety net's: a parser that raises fails here
    assert [p.code for p in read.problems if p.code == "reader_error"] == []
    assert read.kind in KINDS
    assert read.verdict in VERDICTS
    if read.verdict == "invalid":
        assert any(p.fatal for p in read.problems)
    json.dumps(read.to_dict())  # always serialisable (no bytes, no dates)
    for p in read.problems:
        assert p.code and p.message
    return read


# --- whatever reaches the reader ---------------------------------------------------------------------

ANY_TEXT = (st.text(max_size=600),)
ANY_BYTES = (st.binary(max_size=600),)
MUTATED = (st.sampled_from(SAMPLES), st.data())
HEX_CASE = (st.sampled_from([BHYT15, BHYT10]), st.data())


@given(*ANY_TEXT)
def test_arbitrary_text(text):
    check(read_card(text, date(2026, 1, 1)))


@given(*ANY_BYTES)
def test_arbitrary_bytes(data):
    check(read_card(data))


@given(*MUTATED)
def test_mutated_real_payloads(sample, data):
    tokens = sample.split("|")
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["replace", "insert", "delete", "splice", "truncate"]))
        i = data.draw(st.integers(0, len(tokens) - 1))
        if action == "replace":
            tokens[i] = data.draw(st.one_of(st.sampled_from(NASTY), st.text(max_size=30)))
        elif action == "insert":
            tokens.insert(i, data.draw(st.sampled_from(NASTY)))
        elif action == "delete" and len(tokens) > 1:
            del tokens[i]
        elif action == "splice":
            t = tokens[i]
            j = data.draw(st.integers(0, len(t)))
            tokens[i] = t[:j] + data.draw(st.sampled_from(NASTY)) + t[j:]
        elif action == "truncate":
            tokens = tokens[: i + 1]
    text = "|".join(tokens)
    read = check(read_card(text, data.draw(st.dates())))
    check(read_card(text.encode("utf-8", "surrogatepass")))
    # no control character, escape or bidi override survives into any field
    for value in read.card.values():
        for ch in json.dumps(value, ensure_ascii=False):
            assert ch not in "\x1b\x00\u202e\u200e\ufeff\x9b"


@given(*HEX_CASE)
def test_hex_case_never_changes_the_read(sample, data):
    tokens = sample.split("|")
    flipped = [t.upper() if i in (1, 4, 15) else t for i, t in enumerate(tokens)]
    today = data.draw(st.dates(min_value=date(2000, 1, 1)))
    read = check(read_card(sample, today))
    assert read.card.get("name") == {BHYT15: "Nguyễn Văn An", BHYT10: "Trần Thị Bích"}[sample]
    assert check(read_card("|".join(flipped), today)).to_dict() == read.to_dict()


# --- valid synthetic cards are read into the fields they were made from --------------------------------

# Vietnamese letters, precomposed (NFC: what the reader gives back)
LOWER = "aăâbcdđeêghiklmnoôơpqrstuưvxyàáảãạằắẳẵặầấẩẫậèéẻẽẹềếểễệìíỉĩịòóỏõọồốổỗộờớởỡợùúủũụừứửữựỳýỷỹỵ"
WORD = st.text(LOWER + LOWER.upper(), min_size=1, max_size=8)
NAME = st.lists(WORD, min_size=1, max_size=5).map(" ".join)
ADDRESS = st.lists(st.one_of(WORD, st.integers(1, 999).map(str)), min_size=1, max_size=8).map(
    lambda words: ", ".join(" ".join(words[i:i + 3]) for i in range(0, len(words), 3)))
#: (group code, benefit level) pairs of the reference's table
GROUPS = [("CC", 1), ("TE", 1), ("CK", 2), ("CB", 2), ("HT", 3), ("CN", 3), ("DN", 4), ("HS", 4),
          ("GD", 4), ("QN", 5), ("CA", 5)]
MARKS = ["\u200e", "\ufeff"]     # stray invisible marks seen inside real scans


def digits(n: int):
    return st.text("0123456789", min_size=n, max_size=n)


def dmy(day: date) -> str:
    return day.strftime("%d/%m/%Y")


@st.composite
def bhyt_cards(draw):
    """(payload, today, kind, verdict, fields) of a valid BHYT card of either generation, written
    with the quirks of real scans: hex in either case, a lower-case card number, `-` or an empty
    field for what is not there, spaces around fields, any facility separator, a leading space in
    the five-year date, `$`, `#` or no terminator, an invisible mark anywhere."""
    today = draw(st.dates(date(2000, 1, 1), date(2100, 12, 31)))
    hex_of = (lambda text: text.encode("utf-8").hex().upper()) if draw(st.booleans()) else \
        (lambda text: text.encode("utf-8").hex())
    absent = lambda: draw(st.sampled_from(["-", ""]))    # noqa: E731 - empty tokens are kept, not dropped
    prov, bhxh = draw(digits(2)), draw(digits(10))
    want = {}
    if draw(st.booleans()):
        group, level = draw(st.sampled_from(GROUPS))
        number = f"{group}{level}{prov}{bhxh}"
        want.update(card_number=number, generation="15", group_code=group, benefit_level=level,
                    province_code=prov, bhxh_number=bhxh)
        number = number.lower() if draw(st.booleans()) else number
    else:
        number = bhxh
        want.update(card_number=number, generation="10", group_code=None, province_code=None, bhxh_number=bhxh)
    name = draw(NAME)
    born = draw(st.dates(date(1900, 1, 1), today))
    birth, want["birth_date"] = draw(st.sampled_from([(dmy(born), born.isoformat()),
                                                      (born.strftime("%m/%Y"), born.strftime("%Y-%m")),
                                                      (born.strftime("%Y"), born.strftime("%Y"))]))
    sex = draw(st.sampled_from(["1", "2"]))
    address = draw(st.one_of(st.none(), ADDRESS))
    facility = draw(digits(3))
    dash = draw(st.sampled_from([" - ", "-", " \u2013 ", "", " "]))
    valid_from = draw(st.dates(date(1990, 1, 1), date(2100, 12, 31)))
    valid_to = draw(st.one_of(st.none(), st.dates(valid_from, date(2110, 12, 31))))
    issued = draw(st.one_of(st.none(), st.dates(date(1990, 1, 1), date(2100, 12, 31))))
    management = draw(st.one_of(st.none(), digits(2).map(lambda office: prov + office + bhxh)))
    guardian = draw(st.one_of(st.none(), NAME))
    residence = draw(st.sampled_from("4567"))
    five = draw(st.one_of(st.none(), st.dates(date(1990, 1, 1), date(2100, 12, 31))))
    check_string = draw(st.text("0123456789abcdef", min_size=1, max_size=16)) + "-" + draw(digits(4))
    fields = [number, hex_of(name), birth, sex, hex_of(address) if address else absent(),
              f"{prov}{dash}{facility}", dmy(valid_from), dmy(valid_to) if valid_to else absent(),
              dmy(issued) if issued else absent(), management or absent(), guardian or absent(), residence,
              draw(st.sampled_from(["", " "])) + dmy(five) if five else absent(), check_string]
    want.update(name=name, sex={"1": "male", "2": "female"}[sex], address=address,
                facility_code=prov + facility, valid_from=valid_from.isoformat(),
                valid_to=valid_to and valid_to.isoformat(), issued=issued and issued.isoformat(),
                management_code=management, guardian=guardian, residence_code=residence,
                five_year_date=five and five.isoformat(), check_string=check_string, issuing_office=None)
    if want["generation"] == "10":
        level, office = draw(st.integers(1, 5)), draw(st.one_of(st.none(), ADDRESS))
        fields += [str(level), hex_of(office) if office else absent()]
        want.update(benefit_level=level, issuing_office=office)
    want["terminator"] = terminator = draw(st.sampled_from(["$", "#", None]))
    fields = [draw(st.sampled_from(["", " "])) + f + draw(st.sampled_from(["", " ", "  "]))
              if draw(st.integers(0, 4)) == 0 else f for f in fields]
    payload = "|".join(fields + [terminator or ""])
    if draw(st.booleans()):
        at = draw(st.integers(0, len(payload)))
        payload = payload[:at] + draw(st.sampled_from(MARKS)) + payload[at:]
    verdict = ("not_yet_valid" if valid_from > today else
               "expired" if valid_to is not None and valid_to < today else "ok")
    return payload, today, "bhyt", verdict, want


@st.composite
def cccd_cards(draw):
    """(payload, today, kind, verdict, fields) of a valid CCCD card: the 7 fields, or more (newer
    cards), dates `ddmmyyyy` or `dd/mm/yyyy`, sex in any case or without its diacritic."""
    today = draw(st.dates(date(2000, 1, 1), date(2099, 12, 31)))
    born = draw(st.dates(date(1900, 1, 1), today))
    sex = draw(st.sampled_from(["male", "female"]))
    century_sex = 2 * ((born.year - 1900) // 100) + (sex == "female")
    number = draw(digits(3)) + str(century_sex) + f"{born.year % 100:02d}" + draw(digits(6))
    old = draw(st.one_of(st.just(""), digits(9)))
    name, address = draw(NAME), draw(ADDRESS)
    issued = draw(st.dates(date(1990, 1, 1), date(2110, 12, 31)))    # not compared with today
    form = draw(st.sampled_from(["%d%m%Y", "%d/%m/%Y"]))
    sex_word = draw(st.sampled_from({"male": ["Nam", "NAM", "nam"], "female": ["Nữ", "NỮ", "Nu"]}[sex]))
    extra = draw(st.lists(st.one_of(NAME, ADDRESS), max_size=3))
    fields = [number, old, name, born.strftime(form), sex_word, address, issued.strftime(form), *extra]
    want = {"id_number": number, "old_id_number": old or None, "name": name, "birth_date": born.isoformat(),
            "sex": sex, "address": address, "issued": issued.isoformat(), "extra": extra}
    return "|".join(fields), today, "cccd", "ok", want


def read_back(case) -> None:
    payload, today, kind, verdict, want = case
    for data in (payload, payload.encode("utf-8")):
        read = check(read_card(data, today))
        assert (read.kind, read.verdict) == (kind, verdict), read.problems
        assert [p for p in read.problems if p.fatal] == []
        assert {k: read.card.get(k, "<missing>") for k in want} == want


VALID_BHYT = (bhyt_cards(),)
VALID_CCCD = (cccd_cards(),)


@settings(max_examples=200)
@given(*VALID_BHYT)
def test_valid_bhyt_cards_are_read_into_their_fields(case):
    read_back(case)


@settings(max_examples=200)
@given(*VALID_CCCD)
def test_valid_cccd_cards_are_read_into_their_fields(case):
    read_back(case)


# --- and each property above fails on a broken parser ------------------------------------------------

def _raises(data, today):
    raise RuntimeError("a parser bug")


def _never_a_card(data, today):
    return CardRead("other", "unsupported", [], {"type": "text"})


def _drops_a_field(data, today, real=reader._read):
    read = real(data, today)
    read.card.pop("birth_date", None)
    return read


def _drops_empty_tokens(data, today, real=reader._read):
    """Splitting that drops empty tokens: every field after one moves (the reference's warning)."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return real("|".join(t for t in text.split("|") if t.strip()), today)


#: each property with its strategies (a quick run without shrinking: a broken parser fails at once)
PROPERTIES = {"bhyt": (test_valid_bhyt_cards_are_read_into_their_fields, VALID_BHYT),
              "cccd": (test_valid_cccd_cards_are_read_into_their_fields, VALID_CCCD),
              "text": (test_arbitrary_text, ANY_TEXT), "bytes": (test_arbitrary_bytes, ANY_BYTES),
              "mutated": (test_mutated_real_payloads, MUTATED), "hex": (test_hex_case_never_changes_the_read, HEX_CASE)}


@pytest.mark.parametrize("broken, caught_by", [
    (_raises, ["bhyt", "cccd", "text", "bytes", "mutated", "hex"]),
    (_never_a_card, ["bhyt", "cccd", "hex"]),
    (_drops_a_field, ["bhyt", "cccd"]),
    (_drops_empty_tokens, ["bhyt"]),       # the CCCD reader takes 6 fields as its layout without the old ID
])
def test_the_properties_fail_on_a_broken_parser(monkeypatch, broken, caught_by):
    monkeypatch.setattr(reader, "_read", broken)
    quick = settings(max_examples=50, phases=[Phase.generate], database=None, deadline=None,
                     report_multiple_bugs=False)
    for name in caught_by:
        prop, strategies = PROPERTIES[name]
        with pytest.raises(AssertionError):
            quick(given(*strategies)(prop.hypothesis.inner_test))()
